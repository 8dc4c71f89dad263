//! Storm protection: two agents set to answer each other forever are
//! stopped by the per-pair window; the refusal is a 429 with Retry-After,
//! audited; a sender's token bucket bounds its overall rate; and the hop
//! limit refuses a jekt forwarded too often.

mod common;
use common::{Cred, Daemon, eventually};
use serde_json::json;

/// A pane program that answers every message it gets by messaging `peer`.
fn answerer(peer: &str) -> String {
    format!(
        "while :; do out=$({bin} inbox --wait 5 --ack --json 2>/dev/null); \
         case \"$out\" in *'\"id\"'*) {bin} msg {peer} pong >/dev/null 2>&1 ;; esac; done",
        bin = common::bin()
    )
}

async fn sent_by(d: &Daemon, agent: &str) -> usize {
    let (_, audit) = d
        .get(
            &format!("/v1/audit?kind=message&agent={agent}&limit=10000"),
            &Cred::Key,
        )
        .await;
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == format!("agent:{agent}") && e["outcome"] == "stored")
        .count()
}

#[tokio::test]
async fn two_agents_answering_each_other_are_stopped_by_the_pair_window() {
    let d = Daemon::start_with(
        "[limits]\nsender_per_s = 1000.0\nsender_burst = 1000.0\npair_per_minute = 30\n",
    );
    d.open("ping", "raw", &["sh", "-c", &answerer("pong")])
        .await;
    d.open("pong", "raw", &["sh", "-c", &answerer("ping")])
        .await;
    // Start the rally.
    assert_eq!(d.msg("ping", "serve", &Cred::Key).await.0, 201);
    // Each direction gets 30 through, then the window refuses.
    eventually("the pair window to stop the rally", 120, async || {
        (sent_by(&d, "ping").await >= 30 && sent_by(&d, "pong").await >= 30).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(sent_by(&d, "ping").await, 30, "no more than the window");
    assert_eq!(sent_by(&d, "pong").await, 30);
    let (_, audit) = d
        .get("/v1/audit?kind=message&limit=10000", &Cred::Key)
        .await;
    let refused: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "rate_limited")
        .collect();
    assert!(!refused.is_empty(), "refusals are audited");
    assert!(
        refused[0]["detail"]
            .as_str()
            .unwrap()
            .contains("answering each other")
    );

    // The instance key is the user's: it is not limited by default,
    // even on the same pair the agents exhausted.
    let resp = d
        .http
        .post(format!("{}/v1/messages", d.url))
        .header("x-authkey", &d.key)
        .json(&json!({"to": "pong", "body": "x", "from": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn a_refusal_is_429_with_retry_after() {
    let d = Daemon::start_with(
        "[limits]\nsender_per_s = 1000.0\nsender_burst = 1000.0\npair_per_minute = 3\n",
    );
    let a = d.register("a").await;
    d.register("b").await;
    for _ in 0..3 {
        assert_eq!(d.msg("b", "hi", &Cred::Token(a.clone())).await.0, 201);
    }
    let resp = d
        .http
        .post(format!("{}/v1/messages", d.url))
        .header("authorization", format!("Bearer {a}"))
        .json(&json!({"to": "b", "body": "one more"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another target is fine: it is the pair that is limited.
    d.register("c").await;
    assert_eq!(d.msg("c", "hi", &Cred::Token(a.clone())).await.0, 201);
    // Jekts count against the same window.
    let (s, _) = d.jekt("b", "jekt too", &Cred::Token(a)).await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn the_token_bucket_bounds_a_senders_rate() {
    let d = Daemon::start_with(
        "[limits]\nsender_per_s = 1.0\nsender_burst = 5.0\npair_per_minute = 1000\n",
    );
    let a = Cred::Token(d.register("fast").await);
    let mut codes = Vec::new();
    for i in 0..8 {
        codes.push(d.msg(&format!("t{i}"), "hi", &a).await.0);
    }
    assert_eq!(&codes[..5], &[201; 5], "the burst");
    assert!(codes[5..].iter().all(|c| *c == 429), "{codes:?}");
}

#[tokio::test]
async fn the_hop_limit_refuses_a_jekt_forwarded_too_often() {
    let d = Daemon::start();
    d.open_sink("far", "generic", true).await;
    let (s, b) = d
        .post(
            "/agentmux/reactive/inject",
            &json!({"target_agent": "far", "message": "x", "hops": 4}),
            &Cred::Key,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (508, Some("hop_limit")),
        "{b}"
    );
    let (s, _) = d
        .post(
            "/agentmux/reactive/inject",
            &json!({"target_agent": "far", "message": "x", "hops": 3}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 200);
}
