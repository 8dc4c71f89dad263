//! The tmux backend: an existing tmux pane adopted as an agent's
//! terminal. Input goes in by tmux commands, text comes from
//! `capture-pane`, and one watcher thread follows the pane: its size, when
//! its screen changed (its activity), and its end — the pane closing, its
//! server going away, its program exiting, or a new program in it.

use super::{Backend, ExitInfo, Io, Pane, PaneOutput, Shared, ended, one_line};
use crate::TermError;
use crate::modes::Modes;
use crate::profile::Profile;
use crate::tmux::{PaneInfo, PaneRef, TmuxError};
use agentbus_proto::sync::lock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

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

struct TmuxPane {
    pane: PaneRef,
    shared: Shared,
}

impl Pane {
    /// Takes an existing tmux pane as this pane's terminal; `info` is the
    /// pane as just read ([`crate::tmux::Server::pane`]). Fails if it is
    /// not `spec.pane`, is dead, or runs another program than
    /// `spec.pane.pid`. Nothing is started; a watcher thread follows the
    /// pane until it closes, is respawned, or is let go ([`Pane::stop`]).
    pub fn adopt_tmux(spec: TmuxSpec, info: &PaneInfo) -> Result<Pane, TermError> {
        let (id, pid) = (&spec.pane.id, spec.pane.pid);
        if info.id != *id {
            return Err(TermError::Tmux(format!(
                "{id} is not a pane id (it names {})",
                info.id
            )));
        }
        if info.pid != pid {
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
        let shared = Shared::new(info.height, info.width);
        let watcher = TmuxPane {
            pane: spec.pane.clone(),
            shared: shared.clone(),
        };
        let poll = spec.poll;
        std::thread::Builder::new()
            .name(format!("pane-tmux-{}", spec.label))
            .spawn(move || watcher.watch(poll))
            .map_err(|e| TermError::Pty(e.to_string()))?;
        let backend = TmuxPane {
            pane: spec.pane,
            shared: shared.clone(),
        };
        Ok(Pane::new(
            Some(pid),
            spec.profile,
            Arc::new(Modes::default()),
            shared,
            Box::new(backend),
            spec.input_timeout,
        ))
    }
}

fn tmux_err(e: TmuxError) -> TermError {
    TermError::Tmux(e.to_string())
}

/// Runs a tmux command off the async threads, bounded by `timeout`.
async fn tmux_call(
    timeout: Duration,
    call: impl FnOnce() -> Result<(), TmuxError> + Send + 'static,
) -> Result<(), TermError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(tmux_err(e)),
        Ok(Err(e)) => Err(TermError::Tmux(e.to_string())),
        Err(_) => Err(TermError::InputStalled(timeout.as_millis() as u64)),
    }
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

