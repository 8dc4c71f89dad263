//! tmux as a terminal host: commands against one tmux server, what its
//! panes are, and how to find the server a caller means.
//!
//! Everything goes through the `tmux` program (no control mode): one
//! short-lived process per command, each a few milliseconds. A pane is
//! named by its server's socket, its `%N` id and the pid of its first
//! process ([`PaneRef`]): `%N` alone is reused across servers, and a pane
//! replaced with `respawn-pane` keeps its id but not its pid.

use crate::snapshot::Snapshot;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Separates the fields of one pane's line in tmux's output. Free-text
/// fields (path, label) come last so a separator inside them is harmless.
const SEP: char = '\u{1f}';

/// Why a tmux command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TmuxError {
    #[error("tmux is not installed or not in PATH")]
    NotInstalled,
    /// tmux's own message (`can't find pane: %9`, `no server running ...`).
    #[error("{0}")]
    Failed(String),
}

/// One tmux server: the default one, or the one at a socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    socket: Option<PathBuf>,
}

/// The fixed facts of a pane, from one `list-panes` / `display-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneInfo {
    /// `%N`, unique on its server (and reused by other servers).
    pub id: String,
    /// The pid of the pane's first process (a new one after `respawn-pane`).
    pub pid: u32,
    pub session: String,
    pub window: u32,
    pub index: u32,
    pub width: u16,
    pub height: u16,
    pub dead: bool,
    /// Exit status of a dead pane's program, when tmux kept the pane.
    pub dead_status: Option<i32>,
    /// The name of the pane's foreground program (`pane_current_command`).
    pub command: String,
    pub cwd: String,
    /// The `@name` pane option; empty when unlabelled.
    pub label: String,
}

impl PaneInfo {
    /// `session:window.pane`.
    pub fn at(&self) -> String {
        format!("{}:{}.{}", self.session, self.window, self.index)
    }
}

/// A pane as a jekt target: which server, which pane, which program.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaneRef {
    pub server: Server,
    pub id: String,
    pub pid: u32,
}

const PANE_FORMAT: &str = "#{pane_id}\u{1f}#{pane_pid}\u{1f}#{session_name}\u{1f}#{window_index}\u{1f}#{pane_index}\u{1f}#{pane_width}\u{1f}#{pane_height}\u{1f}#{pane_dead}\u{1f}#{pane_dead_status}\u{1f}#{pane_current_command}\u{1f}#{pane_current_path}\u{1f}#{@name}";

fn parse_pane(line: &str) -> Option<PaneInfo> {
    let f: Vec<&str> = line.splitn(12, SEP).collect();
    if f.len() != 12 || !f[0].starts_with('%') {
        return None;
    }
    Some(PaneInfo {
        id: f[0].to_string(),
        pid: f[1].parse().ok()?,
        session: f[2].to_string(),
        window: f[3].parse().ok()?,
        index: f[4].parse().ok()?,
        width: f[5].parse().ok()?,
        height: f[6].parse().ok()?,
        dead: f[7] == "1",
        dead_status: f[8].parse().ok(),
        command: f[9].to_string(),
        cwd: f[10].to_string(),
        label: f[11].to_string(),
    })
}

impl Server {
    /// The server tmux reaches without `-S` (`$TMUX_TMPDIR/tmux-UID/default`).
    pub fn default_server() -> Server {
        Server { socket: None }
    }

    pub fn at(socket: impl Into<PathBuf>) -> Server {
        Server {
            socket: Some(socket.into()),
        }
    }

    /// The socket given, if any (`None`: the default server).
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// `tmux [-S socket]`, ready for arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        if let Some(s) = &self.socket {
            cmd.arg("-S").arg(s);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `tmux args...` and returns its standard output.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String, TmuxError> {
        self.run_with_input(args, None)
    }

