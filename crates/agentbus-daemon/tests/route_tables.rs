//! The bad-input and auth tables, run in process: the router
//! (`routes::app`) over a real store in a temp dir, one `oneshot` call per
//! row, no daemon process per case. Each row names a request and the
//! answer it must get; after every table the router still serves.

use agentbus_daemon::routes::app;
use agentbus_daemon::{AppState, Config};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "test-instance-key";

struct Fixture {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().to_path_buf();
    let store = agentbus_store::Store::open(&dir.path().join("t.db")).unwrap();
    let poller = agentbus_daemon::poller::Poller::new(dir.path(), "test".into(), None);
    let state = AppState::new(
        config,
        "http://127.0.0.1:9".into(),
        store,
        KEY,
        "forward-token",
        None,
        poller,
    );
    Fixture { state, _dir: dir }
}

#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Key,
    Token(&'a str),
}

async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    cred: Cred<'_>,
    body: Body,
) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(path);
    req = match cred {
        Cred::None => req,
        Cred::Key => req.header("x-authkey", KEY),
        Cred::Token(t) => req.header("authorization", format!("Bearer {t}")),
    };
    let resp = app(state.clone())
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn still_serving(state: &AppState) {
    let health = call(state, "GET", "/healthz", Cred::None, Body::empty()).await;
    assert_eq!(health.0, 200);
    let list = call(state, "GET", "/v1/agents", Cred::Key, Body::empty()).await;
    assert_eq!(list.0, 200, "{}", list.1);
}

/// Registers `name` (no pane); its agent token.
async fn register(state: &AppState, name: &str) -> String {
    let body = Body::from(json!({ "agent_id": name }).to_string());
    let (s, b) = call(
        state,
        "POST",
        "/agentmux/reactive/register",
        Cred::Key,
        body,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["token"].as_str().unwrap().to_string()
}

/// Every route of the OpenAPI document: (method, path, open).
fn documented_routes() -> Vec<(String, String, bool)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for (p, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let open = op
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
            out.push((m.to_uppercase(), p.replace("{agent_id}", "alice"), open));
        }
    }
    out
}

