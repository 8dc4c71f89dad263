//! The MCP server against a client nobody here wrote: the official MCP
//! Python SDK (`mcp` on PyPI, installed by `scripts/test.sh` into
//! `target/pyenv`). The script `tests/python/mcp_session.py` drives the
//! tools and reports what it saw; these tests check that and the effects
//! in the daemon.

mod common;

use common::{Cred, Daemon, Sink, bin, eventually};
use serde_json::{Value, json};

/// Runs the session script with `args`; its JSON report.
async fn session(args: Vec<String>) -> Value {
    common::run_python("mcp_session.py", args).await
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Arguments that run `agentbus mcp` on stdio as `agent` with `token`.
fn stdio(d: &Daemon, mode: &str, agent: &str, token: &str) -> Vec<String> {
    let env = json!({
        "AGENTBUS_URL": d.url,
        "AGENTBUS_AGENT_ID": agent,
        "AGENTBUS_AGENT_TOKEN": token,
    });
    vec![
        s("--transport"),
        s("stdio"),
        s("--mode"),
        s(mode),
        s("--bin"),
        s(bin()),
        s("--env"),
        env.to_string(),
        s("--agent"),
        s(agent),
    ]
}

/// Arguments that reach `/mcp` with `headers`.
fn http(d: &Daemon, mode: &str, query: &str, headers: Value, agent: &str) -> Vec<String> {
    vec![
        s("--transport"),
        s("http"),
        s("--mode"),
        s(mode),
        s("--url"),
        format!("{}/mcp{query}", d.url),
        s("--headers"),
        headers.to_string(),
        s("--agent"),
        s(agent),
    ]
}

const TOOLS: [&str; 10] = [
    "ack_messages",
    "agent_output",
    "agent_status",
    "inject_terminal",
    "list_agents",
    "publish_event",
    "read_events",
    "read_messages",
    "send_message",
    "wait_for_messages",
];

fn ok(report: &Value, step: &str) -> Value {
    let r = &report[step];
    assert_eq!(r[0], false, "{step} failed: {r}");
    r[1].clone()
}

fn err(report: &Value, step: &str) -> String {
    let r = &report[step];
    assert_eq!(r[0], true, "{step} should have failed: {r}");
    r[1].as_str().unwrap_or_default().to_string()
}

/// A daemon with `bob` (a pane recording what it reads, an agent CLI so
/// agents may jekt it) and `alice` (an agent with a token, as in a pane).
async fn setup() -> (Daemon, Sink, String) {
    let d = Daemon::start();
    let sink = d.open_sink("bob", "generic", true).await;
    let token = d.register("alice").await;
    (d, sink, token)
}

/// Everything a full session must show, whatever the transport.
async fn check_full_session(
    d: &Daemon,
    sink: &Sink,
    mut args: Vec<String>,
    tag: &str,
    me: &str,
    source: &str,
) -> Value {
    // Mail waiting for `me` before the session, to read and ack.
    let (st, first) = d
        .post(
            "/v1/messages",
            &json!({"to": me, "from": "bob", "body": format!("hello {tag}")}),
            &Cred::Key,
        )
        .await;
    assert_eq!(st, 201, "{first}");
    args.extend([
        s("--peer"),
        s("bob"),
        s("--status-of"),
        s("bob"),
        s("--tag"),
        s(tag),
    ]);
    let r = session(args).await;

    assert_eq!(r["server"], "agentbus");
    assert_eq!(r["tools"], json!(TOOLS));
    assert_eq!(r["schemas_ok"], true);

    // The jekt reached the pane's program, marked with the sender.
    let jekt = ok(&r, "inject");
    assert_eq!(jekt["outcome"], "delivered");
    assert_eq!(jekt["source_agent"], me);
    let want = format!("jekt {tag}");
    let typed = eventually("the jekt in bob's pane", 20, async || {
        let b = String::from_utf8_lossy(&sink.bytes()).into_owned();
        b.contains(&want).then_some(b)
    })
    .await;
    assert!(typed.contains(me), "the marker names the sender: {typed}");
    assert!(
        err(&r, "inject_unknown")
            .contains("agent not found: nobody-here — known agents: alice, bob")
    );

    // The message is in bob's inbox, from `me`, in its thread.
    let sent = ok(&r, "send");
    let (_, page) = d.inbox("bob", "peek=true", &Cred::Key).await;
    let m = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == sent["id"])
        .unwrap_or_else(|| panic!("sent message not in bob's inbox: {page}"));
    assert_eq!(m["from"], me);
    assert_eq!(m["body"], format!("mail {tag}"));
    assert_eq!(m["thread_id"], format!("t-{tag}"));

    let agents = ok(&r, "list_agents");
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"bob") && names.contains(&"alice"),
        "{agents}"
    );
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["where"] == "local")
    );

    // Own mail: read (peek), ack, then a wait woken by new mail.
    let read = ok(&r, "read");
    assert!(
        read["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == first["id"]),
        "{read}"
    );
    let acked = ok(&r, "ack");
    assert!(
        acked["acked"].as_array().unwrap().contains(&first["id"]),
        "{acked}"
    );
    let (_, after) = d.inbox(me, "peek=true", &Cred::Key).await;
    assert!(!Daemon::ids(&after).contains(&first["id"].as_str().unwrap().to_string()));
    let woke = ok(&r, "wait");
    assert_eq!(woke["messages"][0]["body"], format!("wake {tag}"), "{woke}");
    assert_eq!(ok(&r, "wait_empty")["messages"], json!([]));

    let published = ok(&r, "publish");
    assert_eq!(
        published["source"], source,
        "events name the credential's holder"
    );
    assert_eq!(ok(&r, "events")["events"][0]["data"], json!({"n": 1}));

    // Bad arguments to every tool: an error result each, and the server
    // serves on.
    let bad = r["bad"].as_object().unwrap();
    assert_eq!(bad.len(), TOOLS.len());
    for (tool, result) in bad {
        assert_eq!(result[0], true, "{tool} accepted bad arguments: {result}");
        let text = result[1].as_str().unwrap();
        assert!(!text.is_empty(), "{tool}");
    }
    assert!(
        bad["send_message"][1]
            .as_str()
            .unwrap()
            .contains("invalid arguments for send_message")
    );
    ok(&r, "after_bad");
    r
}

