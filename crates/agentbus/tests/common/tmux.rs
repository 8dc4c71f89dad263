//! A tmux server of its own for a test, and running the tmux bridge
//! against it (shared by the bridge's and the tmux panes' tests).

use super::{Cred, Daemon, bin, eventually};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A tmux server of its own, with a private guard directory for the
/// bridge commands run against it.
pub struct Tmux {
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Tmux {
    /// A server with session `main` running `command` in pane %0.
    pub fn start(command: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock");
        std::fs::create_dir(dir.path().join("runtime")).unwrap();
        std::fs::set_permissions(
            dir.path().join("runtime"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let t = Tmux { dir, socket };
        t.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            "120",
            "-y",
            "30",
            command,
        ]);
        t
    }

    pub fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    pub fn runtime(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// Runs tmux on this server; its stdout.
    pub fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Opens a window running `command`; its pane id.
    pub fn window(&self, command: &str) -> String {
        self.tmux(&[
            "new-window",
            "-d",
            "-t",
            "main",
            "-P",
            "-F",
            "#{pane_id}",
            command,
        ])
        .trim()
        .to_string()
    }

    pub fn pane_pid(&self, pane: &str) -> u32 {
        self.tmux(&["display-message", "-p", "-t", pane, "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap()
    }

    /// `agentbus tmux args...` against this server.
    pub fn bridge(&self, args: &[&str]) -> Output {
        self.bridge_env(args, &[])
    }

    pub fn bridge_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        bridge_with(
            args,
            &[
                ("TMUX_BRIDGE_SOCKET", self.sock()),
                ("XDG_RUNTIME_DIR", self.runtime().to_str().unwrap()),
            ],
            env,
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs the bridge with none of the caller's tmux environment, then `base`
/// and `env` set.
pub fn bridge_with(args: &[&str], base: &[(&str, &str)], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--data-dir")
        .arg(data.path())
        .arg("tmux")
        .args(args);
    for k in [
        "TMUX",
        "TMUX_PANE",
        "TMUX_BRIDGE_SOCKET",
        "TMUX_TMPDIR",
        "AGENTBUS_TMUX_GUARD_TTL_S",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in base.iter().chain(env) {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Succeeded; its stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    stdout(&succeeded(o))
}

#[track_caller]
pub fn succeeded(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}{}", stdout(&o), stderr(&o));
    o
}

/// Waits until the daemon no longer knows `name`.
pub async fn wait_unregistered(d: &Daemon, name: &str) {
    let path = format!("/v1/agents/{name}");
    eventually(&format!("{name} unregistered"), 20, async || {
        let (status, _) = d.get(&path, &Cred::Key).await;
        (status == 404).then_some(())
    })
    .await;
}

/// Waits until a sink has read a whole bracketed paste; what it read.
pub async fn wait_paste(sink: &Path) -> Vec<u8> {
    eventually("a bracketed paste", 20, async || {
        let b = std::fs::read(sink).unwrap_or_default();
        b.ends_with(b"\x1b[201~").then_some(b)
    })
    .await
}

/// Fails with exit 1 and `error: ...` on stderr holding `needle`.
#[track_caller]
pub fn refused(o: Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

/// Waits until `pane` shows a line equal to `line`.
pub async fn wait_screen(t: &Tmux, pane: &str, line: &str) {
    eventually(&format!("{line:?} in {pane}"), 20, async || {
        t.tmux(&["capture-pane", "-p", "-t", pane])
            .lines()
            .any(|l| l.trim_end() == line)
            .then_some(())
    })
    .await;
}

pub const SHELL: &str = "sh";
