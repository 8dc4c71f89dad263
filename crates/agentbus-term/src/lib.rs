//! Hosted panes: a program in a real PTY, its parsed screen and scrollback,
//! and the rules for typing into it.
//!
//! Vocabulary:
//! - **pane**: one PTY, the process tree under it, and what it displayed.
//! - **profile**: how a provider's program wants input: bracketed paste or
//!   not, how long to let a paste settle, which key submits, how to ask it
//!   to quit ([`profile`]).
//! - **absorb**: read the program's output off the PTY as fast as it writes.
//! - **parse**: turn output into a screen and scrollback lines ([`screen`]).
//!
//! Each pane runs four threads, because each waits on a blocking call:
//! the *reader* absorbs output (and tracks the terminal modes the program
//! sets, from every byte); the *parser* keeps the screen and scrollback and
//! feeds attached terminals; the *writer* owns the PTY's input side, so a
//! program that never reads its input blocks only its own writer; the
//! *waiter* reaps the child and records its exit status. A noisy or stuck
//! pane therefore slows only itself.
//!
//! A pane can also be an existing tmux pane ([`tmux`], [`Pane::adopt_tmux`]):
//! input goes in by tmux commands, text comes from `capture-pane`, and one
//! watcher thread notices when the pane closes or is respawned.

mod backlog;
pub mod modes;
pub mod pane;
pub mod profile;
pub mod screen;
pub mod tmux;

pub use pane::{ExitInfo, Pane, PaneOutput, PaneSpec, PasteReport, StopReport, StopStep, TmuxSpec};
pub use profile::Profile;

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
