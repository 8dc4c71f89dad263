//! A pane's program gets no agentbus secret but its own token: not in its
//! environment (built from an allow-list), nor its argv, nor through the
//! daemon's own process (`/proc/<pid>/environ`, `mem`: the daemon is not
//! dumpable), nor in files around it (its directory, `$HOME`, `/tmp`).
//! The daemon runs as `nobody` here, so its panes do too and the kernel's
//! checks are real. The data dir and the registry dir are the user's own
//! private files (0700), like `~/.ssh`: a program running as that user
//! can read them, and they are left out of the scan (see the README's
//! security notes).

mod common;

use common::{Cred, Daemon, Relay, chown_to_nobody, eventually, is_root};
use serde_json::{Value, json};
use std::path::Path;

fn registry_tokens(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir.join("agents")).unwrap().flatten() {
        let v: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        out.push(v["forward_token"].as_str().unwrap().to_string());
    }
    out
}

fn metrics_token(d: &Daemon) -> String {
    let text = std::fs::read_to_string(d.data_dir().join("metrics.token")).unwrap();
    text.trim().to_string()
}

#[tokio::test]
async fn a_pane_sees_no_secret_of_the_daemon_but_its_own_token() {
    if !is_root() {
        eprintln!("skipped: needs root to run the daemon as nobody");
        return;
    }
    let relay = Relay::start(&["--auth"]);
    let relay_token = relay.token(&["create", "--instance", "laptop"]);
    let shared = tempfile::tempdir().unwrap();
    chown_to_nobody(shared.path());
    let registry = shared.path().join("registry");
    let registry_s = registry.display().to_string();
    let home_dir = shared.path().join("home");
    std::fs::create_dir(&home_dir).unwrap();
    chown_to_nobody(&home_dir);
    let home = home_dir.display().to_string();
    // Made now, so that no file the probe can read (this source, in a
    // checkout under /tmp) holds them.
    let fresh = |what: &str| format!("{what}-{}", agentbus_proto::MessageId::new());
    let decoy_key = fresh("decoy-instance-key");
    let unlisted = fresh("s3cret-not-on-any-list");
    let env = [
        ("HOME", home.as_str()),
        ("AGENTBUS_RELAY_URL", relay.url.as_str()),
        ("AGENTBUS_RELAY_TOKEN", relay_token.as_str()),
        // Set by the user for another tool: never a pane's business.
        ("AGENTBUS_AUTH_KEY", decoy_key.as_str()),
        ("UNLISTED_SECRET", unlisted.as_str()),
        // A listed name (LC_*) holding the relay token: dropped.
        ("LC_SMUGGLED", relay_token.as_str()),
        // Listed for Claude Code panes: passed.
        ("ANTHROPIC_API_KEY", "sk-ant-decoy-passed-on-purpose"),
    ];
    let a = Daemon::start_as_nobody(&env, &["--registry-dir", &registry_s]);
    let b = Daemon::start_as_nobody(&[("HOME", home.as_str())], &["--registry-dir", &registry_s]);
    // Agents on both, so both forward tokens are in the registry.
    let other = a.open("other", "shell", &["sh"]).await;
    b.open("far", "shell", &["sh"]).await;
    let other_token = a.own_token("other", &other).await;
    let minted = a.cli(&["token", "create", "--agent", "other", "--scope", "agent.*"]);
    assert!(minted.status.success(), "{minted:?}");
    let extra_token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let forward = eventually("both forward tokens in the registry", 20, async || {
        let t = registry_tokens(&registry);
        (t.len() >= 2).then_some(t)
    })
    .await;

    // The probe: a program in a Claude Code pane reading all it can.
    let work = tempfile::tempdir().unwrap();
    chown_to_nobody(work.path());
    let script = work.path().join("secrets.py");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe/secrets.py"),
        &script,
    )
    .unwrap();
    let report_path = work.path().join("report.json");
    let (status, body) = a
        .post(
            "/v1/agents",
            &json!({
                "agent_id": "probe",
                "provider": "claude",
                "command": ["python3", script, report_path, work.path(), "/tmp",
                    "--skip", a.data_dir(), b.data_dir(), registry],
                "cwd": work.path(),
            }),
            &Cred::Key,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    a.wait_output_line("probe", "probe done").await;
    let report = std::fs::read_to_string(&report_path).unwrap();
    let r: Value = serde_json::from_str(&report).unwrap();

    // Sanity: the probe ran in the pane, with its own token.
    let own = r["env"]["AGENTBUS_AGENT_TOKEN"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(own.starts_with("abt_"), "{}", r["env"]);
    assert_eq!(r["env"]["AGENTBUS_AGENT_ID"], "probe");
    assert_eq!(
        r["env"]["ANTHROPIC_API_KEY"],
        "sk-ant-decoy-passed-on-purpose"
    );
    assert!(r["env"].get("UNLISTED_SECRET").is_none());
    assert!(r["env"].get("LC_SMUGGLED").is_none());
    assert!(r["env"].get("AGENTBUS_RELAY_TOKEN").is_none());
    assert!(r["env"].get("AGENTBUS_AUTH_KEY").is_none());
    // The daemon's memory and environment are closed to it.
    let daemon = r["proc"][a.pid().to_string()].clone();
    assert_eq!(daemon["environ"], Value::Null, "{daemon}");
    assert_ne!(daemon["mem"], "opened", "{daemon}");

    let secrets: Vec<(&str, String)> = [
        ("instance key", a.key.clone()),
        ("other instance's key", b.key.clone()),
        ("relay token", relay_token.clone()),
        ("another agent's token", other_token),
        ("another agent's App API token", extra_token),
        ("a user variable never listed", unlisted.clone()),
        ("the daemon's AGENTBUS_AUTH_KEY", decoy_key.clone()),
        ("the metrics token", metrics_token(&a)),
    ]
    .into_iter()
    .chain(forward.into_iter().map(|t| ("a forward token", t)))
    .collect();
    for (what, secret) in &secrets {
        assert!(
            !report.contains(secret.as_str()),
            "the pane could read {what}: {}",
            &report[report.find(secret.as_str()).unwrap().saturating_sub(200)..]
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
    assert!(report.contains(&own));
}

#[tokio::test]
async fn a_request_cannot_put_a_credential_or_an_agentbus_variable_into_a_pane() {
    let d = Daemon::start();
    let token = d.register("ext").await;
    let metrics = metrics_token(&d);
    for (k, v) in [
        ("X", d.key.as_str()),
        ("Y", token.as_str()),
        ("Z", metrics.as_str()),
        ("AGENTBUS_RELAY_TOKEN", "x"),
        ("AGENTBUS_URL", "http://evil"),
    ] {
        let (status, body) = d
            .post(
                "/v1/agents",
                &json!({"agent_id": "p", "command": ["sh"], "env": {k: v}}),
                &Cred::Key,
            )
            .await;
        assert_eq!(status, 400, "{k}: {body}");
        assert_eq!(body["error"]["code"], "invalid_env");
        assert!(!body.to_string().contains(v) || v == "x", "{body}");
    }
}

#[tokio::test]
async fn a_config_cannot_list_agentbus_variables_or_everything() {
    for bad in [
        "[panes]\nenv_pass = [\"*\"]\n",
        "[panes]\nenv_pass = [\"AGENTBUS_*\"]\n",
        "[profiles.claude]\nenv_pass = [\"AGENTBUS_RELAY_TOKEN\"]\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, bad).unwrap();
        let out = std::process::Command::new(common::bin())
            .args(["config", "show", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("env_pass"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
