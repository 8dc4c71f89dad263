//! One pane: a program in a PTY of our own and the threads that serve it,
//! or an existing tmux pane adopted as an agent's terminal (see
//! [`Pane::adopt_tmux`]). Callers see one type either way.

use crate::TermError;
use crate::backlog::{Backlog, Item};
use crate::modes::{ModeScanner, Modes};
use crate::profile::Profile;
use crate::screen::Screen;
use crate::tmux::{PaneRef, TmuxError};
use agentbus_proto::now_ms;
use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot, watch};

const READ_BUF: usize = 64 * 1024;
const OUTPUT_CHANNEL: usize = 1024;
const BRACKET_OPEN: &[u8] = b"\x1b[200~";
const BRACKET_CLOSE: &[u8] = b"\x1b[201~";

/// What to run and how.
#[derive(Debug, Clone)]
pub struct PaneSpec {
    /// Short name for thread names and logs.
    pub label: String,
    pub command: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The program's whole environment: nothing of the calling process's
    /// own is inherited (`TERM` is set unless this sets it).
    pub env: Vec<(String, String)>,
    pub rows: u16,
    pub cols: u16,
    pub scrollback_lines: usize,
    pub profile: Profile,
    /// How long a write may wait for the program to read its input.
    pub input_timeout: Duration,
    /// Unparsed output the parser may fall behind by before the oldest is
    /// dropped (see the backlog module).
    pub max_parse_backlog: usize,
}

impl PaneSpec {
    /// A spec with the default size and limits, whose environment holds
    /// only this process's `PATH`.
    pub fn new(label: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            label: label.into(),
            command,
            cwd: None,
            env: std::env::var("PATH")
                .map(|p| vec![("PATH".to_string(), p)])
                .unwrap_or_default(),
            rows: 24,
            cols: 80,
            scrollback_lines: 10_000,
            profile: Profile::builtin(agentbus_proto::api::Provider::Raw),
            input_timeout: Duration::from_secs(10),
            max_parse_backlog: 4 << 20,
        }
    }
}

/// Output as seen by attached terminals.
#[derive(Debug, Clone)]
pub enum PaneOutput {
    /// Bytes the program wrote, in order.
    Bytes(Bytes),
    /// Output was skipped (a flood); repaint from the screen.
    Resync,
}

/// How the pane's program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Name of the signal that ended it, when one did.
    pub signal: Option<String>,
    pub at_ms: i64,
    /// Why the pane ended when it is not the program's own exit (a tmux
    /// pane closed or respawned, or let go).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasteReport {
    /// Sent inside `ESC[200~` ... `ESC[201~`.
    pub bracketed: bool,
    /// Bytes written, framing included, submit key excluded.
    pub bytes: usize,
    /// Whether a submit key followed.
    pub submitted: bool,
}

/// Which step of [`Pane::stop`] ended the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    AlreadyExited,
    Quit,
    Sigterm,
    Sigkill,
    /// A tmux pane let go: agentbus stopped using it; its program runs on.
    Released,
}

