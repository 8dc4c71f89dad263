//! The mailbox's rules: a full mailbox refuses with a clear error and
//! evicts nothing; messages expire; receipts reach senders who asked;
//! search finds words; bodies are capped; a request id stores once; and
//! an agent token reads and acks only its own mailbox.

mod common;
use common::{Cred, Daemon};
use serde_json::json;

#[tokio::test]
async fn a_full_mailbox_refuses_and_evicts_nothing() {
    let d = Daemon::start_with("[mailbox]\nquota = 5\n");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, b) = d.msg("bob", &format!("keep {i}"), &Cred::Key).await;
        assert_eq!(s, 201);
        ids.push(b["id"].clone());
    }
    let (s, b) = d.msg("bob", "one too many", &Cred::Key).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (507, Some("mailbox_full")),
        "{b}"
    );
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("nothing was evicted") && msg.contains("5 unacked"),
        "{msg}"
    );
    let (_, page) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect::<Vec<_>>(),
        ids
    );
    // Acking makes room.
    d.post("/v1/messages/ack", &json!({"ids": [ids[0]]}), &Cred::Key)
        .await;
    assert_eq!(d.msg("bob", "now it fits", &Cred::Key).await.0, 201);
    // The refusal is in the audit log.
    let (_, audit) = d.get("/v1/audit?kind=message", &Cred::Key).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "mailbox_full")
    );
}

#[tokio::test]
async fn messages_expire_after_their_ttl() {
    let d = Daemon::start();
    let (s, _) = d
        .post(
            "/v1/messages",
            &json!({"to": "bob", "body": "fleeting words", "ttl_s": 1}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 201);
    d.msg("bob", "lasting words", &Cred::Key).await;
    let (_, page) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (_, page) = d
        .inbox("bob", "peek=true&include_acked=true", &Cred::Key)
        .await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["lasting words"]);
    let (_, found) = d.get("/v1/search?q=fleeting", &Cred::Key).await;
    assert_eq!(found["messages"], json!([]));
    for bad in [0, 99_999_999] {
        let (s, _) = d
            .post(
                "/v1/messages",
                &json!({"to": "bob", "body": "x", "ttl_s": bad}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 400);
    }
}

#[tokio::test]
async fn receipts_reach_senders_who_asked() {
    let d = Daemon::start();
    let alice = Cred::Token(d.register("alice").await);
    let bob = Cred::Token(d.register("bob").await);
    let (_, want) = d
        .post(
            "/v1/messages",
            &json!({"to": "bob", "body": "please confirm", "receipt": true}),
            &alice,
        )
        .await;
    let (_, no) = d
        .post("/v1/messages", &json!({"to": "bob", "body": "fyi"}), &alice)
        .await;
    let (s, acked) = d
        .post(
            "/v1/messages/ack",
            &json!({"ids": [want["id"], no["id"]]}),
            &bob,
        )
        .await;
    assert_eq!(s, 200, "{acked}");
    let (_, page) = d.inbox("alice", "", &alice).await;
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        1,
        "one receipt, for the message that asked: {page}"
    );
    assert_eq!(msgs[0]["kind"], "receipt");
    assert_eq!(msgs[0]["from"], "agentbus");
    assert_eq!(msgs[0]["reply_to"], want["id"]);
}

