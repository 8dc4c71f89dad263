//! The relay as a cluster: three nats-server nodes with JetStream (three
//! replicas) on loopback ports, two HTTPS relay nodes on them, and two
//! daemons that list both relay nodes and sign what they send. A long-poll
//! on one relay node wakes on a send to the other; then, under a load of
//! sends and long-polls on both nodes, one relay node and one NATS node are
//! killed with SIGKILL: every acknowledged message is delivered, none twice
//! once retried sends are told apart, the daemons' signed jekts all arrive
//! once, and an item changed on the way is refused.

mod common;
use agentbus_daemon::signing::InstanceKey;
use common::pki::Pki;
use common::{Cred, Daemon, Nats, Relay, bin, eventually, free_port};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Cluster {
    nats: Vec<Nats>,
    relays: Vec<Relay>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(pki: &Pki) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nats: Vec<Nats> = (0..3)
            .map(|i| {
                Nats::start_node(
                    dir.path(),
                    &format!("n{i}"),
                    ports[i],
                    Some((routes[i], &routes)),
                )
            })
            .collect();
        let urls: Vec<String> = nats.iter().map(Nats::url).collect();
        let relays = (0..2)
            .map(|_| {
                let mut args = vec![
                    "--nats".to_string(),
                    urls.join(","),
                    "--nats-replicas".into(),
                    "3".into(),
                ];
                args.extend(pki.relay_args());
                Relay::node(&format!("127.0.0.1:{}", free_port()), args)
            })
            .collect();
        Cluster {
            nats,
            relays,
            _dir: dir,
        }
    }

    fn urls(&self) -> Vec<String> {
        self.relays.iter().map(|r| r.url.clone()).collect()
    }
}

fn machine(urls: &[String], ca: &str, name: &str) -> Daemon {
    Daemon::start_with(&format!(
        "[relay]\nurl = \"{}\"\nca_file = \"{ca}\"\ninstance_name = \"{name}\"\n",
        urls.join(",")
    ))
}

/// The bodies of a `/recv` answer, in order.
fn bodies(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect()
}

