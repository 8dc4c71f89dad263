//! The PTY backend: a program in a PTY of our own.
//!
//! Each pane runs four threads, because each waits on a blocking call:
//! the *reader* absorbs output (and tracks the terminal modes the program
//! sets, from every byte); the *parser* keeps the screen and scrollback,
//! answers the program's questions to its terminal (see
//! [`crate::queries`]) and feeds attached terminals; the *writer* owns the PTY's input side, so a
//! program that never reads its input blocks only its own writer; the
//! *waiter* reaps the child and records its exit status. A noisy or stuck
//! pane therefore slows only itself.

use super::{Backend, ExitInfo, Io, Pane, PaneOutput, Shared, check_size, one_line};
use crate::TermError;
use crate::backlog::{Backlog, Item};
use crate::modes::{ModeScanner, Modes};
use crate::profile::Profile;
use crate::queries::{Piece, QueryScanner};
use crate::screen::Screen;
use crate::tmux::PaneRef;
use agentbus_proto::now_ms;
use agentbus_proto::sync::lock;
use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

const READ_BUF: usize = 64 * 1024;
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

struct WriteJob {
    bytes: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// A PTY of our own: the parsed screen, the writer thread's queue, the
/// master side (for its size and foreground group).
struct Pty {
    label: String,
    pid: Option<u32>,
    modes: Arc<Modes>,
    shared: Shared,
    // A std mutex: held only to parse one chunk or to read lines, never
    // across an await.
    screen: Arc<Mutex<Screen>>,
    input: mpsc::Sender<WriteJob>,
    // MasterPty is Send but not Sync; resize needs it.
    master: Mutex<Box<dyn MasterPty + Send>>,
}

fn pty_err(e: impl std::fmt::Display) -> TermError {
    TermError::Pty(e.to_string())
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
        let shared = Shared::new(spec.rows, spec.cols);
        let screen = Arc::new(Mutex::new(Screen::new(
            spec.rows,
            spec.cols,
            spec.scrollback_lines,
        )));
        let backlog = Arc::new(Backlog::new(spec.max_parse_backlog));
        let parsed_all = Arc::new(AtomicBool::new(false));
        let (input, input_rx) = mpsc::channel::<WriteJob>();
        let label = spec.label.clone();

        let spawn = |role: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("pane-{role}-{label}"))
                .spawn(f)
                .map(|_| ())
                .map_err(pty_err)
        };
        spawn("read", {
            let (modes, backlog, shared) = (modes.clone(), backlog.clone(), shared.clone());
            Box::new(move || read_loop(reader, &modes, &backlog, &shared))
        })?;
        spawn("parse", {
            let (screen, backlog, shared, done, input) = (
                screen.clone(),
                backlog.clone(),
                shared.clone(),
                parsed_all.clone(),
                input.clone(),
            );
            Box::new(move || parse_loop(&screen, &backlog, &shared, &done, &input))
        })?;
        spawn("write", Box::new(move || write_loop(writer, input_rx)))?;
        spawn("wait", {
            let shared = shared.clone();
            Box::new(move || {
                let status = child.wait();
                // Let the parser take in the program's last words before
                // the exit is announced, but never wait on a grandchild
                // that keeps the terminal open.
                let deadline = Instant::now() + Duration::from_secs(1);
                while !parsed_all.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let (code, signal) = match status {
                    Ok(s) => match s.signal() {
                        Some(sig) => (None, Some(sig.to_string())),
                        None => (Some(s.exit_code() as i32), None),
                    },
                    Err(e) => (None, Some(format!("unknown ({e})"))),
                };
                shared.record_end(ExitInfo {
                    code,
                    signal,
                    at_ms: now_ms(),
                    reason: None,
                });
            })
        })?;

        let backend = Pty {
            label: spec.label,
            pid,
            modes: modes.clone(),
            shared: shared.clone(),
            screen,
            input,
            master: Mutex::new(pair.master),
        };
        Ok(Pane::new(
            pid,
            spec.profile,
            modes,
            shared,
            Box::new(backend),
            spec.input_timeout,
        ))
    }
}

