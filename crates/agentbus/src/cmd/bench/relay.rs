//! `agentbus bench relay`: load for any server of the agent-bus protocol
//! (`agentbus relay`, or a peer to compare with): durable sends per
//! second from keep-alive clients, send → waiting long-poll latency at a
//! fixed rate, memory per waiting long-poll, whether every waiter is woken
//! with its own message, and a burst of simultaneous connections.
//!
//! Without `--url` it starts `agentbus relay` from this binary on a temp
//! database. Memory needs the server's pid: known for a relay it started,
//! `--pid` otherwise.
//!
//! With `--nats URL` it then starts 1, 2 and 3 relay nodes on that NATS
//! JetStream (a fresh prefix each time), spreads the same send load and
//! the latency run over the nodes (each message long-polled on a node
//! other than the one it was sent to), and shows each against SQLite.

use super::{median, percentile, sorted};
use crate::cmd::bus::{Bus, DEFAULT_UA};
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct RelayBenchArgs {
    /// Server to measure [default: start `agentbus relay` on a temp database]
    #[arg(long)]
    pub url: Option<String>,
    /// Its process id, for memory figures (known when the bench starts it)
    #[arg(long)]
    pub pid: Option<u32>,
    /// Concurrent keep-alive senders
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of each send run and of the latency run
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Send runs (the median is shown)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Messages per second during the latency run
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Waiting long-polls to hold, one memory figure each
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    pub waiters: Vec<usize>,
    /// Simultaneous new connections in the burst
    #[arg(long, default_value_t = 1000)]
    pub burst: usize,
    /// A second server of the protocol (say the agent-bus reference server)
    /// to put the same send load on after the rest; its figure and the
    /// ratio are shown
    #[arg(long)]
    pub peer: Option<String>,
    /// Also measure relay nodes on this NATS JetStream (comma-separated
    /// URLs of one cluster), 1, 2 and 3 of them, against SQLite
    #[arg(long, value_name = "URL[,URL...]")]
    pub nats: Option<String>,
    /// Replicas of the relay's stream and buckets on --nats
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nats_replicas: u8,
}

/// A relay started for the bench.
struct OwnRelay {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl OwnRelay {
    /// On a temp SQLite database, or with `store` (`--nats ...`).
    fn start(store: Option<&[String]>) -> anyhow::Result<OwnRelay> {
        let dir = tempfile::tempdir()?;
        let db = vec![
            "--db".to_string(),
            dir.path().join("relay.db").display().to_string(),
        ];
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("relay")
            .args(store.unwrap_or(&db))
            .args(["--listen", "127.0.0.1:0", "--recv-wait-s", "60"])
            .env("AGENTBUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start a relay")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        if line.trim().is_empty() {
            bail!("the relay printed no URL");
        }
        Ok(OwnRelay {
            child,
            url: line.trim().to_string(),
            _dir: dir,
        })
    }
}

impl Drop for OwnRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A tag no earlier run used, so names and cursors start empty.
fn run_tag() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            & 0xffff_ffff
    )
}

const BODY: &str = "build 812 finished: 1,204 tests passed, 0 failed; artifacts at /srv/ci/812";

/// A lean keep-alive HTTP/1.1 client for the load itself, so the load
/// generator takes little of the CPU it shares with the server. It
/// reconnects when a server closes (an HTTP/1.0 server closes after each
/// answer).
struct RawClient {
    addr: String,
    host: String,
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
    /// For `https://`: a client keeping its one connection alive.
    tls: Option<(String, reqwest::Client)>,
}

impl RawClient {
    fn new(url: &str) -> anyhow::Result<RawClient> {
        let (addr, host) = host_of(url)?;
        let tls = match Getter::new(url)? {
            Getter::Tls { base, http } => Some((base, http)),
            Getter::Raw { .. } => None,
        };
        Ok(RawClient {
            addr,
            host,
            stream: None,
            buf: Vec::with_capacity(4096),
            tls,
        })
    }

