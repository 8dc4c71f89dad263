//! The relay speaks the agent-bus protocol exactly as docs/relay.md describes:
//! every point of its compatibility section, against the real binary.

mod common;
use common::Relay;
use serde_json::{Value, json};

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

#[tokio::test]
async fn send_answers_and_errors() {
    let r = Relay::start(&[]);
    let (s, b) = r
        .send(
            json!({"from": "alice", "to": "bob", "msg": "hi", "extra": [1, 2]}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["ok"], true);
    assert_eq!(
        b["channel"], "default",
        "channel defaults to default; other fields ignored"
    );
    assert!(b["ts"].as_f64().unwrap() > 1.7e9);
    let (s, b) = r
        .send(
            json!({"from": "a", "to": "b", "msg": "", "channel": "ops"}),
            None,
        )
        .await;
    assert_eq!(
        (s, b["channel"].as_str()),
        (200, Some("ops")),
        "an empty msg is allowed"
    );
    for bad in [
        json!({"to": "b", "msg": "x"}),
        json!({"from": "", "to": "b", "msg": "x"}),
        json!({"from": "a", "msg": "x"}),
        json!({"from": "a", "to": "", "msg": "x"}),
        json!({"from": "a", "to": "b"}),
        json!({"from": "a", "to": "b", "msg": 5}),
        json!({"from": "a", "to": "b", "msg": null}),
    ] {
        let (s, b) = r.send(bad.clone(), None).await;
        assert_eq!((s, error(&b)), (400, "from, to, msg required"), "{bad}");
    }
    for raw in [&b"not json"[..], b"[1,2]", b"\"text\"", b"42", b""] {
        let resp = r
            .http
            .post(format!("{}/send", r.url))
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{raw:?}");
        assert_eq!(error(&resp.json().await.unwrap()), "invalid JSON");
    }
    let big = json!({"from": "a", "to": "b", "msg": "x".repeat(65_536)}).to_string();
    assert!(big.len() > 65_536);
    let resp = r
        .http
        .post(format!("{}/send", r.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        error(&resp.json().await.unwrap()),
        "message too large (>64KB)"
    );
    // Just under the limit is fine.
    let fits = json!({"from": "a", "to": "b", "msg": "x".repeat(65_000)}).to_string();
    let resp = r
        .http
        .post(format!("{}/send", r.url))
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn recv_is_strict_ordered_bounded_and_per_channel() {
    let r = Relay::start(&[]);
    let mut ts = Vec::new();
    for i in 0..5 {
        let (_, b) = r
            .send(
                json!({"from": "a", "to": "bob", "msg": format!("m{i}")}),
                None,
            )
            .await;
        ts.push(b["ts"].as_f64().unwrap());
    }
    assert!(
        ts.windows(2).all(|w| w[1] > w[0]),
        "strictly increasing: {ts:?}"
    );
    r.send(
        json!({"from": "a", "to": "bob", "msg": "other channel", "channel": "ops"}),
        None,
    )
    .await;

    let (s, b) = r.get("/recv?to=bob", None).await;
    assert_eq!(s, 200);
    let got: Vec<&str> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ["m0", "m1", "m2", "m3", "m4"],
        "oldest first, default channel only"
    );
    let first = &b["messages"][0];
    assert_eq!(
        (first["from"].as_str(), first["ts"].as_f64()),
        (Some("a"), Some(ts[0])),
        "ts round-trips exactly"
    );
    assert!(b["now"].as_f64().unwrap() >= ts[4]);

    // since is strict: ts > since.
    let (_, b) = r.get(&format!("/recv?to=bob&since={}", ts[2]), None).await;
    let got: Vec<&str> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["m3", "m4"]);
    // max.
    let (_, b) = r.get("/recv?to=bob&max=2", None).await;
    assert_eq!(b["messages"].as_array().unwrap().len(), 2);
    // Channels are apart; an empty channel means default.
    let (_, b) = r.get("/recv?to=bob&channel=ops", None).await;
    assert_eq!(b["messages"][0]["msg"], "other channel");
    assert_eq!(b["messages"].as_array().unwrap().len(), 1);
    let (_, b) = r.get("/recv?to=bob&channel=", None).await;
    assert_eq!(b["messages"].as_array().unwrap().len(), 5);
    // Nobody's mail.
    let (_, b) = r.get("/recv?to=nobody", None).await;
    assert_eq!(b["messages"], json!([]));
    assert!(b["now"].as_f64().is_some());
}

#[tokio::test]
async fn recv_errors_are_400_with_a_message() {
    let r = Relay::start(&[]);
    let (s, b) = r.get("/recv", None).await;
    assert_eq!((s, error(&b)), (400, "to= required"));
    let (s, _) = r.get("/recv?to=", None).await;
    assert_eq!(s, 400);
    for q in [
        "since=abc",
        "since=NaN",
        "since=inf",
        "max=abc",
        "max=-1",
        "max=0",
        "max=1.5",
        "max=99999999999",
    ] {
        let (s, b) = r.get(&format!("/recv?to=bob&{q}"), None).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert!(!error(&b).is_empty(), "{q}: a message says what is wrong");
    }
}

#[tokio::test]
async fn block_waits_for_mail_and_is_bounded() {
    let r = Relay::start(&["--recv-wait-s", "2"]);
    // block=TRUE (any case) waits and wakes on arrival.
    let url = format!("{}/recv?to=late&block=TRUE", r.url);
    let waiting = tokio::spawn(async move {
        reqwest::get(url)
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    r.send(json!({"from": "a", "to": "late", "msg": "here"}), None)
        .await;
    let b = waiting.await.unwrap();
    assert_eq!(b["messages"][0]["msg"], "here");
    // With nothing to say it answers empty after the bound.
    let started = std::time::Instant::now();
    let (s, b) = r.get("/recv?to=quiet&block=true", None).await;
    assert_eq!((s, b["messages"].clone()), (200, json!([])));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "it waited"
    );
    // Anything but "true" does not block.
    let started = std::time::Instant::now();
    r.get("/recv?to=quiet&block=1", None).await;
    r.get("/recv?to=quiet&block=yes", None).await;
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
}

#[tokio::test]
async fn inbox_healthz_and_unknown_paths() {
    let r = Relay::start(&[]);
    r.send(json!({"from": "a", "to": "bob", "msg": "1"}), None)
        .await;
    r.send(json!({"from": "a", "to": "bob", "msg": "2"}), None)
        .await;
    r.send(
        json!({"from": "a", "to": "carol", "msg": "3", "channel": "ops"}),
        None,
    )
    .await;
    let (s, b) = r.get("/inbox", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["recipients"],
        json!({"default": {"bob": 2}, "ops": {"carol": 1}})
    );
    assert!(b["now"].as_f64().is_some());
    let (s, b) = r.get("/healthz", None).await;
    assert_eq!((s, b["ok"].as_bool()), (200, Some(true)));
    assert!(b["now"].as_f64().is_some());
    for path in ["/nope", "/v2/send", "/send/extra"] {
        let (s, b) = r.get(path, None).await;
        assert_eq!((s, error(&b)), (404, "not found"), "{path}");
    }
    assert_eq!(r.metric("agentbus_relay_sends_total").await, Some(3));
    // Each send's time in the storage, on either backend.
    for series in [
        "agentbus_relay_append_duration_seconds_count",
        "agentbus_relay_append_duration_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert_eq!(r.metric(series).await, Some(3), "{series}");
    }
}

#[tokio::test]
async fn a_cut_page_leaves_nothing_behind() {
    // Loss bug 1: 150 waiting, max=100. A client following the documented
    // rule (since = max(max ts seen, now)) gets all 150.
    let r = Relay::start(&[]);
    for i in 0..150 {
        r.send(
            json!({"from": "a", "to": "bob", "msg": format!("{i}")}),
            None,
        )
        .await;
    }
    let mut since = 0.0f64;
    let mut got = Vec::new();
    for _ in 0..5 {
        let (_, b) = r
            .get(&format!("/recv?to=bob&since={since}&max=100"), None)
            .await;
        let mut max_seen = since;
        for m in b["messages"].as_array().unwrap() {
            got.push(m["msg"].as_str().unwrap().to_string());
            max_seen = max_seen.max(m["ts"].as_f64().unwrap());
        }
        since = max_seen.max(b["now"].as_f64().unwrap());
    }
    let want: Vec<String> = (0..150).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_and_a_long_polling_reader_lose_and_repeat_nothing() {
    // Loss bug 2 (the `now` race): 4 senders x 5,000 while a reader
    // long-polls with the cursor rule; all 20,000 arrive, none twice.
    let r = Relay::start(&[]);
    let url = r.url.clone();
    let reader = tokio::spawn(async move {
        let http = agentbus_daemon::tls::default_client();
        let mut since = 0.0f64;
        let mut seen = std::collections::HashSet::new();
        let mut dups = 0;
        while seen.len() < 20_000 {
            let b: Value = http
                .get(format!(
                    "{url}/recv?to=sink&since={since}&block=true&max=1000"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut max_seen = since;
            for m in b["messages"].as_array().unwrap() {
                if !seen.insert(m["msg"].as_str().unwrap().to_string()) {
                    dups += 1;
                }
                max_seen = max_seen.max(m["ts"].as_f64().unwrap());
            }
            since = max_seen.max(b["now"].as_f64().unwrap());
        }
        (seen.len(), dups)
    });
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let url = format!("{}/send", r.url);
            tokio::spawn(async move {
                let http = agentbus_daemon::tls::default_client();
                for i in 0..5_000 {
                    let resp = http
                        .post(&url)
                        .json(&json!({"from": format!("s{s}"), "to": "sink", "msg": format!("{s}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let (n, dups) = tokio::time::timeout(std::time::Duration::from_secs(120), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n, dups), (20_000, 0));
}