impl StopStep {
    pub fn as_str(self) -> &'static str {
        match self {
            StopStep::AlreadyExited => "exited",
            StopStep::Quit => "quit",
            StopStep::Sigterm => "sigterm",
            StopStep::Sigkill => "sigkill",
            StopStep::Released => "released",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StopReport {
    pub step: StopStep,
    /// `None` only if even SIGKILL did not end it within the bound.
    pub exit: Option<ExitInfo>,
}

/// Byte counts of the output path.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputStats {
    pub absorbed: u64,
    pub skipped: u64,
}

struct WriteJob {
    bytes: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// Cheap-clone handle to a running (or finished) pane.
#[derive(Clone)]
pub struct Pane {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    pid: Option<u32>,
    profile: Profile,
    started_ms: i64,
    modes: Arc<Modes>,
    output: broadcast::Sender<PaneOutput>,
    io: Io,
    // An async mutex on purpose: it is held across the awaits of one input
    // sequence (paste, settle, submit) so that no other input, from a jekt
    // or an attached human, lands in the middle of it.
    input_lock: tokio::sync::Mutex<()>,
    input_timeout: Duration,
    last_output_ms: Arc<AtomicI64>,
    stats: Arc<(AtomicU64, AtomicU64)>,
    exit: watch::Receiver<Option<ExitInfo>>,
    size: Arc<Mutex<(u16, u16)>>,
}

/// Where the pane's input goes and its text comes from.
enum Io {
    /// A PTY of our own.
    Pty {
        // A std mutex: held only to parse one chunk or to read lines,
        // never across an await.
        screen: Arc<Mutex<Screen>>,
        input: mpsc::Sender<WriteJob>,
        // MasterPty is Send but not Sync; resize needs it.
        master: Mutex<Box<dyn MasterPty + Send>>,
    },
    /// A pane of a tmux server: input by tmux commands, text by
    /// `capture-pane`, exit seen by the watcher thread.
    Tmux {
        pane: PaneRef,
        exit: Arc<watch::Sender<Option<ExitInfo>>>,
    },
}

/// How to adopt a tmux pane.
#[derive(Debug, Clone)]
pub struct TmuxSpec {
    pub label: String,
    pub pane: PaneRef,
    pub profile: Profile,
    pub input_timeout: Duration,
    /// How often the watcher looks at the pane (liveness and activity).
    pub poll: Duration,
}

fn check_size(rows: u16, cols: u16) -> Result<(), TermError> {
    if (1..=1000).contains(&rows) && (1..=1000).contains(&cols) {
        Ok(())
    } else {
        Err(TermError::BadSize { rows, cols })
    }
}

fn pty_err(e: impl std::fmt::Display) -> TermError {
    TermError::Pty(e.to_string())
}

/// What stands for a line break in a jekt typed as one line.
pub const LINE_BREAK: &str = " \u{23CE} ";

/// `text` as one line: each line break becomes [`LINE_BREAK`] and each tab
/// a space (a tab completes in a shell's line editor).
pub fn one_line(text: &str) -> String {
    text.trim_end_matches('\n')
        .replace('\n', LINE_BREAK)
        .replace('\t', " ")
}

/// Whether `text` may be pasted: printable characters, `\n` and `\t` only.
/// Jekt text is sanitized long before it gets here; this is the last line
/// of defence against a bug upstream ending a bracketed paste early.
fn paste_safe(text: &str) -> bool {
    text.chars().all(agentbus_proto::jekt::is_allowed_in_body)
}

impl Pane {
    /// Starts `spec.command` in a new PTY.
    pub fn spawn(spec: PaneSpec) -> Result<Pane, TermError> {
        check_size(spec.rows, spec.cols)?;
        let program = spec
            .command
            .first()
            .cloned()
            .ok_or_else(|| TermError::Spawn {
                program: String::new(),
                reason: "the command is empty".into(),
            })?;
        if let Some(cwd) = &spec.cwd
            && !cwd.is_dir()
        {
            return Err(TermError::BadCwd(cwd.display().to_string()));
        }
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: spec.rows,
                cols: spec.cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(pty_err)?;
        let mut cmd = CommandBuilder::new(&program);
        cmd.args(&spec.command[1..]);
        if let Some(cwd) = &spec.cwd {
            cmd.cwd(cwd);
        }
        // Only what the caller listed: the daemon's own environment may
        // hold secrets no pane should see.
        cmd.env_clear();
        // The pane emulates an xterm; say so unless the caller chose.
        cmd.env("TERM", "xterm-256color");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = pair
            .slave
            .spawn_command(cmd)
            .map_err(|e| TermError::Spawn {
                program: program.clone(),
                reason: e.to_string(),
            })?;
        drop(pair.slave);
        let pid = child.process_id();
        let reader = pair.master.try_clone_reader().map_err(pty_err)?;
        let writer = pair.master.take_writer().map_err(pty_err)?;

        let modes = Arc::new(Modes::default());
        let screen = Arc::new(Mutex::new(Screen::new(
            spec.rows,
            spec.cols,
            spec.scrollback_lines,
        )));
        let backlog = Arc::new(Backlog::new(spec.max_parse_backlog));
        let last_output_ms = Arc::new(AtomicI64::new(0));
        let stats = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let parsed_all = Arc::new(AtomicBool::new(false));
        let (output, _) = broadcast::channel(OUTPUT_CHANNEL);
        let (input, input_rx) = mpsc::channel::<WriteJob>();
        let (exit_tx, exit_rx) = watch::channel(None);
        let label = spec.label.clone();

        let spawn = |role: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("pane-{role}-{label}"))
                .spawn(f)
                .map(|_| ())
                .map_err(pty_err)
        };
        spawn("read", {
            let (modes, backlog, last, stats) = (
                modes.clone(),
                backlog.clone(),
                last_output_ms.clone(),
                stats.clone(),
            );
            Box::new(move || read_loop(reader, &modes, &backlog, &last, &stats))
        })?;
        spawn("parse", {
            let (screen, backlog, output, stats, done) = (
                screen.clone(),
                backlog.clone(),
                output.clone(),
                stats.clone(),
                parsed_all.clone(),
            );
            Box::new(move || parse_loop(&screen, &backlog, &output, &stats, &done))
        })?;
        spawn("write", Box::new(move || write_loop(writer, input_rx)))?;
        spawn(
            "wait",
            Box::new(move || {
                let status = child.wait();
                // Let the parser take in the program's last words before
                // the exit is announced, but never wait on a grandchild
                // that keeps the terminal open.
                let deadline = Instant::now() + Duration::from_secs(1);
                while !parsed_all.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let info = match status {
                    Ok(s) => match s.signal() {
                        Some(sig) => ExitInfo {
                            code: None,
                            signal: Some(sig.to_string()),
                            at_ms: now_ms(),
                            reason: None,
                        },
                        None => ExitInfo {
                            code: Some(s.exit_code() as i32),
                            signal: None,
                            at_ms: now_ms(),
                            reason: None,
                        },
                    },
                    Err(e) => ExitInfo {
                        code: None,
                        signal: Some(format!("unknown ({e})")),
                        at_ms: now_ms(),
                        reason: None,
                    },
                };
                let _ = exit_tx.send(Some(info));
            }),
        )?;

