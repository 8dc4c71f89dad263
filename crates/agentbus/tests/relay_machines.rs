//! Two "machines" — two daemons with their own data and registry dirs,
//! sharing nothing but a relay URL — carry jekts and messages between
//! their agents through `agentbus relay`: the sender is told `queued`, the
//! receiving daemon's poller types the jekt in (`DELIVERY=wan`) or files
//! the message, and acks it once; restarts of the relay or of the
//! receiving daemon lose nothing.

mod common;
use common::{Cred, Daemon, Relay, count, eventually};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

fn machine(relay: &Relay) -> Daemon {
    Daemon::start_args(&["--relay-url", &relay.url])
}

/// Waits until `d`'s poller is connected and polls for `agent`.
async fn polling(d: &Daemon, agent: &str) -> Value {
    eventually(&format!("the poller polling for {agent}"), 30, async || {
        let (_, s) = d.get("/agentmux/reactive/poller/status", &Cred::Key).await;
        let names = s["agents"].as_array()?;
        (s["connected"] == true && names.iter().any(|a| a == agent)).then_some(s)
    })
    .await
}

async fn stats(d: &Daemon) -> Value {
    d.get("/agentmux/reactive/poller/stats", &Cred::Key).await.1
}

/// What is left at the relay for `consumer` (nothing, once acked).
async fn pending(relay: &Relay, consumer: &str, agent: &str) -> usize {
    let resp = relay
        .http
        .post(format!("{}/v1/relay/poll", relay.url))
        .json(&json!({"consumer": consumer, "agents": [agent], "wait_s": 0}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["messages"].as_array().unwrap().len()
}

#[tokio::test]
async fn jekts_and_messages_cross_machines_through_the_relay() {
    let relay = Relay::start(&[]);
    let a = machine(&relay);
    let b = machine(&relay);
    assert_ne!(a.data_dir().join("registry"), b.data_dir().join("registry"));
    let sink = b.open_sink("bob", "generic", true).await;
    let consumer = polling(&b, "bob").await["consumer"]
        .as_str()
        .unwrap()
        .to_string();

    // A does not know bob: the relay takes the jekt.
    let (s, resp) = a.jekt("bob", "hello from machine A", &Cred::Key).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(resp["outcome"], "queued");
    assert_eq!(resp["delivery"], "wan");
    let msg_id = resp["msg_id"].as_str().unwrap().to_string();
    let text = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(
        text.contains(&format!(
            "[JEKT:FROM=user TO=bob TIER=info DELIVERY=wan TRUST=network-claimed MSGID={msg_id} "
        )),
        "{text}"
    );
    assert!(text.contains("hello from machine A"), "{text}");

    // Acked once: nothing is left for B at the relay, and B counted one.
    eventually("the ack", 10, async || {
        (pending(&relay, &consumer, "bob").await == 0).then_some(())
    })
    .await;
    let st = stats(&b).await;
    assert_eq!(
        (st["received"].as_u64(), st["delivered"].as_u64()),
        (Some(1), Some(1)),
        "{st}"
    );
    assert_eq!(st["duplicates"], 0);
    assert_eq!(stats(&a).await["sent"], 1);

    // The same request id twice: queued once, typed in once.
    let body = json!({"target_agent": "bob", "message": "only once", "request_id": "r-1"});
    let (_, first) = a.post("/agentmux/reactive/inject", &body, &Cred::Key).await;
    let (_, again) = a.post("/agentmux/reactive/inject", &body, &Cred::Key).await;
    assert_eq!(first["msg_id"], again["msg_id"]);
    assert_eq!(again["duplicate"], true);
    let text = sink.wait_submits(2).await;
    assert_eq!(count(&text, b"only once"), 1);

    // A message for bob crosses too, under the same id, into his mailbox.
    let (s, sent) = a.msg("bob", "a letter from A", &Cred::Key).await;
    assert_eq!(s, 202, "{sent}");
    assert_eq!(
        (sent["queued"].as_bool(), sent["seq"].as_i64()),
        (Some(true), Some(0))
    );
    let page = eventually("the letter in bob's mailbox", 30, async || {
        let (_, page) = b.inbox("bob", "peek=true", &Cred::Key).await;
        (!Daemon::ids(&page).is_empty()).then_some(page)
    })
    .await;
    assert_eq!(Daemon::ids(&page), vec![sent["id"].as_str().unwrap()]);
    assert_eq!(page["messages"][0]["body"], "a letter from A");
    assert_eq!(page["messages"][0]["from"], "user");
    assert_eq!(page["messages"][0]["trust"], "network-claimed");

    // And back: bob answers an agent registered on A.
    a.register("alice").await;
    polling(&a, "alice").await;
    let (s, _) = b
        .post(
            "/v1/messages",
            &json!({"to": "alice", "from": "bob", "body": "got it"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 202);
    let page = eventually("the answer in alice's mailbox", 30, async || {
        let (_, page) = a.inbox("alice", "peek=true", &Cred::Key).await;
        (!Daemon::ids(&page).is_empty()).then_some(page)
    })
    .await;
    assert_eq!(page["messages"][0]["from"], "bob");
    assert_eq!(page["messages"][0]["body"], "got it");

    // The audit log of A says where the jekt went.
    let (_, audit) = a.get("/v1/audit?kind=jekt", &Cred::Key).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "queued"),
        "{audit}"
    );
}

#[tokio::test]
async fn nothing_is_lost_across_restarts_of_the_relay_or_the_receiver() {
    let mut relay = Relay::start(&[]);
    let a = machine(&relay);
    let mut b = machine(&relay);
    let sink = b.open_sink("bob", "generic", true).await;
    polling(&b, "bob").await;
    let (_, r) = a.jekt("bob", "j1 before anything", &Cred::Key).await;
    assert_eq!(r["outcome"], "queued", "{r}");
    sink.wait_submits(1).await;

    // The relay goes down: nothing is accepted, and the caller is told.
    relay.kill9();
    let (s, r) = a
        .jekt("bob", "j2 while the relay is down", &Cred::Key)
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (502, Some("relay_unreachable")),
        "{r}"
    );
    // Back on the same address: B's poller finds it again by itself.
    relay.restart();
    let (_, r) = a
        .jekt("bob", "j2 after the relay came back", &Cred::Key)
        .await;
    assert_eq!(r["outcome"], "queued", "{r}");
    sink.wait_submits(2).await;

    // B goes down; A keeps sending; the relay is killed and restarted
    // while it holds them. (First B's ack of j2 reaches the relay: a kill
    // in the moment between typing a jekt in and recording its id would
    // type it again after the restart — at least once, see docs/relay.md.)
    eventually("B's ack of j2 at the (restarted) relay", 10, async || {
        (relay.metric("agentbus_relay_acks_total").await? >= 1).then_some(())
    })
    .await;
    b.kill9();
    for j in ["j3 while B is down", "j4 while B is down"] {
        let (_, r) = a.jekt("bob", j, &Cred::Key).await;
        assert_eq!(r["outcome"], "queued", "{r}");
    }
    let (s, letter) = a.msg("bob", "m1 while B is down", &Cred::Key).await;
    assert_eq!(s, 202, "{letter}");
    relay.kill9();
    relay.restart();

    // B returns (same data dir: same consumer, so its cursor) and bob
    // opens again: j3, j4 arrive in order, j1 and j2 are not repeated.
    b.restart();
    let sink = b.open_sink("bob", "generic", true).await;
    let text = String::from_utf8(sink.wait_submits(4).await).unwrap();
    let (p3, p4) = (
        text.find("j3 while B is down").expect("j3 delivered"),
        text.find("j4 while B is down").expect("j4 delivered"),
    );
    assert!(p3 < p4, "in order");
    for once in [
        "j1 before anything",
        "j2 after the relay came back",
        "j3 while",
        "j4 while",
    ] {
        assert_eq!(count(text.as_bytes(), once.as_bytes()), 1, "{once}: {text}");
    }
    let page = eventually("m1 in bob's mailbox", 30, async || {
        let (_, page) = b.inbox("bob", "peek=true", &Cred::Key).await;
        (!Daemon::ids(&page).is_empty()).then_some(page)
    })
    .await;
    assert_eq!(Daemon::ids(&page), vec![letter["id"].as_str().unwrap()]);
    // j3, j4 and m1, each once.
    let st = eventually("three deliveries counted", 10, async || {
        let st = stats(&b).await;
        (st["received"] == 3 && st["delivered"] == 3).then_some(st)
    })
    .await;
    assert_eq!(st["duplicates"], 0, "{st}");
}

#[tokio::test]
async fn the_relay_vouches_only_for_senders_it_authenticated() {
    let relay = Relay::start(&["--auth"]);
    let (ta, tb) = (
        relay.token(&["create", "--instance", "machine-a"]),
        relay.token(&["create", "--instance", "machine-b"]),
    );
    let carol = relay.token(&["create", "--agent", "carol"]);
    let a = Daemon::start_args(&["--relay-url", &relay.url]);
    let b = Daemon::start_args(&["--relay-url", &relay.url]);
    // The token is given at run time (it never goes on a command line).
    for (d, t) in [(&a, &ta), (&b, &tb)] {
        let (s, st) = d
            .post(
                "/agentmux/reactive/poller/config",
                &json!({"agentmux_url": relay.url, "agentmux_token": t}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 200, "{st}");
        assert_eq!(st["token_set"], true);
        assert!(
            !st.to_string().contains(t.as_str()),
            "the token is never shown"
        );
    }
    let sink = b.open_sink("bob", "generic", true).await;
    polling(&b, "bob").await;

    // alice proved herself on A with her agent token: A's instance token
    // vouches for her, so B shows channel-verified.
    let alice = Cred::Token(a.register("alice").await);
    let (_, r) = a.jekt("bob", "from a proven alice", &alice).await;
    assert_eq!(
        (r["outcome"].as_str(), r["trust"].as_str()),
        (Some("queued"), Some("host-verified")),
        "{r}"
    );
    let text = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(
        text.contains("FROM=alice TO=bob TIER=info DELIVERY=wan TRUST=channel-verified"),
        "{text}"
    );

    // The instance key on A only claims a name: network-claimed on B.
    let (_, r) = a.jekt("bob", "from a claimed user", &Cred::Key).await;
    assert_eq!(r["outcome"], "queued", "{r}");
    let text = String::from_utf8(sink.wait_submits(2).await).unwrap();
    assert!(
        text.contains("FROM=user TO=bob TIER=info DELIVERY=wan TRUST=network-claimed"),
        "{text}"
    );

    // An agent-bus client with its own agent token is authenticated by the
    // relay, whatever `from` it writes.
    let (s, _) = relay
        .send(
            json!({"from": "mallory", "to": "bob", "msg": "from carol's client"}),
            Some(&carol),
        )
        .await;
    assert_eq!(s, 200);
    let text = String::from_utf8(sink.wait_submits(3).await).unwrap();
    assert!(
        text.contains("FROM=carol TO=bob TIER=info DELIVERY=wan TRUST=channel-verified"),
        "{text}"
    );
    let (s, _) = relay
        .send(json!({"from": "x", "to": "bob", "msg": "no token"}), None)
        .await;
    assert_eq!(s, 401);

    // A shell pane runs what is typed: an unauthenticated sender is
    // refused there, audited, and acked so it does not come back.
    b.open("sh1", "shell", &["sh"]).await;
    polling(&b, "sh1").await;
    let (_, r) = a
        .jekt("sh1", "touch /tmp/agentbus-should-not-exist", &Cred::Key)
        .await;
    assert_eq!(r["outcome"], "queued", "{r}");
    eventually("the refusal", 30, async || {
        (stats(&b).await["failed"] == 1).then_some(())
    })
    .await;
    let (_, audit) = b.get("/v1/audit?kind=jekt&agent=sh1", &Cred::Key).await;
    let e = &audit["entries"][0];
    assert_eq!(
        (e["actor"].as_str(), e["outcome"].as_str()),
        (Some("relay"), Some("forbidden")),
        "{audit}"
    );
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("did not authenticate"),
        "{e}"
    );
    assert!(!std::path::Path::new("/tmp/agentbus-should-not-exist").exists());
}

#[tokio::test]
async fn the_poller_is_configured_at_run_time_and_keeps_its_target() {
    let relay = Relay::start(&[]);
    let mut d = Daemon::start();
    assert_eq!(poller_status(&d).await["configured"], false);
    let config = |url: &str, token: &str| json!({"agentmux_url": url, "agentmux_token": token});
    for (body, why) in [
        (config("", "tok"), "agentmux_url is required"),
        (config("ftp://x", ""), "http:// or https://"),
    ] {
        let (s, e) = d
            .post("/agentmux/reactive/poller/config", &body, &Cred::Key)
            .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{e}"
        );
        assert!(e["error"]["message"].as_str().unwrap().contains(why), "{e}");
    }
    // Only the instance key configures it.
    let agent = Cred::Token(d.register("x").await);
    let (s, _) = d
        .post(
            "/agentmux/reactive/poller/config",
            &config(&relay.url, ""),
            &agent,
        )
        .await;
    assert_eq!(s, 403);

    let (s, st) = d
        .post(
            "/agentmux/reactive/poller/config",
            &config(&format!("{}/", relay.url), "abr_sekrit"),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (st["configured"].as_bool(), st["url"].as_str()),
        (Some(true), Some(relay.url.as_str()))
    );
    let kept = d.data_dir().join("relay.json");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, audit) = d.get("/v1/audit?kind=poller", &Cred::Key).await;
    assert!(!audit.to_string().contains("abr_sekrit"), "{audit}");
    assert!(!poller_status(&d).await.to_string().contains("abr_sekrit"));

    // Kept across a restart.
    d.kill9();
    d.restart();
    let st = poller_status(&d).await;
    assert_eq!(
        (st["configured"].as_bool(), st["token_set"].as_bool()),
        (Some(true), Some(true)),
        "{st}"
    );

    // Both empty stops it, and that is kept too.
    let (s, st) = d
        .post(
            "/agentmux/reactive/poller/config",
            &config("", ""),
            &Cred::Key,
        )
        .await;
    assert_eq!((s, st["configured"].as_bool()), (200, Some(false)));
    d.kill9();
    d.restart();
    assert_eq!(poller_status(&d).await["configured"], false);
}

