//! One pane: a terminal an agent lives in, whatever backs it. The API
//! here — the input lock, paste and submit, stop's escalation, idle
//! waits, output subscriptions — is the same for both backends behind
//! [`Backend`]:
//! - [`pty`]: a program in a PTY of our own, served by four threads
//!   ([`Pane::spawn`]);
//! - [`tmux_pane`]: an existing tmux pane adopted as an agent's terminal,
//!   followed by one watcher thread ([`Pane::adopt_tmux`]).

mod pty;
mod tmux_pane;

pub use pty::PaneSpec;
pub use tmux_pane::TmuxSpec;

use crate::TermError;
use crate::modes::Modes;
use crate::profile::Profile;
use crate::ready::{InputBox, Readiness};
use crate::tmux::PaneRef;
use agentbus_proto::now_ms;
use agentbus_proto::sync::lock;
use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

const OUTPUT_CHANNEL: usize = 1024;
/// How often a waiting jekt re-reads the screen when no output wakes it.
const POLL: Duration = Duration::from_millis(100);
/// How often the input box is re-read while a submit is confirmed.
const CONFIRM_POLL: Duration = Duration::from_millis(25);
/// Bound on the wait for the box to empty after the clear keys.
const CLEAR_WAIT: Duration = Duration::from_millis(1000);
/// Bound on the wait for a running turn to stop before a quit.
const INTERRUPT_WAIT: Duration = Duration::from_millis(3000);
/// The pause between the keys of a clear or interrupt sequence.
const KEY_GAP: Duration = Duration::from_millis(100);
/// Bound on the wait for the prompt before typing a quit.
const QUIT_READY_WAIT: Duration = Duration::from_millis(5000);
/// The least pause between quit text and submit key: an Enter in the
/// same burst as the text is swallowed by some CLIs.
const MIN_QUIT_SETTLE: Duration = Duration::from_millis(250);

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

/// Whether the screen showed a submitted text leave the input box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// The input box emptied (the text became a turn or a queued input).
    Confirmed,
    /// The submit key was sent, but the screen cannot tell (a profile
    /// without screen rules) or still showed the text in the box.
    Unconfirmed,
    /// The profile has no submit key: the text was only typed.
    NotSent,
}

impl Submitted {
    pub fn as_str(self) -> &'static str {
        match self {
            Submitted::Confirmed => "confirmed",
            Submitted::Unconfirmed => "unconfirmed",
            Submitted::NotSent => "not_sent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasteReport {
    /// Sent inside `ESC[200~` ... `ESC[201~`.
    pub bracketed: bool,
    /// Bytes written, framing included, submit key excluded.
    pub bytes: usize,
    pub submitted: Submitted,
    /// The submit key was sent a second time, the first not having taken.
    pub retried: bool,
    /// After both submits the screen still showed the text in the input
    /// box: it was not sent, and the box was cleared (`cleared`) so that
    /// the next text does not join it.
    pub stuck: bool,
    pub cleared: bool,
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
    /// Bytes read off the terminal.
    pub absorbed: u64,
    /// Bytes the parser dropped, unparsed, to keep up with a flood.
    pub skipped: u64,
}

/// The live counters behind [`OutputStats`].
#[derive(Default)]
struct OutputCounters {
    absorbed: AtomicU64,
    skipped: AtomicU64,
}

/// What a pane shares with the threads that serve it: where output goes,
/// when it last came, its size and its end.
#[derive(Clone)]
struct Shared {
    output: broadcast::Sender<PaneOutput>,
    last_output_ms: Arc<AtomicI64>,
    counters: Arc<OutputCounters>,
    size: Arc<Mutex<(u16, u16)>>,
    exit: Arc<watch::Sender<Option<ExitInfo>>>,
}

impl Shared {
    fn new(rows: u16, cols: u16) -> Shared {
        Shared {
            output: broadcast::channel(OUTPUT_CHANNEL).0,
            last_output_ms: Arc::new(AtomicI64::new(0)),
            counters: Arc::default(),
            size: Arc::new(Mutex::new((rows, cols))),
            exit: Arc::new(watch::channel(None).0),
        }
    }