        Ok(Pane {
            inner: Arc::new(Inner {
                label: spec.label,
                pid,
                profile: spec.profile,
                started_ms: now_ms(),
                modes,
                output,
                io: Io::Pty {
                    screen,
                    input,
                    master: Mutex::new(pair.master),
                },
                input_lock: tokio::sync::Mutex::new(()),
                input_timeout: spec.input_timeout,
                last_output_ms,
                stats,
                exit: exit_rx,
                size: Arc::new(Mutex::new((spec.rows, spec.cols))),
            }),
        })
    }

    /// Takes an existing tmux pane as this pane's terminal; `info` is the
    /// pane as just read ([`crate::tmux::Server::pane`]). Fails if it is
    /// not `spec.pane`, is dead, or runs another program than
    /// `spec.pane.pid`. Nothing is started; a watcher thread follows the
    /// pane until it closes, is respawned, or is let go ([`Pane::stop`]).
    pub fn adopt_tmux(spec: TmuxSpec, info: &crate::tmux::PaneInfo) -> Result<Pane, TermError> {
        let PaneRef { id, pid, .. } = &spec.pane;
        if info.id != *id {
            return Err(TermError::Tmux(format!(
                "{id} is not a pane id (it names {})",
                info.id
            )));
        }
        if info.pid != *pid {
            return Err(TermError::Tmux(format!(
                "tmux pane {id} now runs pid {}, not {pid}: it was replaced",
                info.pid
            )));
        }
        if info.dead {
            return Err(TermError::Tmux(format!(
                "tmux pane {id}'s program has exited"
            )));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let exit_tx = Arc::new(exit_tx);
        let (output, _) = broadcast::channel(OUTPUT_CHANNEL);
        let size = Arc::new(Mutex::new((info.height, info.width)));
        let last_output_ms = Arc::new(AtomicI64::new(0));
        let watcher = TmuxWatcher {
            pane: spec.pane.clone(),
            exit: exit_tx.clone(),
            output: output.clone(),
            size: size.clone(),
            last_output_ms: last_output_ms.clone(),
            poll: spec.poll,
        };
        std::thread::Builder::new()
            .name(format!("pane-tmux-{}", spec.label))
            .spawn(move || watcher.run())
            .map_err(pty_err)?;
        Ok(Pane {
            inner: Arc::new(Inner {
                label: spec.label,
                pid: Some(*pid),
                profile: spec.profile,
                started_ms: now_ms(),
                modes: Arc::new(Modes::default()),
                output,
                io: Io::Tmux {
                    pane: spec.pane,
                    exit: exit_tx,
                },
                input_lock: tokio::sync::Mutex::new(()),
                input_timeout: spec.input_timeout,
                last_output_ms,
                stats: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
                exit: exit_rx,
                size,
            }),
        })
    }

    /// The terminal's foreground process group (a PTY of our own).
    pub fn foreground_group(&self) -> Option<u32> {
        match &self.inner.io {
            Io::Pty { master, .. } => master
                .lock()
                .ok()?
                .process_group_leader()
                .and_then(|g| u32::try_from(g).ok()),
            Io::Tmux { .. } => None,
        }
    }

    /// The name of the program in the terminal's foreground: for a tmux
    /// pane, as tmux tells it; for a PTY of our own, the leader of its
    /// foreground process group. `None` if it cannot be told.
    pub async fn foreground_program(&self) -> Option<String> {
        match &self.inner.io {
            Io::Pty { .. } => {
                let pid = self.foreground_group()?;
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                Some(comm.trim().to_string())
            }
            Io::Tmux { pane, .. } => {
                let p = pane.clone();
                let info = tokio::task::spawn_blocking(move || p.server.pane(&p.id))
                    .await
                    .ok()?
                    .ok()?;
                Some(info.command)
            }
        }
    }

    /// The tmux pane this pane is, if it is one.
    pub fn tmux(&self) -> Option<&PaneRef> {
        match &self.inner.io {
            Io::Tmux { pane, .. } => Some(pane),
            Io::Pty { .. } => None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.pid
    }

    pub fn profile(&self) -> &Profile {
        &self.inner.profile
    }

    pub fn modes(&self) -> &Modes {
        &self.inner.modes
    }

    pub fn size(&self) -> (u16, u16) {
        self.inner.size.lock().map(|s| *s).unwrap_or((0, 0))
    }

    /// How the program ended, or `None` while it runs.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        self.inner.exit.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        self.exit_info().is_none()
    }

    /// Resolves when the program has exited.
    pub async fn exited(&self) -> ExitInfo {
        let mut rx = self.inner.exit.clone();
        loop {
            if let Some(info) = rx.borrow_and_update().clone() {
                return info;
            }
            if rx.changed().await.is_err() {
                return self.exit_info().unwrap_or(ExitInfo {
                    code: None,
                    signal: Some("unknown".into()),
                    at_ms: now_ms(),
                    reason: None,
                });
            }
        }
    }

    async fn wait_exit(&self, bound: Duration) -> Option<ExitInfo> {
        tokio::time::timeout(bound, self.exited()).await.ok()
    }

    /// Unix ms of the last output, `None` before the first.
    pub fn last_output_ms(&self) -> Option<i64> {
        match self.inner.last_output_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub fn stats(&self) -> OutputStats {
        OutputStats {
            absorbed: self.inner.stats.0.load(Ordering::Relaxed),
            skipped: self.inner.stats.1.load(Ordering::Relaxed),
        }
    }

    /// The last `n` lines of parsed text (scrollback, then screen).
    pub fn lines(&self, n: usize) -> Vec<String> {
        self.numbered_lines(n, None).1
    }

    /// Numbered lines of text (see `Screen::numbered_lines`). A tmux
    /// pane's lines are numbered from the oldest line tmux still keeps.
    pub fn numbered_lines(&self, n: usize, after: Option<u64>) -> (u64, Vec<String>) {
        match &self.inner.io {
            Io::Pty { screen, .. } => screen
                .lock()
                .map(|s| s.numbered_lines(n, after))
                .unwrap_or((1, Vec::new())),
            Io::Tmux { pane, .. } => {
                // Without `after`, only the end is wanted: capture no more.
                let history = after.is_none().then_some(n as u64);
                let text = pane
                    .server
                    .capture(&pane.id, history, false)
                    .unwrap_or_default();
                crate::screen::select_numbered(text_lines(&text), 1, n, after)
            }
        }
    }

    /// Told of every chunk of output (and of skips), from now on.
    pub fn subscribe_output(&self) -> broadcast::Receiver<PaneOutput> {
        self.inner.output.subscribe()
    }

    /// A repaint of the current screen and a subscription to everything
    /// written after it, taken together so nothing falls between them.
    pub fn attach(&self) -> (Vec<u8>, broadcast::Receiver<PaneOutput>) {
        match &self.inner.io {
            Io::Pty { screen, .. } => match screen.lock() {
                Ok(s) => (s.repaint(), self.inner.output.subscribe()),
                Err(_) => (Vec::new(), self.inner.output.subscribe()),
            },
            // A tmux pane tells of changes as `Resync`: a repaint each.
            Io::Tmux { .. } => {
                let rx = self.inner.output.subscribe();
                (self.repaint(), rx)
            }
        }
    }

    /// The current screen as repaint escape codes.
    pub fn repaint(&self) -> Vec<u8> {
        match &self.inner.io {
            Io::Pty { screen, .. } => screen.lock().map(|s| s.repaint()).unwrap_or_default(),
            Io::Tmux { pane, .. } => {
                let text = pane
                    .server
                    .capture(&pane.id, Some(0), true)
                    .unwrap_or_default();
                let mut out = b"\x1b[H\x1b[2J".to_vec();
                out.extend_from_slice(text.trim_end_matches('\n').replace('\n', "\r\n").as_bytes());
                out
            }
        }
    }

    /// Resizes a hosted pane. A tmux pane's size belongs to tmux.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), TermError> {
        check_size(rows, cols)?;
        let (screen, master) = match &self.inner.io {
            Io::Pty { screen, master, .. } => (screen, master),
            Io::Tmux { pane, .. } => {
                return Err(TermError::Tmux(format!(
                    "tmux pane {} is sized by tmux; resize it there",
                    pane.id
                )));
            }
        };
        master
            .lock()
            .map_err(pty_err)?
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(pty_err)?;
        if let Ok(mut s) = screen.lock() {
            s.resize(rows, cols);
        }
        if let Ok(mut s) = self.inner.size.lock() {
            *s = (rows, cols);
        }
        Ok(())
    }

    /// Waits until the pane has written nothing for `quiet`, or `max` has
    /// passed; returns how long it waited.
    pub async fn wait_idle(&self, quiet: Duration, max: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if !self.is_running() {
                return start.elapsed();
            }
            let last = self.last_output_ms().unwrap_or(self.inner.started_ms);
            let quiet_for = Duration::from_millis((now_ms() - last).max(0) as u64);
            let remaining = max.saturating_sub(start.elapsed());
            if quiet_for >= quiet || remaining.is_zero() {
                return start.elapsed();
            }
            tokio::time::sleep((quiet - quiet_for).min(remaining)).await;
        }
    }

