//! Two instances on one machine share a registry: a jekt for an agent
//! hosted by the other instance is forwarded over loopback with the
//! forward token of its registry entry (which opens nothing else); the
//! marker says DELIVERY=channel, and TRUST=channel-verified when the
//! forwarding instance proved the sender; a dead peer's entry is evicted
//! and the jekt falls through to the next tier. Mail for an agent of the
//! other instance is stored in that instance's mailbox the same way.

mod common;
use common::{Cred, Daemon};
use std::os::unix::fs::PermissionsExt;

fn pair() -> (tempfile::TempDir, Daemon, Daemon) {
    let reg = tempfile::tempdir().unwrap();
    let r = reg.path().to_str().unwrap().to_string();
    let a = Daemon::start_args(&["--registry-dir", &r]);
    let b = Daemon::start_args(&["--registry-dir", &r]);
    (reg, a, b)
}

fn entry(reg: &tempfile::TempDir, agent: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(reg.path().join(format!("agents/{agent}.json"))).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_jekt_reaches_a_pane_on_a_peer_instance() {
    let (reg, a, b) = pair();
    let sink = b.open_sink("bob", "generic", true).await;
    let file = reg.path().join("agents/bob.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(reg.path().join("agents"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let e = entry(&reg, "bob");
    assert_eq!(e["local_url"], b.url.as_str());
    let forward_token = e["forward_token"].as_str().unwrap().to_string();
    assert_ne!(
        forward_token, b.key,
        "the registry never holds the instance key"
    );
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&b.key));

    // The instance key on A: forwarded, a claim.
    let (s, resp) = a
        .jekt("bob", "hello from the other instance", &Cred::Key)
        .await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(
        (resp["outcome"].as_str(), resp["delivery"].as_str()),
        (Some("forwarded"), Some("channel"))
    );
    let text = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(
        text.contains("[JEKT:FROM=user TO=bob TIER=info DELIVERY=channel TRUST=self-declared "),
        "{text}"
    );

    // An agent token on A: proven there, so channel-verified here.
    let alice = Cred::Token(a.register("alice").await);
    let (s, resp) = a.jekt("bob", "proven sender", &alice).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(resp["trust"], "channel-verified");
    let text = String::from_utf8(sink.wait_submits(2).await).unwrap();
    assert!(
        text.contains("[JEKT:FROM=alice TO=bob TIER=info DELIVERY=channel TRUST=channel-verified "),
        "{text}"
    );

    // The forward token opens the inject route of B and nothing else.
    let fwd = Cred::Token(forward_token.clone());
    for (m, p) in [
        ("GET", "/v1/agents"),
        ("GET", "/agentmux/reactive/agents"),
        ("GET", "/v1/inbox/bob"),
        ("POST", "/v1/messages/ack"),
        ("GET", "/v1/audit"),
    ] {
        assert_eq!(b.send(m, p, &fwd).await.0, 403, "{m} {p}");
    }
    assert_eq!(
        a.get("/v1/agents", &fwd).await.0,
        401,
        "it is B's token, not A's"
    );
    // And a forward cannot claim more than the peer vouches for.
    let (s, resp) = b
        .post(
            "/agentmux/reactive/inject",
            &serde_json::json!({"target_agent": "bob", "source_agent": "mallory", "message": "x"}),
            &fwd,
        )
        .await;
    assert_eq!(
        (s, resp["trust"].as_str()),
        (200, Some("self-declared")),
        "{resp}"
    );
}

