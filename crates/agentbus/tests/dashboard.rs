//! The browser dashboard: in headless Chromium (Debian's, driven by
//! Playwright's `playwright-core`), against a real daemon; and the rules a
//! dashboard session is held to, request by request.
//!
//! `bash scripts/test.sh` installs Chromium and playwright-core (into
//! `target/browser`). With `AGENTBUS_UPDATE_SCREENSHOTS=1` the browser
//! test also writes its screen shots into `docs/` (the README shows them).

mod common;

use common::{Cred, Daemon, eventually};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "Chromium is missing: `bash scripts/test.sh` installs it (apt-get install -y chromium)",
        )
}

fn playwright_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing in {}: `bash scripts/test.sh` installs it",
        dir.display()
    );
    dir
}

/// A one-time login link, as `agentbus ui` prints it.
fn login_link(d: &Daemon) -> String {
    let out = d.cli(&["ui", "--no-open"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no link in: {text}"))
        .to_string();
    assert!(
        link.starts_with(&format!("{}/ui/login?code=", d.url)),
        "{link}"
    );
    link
}

#[tokio::test]
async fn the_dashboard_in_chromium_shows_agents_terminals_mail_and_keeps_its_session_to_itself() {
    let browser = chromium();
    let playwright = playwright_dir();
    let d = Daemon::start();
    let sink = d.open_sink("alice", "generic", false).await;
    d.open("bob", "generic", &["cat"]).await;
    let shots = d.dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let cfg = json!({
        "url": d.url,
        "link": login_link(&d),
        "key": d.key,
        "sink": sink.path,
        "shots": shots,
        "chromium": browser,
        "playwright": playwright,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.mjs");
    let mut node = Command::new("node");
    node.arg(script).env("DASHBOARD_TEST", cfg.to_string());
    let r = common::run_for_report("the browser run (node, Chromium)", node).await;
    eprintln!("{r:#}");

    // The login: an HttpOnly, SameSite=Strict cookie the page cannot read;
    // the link works once.
    assert_eq!(r["cookie"]["httpOnly"], true, "{r}");
    assert_eq!(r["cookie"]["sameSite"], "Strict", "{r}");
    assert_eq!(r["page_cookie"], "", "the page's script sees no cookie");
    assert_eq!(r["second_use_status"], 401, "{r}");
    assert_eq!(
        r["url_after_login"],
        format!("{}/", d.url),
        "the token left the address bar"
    );
    assert_eq!(r["token_stored"], 64, "{r}");
    assert_eq!(r["second_use_cookies"], 0, "{r}");

    // Agents, live.
    let agents: Vec<&str> = r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(agents, ["alice", "bob"]);
    let row: Vec<&str> = r["alice_row"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(row[1], "generic", "{row:?}");
    let pid = d.get("/v1/agents/alice", &Cred::Key).await.1["pid"].to_string();
    assert_eq!(row[4], pid, "{row:?}");
    assert_eq!(r["unread_live"], true);

    // The terminal: output shows within a second; the view only types
    // nothing; the typing switch types and is audited as the session.
    let output_ms = r["output_ms"].as_u64().unwrap();
    assert!(output_ms <= 1000, "pane output took {output_ms} ms to show");
    assert_eq!(
        r["readonly_typed"], false,
        "a view only typed into the pane"
    );
    assert_eq!(r["typing_typed"], true);
    assert_eq!(r["typing_audit"]["attach"], "typing");
    assert!(
        r["typing_audit"]["type"]
            .as_str()
            .unwrap()
            .contains("bytes typed"),
        "{r}"
    );
    assert!(
        !String::from_utf8_lossy(&sink.bytes()).contains("readonlykeys"),
        "the view only's keys reached the pane"
    );

    // Talk: the outcome as the API gave it; the jekt reached alice's pane.
    assert_eq!(r["jekt_outcome"]["outcome"], "delivered", "{r}");
    let jekt_text = r["jekt_outcome"]["text"].as_str().unwrap();
    assert!(jekt_text.contains("trust self-declared"), "{jekt_text}");
    assert_eq!(r["jekt_reached"], true);
    assert_eq!(r["mail_outcome"]["outcome"], "accepted", "{r}");

    // Mail: in the mailbox view (its thread) and found by search.
    let bodies = r["mailbox_bodies"].to_string();
    assert!(bodies.contains("notes for the release"), "{bodies}");
    let found = r["search_bodies"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].as_str().unwrap().contains("notes for the release"));
    let (_, page) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(page["messages"][0]["thread_id"], "release-7", "{page}");
    assert_eq!(page["messages"][0]["from"], "user", "{page}");

    // Events filtered by type; the audit log filtered by kind; status.
    let shown: Vec<&str> = r["events_shown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !shown.is_empty() && shown.iter().all(|t| t.starts_with("message:")),
        "{shown:?}"
    );
    assert!(
        r["audit_kinds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k == "type"),
        "{r}"
    );
    assert!(
        r["status_rows"].to_string().contains("panes_running"),
        "{r}"
    );

    // Another origin, with the cookie in the same browser: nothing read,
    // nothing sent, nothing typed.
    let x = &r["cross_origin"];
    assert_eq!(x["read"], "blocked", "{x}");
    assert_eq!(x["session"], "blocked", "{x}");
    assert_eq!(x["ws"], "refused", "{x}");
    assert_eq!(r["cross_origin_mail"], 0, "a cross-origin POST left mail");
    assert_eq!(r["cross_origin_jekt"], false, "a cross-origin POST jekted");
    assert_eq!(r["cross_origin_keys"], false, "a cross-origin socket typed");
    let (_, audit) = d.get("/v1/audit?kind=auth&limit=100", &Cred::Key).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "cross_origin"),
        "the refusals are audited: {audit}"
    );

    // The instance key never left this harness.
    assert!(r["requests"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(
        r["key_seen"],
        json!([]),
        "requests carried the instance key"
    );
    assert!(
        r["dashboard_requests_with_csrf"].as_u64().unwrap() >= 2,
        "{r}"
    );
    assert_eq!(r["after_logout"], 401);
    assert_eq!(
        r["token_after_logout"],
        Value::Null,
        "logging out forgets the token"
    );
    let errors: Vec<&Value> = r["page_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");

    for shot in ["dashboard.png", "dashboard-mail.png"] {
        let png = std::fs::read(shots.join(shot)).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{shot}");
        if std::env::var_os("AGENTBUS_UPDATE_SCREENSHOTS").is_some() {
            let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs")
                .join(shot);
            std::fs::write(docs, png).unwrap();
        }
    }
}

/// A dashboard session, logged in through a link without a browser: the
/// cookie as `name=value`, and the page token the redirect's fragment
/// hands over.
async fn log_in(d: &Daemon) -> (String, String) {
    let link = login_link(d);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(&link).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let token = location
        .strip_prefix("/#ui_token=")
        .unwrap_or_else(|| panic!("{location}"));
    assert_eq!(token.len(), 64);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(part), "{set}");
    }
    let again = http.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 401, "a link works once");
    (
        set.split(';').next().unwrap().to_string(),
        token.to_string(),
    )
}

/// What the daemon answers a request with this cookie and these headers.
async fn with_cookie(
    d: &Daemon,
    method: &str,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut h = HeaderMap::new();
    h.insert("cookie", HeaderValue::from_str(cookie).unwrap());
    for (k, v) in headers {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(m, format!("{}{path}", d.url))
        .headers(h);
    if method == "POST" {
        req = req.json(&json!({ "to": "bob", "body": "through the cookie" }));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_cookie_works_only_from_the_daemons_own_page_with_its_csrf_token() {
    let d = Daemon::start();
    let (cookie, csrf) = log_in(&d).await;
    let origin = d.url.clone();
    let host = d.url.trim_start_matches("http://").to_string();
    let (status, session) = with_cookie(
        &d,
        "GET",
        "/ui/session",
        &cookie,
        &[("sec-fetch-site", "same-origin"), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert!(
        !session.to_string().contains(&csrf),
        "the token is never handed out again"
    );

    // Reading, from the page itself: fine.
    let page = [("origin", origin.as_str()), ("x-csrf-token", csrf.as_str())];
    let (status, _) = with_cookie(&d, "GET", "/v1/agents", &cookie, &page).await;
    assert_eq!(status, 200);

    // The cookie alone, as a server on another port of 127.0.0.1 would
    // receive it from the browser, opens nothing, whatever headers its
    // holder forges.
    let forged = [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    for path in [
        "/ui/session",
        "/v1/agents",
        "/v1/audit",
        "/v1/agents/x/attach",
    ] {
        let (status, body) = with_cookie(&d, "GET", path, &cookie, &forged).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "csrf", "{body}");
    }
    // The token in a query counts only on a WebSocket upgrade.
    let q = format!("/v1/agents?ui_token={csrf}");
    let (status, _) = with_cookie(&d, "GET", &q, &cookie, &forged).await;
    assert_eq!(status, 403);

    // Any other origin, however close to ours, is refused.
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let others = [
        format!("http://127.0.0.1:{}", port + 1),
        format!("http://localhost:{port}"),
        format!("https://{host}"),
        format!("http://{host}.evil.example"),
        "http://evil.example".to_string(),
        "null".to_string(),
        format!("http://[::1]:{port}"),
    ];
    for o in &others {
        for (method, path) in [("GET", "/v1/agents"), ("POST", "/v1/messages")] {
            let (status, body) = with_cookie(
                &d,
                method,
                path,
                &cookie,
                &[("origin", o), ("x-csrf-token", &csrf)],
            )
            .await;
            assert_eq!(status, 403, "{method} {path} from {o}: {body}");
            // A foreign site is stopped before the session is looked at.
            let code = body["error"]["code"].as_str().unwrap();
            assert!(
                ["cross_origin", "forbidden_origin"].contains(&code),
                "{body}"
            );
        }
    }
    // So is whatever the browser itself says is not same-origin.
    for site in ["same-site", "cross-site", "none"] {
        let (status, _) = with_cookie(
            &d,
            "GET",
            "/v1/agents",
            &cookie,
            &[("sec-fetch-site", site), ("x-csrf-token", &csrf)],
        )
        .await;
        assert_eq!(status, 403, "sec-fetch-site {site}");
    }
    // A Host that is not a loopback name (DNS rebinding).
    let (status, _) = with_cookie(
        &d,
        "GET",
        "/v1/agents",
        &cookie,
        &[("host", "evil.example"), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(status, 403);
    // A WebSocket upgrade without an Origin.
    let (status, _) = with_cookie(
        &d,
        "GET",
        &format!("/v1/agents/x/attach?ui_token={csrf}"),
        &cookie,
        &[("upgrade", "websocket"), ("connection", "upgrade")],
    )
    .await;
    assert_eq!(status, 403);

    // Changing something needs the session's token, exactly.
    for token in [
        None,
        Some(""),
        Some("0"),
        Some(&csrf[..63]),
        Some(&*format!("{csrf}0")),
    ] {
        let mut h = vec![("origin", origin.as_str())];
        if let Some(t) = token {
            h.push(("x-csrf-token", t));
        }
        let (status, body) = with_cookie(&d, "POST", "/v1/messages", &cookie, &h).await;
        assert_eq!(status, 403, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "csrf");
    }
    let (_, inbox) = d.inbox("bob", "peek=true", &Cred::Key).await;
    assert_eq!(inbox["messages"], json!([]), "nothing refused was sent");
    let (status, sent) = with_cookie(
        &d,
        "POST",
        "/v1/messages",
        &cookie,
        &[("origin", &origin), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["from"], "user");

    // A session may not mint logins nor end the others.
    let (status, _) = with_cookie(
        &d,
        "POST",
        "/v1/ui/links",
        &cookie,
        &[("origin", &origin), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(status, 403);
    // An agent token may not either, nor use the dashboard's own routes.
    let token = d.register("agent1").await;
    let (status, _) = d
        .post("/v1/ui/links", &json!({}), &Cred::Token(token.clone()))
        .await;
    assert_eq!(status, 403);
    let (status, _) = d.get("/ui/session", &Cred::Token(token)).await;
    assert_eq!(status, 400);

    // A made-up cookie of the right name opens nothing.
    let name = cookie.split('=').next().unwrap();
    let (status, body) = with_cookie(
        &d,
        "GET",
        "/v1/agents",
        &format!("{name}={}", "ab".repeat(32)),
        &[],
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // `agentbus ui --logout-all` ends it.
    let out = d.cli(&["ui", "--logout-all"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("logged out 1"),
        "{out:?}"
    );
    let (status, body) = with_cookie(&d, "GET", "/v1/agents", &cookie, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "ui_session_ended");

    // Logins and logouts are in the audit log, under the session's name.
    let (_, audit) = d.get("/v1/audit?kind=ui&limit=50", &Cred::Key).await;
    let outcomes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    for o in ["link", "login", "logout_all"] {
        assert!(outcomes.contains(&o), "{outcomes:?}");
    }
    let mail = eventually(
        "the message sent with the cookie is audited",
        5,
        async || {
            let (_, a) = d.get("/v1/audit?limit=100", &Cred::Key).await;
            a["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["actor"].as_str().unwrap_or("").starts_with("ui:"))
                .cloned()
        },
    )
    .await;
    assert!(mail["actor"].as_str().unwrap().len() > 3);
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_with_a_strict_policy() {
    let d = Daemon::start();
    let resp = reqwest::get(format!("{}/", d.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let page = resp.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        page.contains(&format!("content=\"{nonce}\"")),
        "the page carries its nonce"
    );
    // A fresh nonce each time.
    let again = reqwest::get(format!("{}/", d.url)).await.unwrap();
    assert_ne!(
        again.headers()["content-security-policy"].to_str().unwrap(),
        csp
    );
    for asset in ["app.js", "app.css", "xterm.mjs", "xterm.css", "favicon.svg"] {
        let r = reqwest::get(format!("{}/ui/assets/{asset}", d.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    for bad in ["../Cargo.toml", "..%2F..%2Fauthkey", "app.js%00", "nope.js"] {
        let r = reqwest::get(format!("{}/ui/assets/{bad}", d.url))
            .await
            .unwrap();
        assert!(
            r.status() == 404 || r.status() == 400,
            "{bad}: {}",
            r.status()
        );
    }
    // Nothing without a session but the page, its assets and the login.
    let (status, _) = d.get("/ui/session", &Cred::None).await;
    assert_eq!(status, 401);
    let r = reqwest::get(format!("{}/ui/login?code={}", d.url, "0".repeat(64)))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Sends `keys` through an attach socket opened with `headers` and
/// `query`, then closes it.
async fn type_through_attach(
    d: &Daemon,
    agent: &str,
    query: &str,
    headers: &[(&str, &str)],
    keys: &[u8],
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let url = format!(
        "{}/v1/agents/{agent}/attach{query}",
        d.url.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(matches!(first, Message::Binary(_)), "a repaint first");
    ws.send(Message::Binary(keys.to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Text(
        r#"{"type":"resize","rows":5,"cols":20}"#.into(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn a_dashboard_view_types_nothing_unless_its_switch_asks_and_typing_is_audited() {
    let d = Daemon::start();
    let sink = d.open_sink("alice", "generic", false).await;
    let (cookie, token) = log_in(&d).await;
    let origin = d.url.clone();
    let page = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
    // The default for a session is a view only: keys and resizes dropped.
    let q = |query: &str| format!("{query}ui_token={token}");
    type_through_attach(&d, "alice", &q("?"), &page, b"viewkeys\r").await;
    type_through_attach(
        &d,
        "alice",
        &q("?input=false&rows=5&cols=20&"),
        &page,
        b"viewkeys2\r",
    )
    .await;
    let (_, info) = d.get("/v1/agents/alice", &Cred::Key).await;
    assert_ne!(info["rows"], 5, "a view only resized the pane: {info}");
    // The typing switch: the keys reach the program.
    type_through_attach(&d, "alice", &q("?input=true&"), &page, b"switchkeys\r").await;
    eventually(
        "keys typed with the switch on reach the pane",
        10,
        async || {
            String::from_utf8_lossy(&sink.bytes())
                .contains("switchkeys")
                .then_some(())
        },
    )
    .await;
    let typed = String::from_utf8_lossy(&sink.bytes()).to_string();
    assert!(!typed.contains("viewkeys"), "a view only typed: {typed:?}");
    // The instance key's terminal types by default, as `agentbus attach` does.
    type_through_attach(
        &d,
        "alice",
        "",
        &[("x-authkey", d.key.as_str())],
        b"clikeys\r",
    )
    .await;
    eventually("the CLI's keys reach the pane", 10, async || {
        String::from_utf8_lossy(&sink.bytes())
            .contains("clikeys")
            .then_some(())
    })
    .await;
    // Audited: who attached, in which mode, and what they typed.
    let entries = eventually("typing is audited", 10, async || {
        let (_, a) = d.get("/v1/audit?agent=alice&limit=100", &Cred::Key).await;
        let e = a["entries"].as_array().unwrap().clone();
        e.iter()
            .any(|x| x["kind"] == "type" && x["actor"] == "admin")
            .then_some(e)
    })
    .await;
    let row = |kind: &str, actor_ui: bool, detail: &str| {
        entries.iter().any(|e| {
            e["kind"] == kind
                && e["actor"].as_str().unwrap().starts_with("ui:") == actor_ui
                && e["detail"].as_str().unwrap_or("").contains(detail)
        })
    };
    assert!(row("attach", true, "view only"), "{entries:?}");
    assert!(row("attach", true, "typing"), "{entries:?}");
    assert!(row("type", true, "11 bytes typed"), "{entries:?}");
    assert!(row("attach", false, "typing"), "{entries:?}");
    let ui_types = entries
        .iter()
        .filter(|e| e["kind"] == "type" && e["actor"].as_str().unwrap().starts_with("ui:"))
        .count();
    assert_eq!(
        ui_types, 1,
        "a view only has nothing to audit as typed: {entries:?}"
    );
}

/// The next `agent:state` event for `agent` on an NDJSON event stream
/// that satisfies `want`.
async fn next_state(
    resp: &mut reqwest::Response,
    buf: &mut String,
    agent: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let Ok(e) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if e["type"] == "agent:state" && e["data"]["agent_id"] == agent && want(&e["data"]) {
                return e;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("an agent:state event in time")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn agent_state_events_follow_what_the_agents_list_shows() {
    let d = Daemon::start();
    d.open("carol", "generic", &["cat"]).await;
    let mut resp = d
        .http
        .get(format!("{}/v1/events/stream?type=agent:state", d.url))
        .header("x-authkey", &d.key)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    // The first listener gets every agent once.
    let first = next_state(&mut resp, &mut buf, "carol", |_| true).await;
    assert_eq!(first["data"]["unread_mail"], 0, "{first}");
    assert!(
        ["starting", "running", "idle"].contains(&first["data"]["state"].as_str().unwrap()),
        "{first}"
    );
    assert!(
        first["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("agent:carol"))
    );
    // Mail in, then acknowledged.
    let (_, sent) = d.msg("carol", "a note", &Cred::Key).await;
    next_state(&mut resp, &mut buf, "carol", |s| s["unread_mail"] == 1).await;
    let (status, _) = d
        .post(
            "/v1/messages/ack",
            &json!({ "ids": [sent["id"]] }),
            &Cred::Key,
        )
        .await;
    assert_eq!(status, 200);
    next_state(&mut resp, &mut buf, "carol", |s| s["unread_mail"] == 0).await;
    // The program ends.
    d.post(
        "/v1/agents/carol/stop",
        &json!({ "force": true }),
        &Cred::Key,
    )
    .await;
    let gone = next_state(&mut resp, &mut buf, "carol", |s| s["state"] == "exited").await;
    assert_eq!(gone["data"]["state"], "exited", "{gone}");
    // Never kept in history.
    let (status, h) = d
        .get(
            "/v1/events/history?type=agent:state&scope=agent:carol",
            &Cred::Key,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h["events"], json!([]), "{h}");
}

#[tokio::test]
async fn agentbus_ui_opens_the_link_where_there_is_a_desktop_and_only_prints_it_otherwise() {
    let d = Daemon::start();
    let bin_dir = d.dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let opened = d.dir.path().join("opened");
    let opener = bin_dir.join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // No desktop: printed only.
    let out = d.cli_env(
        &["ui"],
        &[("PATH", &path), ("DISPLAY", ""), ("WAYLAND_DISPLAY", "")],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("/ui/login?code="));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!opened.exists(), "opened without a desktop");
    // A desktop: the browser is asked to open the very link printed.
    let out = d.cli_env(&["ui"], &[("PATH", &path), ("DISPLAY", ":0")]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    // The shell makes the file before it writes into it.
    let got = eventually("xdg-open is run with the link", 10, async || {
        std::fs::read_to_string(&opened)
            .ok()
            .filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(got, link);
    assert!(text.contains("opened with xdg-open"), "{text}");
    // --no-open: printed only, even on a desktop.
    std::fs::remove_file(&opened).unwrap();
    let out = d.cli_env(&["ui", "--no-open"], &[("PATH", &path), ("DISPLAY", ":0")]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!opened.exists(), "--no-open opened");
}