/// Sends `body` to one node, then the other while a node fails. `Some(tries)`
/// once a node acknowledged it.
async fn send(
    http: &reqwest::Client,
    urls: &[String],
    first: usize,
    to: &str,
    body: &str,
) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    while Instant::now() < deadline {
        let url = &urls[(first + tries as usize) % urls.len()];
        tries += 1;
        let sent = http
            .post(format!("{url}/send"))
            .json(&json!({"from": "load", "to": to, "msg": body}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if matches!(&sent, Ok(r) if r.status() == 200) {
            return Some(tries);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A jekt from a to bob, queued at the relay: tried again (under the same
/// request id, so it is one jekt) while the relay cannot store it, as
/// after a NATS node died and before JetStream chose a new leader.
async fn jekt(a: &Daemon, i: usize) {
    let body = json!({
        "target_agent": "bob",
        "message": format!("signed jekt {i}"),
        "request_id": format!("cluster-jekt-{i}"),
    });
    eventually(&format!("jekt {i} queued"), 60, async || {
        let (s, r) = a.post("/agentmux/reactive/inject", &body, &Cred::Key).await;
        if s == 502 {
            return None;
        }
        assert_eq!((s, r["outcome"].as_str()), (200, Some("queued")), "{r}");
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_cluster_on_jetstream_loses_nothing_when_a_relay_node_and_a_nats_node_die() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let mut cluster = Cluster::start(&pki);
    let urls = cluster.urls();
    let http = pki.client();

    // A long-poll on node 2 wakes on a send to node 1.
    let waiting = {
        let (http, url) = (http.clone(), urls[1].clone());
        tokio::spawn(async move {
            let resp = http
                .get(format!("{url}/recv?to=waker&block=true"))
                .send()
                .await
                .unwrap();
            (Instant::now(), resp.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = Instant::now();
    assert_eq!(send(&http, &urls, 0, "waker", "wake up").await, Some(1));
    let (woke_at, got) = waiting.await.unwrap();
    assert_eq!(got["messages"][0]["msg"], "wake up", "{got}");
    // Not a speed test (the bench measures it): far under the 30 s the
    // long-poll would otherwise wait, so nothing sleep-polls.
    assert!(woke_at - sent_at < Duration::from_secs(5));

    // Two daemons listing both relay nodes; b trusts a's key.
    let a = machine(&urls, &ca, "machine-a");
    let b = machine(&urls, &ca, "machine-b");
    b.trust(&["add", "machine-a", &a.public_key()]);
    let sink = b.open_sink("bob", "generic", true).await;
    eventually("b polling for bob", 60, async || {
        let (_, s) = b.get("/agentmux/reactive/poller/status", &Cred::Key).await;
        (s["connected"] == true && s["agents"].as_array()?.iter().any(|x| x == "bob")).then_some(())
    })
    .await;

    // The load: 8 senders over both nodes, 4 queues long-polled on both.
    const TOTAL: usize = 1_600;
    let acked = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let senders: Vec<_> = (0..8)
        .map(|c| {
            let (http, urls, acked) = (http.clone(), urls.clone(), acked.clone());
            tokio::spawn(async move {
                for i in (c..TOTAL).step_by(8) {
                    let body = format!("m{i}");
                    if let Some(tries) =
                        send(&http, &urls, i % 2, &format!("q{}", i % 4), &body).await
                    {
                        acked.lock().unwrap().insert(body, tries);
                    }
                }
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = (0..4)
        .map(|q| {
            let (http, urls, stop, received) =
                (http.clone(), urls.clone(), stop.clone(), received.clone());
            tokio::spawn(async move {
                let mut since = 0.0f64;
                let mut n = q;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let url = &urls[n % urls.len()];
                    let Ok(resp) = http
                        .get(format!(
                            "{url}/recv?to=q{q}&since={since}&block=true&max=200"
                        ))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let Ok(page) = resp.json::<Value>().await else {
                        continue;
                    };
                    let Some(msgs) = page["messages"].as_array() else {
                        continue;
                    };
                    let mut got = received.lock().unwrap();
                    for m in msgs {
                        got.push(m["msg"].as_str().unwrap().to_string());
                        since = since.max(m["ts"].as_f64().unwrap());
                    }
                    since = since.max(page["now"].as_f64().unwrap_or(0.0));
                }
            })
        })
        .collect();
    // Signed jekts from a to bob during the load.
    let mut jekts = 0;
    let acked_now = || acked.lock().unwrap().len();
    eventually("a third of the load acknowledged", 120, async || {
        (acked_now() >= TOTAL / 3).then_some(())
    })
    .await;
    for i in 0..3 {
        jekt(&a, i).await;
        jekts += 1;
    }
    cluster.relays[0].kill9();
    eventually("two thirds acknowledged", 120, async || {
        (acked_now() >= 2 * TOTAL / 3).then_some(())
    })
    .await;
    cluster.nats[0].kill9();
    for i in 3..6 {
        jekt(&a, i).await;
        jekts += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        TOTAL,
        "every send was acknowledged by a node in the end"
    );
    eventually("every acknowledged message delivered", 120, async || {
        let got: HashSet<String> = received.lock().unwrap().iter().cloned().collect();
        acked.keys().all(|m| got.contains(m)).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    // A body seen twice was stored twice: only a send that was retried
    // (its first answer lost with the node) may be.
    let mut seen = HashMap::<String, u32>::new();
    for m in received.lock().unwrap().iter() {
        *seen.entry(m.clone()).or_default() += 1;
    }
    for (m, n) in &seen {
        if *n > 1 {
            assert!(acked[m] > 1, "{m} delivered {n} times but sent once");
        }
    }

    // The jekts: each once, signed.
    let typed = String::from_utf8(sink.wait_submits(jekts).await).unwrap();
    for i in 0..jekts {
        assert_eq!(
            common::count(typed.as_bytes(), format!("signed jekt {i}").as_bytes()),
            1,
            "jekt {i} once: {typed}"
        );
    }
    assert_eq!(
        common::count(typed.as_bytes(), b"TRUST=signed:machine-a"),
        jekts,
        "{typed}"
    );

    // An item whose body was changed after a signed it: refused, audited.
    let a_key = InstanceKey::load_or_create(a.data_dir(), "machine-a").unwrap();
    let mut item = common::relay_jekt("the original");
    item.signature = Some(a_key.sign(&item));
    item.body = "changed on the way".into();
    let resp = http
        .post(format!("{}/v1/relay/send", urls[1]))
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the changed item refused and audited", 60, async || {
        let (_, page) = b.get("/v1/audit?limit=1000", &Cred::Key).await;
        page["entries"].as_array()?.iter().find(|e| {
            e["kind"] == "relay_item"
                && e["outcome"] == "refused"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("does not match the item"))
        })?;
        Some(())
    })
    .await;
    let typed = String::from_utf8(sink.bytes()).unwrap();
    assert!(!typed.contains("changed on the way"), "{typed}");

    // The killed relay node comes back with nothing of its own and serves
    // the same messages.
    cluster.relays[0].restart();
    let page: Value = http
        .get(format!("{}/recv?to=q0&max=1000", urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let on_restarted: HashSet<&str> = bodies(&page).into_iter().collect();
    for m in acked
        .keys()
        .filter(|m| m[1..].parse::<usize>().unwrap() % 4 == 0)
    {
        assert!(
            on_restarted.contains(m.as_str()),
            "{m} on the restarted node"
        );
    }
}

#[tokio::test]
async fn a_node_that_lost_nats_fails_its_health_check_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(dir.path());
    let relay = Relay::node("127.0.0.1:0", vec!["--nats".into(), nats.url()]);
    let health = async || {
        let resp = relay
            .http
            .get(format!("{}/healthz", relay.url))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(health().await.0, 200);
    let (s, _) = relay
        .send(json!({"from": "a", "to": "b", "msg": "before"}), None)
        .await;
    assert_eq!(s, 200);
    nats.kill9();
    let body = eventually("the health check failing", 30, async || {
        let (s, b) = health().await;
        (s == 503).then_some(b)
    })
    .await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("lost its connection to NATS"),
        "{body}"
    );
    // A send meanwhile is refused, not accepted and lost.
    let (s, b) = relay
        .send(json!({"from": "a", "to": "b", "msg": "during"}), None)
        .await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("relay node unavailable"),
        "{b}"
    );
    nats.restart();
    eventually("the health check passing again", 60, async || {
        (health().await.0 == 200).then_some(())
    })
    .await;
    let (s, _) = relay
        .send(json!({"from": "a", "to": "b", "msg": "after"}), None)
        .await;
    assert_eq!(s, 200);
    let (_, page) = relay.get("/recv?to=b", None).await;
    assert_eq!(bodies(&page), ["before", "after"]);
}

#[tokio::test]
async fn a_relay_reaches_nats_over_tls_and_tokens_are_made_from_another_machine() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start_tls(
        dir.path(),
        &pki.path("relay.pem"),
        &pki.path("relay-key.pem"),
    );
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let ca = pki.path("ca.pem");
    // `agentbus relay token` needs only NATS, not the relay: any machine
    // that reaches NATS (over TLS, trusting its CA) manages tokens.
    let token = |args: &[&str], ca: &str| {
        std::process::Command::new(bin())
            .args(["relay", "--nats", &url, "--ca-file", ca, "token"])
            .args(args)
            .output()
            .unwrap()
    };
    let wrong = token(&["list"], &pki.path("other-ca.pem"));
    assert!(!wrong.status.success());
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("cannot reach NATS"), "{why}");
    let made = token(&["create", "--agent", "alice"], &ca);
    assert!(made.status.success(), "{made:?}");
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let relay = Relay::node(
        "127.0.0.1:0",
        vec![
            "--nats".into(),
            url.clone(),
            "--ca-file".into(),
            ca.clone(),
            "--auth".into(),
        ],
    );
    let (s, b) = relay
        .send(
            json!({"from": "x", "to": "bob", "msg": "hi"}),
            Some(&secret),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let revoked = token(&["revoke", "agent:alice"], &ca);
    assert!(revoked.status.success(), "{revoked:?}");
    let (s, _) = relay
        .send(
            json!({"from": "x", "to": "bob", "msg": "again"}),
            Some(&secret),
        )
        .await;
    assert_eq!(
        s, 401,
        "a revoked token is refused by a running node at once"
    );
    let list = String::from_utf8(token(&["list"], &ca).stdout).unwrap();
    assert!(
        list.contains("agent:alice") && list.contains("revoked"),
        "{list}"
    );
    assert!(!list.contains(&secret));
}

#[tokio::test]
async fn any_name_is_a_queue_of_its_own_on_jetstream() {
    // Names become NATS subject tokens: dots, wildcards, spaces and any
    // Unicode must neither collide nor reach another queue.
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let relay = Relay::node("127.0.0.1:0", vec!["--nats".into(), nats.url()]);
    let long = "é".repeat(128);
    let names = [
        "a.b",
        "a",
        "b",
        "*",
        ">",
        "a.>",
        "a b",
        "$JS.API",
        "日本語",
        long.as_str(),
    ];
    for (i, to) in names.iter().enumerate() {
        for channel in ["default", "x.y", "*"] {
            let (s, b) = relay
                .send(
                    json!({"from": "f", "to": to, "msg": format!("{i} {channel}"), "channel": channel}),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{to:?} {channel}: {b}");
        }
    }
    for (i, to) in names.iter().enumerate() {
        for channel in ["default", "x.y", "*"] {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("to", to)
                .append_pair("channel", channel)
                .finish();
            let (_, page) = relay.get(&format!("/recv?{q}"), None).await;
            assert_eq!(
                bodies(&page),
                [format!("{i} {channel}")],
                "{to:?} {channel}"
            );
        }
    }
    let (_, inbox) = relay.get("/inbox", None).await;
    assert_eq!(inbox["recipients"]["x.y"][long.as_str()], 1, "{inbox}");
}
