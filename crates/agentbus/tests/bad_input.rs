//! Bad input gets a JSON error that names the problem, with the right
//! status, and the daemon keeps serving.

mod common;
use common::{Cred, Daemon};
use serde_json::json;

async fn still_serving(d: &Daemon) {
    let (s, b) = d.get("/v1/agents", &Cred::Key).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = d.get("/healthz", &Cred::None).await;
    assert_eq!(s, 200);
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn message(body: &serde_json::Value) -> String {
    body["error"]["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn malformed_and_mistyped_bodies() {
    let d = Daemon::start();
    d.open_sink("alice", "generic", true).await;
    let inject = "/agentmux/reactive/inject";

    let (s, b) = d.post_raw(inject, b"{not json".to_vec(), &Cred::Key).await;
    assert_eq!((s, code(&b)), (400, "invalid_json"), "{b}");

    let (s, b) = d.post(inject, &json!({"message": "hi"}), &Cred::Key).await;
    assert_eq!((s, code(&b)), (400, "invalid_request"), "{b}");
    assert!(message(&b).contains("target_agent"), "{b}");

    let (s, b) = d
        .post(
            inject,
            &json!({"target_agent": "alice", "message": 5}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        message(&b).contains("message") || message(&b).contains("string"),
        "{b}"
    );

    let (s, b) = d
        .post(
            inject,
            &json!({"target_agent": "alice", "message": "  "}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");

    let (s, b) = d
        .post(
            inject,
            &json!({"target_agent": "alice", "message": "x", "wait_for_idle": -3}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("wait_for_idle"), "{b}");

    let (s, b) = d
        .post(
            inject,
            &json!({"target_agent": "alice", "message": "x", "priority": "asap"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    still_serving(&d).await;
}

#[tokio::test]
async fn invalid_ids_are_rejected_and_shown_escaped() {
    let d = Daemon::start();
    let long = "a".repeat(65);
    for bad in ["../x", long.as_str(), "bad\u{1b}[2Jname", "a b", ""] {
        let (s, b) = d.jekt(bad, "hi", &Cred::Key).await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert!(
            !message(&b).contains('\u{1b}'),
            "a control character came back raw: {b}"
        );
        let (s, b) = d
            .post(
                "/agentmux/reactive/inject",
                &json!({"target_agent": "ok", "source_agent": bad, "message": "x"}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 400, "source {bad:?}: {b}");
        let (s, b) = d
            .post(
                "/agentmux/reactive/register",
                &json!({"agent_id": bad}),
                &Cred::Key,
            )
            .await;
        assert_eq!(s, 400, "register {bad:?}: {b}");
    }
    let (s, b) = d.get("/v1/agents/..%2Fx", &Cred::Key).await;
    assert_eq!((s, code(&b)), (400, "invalid_id"), "{b}");
    let (s, b) = d
        .get("/agentmux/reactive/agent?agent_id=../x", &Cred::Key)
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = d
        .post(
            "/agentmux/reactive/inject",
            &json!({"target_agent": "a", "message": "x", "request_id": "bad id!"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    still_serving(&d).await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let d = Daemon::start();
    let big = format!(
        "{{\"target_agent\":\"alice\",\"message\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    let (s, b) = d
        .post_raw("/agentmux/reactive/inject", big.into_bytes(), &Cred::Key)
        .await;
    assert_eq!((s, code(&b)), (413, "payload_too_large"), "{b}");
    still_serving(&d).await;
}

#[tokio::test]
async fn unknown_agents_are_404_naming_the_known_ones() {
    let d = Daemon::start();
    d.register("alice").await;
    let (s, b) = d.jekt("bob", "hi", &Cred::Key).await;
    assert_eq!((s, code(&b)), (404, "agent_not_found"), "{b}");
    assert!(message(&b).contains("agent not found: bob"), "{b}");
    assert_eq!(b["error"]["details"]["known_agents"], json!(["alice"]));
    for path in [
        "/v1/agents/bob",
        "/v1/agents/bob/output",
        "/agentmux/reactive/agent?agent_id=bob",
    ] {
        let (s, b) = d.get(path, &Cred::Key).await;
        assert_eq!(s, 404, "{path}: {b}");
    }
    let (s, _) = d.post("/v1/agents/bob/stop", &json!({}), &Cred::Key).await;
    assert_eq!(s, 404);
    let (s, _) = d
        .post(
            "/agentmux/reactive/unregister",
            &json!({"agent_id": "bob"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 404);
    still_serving(&d).await;
}

#[tokio::test]
async fn a_name_matching_two_agents_is_ambiguous_never_guessed() {
    let d = Daemon::start();
    d.register("Worker").await;
    d.register("worker").await;
    let (s, b) = d.jekt("WORKER", "hi", &Cred::Key).await;
    assert_eq!((s, code(&b)), (409, "ambiguous_agent"), "{b}");
    assert_eq!(
        b["error"]["details"]["candidates"],
        json!(["Worker", "worker"])
    );
}

#[tokio::test]
async fn bad_numbers_and_unknown_routes() {
    let d = Daemon::start();
    d.open("alice", "shell", &["sleep", "30"]).await;
    for q in [
        "limit=0",
        "limit=-5",
        "limit=99999999999",
        "limit=NaN",
        "limit=abc",
        "kind=DROP%20TABLE",
        "bogus=1",
    ] {
        let (s, b) = d.get(&format!("/v1/audit?{q}"), &Cred::Key).await;
        assert_eq!(s, 400, "{q}: {b}");
    }
    for q in ["lines=0", "lines=-1", "lines=1000000000000", "lines=x"] {
        let (s, b) = d
            .get(&format!("/v1/agents/alice/output?{q}"), &Cred::Key)
            .await;
        assert_eq!(s, 400, "{q}: {b}");
    }
    let (s, b) = d
        .post(
            "/v1/agents/alice/resize",
            &json!({"rows": 0, "cols": 80}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = d
        .post(
            "/v1/agents/alice/resize",
            &json!({"rows": -1, "cols": 80}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = d.get("/v1/nothing-here", &Cred::Key).await;
    assert_eq!((s, code(&b)), (404, "no_route"), "{b}");
    let (s, b) = d.send("DELETE", "/v1/agents", &Cred::Key).await;
    assert_eq!((s, code(&b)), (405, "method_not_allowed"), "{b}");
    let (s, b) = d
        .post(
            "/v1/agents",
            &json!({"agent_id": "ghost", "command": ["/no/such/program"]}),
            &Cred::Key,
        )
        .await;
    assert_eq!((s, code(&b)), (400, "spawn_failed"), "{b}");
    let (s, b) = d
        .post(
            "/v1/agents",
            &json!({"agent_id": "ghost", "command": []}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = d
        .post(
            "/v1/agents",
            &json!({"agent_id": "ghost", "command": ["true"], "cwd": "/no/such/dir"}),
            &Cred::Key,
        )
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_cwd"), "{b}");
    still_serving(&d).await;
}

#[tokio::test]
async fn a_search_the_index_cannot_parse_is_400_never_500() {
    let d = Daemon::start();
    d.msg("bob", "hello world", &Cred::Key).await;
    for q in ["a%00b", "%00", "x%0Ay", "%1B%5B2J", "%7F"] {
        let (s, b) = d.get(&format!("/v1/search?q={q}"), &Cred::Key).await;
        assert_eq!((s, code(&b)), (400, "invalid_query"), "{q}: {b}");
        assert!(message(&b).contains("control"), "{b}");
    }
    // Whatever the index's own syntax would make of it, a query of
    // printable text is searched for as words.
    for q in [
        "NEAR(",
        "%22",
        "*",
        "a%3Ab",
        "AND%20OR%20NOT",
        "%5E",
        "(%20)",
        "-x",
    ] {
        let (s, b) = d.get(&format!("/v1/search?q={q}"), &Cred::Key).await;
        assert_eq!(s, 200, "{q}: {b}");
    }
    let (s, b) = d.get("/v1/search?q=world", &Cred::Key).await;
    assert_eq!((s, b["messages"].as_array().unwrap().len()), (200, 1));
    still_serving(&d).await;
}
