//! Connections to other hosts over SSH, through the system's `ssh`: one
//! ControlMaster per destination, its control socket in the data dir's
//! private `conn/` directory, and panes whose program runs on the host
//! through that master (`ssh -S <ctl> -tt <host> -- <command>`).
//!
//! Nothing a caller gives reaches `ssh` as an option: a destination is a
//! strict class ([`Destination`]: `[user@]host` with host a DNS name or
//! ssh config alias, IPv4 or `[IPv6]`, and a port number), always passed
//! after `--`; the options are ours alone. `BatchMode=yes` and a null
//! stdin mean no prompt can ever wait, and every run of `ssh` is bounded
//! in time. The programs `ssh` runs get an environment built from the
//! pane allow-list ([`crate::pane_env`]), never an `AGENTBUS_*` variable.
//!
//! [`aws`] lists the profiles of the AWS config files (names and hints,
//! never keys).

pub mod aws;

use crate::config::Config;
use agentbus_proto::ids::escape_for_display;
use agentbus_proto::now_ms;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where an ssh destination is refused: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHost(pub String);

impl std::fmt::Display for BadHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated ssh destination: who, where, which port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    user: Option<String>,
    /// A DNS name or alias (lowercase, as ssh matches it), an IPv4
    /// address, or an IPv6 address without its brackets.
    host: String,
    ipv6: bool,
    port: Option<u16>,
}

const MAX_HOST: usize = 253;
const MAX_USER: usize = 64;

fn user_ok(u: &str) -> Result<(), String> {
    if u.is_empty() || u.len() > MAX_USER {
        return Err(format!("the user must be 1 to {MAX_USER} characters"));
    }
    if u.starts_with(['-', '.']) {
        return Err("the user must not start with '-' or '.'".into());
    }
    if !u
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("the user may hold only letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

fn name_ok(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > MAX_HOST {
        return Err(format!("the host must be 1 to {MAX_HOST} characters"));
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated part of the host must be 1 to 63 characters".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("no part of the host may start or end with '-'".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "the host must be a DNS name or ssh config alias (letters, digits, '-', '_', '.'), \
                 an IPv4 address, or an IPv6 address in brackets"
                    .into(),
            );
        }
    }
    Ok(())
}

impl Destination {
    /// Parses `[user@]host` and an optional port; the message says what
    /// is wrong (the text shown escaped).
    pub fn parse(text: &str, port: Option<u16>) -> Result<Destination, BadHost> {
        let bad = |why: String| {
            BadHost(format!(
                "host {} is not an ssh destination: {why}",
                escape_for_display(text, 80)
            ))
        };
        if text.len() > MAX_USER + 1 + MAX_HOST + 2 {
            return Err(bad("it is too long".into()));
        }
        if port == Some(0) {
            return Err(bad("port 0 is not a port".into()));
        }
        let (user, host) = match text.split_once('@') {
            Some((u, h)) => {
                user_ok(u).map_err(bad)?;
                (Some(u.to_string()), h)
            }
            None => (None, text),
        };
        let (host, ipv6) = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| bad("an IPv6 address must be written [addr]".into()))?;
            let addr: Ipv6Addr = inner
                .parse()
                .map_err(|_| bad("what is in brackets is not an IPv6 address".into()))?;
            (addr.to_string(), true)
        } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
            (v4.to_string(), false)
        } else {
            if host.contains(':') {
                return Err(bad(
                    "write an IPv6 address in brackets, and the port as the port param".into(),
                ));
            }
            name_ok(host).map_err(bad)?;
            (host.to_ascii_lowercase(), false)
        };
        Ok(Destination {
            user,
            host,
            ipv6,
            port,
        })
    }

    /// The same destination on `port` (none: ssh's, from its config).
    pub fn with_port(mut self, port: std::num::NonZeroU16) -> Destination {
        self.port = Some(port.get());
        self
    }

    /// The host part, as scopes match it (`host:<glob>`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host as a caller writes it (IPv6 in brackets).
    pub fn host_shown(&self) -> String {
        if self.ipv6 {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `[user@]host` as `ssh` takes it (an IPv6 address bare).
    fn ssh_arg(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// How a caller writes it: `[user@]host`, IPv6 in brackets.
    pub fn shown(&self) -> String {
        let host = self.host_shown();
        match &self.user {
            Some(u) => format!("{u}@{host}"),
            None => host,
        }
    }

    /// What identifies the connection: destination and port.
    fn key(&self) -> String {
        match self.port {
            Some(p) => format!("{}#{p}", self.shown()),
            None => self.shown(),
        }
    }

    /// The control socket's file name: short (a socket path has 108
    /// bytes) and free of anything the caller wrote.
    fn socket_name(&self) -> String {
        let digest = Sha256::digest(self.key().as_bytes());
        hex::encode(&digest[..8])
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())?;
        if let Some(p) = self.port {
            write!(f, " port {p}")?;
        }
        Ok(())
    }
}

/// A word quoted for a POSIX shell: single quotes, each `'` written
/// `'\''`. Nothing inside single quotes is special.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command line a remote pane's login shell runs: `cd` to `cwd`,
/// export `env`, `exec` the program. Every word is quoted.
pub fn remote_command(
    command: &[String],
    cwd: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(dir) = cwd {
        if !dir.starts_with('/') || dir.contains('\0') {
            return Err(format!(
                "cwd {} must be an absolute path on the host",
                escape_for_display(dir, 80)
            ));
        }
        parts.push(format!("cd {}", shell_quote(dir)));
    }
    for (k, v) in env {
        let name_ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(format!(
                "environment variable {} cannot be set on a host: a name is letters, digits and '_'",
                escape_for_display(k, 40)
            ));
        }
        parts.push(format!("export {k}={}", shell_quote(v)));
    }
    if command.is_empty() || command.iter().any(|w| w.contains('\0')) {
        return Err("the command must be words without NUL".into());
    }
    let words: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
    parts.push(format!("exec {}", words.join(" ")));
    Ok(parts.join(" && "))
}