    /// As [`Server::run`], writing `input` to tmux's standard input.
    pub fn run_with_input<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        input: Option<&[u8]>,
    ) -> Result<String, TmuxError> {
        let mut cmd = self.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TmuxError::NotInstalled,
            _ => TmuxError::Failed(format!("failed to run tmux: {e}")),
        })?;
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(bytes)
                .map_err(|e| TmuxError::Failed(format!("failed to write to tmux: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| TmuxError::Failed(format!("failed to run tmux: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(TmuxError::Failed(if msg.is_empty() {
                format!("tmux exited with {}", out.status)
            } else {
                msg
            }))
        }
    }

    /// Whether a server answers on this socket.
    pub fn is_alive(&self) -> bool {
        self.run(&["list-sessions"]).is_ok()
    }

    /// The server's socket path as tmux reports it (also for the default
    /// server, so one server has one name however it was reached).
    pub fn socket_path(&self) -> Result<PathBuf, TmuxError> {
        let out = self.run(&["display-message", "-p", "#{socket_path}"])?;
        Ok(PathBuf::from(out.trim_end_matches('\n')))
    }

    /// Every pane of the server.
    pub fn panes(&self) -> Result<Vec<PaneInfo>, TmuxError> {
        let out = self.run(&["list-panes", "-a", "-F", PANE_FORMAT])?;
        Ok(out.lines().filter_map(parse_pane).collect())
    }

    /// The pane `target` (any tmux target form) names.
    pub fn pane(&self, target: &str) -> Result<PaneInfo, TmuxError> {
        // `display-message -t` falls back to some other pane (or prints
        // nothing) when the target does not exist; `capture-pane` fails.
        // One invocation: the capture checks, the last line describes.
        let out = self.run(&[
            "capture-pane",
            "-p",
            "-t",
            target,
            "-S",
            "0",
            "-E",
            "0",
            ";",
            "display-message",
            "-p",
            "-t",
            target,
            PANE_FORMAT,
        ])?;
        out.trim_end_matches('\n')
            .rsplit('\n')
            .next()
            .and_then(parse_pane)
            .ok_or_else(|| TmuxError::Failed(format!("can't find pane: {target}")))
    }

    /// The pane's text: `history` lines of scrollback above the visible
    /// screen (`None`: all of it), wrapped lines joined; with `escapes`,
    /// colours and attributes as escape sequences.
    pub fn capture(
        &self,
        pane: &str,
        history: Option<u64>,
        escapes: bool,
    ) -> Result<String, TmuxError> {
        let start = match history {
            Some(n) => format!("-{n}"),
            None => "-".to_string(),
        };
        let mut args = vec!["capture-pane", "-p", "-J", "-t", pane, "-S", &start];
        if escapes {
            args.push("-e");
        }
        self.run(&args)
    }

    /// Types `text` literally (`send-keys -l`): no key names, no Enter.
    pub fn type_text(&self, pane: &str, text: &str) -> Result<(), TmuxError> {
        self.run(&["send-keys", "-t", pane, "-l", "--", text])
            .map(drop)
    }

    /// Sends exact bytes as keys (`send-keys -H`).
    pub fn send_bytes(&self, pane: &str, bytes: &[u8]) -> Result<(), TmuxError> {
        // tmux takes one argument per byte; keep each command modest.
        for chunk in bytes.chunks(512) {
            let mut args: Vec<String> =
                vec!["send-keys".into(), "-t".into(), pane.into(), "-H".into()];
            args.extend(chunk.iter().map(|b| format!("{b:02x}")));
            self.run(&args)?;
        }
        Ok(())
    }

    /// Pastes `text` into the pane through a buffer of its own:
    /// `load-buffer` from standard input, then `paste-buffer` with `-r`
    /// (newlines stay newlines), `-d` (the buffer is deleted) and, when
    /// `bracketed`, `-p` (tmux brackets the text if the program asked for
    /// bracketed paste). One tmux invocation, so nothing else is pasted in
    /// between.
    pub fn paste(&self, pane: &str, text: &str, bracketed: bool) -> Result<(), TmuxError> {
        let buffer = format!("agentbus-{}-{}", std::process::id(), unique());
        let mut args = vec!["load-buffer", "-b", &buffer, "-", ";", "paste-buffer"];
        if bracketed {
            args.push("-p");
        }
        args.extend(["-r", "-d", "-b", &buffer, "-t", pane]);
        self.run_with_input(&args, Some(text.as_bytes())).map(drop)
    }

    /// The pane's facts and its visible screen (with attributes), in one
    /// tmux invocation.
    pub fn snapshot(&self, pane: &str) -> Result<(PaneInfo, String), TmuxError> {
        let out = self.run(&[
            "display-message",
            "-p",
            "-t",
            pane,
            PANE_FORMAT,
            ";",
            "capture-pane",
            "-p",
            "-e",
            "-t",
            pane,
        ])?;
        let (first, screen) = out.split_once('\n').unwrap_or((&out, ""));
        let info = parse_pane(first)
            .ok_or_else(|| TmuxError::Failed(format!("can't find pane: {pane}")))?;
        Ok((info, screen.to_string()))
    }
}

