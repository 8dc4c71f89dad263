//! `agentbus setup claude|codex|gemini`: prints the registration, or
//! merges it into the client's config file, keeping what is there.

mod common;

use common::bin;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn setup(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("setup").args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn claude_write_merges_into_an_existing_mcp_json_and_leaves_it_0600() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".mcp.json");
    std::fs::write(
        &file,
        r#"{"mcpServers":{"github":{"command":"github-mcp","args":["--ro"]}},"other":true}"#,
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = setup(dir.path(), &["claude", "--write"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["mcpServers"]["github"]["command"], "github-mcp");
    assert_eq!(v["mcpServers"]["github"]["args"][0], "--ro");
    assert_eq!(v["other"], true);
    assert_eq!(
        v["mcpServers"]["agentbus"]["args"],
        serde_json::json!(["mcp"])
    );
    let command = v["mcpServers"]["agentbus"]["command"].as_str().unwrap();
    assert!(command.ends_with("agentbus"), "{command}");
    assert_eq!(mode(&file), 0o600);

    // Running it again changes nothing.
    let before = std::fs::read(&file).unwrap();
    assert!(
        setup(dir.path(), &["claude", "--write"], &[])
            .status
            .success()
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn claude_write_creates_the_file_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = setup(dir.path(), &["claude", "--write", "--channel"], &[]);
    assert!(out.status.success());
    let file = dir.path().join(".mcp.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        v["mcpServers"]["agentbus"]["args"],
        serde_json::json!(["mcp", "--channel"])
    );
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn codex_write_keeps_comments_and_servers_of_config_toml() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config.toml");
    std::fs::write(
        &file,
        "# mine\nmodel = \"o4\"\n\n[mcp_servers.docs]\ncommand = \"docs\"\n",
    )
    .unwrap();
    let out = setup(
        home.path(),
        &["codex", "--write"],
        &[("CODEX_HOME", home.path().to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# mine\nmodel = \"o4\""), "{text}");
    assert!(
        text.contains("[mcp_servers.docs]\ncommand = \"docs\""),
        "{text}"
    );
    assert!(text.contains("[mcp_servers.agentbus]"), "{text}");
    assert!(
        text.contains(
            r#"env_vars = ["AGENTBUS_URL", "AGENTBUS_AGENT_ID", "AGENTBUS_AGENT_TOKEN"]"#
        ),
        "{text}"
    );
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn without_write_it_prints_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = setup(dir.path(), &["gemini"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".gemini/settings.json"), "{text}");
    assert!(
        text.contains(r#""AGENTBUS_AGENT_TOKEN": "$AGENTBUS_AGENT_TOKEN""#),
        "{text}"
    );
    assert!(!dir.path().join(".gemini").exists());

    let out = setup(dir.path(), &["claude"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("claude mcp add agentbus -- "), "{text}");
    assert!(!dir.path().join(".mcp.json").exists());
}

#[test]
fn a_file_it_cannot_merge_into_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".mcp.json");
    std::fs::write(&file, "{ not json").unwrap();
    let out = setup(dir.path(), &["claude", "--write"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not valid JSON"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ not json");
}
