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
    let sink = d.open_sink("calm", "claude", true).await;
    // Quiet since it started; a wait is at most the rest of the quiet time.
    let b = inject(
        &d,
        json!({"target_agent": "calm", "message": "now", "wait_for_idle": 20}),
    )
    .await;
    assert!(b["waited_ms"].as_u64().unwrap() < 20_000, "{b}");
    sink.wait_submits(1).await;
}
