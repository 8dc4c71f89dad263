//! The daemon's `/metrics`: the page is what the official Prometheus
//! Python client's parser reads (`tests/python/metrics_parse.py`), its
//! counters move by exactly what was done, its histogram is a real one;
//! and who may read it (the metrics token, kept across restarts, and the
//! instance key; never an agent token; the token opens nothing else).

mod common;

use common::{Cred, Daemon, run_python};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

const CONFIG: &str = "[jekt]\nidle_quiet_ms = 300\n";
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn metrics_token(d: &Daemon) -> String {
    std::fs::read_to_string(d.data_dir().join("metrics.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// A scrape, parsed by `prometheus_client`.
async fn scrape(d: &Daemon) -> Value {
    let args = vec![
        "--url".into(),
        d.url.clone(),
        "--token".into(),
        metrics_token(d),
    ];
    let r = run_python("metrics_parse.py", args).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["content_type"], CONTENT_TYPE);
    r
}

fn family<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["families"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {report}"))
}

/// The value of sample `name` with exactly `labels`.
fn value(report: &Value, name: &str, labels: Value) -> f64 {
    report["families"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .find(|s| s["name"] == name && s["labels"] == labels)
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {labels}"))
}

/// How far each `(sample, labels)` moved between two scrapes.
fn moved(before: &Value, after: &Value, name: &str, labels: Value) -> f64 {
    value(after, name, labels.clone()) - value(before, name, labels)
}

/// The histogram's `(le, cumulative count)` buckets, `_count` and `_sum`.
fn histogram(report: &Value, name: &str) -> (Vec<(f64, f64)>, f64, f64) {
    let f = family(report, name);
    assert_eq!(f["type"], "histogram", "{f}");
    let buckets = f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == format!("{name}_bucket"))
        .map(|s| {
            let le = s["labels"]["le"].as_str().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, s["value"].as_f64().unwrap())
        })
        .collect();
    let count = value(report, &format!("{name}_count"), json!({}));
    let sum = value(report, &format!("{name}_sum"), json!({}));
    (buckets, count, sum)
}

#[tokio::test]
async fn counters_move_by_what_was_done_and_the_page_parses() {
    let d = Daemon::start_with(CONFIG);
    d.open_sink("alice", "generic", true).await;
    d.register("ghost").await;
    let before = scrape(&d).await;

    // One jekt delivered, then one with a request id three times: its
    // repeats are answered from the first and not counted again.
    assert_eq!(
        d.jekt("alice", "one", &Cred::Key).await.1["outcome"],
        "delivered"
    );
    let once = json!({"target_agent": "alice", "message": "two", "request_id": "r-1"});
    let (_, first) = d.post("/agentmux/reactive/inject", &once, &Cred::Key).await;
    let (_, again) = d.post("/agentmux/reactive/inject", &once, &Cred::Key).await;
    let (_, third) = d.post("/agentmux/reactive/inject", &once, &Cred::Key).await;
    assert_eq!(
        (&first["outcome"], &first["duplicate"]),
        (&json!("delivered"), &json!(false))
    );
    assert_eq!(
        (&again["duplicate"], &third["duplicate"]),
        (&json!(true), &json!(true))
    );
    // One held for an agent that is offline, one refused (nobody of that name).
    assert_eq!(
        d.jekt("ghost", "later", &Cred::Key).await.1["outcome"],
        "held"
    );
    assert_eq!(d.jekt("nobody", "hello?", &Cred::Key).await.0, 404);
    // A message stored, then acked.
    let (s, sent) = d.msg("alice", "mail", &Cred::Key).await;
    assert_eq!(s, 201, "{sent}");
    let (s, acked) = d
        .post(
            "/v1/messages/ack",
            &json!({"ids": [sent["id"]]}),
            &Cred::Key,
        )
        .await;
    assert_eq!(
        (s, acked["acked"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{acked}"
    );
    // A request with no credential, refused.
    assert_eq!(d.get("/v1/agents", &Cred::None).await.0, 401);
    // App API calls: one of the table, one not in it.
    assert!(d.cli(&["rpc", "agent.list"]).status.success());
    assert!(!d.cli(&["rpc", "no.such.method"]).status.success());

    let after = scrape(&d).await;
    // (sample, labels, how far it moved): exactly what was done above.
    let call = |method: &str, outcome: &str| json!({"method": method, "outcome": outcome});
    let expected = [
        ("agentbus_jekts_total", json!({"outcome": "delivered"}), 2.0),
        ("agentbus_jekts_total", json!({"outcome": "held"}), 1.0),
        ("agentbus_jekts_total", json!({"outcome": "refused"}), 1.0),
        ("agentbus_jekts_total", json!({"outcome": "queued"}), 0.0),
        ("agentbus_jekts_total", json!({"outcome": "forwarded"}), 0.0),
        ("agentbus_messages_total", json!({"outcome": "stored"}), 1.0),
        ("agentbus_messages_total", json!({"outcome": "queued"}), 0.0),
        ("agentbus_messages_acked_total", json!({}), 1.0),
        ("agentbus_refusals_total", json!({"kind": "jekt"}), 1.0),
        ("agentbus_refusals_total", json!({"kind": "auth"}), 1.0),
        // The call of a method that does not exist is refused.
        ("agentbus_refusals_total", json!({"kind": "rpc"}), 1.0),
        ("agentbus_refusals_total", json!({"kind": "message"}), 0.0),
        (
            "agentbus_app_api_calls_total",
            call("agent.list", "ok"),
            1.0,
        ),
        (
            "agentbus_app_api_calls_total",
            call("agent.list", "error"),
            0.0,
        ),
        (
            "agentbus_app_api_calls_total",
            call("unknown", "error"),
            1.0,
        ),
        (
            "agentbus_app_api_calls_total",
            call("agent.send", "ok"),
            0.0,
        ),
    ];
    for (name, labels, by) in expected {
        let m = moved(&before, &after, name, labels.clone());
        assert_eq!(m, by, "{name} {labels}");
    }

    // Gauges say what is there now.
    assert_eq!(
        value(&after, "agentbus_panes", json!({"state": "running"})),
        1.0
    );
    assert_eq!(
        value(&after, "agentbus_panes", json!({"state": "exited"})),
        0.0
    );
    assert_eq!(value(&after, "agentbus_held_jekts", json!({})), 1.0);
    assert_eq!(value(&after, "agentbus_inbox_waiters", json!({})), 0.0);
    assert!(value(&after, "agentbus_event_subscribers", json!({})) >= 1.0);

    // The store's commit times: a real histogram that grew.
    let name = "agentbus_store_commit_duration_seconds";
    let (b0, count0, _) = histogram(&before, name);
    let (b1, count1, sum1) = histogram(&after, name);
    assert!(count1 > count0, "commits were timed: {count0} -> {count1}");
    assert!(sum1 > 0.0);
    assert_eq!(b1.len(), b0.len());
    assert!(b1.len() >= 10, "{b1:?}");
    assert!(
        b1.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{b1:?}"
    );
    assert_eq!(*b1.last().unwrap(), (f64::INFINITY, count1));
    let writes = "agentbus_store_writes_total";
    assert!(moved(&before, &after, writes, json!({})) >= 1.0);

    // Every family says what it is; no label holds a name a user chose.
    for f in after["families"].as_array().unwrap() {
        assert!(
            f["documentation"].as_str().is_some_and(|d| !d.is_empty()),
            "{f}"
        );
        assert_ne!(f["type"], "unknown", "{f}");
        for s in f["samples"].as_array().unwrap() {
            for v in s["labels"].as_object().unwrap().values() {
                for name in ["alice", "ghost", "nobody", "no.such.method"] {
                    assert_ne!(v, name, "{s}");
                }
            }
        }
    }
    assert_eq!(family(&after, "agentbus_jekts")["type"], "counter");
    assert_eq!(family(&after, "agentbus_held_jekts")["type"], "gauge");
}

/// `GET /metrics` with `cred`: status, content type, body.
async fn get_metrics(d: &Daemon, cred: Option<(&str, String)>) -> (u16, String, String) {
    let mut req = d.http.get(format!("{}/metrics", d.url));
    if let Some((header, value)) = cred {
        req = req.header(header, value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    (status, ct, resp.text().await.unwrap())
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_metrics_token_opens_metrics_alone_and_outlives_a_restart() {
    let mut d = Daemon::start();
    let token = metrics_token(&d);
    assert!(
        token.starts_with("abm_") && token.len() == 68,
        "a fresh secret"
    );
    let file = d.data_dir().join("metrics.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let bearer = |t: &str| Some(("authorization", format!("Bearer {t}")));

    // Who may read it.
    let (s, ct, body) = get_metrics(&d, bearer(&token)).await;
    assert_eq!((s, ct.as_str()), (200, CONTENT_TYPE), "{body}");
    assert!(
        body.contains("# TYPE agentbus_jekts_total counter\n"),
        "{body}"
    );
    let (s, _, _) = get_metrics(&d, Some(("x-authkey", token.clone()))).await;
    assert_eq!(s, 200);
    let (s, _, _) = get_metrics(&d, Some(("x-authkey", d.key.clone()))).await;
    assert_eq!(s, 200);
    let (s, _, _) = get_metrics(&d, bearer(&d.key)).await;
    assert_eq!(s, 200);
    // Who may not: nobody (401), a wrong secret (401), an agent (403).
    let (s, _, body) = get_metrics(&d, None).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (401, "unauthorized"),
        "{body}"
    );
    let (s, _, body) = get_metrics(&d, bearer(&format!("{token}x"))).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (401, "unauthorized"),
        "{body}"
    );
    let bob = d.register("bob").await;
    let (s, _, body) = get_metrics(&d, bearer(&bob)).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (403, "forbidden"),
        "{body}"
    );
    assert!(!body.contains(&bob));

    // The metrics token opens nothing else.
    let t = Cred::Token(token.clone());
    for path in ["/v1/agents", "/v1/stats", "/v1/audit", "/v1/inbox/bob"] {
        let (s, b) = d.get(path, &t).await;
        assert_eq!(s, 401, "{path}: {b}");
    }
    let (s, _) = d.msg("bob", "hi", &t).await;
    assert_eq!(s, 401);

    // Refusals are audited, never with a secret.
    let (_, audit) = d.get("/v1/audit?kind=auth&limit=100", &Cred::Key).await;
    let rows = audit["entries"].as_array().unwrap();
    let refused = |actor: &str, outcome: &str| {
        rows.iter().any(|r| {
            r["target"] == "GET /metrics" && r["actor"] == actor && r["outcome"] == outcome
        })
    };
    assert!(refused("agent:bob", "forbidden"), "{audit}");
    assert!(refused("anonymous", "unauthorized"), "{audit}");
    assert!(!audit.to_string().contains(&token));

    // The same token after a restart (the instance key is new).
    let old_key = d.key.clone();
    d.kill9();
    d.restart();
    assert_ne!(d.key, old_key);
    assert_eq!(metrics_token(&d), token);
    let (s, _, _) = get_metrics(&d, bearer(&token)).await;
    assert_eq!(s, 200);
    let (s, _, _) = get_metrics(&d, bearer(&old_key)).await;
    assert_eq!(s, 401, "the old instance key is gone");
}

#[tokio::test]
async fn rotating_the_metrics_token_retires_the_old_one_at_once() {
    let d = Daemon::start();
    let old = metrics_token(&d);
    let bearer = |t: &str| Some(("authorization", format!("Bearer {t}")));

    // Only the instance key rotates it: an agent, or the metrics token
    // itself, may not.
    let bob = d.register("bob").await;
    let (s, body) = d
        .post("/v1/metrics/token", &json!({}), &Cred::Token(bob.clone()))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (s, _) = d
        .post("/v1/metrics/token", &json!({}), &Cred::Token(old.clone()))
        .await;
    assert_eq!(s, 401);
    assert_eq!(metrics_token(&d), old, "a refused rotation changes nothing");

    // As a user runs it: the answer names the file, never the token.
    let out = d.cli(&["token", "rotate-metrics"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    let new = metrics_token(&d);
    assert_ne!(new, old);
    assert!(new.starts_with("abm_") && new.len() == 68);
    assert!(
        said.contains("metrics.token") && !said.contains(&new),
        "{said}"
    );
    let file = d.data_dir().join("metrics.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // In force at once, without a restart.
    let (s, _, _) = get_metrics(&d, bearer(&old)).await;
    assert_eq!(s, 401, "the old token is retired");
    let (s, _, body) = get_metrics(&d, bearer(&new)).await;
    assert_eq!(s, 200, "{body}");

    // Rotations at once: each succeeds, and the daemon ends on the
    // token the file holds.
    let empty = json!({});
    let answers = futures_util::future::join_all(
        (0..8).map(|_| d.post("/v1/metrics/token", &empty, &Cred::Key)),
    )
    .await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let last = metrics_token(&d);
    let (s, _, _) = get_metrics(&d, bearer(&last)).await;
    assert_eq!(s, 200, "the file's token opens /metrics");
    let (s, _, _) = get_metrics(&d, bearer(&new)).await;
    assert_eq!(s, 401);

    // Audited, without a secret.
    let (_, audit) = d
        .get("/v1/audit?kind=metrics_token&limit=10", &Cred::Key)
        .await;
    let rows = audit["entries"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["outcome"] == "rotated" && r["actor"] == "admin"),
        "{audit}"
    );
    assert_eq!(
        rows.iter().filter(|r| r["outcome"] == "rotated").count(),
        9,
        "{audit}"
    );
    for secret in [&old, &new, &last] {
        assert!(!audit.to_string().contains(secret.as_str()));
    }
}
