//! Idle gating: `wait_for_idle` delivers once the pane has been quiet,
//! waits no longer than its bound for a pane that never goes quiet, and
//! `urgent` does not wait at all. The answer says how long it waited.

mod common;
use common::{Cred, Daemon};
use serde_json::json;

async fn inject(d: &Daemon, body: serde_json::Value) -> serde_json::Value {
    let (s, b) = d.post("/agentmux/reactive/inject", &body, &Cred::Key).await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test]
async fn a_busy_pane_is_waited_for_up_to_the_bound_and_urgent_skips_the_wait() {
    let d = Daemon::start_with("[jekt]\nidle_quiet_ms = 500\n");
    // Prints every 100 ms: never quiet for 500 ms.
    d.open(
        "busy",
        "raw",
        &["sh", "-c", "while :; do echo tick; sleep 0.1; done"],
    )
    .await;
    let b = inject(
        &d,
        json!({"target_agent": "busy", "message": "m", "wait_for_idle": 1.0}),
    )
    .await;
    let waited = b["waited_ms"].as_u64().unwrap();
    assert!(
        (1000..5000).contains(&waited),
        "waited the full 1 s bound, then delivered: {waited}"
    );
    assert_eq!(b["outcome"], "delivered");
    let b = inject(&d, json!({"target_agent": "busy", "message": "m", "wait_for_idle": true, "priority": "urgent"})).await;
    assert_eq!(b["waited_ms"], 0, "urgent never waits");
    let b = inject(&d, json!({"target_agent": "busy", "message": "m"})).await;
    assert_eq!(b["waited_ms"], 0, "no wait unless asked");
}

#[tokio::test]
async fn a_pane_that_goes_quiet_gets_the_jekt_once_it_is_quiet() {
    let d = Daemon::start_with("[jekt]\nidle_quiet_ms = 400\n");
    // Busy for 1.5 s (a line every 100 ms), then quiet, reading its input.
    let sink = d.data_dir().join("calm.sink");
    let script = format!(
        "i=0; while [ $i -lt 15 ]; do echo tick; sleep 0.1; i=$((i+1)); done; exec {} probe sink --out {} --no-bracketed",
        common::bin(),
        sink.display()
    );
    d.open("calm", "generic", &["sh", "-c", &script]).await;
    let sent = std::time::Instant::now();
    let b = inject(
        &d,
        json!({"target_agent": "calm", "message": "now", "wait_for_idle": 20}),
    )
    .await;
    let waited = b["waited_ms"].as_u64().unwrap();
    // Not typed while it was busy: the ticks lasted 1.5 s from the open,
    // and the wait ends only after 400 ms of quiet.
    assert!(waited >= 1_000, "delivered while the pane was busy: {b}");
    // Nor held to the 20 s bound: it went as soon as the pane was quiet.
    assert!(waited < 10_000, "waited past the quiet: {b}");
    assert!(sent.elapsed().as_millis() as u64 >= waited);
    let got = common::Sink { path: sink }.wait_submits(1).await;
    assert_eq!(common::count(&got, b"now"), 1);
}
