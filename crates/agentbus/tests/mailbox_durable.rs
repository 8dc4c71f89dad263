//! A message that got a 2xx is on disk: `kill -9` of the daemon while a
//! client sends 2,000 messages as fast as it can loses none of them, and
//! none is stored twice (also when the client retries everything with
//! the same request ids after the restart).

mod common;
use common::{Cred, Daemon, eventually};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const TOTAL: usize = 2000;
const CLIENTS: usize = 16;

async fn send_all(d: &Daemon, acked: Arc<Mutex<Vec<String>>>) -> Vec<tokio::task::JoinHandle<()>> {
    let client = agentbus_daemon::tls::default_client();
    (0..CLIENTS)
        .map(|c| {
            let (client, url, key, acked) = (client.clone(), format!("{}/v1/messages", d.url), d.key.clone(), acked.clone());
            tokio::spawn(async move {
                for i in (c..TOTAL).step_by(CLIENTS) {
                    let body = json!({"to": "sink", "body": format!("m-{i}"), "request_id": format!("r-{i}")});
                    match client.post(&url).header("x-authkey", &key).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            if let Some(id) = v["id"].as_str() {
                                acked.lock().unwrap().push(id.to_string());
                            }
                        }
                        // The daemon is gone: this client stops.
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

async fn read_all(d: &Daemon) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let (s, page) = d
            .inbox(
                "sink",
                &format!("after={cursor}&limit=1000&include_acked=true&peek=true"),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 200);
        for m in page["messages"].as_array().unwrap() {
            out.push((
                m["id"].as_str().unwrap().to_string(),
                m["body"].as_str().unwrap().to_string(),
            ));
        }
        cursor = page["next_cursor"].as_i64().unwrap();
        if !page["more"].as_bool().unwrap() {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_survives_kill_9_exactly_once() {
    let mut d = Daemon::start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let senders = send_all(&d, acked.clone()).await;
    eventually("800 acknowledged sends", 60, async || {
        (acked.lock().unwrap().len() >= 800).then_some(())
    })
    .await;
    d.kill9();
    for s in senders {
        let _ = s.await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() < TOTAL,
        "the kill interrupted the load ({} acknowledged)",
        acked.len()
    );

    d.restart();
    let stored = read_all(&d).await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &stored {
        *count.entry(id.as_str()).or_default() += 1;
    }
    for id in &acked {
        assert_eq!(
            count.get(id.as_str()),
            Some(&1),
            "acknowledged message {id} is not stored exactly once"
        );
    }

    // The client retries everything with the same request ids: the ones
    // stored come back as duplicates, the rest are stored, none twice.
    let again = Arc::new(Mutex::new(Vec::new()));
    for s in send_all(&d, again.clone()).await {
        s.await.unwrap();
    }
    assert_eq!(again.lock().unwrap().len(), TOTAL);
    let stored = read_all(&d).await;
    assert_eq!(stored.len(), TOTAL);
    let mut bodies: Vec<&str> = stored.iter().map(|(_, b)| b.as_str()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), TOTAL, "no message stored twice");
}
