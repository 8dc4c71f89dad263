//! Concurrent jekts into one pane never interleave (each is one whole
//! paste followed by its Enter), and a request id is delivered once even
//! when the same request arrives twice at the same time.

mod common;
use common::{Cred, Daemon, count};
use serde_json::json;

#[tokio::test]
async fn twenty_concurrent_jekts_arrive_whole_and_in_sequence() {
    let d = Daemon::start_with("[profiles.claude]\nsettle_ms = 20\n");
    let sink = d.open_sink("alice", "generic", true).await;
    let sends = (0..20).map(|i| {
        let d = &d;
        async move {
            let body = format!("message number {i} {}", "pad ".repeat(200));
            d.jekt("alice", &body, &Cred::Key).await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let got = sink.wait_submits(20).await;
    // Split into units: each must be exactly ESC[200~ ... ESC[201~ \r.
    let unit_end = b"\x1b[201~\r";
    assert_eq!(count(&got, unit_end), 20);
    let mut seen = std::collections::BTreeSet::new();
    let mut rest = &got[..];
    while !rest.is_empty() {
        let end = rest
            .windows(unit_end.len())
            .position(|w| w == unit_end)
            .unwrap()
            + unit_end.len();
        let unit = &rest[..end];
        assert!(
            unit.starts_with(b"\x1b[200~[JEKT:"),
            "interleaved: {:?}",
            String::from_utf8_lossy(unit)
        );
        assert_eq!(count(unit, b"\x1b[200~"), 1);
        assert_eq!(count(unit, b"[/JEKT]"), 1);
        let text = String::from_utf8_lossy(unit);
        let n: u32 = text
            .split("message number ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(seen.insert(n), "message {n} twice");
        rest = &rest[end..];
    }
    assert_eq!(seen.len(), 20);
}

#[tokio::test]
async fn the_same_request_id_is_pasted_once() {
    let d = Daemon::start();
    let sink = d.open_sink("alice", "generic", true).await;
    let req = json!({"target_agent": "alice", "message": "only once", "request_id": "req-42"});
    // Twice at the same time, then once more after.
    let (a, b) = tokio::join!(
        d.post("/agentmux/reactive/inject", &req, &Cred::Key),
        d.post("/agentmux/reactive/inject", &req, &Cred::Key)
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(a.1["msg_id"], b.1["msg_id"]);
    assert_ne!(
        a.1["duplicate"], b.1["duplicate"],
        "exactly one of them delivered"
    );
    let (c_status, c) = d.post("/agentmux/reactive/inject", &req, &Cred::Key).await;
    assert_eq!(c_status, 200);
    assert_eq!(c["duplicate"], true);
    assert_eq!(c["msg_id"], a.1["msg_id"]);
    sink.wait_submits(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(count(&sink.bytes(), b"only once"), 1);
    // A different sender may use the same request id for its own jekt.
    let other = json!({"target_agent": "alice", "source_agent": "carol", "message": "carol's", "request_id": "req-42"});
    let (s, r) = d
        .post("/agentmux/reactive/inject", &other, &Cred::Key)
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["duplicate"], false);
}

#[tokio::test]
async fn a_request_id_survives_a_daemon_restart() {
    let mut d = Daemon::start();
    d.open_sink("alice", "generic", true).await;
    let req = json!({"target_agent": "alice", "message": "once", "request_id": "restart-1"});
    let (s, first) = d.post("/agentmux/reactive/inject", &req, &Cred::Key).await;
    assert_eq!(s, 200);
    d.kill9();
    d.restart();
    d.open_sink("alice", "generic", true).await;
    let (s, again) = d.post("/agentmux/reactive/inject", &req, &Cred::Key).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["msg_id"], first["msg_id"]);
}
