//! `agentbus bench`: measures this build and prints a table, with each
//! measurement's target (the README's benchmark section); figures are
//! medians or percentiles over runs, beside a floor measured in the same
//! run where one exists.

mod daemon;
mod mailbox;
mod relay;

use crate::client::{Client, Credential};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Jekt latency, pane output absorption, idle RSS and start-up time
    Daemon {
        /// Jekts to time (each sequential)
        #[arg(long, default_value_t = 1000)]
        jekts: usize,
        /// Runs of the start-up and absorption measurements
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Megabytes the absorption program writes per run
        #[arg(long, default_value_t = 256)]
        spew_mb: u64,
    },
    /// Durable mailbox sends per second, and inbox-page latency with many
    /// messages stored
    Mailbox {
        /// Concurrent senders (keep-alive connections)
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Messages per send run
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Runs of the send measurement
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Messages stored before pages are timed
        #[arg(long, default_value_t = 1_000_000)]
        stored: usize,
        /// Pages to time
        #[arg(long, default_value_t = 2_000)]
        pages: usize,
    },
    /// Any server of the bus protocol (`/send`, `/recv`; docs/relay.md): sends/s, send → long-poll
    /// latency, memory per waiting long-poll, a connection burst
    Relay(relay::RelayBenchArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!("note: this is a DEBUG build; run with --release for real figures");
    }
    match args.what {
        BenchWhat::Daemon {
            jekts,
            runs,
            spew_mb,
        } => daemon::run(jekts, runs.max(1), spew_mb.max(1)).await?,
        BenchWhat::Mailbox {
            clients,
            messages,
            runs,
            stored,
            pages,
        } => {
            mailbox::run(
                clients.max(1),
                messages.max(1),
                runs.max(1),
                stored,
                pages.max(1),
            )
            .await?
        }
        BenchWhat::Relay(a) => relay::run(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// This binary's path, to start daemons and probes from.
fn exe() -> anyhow::Result<String> {
    Ok(std::env::current_exe()?.display().to_string())
}

/// A daemon started from this binary.
struct BenchDaemon {
    child: Child,
    url: String,
    key: String,
    /// Exec to the URL line on stdout.
    ready: Duration,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDaemon {
    /// In a fresh temp data dir, with an optional config file.
    fn start(config: Option<&str>) -> anyhow::Result<BenchDaemon> {
        let dir = tempfile::tempdir()?;
        let mut d = Self::start_in(dir.path().to_path_buf(), config)?;
        d._dir = Some(dir);
        Ok(d)
    }

    /// In `dir` (which may hold a database already).
    fn start_in(dir: PathBuf, config: Option<&str>) -> anyhow::Result<BenchDaemon> {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("daemon")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(text) = config {
            let path = dir.join("bench.toml");
            std::fs::write(&path, text)?;
            cmd.arg("--config").arg(path);
        }
        cmd.env("AGENTBUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = cmd.spawn().context("failed to start a daemon")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let ready = started.elapsed();
        if line.trim().is_empty() {
            bail!("the daemon printed no URL");
        }
        let key = std::fs::read_to_string(dir.join("authkey"))?;
        Ok(BenchDaemon {
            child,
            url: line.trim().to_string(),
            key: key.trim().to_string(),
            ready,
            _dir: None,
        })
    }

    fn client(&self) -> Client {
        Client::new(self.url.clone(), Credential::InstanceKey(self.key.clone()))
    }

    fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0)
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
