//! Auth mode: every route but health and metrics needs a token; the
//! sender of a message is the token's agent, not the body's `from`; an
//! agent token receives only its own messages; a revoked token is
//! refused; tokens are listed without their secrets; open mode is refused
//! off loopback.

mod common;
use common::Relay;
use serde_json::json;

#[tokio::test]
async fn tokens_decide_who_sends_and_who_receives() {
    let r = Relay::start(&["--auth"]);
    let alice = r.token(&["create", "--agent", "alice"]);
    let bob = r.token(&["create", "--agent", "bob"]);
    assert!(alice.starts_with("abr_") && alice.len() == 4 + 64);

    let (s, b) = r
        .send(json!({"from": "alice", "to": "bob", "msg": "x"}), None)
        .await;
    assert_eq!(s, 401, "{b}");
    assert!(b["error"].as_str().unwrap().contains("token"));
    let (s, _) = r
        .send(
            json!({"from": "alice", "to": "bob", "msg": "x"}),
            Some("abr_wrong"),
        )
        .await;
    assert_eq!(s, 401);
    // alice claims to be carol: the token wins.
    let (s, _) = r
        .send(
            json!({"from": "carol", "to": "bob", "msg": "from alice"}),
            Some(&alice),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = r.get("/recv?to=bob", Some(&bob)).await;
    assert_eq!(s, 200);
    assert_eq!(b["messages"][0]["from"], "alice");
    // alice may not read bob's queue; nobody without a token.
    assert_eq!(r.get("/recv?to=bob", Some(&alice)).await.0, 403);
    assert_eq!(r.get("/recv?to=bob", None).await.0, 401);
    assert_eq!(r.get("/inbox", None).await.0, 401);
    assert_eq!(r.get("/inbox", Some(&alice)).await.0, 200);
    assert_eq!(r.get("/healthz", None).await.0, 200);
    let m = r
        .http
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);

    // Revoked: refused at once, the running relay sees it.
    assert_eq!(r.token(&["revoke", "agent:alice"]), "revoked agent:alice");
    assert_eq!(
        r.send(json!({"from": "a", "to": "bob", "msg": "x"}), Some(&alice))
            .await
            .0,
        401
    );
    let list = r.token(&["list"]);
    assert!(
        list.contains("agent:alice") && list.contains("revoked") && list.contains("agent:bob"),
        "{list}"
    );
    assert!(!list.contains(&bob), "secrets are never listed");
    // A second token for a live name is refused.
    let out = std::process::Command::new(common::bin())
        .arg("relay")
        .args(r.store_args())
        .args(["token", "create", "--agent", "bob"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn open_mode_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["relay", "--open", "--listen", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("r.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("open mode is only allowed on a loopback address")
    );
}