#[tokio::test]
async fn the_auth_table() {
    let f = fixture();
    let s = &f.state;
    let scout = register(s, "scout").await;
    let routes = documented_routes();
    assert!(
        routes.len() >= 20,
        "the route list is read: {}",
        routes.len()
    );
    for (method, path, open) in &routes {
        for cred in [Cred::None, Cred::Token("abt_not-a-real-token")] {
            let (status, body) = call(s, method, path, cred, Body::empty()).await;
            match (path.as_str(), *open) {
                ("/ws", _) if matches!(cred, Cred::None) => {
                    assert_eq!(status, 426, "{body}");
                    assert_eq!(body["error"]["code"], "upgrade_required");
                }
                // A WebSocket with a credential that fails is refused too.
                (p, true) if p != "/ws" => {
                    assert_ne!(status, 401, "{method} {path} is open: {body}")
                }
                _ => {
                    assert_eq!(status, 401, "{method} {path}: {body}");
                    assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
                }
            }
        }
    }
    // An agent token is held to its own agent and kept off admin routes.
    let t = Cred::Token(&scout);
    for (method, path) in [
        ("POST", "/v1/agents"),
        ("POST", "/agentmux/reactive/register"),
        ("POST", "/agentmux/reactive/unregister"),
        ("GET", "/agentmux/reactive/audit"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/stats"),
        ("GET", "/metrics"),
        ("POST", "/v1/agents/scout/stop"),
        ("POST", "/v1/agents/scout/resize"),
        ("GET", "/v1/agents/scout/attach"),
    ] {
        let (status, body) = call(s, method, path, t, Body::from("{}")).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
    }
    for path in [
        "/v1/agents",
        "/agentmux/reactive/agents",
        "/v1/agents/scout",
    ] {
        let (status, body) = call(s, "GET", path, t, Body::empty()).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    still_serving(s).await;
}

#[tokio::test]
async fn the_bad_input_table() {
    let f = fixture();
    let s = &f.state;
    register(s, "alice").await;
    register(s, "Worker").await;
    register(s, "worker").await;
    let inject = "/agentmux/reactive/inject";
    let big = format!(
        r#"{{"target_agent":"alice","message":"{}"}}"#,
        "x".repeat(3 << 20)
    );
    // (method, path, body, status, code, words the message must hold)
    let rows: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            "POST",
            inject,
            "{not json".into(),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "POST",
            inject,
            r#"{"message":"hi"}"#.into(),
            400,
            "invalid_request",
            "target_agent",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","message":5}"#.into(),
            400,
            "invalid_request",
            "string",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","message":"  "}"#.into(),
            400,
            "invalid_request",
            "empty",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","message":"x","wait_for_idle":-3}"#.into(),
            400,
            "invalid_request",
            "wait_for_idle",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","message":"x","priority":"asap"}"#.into(),
            400,
            "invalid_request",
            "asap",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"../x","message":"x"}"#.into(),
            400,
            "invalid_request",
            "agent id",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"a\u001b[2Jb","message":"x"}"#.into(),
            400,
            "invalid_request",
            "agent id",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","message":"x","request_id":"bad id!"}"#.into(),
            400,
            "invalid_request",
            "request id",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","source_agent":"a b","message":"x"}"#.into(),
            400,
            "invalid_request",
            "agent id",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"bob","message":"hi"}"#.into(),
            404,
            "agent_not_found",
            "agent not found: bob",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"WORKER","message":"hi"}"#.into(),
            409,
            "ambiguous_agent",
            "matches several agents",
        ),
        (
            "POST",
            inject,
            r#"{"target_agent":"alice","message":"hi","hops":9}"#.into(),
            508,
            "hop_limit",
            "forwarded 9 times",
        ),
        ("POST", inject, big, 413, "payload_too_large", "too large"),
        (
            "POST",
            "/agentmux/reactive/register",
            r#"{"agent_id":""}"#.into(),
            400,
            "invalid_request",
            "agent id",
        ),
        (
            "POST",
            "/v1/messages",
            r#"{"to":"alice"}"#.into(),
            400,
            "invalid_request",
            "body",
        ),
        (
            "POST",
            "/v1/agents",
            r#"{"agent_id":"ghost","command":["/no/such/program"]}"#.into(),
            400,
            "spawn_failed",
            "/no/such/program",
        ),
        (
            "POST",
            "/v1/agents",
            r#"{"agent_id":"ghost","command":["true"],"cwd":"/no/such/dir"}"#.into(),
            400,
            "invalid_cwd",
            "/no/such/dir",
        ),
        (
            "GET",
            "/v1/agents/..%2Fx",
            String::new(),
            400,
            "invalid_id",
            "agent id",
        ),
        (
            "GET",
            "/v1/audit?limit=0",
            String::new(),
            400,
            "invalid_query",
            "limit",
        ),
        (
            "GET",
            "/v1/audit?limit=abc",
            String::new(),
            400,
            "invalid_query",
            "limit",
        ),
        (
            "GET",
            "/v1/audit?bogus=1",
            String::new(),
            400,
            "invalid_query",
            "bogus",
        ),
        (
            "GET",
            "/v1/search?q=a%00b",
            String::new(),
            400,
            "invalid_query",
            "control",
        ),
        (
            "GET",
            "/v1/agents/bob",
            String::new(),
            404,
            "agent_not_found",
            "bob",
        ),
        (
            "GET",
            "/v1/nothing-here",
            String::new(),
            404,
            "no_route",
            "/v1/nothing-here",
        ),
        (
            "DELETE",
            "/v1/agents",
            String::new(),
            405,
            "method_not_allowed",
            "DELETE",
        ),
    ];
    for (method, path, body, status, code, words) in rows {
        let (got, b) = call(s, method, path, Cred::Key, Body::from(body.clone())).await;
        let shown: String = body.chars().take(80).collect();
        assert_eq!(
            (got, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {shown}: {b}"
        );
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "{method} {path} {shown}: {message:?} lacks {words:?}"
        );
        assert!(
            !message.contains('\u{1b}'),
            "a control character came back raw: {message:?}"
        );
    }
    still_serving(s).await;
}
