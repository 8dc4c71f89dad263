//! A flood costs bounded disk: 36,000 requests without a credential are
//! counted, not written one audit row each (a few in full, then one
//! summary row per group and minute), and the WAL is cut back once the
//! daemon is quiet. A sender cannot spread mail over many mailboxes past
//! its byte cap.

mod common;

use common::{Cred, Daemon, eventually};
use std::time::Duration;

fn disk(d: &Daemon) -> (u64, u64) {
    let size = |n: &str| {
        std::fs::metadata(d.data_dir().join(n))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    (size("agentbus.db"), size("agentbus.db-wal"))
}

#[tokio::test]
async fn a_flood_without_credentials_costs_bounded_disk() {
    let mut d = Daemon::start();
    // Let the start's own writes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (db0, wal0) = disk(&d);
    let client = agentbus_daemon::tls::default_client();
    let url = d.url.clone();
    let n = 36_000usize;
    let workers = 32;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut refused = 0;
                for i in (w..n).step_by(workers) {
                    let req = if i % 2 == 0 {
                        client.get(format!("{url}/v1/agents?n={i}"))
                    } else {
                        client.post(format!("{url}/agentmux/reactive/inject?n={i}"))
                    };
                    let r = req
                        .header("authorization", "Bearer abt_not-a-token")
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 401 {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    assert_eq!(refused, n, "every request refused with 401");
    let (_, stats) = d.get("/v1/stats", &Cred::Key).await;
    let counted = stats["refusals_counted"].as_u64().unwrap();
    assert!(counted as usize >= refused - 100, "{stats}");
    // Quiet now: the WAL is cut back within a few seconds.
    let (db1, wal1) = eventually("the WAL truncated", 15, async || {
        let (db, wal) = disk(&d);
        (wal <= 1 << 20).then_some((db, wal))
    })
    .await;
    let grew = (db1 + wal1).saturating_sub(db0 + wal0);
    assert!(grew < 2 << 20, "the flood grew the store by {grew} bytes");

    // The count is in the audit log, as a summary row, after a stop.
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    d.restart();
    let (_, a) = d.get("/v1/audit?limit=1000&kind=auth", &Cred::Key).await;
    let entries = a["entries"].as_array().unwrap();
    let full = entries
        .iter()
        .filter(|e| e["actor"] == "anonymous" && e["outcome"] == "unauthorized")
        .filter(|e| e["target"].is_string())
        .count();
    let summarized: u64 = entries
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .filter(|t| t.contains("more refusals like this"))
        .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(full <= 40, "{full} rows written in full");
    assert_eq!(
        full as u64 + summarized,
        refused as u64,
        "every refusal counted once: {:?}",
        entries
            .iter()
            .filter(|e| e["actor"] == "anonymous")
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn one_sender_cannot_fill_more_than_its_bytes_across_mailboxes() {
    let d = Daemon::start_with("[mailbox]\nmax_sender_bytes = 100000\n");
    let body = "y".repeat(40_000);
    let mut stored = 0;
    let mut refused = None;
    for i in 0..10 {
        let (s, b) = d
            .post(
                "/v1/messages",
                &serde_json::json!({"to": format!("box-{i}"), "body": body, "from": "flood"}),
                &Cred::Key,
            )
            .await;
        match s {
            201 => stored += 1,
            _ => {
                refused = Some((s, b));
                break;
            }
        }
    }
    assert_eq!(
        stored, 2,
        "40 KB twice fits in 100 KB, three times does not"
    );
    let (s, b) = refused.unwrap();
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (507, Some("sender_full")),
        "{b}"
    );
    // Another sender is unaffected.
    let (s, _) = d
        .post(
            "/v1/messages",
            &serde_json::json!({"to": "box-9", "body": body, "from": "calm"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 201);
}
