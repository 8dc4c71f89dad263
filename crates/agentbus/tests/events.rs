//! Events end to end: `agentbus events tail` streams live events,
//! filtered by type and scope; `persist: N` keeps the last N per (type,
//! scope) in history, for agentbus's own events too; a client may publish
//! custom events but not agentbus's own types.

mod common;
use common::{Cred, Daemon, eventually};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn events_tail_streams_live_events_filtered_by_type() {
    let d = Daemon::start();
    let mut tail = Command::new(common::bin())
        .arg("--data-dir")
        .arg(d.data_dir())
        .args(["events", "tail", "--type", "message:received"])
        .env_remove("AGENTBUS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is subscribed before publishing.
    let mut err = BufReader::new(tail.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("watching events"), "{first}");
    d.register("other").await; // an agent:registered event, filtered out
    d.msg("bob", "hello", &Cred::Key).await;
    let mut out = BufReader::new(tail.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let e: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["type"], "message:received");
    assert_eq!(e["data"]["to"], "bob");
    assert!(
        e["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("agent:bob"))
    );
    let _ = tail.kill();
    let _ = tail.wait();
}

#[tokio::test]
async fn the_stream_filters_by_scope() {
    let d = Daemon::start();
    let resp = d
        .http
        .get(format!("{}/v1/events/stream?scope=team:blue", d.url))
        .header("x-authkey", &d.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut resp = resp;
    let mut buf = String::new();
    // The first line says the subscription is live.
    while !buf.contains('\n') {
        buf.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    assert!(buf.starts_with("{\"type\":\"subscribed\"}"), "{buf}");
    for (scope, n) in [("team:red", 1), ("team:blue", 2)] {
        let (s, _) = d
            .post(
                "/v1/events",
                &json!({"type": "build:done", "scopes": [scope], "data": {"n": n}}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 201);
    }
    while buf.lines().count() < 2 {
        buf.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    let e: serde_json::Value = serde_json::from_str(buf.lines().nth(1).unwrap()).unwrap();
    assert_eq!(e["data"]["n"], 2, "only the blue event: {buf}");
    assert_eq!(e["source"], "admin");
}

#[tokio::test]
async fn persist_keeps_the_last_n_per_type_and_scope() {
    let d = Daemon::start();
    for n in 0..5 {
        let (s, b) = d
            .post(
                "/v1/events",
                &json!({"type": "deploy:step", "scopes": ["svc:api", "local"], "data": {"n": n}, "persist": 3}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let ns = |h: &serde_json::Value| -> Vec<i64> {
        h["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"]["n"].as_i64().unwrap())
            .collect()
    };
    let h = eventually("history to be written", 10, async || {
        let (_, h) = d
            .get(
                "/v1/events/history?type=deploy:step&scope=svc:api",
                &Cred::Key,
            )
            .await;
        // Written after the publish answers: wait for the newest.
        (h["events"].as_array()?.last()?["data"]["n"] == 4).then_some(h)
    })
    .await;
    assert_eq!(ns(&h), [2, 3, 4], "the last three, oldest first");
    let (_, h) = d
        .get(
            "/v1/events/history?type=deploy:step&scope=local&limit=2",
            &Cred::Key,
        )
        .await;
    assert_eq!(ns(&h), [3, 4]);
    // agentbus's own events keep history too.
    d.open("brief", "raw", &["sh", "-c", "exit 0"]).await;
    let h = eventually("block:exited in history", 10, async || {
        let (_, h) = d
            .get(
                "/v1/events/history?type=block:exited&scope=agent:brief",
                &Cred::Key,
            )
            .await;
        (h["events"].as_array()?.len() == 1).then_some(h)
    })
    .await;
    assert_eq!(h["events"][0]["data"]["exit_code"], 0);
    // The CLI reads it too.
    let out = d.cli(&[
        "events",
        "history",
        "--type",
        "deploy:step",
        "--scope",
        "svc:api",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[tokio::test]
async fn clients_publish_custom_events_only() {
    let d = Daemon::start();
    let token = Cred::Token(d.register("ci").await);
    let (s, e) = d
        .post(
            "/v1/events",
            &json!({"type": "build:done", "scopes": ["agent:ci"], "data": {"ok": true}}),
            &token,
        )
        .await;
    assert_eq!(s, 201, "{e}");
    assert_eq!(e["source"], "agent:ci", "the publisher is named");
    for bad in [
        json!({"type": "block:exited"}),
        json!({"type": "Not Valid"}),
        json!({"type": "x", "scopes": ["has space"]}),
        json!({"type": "x", "persist": 1_000_000}),
        json!({"type": "x", "scopes": vec!["s"; 17]}),
    ] {
        let (s, b) = d.post("/v1/events", &bad, &token).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let big = json!({"type": "x", "data": "y".repeat(70_000)});
    assert_eq!(d.post("/v1/events", &big, &token).await.0, 413);
    let out = d.cli(&[
        "events",
        "publish",
        "note:taken",
        "--scope",
        "team:a",
        "--data",
        "{\"k\":1}",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["type"], "note:taken");
}
