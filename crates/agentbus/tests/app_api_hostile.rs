//! An agent token against the App API's permission model, as an attacker
//! holding it would try: params in every shape JSON-RPC allows
//! (positional arrays in every order, duplicate keys, scalars) and every
//! case spelling of another agent's name. The check and the call read the
//! same parsed value, so nothing reaches the other agent.

mod common;

use common::{Cred, Daemon, run_python};
use serde_json::{Value, json};

/// Every scope held to the token's own agent.
const SELF_ONLY: &str = r#"
[policy]
app_scopes = ["agent.*@self", "controller.*@self", "block.*@self", "event.*@self"]
[app_api]
calls_per_s = 100000.0
calls_burst = 100000.0
"#;

async fn attack(d: &Daemon, token: &str, victim: &str, victim_block: &str) -> Value {
    let args = [
        "--token",
        token,
        "--victim",
        victim,
        "--victim-block",
        victim_block,
    ];
    run_python("app_api.py", d.app_api_args("hostile", &args)).await
}

/// Nothing the attack sent reached bob: its program read no byte, it is
/// running, its block exists, and every call was refused.
async fn assert_untouched(d: &Daemon, r: &Value, bob: &common::Sink) {
    assert_eq!(r["succeeded"], json!([]), "calls that got through: {r}");
    assert!(r["calls"].as_u64().unwrap() > 5_000, "{r}");
    assert!(
        bob.bytes().is_empty(),
        "bob's program read {:?}",
        String::from_utf8_lossy(&bob.bytes())
    );
    let (_, status) = d.get("/v1/agents/bob", &Cred::Key).await;
    assert!(
        matches!(status["state"].as_str(), Some("running" | "idle")),
        "{status}"
    );
}