#[tokio::test]
async fn without_the_relay_nothing_is_accepted_that_cannot_be_kept() {
    // A relay URL nobody answers on.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let d = Daemon::start_args(&["--relay-url", &gone]);
    d.register("ext").await;
    // Unknown here, relay down: refused with the reason, nothing kept.
    let (s, e) = d.jekt("nobody", "hello?", &Cred::Key).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (502, Some("relay_unreachable")),
        "{e}"
    );
    let (s, e) = d.msg("nobody", "hello?", &Cred::Key).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (502, Some("relay_unreachable")),
        "{e}"
    );
    // Known here but offline, relay down: held here instead.
    d.open("carl", "shell", &["sh", "-c", "exit 0"]).await;
    eventually("carl's program to exit", 30, async || {
        let (_, a) = d.get("/v1/agents/carl", &Cred::Key).await;
        (a["state"] == "exited").then_some(())
    })
    .await;
    let (s, r) = d.jekt("carl", "for later", &Cred::Key).await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("held")), "{r}");
    // The poller says why it is not connected, and when it tries again.
    let st = eventually("the poller's error", 30, async || {
        let (_, st) = d.get("/agentmux/reactive/poller/status", &Cred::Key).await;
        st["last_error"].as_str().is_some().then_some(st)
    })
    .await;
    assert_eq!(st["connected"], false);
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{st}"
    );
    assert!(stats_errors(&d).await >= 1);
}

async fn stats_errors(d: &Daemon) -> u64 {
    stats(d).await["errors"].as_u64().unwrap()
}

async fn poller_status(d: &Daemon) -> Value {
    d.get("/agentmux/reactive/poller/status", &Cred::Key)
        .await
        .1
}
