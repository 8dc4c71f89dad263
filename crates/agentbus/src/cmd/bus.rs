//! The agent-bus client trio, for any server of that protocol (`agentbus
//! relay` or another): `send` (body from stdin), `recv` (one block per
//! message on stdout, for a Monitor tool) and `listen` (a background
//! listener writing a human log and a JSONL log).
//!
//! Environment, as the agent-bus clients: `AGENT_BUS_URL`, `AGENT_NAME`, `AGENT_BUS_UA`
//! (default `Mozilla/5.0`), `AGENT_BUS_CHANNEL`; plus `AGENT_BUS_TOKEN`
//! (bearer, for a relay in auth mode) and `AGENT_BUS_STATE_DIR` (cursors,
//! logs; default `<data dir>/bus`).
//!
//! The cursor is the greatest `ts` received, kept in a file after every
//! message, so a restart neither loses nor repeats. It never jumps to the
//! server's `now`: that is lossless against any server, even one with
//! the reference design's truncation bug.

use super::daemon::TlsArgs;
use agentbus_daemon::tls::ClientTls;
use agentbus_proto::jekt::{clean_text, marker_field};
use agentbus_proto::relay::{DEFAULT_CHANNEL, RecvResponse, SeedError, SeedMessage};
use anyhow::{Context, bail};
use clap::Args;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long a client waits for a blocking `/recv` (servers hold it ~30 s).
pub const RECV_TIMEOUT: Duration = Duration::from_secs(35);
/// Pause after a failed poll; the cursor is kept.
const RETRY_AFTER: Duration = Duration::from_secs(2);
pub const DEFAULT_UA: &str = "Mozilla/5.0";

/// A client of one bus: its base URL, user agent and token.
#[derive(Clone)]
pub struct Bus {
    pub url: String,
    http: reqwest::Client,
    token: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Bus {
    pub fn new(
        url: &str,
        user_agent: &str,
        token: Option<String>,
        tls: &ClientTls,
    ) -> anyhow::Result<Bus> {
        let url = url.trim().trim_end_matches('/').to_string();
        tls.check_url(&url)
            .map_err(|e| anyhow::anyhow!("the bus URL: {e}"))?;
        let http = tls
            .builder()
            .map_err(anyhow::Error::msg)?
            .user_agent(user_agent)
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Bus { url, http, token })
    }

    /// The bus named by the environment.
    pub fn from_env(tls: &ClientTls) -> anyhow::Result<Bus> {
        let url = env("AGENT_BUS_URL").context(
            "AGENT_BUS_URL is not set: export the bus's base URL, e.g. AGENT_BUS_URL=http://127.0.0.1:8787",
        )?;
        let ua = env("AGENT_BUS_UA").unwrap_or_else(|| DEFAULT_UA.to_string());
        Bus::new(&url, &ua, env("AGENT_BUS_TOKEN"), tls)
    }

    /// A request that got no answer: the whole cause (a certificate not
    /// trusted says so, with the way out).
    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "could not reach the bus at {}: {}",
            self.url,
            agentbus_daemon::tls::error_chain(e)
        )
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The body of a 2xx answer; any other status is an error naming what
    /// the bus said.
    async fn accepted(resp: reqwest::Response) -> anyhow::Result<Vec<u8>> {
        let status = resp.status();
        let bytes = resp.bytes().await.context("the bus's answer was cut off")?;
        if !status.is_success() {
            let text = serde_json::from_slice::<SeedError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("the bus answered {status}: {}", clean_text(&text));
        }
        Ok(bytes.to_vec())
    }

    async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
        let bytes = Self::accepted(resp).await?;
        serde_json::from_slice(&bytes).context("the bus's answer is not the expected JSON")
    }

    /// Sends; once the bus has taken the message (any 2xx), this
    /// succeeds, whatever the answer's body holds: the agent-bus protocol
    /// promises only `ok` (and `ts` and `channel` may be missing).
    pub async fn send(
        &self,
        from: &str,
        to: &str,
        msg: &str,
        channel: Option<&str>,
    ) -> anyhow::Result<Sent> {
        let mut body = serde_json::json!({"from": from, "to": to, "msg": msg});
        if let Some(c) = channel {
            body["channel"] = c.into();
        }
        let resp = self
            .auth(self.http.post(format!("{}/send", self.url)).json(&body))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let bytes = Self::accepted(resp).await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(Sent {
            ts: answer.get("ts").and_then(serde_json::Value::as_f64),
            channel: answer
                .get("channel")
                .and_then(serde_json::Value::as_str)
                .map(String::from),
        })
    }

    pub async fn recv(
        &self,
        to: &str,
        since: f64,
        block: bool,
        channel: Option<&str>,
    ) -> anyhow::Result<RecvResponse> {
        let mut query = vec![
            ("to", to.to_string()),
            ("since", since.to_string()),
            ("block", block.to_string()),
        ];
        if let Some(c) = channel {
            query.push(("channel", c.to_string()));
        }
        let url = url::Url::parse_with_params(&format!("{}/recv", self.url), &query)
            .with_context(|| format!("bad bus URL {}", self.url))?;
        let resp = self
            .auth(self.http.get(url))
            .timeout(RECV_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        Self::answer(resp).await
    }
}

