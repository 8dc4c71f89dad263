//! Who may do what: every route but health and version needs a
//! credential; an agent token is held to its own agent; the sender of a
//! jekt made with an agent token is that agent, proven; the instance key
//! only claims a name; and the instance key never reaches a pane.

mod common;
use common::{Cred, Daemon, eventually};
use serde_json::json;

fn openapi_routes() -> Vec<(String, String, bool)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for (p, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let open = op
                .get("security")
                .is_some_and(|s| s.as_array().unwrap().is_empty());
            out.push((m.to_uppercase(), p.replace("{agent_id}", "alice"), open));
        }
    }
    out
}

#[tokio::test]
async fn every_route_without_a_credential_is_401_and_the_refusal_is_audited() {
    let d = Daemon::start();
    let routes = openapi_routes();
    assert!(routes.len() >= 15, "the route list is read");
    for (method, path, open) in &routes {
        if *open && (*path == "/" || path.starts_with("/ui/")) {
            // The dashboard's page, assets and login answer HTML or
            // assets, not JSON: tests/dashboard.rs holds them.
            continue;
        }
        let (status, body) = d.send(method, path, &Cred::None).await;
        if *path == "/ws" {
            // The WebSocket: plain HTTP is told to upgrade.
            assert_eq!(status, 426, "{body}");
            assert_eq!(body["error"]["code"], "upgrade_required");
        } else if *open {
            assert_eq!(status, 200, "{method} {path} should be open: {body}");
        } else {
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        let (status, _) = d
            .send(method, path, &Cred::Token("abt_not-a-real-token".into()))
            .await;
        if !*open || *path == "/ws" {
            assert_eq!(status, 401, "{method} {path} with a bad token");
        }
    }
    // Every refusal is audited: the first ones of a kind in full, the
    // rest counted (and written as one summary row when the minute ends).
    let (_, audit) = d.get("/v1/audit?kind=auth&limit=1000", &Cred::Key).await;
    let written = audit["entries"].as_array().unwrap().len();
    let (_, stats) = d.get("/v1/stats", &Cred::Key).await;
    let counted = stats["refusals_counted"].as_u64().unwrap() as usize;
    assert!(written >= 10, "{written} written in full");
    let closed = routes.iter().filter(|(_, _, open)| !open).count();
    assert!(
        written + counted >= 2 * closed,
        "{written} written + {counted} counted"
    );
    let dump = audit.to_string();
    assert!(
        !dump.contains("abt_not-a-real-token"),
        "a presented secret reached the audit log"
    );
}

#[tokio::test]
async fn both_headers_carry_a_credential() {
    let d = Daemon::start();
    let (s, _) = d
        .get(
            "/v1/agents",
            &Cred::Header("authorization", format!("Bearer {}", d.key)),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = d
        .get("/v1/agents", &Cred::Header("x-authkey", d.key.clone()))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_agent_token_is_refused_on_admin_routes() {
    let d = Daemon::start();
    let token = d.register("scout").await;
    let t = Cred::Token(token);
    let admin_calls = [
        ("POST", "/v1/agents"),
        ("POST", "/agentmux/reactive/register"),
        ("POST", "/agentmux/reactive/unregister"),
        ("GET", "/agentmux/reactive/audit"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/agents/scout/stop"),
        ("POST", "/v1/agents/scout/resize"),
        ("GET", "/v1/agents/scout/attach"),
    ];
    for (m, p) in admin_calls {
        let (status, body) = d.send(m, p, &t).await;
        assert_eq!(status, 403, "{m} {p}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // What an agent may do.
    assert_eq!(d.get("/v1/agents", &t).await.0, 200);
    assert_eq!(d.get("/agentmux/reactive/agents", &t).await.0, 200);
    assert_eq!(d.get("/v1/agents/scout", &t).await.0, 200);
}

#[tokio::test]
async fn an_agent_token_reads_only_its_own_status_and_output() {
    let d = Daemon::start();
    d.open("alice", "shell", &["sleep", "30"]).await;
    let token = d.register("scout").await;
    let (status, body) = d.get("/v1/agents/alice", &Cred::Token(token.clone())).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = d.get("/v1/agents/alice/output", &Cred::Token(token)).await;
    assert_eq!(status, 403);
}

/// The environment of a pane, read from inside it.
async fn pane_env(d: &Daemon, name: &str) -> String {
    let file = d.data_dir().join(format!("{name}.env"));
    let script = format!("env > {}.tmp && mv {0}.tmp {0}; sleep 60", file.display());
    d.open(name, "generic", &["sh", "-c", &script]).await;
    eventually("the pane's env", 20, async || {
        std::fs::read_to_string(&file).ok()
    })
    .await
}

fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from the pane env"))
        .to_string()
}

#[tokio::test]
async fn a_pane_gets_its_own_token_and_never_the_instance_key() {
    // The daemon inherits an AGENTBUS_AUTH_KEY (say, from the pane of
    // another instance): it must not pass it on.
    let d = Daemon::start_env(&[("AGENTBUS_AUTH_KEY", "inherited-admin-key")]);
    let env = pane_env(&d, "alice").await;
    assert!(!env.contains("inherited-admin-key"));
    assert_eq!(env_value(&env, "AGENTBUS_URL"), d.url);
    assert_eq!(env_value(&env, "AGENTBUS_AGENT_ID"), "alice");
    assert!(env_value(&env, "AGENTBUS_AGENT_TOKEN").starts_with("abt_"));
    assert!(
        !env.contains(&d.key),
        "the instance key is in the pane's environment"
    );
    assert!(!env.contains("AGENTBUS_AUTH_KEY"));
    // And an explicit attempt to hand it over is refused.
    let (status, body) = d
        .post(
            "/v1/agents",
            &json!({"agent_id": "leaky", "command": ["true"], "env": {"KEY": d.key}}),
            &Cred::Key,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = d
        .post(
            "/v1/agents",
            &json!({"agent_id": "leaky", "command": ["true"], "env": {"AGENTBUS_AGENT_TOKEN": "x"}}),
            &Cred::Key,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_jekt_with_an_agent_token_is_sent_as_that_agent_and_proven() {
    let d = Daemon::start();
    let sink = d.open_sink("alice", "generic", true).await;
    let env = pane_env(&d, "bob").await;
    let bob = Cred::Token(env_value(&env, "AGENTBUS_AGENT_TOKEN"));

    // Claiming to be someone else is refused.
    let (status, body) = d
        .post(
            "/agentmux/reactive/inject",
            &json!({"target_agent": "alice", "source_agent": "carol", "message": "hi"}),
            &bob,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot send as carol")
    );

    let (status, resp) = d.jekt("alice", "from bob, proven", &bob).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["trust"], "host-verified");
    assert_eq!(resp["source_agent"], "bob");
    let text = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(
        text.contains("[JEKT:FROM=bob TO=alice TIER=info DELIVERY=host TRUST=host-verified "),
        "{text}"
    );

    // The instance key only claims a name.
    let (_, resp) = d
        .post(
            "/agentmux/reactive/inject",
            &json!({"target_agent": "alice", "source_agent": "bob", "message": "claimed"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(resp["trust"], "self-declared");
    let text = String::from_utf8(sink.wait_submits(2).await).unwrap();
    assert!(
        text.contains("FROM=bob TO=alice TIER=info DELIVERY=host TRUST=self-declared "),
        "{text}"
    );

    // The CLI inside a pane uses the pane's own credentials.
    let mut cmd = std::process::Command::new(common::bin());
    let out = cmd
        .args(["jekt", "alice", "via the cli"])
        .env("AGENTBUS_URL", &d.url)
        .env(
            "AGENTBUS_AGENT_TOKEN",
            env_value(&env, "AGENTBUS_AGENT_TOKEN"),
        )
        .env_remove("AGENTBUS_AUTH_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from bob"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_shell_pane_refuses_agent_tokens_unless_the_policy_names_the_sender() {
    let d = Daemon::start_with("[policy]\nshell_jekt_senders = [\"ops\"]\n");
    d.open_sink("box", "shell", true).await;
    let scout = Cred::Token(d.register("scout").await);
    let (status, body) = d.jekt("box", "rm something", &scout).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("shell"),
        "{body}"
    );
    let ops = Cred::Token(d.register("ops").await);
    let (status, body) = d.jekt("box", "ls", &ops).await;
    assert_eq!(status, 200, "{body}");
    // The instance key is the admin's: it may.
    let (status, _) = d.jekt("box", "ls", &Cred::Key).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_shell_in_the_foreground_makes_a_shell_pane_whatever_the_label() {
    let d = Daemon::start();
    let scout = Cred::Token(d.register("scout").await);
    // Labelled an agent CLI, running shells.
    for (name, cmd) in [
        ("disguised", vec!["sh"]),
        ("bash-box", vec!["bash", "--norc", "-i"]),
        ("nested", vec!["sh", "-c", "exec bash --norc -i"]),
    ] {
        d.open(name, "generic", &cmd).await;
        let (status, body) = common::eventually("a shell in the foreground", 10, async || {
            let (status, body) = d.jekt(name, "echo pwned", &scout).await;
            (status == 403).then_some((status, body))
        })
        .await;
        assert_eq!(status, 403, "{name}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("shell"),
            "{body}"
        );
    }
    // A shell that runs a program in the foreground is that program's.
    d.open_sink("fg-program", "generic", true).await;
    assert_eq!(d.jekt("fg-program", "hi", &scout).await.0, 200);
    d.open("busy", "generic", &["sh", "-c", "cat; :"]).await;
    let (status, body) = common::eventually("cat in the foreground", 10, async || {
        let (status, body) = d.jekt("busy", "hi", &scout).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_held_jekt_is_not_replayed_into_what_has_become_a_shell() {
    let d = Daemon::start();
    // later is known, then offline: jekts for it are held.
    d.open("later", "generic", &["true"]).await;
    common::eventually("later exits", 10, async || {
        let (_, s) = d.get("/v1/agents/later", &Cred::Key).await;
        (s["state"] == "exited").then_some(())
    })
    .await;
    let scout = Cred::Token(d.register("scout").await);
    let (status, body) = d.jekt("later", "echo pwned > /tmp/x", &scout).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("held")),
        "{body}"
    );
    // It comes back as a shell pane: the replay refuses the held jekt.
    let sink = d.open_sink("later", "shell", true).await;
    common::eventually("the held jekt is dropped and audited", 20, async || {
        let (_, a) = d.get("/v1/audit?limit=50&kind=jekt", &Cred::Key).await;
        a["entries"]
            .as_array()?
            .iter()
            .find(|e| {
                e["outcome"] == "forbidden"
                    && e["detail"]
                        .as_str()
                        .is_some_and(|t| t.contains("held jekt dropped"))
            })
            .cloned()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        sink.bytes().is_empty(),
        "{:?}",
        String::from_utf8_lossy(&sink.bytes())
    );
    let (_, s) = d.get("/v1/agents/later", &Cred::Key).await;
    assert_eq!(s["held_jekts"], 0, "{s}");
}

#[tokio::test]
async fn the_allow_list_limits_who_may_jekt_whom() {
    let d = Daemon::start_with("[[policy.jekt_allow]]\nfrom = \"lead\"\nto = [\"*\"]\n");
    d.open_sink("worker", "generic", true).await;
    let lead = Cred::Token(d.register("lead").await);
    let temp = Cred::Token(d.register("temp").await);
    assert_eq!(d.jekt("worker", "go", &lead).await.0, 200);
    let (status, body) = d.jekt("worker", "go", &temp).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn tokens_die_with_their_registration() {
    let d = Daemon::start();
    let token = d.register("temp").await;
    assert_eq!(
        d.get("/v1/agents/temp", &Cred::Token(token.clone()))
            .await
            .0,
        200
    );
    let (s, _) = d
        .post(
            "/agentmux/reactive/unregister",
            &json!({"agent_id": "temp"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(d.get("/v1/agents", &Cred::Token(token)).await.0, 401);
}

#[tokio::test]
async fn only_loopback_web_origins_are_served() {
    let d = Daemon::start();
    let (s, body) = d
        .get(
            "/v1/agents",
            &Cred::Header("origin", "http://evil.example".into()),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_origin");
    let resp = d
        .http
        .get(format!("{}/v1/agents", d.url))
        .header("origin", "http://127.0.0.1:5173")
        .header("x-authkey", &d.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://127.0.0.1:5173"
    );
}