/// The command a remote pane runs when none is given: the host's login
/// shell.
pub fn remote_login_shell() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "exec \"${SHELL:-/bin/sh}\" -l".into(),
    ]
}

/// What `ssh -O check` said of a connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Connected,
    Disconnected,
    Error,
}

/// A connection as the daemon knows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnInfo {
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub status: Status,
    /// Since when it has had this status (ms since the epoch).
    pub since_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_pid: Option<u32>,
    /// What ssh said, for an error (or why it is disconnected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a connection operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnError {
    /// `ssh` could not be run at all.
    NoSsh(String),
    /// The control socket's directory could not be made or its path is
    /// too long.
    Dir(String),
    /// ssh tried and failed: what it said.
    Failed(String),
    TimedOut(String),
    AlreadyConnected(String),
}

impl ConnError {
    pub fn code(&self) -> &'static str {
        match self {
            ConnError::NoSsh(_) => "SSH_UNAVAILABLE",
            ConnError::Dir(_) => "CONN_DIR",
            ConnError::Failed(_) => "CONNECT_FAILED",
            ConnError::TimedOut(_) => "CONNECT_TIMEOUT",
            ConnError::AlreadyConnected(_) => "ALREADY_CONNECTED",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ConnError::NoSsh(m)
            | ConnError::Dir(m)
            | ConnError::Failed(m)
            | ConnError::TimedOut(m)
            | ConnError::AlreadyConnected(m) => m,
        }
    }
}

