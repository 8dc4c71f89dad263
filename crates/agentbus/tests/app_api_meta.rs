//! Metadata, views, the config and its live settings, raw input, and
//! sessions (export, digest, archive, restore on a second daemon), all
//! through `/ws` with Python's `websockets` client
//! (`tests/python/app_api_meta.py`).

mod common;

use common::{Cred, Daemon, run_python};
use serde_json::{Value, json};

async fn scenario(d: &Daemon, name: &str, extra: &[&str]) -> Value {
    run_python("app_api_meta.py", d.app_api_args(name, extra)).await
}

fn code(v: &Value) -> &str {
    v["error"]["data"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn metadata_and_views_of_blocks_and_agents() {
    let d = Daemon::start();
    let file = d.dir.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    let me = d.open("me", "shell", &["sh"]).await;
    let token = d.own_token("me", &me).await;
    let r = scenario(
        &d,
        "meta",
        &["--file", file.to_str().unwrap(), "--token", &token],
    )
    .await;
    assert_eq!(r["get_term"]["meta"]["view"], "term", "{r}");
    assert_eq!(r["get_term"]["meta"]["tab_id"], "t1");
    let set = &r["set_block"]["meta"];
    assert_eq!(set["title"], "Notes");
    assert_eq!(set["x:owner"], "me");
    assert_eq!(set["tags"], json!(["a", "b"]));
    assert_eq!(set["x:nested/k"], json!({"deep": [1, 2]}));
    assert_eq!(set["file"], file.to_str().unwrap());
    assert!(r["unset"]["meta"].get("x:owner").is_none(), "{r}");
    assert_eq!(r["move_tab"]["meta"]["tab_id"], "t2");
    assert_eq!(r["tab_t2"], json!([r["editor"]]));
    assert_eq!(code(&r["set_file"]), "INVALID_ARG", "{r}");
    assert_eq!(code(&r["url_on_editor"]), "INVALID_META", "{r}");
    assert_eq!(r["set_url"]["meta"]["url"], "https://example.com/b");
    let bad = &r["bad"];
    for (case, want) in [
        ("unknown_key", "INVALID_META"),
        ("read_only_view", "READ_ONLY_META"),
        ("long_title", "INVALID_META"),
        ("control_title", "INVALID_META"),
        ("title_not_string", "INVALID_META"),
        ("bad_free_key", "INVALID_META"),
        ("free_key_space", "INVALID_META"),
        ("too_big", "INVALID_META"),
        ("tags_not_list", "INVALID_META"),
        ("too_many_tags", "INVALID_META"),
        ("bad_tab", "INVALID_META"),
        ("unicode_key", "INVALID_META"),
    ] {
        assert_eq!(bad[case]["code"], want, "{case}: {}", bad[case]);
    }
    let msg = bad["unknown_key"]["message"].as_str().unwrap();
    assert!(msg.contains("title") && msg.contains("x:"), "{msg}");
    // A refused change changes nothing, not even the keys before it.
    assert_eq!(r["after_bad"]["meta"]["title"], "Notes");
    assert!(r["after_bad"]["meta"].get("x:big").is_none());
    assert_eq!(r["concurrent_block"].as_array().unwrap().len(), 30, "{r}");
    assert_eq!(r["concurrent_agent"].as_array().unwrap().len(), 30, "{r}");
    let agent = &r["get_agent"]["meta"];
    assert_eq!(r["get_agent"]["agent_id"], "worker", "{r}");
    assert_eq!(agent["description"], "builds things");
    assert_eq!(agent["x:k"], json!({"a": 1}));
    assert_eq!(agent["provider"], "shell");
    assert_eq!(agent["command"], json!(["sh"]));
    assert!(agent["pid"].as_u64().is_some());
    assert_eq!(r["agent_read_only"], "READ_ONLY_META");
    let e = &r["errors"];
    assert_eq!(e["unknown_agent"], "AGENT_NOT_FOUND", "{e}");
    assert_eq!(e["unknown_block"], "BLOCK_NOT_FOUND");
    assert_eq!(e["both"], -32602);
    assert_eq!(e["neither"], "MISSING_ARG");
    assert_eq!(e["meta_not_object"], -32602);
    assert_eq!(e["extra_field"], -32602);
    assert_eq!(e["create_unknown_meta"], "INVALID_META");
    assert_eq!(r["view_browser"]["previous"], "editor");
    assert_eq!(r["view_browser"]["changed"], true);
    let vm = &r["view_browser_meta"];
    assert_eq!(vm["url"], "http://127.0.0.1/x");
    assert!(vm.get("file").is_none(), "{vm}");
    assert_eq!(vm["title"], "Notes", "the view changes, the meta stays");
    assert_eq!(r["view_same"]["changed"], false);
    let ve = &r["view_errors"];
    assert_eq!(ve["running_term"], "HAS_CONTROLLER", "{ve}");
    assert_eq!(ve["bad_view"], "INVALID_VIEW");
    assert_eq!(ve["editor_no_file"], "MISSING_ARG");
    assert_eq!(ve["to_term_without_program"], "NO_CONTROLLER");
    assert_eq!(ve["url_with_editor"], "INVALID_ARG");
    assert_eq!(ve["unknown_block"], "BLOCK_NOT_FOUND");
    assert_eq!(r["to_sysinfo"]["view"], "sysinfo");
    assert_eq!(r["help_meta"]["doc"], "docs/app-api.md");
    assert_eq!(r["stopped_to_editor"]["view"], "editor");
    assert_eq!(r["back_to_term"]["view"], "term");
    // The agent's own token has none of these by default.
    for (m, c) in r["token"].as_object().unwrap() {
        assert_eq!(c, "FORBIDDEN", "{m}");
    }
    // Calls are audited like every other.
    let (_, b) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    let audited = b["entries"].as_array().unwrap();
    assert!(
        audited
            .iter()
            .any(|e| e["target"] == "setmeta" && e["outcome"] == "invalid_meta")
    );
    assert!(
        audited
            .iter()
            .any(|e| e["target"] == "setview" && e["outcome"] == "ok")
    );
}

#[tokio::test]
async fn the_config_is_shown_without_secrets_and_live_settings_persist() {
    let secret = "relay-secret-4d1f9a";
    let mut d = Daemon::start_with(&format!("[relay]\ntoken = \"{secret}\"\n"));
    let r = scenario(&d, "config", &[]).await;
    assert!(!r["full_text"].as_str().unwrap().contains(secret), "{r}");
    assert!(!r["full_text"].as_str().unwrap().contains(&d.key));
    assert_eq!(r["relay_token"], "[redacted]");
    let all = r["all"]["vars"].as_array().unwrap();
    assert!(all.len() >= 10, "{r}");
    assert!(
        all.iter()
            .all(|v| v["about"].as_str().is_some_and(|a| !a.is_empty()))
    );
    assert_eq!(r["quota"]["set"], false);
    assert_eq!(r["quota"]["value"], r["quota"]["config_value"]);
    assert_eq!(r["set"]["value"], 64);
    assert_eq!(r["after_set"]["set"], true);
    assert_eq!(r["set_quota"]["value"], 5);
    assert_eq!(r["reset_quota"]["set"], false);
    assert_eq!(r["reset_quota"]["previous"], 5);
    assert_eq!(r["reset_quota"]["value"], r["quota"]["value"]);
    assert_eq!(r["full_live"], json!({"mailbox.max_body_bytes": 64}));
    let e = &r["errors"];
    for (case, want) in [
        ("unknown", "UNKNOWN_VAR"),
        ("unknown_unicode", "UNKNOWN_VAR"),
        ("not_number", "INVALID_VALUE"),
        ("negative", "INVALID_VALUE"),
        ("too_big", "INVALID_VALUE"),
        ("float", "INVALID_VALUE"),
        ("object", "INVALID_VALUE"),
        ("getvar_unknown", "UNKNOWN_VAR"),
    ] {
        assert_eq!(e[case]["code"], want, "{case}: {}", e[case]);
    }
    assert_eq!(e["no_value"]["code"], -32602, "{e}");
    let listed = e["unknown"]["message"].as_str().unwrap();
    assert!(
        listed.contains("mailbox.quota") && listed.contains("hold.ttl_s"),
        "{listed}"
    );
    // The change took effect: a 65-byte message is now too large.
    d.open("inbox", "shell", &["sh"]).await;
    let send = |body: String| json!({"to": "inbox", "from": "me", "body": body});
    let (status, b) = d
        .post("/v1/messages", &send("y".repeat(65)), &Cred::Key)
        .await;
    assert_eq!(status, 413, "{b}");
    let (status, _) = d
        .post("/v1/messages", &send("y".repeat(64)), &Cred::Key)
        .await;
    assert_eq!(status, 201);
    // And it survives a restart.
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    d.restart();
    let r = scenario(&d, "getvar", &[]).await;
    assert_eq!(r["value"], 64, "{r}");
    assert_eq!(r["set"], true);
    let saved = std::fs::metadata(d.data_dir().join("vars.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&saved.permissions()) & 0o777,
        0o600
    );
}

#[tokio::test]
async fn raw_input_types_exactly_and_needs_its_own_scope() {
    let d = Daemon::start();
    let me = d.open("me", "shell", &["sh"]).await;
    let token = d.own_token("me", &me).await;
    let extra = d.mint_token("me", &["agent.send", "agent.send:raw@rawsh"]);
    let r = scenario(&d, "raw", &["--token", &token, "--extra", &extra]).await;
    assert_eq!(r["typed"]["status"], "typed", "{r}");
    assert_eq!(r["typed"]["raw"], true);
    let lines = r["final_lines"].to_string();
    assert!(
        lines.contains("raw-42") && lines.contains("part-two"),
        "{r}"
    );
    // No marker: this was a keyboard, not a jekt.
    assert!(!r["lines"].to_string().contains("[JEKT"), "{r}");
    let e = &r["errors"];
    assert_eq!(e["raw_priority"], -32602, "{e}");
    assert_eq!(e["submit_without_raw"], -32602);
    assert_eq!(e["raw_not_bool"], -32602);
    assert_eq!(e["raw_unknown"], "AGENT_NOT_FOUND");
    assert_eq!(r["jekt"]["outcome"], "delivered", "{r}");
    // The agent's own token may send, but not raw.
    assert_eq!(r["send_only"]["code"], "FORBIDDEN", "{r}");
    assert!(
        r["send_only"]["message"]
            .as_str()
            .unwrap()
            .contains("agent.send:raw@rawsh")
    );
    assert_eq!(r["raw_scope"]["code"], "ok", "{r}");
    assert!(!lines.contains("send_only-5"), "{lines}");
    // Raw input is audited as such, allowed or refused.
    let (_, b) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    let raw: Vec<&str> = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "agent.send:raw")
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(raw.contains(&"ok") && raw.contains(&"forbidden"), "{raw:?}");
}

#[tokio::test]
async fn a_session_archived_on_one_daemon_restores_on_another_with_the_same_digest() {
    let a = Daemon::start();
    let secret = "pane-env-secret-93b1";
    let work = a.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // Mail waiting for alpha is part of the session.
    for i in 0..3 {
        let (status, b) = a
            .post(
                "/v1/messages",
                &json!({"to": "alpha", "from": "planner", "body": format!("task {i}")}),
                &Cred::Key,
            )
            .await;
        assert_eq!(status, 201, "{b}");
    }
    let r = scenario(
        &a,
        "session_build",
        &["--file", work.to_str().unwrap(), "--secret", secret],
    )
    .await;
    let export = &r["export"];
    assert_eq!(export["format"], "agentbus.session", "{r}");
    assert_eq!(export["version"], 1);
    let blocks = export["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 6, "{export}");
    let alpha = blocks
        .iter()
        .find(|b| b["agents"] == json!(["alpha"]))
        .unwrap();
    assert_eq!(alpha["controller"]["env_names"], json!(["MY_VAR"]));
    assert_eq!(alpha["controller"]["cwd"], work.to_str().unwrap());
    assert_eq!(alpha["tab_id"], "main");
    assert_eq!(alpha["meta"]["title"], "Alpha's pane");
    assert!(
        blocks
            .iter()
            .any(|b| b["view"] == "help" && b["parent_id"].is_string())
    );
    assert_eq!(
        export["mailboxes"],
        json!([{"agent_id": "alpha", "unacked": 3}])
    );
    assert!(export["events"].as_array().is_some_and(|e| !e.is_empty()));
    // Secrets never leave: not in the export, the digest's form or the bundle.
    let bundle_text = std::fs::read_to_string(a.data_dir().join("sessions/snap.json")).unwrap();
    for text in [
        export.to_string(),
        r["canonical"].to_string(),
        bundle_text.clone(),
    ] {
        assert!(!text.contains(secret));
        assert!(!text.contains(&a.key));
    }
    assert_eq!(r["digest"], r["digest_again"], "same state, same digest");
    assert_ne!(r["digest"], r["digest_changed"]);
    assert_eq!(r["digest"], r["digest_back"]);
    let archive = &r["archive"];
    assert_eq!(archive["digest"], r["digest"]);
    assert_eq!(archive["messages"], 3);
    assert!(
        archive["bundle"]["scrollback"]
            .to_string()
            .contains("scrolled-42")
    );
    let e = &r["errors"];
    assert_eq!(e["exists"], "EXISTS", "{e}");
    assert_eq!(e["bad_name"], -32602);
    assert_eq!(e["dot_name"], -32602);
    assert_eq!(e["too_much_scrollback"], -32602);
    assert_eq!(e["restore_not_fresh"], "WORKSPACE_NOT_EMPTY");
    let mode = std::fs::metadata(a.data_dir().join("sessions/snap.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // The bundle carried to a second daemon (a file copy, as between
    // machines) and opened there.
    let b = Daemon::start();
    std::fs::create_dir_all(b.data_dir().join("sessions")).unwrap();
    std::fs::write(b.data_dir().join("sessions/snap.json"), &bundle_text).unwrap();
    let r2 = scenario(&b, "session_restore", &["--secret", secret]).await;
    let e = &r2["errors"];
    assert_eq!(e["missing"], "NOT_FOUND", "{e}");
    assert_eq!(e["bad_format"], "INVALID_BUNDLE");
    assert_eq!(e["bad_version"], "INVALID_BUNDLE");
    assert_eq!(e["malformed"], "INVALID_BUNDLE");
    assert_eq!(e["both"], -32602);
    assert_eq!(e["neither"], "MISSING_ARG");
    assert_eq!(e["bad_name"], -32602);
    assert_eq!(r2["restored"]["restored_from"], r["digest"], "{r2}");
    assert_eq!(
        r2["digest"]["digest"], r["digest"],
        "a round trip keeps the digest\nbefore: {}\nafter: {}",
        r["canonical"], r2["digest"]["canonical"]
    );
    assert_eq!(r2["restored"]["messages"], 3);
    assert_eq!(r2["restored"]["missing_env"], json!({}));
    assert_eq!(r2["again"], "WORKSPACE_NOT_EMPTY");
    let names: Vec<&str> = r2["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["agent_id"].as_str())
        .collect();
    assert!(names.contains(&"alpha") && names.contains(&"beta"), "{r2}");
    // The agent runs again, with the environment given at restore.
    assert!(
        r2["alpha_lines"]
            .to_string()
            .contains(&format!("restored-{secret}-ok")),
        "{r2}"
    );
    assert_eq!(r2["alpha_meta"]["meta"]["description"], "the lead");
    let (_, inbox) = b.get("/v1/inbox/alpha", &Cred::Key).await;
    let bodies: Vec<&str> = inbox["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["body"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(bodies, vec!["task 0", "task 1", "task 2"], "{inbox}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_others_are_served() {
    let roots = tempfile::Builder::new()
        .prefix("stalled-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::write(roots.path().join("big.bin"), vec![7u8; 2 << 20]).unwrap();
    let d = Daemon::start_with(&format!(
        "[app_api]\nout_queue_bytes = 65536\nwrite_deadline_s = 2\nping_interval_s = 60\n\
         [[files.roots]]\nname = \"big\"\npath = \"{}\"\n",
        roots.path().display()
    ));
    let mut child = std::process::Command::new(common::python())
        .arg(format!(
            "{}/tests/python/app_api_meta.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(d.app_api_args("stalled", &["--hold", "30"]))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stats = async || d.get("/v1/stats", &Cred::Key).await.1;
    common::eventually("the stalled client's socket", 20, async || {
        (stats().await["app_api_connections"] == 1).then_some(())
    })
    .await;
    // Another client is served while that one stalls ...
    let r = scenario(&d, "getvar", &[]).await;
    assert_eq!(r["name"], "mailbox.max_body_bytes", "{r}");
    // ... and the daemon closes the stalled one after its write deadline.
    common::eventually("the stalled socket closed by the daemon", 20, async || {
        (stats().await["app_api_connections"] == 0).then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn subscriptions_per_socket_and_settings_together_are_bounded() {
    let d = Daemon::start();
    let r = scenario(&d, "limits", &[]).await;
    assert_eq!(r["subs_ok"], 256, "{r}");
    assert_eq!(r["subs_refused"], json!(["TOO_MANY_SUBSCRIPTIONS"]));
    assert_eq!(r["after_unsub"], "ok");
    assert_eq!(r["ttl_over_max"]["code"], "INVALID_VALUE", "{r}");
    assert!(
        r["ttl_over_max"]["message"]
            .as_str()
            .unwrap()
            .contains("ttl"),
        "{r}"
    );
    assert_eq!(r["ttl_after"], false);
}