#[tokio::test]
async fn a_dead_peer_is_evicted_and_the_jekt_falls_through() {
    let (reg, a, mut b) = pair();
    // bob ran on A once (A remembers him, offline), and runs on B now.
    a.open_sink("bob", "generic", true).await;
    a.post(
        "/v1/agents/bob/stop",
        &serde_json::json!({"force": true}),
        &Cred::Key,
    )
    .await;
    common::eventually("A to withdraw bob's entry", 10, async || {
        (!reg.path().join("agents/bob.json").exists()).then_some(())
    })
    .await;
    b.open_sink("bob", "generic", true).await;
    let (_, resp) = a.jekt("bob", "first", &Cred::Key).await;
    assert_eq!(
        resp["outcome"], "forwarded",
        "A forwards to where bob runs: {resp}"
    );
    b.kill9();
    let (s, resp) = a.jekt("bob", "second", &Cred::Key).await;
    assert_eq!(
        (s, resp["outcome"].as_str()),
        (200, Some("held")),
        "falls through to the hold: {resp}"
    );
    assert!(
        !reg.path().join("agents/bob.json").exists(),
        "the dead peer's entry is evicted"
    );
    // An agent only a dead peer knew is unknown.
    b.restart();
    b.open_sink("carol", "generic", true).await;
    b.kill9();
    let (s, _) = a.jekt("carol", "anyone?", &Cred::Key).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn mail_for_an_agent_of_a_peer_is_stored_there() {
    let (reg, a, mut b) = pair();
    b.open_sink("bob", "generic", true).await;
    let (s, r) = a.msg("bob", "mail across instances", &Cred::Key).await;
    assert_eq!((s, &r["forwarded"]), (201, &serde_json::json!(true)), "{r}");
    let (_, page) = b.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(Daemon::ids(&page), vec![r["id"].as_str().unwrap()]);
    assert_eq!(page["messages"][0]["trust"], "self-declared", "{page}");
    let (_, page) = a.inbox("bob", "peek=true", &Cred::Key).await;
    assert!(Daemon::ids(&page).is_empty(), "A keeps no copy: {page}");

    // A sender proven on A is channel-verified on B, and keeps its name.
    let alice = Cred::Token(a.register("alice").await);
    let (s, r) = a.msg("bob", "from alice", &alice).await;
    assert_eq!(s, 201, "{r}");
    let (_, page) = b.inbox("bob", "peek=true", &Cred::Key).await;
    let last = &page["messages"][1];
    assert_eq!(
        (last["from"].as_str(), last["trust"].as_str()),
        (Some("alice"), Some("channel-verified")),
        "{page}"
    );

    // The forward token stores mail only for agents B has.
    let fwd = Cred::Token(entry(&reg, "bob")["forward_token"].as_str().unwrap().into());
    let (s, _) = b
        .post(
            "/v1/messages",
            &serde_json::json!({"to": "nobody", "body": "x"}),
            &fwd,
        )
        .await;
    assert_eq!(s, 404);

    // B gone: its entry is evicted and the mail waits on A instead.
    b.kill9();
    let (s, r) = a.msg("bob", "after B died", &Cred::Key).await;
    assert_eq!(s, 201, "{r}");
    assert!(r.get("forwarded").is_none(), "{r}");
    assert!(!reg.path().join("agents/bob.json").exists());
    let (_, page) = a.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(Daemon::ids(&page), vec![r["id"].as_str().unwrap()]);
}

#[tokio::test]
async fn a_name_running_on_a_peer_cannot_be_taken() {
    let (_reg, a, b) = pair();
    b.open_sink("bob", "generic", true).await;
    let (s, body) = a
        .post(
            "/v1/agents",
            &serde_json::json!({"agent_id": "bob", "command": ["true"]}),
            &Cred::Key,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("agent_exists")),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["instance"], b.url.as_str());
    let (s, _) = a
        .post(
            "/agentmux/reactive/register",
            &serde_json::json!({"agent_id": "bob"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn the_peer_applies_its_own_shell_policy() {
    let (_reg, a, b) = pair();
    b.open_sink("box", "shell", true).await;
    let alice = Cred::Token(a.register("alice").await);
    let (s, resp) = a.jekt("box", "rm -rf /tmp/x", &alice).await;
    assert_eq!(
        (s, resp["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{resp}"
    );
    assert!(
        resp["error"]["message"].as_str().unwrap().contains("shell"),
        "{resp}"
    );
    // The instance key on A is the same user: it may.
    assert_eq!(a.jekt("box", "ls", &Cred::Key).await.0, 200);
}

#[tokio::test]
async fn an_instance_removes_its_entries_when_it_stops() {
    let (reg, _a, mut b) = pair();
    b.open_sink("bob", "generic", true).await;
    let file = reg.path().join("agents/bob.json");
    assert!(file.exists(), "published on open");
    let status = b.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "clean exit: {status:?}");
    let left = std::fs::read_to_string(&file).ok();
    assert!(left.is_none(), "entry left behind: {left:?}");
}

#[tokio::test]
async fn the_directory_lists_a_peers_agents_once_and_skips_half_written_entries() {
    let (reg, a, b) = pair();
    b.open_sink("bob", "generic", true).await;
    a.register("alice").await;
    // A registry file being written has a temporary name: not an entry.
    let tmp = reg.path().join("agents/bob.tmp.999");
    std::fs::copy(reg.path().join("agents/bob.json"), &tmp).unwrap();

    let (s, dir) = a.get("/v1/directory", &Cred::Key).await;
    assert_eq!(s, 200, "{dir}");
    let agents = dir["agents"].as_array().unwrap();
    let bob: Vec<_> = agents.iter().filter(|e| e["agent_id"] == "bob").collect();
    assert_eq!(bob.len(), 1, "{dir}");
    assert_eq!(bob[0]["where"], "peer");
    assert_eq!(bob[0]["url"], b.url.as_str());
    let alice = agents.iter().find(|e| e["agent_id"] == "alice").unwrap();
    assert_eq!(alice["where"], "local");
    assert_eq!(alice["state"], "external");

    // From B the same names, seen the other way round.
    let (_, dir) = b.get("/v1/directory", &Cred::Key).await;
    let find = |n: &str| {
        dir["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["agent_id"] == n)
            .cloned()
    };
    assert_eq!(find("bob").unwrap()["where"], "local");
    assert_eq!(find("alice").unwrap()["where"], "peer");
}
