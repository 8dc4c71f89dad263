//! Clients that go away mid-stream leave nothing behind: waiting reads
//! and event streams whose connections close are freed, as `GET
//! /v1/stats` shows.

mod common;
use common::{Cred, Daemon, eventually};

async fn stat(d: &Daemon, key: &str) -> u64 {
    let (s, b) = d.get("/v1/stats", &Cred::Key).await;
    assert_eq!(s, 200, "{b}");
    b[key].as_u64().unwrap()
}

#[tokio::test]
async fn waiting_reads_and_streams_of_vanished_clients_are_freed() {
    let d = Daemon::start_with("[events]\nheartbeat_s = 1\n");
    let baseline_subscribers = stat(&d, "event_subscribers").await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let url = format!("{}/v1/inbox/idle{i}?wait=60", d.url);
        let key = d.key.clone();
        clients.push(tokio::spawn(async move {
            let _ = agentbus_daemon::tls::default_client()
                .get(url)
                .header("x-authkey", key)
                .send()
                .await;
        }));
    }
    let mut streams = Vec::new();
    for _ in 0..5 {
        let resp = d
            .http
            .get(format!("{}/v1/events/stream", d.url))
            .header("x-authkey", &d.key)
            .send()
            .await
            .unwrap();
        streams.push(resp);
    }
    eventually("10 reads waiting", 10, async || {
        (stat(&d, "reads_waiting").await == 10).then_some(())
    })
    .await;
    assert_eq!(
        stat(&d, "event_subscribers").await,
        baseline_subscribers + 5
    );

    // The clients vanish: their connections close mid-wait.
    for c in &clients {
        c.abort();
    }
    drop(streams);
    eventually("the waiting reads to be freed", 10, async || {
        (stat(&d, "reads_waiting").await == 0).then_some(())
    })
    .await;
    eventually("the stream subscriptions to be freed", 10, async || {
        (stat(&d, "event_subscribers").await == baseline_subscribers).then_some(())
    })
    .await;
    // And the daemon still serves mail normally.
    assert_eq!(d.msg("idle0", "after", &Cred::Key).await.0, 201);
}
