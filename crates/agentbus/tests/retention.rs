//! The retention sweeper removes expired messages and held jekts in the
//! background: an expired message stops counting against the quota once
//! swept, and an expired held jekt is never delivered.

mod common;
use common::{Cred, Daemon, eventually};
use serde_json::json;

#[tokio::test]
async fn expired_messages_and_held_jekts_are_swept() {
    let d = Daemon::start_with(
        "[mailbox]\nquota = 10\n[retention]\nsweep_interval_s = 1\nbatch = 3\n[hold]\nttl_s = 1\n",
    );
    for i in 0..10 {
        let (s, _) = d
            .post(
                "/v1/messages",
                &json!({"to": "bob", "body": format!("short {i}"), "ttl_s": 1}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 201);
    }
    assert_eq!(d.msg("bob", "full", &Cred::Key).await.0, 507);
    // Expired messages count until the sweeper removes them, in batches
    // of three; then the mailbox has room again.
    eventually("the sweeper to free the mailbox", 20, async || {
        (d.msg("bob", "room again", &Cred::Key).await.0 == 201).then_some(())
    })
    .await;

    d.open_sink("gone", "generic", true).await;
    d.post("/v1/agents/gone/stop", &json!({"force": true}), &Cred::Key)
        .await;
    assert_eq!(
        d.jekt("gone", "too late", &Cred::Key).await.1["outcome"],
        "held"
    );
    eventually("the held jekt to expire and be swept", 20, async || {
        let (_, info) = d.get("/v1/agents/gone", &Cred::Key).await;
        (info["held_jekts"] == 0).then_some(())
    })
    .await;
    let sink = d.open_sink("gone", "generic", true).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!String::from_utf8_lossy(&sink.bytes()).contains("too late"));
}