    /// POSTs a JSON body; the status.
    async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        if let Some((base, http)) = &self.tls {
            let resp = http
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await?;
            let status = resp.status().as_u16();
            resp.bytes().await?;
            return Ok(status);
        }
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = tokio::net::TcpStream::connect(&self.addr).await?;
                s.set_nodelay(true)?;
                self.stream = Some(s);
                self.buf.clear();
            }
            match self.exchange(path, body).await {
                Ok(status) => return Ok(status),
                // A kept-alive connection the server had closed: once more.
                Err(e) if attempt == 0 => {
                    self.stream = None;
                    tracing::debug!(error = %e, "reconnecting");
                }
                Err(e) => return Err(e),
            }
        }
        bail!("unreachable")
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        let stream = self.stream.as_mut().context("not connected")?;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {DEFAULT_UA}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        stream.write_all(&req).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                let status: u16 = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .context("no status in the answer")?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let close = head.starts_with("http/1.0") || head.contains("connection: close");
                while self.buf.len() < end + 4 + len {
                    if stream.read_buf(&mut self.buf).await? == 0 {
                        bail!("the server closed mid-answer");
                    }
                }
                self.buf.drain(..end + 4 + len);
                if close {
                    self.stream = None;
                }
                return Ok(status);
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                bail!("the server closed the connection");
            }
        }
    }
}

/// The agent-bus `/send` body.
fn send_body(to: &str, msg: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"from": "bench", "to": to, "msg": msg}))
        .unwrap_or_default()
}

