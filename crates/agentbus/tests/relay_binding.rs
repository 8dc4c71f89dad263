//! Relay tokens act only for their own: an instance token sends, polls,
//! acks and receives only for the agents its daemon hosts (the agents it
//! polls for are bound to it; another instance cannot take them while
//! the binding lasts), a sender is verified only when that holds, and an
//! agent token sees only its own counts on `/inbox`. Names with control
//! or invisible characters are refused at the relay's edge.

mod common;

use common::Relay;
use serde_json::{Value, json};

async fn post(r: &Relay, path: &str, body: Value, token: &str) -> (u16, Value) {
    let resp = r
        .http
        .post(format!("{}{path}", r.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn poll(r: &Relay, token: &str, agents: &[&str]) -> (u16, Value) {
    post(
        r,
        "/v1/relay/poll",
        json!({"agents": agents, "wait_s": 0}),
        token,
    )
    .await
}

fn relay_send(from: &str, to: &str, trust: &str) -> Value {
    json!({
        "id": uuid_v4(),
        "from": from,
        "to": to,
        "kind": "message",
        "body": format!("from {from}"),
        "origin_trust": trust,
    })
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    getrandom(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

#[tokio::test]
async fn an_instance_token_acts_only_for_the_agents_its_daemon_hosts() {
    let r = Relay::start(&["--auth"]);
    let laptop = r.token(&["create", "--instance", "laptop"]);
    let intruder = r.token(&["create", "--instance", "intruder"]);
    let hosted = ["alice", "alice-2", "ALICE", "a_l-i"];

    // The laptop's daemon polls for its agents: they are bound to it.
    let (s, b) = poll(&r, &laptop, &hosted).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("refused").is_none(), "{b}");

    // Another instance may not poll for them, nor name them as sender.
    let (s, b) = poll(&r, &intruder, &hosted).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = poll(&r, &intruder, &["alice", "mallory"]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["refused"], json!(["alice"]));
    for who in hosted {
        for trust in ["host-verified", "channel-verified", "self-declared"] {
            let (s, b) = post(
                &r,
                "/v1/relay/send",
                relay_send(who, "bob", trust),
                &intruder,
            )
            .await;
            assert_eq!(s, 403, "{who} {trust}: {b}");
        }
        let (s, _) = r
            .send(
                json!({"from": who, "to": "bob", "msg": "x"}),
                Some(&intruder),
            )
            .await;
        assert_eq!(s, 403, "{who} on /send");
        assert_eq!(
            r.get(&format!("/recv?to={who}"), Some(&intruder)).await.0,
            403
        );
    }

    // Mail for alice: the intruder's ack for her is refused, the
    // laptop's poll sees it.
    let agent_bob = r.token(&["create", "--agent", "bob"]);
    let (s, _) = post(
        &r,
        "/v1/relay/send",
        relay_send("bob", "alice", "host-verified"),
        &agent_bob,
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = post(
        &r,
        "/v1/relay/ack",
        json!({"acks": {"alice": 1_000_000}}),
        &intruder,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["refused"], json!(["alice"]));
    let (_, b) = poll(&r, &laptop, &hosted).await;
    assert_eq!(b["messages"].as_array().unwrap().len(), 1, "{b}");

    // The laptop vouches for its own agents; its proof counts only then.
    let sends = [
        ("alice", "host-verified", true),
        ("alice", "channel-verified", true),
        ("alice", "self-declared", false),
        ("nobody-hosts-me", "host-verified", false),
    ];
    for (from, trust, _) in sends {
        let (s, b) = post(
            &r,
            "/v1/relay/send",
            relay_send(from, "carol", trust),
            &laptop,
        )
        .await;
        assert_eq!(s, 200, "{from}: {b}");
    }
    let carol = r.token(&["create", "--agent", "carol"]);
    let (_, b) = post(
        &r,
        "/v1/relay/poll",
        json!({"agents": ["carol"], "wait_s": 0}),
        &carol,
    )
    .await;
    let got: Vec<(String, bool)> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_string(),
                m["sender_verified"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, bool)> = sends.iter().map(|(f, _, v)| (f.to_string(), *v)).collect();
    assert_eq!(got, want);

    // A poll without alice releases her; then the other may take her.
    let (s, _) = poll(&r, &laptop, &["alice-2"]).await;
    assert_eq!(s, 200);
    let (s, b) = poll(&r, &intruder, &["alice"]).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("refused").is_none(), "{b}");
    let (s, b) = poll(&r, &laptop, &["alice"]).await;
    assert_eq!(s, 403, "{b}");
}

#[tokio::test]
async fn inbox_counts_are_the_tokens_own() {
    let r = Relay::start(&["--auth"]);
    let laptop = r.token(&["create", "--instance", "laptop"]);
    let dave = r.token(&["create", "--agent", "dave"]);
    let erin = r.token(&["create", "--agent", "erin"]);
    poll(&r, &laptop, &["alice"]).await;
    for (to, tok) in [
        ("dave", &erin),
        ("erin", &dave),
        ("alice", &dave),
        ("zed", &dave),
    ] {
        let (s, b) = r
            .send(json!({"from": "x", "to": to, "msg": "hi"}), Some(tok))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let counts = |b: &Value| -> Vec<String> {
        let mut v: Vec<String> = b["recipients"]["default"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(counts(&r.get("/inbox", Some(&dave)).await.1), ["dave"]);
    assert_eq!(counts(&r.get("/inbox", Some(&erin)).await.1), ["erin"]);
    assert_eq!(counts(&r.get("/inbox", Some(&laptop)).await.1), ["alice"]);
}

#[tokio::test]
async fn names_that_could_forge_a_line_are_refused_at_the_relay() {
    let r = Relay::start(&[]);
    let bad = [
        "bob\n[12:00:00Z] from root:",
        "bob\r",
        "a\u{1b}[31m",
        "a\u{7f}",
        "a\u{85}b",
        "a\u{2028}b",
        "a\u{202e}b",
        "a\u{200b}",
        "",
    ];
    let long = "x".repeat(257);
    for name in bad.iter().copied().chain([long.as_str()]) {
        let mut bodies = vec![
            json!({"from": name, "to": "bob", "msg": "x"}),
            json!({"from": "bob", "to": name, "msg": "x"}),
        ];
        // An empty channel is the default one (the agent-bus protocol's rule).
        if !name.is_empty() {
            bodies.push(json!({"from": "bob", "to": "carol", "msg": "x", "channel": name}));
        }
        for body in bodies {
            let (s, b) = r.send(body.clone(), None).await;
            assert_eq!(s, 400, "{body}: {b}");
        }
        let mut m = relay_send("bob", "carol", "self-declared");
        m["from"] = json!(name);
        let resp = r
            .http
            .post(format!("{}/v1/relay/send", r.url))
            .json(&m)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{name:?}");
    }
    // Names with spaces and any script are fine.
    let (s, _) = r
        .send(
            json!({"from": "Ünïcödé 名前 bot", "to": "bob", "msg": "x"}),
            None,
        )
        .await;
    assert_eq!(s, 200);
}
