//! Hosting programs in panes through the CLI: open (with env and cwd),
//! ls, status, output (parsed text), resize, stop (graceful, escalating,
//! forced; exit codes kept), and binding more names to a pane.

mod common;
use common::{Cred, Daemon, eventually};
use serde_json::json;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn state(d: &Daemon, name: &str) -> serde_json::Value {
    d.get(&format!("/v1/agents/{name}"), &Cred::Key).await.1
}

#[tokio::test]
async fn open_with_env_and_cwd_then_list_status_and_output() {
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().canonicalize().unwrap();
    let out = d.cli(&[
        "open",
        "alice",
        "--provider",
        "raw",
        "--env",
        "GREETING=hello there",
        "--cwd",
        cwd.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "pwd; echo \"$GREETING\"; sleep 30",
    ]);
    let block = stdout(&out).trim().to_string();
    assert!(
        agentbus_proto::BlockId::parse(&block).is_ok(),
        "prints the block id: {block:?}"
    );
    d.wait_output_line("alice", "hello there").await;
    d.wait_output_line("alice", cwd.to_str().unwrap()).await;

    let ls = stdout(&d.cli(&["ls"]));
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("alice") && l.contains("raw") && l.contains(&block)),
        "{ls}"
    );

    let status = stdout(&d.cli(&["status", "alice"]));
    assert!(status.contains(&format!("block:     {block}")), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&d.cli(&["status", "alice", "--json"]))).unwrap();
    assert_eq!(json["provider"], "raw");
    assert!(json["pid"].as_u64().unwrap() > 1);

    let text = stdout(&d.cli(&["output", "alice", "-n", "2"]));
    assert_eq!(text, format!("{}\nhello there\n", cwd.display()));

    // Opening again is idempotent.
    let again = d.cli(&["open", "alice", "--", "sh", "-c", "sleep 30"]);
    assert_eq!(stdout(&again).trim(), block);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already open"));
}

#[tokio::test]
async fn output_is_parsed_text_with_bounded_scrollback() {
    let d = Daemon::start_with("[panes]\nscrollback_lines = 100\nrows = 10\n");
    let script = "i=0; while [ $i -lt 500 ]; do printf '\\033[1;3%dmline %d\\033[0m\\n' $((i%7)) $i; i=$((i+1)); done; printf 'done\\n'; sleep 30";
    d.open("chatty", "raw", &["sh", "-c", script]).await;
    d.wait_output_line("chatty", "done").await;
    let (_, b) = d
        .get("/v1/agents/chatty/output?lines=100000", &Cred::Key)
        .await;
    let lines: Vec<&str> = b["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.len() <= 100 + 10,
        "scrollback is bounded: {}",
        lines.len()
    );
    assert!(lines.len() >= 100, "{}", lines.len());
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "no escape codes in parsed text"
    );
    assert_eq!(lines[lines.len() - 2], "line 499");
    let (_, b) = d.get("/v1/agents/chatty/output?lines=3", &Cred::Key).await;
    assert_eq!(b["lines"], json!(["line 498", "line 499", "done"]));
}

#[tokio::test]
async fn resize_reaches_the_program() {
    let d = Daemon::start();
    let script = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done";
    d.open("sized", "raw", &["sh", "-c", script]).await;
    d.wait_output_line("sized", "ready").await;
    let out = stdout(&d.cli(&["resize", "sized", "33", "101"]));
    assert!(out.contains("33x101"));
    d.wait_output_line("sized", "33 101").await;
    let s = state(&d, "sized").await;
    assert_eq!(
        (s["rows"].as_u64(), s["cols"].as_u64()),
        (Some(33), Some(101))
    );
}

