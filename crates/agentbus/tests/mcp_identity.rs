//! `agentbus mcp` in a pane acts only as the agent its credential
//! proves: a token the daemon refuses stops it before the MCP handshake
//! (the agent CLI shows the server as failed), and it exits once its pane
//! has ended, so none is left acting for nobody.

mod common;

use common::{Cred, Daemon, bin};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

/// `agentbus mcp` as a pane would start it, its handshake sent; stdin is
/// kept open, as an agent CLI keeps it.
fn start(d: &Daemon, agent: &str, token: &str) -> (Child, ChildStdin) {
    let mut child = Command::new(bin())
        .arg("mcp")
        .env("AGENTBUS_URL", &d.url)
        .env("AGENTBUS_AGENT_ID", agent)
        .env("AGENTBUS_AGENT_TOKEN", token)
        .env_remove("AGENTBUS_AUTH_KEY")
        .env_remove("AGENTBUS_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // It may have exited already: a broken pipe is an answer too.
    let _ = writeln!(stdin, "{INITIALIZE}");
    (child, stdin)
}

fn wait_exit(child: &mut Child, secs: u64) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn credentials_the_daemon_refuses_stop_it_before_the_handshake() {
    let d = Daemon::start();
    let a = d.open("a", "generic", &["sleep", "60"]).await;
    let b = d.open("b", "generic", &["sleep", "60"]).await;
    let revoked = d.own_token("a", &a).await;
    let current = d.own_token("a", &a).await;
    let bs = d.own_token("b", &b).await;
    for (token, what) in [
        ("not-a-token", "a made-up token"),
        (
            revoked.as_str(),
            "a token revoked when the name was bound again",
        ),
        (bs.as_str(), "another agent's token"),
    ] {
        let (mut child, _stdin) = start(&d, "a", token);
        let status = wait_exit(&mut child, 15).unwrap_or_else(|| panic!("{what}: still serving"));
        assert!(!status.success(), "{what}: {status}");
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(out.is_empty(), "{what}: answered the handshake: {out}");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("will not start") && err.contains("agent a"),
            "{what}: {err}"
        );
        assert!(
            !err.contains(token),
            "{what}: the token is in the error: {err}"
        );
    }
    // The pane's current token serves.
    let (mut child, _stdin) = start(&d, "a", &current);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"result\""), "{line}");
    let _ = child.kill();
}

#[tokio::test]
async fn the_server_exits_once_its_pane_has_ended() {
    let d = Daemon::start();
    let a = d.open("a", "generic", &["sleep", "60"]).await;
    let token = d.own_token("a", &a).await;
    let (mut child, _stdin) = start(&d, "a", &token);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"result\""), "{line}");
    assert!(
        wait_exit(&mut child, 3).is_none(),
        "it serves while the pane runs"
    );
    let (status, _) = d
        .post("/v1/agents/a/stop", &json!({"force": true}), &Cred::Key)
        .await;
    assert_eq!(status, 200);
    assert!(
        wait_exit(&mut child, 15).is_some(),
        "agentbus mcp outlived its pane"
    );
}