/// What a bus said of an accepted send (the agent-bus protocol promises
/// neither).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub ts: Option<f64>,
    pub channel: Option<String>,
}

/// Where cursors and logs live.
fn state_dir(flag: Option<PathBuf>, data_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = flag
        .or_else(|| env("AGENT_BUS_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| crate::client::data_dir(data_dir).join("bus"));
    agentbus_daemon::instance::ensure_private_dir(&dir)?;
    Ok(dir)
}

/// A name made safe as part of a file name.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The persisted `since` of one reader (`recv`/`listen`) of one name on
/// one channel of one bus.
struct Cursor {
    path: PathBuf,
    since: f64,
}

impl Cursor {
    fn open(dir: &Path, reader: &str, bus: &Bus, name: &str, channel: &str) -> Cursor {
        use sha2::{Digest, Sha256};
        let url = hex::encode(&Sha256::digest(bus.url.as_bytes())[..4]);
        let path = dir.join(format!(
            "{reader}-{}-{}-{url}.cursor",
            file_part(name),
            file_part(channel)
        ));
        let since = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .unwrap_or(0.0);
        Cursor { path, since }
    }

    /// Moves past `ts` and writes it down (atomically, by rename; not
    /// synced, to keep the moment between showing a message and
    /// recording it as short as it can be).
    fn advance(&mut self, ts: f64) -> anyhow::Result<()> {
        if ts > self.since {
            self.since = ts;
            let tmp = self.path.with_extension("cursor.tmp");
            // `{}` of an f64 is its shortest exact form: it reads back equal.
            std::fs::write(&tmp, ts.to_string())
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .with_context(|| format!("failed to write {}", self.path.display()))?;
        }
        Ok(())
    }
}

fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `HH:MM:SSZ` of a time in seconds.
fn clock(ts: f64) -> String {
    super::audit::clock((ts * 1000.0) as i64)
}

/// One message as a block: header, body, `---`. Escape sequences are
/// removed and every body line is indented, so no line of a body can pass
/// for a header or end the block early; a sender name that is not a plain
/// id is quoted and escaped.
pub fn block(m: &SeedMessage) -> String {
    format!(
        "[{}] from {}:\n{}\n---\n",
        clock(m.ts),
        marker_field(&m.from),
        super::mail::indented(&m.msg)
    )
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Recipient
    pub to: String,
    /// Sender [env: AGENT_NAME]
    #[arg(long)]
    pub from: Option<String>,
    /// Channel [env: AGENT_BUS_CHANNEL] [default: default]
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Whose messages to print
    pub name: String,
    /// Channel [env: AGENT_BUS_CHANNEL] [default: default]
    #[arg(long)]
    pub channel: Option<String>,
    /// Cursor directory [env: AGENT_BUS_STATE_DIR] [default: <data dir>/bus]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print what is waiting, then exit (no waiting)
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Whose messages to log [env: AGENT_NAME]
    #[arg(long)]
    pub name: Option<String>,
    /// Channel [env: AGENT_BUS_CHANNEL] [default: default]
    #[arg(long)]
    pub channel: Option<String>,
    /// Where the logs, heartbeat, pid and cursor files go [env: AGENT_BUS_STATE_DIR] [default: <data dir>/bus]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run in the background; prints the pid and the log paths
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

fn channel(flag: Option<String>) -> Option<String> {
    flag.or_else(|| env("AGENT_BUS_CHANNEL"))
}

pub async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let bus = Bus::from_env(&args.tls.client_tls())?;
    let from = args
        .from
        .or_else(|| env("AGENT_NAME"))
        .context("AGENT_NAME is not set: export this agent's name (or pass --from)")?;
    let mut body = String::new();
    std::io::stdin()
        .read_to_string(&mut body)
        .context("failed to read the message from stdin")?;
    let body = body.trim_end_matches(['\n', '\r']);
    if body.trim().is_empty() {
        bail!(
            "nothing to send: the message is read from stdin, e.g. echo hello | agentbus send bob"
        );
    }
    let r = bus
        .send(&from, &args.to, body, channel(args.channel).as_deref())
        .await?;
    let to = marker_field(&args.to);
    match (r.channel, r.ts) {
        (Some(c), Some(ts)) => outln!("sent to {to} on {} (ts {ts})", marker_field(&c)),
        (Some(c), None) => outln!("sent to {to} on {}", marker_field(&c)),
        (None, Some(ts)) => outln!("sent to {to} (ts {ts})"),
        (None, None) => outln!("sent to {to}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn recv(args: RecvArgs, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bus = Bus::from_env(&args.tls.client_tls())?;
    let channel = channel(args.channel);
    let dir = state_dir(args.state_dir, data_dir.as_deref())?;
    let shown = channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
    let mut cursor = Cursor::open(&dir, "recv", &bus, &args.name, shown);
    let mut out = std::io::stdout();
    loop {
        match bus
            .recv(&args.name, cursor.since, !args.once, channel.as_deref())
            .await
        {
            Ok(r) => {
                for m in &r.messages {
                    out.write_all(block(m).as_bytes())?;
                    out.flush()?;
                    cursor.advance(m.ts)?;
                }
                if args.once {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Err(e) if args.once => return Err(e),
            Err(e) => {
                eprintln!("agentbus recv: {e:#}; retrying in 2 s");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// The files of one listener.
struct ListenFiles {
    log: PathBuf,
    jsonl: PathBuf,
    heartbeat: PathBuf,
    pid: PathBuf,
    out: PathBuf,
}

impl ListenFiles {
    fn new(dir: &Path, name: &str, channel: &str) -> ListenFiles {
        let stem = format!("listen-{}-{}", file_part(name), file_part(channel));
        ListenFiles {
            log: dir.join(format!("{stem}.log")),
            jsonl: dir.join(format!("{stem}.jsonl")),
            heartbeat: dir.join(format!("{stem}.heartbeat")),
            pid: dir.join(format!("{stem}.pid")),
            out: dir.join(format!("{stem}.out")),
        }
    }
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))?;
    f.sync_data()?;
    Ok(())
}

pub async fn listen(args: ListenArgs, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bus = Bus::from_env(&args.tls.client_tls())?;
    let name = args
        .name
        .clone()
        .or_else(|| env("AGENT_NAME"))
        .context("AGENT_NAME is not set: export this agent's name (or pass --name)")?;
    let channel = channel(args.channel.clone());
    let shown = channel
        .clone()
        .unwrap_or_else(|| DEFAULT_CHANNEL.to_string());
    let dir = state_dir(args.state_dir.clone(), data_dir.as_deref())?;
    let files = ListenFiles::new(&dir, &name, &shown);
    if args.detach {
        return detach(&files, &dir, data_dir.as_deref());
    }
    // One listener per (name, channel, state dir): the pid file is locked
    // while it runs.
    let pid_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&files.pid)
        .with_context(|| format!("failed to open {}", files.pid.display()))?;
    if pid_file.try_lock().is_err() {
        let other = std::fs::read_to_string(&files.pid).unwrap_or_default();
        bail!(
            "a listener for {name} on {shown} is already running (pid {}); its log is {}",
            other.trim(),
            files.log.display()
        );
    }
    pid_file.set_len(0)?;
    (&pid_file).write_all(std::process::id().to_string().as_bytes())?;
    eprintln!(
        "agentbus listen: {name} on {shown} at {}\n  log: {}\n  jsonl: {}\n  heartbeat: {}",
        bus.url,
        files.log.display(),
        files.jsonl.display(),
        files.heartbeat.display()
    );
    let mut cursor = Cursor::open(&dir, "listen", &bus, &name, &shown);
    let stop = stop_signal()?;
    tokio::pin!(stop);
    loop {
        agentbus_daemon::instance::write_private_file(
            &files.heartbeat,
            format!("{}\n", wall_s()).as_bytes(),
        )?;
        let polled = tokio::select! {
            r = bus.recv(&name, cursor.since, true, channel.as_deref()) => r,
            _ = &mut stop => break,
        };
        match polled {
            Ok(r) => {
                for m in &r.messages {
                    append(&files.log, &block(m))?;
                    let line = serde_json::json!({
                        "ts": m.ts, "from": m.from, "to": name, "channel": shown, "msg": m.msg,
                    });
                    append(&files.jsonl, &format!("{line}\n"))?;
                    cursor.advance(m.ts)?;
                }
            }
            Err(e) => {
                eprintln!("agentbus listen: {e:#}; retrying in 2 s");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = &mut stop => break,
                }
            }
        }
    }
    let _ = std::fs::remove_file(&files.pid);
    eprintln!("agentbus listen: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM. SIGHUP (the terminal closing) is
/// ignored: a listener outlives the shell that started it.
fn stop_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = int.recv() => return,
                _ = term.recv() => return,
                _ = hup.recv() => continue,
            }
        }
    })
}

/// Starts this same listener in the background, in its own process
/// group, its output going to `<stem>.out`.
fn detach(files: &ListenFiles, dir: &Path, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.out)
        .with_context(|| format!("failed to open {}", files.out.display()))?;
    let exe = std::env::current_exe().context("cannot find the agentbus binary")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(d) = data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    // The state dir is fixed now, whatever the environment says later.
    cmd.args(&args)
        .env("AGENT_BUS_STATE_DIR", dir)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    let child = cmd.spawn().context("failed to start the listener")?;
    outln!(
        "listening in the background (pid {})\n  log: {}\n  jsonl: {}\n  heartbeat: {}\n  pid file: {}\n  output: {}",
        child.id(),
        files.log.display(),
        files.jsonl.display(),
        files.heartbeat.display(),
        files.pid.display(),
        files.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_header_body_separator_and_cannot_be_ended_early() {
        let m = SeedMessage {
            ts: 1_795_266_075.5,
            from: "spark".into(),
            msg: "line one\n---\n\u{1b}[31mred\u{1b}[0m\n".into(),
        };
        assert_eq!(
            block(&m),
            "[13:01:15Z] from spark:\n  line one\n  ---\n  red\n---\n"
        );
    }

    #[test]
    fn cursors_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::new(
            "http://127.0.0.1:1/",
            DEFAULT_UA,
            None,
            &ClientTls::default(),
        )
        .unwrap();
        assert_eq!(bus.url, "http://127.0.0.1:1");
        let mut c = Cursor::open(dir.path(), "recv", &bus, "bob", "default");
        assert_eq!(c.since, 0.0);
        let ts = 1_795_266_075.123_456_7_f64;
        c.advance(ts).unwrap();
        c.advance(ts - 1.0).unwrap();
        let again = Cursor::open(dir.path(), "recv", &bus, "bob", "default");
        assert_eq!(again.since.to_bits(), ts.to_bits());
        let other = Cursor::open(dir.path(), "recv", &bus, "bob", "ops");
        assert_eq!(other.since, 0.0, "channels have their own cursor");
    }
}