#[tokio::test]
async fn stop_is_graceful_first_and_keeps_the_exit_code() {
    let d = Daemon::start_with("[panes]\nstop_grace_ms = 700\n");
    // A shell pane quits on SIGHUP, with the exit code it chooses.
    d.open(
        "polite",
        "shell",
        &[
            "sh",
            "-c",
            "trap 'exit 7' HUP; echo up; while :; do sleep 0.05; done",
        ],
    )
    .await;
    d.wait_output_line("polite", "up").await;
    let out = stdout(&d.cli(&["stop", "polite"]));
    assert!(out.contains("stopped by quit (exit code 7)"), "{out}");
    let s = state(&d, "polite").await;
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_i64()),
        (Some("exited"), Some(7))
    );

    // A program that ignores HUP and TERM is killed after the bounds.
    d.open(
        "stubborn",
        "shell",
        &[
            "sh",
            "-c",
            "trap '' HUP TERM; echo up; while :; do sleep 0.05; done",
        ],
    )
    .await;
    d.wait_output_line("stubborn", "up").await;
    let out = stdout(&d.cli(&["stop", "stubborn"]));
    assert!(out.contains("stopped by sigkill"), "{out}");
    let s = state(&d, "stubborn").await;
    assert_eq!(s["state"], "exited");
    assert!(s["exit_signal"].as_str().is_some(), "{s}");

    // --force skips the graceful steps.
    d.open("hurry", "generic", &["sh", "-c", "echo up; sleep 30"])
        .await;
    d.wait_output_line("hurry", "up").await;
    let out = stdout(&d.cli(&["stop", "hurry", "--force"]));
    assert!(out.contains("stopped by sigkill"), "{out}");

    // A program's own exit code is kept too, and shows in ls.
    d.open("quick", "raw", &["sh", "-c", "exit 3"]).await;
    eventually("quick to exit", 20, async || {
        (state(&d, "quick").await["state"] == "exited").then_some(())
    })
    .await;
    assert_eq!(state(&d, "quick").await["exit_code"], 3);
    let ls = stdout(&d.cli(&["ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("quick") && l.contains("exited(3)")),
        "{ls}"
    );

    // A stopped agent cannot take a jekt now: it is held for its return
    // (the hold has its own tests); re-opening the name starts anew.
    let (status, body) = d.jekt("quick", "hello?", &Cred::Key).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("held")),
        "{body}"
    );
    let first_block = state(&d, "quick").await["block_id"].clone();
    d.open("quick", "raw", &["sh", "-c", "sleep 30"]).await;
    assert_ne!(state(&d, "quick").await["block_id"], first_block);
}

#[tokio::test]
async fn more_names_for_a_pane_and_unregistering() {
    let d = Daemon::start();
    let sink = d.open_sink("alice", "generic", true).await;
    let block = state(&d, "alice").await["block_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = d.cli(&["register", "reviewer", "--block", &block]);
    let token = stdout(&out).trim().to_string();
    assert!(
        token.starts_with("abt_"),
        "the token alone on stdout: {token:?}"
    );
    let (s, _) = d.jekt("reviewer", "via the second name", &Cred::Key).await;
    assert_eq!(s, 200);
    sink.wait_submits(1).await;
    // A name held by a running pane cannot be taken by another.
    let (s, b) = d
        .post(
            "/agentmux/reactive/register",
            &json!({"agent_id": "alice"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("agent_exists")),
        "{b}"
    );
    // A block that does not exist.
    let (s, _) = d
        .post(
            "/agentmux/reactive/register",
            &json!({"agent_id": "x", "block_id": "00000000-0000-4000-8000-000000000000"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 404);
    // Dropping one name leaves the pane; dropping the last stops it.
    stdout(&d.cli(&["unregister", "alice"]));
    assert_eq!(state(&d, "reviewer").await["state"], "running");
    let pid = state(&d, "reviewer").await["pid"].as_i64().unwrap() as i32;
    stdout(&d.cli(&["unregister", "reviewer"]));
    eventually("the nameless pane to be stopped", 20, async || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .is_err()
            .then_some(())
    })
    .await;
    let (_, list) = d.get("/v1/agents", &Cred::Key).await;
    assert_eq!(list["agents"], json!([]));
}

#[tokio::test]
async fn an_external_agent_has_no_pane() {
    let d = Daemon::start();
    d.register("script").await;
    let s = state(&d, "script").await;
    assert_eq!(s["state"], "external");
    // With no pane to type into, a jekt waits in the hold.
    let (status, b) = d.jekt("script", "hi", &Cred::Key).await;
    assert_eq!((status, b["outcome"].as_str()), (200, Some("held")), "{b}");
    let (status, b) = d.get("/v1/agents/script/output", &Cred::Key).await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (409, Some("no_pane")),
        "{b}"
    );
}

#[tokio::test]
async fn a_program_that_prints_nothing_is_running_not_starting_forever() {
    let d = Daemon::start_with("[jekt]\nidle_quiet_ms = 300\n");
    d.open("quiet", "shell", &["sleep", "30"]).await;
    let first = state(&d, "quiet").await;
    assert_eq!(first["state"], "starting", "{first}");
    common::eventually("quiet is running", 10, async || {
        let s = state(&d, "quiet").await;
        (s["state"] == "running").then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(state(&d, "quiet").await["state"], "running");
}
