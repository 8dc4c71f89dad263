//! The relay loses nothing it acknowledged: `kill -9` during 2,000 sends,
//! then every 200 is delivered after the restart. And it holds 2,000
//! long-polls at once, waking each with its own message.

mod common;
use common::{Relay, eventually};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_send_survives_kill_9() {
    let mut r = Relay::start(&[]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let senders: Vec<_> = (0..16)
        .map(|c| {
            let (url, acked) = (format!("{}/send", r.url), acked.clone());
            tokio::spawn(async move {
                let http = agentbus_daemon::tls::default_client();
                for i in (c..2000).step_by(16) {
                    let body = json!({"from": "load", "to": "sink", "msg": format!("m{i}")});
                    match http.post(&url).json(&body).send().await {
                        Ok(resp) if resp.status() == 200 => {
                            acked.lock().unwrap().push(format!("m{i}"))
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    eventually("800 acknowledged sends", 60, async || {
        (acked.lock().unwrap().len() >= 800).then_some(())
    })
    .await;
    r.kill9();
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < 2000, "the kill interrupted the load");
    r.restart();
    let mut since = 0.0f64;
    let mut got = std::collections::HashSet::new();
    loop {
        let (_, b) = r
            .get(&format!("/recv?to=sink&since={since}&max=1000"), None)
            .await;
        let msgs = b["messages"].as_array().unwrap().clone();
        for m in &msgs {
            assert!(
                got.insert(m["msg"].as_str().unwrap().to_string()),
                "delivered twice"
            );
            since = since.max(m["ts"].as_f64().unwrap());
        }
        if msgs.is_empty() {
            break;
        }
    }
    for m in &acked {
        assert!(got.contains(m), "{m} was acknowledged but is gone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_long_polls_are_held_and_each_woken() {
    // 2,000 client sockets here: lift the soft open-files limit to the hard one.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    assert!(
        hard >= 4096,
        "the open-files hard limit ({hard}) is too low for this test"
    );
    let r = Relay::start(&[]);
    let mut waiters = Vec::new();
    for i in 0..2000 {
        let url = format!("{}/recv?to=w{i}&block=true", r.url);
        waiters.push(tokio::spawn(async move {
            // One connection each: a pooled client would share them.
            let http = agentbus_daemon::tls::ClientTls::default()
                .builder()
                .unwrap()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let b: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            b["messages"].as_array().map(|m| {
                m.iter()
                    .map(|x| x["msg"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
        }));
    }
    eventually("2,000 long-polls waiting", 60, async || {
        (r.metric("agentbus_relay_waiting").await? == 2000).then_some(())
    })
    .await;
    let http = agentbus_daemon::tls::default_client();
    for i in 0..2000 {
        let resp = http
            .post(format!("{}/send", r.url))
            .json(&json!({"from": "x", "to": format!("w{i}"), "msg": format!("for w{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    for (i, w) in waiters.into_iter().enumerate() {
        let got = tokio::time::timeout(std::time::Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(vec![format!("for w{i}")]), "waiter {i}");
    }
}

#[tokio::test]
async fn the_wal_is_cut_back_once_the_relay_is_quiet() {
    if common::relay_on_nats() {
        // SQLite's write-ahead log: a relay on JetStream has no file.
        return;
    }
    let r = Relay::start(&[]);
    let body = "z".repeat(4_000);
    for i in 0..1_500 {
        let (s, _) = r
            .send(
                json!({"from": "a", "to": format!("q{}", i % 7), "msg": body}),
                None,
            )
            .await;
        assert_eq!(s, 200);
    }
    let wal = r.dir.path().join("relay.db-wal");
    let grown = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(grown > 1 << 20, "the sends made a WAL of {grown} bytes");
    eventually("the WAL truncated", 15, async || {
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        (len <= 1 << 20).then_some(())
    })
    .await;
}
