//! `agentbus bench daemon`: jekt latency, pane output absorption, idle
//! RSS and start-up time, each beside the floor it is bounded by.

use super::{BenchDaemon, exe, median, percentile, sorted, wait_for};
use crate::client::Client;
use crate::cmd::probe::wall_ns;
use agentbus_proto::AgentId;
use agentbus_proto::api::{
    AgentInfo, AgentState, InjectRequest, InjectResponse, OpenRequest, OpenResponse, Provider,
};
use agentbus_proto::jekt::{MarkerHeader, Tier, wrap};
use anyhow::Context;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

type BarePty = (
    Box<dyn portable_pty::Child + Send + Sync>,
    Box<dyn portable_pty::MasterPty + Send>,
    Box<dyn Read + Send>,
);

/// `agentbus probe <args>` in a bare PTY, no daemon: the floor agentbus
/// is measured against.
fn probe_in_bare_pty(args: &[&str], rows: u16, cols: u16) -> anyhow::Result<BarePty> {
    let pty = |e: anyhow::Error| anyhow::anyhow!("pty: {e}");
    let pair = native_pty_system()
        .openpty(PtySize {
            rows,
            cols,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(pty)?;
    let mut cmd = CommandBuilder::new(exe()?);
    cmd.arg("probe");
    cmd.args(args);
    let child = pair.slave.spawn_command(cmd).map_err(pty)?;
    drop(pair.slave);
    let reader = pair.master.try_clone_reader().map_err(pty)?;
    Ok((child, pair.master, reader))
}

/// Opens `name` running `agentbus probe <args>` in a pane.
async fn open_probe(
    client: &Client,
    name: &AgentId,
    provider: Provider,
    args: &[&str],
    size: Option<(u16, u16)>,
) -> anyhow::Result<OpenResponse> {
    let mut command = vec![exe()?, "probe".to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    let req = OpenRequest {
        agent_id: name.clone(),
        provider: Some(provider),
        command,
        tmux: None,
        cwd: None,
        env: Default::default(),
        rows: size.map(|s| s.0),
        cols: size.map(|s| s.1),
    };
    client.post("/v1/agents", &req).await
}

/// The text a typical jekt pastes: a marker around a 120-byte body.
fn sample_jekt() -> String {
    let probe = AgentId::parse("probe").expect("a valid name");
    wrap(
        &MarkerHeader::claimed("bench", &probe, Tier::Info, 0),
        &"review the change in src/lib.rs and reply with findings ".repeat(2),
    )
}

struct Latencies {
    paste_ms: Vec<f64>,
    submit_ms: Vec<f64>,
}

/// Reads `paste <ns>` / `submit <ns>` lines until one of each arrived.
async fn next_marks(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::UnixStream>>,
) -> anyhow::Result<(u128, u128)> {
    let (mut paste, mut submit) = (None, None);
    while paste.is_none() || submit.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the probe stopped reporting")??
            .context("the probe hung up")?;
        let (kind, ns) = line.split_once(' ').context("bad probe line")?;
        let ns: u128 = ns.parse()?;
        match kind {
            "paste" => paste = Some(ns),
            "submit" => submit = Some(ns),
            _ => {}
        }
    }
    Ok((paste.unwrap_or(0), submit.unwrap_or(0)))
}

async fn jekt_latency(n: usize) -> anyhow::Result<Latencies> {
    // Settle 0: the benchmark measures everything but the settle pause.
    let d = BenchDaemon::start(Some("[profiles.claude]\nsettle_ms = 0\n"))?;
    let client = d.client();
    let sock_dir = tempfile::tempdir()?;
    let sock = sock_dir.path().join("probe.sock");
    let listener = tokio::net::UnixListener::bind(&sock)?;
    let probe = AgentId::parse("probe")?;
    let sock_arg = sock.display().to_string();
    open_probe(
        &client,
        &probe,
        Provider::Generic,
        &["sink", "--out", "/dev/null", "--notify", &sock_arg],
        None,
    )
    .await?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await??;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    wait_for("the probe to enable bracketed paste", async || {
        let a: AgentInfo = client.get("/v1/agents/probe").await.ok()?;
        a.bracketed_paste.then_some(())
    })
    .await?;
    let body = "review the change in src/lib.rs and reply with findings ".repeat(2);
    let mut out = Latencies {
        paste_ms: Vec::with_capacity(n),
        submit_ms: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let req = InjectRequest {
            target_agent: probe.clone(),
            source_agent: None,
            message: body.clone(),
            request_id: None,
            priority: None,
            tier: None,
            wait_for_idle: Default::default(),
            hops: 0,
            origin_trust: None,
            exact_target: false,
        };
        let t0 = wall_ns();
        let _: InjectResponse = client.post("/agentmux/reactive/inject", &req).await?;
        let (paste, submit) = next_marks(&mut lines).await?;
        out.paste_ms.push((paste.saturating_sub(t0)) as f64 / 1e6);
        out.submit_ms.push((submit.saturating_sub(t0)) as f64 / 1e6);
    }
    Ok(out)
}

/// The floor: the same bytes written straight into a bare PTY.
async fn raw_pty_latency(n: usize) -> anyhow::Result<Vec<f64>> {
    let sock_dir = tempfile::tempdir()?;
    let sock = sock_dir.path().join("floor.sock");
    let listener = tokio::net::UnixListener::bind(&sock)?;
    let sock_arg = sock.display().to_string();
    let (mut child, master, mut reader) = probe_in_bare_pty(
        &["sink", "--out", "/dev/null", "--notify", &sock_arg],
        24,
        80,
    )?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut writer = master.take_writer().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await??;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let mut payload = b"\x1b[200~".to_vec();
    payload.extend_from_slice(sample_jekt().as_bytes());
    payload.extend_from_slice(b"\x1b[201~\r");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = wall_ns();
        writer.write_all(&payload)?;
        writer.flush()?;
        let (paste, _) = next_marks(&mut lines).await?;
        out.push(paste.saturating_sub(t0) as f64 / 1e6);
    }
    let _ = child.kill();
    Ok(out)
}

fn read_elapsed(report: &Path) -> anyhow::Result<f64> {
    let ns: f64 = std::fs::read_to_string(report)?.trim().parse()?;
    Ok(ns / 1e9)
}

struct Absorb {
    mb_s: f64,
    skipped_pct: f64,
}

async fn absorb_in_pane(
    client: &Client,
    run: usize,
    bytes: u64,
    dir: &Path,
) -> anyhow::Result<Absorb> {
    let name = AgentId::parse(&format!("spew{run}"))?;
    let report = dir.join(format!("pane{run}.ns"));
    let (bytes_arg, report_arg) = (bytes.to_string(), report.display().to_string());
    open_probe(
        client,
        &name,
        Provider::Raw,
        &["spew", "--bytes", &bytes_arg, "--report", &report_arg],
        Some((50, 200)),
    )
    .await?;
    let info = wait_for("the spewing program to end", async || {
        let a: AgentInfo = client.get(&format!("/v1/agents/{name}")).await.ok()?;
        (a.state == AgentState::Exited).then_some(a)
    })
    .await?;
    let secs = read_elapsed(&report)?;
    Ok(Absorb {
        mb_s: bytes as f64 / secs / 1e6,
        skipped_pct: 100.0 * info.output_skipped_bytes as f64 / info.output_bytes.max(1) as f64,
    })
}

fn absorb_devnull(bytes: u64, dir: &Path) -> anyhow::Result<f64> {
    let report = dir.join("null.ns");
    let status = std::process::Command::new(exe()?)
        .args(["probe", "spew", "--bytes", &bytes.to_string(), "--report"])
        .arg(&report)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "spew to /dev/null failed");
    Ok(bytes as f64 / read_elapsed(&report)? / 1e6)
}