/// Sends per second over `secs` from `clients` keep-alive senders, client
/// c on `urls[c % n]`. Sends answered 200 per second, and how many sends
/// failed (refused, dropped, or answered otherwise), over `secs`.
async fn sends_per_s(urls: &[String], clients: usize, secs: u64) -> anyhow::Result<(f64, usize)> {
    let tag = run_tag();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, done, failed, tag) =
                (stop.clone(), done.clone(), failed.clone(), tag.clone());
            let client = RawClient::new(&urls[c % urls.len()]);
            tokio::spawn(async move {
                let mut client = client?;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let to = format!("s{tag}-{}", (c * 7 + i) % 100);
                    match client.post("/send", &send_body(&to, BODY)).await {
                        Ok(200) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok((
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
    ))
}

/// What the latency run saw.
struct Latencies {
    /// Sorted, in ms.
    ms: Vec<f64>,
    /// Sends the server refused or dropped.
    send_failed: usize,
    /// Accepted sends no long-poll returned within the deadline.
    missing: usize,
}

/// A client of the bus under test; an HTTPS one with a private CA is
/// trusted through `AGENTBUS_CA_FILE`.
fn bench_bus(url: &str) -> anyhow::Result<Bus> {
    let tls = agentbus_daemon::tls::ClientTls::from_args_or_env(None, false);
    Bus::new(url, DEFAULT_UA, None, &tls)
}

/// Send → long-poll latencies (ms) at `rate` messages per second for
/// `secs`, over 50 waiting recipients. Recipient r long-polls on
/// `urls[r % n]`; its mail is sent to the next node, so with several
/// nodes every message crosses from one to another. A server that drops
/// sends or loses messages is reported, not a reason to stop.
async fn latencies(urls: &[String], rate: u64, secs: u64) -> anyhow::Result<Latencies> {
    const RECIPIENTS: usize = 50;
    let buses = urls
        .iter()
        .map(|u| bench_bus(u))
        .collect::<anyhow::Result<Vec<Bus>>>()?;
    let n = buses.len();
    let tag = run_tag();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let got: Arc<Mutex<Vec<f64>>> = Arc::default();
    let total = (rate * secs) as usize;
    let received = Arc::new(AtomicUsize::new(0));
    let receivers: Vec<_> = (0..RECIPIENTS)
        .map(|r| {
            let (bus, sent_at, got, received) = (
                buses[r % n].clone(),
                sent_at.clone(),
                got.clone(),
                received.clone(),
            );
            let name = format!("l{tag}-{r}");
            tokio::spawn(async move {
                let mut since = 0.0f64;
                while received.load(Ordering::Relaxed) < total {
                    let Ok(resp) = bus.recv(&name, since, true, None).await else {
                        continue;
                    };
                    let now = Instant::now();
                    for m in &resp.messages {
                        since = since.max(m.ts);
                        if let Some(at) = sent_at.lock().ok().and_then(|s| s.get(&m.msg).copied())
                            && let Ok(mut g) = got.lock()
                        {
                            g.push(now.duration_since(at).as_secs_f64() * 1000.0);
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let every receiver's first poll reach the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = tokio::time::Instant::now();
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(t0 + gap * i as u32).await;
        let (bus, sent_at) = (buses[(i % RECIPIENTS + 1) % n].clone(), sent_at.clone());
        let to = format!("l{tag}-{}", i % RECIPIENTS);
        sends.push(tokio::spawn(async move {
            let msg = format!("{i} {BODY}");
            if let Ok(mut s) = sent_at.lock() {
                s.insert(msg.clone(), Instant::now());
            }
            bus.send("bench", &to, &msg, None).await
        }));
    }
    let mut send_failed = 0;
    for s in sends {
        if !matches!(s.await, Ok(Ok(_))) {
            send_failed += 1;
        }
    }
    let accepted = total - send_failed;
    let deadline = Instant::now() + Duration::from_secs(40);
    while received.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in receivers {
        r.abort();
    }
    let n = received.load(Ordering::Relaxed);
    Ok(Latencies {
        ms: sorted(got.lock().map(|g| g.clone()).unwrap_or_default()),
        send_failed,
        missing: accepted.saturating_sub(n),
    })
}

/// How the waiters and the burst reach the server: raw HTTP/1.1 on a
/// fresh TCP connection each, or for `https://` an HTTPS client (each
/// request in flight is a connection of its own; an idle one is kept for
/// the next), trusting `AGENTBUS_CA_FILE`.
#[derive(Clone)]
enum Getter {
    Raw { addr: String, host: String },
    Tls { base: String, http: reqwest::Client },
}

impl Getter {
    fn new(url: &str) -> anyhow::Result<Getter> {
        if url.starts_with("https://") {
            let tls = agentbus_daemon::tls::ClientTls::from_args_or_env(None, false);
            let http = tls.builder().map_err(anyhow::Error::msg)?.build()?;
            return Ok(Getter::Tls {
                base: url.to_string(),
                http,
            });
        }
        let (addr, host) = host_of(url)?;
        Ok(Getter::Raw { addr, host })
    }

    /// The body of a 200 answer to `GET path`.
    async fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Getter::Raw { addr, host } => raw_get(addr, host, path).await,
            Getter::Tls { base, http } => {
                let resp = http.get(format!("{base}{path}")).send().await?;
                if resp.status() != 200 {
                    bail!("answered {}", resp.status());
                }
                Ok(resp.bytes().await?.to_vec())
            }
        }
    }
}

/// One HTTP/1.1 GET on a fresh connection; the response body.
async fn raw_get(addr: &str, host: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {DEFAULT_UA}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header in the answer")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
        bail!("answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(buf[split + 4..].to_vec())
}

/// `host:port` of a URL: where to connect, and the Host header.
fn host_of(url: &str) -> anyhow::Result<(String, String)> {
    let u = url::Url::parse(url).context("bad URL")?;
    let host = u.host_str().context("no host in the URL")?;
    let port = u.port_or_known_default().context("no port")?;
    let hp = format!("{host}:{port}");
    Ok((hp.clone(), hp))
}

/// Holds `n` long-polls, measures the server's memory while they wait,
/// then wakes each with its own message. Returns (KB per waiter if the
/// pid is known, how many got exactly their message).
async fn waiters(url: &str, pid: Option<u32>, n: usize) -> anyhow::Result<(Option<f64>, usize)> {
    let getter = Getter::new(url)?;
    let tag = run_tag();
    let bus = bench_bus(url)?;
    let before = pid.and_then(rss_kb);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let getter = getter.clone();
        let path = format!("/recv?to=w{tag}-{i}&block=true");
        held.push(tokio::spawn(async move { getter.get(&path).await }));
        // Connect in waves, as clients would arrive, not one SYN flood.
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the last requests arrive and settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = pid.and_then(rss_kb);
    let per = match (before, during) {
        (Some(b), Some(d)) => Some(d.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    let sender = Arc::new(tokio::sync::Semaphore::new(16));
    let mut sends = Vec::with_capacity(n);
    for i in 0..n {
        let (bus, sender, to) = (bus.clone(), sender.clone(), format!("w{tag}-{i}"));
        sends.push(tokio::spawn(async move {
            let _slot = sender.acquire().await;
            bus.send("bench", &to, &format!("for waiter {i}"), None)
                .await
        }));
    }
    for s in sends {
        s.await??;
    }
    let mut right = 0;
    for (i, h) in held.into_iter().enumerate() {
        let Ok(Ok(body)) = h.await else { continue };
        let Ok(resp) = serde_json::from_slice::<agentbus_proto::relay::RecvResponse>(&body) else {
            continue;
        };
        if resp.messages.len() == 1 && resp.messages[0].msg == format!("for waiter {i}") {
            right += 1;
        }
    }
    Ok((per, right))
}

/// `n` simultaneous new connections asking `/recv` (not blocking): how
/// many are answered.
async fn burst(url: &str, n: usize) -> anyhow::Result<usize> {
    let getter = Getter::new(url)?;
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (getter, gate) = (getter.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                getter.get(&format!("/recv?to=burst-{i}")).await.is_ok()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            ok += 1;
        }
    }
    Ok(ok)
}

/// `args.runs` send runs against `url`: each run's rate, and the sends
/// that failed over all of them.
async fn send_runs(urls: &[String], args: &RelayBenchArgs) -> anyhow::Result<(Vec<f64>, usize)> {
    let (mut runs, mut failed) = (Vec::new(), 0);
    for _ in 0..args.runs.max(1) {
        let (rate, f) = sends_per_s(urls, args.clients.max(1), args.duration.max(1)).await?;
        runs.push(rate);
        failed += f;
    }
    Ok((runs, failed))
}

/// `median (runs: a, b, c; n sends failed)`.
fn runs_cell(runs: &[f64], failed: usize) -> String {
    let spread: Vec<String> = sorted(runs.to_vec())
        .iter()
        .map(|r| thousands(*r))
        .collect();
    format!(
        "{} (runs: {}{})",
        thousands(median(runs.to_vec())),
        spread.join(", "),
        note(failed, "sends failed")
    )
}

/// `; <n> <what>` when `n` is not 0.
fn note(n: usize, what: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {} {what}", thousands(n as f64))
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub async fn run(args: RelayBenchArgs) -> anyhow::Result<()> {
    crate::cmd::relay::raise_fd_limit();
    let own = match &args.url {
        Some(_) => None,
        None => Some(OwnRelay::start(None)?),
    };
    let url = match (&args.url, &own) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(o)) => o.url.clone(),
        (None, None) => bail!("no relay to measure"),
    };
    let pid = args.pid.or(own.as_ref().map(|o| o.child.id()));
    let who = if own.is_some() {
        "agentbus relay started by the bench (SQLite, durable)"
    } else {
        "the given server"
    };
    outln!("relay benchmark: {url} ({who})\n");
    let mut rows: Vec<[String; 3]> = Vec::new();

    let one = [url.clone()];
    let (runs, send_failed) = send_runs(&one, &args).await?;
    rows.push([
        format!(
            "sends/s, {} keep-alive clients (median of {} runs of {} s)",
            args.clients,
            runs.len(),
            args.duration
        ),
        runs_cell(&runs, send_failed),
        "≥ 20,000".into(),
    ]);

    let lat = latencies(&one, args.rate.max(1), args.duration.max(1)).await?;
    rows.push([
        format!(
            "send → waiting long-poll, at {} msg/s: p50 / p99",
            args.rate
        ),
        format!(
            "{:.2} / {:.2} ms ({} messages{}{})",
            percentile(&lat.ms, 0.5),
            percentile(&lat.ms, 0.99),
            lat.ms.len(),
            note(lat.send_failed, "sends failed"),
            note(lat.missing, "accepted, never received"),
        ),
        "p99 ≤ 2 ms".into(),
    ]);

    for n in &args.waiters {
        let (per, right) = waiters(&url, pid, *n).await?;
        rows.push([
            format!(
                "RSS per waiting long-poll, {} waiters",
                thousands(*n as f64)
            ),
            per.map_or_else(|| "n/a (pass --pid)".into(), |kb| format!("{kb:.2} KB")),
            "≤ 5 KB".into(),
        ]);
        rows.push([
            "  woken with exactly their own message".into(),
            format!("{} / {}", thousands(right as f64), thousands(*n as f64)),
            "all".into(),
        ]);
    }

    let answered = burst(&url, args.burst.max(1)).await?;
    rows.push([
        format!("burst of {} simultaneous connections answered", args.burst),
        format!(
            "{} / {}",
            thousands(answered as f64),
            thousands(args.burst as f64)
        ),
        "all".into(),
    ]);
    if let Some(p) = pid
        && let Some(kb) = rss_kb(p)
    {
        rows.push([
            "server RSS at the end".into(),
            format!("{:.1} MB", kb as f64 / 1024.0),
            String::new(),
        ]);
    }

    // The peer last, so its load (and what it leaves behind) cannot
    // touch the figures above.
    if let Some(p) = args.peer.as_deref().map(|p| p.trim_end_matches('/')) {
        let (peer_runs, peer_failed) = send_runs(&[p.to_string()], &args).await?;
        let (ours, theirs) = (median(runs.clone()), median(peer_runs.clone()));
        rows.insert(
            1,
            [
                format!("  the same load on the peer {p} (after the above)"),
                runs_cell(&peer_runs, peer_failed),
                String::new(),
            ],
        );
        rows.insert(
            2,
            [
                "  ratio, median against median".into(),
                if theirs > 0.0 {
                    format!("{:.1}×", ours / theirs)
                } else {
                    "n/a (the peer answered no send)".into()
                },
                "≥ 10×".into(),
            ],
        );
    }
    table(&["what", "result", "target"], &rows);
    if let Some(nats) = &args.nats {
        outln!();
        nats_rows(nats, &args, median(runs), &lat).await?;
    }
    Ok(())
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:w$} "))
            .collect();
        outln!("|{}|", padded.join("|"));
    };
    line(head.iter().map(ToString::to_string).collect());
    outln!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.to_vec());
    }
}

/// 1, 2 and 3 relay nodes on the NATS JetStream at `nats`, against the
/// SQLite figures (`sqlite_sends` per second, `sqlite_lat`).
async fn nats_rows(
    nats: &str,
    args: &RelayBenchArgs,
    sqlite_sends: f64,
    sqlite_lat: &Latencies,
) -> anyhow::Result<()> {
    outln!(
        "relay nodes on NATS JetStream at {} ({} replica{}), against the SQLite relay above\n",
        agentbus_relay::nats::redact_urls(nats),
        args.nats_replicas,
        if args.nats_replicas == 1 { "" } else { "s" }
    );
    let mut rows: Vec<[String; 4]> = Vec::new();
    for nodes in 1..=3usize {
        let prefix = format!("bench{}n{nodes}", run_tag());
        let store = vec![
            "--nats".to_string(),
            nats.to_string(),
            "--nats-replicas".into(),
            args.nats_replicas.to_string(),
            "--nats-prefix".into(),
            prefix.clone(),
        ];
        let own = (0..nodes)
            .map(|_| OwnRelay::start(Some(&store)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let urls: Vec<String> = own.iter().map(|o| o.url.clone()).collect();
        let (runs, failed) = send_runs(&urls, args).await?;
        let sends = median(runs.clone());
        rows.push([
            format!("sends/s, {nodes} node{}", if nodes == 1 { "" } else { "s" }),
            runs_cell(&runs, failed),
            format!(
                "{:.2}× ({} per node)",
                sends / sqlite_sends.max(1.0),
                thousands(sends / nodes as f64)
            ),
            if nodes == 2 {
                "≥ 0.5× per node".into()
            } else {
                String::new()
            },
        ]);
        let lat = latencies(&urls, args.rate.max(1), args.duration.max(1)).await?;
        let (p50, p99) = (percentile(&lat.ms, 0.5), percentile(&lat.ms, 0.99));
        rows.push([
            format!(
                "  send → long-poll{}, at {} msg/s: p50 / p99",
                if nodes > 1 { " on another node" } else { "" },
                args.rate
            ),
            format!(
                "{p50:.2} / {p99:.2} ms ({} messages{}{})",
                lat.ms.len(),
                note(lat.send_failed, "sends failed"),
                note(lat.missing, "accepted, never received"),
            ),
            format!(
                "{:.1}× / {:.1}× the latency",
                p50 / percentile(&sqlite_lat.ms, 0.5).max(0.001),
                p99 / percentile(&sqlite_lat.ms, 0.99).max(0.001)
            ),
            String::new(),
        ]);
        drop(own);
        // What this run stored goes with it.
        let opts = agentbus_relay::nats::NatsOptions {
            prefix,
            replicas: usize::from(args.nats_replicas),
            ..agentbus_relay::nats::NatsOptions::new(nats)
        };
        if let Err(e) = agentbus_relay::nats::NatsStorage::remove(&opts).await {
            eprintln!("note: could not delete the bench's JetStream data: {e}");
        }
    }
    table(&["what", "result", "against SQLite", "target"], &rows);
    Ok(())
}
