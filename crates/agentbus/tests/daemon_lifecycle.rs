//! The daemon's life: the URL on the first stdout line, private files with
//! the right modes, one daemon per data dir, open health and version
//! routes, and a graceful shutdown that hangs up panes and removes the
//! discovery file.

mod common;
use common::{Cred, Daemon};
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn files_are_private_and_an_existing_dir_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_in(dir, None);
    let p = d.data_dir();
    assert_eq!(mode(p), 0o700, "data dir");
    assert_eq!(mode(&p.join("authkey")), 0o600);
    assert_eq!(mode(&p.join("daemon.json")), 0o600);
    assert_eq!(mode(&p.join("agentbus.db")), 0o600);
    assert_eq!(mode(&p.join("registry")), 0o700);
    let key = std::fs::read_to_string(p.join("authkey")).unwrap();
    assert_eq!(key.trim().len(), 64, "256-bit key, hex");
    let disc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("daemon.json")).unwrap()).unwrap();
    assert_eq!(disc["url"], d.url.as_str());
    assert_eq!(disc["pid"], d.pid());
    assert!(disc["started_at"].as_i64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn a_new_key_at_every_launch() {
    let mut d = Daemon::start();
    let first = d.key.clone();
    d.kill9();
    d.restart();
    assert_ne!(d.key, first);
    assert_eq!(
        d.get("/v1/agents", &Cred::Header("x-authkey", first))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn a_second_daemon_on_the_same_dir_refuses_to_start() {
    let d = Daemon::start();
    let out = std::process::Command::new(common::bin())
        .args(["daemon", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using"), "{err}");
    assert!(
        err.contains(&d.pid().to_string()),
        "names the running daemon: {err}"
    );
    assert!(out.stdout.is_empty(), "printed no URL");
    // The first daemon is unharmed.
    assert_eq!(d.get("/healthz", &Cred::None).await.0, 200);
}

#[tokio::test]
async fn health_and_version_are_open() {
    let d = Daemon::start();
    let (s, b) = d.get("/healthz", &Cred::None).await;
    assert_eq!((s, b["ok"].as_bool()), (200, Some(true)));
    let (s, b) = d.get("/version", &Cred::None).await;
    assert_eq!(s, 200);
    assert_eq!(b["name"], "agentbus");
    assert_eq!(b["api"], "v1");
}

#[tokio::test]
async fn sigterm_hangs_up_panes_and_removes_the_discovery_file() {
    let mut d = Daemon::start();
    let marker = d.data_dir().join("hup.txt");
    let script = format!(
        "trap 'echo got-hup > {}; exit 0' HUP; echo up; while :; do sleep 0.1; done",
        marker.display()
    );
    d.open("worker", "shell", &["sh", "-c", &script]).await;
    d.wait_output_line("worker", "up").await;
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "got-hup");
    assert!(!d.data_dir().join("daemon.json").exists());
    assert!(!d.data_dir().join("authkey").exists());
    // The database was closed cleanly: the WAL is checkpointed away.
    let wal = d.data_dir().join("agentbus.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    // The pane's exit during shutdown made it into the audit log before
    // the database closed.
    d.restart();
    let (_, audit) = d.get("/v1/audit?kind=exit", &Cred::Key).await;
    let exits = audit["entries"].as_array().unwrap();
    assert!(
        exits
            .iter()
            .any(|e| e["target"] == "worker"
                && e["detail"].as_str().unwrap().contains("exit_code=0")),
        "{audit}"
    );
}

#[tokio::test]
async fn an_in_flight_request_finishes_during_shutdown() {
    let mut d = Daemon::start_with("[jekt]\nidle_quiet_ms = 1500\n");
    let sink = d.open_sink("alice", "generic", true).await;
    // This jekt waits for the pane to be idle, so it is in flight when
    // SIGTERM arrives; it must still be delivered and answered.
    let req = serde_json::json!({"target_agent": "alice", "message": "late", "wait_for_idle": 10});
    let url = format!("{}/agentmux/reactive/inject", d.url);
    let key = d.key.clone();
    let call = tokio::spawn(async move {
        agentbus_daemon::tls::default_client()
            .post(url)
            .header("x-authkey", key)
            .json(&req)
            .send()
            .await
    });
    common::eventually("the jekt in flight", 20, async || {
        let (_, stats) = d.get("/v1/stats", &Cred::Key).await;
        (stats["jekts_in_flight"] == 1).then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let resp = call.await.unwrap().expect("answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(common::count(&sink.bytes(), b"late"), 1);
    let status = d.wait_exit();
    assert!(
        status.success(),
        "the first SIGTERM ends the daemon cleanly: {status:?}"
    );
}

#[tokio::test]
async fn the_cli_finds_the_daemon_and_says_when_there_is_none() {
    let d = Daemon::start();
    let out = d.cli(&["ls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("--data-dir")
        .arg(empty.path())
        .arg("ls")
        .env_remove("AGENTBUS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agentbus daemon is running"));
}
