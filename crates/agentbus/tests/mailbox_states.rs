//! The mailbox's states and reads: a peek changes nothing, a read marks
//! delivered, an ack removes a message from later reads; cursor paging
//! over 1,000 messages has no gap and no repeat; a waiting read returns
//! when mail arrives; and a mail for an agent that is not running waits.

mod common;
use common::{Cred, Daemon};
use serde_json::json;

fn states(page: &serde_json::Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn peek_read_and_ack_are_kept_apart() {
    let d = Daemon::start();
    for i in 0..3 {
        let (s, b) = d.msg("bob", &format!("note {i}"), &Cred::Key).await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(
            b["recipient_known"], false,
            "bob has never run; the mail waits anyway"
        );
    }
    let (_, p1) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(states(&p1), ["queued", "queued", "queued"]);
    let (_, p2) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(
        states(&p2),
        ["queued", "queued", "queued"],
        "a peek changes nothing"
    );
    let (_, read) = d.inbox("bob", "", &Cred::Key).await;
    assert_eq!(states(&read), ["delivered", "delivered", "delivered"]);
    assert_eq!(read["next_cursor"], read["messages"][2]["seq"]);
    common::eventually("the delivered state to be committed", 10, async || {
        let (_, again) = d.inbox("bob", "peek=true", &Cred::Key).await;
        (states(&again) == ["delivered", "delivered", "delivered"]).then_some(())
    })
    .await;
    let first = read["messages"][0]["id"].clone();
    let (s, acked) = d
        .post("/v1/messages/ack", &json!({"ids": [first]}), &Cred::Key)
        .await;
    assert_eq!(s, 200);
    assert_eq!(acked["acked"], json!([first]));
    let (_, after_ack) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(
        Daemon::ids(&after_ack).len(),
        2,
        "acked mail is not read again"
    );
    let (_, all) = d
        .inbox("bob", "peek=true&include_acked=true", &Cred::Key)
        .await;
    assert_eq!(states(&all), ["acked", "delivered", "delivered"]);
    let (_, again) = d
        .post("/v1/messages/ack", &json!({"ids": [first]}), &Cred::Key)
        .await;
    assert_eq!(again["already_acked"], json!([first]));
    // The CLI shows the same.
    let out = d.cli(&["inbox", "bob", "--peek"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("note 1") && text.contains("note 2") && !text.contains("note 0"),
        "{text}"
    );
}

#[tokio::test]
async fn cursor_paging_over_a_thousand_messages_has_no_gap_and_no_repeat() {
    let d = Daemon::start();
    let sends = (0..1000).map(|i| {
        let d = &d;
        async move { d.msg("reader", &format!("m{i}"), &Cred::Key).await }
    });
    // 8 at a time.
    let mut results = Vec::new();
    let mut it = sends.into_iter();
    loop {
        let batch: Vec<_> = it.by_ref().take(8).collect();
        if batch.is_empty() {
            break;
        }
        results.extend(futures_util::future::join_all(batch).await);
    }
    assert!(results.iter().all(|(s, _)| *s == 201));
    let mut sent: Vec<String> = results
        .iter()
        .map(|(_, b)| b["id"].as_str().unwrap().to_string())
        .collect();
    sent.sort();
    let mut cursor = 0i64;
    let mut seen = Vec::new();
    let mut last_seq = 0;
    loop {
        let (s, page) = d
            .inbox("reader", &format!("after={cursor}&limit=37"), &Cred::Key)
            .await;
        assert_eq!(s, 200);
        for m in page["messages"].as_array().unwrap() {
            let seq = m["seq"].as_i64().unwrap();
            assert!(seq > last_seq, "oldest first, strictly");
            last_seq = seq;
            seen.push(m["id"].as_str().unwrap().to_string());
        }
        cursor = page["next_cursor"].as_i64().unwrap();
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen.len(), 1000);
    seen.sort();
    assert_eq!(seen, sent, "every message once, none missing");
}

#[tokio::test]
async fn a_waiting_read_returns_when_mail_arrives() {
    let d = Daemon::start();
    let url = format!("{}/v1/inbox/late?wait=30", d.url);
    let key = d.key.clone();
    let started = std::time::Instant::now();
    let waiting = tokio::spawn(async move {
        agentbus_daemon::tls::default_client()
            .get(url)
            .header("x-authkey", key)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "it waits while the mailbox is empty"
    );
    let (s, sent) = d.msg("late", "here now", &Cred::Key).await;
    assert_eq!(s, 201);
    let page = waiting.await.unwrap();
    assert_eq!(page["messages"][0]["id"], sent["id"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "woken by the mail, not the timeout"
    );
    // An empty wait that runs out answers an empty page.
    let (s, empty) = d.inbox("nobody", "wait=0.2", &Cred::Key).await;
    assert_eq!(s, 200);
    assert_eq!(empty["messages"], json!([]));
}

#[tokio::test]
async fn a_waiting_read_ends_at_shutdown() {
    let mut d = Daemon::start();
    let url = format!("{}/v1/inbox/idle?wait=60", d.url);
    let key = d.key.clone();
    let waiting = tokio::spawn(async move {
        agentbus_daemon::tls::default_client()
            .get(url)
            .header("x-authkey", key)
            .send()
            .await
    });
    common::eventually("the read waiting", 20, async || {
        let (_, stats) = d.get("/v1/stats", &Cred::Key).await;
        (stats["reads_waiting"] == 1).then_some(())
    })
    .await;
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    let resp = waiting
        .await
        .unwrap()
        .expect("answered before the daemon went away");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn threads_replies_and_the_cli_round_trip() {
    let d = Daemon::start();
    let out = d.cli(&[
        "msg",
        "bob",
        "build is green",
        "--from",
        "alice",
        "--thread",
        "ci-812",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = sent["id"].as_str().unwrap();
    let out = d.cli(&[
        "msg",
        "alice",
        "thanks",
        "--from",
        "bob",
        "--thread",
        "ci-812",
        "--reply-to",
        id,
    ]);
    assert!(out.status.success());
    let (_, page) = d.inbox("alice", "", &Cred::Key).await;
    let m = &page["messages"][0];
    assert_eq!(
        (m["thread_id"].as_str(), m["reply_to"].as_str()),
        (Some("ci-812"), Some(id))
    );
    assert_eq!(m["from"], "bob");
    // The rest of the line is the text, quoted or not.
    let out = d.cli(&["msg", "carol", "no", "quotes", "needed", "--from", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, page) = d.inbox("carol", "peek=true", &Cred::Key).await;
    assert_eq!(page["messages"][0]["body"], "no quotes needed");
    // Reading and acking from the CLI.
    let out = d.cli(&["inbox", "bob", "--ack"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("build is green"));
    let (_, rest) = d.inbox("bob", "", &Cred::Key).await;
    assert_eq!(rest["messages"], json!([]));
}