#[tokio::test]
async fn stdio_handshake_era_every_tool_works() {
    let (d, sink, token) = setup().await;
    let args = stdio(&d, "legacy", "alice", &token);
    let r = check_full_session(&d, &sink, args, "s1", "alice", "agent:alice").await;
    assert_eq!(r["protocol"], "2025-11-25");
}

#[tokio::test]
async fn stdio_stateless_revision_every_tool_works() {
    let (d, sink, token) = setup().await;
    let args = stdio(&d, "auto", "alice", &token);
    let r = check_full_session(&d, &sink, args, "s2", "alice", "agent:alice").await;
    assert_eq!(r["protocol"], "2026-07-28");
}

#[tokio::test]
async fn http_with_an_agent_token_every_tool_works() {
    let (d, sink, token) = setup().await;
    let headers = json!({"Authorization": format!("Bearer {token}")});
    let args = http(&d, "legacy", "", headers, "alice");
    let r = check_full_session(&d, &sink, args, "h1", "alice", "agent:alice").await;
    assert_eq!(r["protocol"], "2025-11-25");
}

#[tokio::test]
async fn http_stateless_revision_with_the_instance_key_acting_as_an_agent() {
    let (d, sink, _) = setup().await;
    let headers = json!({"X-AuthKey": d.key});
    let args = http(&d, "auto", "?as=alice", headers, "alice");
    let r = check_full_session(&d, &sink, args, "h2", "alice", "admin").await;
    assert_eq!(r["protocol"], "2026-07-28");
}