/// The connections of one daemon.
#[derive(Default)]
pub struct Conns {
    known: Mutex<BTreeMap<String, (Destination, ConnInfo)>>,
    /// One connect or disconnect at a time per destination.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What one run of ssh did.
struct Ran {
    ok: bool,
    timed_out: bool,
    /// Its stderr, at most 16 KiB.
    said: String,
}

/// Longest path of a control socket: `sun_path` holds 108 bytes with
/// its NUL, and ssh first binds a name 17 bytes longer, then renames it.
const MAX_SOCKET_PATH: usize = 107 - 17;

/// ssh's words, made safe to show: control characters escaped, the last
/// lines only (the earlier ones are warnings), bounded.
fn tidy(said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    let shown = escape_for_display(&tail, 400);
    shown[1..shown.len() - 1].to_string()
}

/// A path as ssh's `-S` takes it: ssh expands `%` tokens in it, so a
/// `%` of the path is written `%%` (a `${` is refused before).
fn ssh_path(p: &Path) -> String {
    p.display().to_string().replace('%', "%%")
}

/// Runs `cmd` with a null stdin and stdout, its stderr read, in a
/// process group of its own that is killed after `timeout`. Blocking.
fn run(mut cmd: Command, timeout: Duration) -> std::io::Result<Ran> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let mut stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(16 * 1024).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    let deadline = Instant::now() + timeout;
    let (ok, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (status.success(), false);
        }
        if Instant::now() >= deadline {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            break (false, true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let said = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    Ok(Ran {
        ok,
        timed_out,
        said: String::from_utf8_lossy(&said).into_owned(),
    })
}

/// The environment of every `ssh` the daemon runs: the pane allow-list
/// (and the agent socket, for keys held there); never `AGENTBUS_*`.
pub fn ssh_env(
    config: &Config,
    extra: &[&str],
    is_secret: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut pass = config.env_pass(agentbus_proto::api::Provider::Shell);
    pass.extend_from_slice(extra);
    let daemon_env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    crate::pane_env::pass_through(daemon_env, &pass, is_secret)
}

impl Conns {
    /// The control socket of `dest` in `<data_dir>/conn/`, the directory
    /// made (0700) and checked if need be.
    pub fn control_path(&self, config: &Config, dest: &Destination) -> Result<PathBuf, ConnError> {
        let dir = crate::private_dir::PrivateDir::open(&config.daemon.data_dir)
            .and_then(|d| d.sub("conn"))
            .map_err(|e| ConnError::Dir(format!("the control socket directory: {e}")))?;
        let path = dir.path().join(dest.socket_name());
        if path.to_string_lossy().contains("${") {
            return Err(ConnError::Dir(format!(
                "the data dir {} holds \"${{\", which ssh would read as a variable in the control socket's path: \
                 use another data dir",
                config.daemon.data_dir.display()
            )));
        }
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ConnError::Dir(format!(
                "the control socket path {} is longer than a socket path may be ({MAX_SOCKET_PATH} bytes): \
                 use a shorter data dir",
                path.display()
            )));
        }
        Ok(path)
    }

    /// The options every ssh run starts with: config file, control
    /// socket, no prompts, the connect timeout, the port.
    fn base(config: &Config, ctl: &Path, dest: &Destination) -> Vec<String> {
        let c = &config.conn;
        let mut args = Vec::new();
        if let Some(f) = &c.ssh_config {
            args.push("-F".into());
            args.push(f.display().to_string());
        }
        args.push("-S".into());
        args.push(ssh_path(ctl));
        // Options on the command line win over the ssh config: whatever
        // the user's config says, a connection a caller asked for forwards
        // neither the user's ssh-agent nor X nor ports, nor runs a local
        // command.
        for o in [
            "BatchMode=yes".to_string(),
            format!("ConnectTimeout={}", c.connect_timeout_s),
            "ForwardAgent=no".to_string(),
            "ForwardX11=no".to_string(),
            "ClearAllForwardings=yes".to_string(),
            "PermitLocalCommand=no".to_string(),
        ] {
            args.push("-o".into());
            args.push(o);
        }
        if let Some(p) = dest.port {
            args.push("-p".into());
            args.push(p.to_string());
        }
        args
    }

    fn command(config: &Config, args: Vec<String>, env: &[(String, String)]) -> Command {
        let mut cmd = Command::new(&config.conn.ssh);
        cmd.args(args).env_clear().envs(env.iter().cloned());
        cmd
    }