/// A bare PTY whose master is read and discarded: the kernel's ceiling.
/// With `busy_core`, a thread spins meanwhile: on a VM, a busy vCPU wakes
/// the reader faster than an idle (halted) one, and the daemon's own
/// parser thread is such a busy core under a flood.
fn absorb_bare_pty(bytes: u64, dir: &Path, busy_core: bool) -> anyhow::Result<f64> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinner = busy_core.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
    });
    let result = bare_pty_once(bytes, dir);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(s) = spinner {
        let _ = s.join();
    }
    result
}

fn bare_pty_once(bytes: u64, dir: &Path) -> anyhow::Result<f64> {
    let report = dir.join("bare.ns");
    let (bytes_arg, report_arg) = (bytes.to_string(), report.display().to_string());
    let (mut child, _master, mut reader) = probe_in_bare_pty(
        &["spew", "--bytes", &bytes_arg, "--report", &report_arg],
        50,
        200,
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    child.wait()?;
    Ok(bytes as f64 / read_elapsed(&report)? / 1e6)
}

pub(super) async fn run(jekts: usize, runs: usize, spew_mb: u64) -> anyhow::Result<()> {
    eprintln!("agentbus bench daemon: {jekts} jekts, {runs} runs, {spew_mb} MB per absorption run");

    let mut ready_ms = Vec::new();
    let mut rss_mb = Vec::new();
    for _ in 0..runs {
        let d = BenchDaemon::start(None)?;
        ready_ms.push(d.ready.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_mb.push(d.rss_kb() as f64 / 1024.0);
    }
    eprintln!("  start-up and idle RSS done");

    let lat = jekt_latency(jekts).await?;
    let floor = raw_pty_latency(jekts).await?;
    eprintln!("  jekt latency done");

    let bytes = spew_mb * 1_000_000;
    let d = BenchDaemon::start(None)?;
    let client = d.client();
    let dir = tempfile::tempdir()?;
    let (mut pane, mut skipped, mut null) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare, mut bare_busy) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let a = absorb_in_pane(&client, run, bytes, dir.path()).await?;
        pane.push(a.mb_s);
        skipped.push(a.skipped_pct);
        bare.push(absorb_bare_pty(bytes, dir.path(), false)?);
        bare_busy.push(absorb_bare_pty(bytes, dir.path(), true)?);
        null.push(absorb_devnull(bytes, dir.path())?);
    }
    eprintln!("  absorption done");

    let (paste, submit, floor) = (sorted(lat.paste_ms), sorted(lat.submit_ms), sorted(floor));
    outln!();
    outln!("| measurement | p50 / median | p99 | target |");
    outln!("|---|---|---|---|");
    outln!(
        "| jekt: API call → paste read by the pane's program ({jekts}) | {:.3} ms | {:.3} ms | p99 ≤ 5 ms beyond settle |",
        percentile(&paste, 0.5),
        percentile(&paste, 0.99)
    );
    outln!(
        "| jekt: API call → submit key read (settle set to 0) | {:.3} ms | {:.3} ms | |",
        percentile(&submit, 0.5),
        percentile(&submit, 0.99)
    );
    outln!(
        "| floor: same bytes written straight into a bare PTY | {:.3} ms | {:.3} ms | |",
        percentile(&floor, 0.5),
        percentile(&floor, 0.99)
    );
    outln!(
        "| pane output absorbed, parser on ({spew_mb} MB, median of {runs}) | {:.1} MB/s | | ≥ 200 MB/s |",
        median(pane)
    );
    outln!(
        "| … of which skipped by the parser under the flood | {:.1} % | | |",
        median(skipped)
    );
    outln!(
        "| floor: bare PTY, reader discards, other core idle | {:.1} MB/s | | |",
        median(bare)
    );
    outln!(
        "| floor: bare PTY, reader discards, other core busy | {:.1} MB/s | | |",
        median(bare_busy)
    );
    outln!(
        "| same program writing to /dev/null | {:.1} MB/s | | |",
        median(null)
    );
    outln!(
        "| idle daemon RSS (median of {runs}) | {:.1} MB | | ≤ 30 MB |",
        median(rss_mb)
    );
    outln!(
        "| exec → URL printed, ready (median of {runs}) | {:.1} ms | | ≤ 100 ms |",
        median(ready_ms)
    );
    Ok(())
}