#[tokio::test]
async fn an_agent_cannot_read_ack_or_send_for_another() {
    let (d, _sink, _alice) = setup().await;
    let mallory = d.register("mallory").await;
    let (_, mail) = d.msg("alice", "for alice only", &Cred::Key).await;
    let id = mail["id"].as_str().unwrap().to_string();

    // mallory's token, claiming to be alice: the stdio server does not
    // start at all (mcp_identity.rs covers each refused credential).
    let out = std::process::Command::new(common::bin())
        .arg("mcp")
        .env("AGENTBUS_URL", &d.url)
        .env("AGENTBUS_AGENT_ID", "alice")
        .env("AGENTBUS_AGENT_TOKEN", &mallory)
        .env_remove("AGENTBUS_AUTH_KEY")
        .env_remove("AGENTBUS_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused this server's credential"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An ack of alice's message by mallory changes nothing.
    let (_, page) = d.inbox("alice", "peek=true", &Cred::Key).await;
    assert_eq!(
        Daemon::ids(&page),
        vec![id.clone()],
        "alice's mail is still unacked"
    );

    // Over HTTP the token decides: `as=` does not make mallory alice.
    let headers = json!({"Authorization": format!("Bearer {mallory}")});
    let mut args = http(&d, "legacy", "?as=alice", headers, "mallory");
    args.extend([
        s("--script"),
        s("confined"),
        s("--peer"),
        s("bob"),
        s("--ack"),
        id.clone(),
    ]);
    let r = session(args).await;
    assert_eq!(ok(&r, "read")["agent_id"], "mallory");
    assert_eq!(ok(&r, "send")["from"], "mallory");
    let (_, page) = d.inbox("alice", "peek=true", &Cred::Key).await;
    assert_eq!(
        Daemon::ids(&page),
        vec![id],
        "alice's mail is still unacked"
    );
}

#[tokio::test]
async fn new_mail_is_pushed_as_a_claude_channel_notification_when_asked() {
    let d = Daemon::start();
    let token = d.register("alice").await;
    let (_, waiting) = d.msg("alice", "waiting before start", &Cred::Key).await;
    let mut args = stdio(&d, "legacy", "alice", &token);
    args.extend([
        s("--script"),
        s("channel"),
        s("--server-arg=--channel"),
        s("--expect"),
        s("2"),
        s("--tag"),
        s("c1"),
    ]);
    let r = session(args).await;
    assert_eq!(r["experimental"], json!(["claude/channel"]));
    let pushed = r["pushed"].as_array().unwrap();
    assert_eq!(pushed.len(), 2, "{r}");
    assert_eq!(pushed[0]["content"], "waiting before start");
    assert_eq!(pushed[0]["meta"]["message_id"], waiting["id"]);
    assert_eq!(pushed[1]["content"], "pushed c1");
    assert_eq!(pushed[1]["meta"]["from"], "alice");
    // The push only peeked: both are still there to read.
    assert_eq!(ok(&r, "read")["messages"].as_array().unwrap().len(), 2);

    // Off unless asked for: no capability, no push.
    let mut args = stdio(&d, "legacy", "alice", &token);
    args.extend([
        s("--script"),
        s("channel"),
        s("--expect"),
        s("1"),
        s("--push-wait"),
        s("2"),
        s("--tag"),
        s("c2"),
    ]);
    let r = session(args).await;
    assert_eq!(r["experimental"], json!([]));
    assert_eq!(r["pushed"], json!([]));
}

/// Two agents in two panes, each with its own `agentbus mcp` started
/// from the pane (as an agent CLI would): the planner jekts the coder a
/// task through the tools, the coder answers by mail, the planner's wait
/// returns it.
#[tokio::test]
async fn two_agents_in_panes_exchange_a_jekt_and_a_message_through_the_tools() {
    let d = Daemon::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/mcp_agent.py");
    let py = common::python();
    let py = py.to_str().unwrap();
    d.open(
        "coder",
        "generic",
        &[py, script, "--role", "coder", "--bin", bin()],
    )
    .await;
    d.wait_output_line("coder", "READY").await;
    d.open(
        "planner",
        "generic",
        &[py, script, "--role", "planner", "--bin", bin()],
    )
    .await;
    d.wait_output_line("planner", "AGENTS coder planner").await;
    d.wait_output_line("planner", "JEKT delivered").await;
    d.wait_output_line("coder", "TASK FROM planner").await;
    d.wait_output_line("coder", "SENT True").await;
    d.wait_output_line("planner", "MAIL coder validation done")
        .await;
    d.wait_output_line("planner", "DONE").await;

    // Both used their own identities, proven by their pane tokens.
    let (_, audit) = d.get("/v1/audit?limit=50", &Cred::Key).await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["kind"] == "jekt"
            && e["actor"] == "agent:planner"
            && e["target"] == "coder"),
        "{audit}"
    );
    let (_, page) = d
        .inbox("planner", "include_acked=true&peek=true", &Cred::Key)
        .await;
    assert_eq!(page["messages"][0]["from"], "coder");
    assert_eq!(page["messages"][0]["trust"], "host-verified");
    assert_eq!(page["messages"][0]["state"], "acked");
}

#[tokio::test]
async fn mcp_over_http_refuses_strangers_and_foreign_pages() {
    let d = Daemon::start();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let post = |origin: Option<&str>, key: Option<&str>| {
        let mut r = d
            .http
            .post(format!("{}/mcp", d.url))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(k) = key {
            r = r.header("x-authkey", k);
        }
        r.send()
    };
    let r = post(None, None).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(Some("https://evil.example"), Some(&d.key))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(None, Some("not-the-key")).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(Some("http://127.0.0.1:3000"), Some(&d.key))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
}

#[tokio::test]
async fn stdio_without_an_identity_says_how_to_get_one() {
    let d = Daemon::start();
    let out = d.cli(&["mcp"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--as <agent>") && err.contains("AGENTBUS_AGENT_ID"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "stdout carries protocol only");
}