    async fn ssh(
        config: &Config,
        args: Vec<String>,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Ran, ConnError> {
        let cmd = Self::command(config, args, &env);
        let ssh = config.conn.ssh.clone();
        tokio::task::spawn_blocking(move || run(cmd, timeout))
            .await
            .map_err(|e| ConnError::NoSsh(format!("running {ssh}: {e}")))?
            .map_err(|e| {
                ConnError::NoSsh(format!(
                    "could not run {ssh} ({e}): install OpenSSH's client, or set conn.ssh"
                ))
            })
    }

    fn lock_of(&self, dest: &Destination) -> Arc<tokio::sync::Mutex<()>> {
        agentbus_proto::sync::lock(&self.busy)
            .entry(dest.key())
            .or_default()
            .clone()
    }

    /// Records what is now known of `dest`; the time changes only with
    /// the status.
    fn record(
        &self,
        dest: &Destination,
        status: Status,
        pid: Option<u32>,
        message: Option<String>,
    ) -> ConnInfo {
        self.note(dest, status, pid, message, true)
    }

    /// As [`Conns::record`]; a destination not known yet is remembered
    /// only with `remember_new` (a status asked of any host must not
    /// grow the table).
    fn note(
        &self,
        dest: &Destination,
        status: Status,
        pid: Option<u32>,
        message: Option<String>,
        remember_new: bool,
    ) -> ConnInfo {
        let mut known = agentbus_proto::sync::lock(&self.known);
        let old = known.get(&dest.key());
        let since = match old {
            Some((_, old)) if old.status == status => old.since_ms,
            _ => now_ms(),
        };
        let remember = remember_new || old.is_some();
        let info = ConnInfo {
            host: dest.shown(),
            port: dest.port,
            status,
            since_ms: since,
            master_pid: pid,
            message,
        };
        if remember {
            known.insert(dest.key(), (dest.clone(), info.clone()));
        }
        info
    }

    /// Asks the master of `dest` (`ssh -O check`) whether it is up. A
    /// stale socket (no master behind it) is removed.
    pub async fn check(
        &self,
        config: &Config,
        dest: &Destination,
        env: Vec<(String, String)>,
    ) -> Result<ConnInfo, ConnError> {
        let ctl = self.control_path(config, dest)?;
        let (status, pid, message) = Self::probe(config, &ctl, dest, env).await?;
        let up = status == Status::Connected;
        Ok(self.note(dest, status, pid, message, up))
    }

    async fn probe(
        config: &Config,
        ctl: &Path,
        dest: &Destination,
        env: Vec<(String, String)>,
    ) -> Result<(Status, Option<u32>, Option<String>), ConnError> {
        if std::fs::symlink_metadata(ctl).is_err() {
            return Ok((Status::Disconnected, None, None));
        }
        let mut args = Self::base(config, ctl, dest);
        args.extend(["-O".into(), "check".into(), "--".into(), dest.ssh_arg()]);
        let ran = Self::ssh(config, args, env, Duration::from_secs(10)).await?;
        if ran.ok {
            // "Master running (pid=1234)"
            let pid = ran
                .said
                .split("pid=")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|s| s.trim().parse().ok());
            return Ok((Status::Connected, pid, None));
        }
        let said = tidy(&ran.said);
        // Nobody behind the socket: a master that died. ssh's words alone
        // do not tell (a missing -F file is "No such file" too), so the
        // socket itself is asked before it is removed.
        let stale = matches!(
            std::os::unix::net::UnixStream::connect(ctl),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if stale {
            let _ = std::fs::remove_file(ctl);
            return Ok((
                Status::Disconnected,
                None,
                Some("the master had ended".into()),
            ));
        }
        let why = if ran.timed_out {
            "ssh -O check did not answer within 10 s".to_string()
        } else {
            said
        };
        Ok((Status::Error, None, Some(why)))
    }

    /// Starts the master of `dest`: `ssh -M -S <ctl> -o
    /// ControlPersist=yes -fN -- <dest>`. With `only_if_down`, a master
    /// that is up is kept (`connensure`); without, it is an error.
    /// Returns the connection and whether it was made now.
    pub async fn connect(
        &self,
        config: &Config,
        dest: &Destination,
        env: Vec<(String, String)>,
        only_if_down: bool,
    ) -> Result<(ConnInfo, bool), ConnError> {
        let lock = self.lock_of(dest);
        let _one = lock.lock().await;
        let ctl = self.control_path(config, dest)?;
        let (status, pid, message) = Self::probe(config, &ctl, dest, env.clone()).await?;
        if status == Status::Error {
            // Something answers on the socket, but not as a master should:
            // starting another could leave two.
            let m = format!(
                "the connection to {dest} is in error ({}): conndisconnect it first",
                message.as_deref().unwrap_or("ssh -O check failed")
            );
            self.record(dest, status, None, message);
            return Err(ConnError::Failed(m));
        }
        if status == Status::Connected {
            let info = self.record(dest, status, pid, None);
            if only_if_down {
                return Ok((info, false));
            }
            return Err(ConnError::AlreadyConnected(format!(
                "{dest} is already connected (master pid {}): use connensure, or conndisconnect first",
                pid.map_or_else(|| "?".into(), |p| p.to_string())
            )));
        }
        let _ = std::fs::remove_file(&ctl);
        let mut args = vec!["-M".to_string()];
        args.extend(Self::base(config, &ctl, dest));
        args.extend([
            "-o".into(),
            "ControlPersist=yes".into(),
            "-f".into(),
            "-N".into(),
            "--".into(),
            dest.ssh_arg(),
        ]);
        let timeout = Duration::from_secs(config.conn.connect_timeout_s + 5);
        let ran = Self::ssh(config, args, env.clone(), timeout).await?;
        if ran.timed_out {
            let m = format!(
                "ssh to {dest} did not finish connecting within {} s; check that the host is reachable",
                timeout.as_secs()
            );
            self.record(dest, Status::Error, None, Some(m.clone()));
            return Err(ConnError::TimedOut(m));
        }
        if !ran.ok {
            let m = format!(
                "ssh could not connect to {dest}: {}",
                match tidy(&ran.said) {
                    s if s.is_empty() => "it said nothing".to_string(),
                    s => s,
                }
            );
            self.record(dest, Status::Error, None, Some(m.clone()));
            return Err(ConnError::Failed(m));
        }
        // The master answers on its socket once it has forked.
        let (status, pid, message) = Self::probe(config, &ctl, dest, env).await?;
        let info = self.record(dest, status.clone(), pid, message.clone());
        if status != Status::Connected {
            return Err(ConnError::Failed(format!(
                "ssh connected to {dest} but its master does not answer: {}",
                message.unwrap_or_default()
            )));
        }
        Ok((info, true))
    }

    /// Ends the master of `dest` (`ssh -O exit`; also when its check
    /// failed) and waits (up to 5 s) for it to be gone. Returns the
    /// connection and whether one was there.
    pub async fn disconnect(
        &self,
        config: &Config,
        dest: &Destination,
        env: Vec<(String, String)>,
    ) -> Result<(ConnInfo, bool), ConnError> {
        let lock = self.lock_of(dest);
        let _one = lock.lock().await;
        let ctl = self.control_path(config, dest)?;
        let (status, pid, _) = Self::probe(config, &ctl, dest, env.clone()).await?;
        if status == Status::Disconnected {
            let info = self.note(dest, Status::Disconnected, None, None, false);
            return Ok((info, false));
        }
        let mut args = Self::base(config, &ctl, dest);
        args.extend(["-O".into(), "exit".into(), "--".into(), dest.ssh_arg()]);
        let ran = Self::ssh(config, args, env, Duration::from_secs(10)).await?;
        if !ran.ok {
            let m = format!("ssh -O exit for {dest} failed: {}", tidy(&ran.said));
            self.record(dest, Status::Error, pid, Some(m.clone()));
            return Err(ConnError::Failed(m));
        }
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok((self.record(dest, Status::Disconnected, None, None), true))
    }

    /// Every destination known since start, as last seen.
    pub fn known(&self) -> Vec<(Destination, ConnInfo)> {
        agentbus_proto::sync::lock(&self.known)
            .values()
            .cloned()
            .collect()
    }

    /// The argv of a pane whose program runs on `dest` through its
    /// master: `ssh ... -tt -- <dest> <quoted command>`.
    pub fn pane_argv(
        &self,
        config: &Config,
        dest: &Destination,
        command: &[String],
        cwd: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, String> {
        let ctl = self
            .control_path(config, dest)
            .map_err(|e| e.message().to_string())?;
        let remote = remote_command(command, cwd, env)?;
        let mut argv = vec![config.conn.ssh.clone()];
        argv.extend(Self::base(config, &ctl, dest));
        argv.extend([
            "-o".into(),
            "ControlMaster=no".into(),
            // With the master gone, fail rather than connect on our own.
            "-o".into(),
            "ProxyCommand=false".into(),
            "-tt".into(),
            "--".into(),
            dest.ssh_arg(),
            remote,
        ]);
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_a_strict_class() {
        for ok in [
            "web-1",
            "Web-1.Example.COM",
            "deploy@web_1",
            "10.0.0.1",
            "root@[::1]",
            "[fe80::1]",
            "a",
        ] {
            Destination::parse(ok, None).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let d = Destination::parse("Deploy@Web-1.Example.COM", Some(2222)).unwrap();
        assert_eq!(d.shown(), "Deploy@web-1.example.com");
        assert_eq!(d.ssh_arg(), "Deploy@web-1.example.com");
        let v6 = Destination::parse("[0::1]", None).unwrap();
        assert_eq!(
            (v6.shown().as_str(), v6.ssh_arg().as_str()),
            ("[::1]", "::1")
        );
        let long = "a".repeat(300);
        let label = format!("{}.b", "a".repeat(64));
        for bad in [
            "",
            "-oProxyCommand=touch /x",
            "-p22",
            "a b",
            "a\tb",
            "host;touch x",
            "host`id`",
            "$(id)",
            "%h",
            "a%rb",
            "h\u{e9}te",
            "ho\u{200b}st",
            "host\n",
            "a@b@c",
            "@host",
            "-u@host",
            "user@",
            "::1",
            "[::1",
            "[nothost]",
            "[fe80::1%eth0]",
            "host:22",
            ".host",
            "host.",
            "a..b",
            "-host",
            "host-",
            "ho/st",
            "ho'st",
            long.as_str(),
            label.as_str(),
        ] {
            let e = Destination::parse(bad, None).unwrap_err();
            assert!(e.0.starts_with("host \""), "{bad:?}: {e}");
            assert!(!e.0.chars().any(char::is_control), "{e}");
        }
        assert!(Destination::parse("h", Some(0)).is_err());
    }

    #[test]
    fn socket_names_are_short_and_distinct() {
        let a = Destination::parse("a", None).unwrap();
        let b = Destination::parse("a", Some(22)).unwrap();
        let c = Destination::parse("A", None).unwrap();
        assert_eq!(a.socket_name().len(), 16);
        assert_ne!(a.socket_name(), b.socket_name());
        assert_eq!(a.socket_name(), c.socket_name());
    }

    /// Runs `sh -c <line>` as the remote shell would, and returns what it
    /// printed.
    fn through_sh(line: &str) -> String {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn remote_words_reach_the_program_as_they_were() {
        let hostile = [
            "it's",
            "'",
            "''",
            "a'\\''b",
            "$(touch /nonexistent/x)",
            "`id`",
            "; echo pwned",
            "&& false",
            "$HOME",
            "*",
            "line\nbreak",
            "\\",
            "\"",
            "",
            "-n",
            "caf\u{e9} \u{1f600}",
            "!event",
        ];
        let mut command = vec!["printf".to_string(), "[%s]\\n".to_string()];
        command.extend(hostile.iter().map(|s| s.to_string()));
        let mut env = BTreeMap::new();
        env.insert("X_VAL".to_string(), "a'b $(id)".to_string());
        let line = remote_command(&command, Some("/"), &env).unwrap();
        let expected: String = hostile.iter().map(|w| format!("[{w}]\n")).collect();
        assert_eq!(through_sh(&line), expected);
        let line = remote_command(
            &["sh".into(), "-c".into(), "printf %s \"$X_VAL\"; pwd".into()],
            Some("/tmp"),
            &env,
        )
        .unwrap();
        assert_eq!(through_sh(&line), "a'b $(id)/tmp\n");
        assert!(remote_command(&["x".into()], Some("rel"), &env).is_err());
        let mut bad_env = BTreeMap::new();
        bad_env.insert("A;B".to_string(), "v".to_string());
        assert!(remote_command(&["x".into()], None, &bad_env).is_err());
        assert!(remote_command(&[], None, &BTreeMap::new()).is_err());
    }

    #[test]
    fn a_percent_in_the_socket_path_stays_a_percent() {
        assert_eq!(
            ssh_path(Path::new("/home/u/100%h/conn/ab")),
            "/home/u/100%%h/conn/ab"
        );
        let mut config = Config::default();
        let dir = tempfile::tempdir().unwrap();
        config.daemon.data_dir = dir.path().join("a${HOME}");
        let d = Destination::parse("h", None).unwrap();
        let e = Conns::default().control_path(&config, &d).unwrap_err();
        assert_eq!(e.code(), "CONN_DIR");
    }

    #[test]
    fn what_ssh_said_is_tidied() {
        assert_eq!(
            tidy("Warning: x\n\nssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"),
            "Warning: x; ssh: connect to host 127.0.0.1 port 1: Connection refused"
        );
        assert!(!tidy("a\u{1b}[31mred\u{7}").contains('\u{1b}'));
    }
}
