//! Panes: the terminals agents live in, their parsed screen and
//! scrollback, and the rules for typing into them.
//!
//! Vocabulary:
//! - **pane**: one terminal, the process tree under it, and what it
//!   displayed ([`pane`]); backed by a PTY of our own ([`Pane::spawn`])
//!   or by an existing tmux pane ([`Pane::adopt_tmux`], [`tmux`]).
//! - **profile**: how a provider's program wants input: bracketed paste or
//!   not, how long to let a paste settle, which key submits, how to ask it
//!   to quit, and how its screen shows it ready, busy or blocked
//!   ([`profile`], [`ready`]).
//! - **absorb**: read the program's output off the PTY as fast as it writes.
//! - **parse**: turn output into a screen and scrollback lines ([`screen`]);
//!   what the parser falls behind by is bounded, and what it skips is
//!   counted.
//!
//! A noisy or stuck pane slows only itself: each PTY pane has its own
//! reader, parser, writer and waiter threads, and each tmux pane its own
//! watcher.

mod backlog;
pub mod modes;
pub mod pane;
pub mod profile;
pub mod queries;
pub mod ready;
pub mod render;
pub mod screen;
pub mod snapshot;
pub mod tmux;

pub use pane::{
    ExitInfo, OutputStats, Pane, PaneOutput, PaneSpec, PasteReport, StopReport, StopStep,
    Submitted, TmuxSpec,
};
pub use profile::Profile;
pub use ready::{Readiness, ScreenRules};
pub use snapshot::Snapshot;

/// Why a pane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TermError {
    #[error("failed to start {program:?}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("working directory {0:?} does not exist or is not a directory")]
    BadCwd(String),
    #[error("the pane's program has exited")]
    NotRunning,
    #[error("the pane's program has not read its input for {0} ms")]
    InputStalled(u64),
    #[error("text for a paste may only hold printable characters, newlines and tabs")]
    UnsafePaste,
    #[error("terminal size must be between 1x1 and 1000x1000, got {rows}x{cols}")]
    BadSize { rows: u16, cols: u16 },
    #[error("pty error: {0}")]
    Pty(String),
    #[error("tmux: {0}")]
    Tmux(String),
}
