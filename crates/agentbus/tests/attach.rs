//! `agentbus attach` in a real terminal (a PTY driven by the test): the
//! screen is repainted, keys reach the program, window-size changes
//! propagate, two attached terminals see the same pane, the detach key
//! leaves the program running, and a program's exit ends the attach.

mod common;
use common::{Cred, Daemon, eventually};
use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// A terminal running `agentbus attach`, read continuously.
struct Terminal {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn attach(d: &Daemon, name: &str, rows: u16, cols: u16, extra: &[&str]) -> Terminal {
        let mut args = vec!["attach", name];
        args.extend_from_slice(extra);
        Self::run(d, &args, rows, cols)
    }

    /// `agentbus <args>` (against `d`) in a new terminal of this size.
    fn run(d: &Daemon, args: &[&str], rows: u16, cols: u16) -> Terminal {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(common::bin());
        cmd.arg("--data-dir");
        cmd.arg(d.data_dir());
        cmd.args(args);
        cmd.env_remove("AGENTBUS_URL");
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let writer = pair.master.take_writer().unwrap();
        Terminal {
            master: pair.master,
            writer,
            child,
            screen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    async fn wait_for(&self, want: &str) {
        eventually(
            &format!("{want:?} on the attached terminal"),
            20,
            async || self.text().contains(want).then_some(()),
        )
        .await;
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.writer.write_all(keys).unwrap();
        self.writer.flush().unwrap();
    }

    async fn exit_code(&mut self) -> u32 {
        eventually("the attach command to end", 20, async || {
            self.child.try_wait().unwrap()
        })
        .await
        .exit_code()
    }
}

#[tokio::test]
async fn keys_output_resize_and_detach() {
    let d = Daemon::start();
    let script = "trap 'stty size' WINCH; echo hello-from-pane; while :; do read -r line && echo \"got:$line\"; done";
    d.open("alice", "shell", &["sh", "-c", script]).await;
    d.wait_output_line("alice", "hello-from-pane").await;

    let mut t = Terminal::attach(&d, "alice", 30, 100, &[]);
    // The first frame repaints what the pane already shows.
    t.wait_for("hello-from-pane").await;
    // The pane took the attaching terminal's size.
    eventually("the pane to be 30x100", 20, async || {
        let (_, s) = d.get("/v1/agents/alice", &Cred::Key).await;
        (s["rows"] == 30 && s["cols"] == 100).then_some(())
    })
    .await;

    // Keys reach the program; its answer comes back.
    t.type_keys(b"ping\r");
    t.wait_for("got:ping").await;

    // A window-size change propagates to the program.
    t.master
        .resize(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    t.wait_for("40 120").await;

    // The detach key returns the terminal; the program keeps running.
    t.type_keys(b"\x1d");
    assert_eq!(t.exit_code().await, 0);
    // The last bytes may still be in flight from the terminal.
    t.wait_for("detached from alice; it is still running").await;
    let (_, s) = d.get("/v1/agents/alice", &Cred::Key).await;
    assert_ne!(s["state"], "exited", "{s}");
    // And still answers.
    let (status, _) = d.jekt("alice", "after detach", &Cred::Key).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn two_terminals_see_the_same_pane_and_jekts_show_up() {
    let d = Daemon::start();
    d.open("bob", "generic", &["sh", "-c", "echo bob-ready; exec cat"])
        .await;
    d.wait_output_line("bob", "bob-ready").await;
    let mut one = Terminal::attach(&d, "bob", 24, 80, &[]);
    let two = Terminal::attach(&d, "bob", 24, 80, &["--detach-key", "ctrl-q"]);
    one.wait_for("bob-ready").await;
    two.wait_for("bob-ready").await;
    let (status, _) = d.jekt("bob", "seen by both", &Cred::Key).await;
    assert_eq!(status, 200);
    one.wait_for("seen by both").await;
    two.wait_for("seen by both").await;
    one.type_keys(b"typed-in-one\r");
    two.wait_for("typed-in-one").await;
    // Ctrl-] is an ordinary key for a terminal that chose Ctrl-Q.
    one.type_keys(b"\x1d");
    assert_eq!(one.exit_code().await, 0);
}

#[tokio::test]
async fn the_attach_ends_when_the_program_exits() {
    let d = Daemon::start();
    d.open(
        "brief",
        "raw",
        &["sh", "-c", "echo brief-ready; read -r x; exit 4"],
    )
    .await;
    d.wait_output_line("brief", "brief-ready").await;
    let mut t = Terminal::attach(&d, "brief", 24, 80, &[]);
    t.wait_for("brief-ready").await;
    t.type_keys(b"bye\r");
    assert_eq!(t.exit_code().await, 0);
    t.wait_for("brief exited: exit code 4").await;
}

#[tokio::test]
async fn attach_explains_what_is_wrong() {
    let d = Daemon::start();
    let out = d.cli(&["attach", "nobody"]);
    assert!(!out.status.success());
    // Without a terminal it says so before anything else.
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
    let mut t = Terminal::attach(&d, "nobody", 24, 80, &[]);
    assert_ne!(t.exit_code().await, 0);
    t.wait_for("agent not found: nobody").await;
}

#[tokio::test]
async fn run_opens_and_attaches_in_one_step() {
    let d = Daemon::start();
    let script = "echo solo-ready; read -r x; echo \"solo:$x\"; sleep 30";
    let mut t = Terminal::run(&d, &["run", "solo", "--", "sh", "-c", script], 24, 80);
    t.wait_for("solo-ready").await;
    t.type_keys(b"typed\r");
    t.wait_for("solo:typed").await;
    t.type_keys(b"\x1d");
    assert_eq!(t.exit_code().await, 0);
    let (_, s) = d.get("/v1/agents/solo", &Cred::Key).await;
    assert_ne!(s["state"], "exited", "detaching leaves it running: {s}");
}
