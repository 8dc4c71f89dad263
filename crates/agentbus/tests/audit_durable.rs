//! The audit log is durable and never holds a body: entries written
//! before a `kill -9` are read back after a restart, with the body's
//! length and SHA-256 only.

mod common;
use common::{Cred, Daemon};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn entries_survive_kill_9_and_hold_hashes_not_bodies() {
    let mut d = Daemon::start();
    d.open_sink("alice", "generic", true).await;
    let body = "the secret plan is purple-elephant-42";
    for _ in 0..3 {
        assert_eq!(d.jekt("alice", body, &Cred::Key).await.0, 200);
    }
    assert_eq!(d.jekt("nobody", body, &Cred::Key).await.0, 404);
    d.kill9();
    d.restart();

    let (s, b) = d
        .get("/agentmux/reactive/audit?limit=100", &Cred::Key)
        .await;
    assert_eq!(s, 200);
    let entries = b["entries"].as_array().unwrap();
    let jekts: Vec<_> = entries.iter().filter(|e| e["kind"] == "jekt").collect();
    assert_eq!(
        jekts.iter().filter(|e| e["outcome"] == "delivered").count(),
        3,
        "{b}"
    );
    assert_eq!(
        jekts.iter().filter(|e| e["outcome"] == "not_found").count(),
        1,
        "{b}"
    );
    let want = hex::encode(Sha256::digest(body.as_bytes()));
    for e in &jekts {
        assert_eq!(e["body_sha256"], want.as_str());
        assert_eq!(e["body_len"], body.len());
        assert_eq!(e["actor"], "admin");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "open" && e["target"] == "alice")
    );
    // The body is nowhere in the database files.
    for f in ["agentbus.db", "agentbus.db-wal"] {
        let raw = std::fs::read(d.data_dir().join(f)).unwrap_or_default();
        assert_eq!(
            common::count(&raw, b"purple-elephant"),
            0,
            "{f} holds the body"
        );
    }
    // Filters work.
    let (_, b) = d.get("/v1/audit?kind=open", &Cred::Key).await;
    assert!(
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "open")
    );
    let (_, b) = d.get("/v1/audit?agent=alice&limit=2", &Cred::Key).await;
    assert_eq!(b["entries"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_cli_prints_the_audit_log() {
    let d = Daemon::start();
    d.register("scout").await;
    let out = d.cli(&["audit", "--limit", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("TIME"), "{text}");
    assert!(
        text.contains("register") && text.contains("scout"),
        "{text}"
    );
}