    /// Output (or a change of screen) came just now.
    fn touched(&self) {
        self.last_output_ms.store(now_ms(), Ordering::Release);
    }

    /// Records how the pane ended; the first end recorded stands.
    fn record_end(&self, info: ExitInfo) {
        self.exit
            .send_if_modified(|e| e.is_none() && e.replace(info).is_none());
    }
}

/// A future a backend returns, borrowed from it.
type Io<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a pane's terminal is made of: how input goes in and text comes
/// out. Every call that types is made under the pane's input lock.
trait Backend: Send + Sync {
    /// Types `bytes` as they are, giving up after `timeout`.
    fn write(&self, bytes: Vec<u8>, timeout: Duration) -> Io<'_, Result<(), TermError>>;
    /// Pastes `text` (bracketed if `bracketed` and the program allows it,
    /// one line otherwise); returns whether it went bracketed, and the
    /// bytes written.
    fn paste(
        &self,
        text: &str,
        bracketed: bool,
        timeout: Duration,
    ) -> Io<'_, Result<(bool, usize), TermError>>;
    /// Numbered lines of text (see `Screen::numbered_lines`).
    fn numbered_lines(&self, n: usize, after: Option<u64>) -> (u64, Vec<String>);
    /// The current screen as repaint escape codes.
    fn repaint(&self) -> Vec<u8>;
    /// A repaint and a subscription to everything after it, with nothing
    /// falling between them.
    fn attach(&self) -> (Vec<u8>, broadcast::Receiver<PaneOutput>);
    fn resize(&self, rows: u16, cols: u16) -> Result<(), TermError>;
    /// The terminal's foreground process group, where it can be told.
    fn foreground_group(&self) -> Option<u32>;
    /// The name of the program in the terminal's foreground.
    fn foreground_program(&self) -> Io<'_, Option<String>>;
    /// The visible rows, one string per row, no scrollback.
    fn visible_rows(&self) -> Vec<String>;
    /// The visible screen, cell by cell, and the cursor.
    fn snapshot(&self) -> Result<crate::Snapshot, TermError>;
    /// The tmux pane this is, if it is one.
    fn tmux(&self) -> Option<&PaneRef>;
    /// Lets the pane go instead of ending its program, if it is not ours
    /// to end (true: let go, and its end recorded).
    fn release(&self) -> bool;
}

/// Cheap-clone handle to a running (or finished) pane.
#[derive(Clone)]
pub struct Pane {
    inner: Arc<Inner>,
}

struct Inner {
    pid: Option<u32>,
    profile: Profile,
    started_ms: i64,
    modes: Arc<Modes>,
    shared: Shared,
    backend: Box<dyn Backend>,
    // An async mutex on purpose: it is held across the awaits of one input
    // sequence (paste, settle, submit) so that no other input, from a jekt
    // or an attached human, lands in the middle of it.
    input_lock: tokio::sync::Mutex<()>,
    input_timeout: Duration,
    exit: watch::Receiver<Option<ExitInfo>>,
}

fn check_size(rows: u16, cols: u16) -> Result<(), TermError> {
    if (1..=1000).contains(&rows) && (1..=1000).contains(&cols) {
        Ok(())
    } else {
        Err(TermError::BadSize { rows, cols })
    }
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
    fn new(
        pid: Option<u32>,
        profile: Profile,
        modes: Arc<Modes>,
        shared: Shared,
        backend: Box<dyn Backend>,
        input_timeout: Duration,
    ) -> Pane {
        Pane {
            inner: Arc::new(Inner {
                pid,
                profile,
                started_ms: now_ms(),
                modes,
                exit: shared.exit.subscribe(),
                shared,
                backend,
                input_lock: tokio::sync::Mutex::new(()),
                input_timeout,
            }),
        }
    }

    /// The terminal's foreground process group (a PTY of our own).
    pub fn foreground_group(&self) -> Option<u32> {
        self.inner.backend.foreground_group()
    }

    /// The name of the program in the terminal's foreground: for a tmux
    /// pane, as tmux tells it; for a PTY of our own, the leader of its
    /// foreground process group. `None` if it cannot be told.
    pub async fn foreground_program(&self) -> Option<String> {
        self.inner.backend.foreground_program().await
    }

    /// The tmux pane this pane is, if it is one.
    pub fn tmux(&self) -> Option<&PaneRef> {
        self.inner.backend.tmux()
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
        *lock(&self.inner.shared.size)
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
        match self.inner.shared.last_output_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub fn stats(&self) -> OutputStats {
        let c = &self.inner.shared.counters;
        OutputStats {
            absorbed: c.absorbed.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
        }
    }

    /// The last `n` lines of parsed text (scrollback, then screen).
    pub fn lines(&self, n: usize) -> Vec<String> {
        self.numbered_lines(n, None).1
    }

    /// Numbered lines of text (see `Screen::numbered_lines`). A tmux
    /// pane's lines are numbered from the oldest line tmux still keeps.
    pub fn numbered_lines(&self, n: usize, after: Option<u64>) -> (u64, Vec<String>) {
        self.inner.backend.numbered_lines(n, after)
    }

    /// Told of every chunk of output (and of skips), from now on.
    pub fn subscribe_output(&self) -> broadcast::Receiver<PaneOutput> {
        self.inner.shared.output.subscribe()
    }

    /// A repaint of the current screen and a subscription to everything
    /// written after it, taken together so nothing falls between them.
    pub fn attach(&self) -> (Vec<u8>, broadcast::Receiver<PaneOutput>) {
        self.inner.backend.attach()
    }

    /// The visible screen, cell by cell, with the cursor: a hosted
    /// pane's parsed screen, or a tmux pane's as tmux shows it (this runs
    /// tmux: call it off the async threads).
    pub fn snapshot(&self) -> Result<crate::Snapshot, TermError> {
        self.inner.backend.snapshot()
    }

    /// Whether `other` is a handle to this very pane (not one started
    /// later in the same block).
    pub fn same_as(&self, other: &Pane) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The current screen as repaint escape codes.
    pub fn repaint(&self) -> Vec<u8> {
        self.inner.backend.repaint()
    }

    /// Resizes a hosted pane. A tmux pane's size belongs to tmux.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), TermError> {
        check_size(rows, cols)?;
        self.inner.backend.resize(rows, cols)?;
        *lock(&self.inner.shared.size) = (rows, cols);
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

    /// Types `bytes` into the pane as they are (an attached human's keys,
    /// or an admin's exact input). Waits for any jekt in progress.
    pub async fn write_input(&self, bytes: &[u8]) -> Result<(), TermError> {
        let _turn = self.inner.input_lock.lock().await;
        self.keys(bytes).await
    }

    /// Types `bytes`; the caller holds the input lock.
    async fn keys(&self, bytes: &[u8]) -> Result<(), TermError> {
        if !self.is_running() {
            return Err(TermError::NotRunning);
        }
        self.inner
            .backend
            .write(bytes.to_vec(), self.inner.input_timeout)
            .await
    }

    /// Types each key of `keys` as a write of its own, a moment apart: two
    /// Escapes in one burst read as one Alt-Escape. The caller holds the
    /// input lock.
    async fn keys_apart(&self, keys: &str) -> Result<(), TermError> {
        for (i, key) in keys.chars().enumerate() {
            if i > 0 {
                tokio::time::sleep(KEY_GAP).await;
            }
            let mut buf = [0u8; 4];
            self.keys(key.encode_utf8(&mut buf).as_bytes()).await?;
        }
        Ok(())
    }

    /// The visible rows of the screen, one string per row.
    pub fn visible_rows(&self) -> Vec<String> {
        self.inner.backend.visible_rows()
    }

    /// Whether the program is ready for input, as its screen shows it
    /// (see [`crate::ready`]). `Unknown` for a profile without rules.
    pub fn readiness(&self) -> Readiness {
        let profile = &self.inner.profile;
        if profile.screen.is_empty() {
            return Readiness::Unknown;
        }
        match profile.screen.read(&self.visible_rows()) {
            // A CLI that shows nothing while it streams a reply is busy
            // as long as it prints.
            Readiness::Ready if self.printed_within(profile.output_quiet_ms) => {
                Readiness::Busy(crate::ready::WORKING)
            }
            r => r,
        }
    }

    /// Whether the program printed anything in the last `ms`.
    fn printed_within(&self, ms: u64) -> bool {
        ms > 0
            && self
                .last_output_ms()
                .is_some_and(|t| now_ms() - t < ms as i64)
    }

    fn input_box(&self) -> InputBox {
        self.inner.profile.screen.input_box(&self.visible_rows())
    }

    /// Waits until the screen has shown the ready prompt, unchanged in
    /// readiness, for the profile's `ready_quiet_ms`, or `max` has passed,
    /// or the program ended. Returns the last readiness read and how long
    /// it waited. A profile without screen rules answers `Unknown` at
    /// once: its caller waits for quiet instead.
    pub async fn wait_ready(&self, max: Duration) -> (Readiness, Duration) {
        let start = Instant::now();
        let quiet = Duration::from_millis(self.inner.profile.ready_quiet_ms);
        let mut output = self.subscribe_output();
        let mut ready_since: Option<Instant> = None;
        loop {
            let now = self.readiness();
            if !self.is_running() || now == Readiness::Unknown {
                return (now, start.elapsed());
            }
            let mut wake = POLL;
            if now.is_ready() {
                let since = *ready_since.get_or_insert_with(Instant::now);
                // Ready for the quiet time: seen so here, or (a prompt
                // waiting since long before) by the pane's silence.
                let silent = self
                    .last_output_ms()
                    .is_some_and(|t| now_ms() - t >= quiet.as_millis() as i64);
                if silent || since.elapsed() >= quiet {
                    return (now, start.elapsed());
                }
                wake = wake.min(quiet - since.elapsed());
            } else {
                ready_since = None;
            }
            let remaining = max.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return (now, start.elapsed());
            }
            // Woken by output (the screen may have changed) or the poll.
            let _ = tokio::time::timeout(wake.min(remaining), output.recv()).await;
        }
    }

    /// Waits up to `max` for the visible rows to satisfy `want`; whether
    /// they did.
    async fn screen_becomes(&self, max: Duration, want: impl Fn(&[String]) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if want(&self.visible_rows()) {
                return true;
            }
            if start.elapsed() >= max || !self.is_running() {
                return false;
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }

    /// Delivers `text` as the profile says: a paste (bracketed if the
    /// profile wants it and the program allows it), then (after the
    /// settle time) the submit key, in two writes. Where the profile can
    /// read the screen, it then confirms that the text left the input
    /// box, sends the submit key once more if it did not, and if the text
    /// still sits there, clears the box and reports it `stuck`. Holds the
    /// pane's input for the whole sequence.
    pub async fn paste_and_submit(&self, text: &str) -> Result<PasteReport, TermError> {
        if !paste_safe(text) {
            return Err(TermError::UnsafePaste);
        }
        let _turn = self.inner.input_lock.lock().await;
        if !self.is_running() {
            return Err(TermError::NotRunning);
        }
        let (profile, backend, timeout) = (
            &self.inner.profile,
            &self.inner.backend,
            self.inner.input_timeout,
        );
        let (bracketed, bytes) = backend
            .paste(text, profile.bracketed_paste, timeout)
            .await?;
        let mut report = PasteReport {
            bracketed,
            bytes,
            submitted: Submitted::NotSent,
            retried: false,
            stuck: false,
            cleared: false,
        };
        if profile.submit.is_empty() {
            return Ok(report);
        }
        // A zero sleep would still wait for the timer's next tick (1 ms).
        if profile.settle_ms > 0 {
            tokio::time::sleep(profile.settle()).await;
        }
        let screen = &profile.screen;
        let reads_screen = screen.reads_box();
        let confirm = Duration::from_millis(profile.confirm_ms);
        let holds = |rows: &[String]| matches!(screen.input_box(rows), InputBox::Holds(_));
        // The text left the box, or a turn started (typed only at a ready
        // prompt, so busy words now are this submission's): a CLI that
        // echoes the prompt in place (Aider) keeps the text on its prompt
        // rows until the reply ends.
        let left = |rows: &[String]| !holds(rows) || screen.shows_busy(rows);
        if reads_screen {
            // The paste drawn in the box first: an Enter that overtakes
            // it would submit nothing and leave the text behind.
            self.screen_becomes(confirm, holds).await;
        }
        self.keys(profile.submit.as_bytes()).await?;
        report.submitted = Submitted::Unconfirmed;
        if !reads_screen {
            return Ok(report);
        }
        if !self.screen_becomes(confirm, left).await {
            report.retried = true;
            self.keys(profile.submit.as_bytes()).await?;
            if !self.screen_becomes(confirm, left).await {
                report.stuck = true;
                report.cleared = self.clear_box().await;
                return Ok(report);
            }
        }
        report.submitted = Submitted::Confirmed;
        Ok(report)
    }

    /// Empties a non-empty input box with the profile's keys; whether the
    /// box is empty after. The caller holds the input lock.
    async fn clear_box(&self) -> bool {
        let keys = &self.inner.profile.clear_input;
        if !matches!(self.input_box(), InputBox::Holds(_)) {
            return true;
        }
        if keys.is_empty() || self.keys_apart(keys).await.is_err() {
            return false;
        }
        let screen = &self.inner.profile.screen;
        self.screen_becomes(CLEAR_WAIT, |rows| {
            !matches!(screen.input_box(rows), InputBox::Holds(_))
        })
        .await
    }

    /// Asks the program to quit the way a person would: nothing typed into
    /// a blocked screen, a running turn interrupted, a non-empty box
    /// cleared, then the quit text and
    /// (after the settle time) the submit key as separate writes, the
    /// submit sent once more if the screen shows the quit text still in
    /// the box. Returns once the program exited or `grace` has passed.
    async fn quit_through_cli(&self, quit: &str, grace: Duration) {
        let profile = &self.inner.profile;
        let reads_screen = profile.screen.reads_box();
        let submitted: Instant;
        {
            let _turn = self.inner.input_lock.lock().await;
            if let Readiness::Blocked(what) = self.readiness() {
                // A sign-in screen or a dialog would take the quit text as
                // its answer (an authorization code, a choice): type
                // nothing; the signals that follow end it.
                tracing::info!(pid = ?self.inner.pid, %what, "not typing a quit into a blocked screen");
                return;
            }
            if reads_screen {
                let busy = matches!(self.readiness(), Readiness::Busy(crate::ready::WORKING));
                if busy && !profile.interrupt.is_empty() {
                    let _ = self.keys_apart(&profile.interrupt).await;
                    self.screen_becomes(INTERRUPT_WAIT, |rows| !profile.screen.shows_busy(rows))
                        .await;
                }
                self.clear_box().await;
                // A CLI still starting may take a slash command as a
                // prompt to queue for the model.
                self.wait_ready(QUIT_READY_WAIT).await;
            }
            if self.keys(quit.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(profile.settle().max(MIN_QUIT_SETTLE)).await;
            let _ = self.keys(profile.submit.as_bytes()).await;
            // The CLI's time to exit counts from its quit, not from the
            // interrupt and the waits before it (OpenClaw takes 2-3 s).
            submitted = Instant::now();
            let confirm = Duration::from_millis(profile.confirm_ms).min(grace);
            if self.wait_exit(confirm).await.is_some() {
                return;
            }
            // Still there, or (a screen without a prompt to read) maybe:
            // an Enter at an empty prompt does nothing.
            let quit_left = !reads_screen
                || matches!(self.input_box(), InputBox::Holds(t) if t.starts_with(quit));
            if quit_left {
                let _ = self.keys(profile.submit.as_bytes()).await;
            }
        }
        self.wait_exit(grace.saturating_sub(submitted.elapsed()))
            .await;
    }

    /// Sends `sig` to the pane's process group and to the terminal's
    /// foreground process group (a job its shell started).
    pub fn signal(&self, sig: Signal) {
        if !self.is_running() {
            return;
        }
        let Some(pid) = self.inner.pid else { return };
        let _ = killpg(Pid::from_raw(pid as i32), sig);
        if let Some(fg) = self.foreground_group()
            && fg != pid
        {
            let _ = killpg(Pid::from_raw(fg as i32), sig);
        }
    }

    /// Ends the program: unless `force`, first the profile's quit (through
    /// the CLI as a person would, see `quit_through_cli`; or SIGHUP), then
    /// SIGTERM, then SIGKILL, waiting up to `grace` after each step.
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
        if self.inner.backend.release() {
            return StopReport {
                step: StopStep::Released,
                exit: self.exit_info(),
            };
        }
        if !force {
            let exited = match self.inner.profile.quit_text.clone() {
                Some(text) => {
                    self.quit_through_cli(&text, grace).await;
                    self.exit_info()
                }
                None => {
                    self.signal(Signal::SIGHUP);
                    self.wait_exit(grace).await
                }
            };
            if let Some(exit) = exited {
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

/// An end that is not the program's own exit status.
fn ended(reason: String) -> ExitInfo {
    ExitInfo {
        code: None,
        signal: None,
        at_ms: now_ms(),
        reason: Some(reason),
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
    async fn the_pane_answers_its_programs_questions_and_viewers_never_see_them() {
        // Reads each answer raw, byte for byte, as a program that asked
        // would, and prints it back readably.
        let pane = Pane::spawn(sh("sleep 0.3; stty raw -echo; \
             printf 'ab\\033[5;10H\\033[6n'; \
             p=$(dd bs=1 count=7 2>/dev/null | od -An -c | tr -d ' \\n'); \
             printf '\\033[c'; \
             a=$(dd bs=1 count=7 2>/dev/null | od -An -c | tr -d ' \\n'); \
             stty sane; printf '\\r\\nGOT %s %s\\r\\n' \"$p\" \"$a\""))
        .unwrap();
        let (_, mut viewer) = pane.attach();
        let exit = pane.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert_eq!(exit.code, Some(0));
        let lines = pane.lines(10).join("\n");
        assert!(lines.contains("GOT 033[5;10R 033[?1;2c"), "{lines}");
        let mut seen = Vec::new();
        while let Ok(out) = viewer.try_recv() {
            if let PaneOutput::Bytes(b) = out {
                seen.extend_from_slice(&b);
            }
        }
        let seen = String::from_utf8_lossy(&seen);
        assert!(seen.contains("GOT"), "{seen:?}");
        assert!(
            !seen.contains("\x1b[6n") && !seen.contains("\x1b[c"),
            "a viewer was sent a question: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_program_that_asks_without_reading_gets_a_bounded_number_of_answers() {
        // 30,000 questions while the input is not read: unbounded, that is
        // 210,000 bytes of answers queued in the daemon; bounded, what the
        // kernel buffers for the PTY's input (about 68 KB) plus the few
        // still waiting.
        let pane = Pane::spawn(sh("stty raw -echo; i=0; \
             while [ $i -lt 30000 ]; do printf '\\033[c'; i=$((i+1)); done; \
             sleep 1; n=$(timeout --foreground 2 cat | wc -c); stty sane; printf '\\r\\nGOT %s\\r\\n' $n"))
        .unwrap();
        let exit = pane.wait_exit(Duration::from_secs(20)).await.unwrap();
        assert_eq!(exit.code, Some(0));
        let lines = pane.lines(5).join("\n");
        let got: usize = lines
            .split("GOT ")
            .nth(1)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("{lines}"));
        assert!(got > 0 && got < 120_000, "{got} bytes of answers: {lines}");
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
