//! The durable hold: a jekt to a known agent that is offline is held and
//! its caller told so; when the agent comes back the held jekts are
//! delivered in order, marked HELD_FOR; the caps refuse with `hold full`;
//! held jekts survive a daemon restart; deleting the agent deletes them.

mod common;
use common::{Cred, Daemon, count, eventually};
use serde_json::json;

const CONFIG: &str = "[hold]\nper_agent = 3\nper_instance = 5\n[jekt]\nidle_quiet_ms = 300\n";

async fn sink_then_stop(d: &Daemon, name: &str) {
    d.open_sink(name, "generic", true).await;
    let (s, _) = d
        .post(
            &format!("/v1/agents/{name}/stop"),
            &json!({"force": true}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 200);
}

fn bodies_in_order(text: &str) -> Vec<String> {
    text.split("[JEKT:")
        .skip(1)
        .map(|block| block.lines().nth(2).unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn held_jekts_are_replayed_in_order_when_the_agent_returns() {
    let d = Daemon::start_with(CONFIG);
    sink_then_stop(&d, "alice").await;
    for i in 1..=3 {
        let (s, b) = d
            .post(
                "/agentmux/reactive/inject",
                &json!({"target_agent": "alice", "source_agent": "bob", "message": format!("held number {i}")}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["outcome"], "held");
    }
    let (_, info) = d.get("/v1/agents/alice", &Cred::Key).await;
    assert_eq!(info["held_jekts"], 3);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // The agent comes back under the same name.
    let sink = d.open_sink("alice", "generic", true).await;
    let text = String::from_utf8(sink.wait_submits(3).await).unwrap();
    assert_eq!(
        bodies_in_order(&text),
        ["held number 1", "held number 2", "held number 3"],
        "{text}"
    );
    assert_eq!(count(text.as_bytes(), b" HELD_FOR="), 3);
    let held_for: u64 = text
        .split(" HELD_FOR=")
        .nth(1)
        .unwrap()
        .split('s')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(held_for >= 1, "it waited at least a second: {held_for}");
    assert!(text.contains("[JEKT:FROM=bob TO=alice "));
    assert_eq!(count(text.as_bytes(), b"\r"), 3, "one submit each");
    eventually("the hold to drain", 10, async || {
        let (_, info) = d.get("/v1/agents/alice", &Cred::Key).await;
        (info["held_jekts"] == 0).then_some(())
    })
    .await;
    // Live jekts flow again.
    let (_, b) = d.jekt("alice", "live again", &Cred::Key).await;
    assert_eq!(b["outcome"], "delivered");
}

#[tokio::test]
async fn the_caps_refuse_with_hold_full() {
    let d = Daemon::start_with(CONFIG);
    for name in ["a1", "a2"] {
        sink_then_stop(&d, name).await;
    }
    for _ in 0..3 {
        assert_eq!(d.jekt("a1", "x", &Cred::Key).await.1["outcome"], "held");
    }
    let (s, b) = d.jekt("a1", "x", &Cred::Key).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (507, Some("hold_full")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hold full")
    );
    for _ in 0..2 {
        assert_eq!(d.jekt("a2", "x", &Cred::Key).await.1["outcome"], "held");
    }
    let (s, b) = d.jekt("a2", "x", &Cred::Key).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (507, Some("hold_full")),
        "instance cap: {b}"
    );
    let (_, audit) = d.get("/v1/audit?kind=jekt", &Cred::Key).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "hold_full")
    );
}

#[tokio::test]
async fn held_jekts_survive_a_restart_and_die_with_their_agent() {
    let mut d = Daemon::start_with(CONFIG);
    sink_then_stop(&d, "carol").await;
    sink_then_stop(&d, "dave").await;
    assert_eq!(
        d.jekt("carol", "before the restart", &Cred::Key).await.1["outcome"],
        "held"
    );
    assert_eq!(
        d.jekt("dave", "never delivered", &Cred::Key).await.1["outcome"],
        "held"
    );
    d.kill9();
    d.restart();
    // After the restart carol and dave are known, offline: still held.
    let (_, info) = d.get("/v1/agents/carol", &Cred::Key).await;
    assert_eq!(
        (info["state"].as_str(), info["held_jekts"].as_u64()),
        (Some("offline"), Some(1)),
        "{info}"
    );
    assert_eq!(
        d.jekt("carol", "after the restart", &Cred::Key).await.1["outcome"],
        "held"
    );
    // Unknown names are still unknown.
    assert_eq!(d.jekt("nobody", "x", &Cred::Key).await.0, 404);
    // Deleting dave deletes his held jekt.
    let (s, _) = d
        .post(
            "/agentmux/reactive/unregister",
            &json!({"agent_id": "dave"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        d.jekt("dave", "x", &Cred::Key).await.0,
        404,
        "dave is forgotten"
    );

    let sink = d.open_sink("carol", "generic", true).await;
    let text = String::from_utf8(sink.wait_submits(2).await).unwrap();
    assert_eq!(
        bodies_in_order(&text),
        ["before the restart", "after the restart"],
        "{text}"
    );
    let dave = d.open_sink("dave", "generic", true).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!String::from_utf8_lossy(&dave.bytes()).contains("never delivered"));
}

#[tokio::test]
async fn an_external_agent_holds_until_it_has_a_pane() {
    let d = Daemon::start_with(CONFIG);
    d.register("ext").await;
    let (s, b) = d.jekt("ext", "for later", &Cred::Key).await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("held")), "{b}");
    let sink = d.open_sink("ext", "generic", true).await;
    let text = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(
        text.contains("for later") && text.contains("HELD_FOR="),
        "{text}"
    );
}