/// How an adopted tmux pane has ended, if it has: its program exited
/// (tmux kept the pane), or another program now runs in it.
fn tmux_ended(pane: &PaneRef, info: &PaneInfo) -> Option<ExitInfo> {
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

impl TmuxPane {
    /// Follows the pane until it ends: whether it still runs the same
    /// program, its size, and when its screen last changed.
    fn watch(self, poll: Duration) {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut last_screen: Option<u64> = None;
        let mut failures = 0;
        loop {
            if self.shared.exit.borrow().is_some() {
                return;
            }
            let end = match self.pane.server.snapshot(&self.pane.id) {
                Ok((info, screen)) => {
                    failures = 0;
                    *lock(&self.shared.size) = (info.height, info.width);
                    let mut h = DefaultHasher::new();
                    screen.hash(&mut h);
                    let h = h.finish();
                    if last_screen != Some(h) {
                        last_screen = Some(h);
                        self.shared.touched();
                        let _ = self.shared.output.send(PaneOutput::Resync);
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
                self.shared.record_end(info);
                return;
            }
            std::thread::sleep(poll);
        }
    }

    /// Checks that the pane still runs the program it was adopted with;
    /// if not, the pane has ended (recorded now, not at the watcher's
    /// next look) and nothing may be typed into it.
    async fn check_identity(&self, timeout: Duration) -> Result<(), TermError> {
        let (p, shared) = (self.pane.clone(), self.shared.clone());
        tmux_call(timeout, move || {
            let ended = match p.server.pane(&p.id) {
                Ok(info) => tmux_ended(&p, &info),
                Err(e) => Some(gone(&p, &e)),
            };
            match ended {
                Some(info) => {
                    let reason = info.reason.clone().unwrap_or_default();
                    shared.record_end(info);
                    Err(TmuxError::Failed(reason))
                }
                None => Ok(()),
            }
        })
        .await
        .map_err(|_| TermError::NotRunning)
    }
}

impl Backend for TmuxPane {
    fn write(&self, bytes: Vec<u8>, timeout: Duration) -> Io<'_, Result<(), TermError>> {
        let pane = self.pane.clone();
        Box::pin(tmux_call(timeout, move || {
            pane.server.send_bytes(&pane.id, &bytes)
        }))
    }

    fn paste(
        &self,
        text: &str,
        bracketed: bool,
        timeout: Duration,
    ) -> Io<'_, Result<(bool, usize), TermError>> {
        // Whether the program asked tmux for bracketed paste is not
        // something tmux tells: the text goes as one line, so no line
        // break can press Enter (tmux adds the brackets itself if the
        // program asked for them).
        let one = one_line(text);
        Box::pin(async move {
            self.check_identity(timeout).await?;
            let bytes = one.len();
            let p = self.pane.clone();
            tmux_call(timeout, move || p.server.paste(&p.id, &one, bracketed)).await?;
            Ok((bracketed, bytes))
        })
    }

    fn numbered_lines(&self, n: usize, after: Option<u64>) -> (u64, Vec<String>) {
        // Without `after`, only the end is wanted: capture no more.
        let history = after.is_none().then_some(n as u64);
        let text = self
            .pane
            .server
            .capture(&self.pane.id, history, false)
            .unwrap_or_default();
        crate::screen::select_numbered(text_lines(&text), 1, n, after)
    }

    fn visible_rows(&self) -> Vec<String> {
        let text = self
            .pane
            .server
            .capture(&self.pane.id, Some(0), false)
            .unwrap_or_default();
        text_lines(&text)
    }

    fn snapshot(&self) -> Result<crate::Snapshot, TermError> {
        self.pane.server.screen(&self.pane.id).map_err(tmux_err)
    }

    fn repaint(&self) -> Vec<u8> {
        let text = self
            .pane
            .server
            .capture(&self.pane.id, Some(0), true)
            .unwrap_or_default();
        let mut out = b"\x1b[H\x1b[2J".to_vec();
        out.extend_from_slice(text.trim_end_matches('\n').replace('\n', "\r\n").as_bytes());
        out
    }

    fn attach(&self) -> (Vec<u8>, broadcast::Receiver<PaneOutput>) {
        // Changes come as `Resync`: a repaint each. Subscribing first
        // means a change during the capture is repainted again.
        let rx = self.shared.output.subscribe();
        (self.repaint(), rx)
    }

    fn resize(&self, _rows: u16, _cols: u16) -> Result<(), TermError> {
        Err(TermError::Tmux(format!(
            "tmux pane {} is sized by tmux; resize it there",
            self.pane.id
        )))
    }

    fn foreground_group(&self) -> Option<u32> {
        None
    }

    fn foreground_program(&self) -> Io<'_, Option<String>> {
        let p = self.pane.clone();
        Box::pin(async move {
            let info = tokio::task::spawn_blocking(move || p.server.pane(&p.id))
                .await
                .ok()?
                .ok()?;
            Some(info.command)
        })
    }

    fn tmux(&self) -> Option<&PaneRef> {
        Some(&self.pane)
    }

    fn release(&self) -> bool {
        self.shared
            .record_end(ended(format!("released tmux pane {}", self.pane.id)));
        true
    }
}