#[tokio::test]
async fn positional_params_and_name_variants_never_reach_another_agent() {
    let d = Daemon::start_with(SELF_ONLY);
    let bob = d.open_sink("bob", "generic", true).await;
    let alice = d.open("alice", "shell", &["sh"]).await;
    let (_, b) = d.get("/v1/agents/bob", &Cred::Key).await;
    let bob_block = b["block_id"].as_str().unwrap().to_string();
    let token = d.own_token("alice", &alice).await;

    let r = attack(&d, &token, "bob", &bob_block).await;
    assert_untouched(&d, &r, &bob).await;
    // Positional params are refused by rule, whatever they hold.
    let positional = r["positional"].as_object().unwrap();
    assert_eq!(positional.keys().collect::<Vec<_>>(), ["-32602"], "{r}");
    // Named: refused for lack of scope (every case spelling is bob), or
    // as not a block id at all.
    let named = r["named"].as_object().unwrap();
    assert!(
        named.keys().all(|k| k == "FORBIDDEN" || k == "-32602"),
        "named attempts: {named:?}"
    );
    assert!(named["FORBIDDEN"].as_u64().unwrap() > 50, "{named:?}");
    assert_eq!(
        r["raw"],
        json!([-32600, -32600, -32600, -32600, "FORBIDDEN"])
    );
    // The refusals are audited (sampled under the flood, never lost
    // entirely).
    let (_, a) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    assert!(
        a["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "agent:alice" && e["outcome"] == "forbidden"),
        "{a}"
    );

    // The rule still lets alice act on herself, under any case spelling.
    let out = d.cli_env(
        &["rpc", "agent.output", r#"{"agent_id":"ALICE","lines":2}"#],
        &[
            ("AGENTBUS_AGENT_TOKEN", token.as_str()),
            ("AGENTBUS_URL", d.url.as_str()),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agent_id"], "alice");
}

#[tokio::test]
async fn a_scope_naming_a_spelling_does_not_cover_the_agent_it_resolves_to() {
    // alice's extra token may act on "Bob" — a name nobody has. "Bob"
    // resolves to bob (the one name equal ignoring case), and the scope
    // is checked against bob: refused, for every spelling.
    let d = Daemon::start_with(SELF_ONLY);
    let bob = d.open_sink("bob", "generic", true).await;
    d.open("alice", "shell", &["sh"]).await;
    let (_, b) = d.get("/v1/agents/bob", &Cred::Key).await;
    let bob_block = b["block_id"].as_str().unwrap().to_string();
    let minted = d.cli(&[
        "token",
        "create",
        "--agent",
        "alice",
        "--scope",
        "agent.*@Bob",
        "--scope",
        "controller.*@Bob",
        "--scope",
        "block.*@Bob",
        "--scope",
        "event.*@Bob",
    ]);
    assert!(minted.status.success(), "{minted:?}");
    let extra = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let r = attack(&d, &extra, "Bob", &bob_block).await;
    assert_untouched(&d, &r, &bob).await;
    let named = r["named"].as_object().unwrap();
    assert!(
        named.keys().all(|k| k == "FORBIDDEN" || k == "-32602"),
        "{named:?}"
    );
}

#[tokio::test]
async fn batches_are_capped_and_count_against_the_rate_as_a_whole() {
    // 8 calls at most in flight, so at most 8 in a batch; an agent token
    // may make 8 calls at once and refills slowly.
    let d = Daemon::start_with(
        "[app_api]\nmax_in_flight = 8\nmax_batch = 100\ncalls_per_s = 0.5\ncalls_burst = 12.0\n",
    );
    let w = d.open("w", "shell", &["sh"]).await;
    let token = d.own_token("w", &w).await;
    let args = d.app_api_args("batches", &["--token", &token, "--burst", "8"]);
    let r = run_python("app_api.py", args).await;
    // max_batch is clamped to max_in_flight: 9 calls is one too many.
    assert_eq!(r["admin_too_large"]["error"]["code"], -32600, "{r}");
    assert!(
        r["admin_too_large"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 8"),
        "{r}"
    );
    assert_eq!(r["admin_at_cap"], json!(["ok"]));
    // 8 of the 12-call burst, then a second 8 with 4 left: refused whole.
    assert_eq!(r["agent_first"], json!(["ok"]), "{r}");
    assert_eq!(r["agent_second"], json!(["RATE_LIMITED"]), "{r}");
    // The daemon still answers.
    assert_eq!(d.get("/v1/agents", &Cred::Key).await.0, 200);
}

#[tokio::test]
async fn agent_tokens_read_only_their_own_state_on_the_reactive_routes() {
    let d = Daemon::start();
    d.open("bob", "shell", &["sh"]).await;
    let a = d.open("alice", "shell", &["sh"]).await;
    let token = d.own_token("alice", &a).await;
    let cred = Cred::Token(token);
    let (status, body) = d
        .get("/agentmux/reactive/agent?agent_id=alice", &cred)
        .await;
    assert_eq!((status, body["agent_id"].as_str()), (200, Some("alice")));
    for other in ["bob", "BOB", "Bob", "nobody"] {
        let (status, body) = d
            .get(&format!("/agentmux/reactive/agent?agent_id={other}"), &cred)
            .await;
        assert_eq!(status, 403, "{other}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // The instance key reads anyone.
    let (status, _) = d
        .get("/agentmux/reactive/agent?agent_id=bob", &Cred::Key)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_loopback_page_may_preflight_mcp_and_others_may_not() {
    let d = Daemon::start();
    let preflight = |origin: &'static str| {
        d.http
            .request(reqwest::Method::OPTIONS, format!("{}/mcp", d.url))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,mcp-session-id,mcp-protocol-version",
            )
            .send()
    };
    let ok = preflight("http://127.0.0.1:5173").await.unwrap();
    assert!(ok.status().is_success(), "{:?}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "http://127.0.0.1:5173");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for want in ["authorization", "mcp-session-id", "mcp-protocol-version"] {
        assert!(allowed.contains(want), "{allowed}");
    }
    let evil = preflight("http://evil.example").await.unwrap();
    assert!(
        evil.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        evil.headers()
    );
}

#[tokio::test]
async fn agent_open_with_only_a_name_returns_the_running_agent() {
    let d = Daemon::start();
    let opened = d.open("solo", "shell", &["sh"]).await;
    let out = d.cli(&["rpc", "agent.open", r#"{"agent_id":"solo"}"#]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["created"], false, "{v}");
    assert_eq!(v["block_id"], opened["block_id"]);
    // A name nobody runs still needs a command.
    let out = d.cli(&["rpc", "agent.open", r#"{"agent_id":"ghost"}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a command"));
}