impl Server {
    /// The pane's visible screen, cell by cell: its rows with their
    /// attributes (`capture-pane -e -N`) replayed into a screen of the
    /// pane's size, and the cursor where tmux has it; one invocation (the
    /// capture first: it fails for a pane that does not exist). A pane
    /// larger than 1000x1000 is refused.
    pub fn screen(&self, pane: &str) -> Result<Snapshot, TmuxError> {
        let out = self.run(&[
            "capture-pane",
            "-p",
            "-e",
            "-N",
            "-t",
            pane,
            ";",
            "display-message",
            "-p",
            "-t",
            pane,
            "#{pane_height} #{pane_width} #{cursor_y} #{cursor_x} #{cursor_flag}",
        ])?;
        let out = out.strip_suffix('\n').unwrap_or(&out);
        let (capture, last) = out.rsplit_once('\n').unwrap_or(("", out));
        let f: Vec<u16> = last
            .split(' ')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| TmuxError::Failed(format!("unexpected pane description {last:?}")))?;
        let [rows, cols, y, x, shown] = f[..] else {
            return Err(TmuxError::Failed(format!(
                "unexpected pane description {last:?}"
            )));
        };
        if !(1..=1000).contains(&rows) || !(1..=1000).contains(&cols) {
            return Err(TmuxError::Failed(format!(
                "pane {pane} is {cols}x{rows}: a screen shot takes panes of up to 1000x1000"
            )));
        }
        Ok(Snapshot::from_capture(
            rows,
            cols,
            capture,
            y,
            x,
            shown == 1,
        ))
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What the caller's environment says about tmux.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `TMUX_BRIDGE_SOCKET`
    pub bridge_socket: Option<String>,
    /// `$TMUX` (`socket,pid,session`)
    pub tmux: Option<String>,
    /// `$TMUX_PANE`
    pub pane: Option<String>,
    /// `$TMUX_TMPDIR`
    pub tmpdir: Option<String>,
    pub uid: u32,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            bridge_socket: var("TMUX_BRIDGE_SOCKET"),
            tmux: var("TMUX"),
            pane: var("TMUX_PANE"),
            tmpdir: var("TMUX_TMPDIR"),
            uid: nix::unistd::getuid().as_raw(),
        }
    }

    /// The socket path in `$TMUX`.
    pub fn tmux_socket(&self) -> Option<&str> {
        self.tmux
            .as_deref()
            .map(|t| t.split(',').next().unwrap_or(t))
            .filter(|s| !s.is_empty())
    }

    /// This user's tmux socket directories, where servers started without
    /// `-S` live.
    pub fn socket_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(t) = &self.tmpdir {
            dirs.push(Path::new(t).join(format!("tmux-{}", self.uid)));
        }
        for base in ["/tmp", "/private/tmp"] {
            let d = Path::new(base).join(format!("tmux-{}", self.uid));
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }
}

/// How the server was found, for `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    BridgeSocket,
    TmuxEnv,
    PaneScan,
    Default,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Found::BridgeSocket => "TMUX_BRIDGE_SOCKET",
            Found::TmuxEnv => "$TMUX",
            Found::PaneScan => "the server that knows $TMUX_PANE",
            Found::Default => "the default server",
        }
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Finds the server a caller means, in this order: `TMUX_BRIDGE_SOCKET`
/// (which must be a socket), the socket in `$TMUX` if a server answers
/// there, a server in this user's socket directories that knows
/// `$TMUX_PANE`, then the default server.
pub fn detect(env: &Env) -> Result<(Server, Found), String> {
    if let Some(s) = &env.bridge_socket {
        if is_socket(Path::new(s)) {
            return Ok((Server::at(s), Found::BridgeSocket));
        }
        return Err(format!("TMUX_BRIDGE_SOCKET={s} is not a valid socket"));
    }
    if let Some(s) = env.tmux_socket()
        && is_socket(Path::new(s))
    {
        let server = Server::at(s);
        if server.is_alive() {
            return Ok((server, Found::TmuxEnv));
        }
    }
    if let Some(pane) = &env.pane {
        for dir in env.socket_dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut socks: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_socket(p))
                .collect();
            socks.sort();
            for sock in socks {
                let server = Server::at(&sock);
                if server.pane(pane).is_ok() {
                    return Ok((server, Found::PaneScan));
                }
            }
        }
    }
    let server = Server::default_server();
    if server.is_alive() {
        return Ok((server, Found::Default));
    }
    Err(format!(
        "cannot find a reachable tmux server (TMUX={}, TMUX_PANE={})",
        env.tmux.as_deref().unwrap_or("<unset>"),
        env.pane.as_deref().unwrap_or("<unset>")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pane_line_keeps_free_text_at_the_end() {
        let line = "%3\u{1f}42\u{1f}main\u{1f}1\u{1f}0\u{1f}80\u{1f}24\u{1f}0\u{1f}\u{1f}bash\u{1f}/home/u\u{1f}worker one\u{1f}x";
        let p = parse_pane(line).unwrap();
        assert_eq!(
            (p.id.as_str(), p.pid, p.at(), p.label.as_str()),
            ("%3", 42, "main:1.0".to_string(), "worker one\u{1f}x")
        );
        assert!(!p.dead && p.dead_status.is_none());
        assert!(parse_pane("garbage").is_none());
    }

    #[test]
    fn the_socket_in_tmux_env_is_its_first_field() {
        let env = Env {
            tmux: Some("/tmp/tmux-1/work,123,0".into()),
            ..Env::default()
        };
        assert_eq!(env.tmux_socket(), Some("/tmp/tmux-1/work"));
        let env = Env {
            tmpdir: Some("/run/x".into()),
            uid: 7,
            ..Env::default()
        };
        assert_eq!(env.socket_dirs()[0], Path::new("/run/x/tmux-7"));
    }

    #[test]
    fn a_bridge_socket_that_is_not_a_socket_is_an_error() {
        let env = Env {
            bridge_socket: Some("/nonexistent/sock".into()),
            ..Env::default()
        };
        let err = detect(&env).unwrap_err();
        assert!(err.contains("is not a valid socket"), "{err}");
    }
}