impl Backend for Pty {
    fn write(&self, bytes: Vec<u8>, timeout: Duration) -> Io<'_, Result<(), TermError>> {
        Box::pin(async move {
            let (done, result) = oneshot::channel();
            self.input
                .send(WriteJob { bytes, done })
                .map_err(|_| TermError::NotRunning)?;
            match tokio::time::timeout(timeout, result).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(_))) | Ok(Err(_)) => Err(TermError::NotRunning),
                Err(_) => Err(TermError::InputStalled(timeout.as_millis() as u64)),
            }
        })
    }

    fn paste(
        &self,
        text: &str,
        bracketed: bool,
        timeout: Duration,
    ) -> Io<'_, Result<(bool, usize), TermError>> {
        let bracketed = bracketed && self.modes.bracketed_paste();
        let mut payload = Vec::with_capacity(text.len() + 12);
        if bracketed {
            payload.extend_from_slice(BRACKET_OPEN);
            payload.extend_from_slice(text.as_bytes());
            payload.extend_from_slice(BRACKET_CLOSE);
        } else {
            // Without the brackets every line break would be an Enter of
            // its own (a cooked terminal ends a line on it; readline and
            // most editors accept on Ctrl-J): the jekt goes as one line.
            payload.extend_from_slice(one_line(text).as_bytes());
        }
        Box::pin(async move {
            let bytes = payload.len();
            self.write(payload, timeout).await?;
            Ok((bracketed, bytes))
        })
    }

    fn numbered_lines(&self, n: usize, after: Option<u64>) -> (u64, Vec<String>) {
        lock(&self.screen).numbered_lines(n, after)
    }

    fn visible_rows(&self) -> Vec<String> {
        lock(&self.screen).visible_rows()
    }

    fn repaint(&self) -> Vec<u8> {
        lock(&self.screen).repaint()
    }

    fn snapshot(&self) -> Result<crate::Snapshot, TermError> {
        Ok(lock(&self.screen).snapshot())
    }

    fn attach(&self) -> (Vec<u8>, broadcast::Receiver<PaneOutput>) {
        // The parser sends under the screen lock: taken together here,
        // the repaint and the subscription agree.
        let screen = lock(&self.screen);
        (screen.repaint(), self.shared.output.subscribe())
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<(), TermError> {
        lock(&self.master)
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(pty_err)?;
        lock(&self.screen).resize(rows, cols);
        Ok(())
    }

    fn foreground_group(&self) -> Option<u32> {
        lock(&self.master)
            .process_group_leader()
            .and_then(|g| u32::try_from(g).ok())
    }

    fn foreground_program(&self) -> Io<'_, Option<String>> {
        let comm = self
            .foreground_group()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok());
        Box::pin(async move { Some(comm?.trim().to_string()) })
    }

    fn tmux(&self) -> Option<&PaneRef> {
        None
    }

    fn release(&self) -> bool {
        false
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // The last handle is gone: nobody can reach this program any more.
        if self.shared.exit.borrow().is_none()
            && let Some(pid) = self.pid
        {
            tracing::debug!(pane = %self.label, pid, "killing the program of a dropped pane");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn read_loop(mut reader: Box<dyn Read + Send>, modes: &Modes, backlog: &Backlog, shared: &Shared) {
    let mut buf = vec![0u8; READ_BUF];
    let mut scanner = ModeScanner::default();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                scanner.scan(modes, chunk);
                shared.touched();
                shared
                    .counters
                    .absorbed
                    .fetch_add(n as u64, Ordering::Relaxed);
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
    shared: &Shared,
    parsed_all: &AtomicBool,
    input: &mpsc::Sender<WriteJob>,
) {
    let mut queries = QueryScanner::default();
    let mut answers = Answers::default();
    while let Some(items) = backlog.take() {
        for item in items {
            let mut s = lock(screen);
            // Sending under the screen lock keeps `Pane::attach`'s repaint
            // and subscription consistent with each other.
            match item {
                Item::Chunk(bytes) => {
                    // The questions the program asks its terminal are
                    // answered here, where the screen is, in order, and
                    // not passed on to attached viewers.
                    let Some(pieces) = queries.scan(&bytes) else {
                        s.process(&bytes);
                        let _ = shared.output.send(PaneOutput::Bytes(bytes));
                        continue;
                    };
                    let mut text = Vec::with_capacity(bytes.len());
                    for piece in pieces {
                        match piece {
                            Piece::Text(t) => {
                                s.process(&t);
                                text.extend(t);
                            }
                            Piece::Query(q) => answers.send(input, q.answer(s.cursor())),
                        }
                    }
                    if !text.is_empty() {
                        let _ = shared.output.send(PaneOutput::Bytes(Bytes::from(text)));
                    }
                }
                Item::Skipped(n) => {
                    shared.counters.skipped.fetch_add(n, Ordering::Relaxed);
                    s.scrollback_mut().note(&format!(
                        "[agentbus: {n} bytes of output skipped; the program wrote faster than its screen could be parsed]"
                    ));
                    let _ = shared.output.send(PaneOutput::Resync);
                }
            }
        }
    }
    parsed_all.store(true, Ordering::Release);
}

/// Answers to the program's questions not yet written to its input. A
/// program that asks without reading (a flood of questions into a full
/// input) gets no more than [`Answers::MAX`] waiting: the rest are not
/// answered, as a blocked terminal would not, and the daemon's memory
/// stays bounded.
#[derive(Default)]
struct Answers {
    waiting: Vec<oneshot::Receiver<std::io::Result<()>>>,
}

impl Answers {
    const MAX: usize = 32;

    fn send(&mut self, input: &mpsc::Sender<WriteJob>, bytes: Vec<u8>) {
        self.waiting
            .retain_mut(|r| matches!(r.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        if self.waiting.len() >= Self::MAX {
            return;
        }
        let (done, written) = oneshot::channel();
        if input.send(WriteJob { bytes, done }).is_ok() {
            self.waiting.push(written);
        }
    }
}

fn write_loop(mut writer: Box<dyn Write + Send>, jobs: mpsc::Receiver<WriteJob>) {
    // Ends when every Pane handle (the job senders) is gone.
    while let Ok(job) = jobs.recv() {
        let result = writer.write_all(&job.bytes).and_then(|_| writer.flush());
        let _ = job.done.send(result);
    }
}