#[tokio::test]
async fn search_finds_words_in_bodies() {
    let d = Daemon::start();
    d.msg(
        "bob",
        "the deploy of service zebra failed at step 3",
        &Cred::Key,
    )
    .await;
    d.msg("bob", "lunch at noon", &Cred::Key).await;
    d.msg("carol", "zebra crossing", &Cred::Key).await;
    let (s, r) = d.get("/v1/search?q=zebra", &Cred::Key).await;
    assert_eq!(s, 200);
    assert_eq!(r["messages"].as_array().unwrap().len(), 2);
    let (_, r) = d.get("/v1/search?q=zebra%20deploy", &Cred::Key).await;
    assert_eq!(
        r["messages"].as_array().unwrap().len(),
        1,
        "every word must match"
    );
    let (_, r) = d.get("/v1/search?q=zebra&agent=carol", &Cred::Key).await;
    assert_eq!(r["messages"][0]["to"], "carol");
    // FTS syntax in a query is just text.
    let (s, _) = d.get("/v1/search?q=%22zebra%20OR%20*", &Cred::Key).await;
    assert_eq!(s, 200);
    // Words need no quotes on the command line.
    let out = d.cli(&["search", "zebra", "deploy"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("service zebra failed"));
    let (s, _) = d.get("/v1/search?q=", &Cred::Key).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn bodies_are_capped_and_request_ids_store_once() {
    let d = Daemon::start();
    let (s, b) = d.msg("bob", &"x".repeat(64 * 1024 + 1), &Cred::Key).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("message_too_large")),
        "{b}"
    );
    assert_eq!(
        d.msg("bob", &"x".repeat(64 * 1024), &Cred::Key).await.0,
        201
    );
    let req = json!({"to": "bob", "body": "once", "request_id": "r-1"});
    let (s1, a) = d.post("/v1/messages", &req, &Cred::Key).await;
    let (s2, b) = d.post("/v1/messages", &req, &Cred::Key).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["duplicate"], true);
    let (s, e) = d
        .post(
            "/v1/messages",
            &json!({"to": "carol", "body": "once", "request_id": "r-1"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("request_id_reused"))
    );
    let (_, page) = d.get("/v1/search?q=once", &Cred::Key).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_agent_token_reads_and_acks_only_its_own_mailbox() {
    let d = Daemon::start();
    let alice = Cred::Token(d.register("alice").await);
    let bob = Cred::Token(d.register("bob").await);
    let (_, to_bob) = d.msg("bob", "for bob only", &alice).await;
    assert_eq!(to_bob["from"], "alice", "sent as the token's agent");
    let (s, _) = d.inbox("bob", "", &alice).await;
    assert_eq!(s, 403);
    let (s, _) = d.inbox("bob", "peek=true", &alice).await;
    assert_eq!(s, 403);
    let (s, r) = d
        .post("/v1/messages/ack", &json!({"ids": [to_bob["id"]]}), &alice)
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "not alice's to ack: {r}"
    );
    let (_, still) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(
        still["messages"][0]["state"], "queued",
        "the refused ack changed nothing"
    );
    let (_, r) = d.get("/v1/search?q=bob", &alice).await;
    assert_eq!(
        r["messages"],
        json!([]),
        "alice's search sees only her mailbox"
    );
    let (s, _) = d.get("/v1/search?q=bob&agent=bob", &alice).await;
    assert_eq!(s, 403);
    let (s, page) = d.inbox("bob", "", &bob).await;
    assert_eq!(s, 200);
    assert_eq!(page["messages"][0]["body"], "for bob only");
    let (_, r) = d
        .post("/v1/messages/ack", &json!({"ids": [to_bob["id"]]}), &bob)
        .await;
    assert_eq!(r["acked"], json!([to_bob["id"]]));
    // A token cannot send as someone else.
    let (s, _) = d
        .post(
            "/v1/messages",
            &json!({"to": "bob", "body": "x", "from": "carol"}),
            &alice,
        )
        .await;
    assert_eq!(s, 403);
    // The instance key may read any mailbox.
    assert_eq!(
        d.inbox("bob", "include_acked=true", &Cred::Key).await.0,
        200
    );
}

#[tokio::test]
async fn bad_mailbox_input() {
    let d = Daemon::start();
    for q in [
        "after=-1",
        "limit=0",
        "limit=5000",
        "wait=61",
        "wait=-1",
        "wait=NaN",
        "peek=maybe",
        "bogus=1",
    ] {
        let (s, b) = d.inbox("bob", q, &Cred::Key).await;
        assert_eq!(s, 400, "{q}: {b}");
    }
    let (s, _) = d.msg("../x", "hi", &Cred::Key).await;
    assert_eq!(s, 400);
    let (s, _) = d.msg("bob", "   ", &Cred::Key).await;
    assert_eq!(s, 400);
    let (s, _) = d
        .post("/v1/messages/ack", &json!({"ids": []}), &Cred::Key)
        .await;
    assert_eq!(s, 400);
    let (s, _) = d
        .post(
            "/v1/messages/ack",
            &json!({"ids": ["not-a-uuid"]}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(d.get("/healthz", &Cred::None).await.0, 200);
}