    async fn write_raw(&self, bytes: Vec<u8>) -> Result<(), TermError> {
        let input = match &self.inner.io {
            Io::Pty { input, .. } => input,
            Io::Tmux { pane, .. } => {
                let pane = pane.clone();
                return self
                    .tmux_call(move || pane.server.send_bytes(&pane.id, &bytes))
                    .await;
            }
        };
        let (done, result) = oneshot::channel();
        input
            .send(WriteJob { bytes, done })
            .map_err(|_| TermError::NotRunning)?;
        match tokio::time::timeout(self.inner.input_timeout, result).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(_))) | Ok(Err(_)) => Err(TermError::NotRunning),
            Err(_) => Err(TermError::InputStalled(
                self.inner.input_timeout.as_millis() as u64,
            )),
        }
    }

    /// Runs a tmux command off the async threads, bounded by the input
    /// timeout.
    async fn tmux_call(
        &self,
        call: impl FnOnce() -> Result<(), TmuxError> + Send + 'static,
    ) -> Result<(), TermError> {
        let timeout = self.inner.input_timeout;
        match tokio::time::timeout(timeout, tokio::task::spawn_blocking(call)).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(tmux_err(e)),
            Ok(Err(e)) => Err(TermError::Tmux(e.to_string())),
            Err(_) => Err(TermError::InputStalled(timeout.as_millis() as u64)),
        }
    }

    /// Checks that the tmux pane still runs the program it was adopted
    /// with; if not, the pane has ended (recorded now, not at the
    /// watcher's next look) and nothing may be typed into it.
    async fn check_tmux_identity(&self) -> Result<(), TermError> {
        let Io::Tmux { pane, exit } = &self.inner.io else {
            return Ok(());
        };
        let (p, exit) = (pane.clone(), exit.clone());
        self.tmux_call(move || {
            let ended = match p.server.pane(&p.id) {
                Ok(info) => tmux_ended(&p, &info),
                Err(e) => Some(gone(&p, &e)),
            };
            match ended {
                Some(info) => {
                    let reason = info.reason.clone().unwrap_or_default();
                    record_end(&exit, info);
                    Err(TmuxError::Failed(reason))
                }
                None => Ok(()),
            }
        })
        .await
        .map_err(|_| TermError::NotRunning)
    }

    /// Types `bytes` into the pane as they are (an attached human's keys,
    /// or an admin's exact input). Waits for any jekt in progress.
    pub async fn write_input(&self, bytes: &[u8]) -> Result<(), TermError> {
        let _turn = self.inner.input_lock.lock().await;
        if !self.is_running() {
            return Err(TermError::NotRunning);
        }
        self.write_raw(bytes.to_vec()).await
    }

    /// Delivers `text` as the profile says: a bracketed paste if the
    /// program enabled it, then (after the settle time) the submit key
    /// once. Holds the pane's input for the whole sequence.
    pub async fn paste_and_submit(&self, text: &str) -> Result<PasteReport, TermError> {
        if !paste_safe(text) {
            return Err(TermError::UnsafePaste);
        }
        let _turn = self.inner.input_lock.lock().await;
        if !self.is_running() {
            return Err(TermError::NotRunning);
        }
        let profile = &self.inner.profile;
        let (bracketed, bytes) = match &self.inner.io {
            Io::Tmux { pane, .. } => {
                self.check_tmux_identity().await?;
                // Whether the program asked tmux for bracketed paste is not
                // something tmux tells: the text goes as one line, so no
                // line break can press Enter (tmux adds the brackets itself
                // if the program asked for them).
                let one = one_line(text);
                let (p, bracketed) = (pane.clone(), profile.bracketed_paste);
                let bytes = one.len();
                self.tmux_call(move || p.server.paste(&p.id, &one, bracketed))
                    .await?;
                (bracketed, bytes)
            }
            Io::Pty { .. } => {
                let bracketed = profile.bracketed_paste && self.inner.modes.bracketed_paste();
                let mut payload = Vec::with_capacity(text.len() + 12);
                if bracketed {
                    payload.extend_from_slice(BRACKET_OPEN);
                    payload.extend_from_slice(text.as_bytes());
                    payload.extend_from_slice(BRACKET_CLOSE);
                } else {
                    // Without the brackets every line break would be an
                    // Enter of its own (a cooked terminal ends a line on
                    // it; readline and most editors accept on Ctrl-J):
                    // the jekt goes as one line.
                    payload.extend_from_slice(one_line(text).as_bytes());
                }
                let bytes = payload.len();
                self.write_raw(payload).await?;
                (bracketed, bytes)
            }
        };
        let submitted = !profile.submit.is_empty();
        if submitted {
            // A zero sleep would still wait for the timer's next tick (1 ms).
            if profile.settle_ms > 0 {
                tokio::time::sleep(profile.settle()).await;
            }
            self.write_raw(profile.submit.as_bytes().to_vec()).await?;
        }
        Ok(PasteReport {
            bracketed,
            bytes,
            submitted,
        })
    }

    /// Sends `sig` to the pane's process group and to the terminal's
    /// foreground process group (a job its shell started).
    pub fn signal(&self, sig: Signal) {
        if !self.is_running() {
            return;
        }
        let Some(pid) = self.inner.pid else { return };
        let _ = killpg(Pid::from_raw(pid as i32), sig);
        let Io::Pty { master, .. } = &self.inner.io else {
            return;
        };
        let foreground = master.lock().ok().and_then(|m| m.process_group_leader());
        if let Some(fg) = foreground
            && fg != pid as i32
        {
            let _ = killpg(Pid::from_raw(fg), sig);
        }
    }

    /// Ends the program: unless `force`, first the profile's quit (its quit
    /// text, or SIGHUP), then SIGTERM, then SIGKILL, waiting up to `grace`
    /// after each step.
    ///
    /// A tmux pane is not ours to end: it is let go (its program runs on,
    /// agentbus stops using it) and reported as ended with `released`.
    pub async fn stop(&self, force: bool, grace: Duration) -> StopReport {
        if let Some(exit) = self.exit_info() {
            return StopReport {
                step: StopStep::AlreadyExited,
                exit: Some(exit),
            };
        }
        if let Io::Tmux { pane, exit } = &self.inner.io {
            record_end(exit, ended(format!("released tmux pane {}", pane.id)));
            return StopReport {
                step: StopStep::Released,
                exit: self.exit_info(),
            };
        }
        if !force {
            match self.inner.profile.quit_text.clone() {
                Some(text) => {
                    let mut keys = text.into_bytes();
                    keys.extend_from_slice(self.inner.profile.submit.as_bytes());
                    let _ = self.write_input(&keys).await;
                }
                None => self.signal(Signal::SIGHUP),
            }
            if let Some(exit) = self.wait_exit(grace).await {
                return StopReport {
                    step: StopStep::Quit,
                    exit: Some(exit),
                };
            }
            self.signal(Signal::SIGTERM);
            if let Some(exit) = self.wait_exit(grace).await {
                return StopReport {
                    step: StopStep::Sigterm,
                    exit: Some(exit),
                };
            }
        }
        self.signal(Signal::SIGKILL);
        StopReport {
            step: StopStep::Sigkill,
            exit: self.wait_exit(grace.max(Duration::from_secs(2))).await,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can reach this program any more.
        if self.exit.borrow().is_none()
            && matches!(self.io, Io::Pty { .. })
            && let Some(pid) = self.pid
        {
            tracing::debug!(pane = %self.label, pid, "killing the program of a dropped pane");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn tmux_err(e: TmuxError) -> TermError {
    TermError::Tmux(e.to_string())
}

/// Text lines of a capture: trailing spaces and blank lines at the end
/// dropped, as for a hosted pane's screen.
fn text_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// An end that is not the program's own exit status.
fn ended(reason: String) -> ExitInfo {
    ExitInfo {
        code: None,
        signal: None,
        at_ms: now_ms(),
        reason: Some(reason),
    }
}

/// Records how a tmux pane ended; the first end recorded stands.
fn record_end(exit: &watch::Sender<Option<ExitInfo>>, info: ExitInfo) {
    exit.send_if_modified(|e| e.is_none() && e.replace(info).is_none());
}

/// How an adopted tmux pane has ended, if it has: its program exited
/// (tmux kept the pane), or another program now runs in it.
fn tmux_ended(pane: &PaneRef, info: &crate::tmux::PaneInfo) -> Option<ExitInfo> {
    if info.pid != pane.pid {
        return Some(ended(format!(
            "tmux pane {} was respawned (pid {} is now {})",
            pane.id, pane.pid, info.pid
        )));
    }
    info.dead.then(|| ExitInfo {
        code: info.dead_status,
        ..ended(format!("the program in tmux pane {} exited", pane.id))
    })
}

fn gone(pane: &PaneRef, e: &TmuxError) -> ExitInfo {
    ended(format!("tmux pane {} is gone ({e})", pane.id))
}

/// Follows an adopted tmux pane: whether it still runs the same program,
/// its size, and when its screen last changed (its activity).
struct TmuxWatcher {
    pane: PaneRef,
    exit: Arc<watch::Sender<Option<ExitInfo>>>,
    output: broadcast::Sender<PaneOutput>,
    size: Arc<Mutex<(u16, u16)>>,
    last_output_ms: Arc<AtomicI64>,
    poll: Duration,
}

impl TmuxWatcher {
    fn run(self) {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut last_screen: Option<u64> = None;
        let mut failures = 0;
        loop {
            if self.exit.borrow().is_some() {
                return;
            }
            let end = match self.pane.server.snapshot(&self.pane.id) {
                Ok((info, screen)) => {
                    failures = 0;
                    if let Ok(mut s) = self.size.lock() {
                        *s = (info.height, info.width);
                    }
                    let mut h = DefaultHasher::new();
                    screen.hash(&mut h);
                    let h = h.finish();
                    if last_screen != Some(h) {
                        last_screen = Some(h);
                        self.last_output_ms.store(now_ms(), Ordering::Release);
                        let _ = self.output.send(PaneOutput::Resync);
                    }
                    tmux_ended(&self.pane, &info)
                }
                // One failed look may be a passing hiccup; two are an end.
                Err(e) => {
                    failures += 1;
                    (failures >= 2).then(|| gone(&self.pane, &e))
                }
            };
            if let Some(info) = end {
                record_end(&self.exit, info);
                return;
            }
            std::thread::sleep(self.poll);
        }
    }
}

fn read_loop(
    mut reader: Box<dyn Read + Send>,
    modes: &Modes,
    backlog: &Backlog,
    last_output_ms: &AtomicI64,
    stats: &(AtomicU64, AtomicU64),
) {
    let mut buf = vec![0u8; READ_BUF];
    let mut scanner = ModeScanner::default();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                scanner.scan(modes, chunk);
                last_output_ms.store(now_ms(), Ordering::Release);
                stats.0.fetch_add(n as u64, Ordering::Relaxed);
                backlog.push(Bytes::copy_from_slice(chunk));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: every process holding the terminal has closed it.
            Err(_) => break,
        }
    }
    backlog.close();
}

fn parse_loop(
    screen: &Mutex<Screen>,
    backlog: &Backlog,
    output: &broadcast::Sender<PaneOutput>,
    stats: &(AtomicU64, AtomicU64),
    parsed_all: &AtomicBool,
) {
    while let Some(items) = backlog.take() {
        for item in items {
            let Ok(mut s) = screen.lock() else { return };
            // Sending under the screen lock keeps `Pane::attach`'s repaint
            // and subscription consistent with each other.
            match item {
                Item::Chunk(bytes) => {
                    s.process(&bytes);
                    let _ = output.send(PaneOutput::Bytes(bytes));
                }
                Item::Skipped(n) => {
                    stats.1.fetch_add(n, Ordering::Relaxed);
                    s.scrollback_mut().note(&format!(
                        "[agentbus: {n} bytes of output skipped; the program wrote faster than its screen could be parsed]"
                    ));
                    let _ = output.send(PaneOutput::Resync);
                }
            }
        }
    }
    parsed_all.store(true, Ordering::Release);
}

fn write_loop(mut writer: Box<dyn Write + Send>, jobs: mpsc::Receiver<WriteJob>) {
    // Ends when every Pane handle (the job senders) is gone.
    while let Ok(job) = jobs.recv() {
        let result = writer.write_all(&job.bytes).and_then(|_| writer.flush());
        let _ = job.done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> PaneSpec {
        PaneSpec::new("t", vec!["sh".into(), "-c".into(), script.into()])
    }

    #[tokio::test]
    async fn output_is_parsed_and_exit_code_kept() {
        let pane = Pane::spawn(sh("printf 'hello\\nworld\\n'; exit 3")).unwrap();
        let exit = pane.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert_eq!(exit.code, Some(3));
        assert_eq!(pane.lines(10), vec!["hello".to_string(), "world".into()]);
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_for_a_program_that_ignores_signals() {
        let pane = Pane::spawn(sh(
            "trap '' HUP TERM; echo ready; while :; do sleep 0.05; done",
        ))
        .unwrap();
        while pane.lines(5).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = pane.stop(false, Duration::from_millis(300)).await;
        assert_eq!(report.step, StopStep::Sigkill);
        assert!(report.exit.unwrap().signal.is_some());
        assert!(!pane.is_running());
    }

    #[tokio::test]
    async fn unsafe_text_is_never_pasted() {
        let pane = Pane::spawn(sh("sleep 5")).unwrap();
        assert!(matches!(
            pane.paste_and_submit("a\x1b[201~b").await,
            Err(TermError::UnsafePaste)
        ));
        pane.stop(true, Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn missing_programs_and_directories_are_clear_errors() {
        let err = Pane::spawn(PaneSpec::new("t", vec!["/no/such/program".into()]))
            .err()
            .unwrap();
        assert!(matches!(err, TermError::Spawn { .. }), "{err}");
        let mut spec = sh("true");
        spec.cwd = Some("/no/such/dir".into());
        assert!(matches!(Pane::spawn(spec), Err(TermError::BadCwd(_))));
    }
}
