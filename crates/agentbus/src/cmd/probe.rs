//! Small programs to run inside panes, for the tests and benchmarks (the
//! command is hidden from `--help`).
//!
//! - `sink` puts its terminal in raw mode, enables bracketed paste and
//!   copies every byte it reads to a file, so a test can check byte for
//!   byte what a jekt put into a program's input. With `--notify` it also
//!   reports, on a Unix socket, the time it read each end of paste and
//!   each `\r`.
//! - `spew` writes a given number of bytes of text as fast as it can and
//!   records how long that took.

use clap::{Args, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(subcommand)]
    pub command: Probe,
}

#[derive(Subcommand, Debug)]
pub enum Probe {
    /// Copy stdin (raw, bracketed paste on) to a file
    Sink {
        #[arg(long)]
        out: PathBuf,
        /// Leave bracketed paste off
        #[arg(long)]
        no_bracketed: bool,
        /// Unix socket to report `paste <ns>` and `submit <ns>` lines to
        #[arg(long)]
        notify: Option<PathBuf>,
    },
    /// Write BYTES of text to stdout as fast as possible
    Spew {
        #[arg(long)]
        bytes: u64,
        /// File to write the elapsed nanoseconds to
        #[arg(long)]
        report: PathBuf,
    },
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Probe::Sink {
            out,
            no_bracketed,
            notify,
        } => sink(out, !no_bracketed, notify),
        Probe::Spew { bytes, report } => spew(bytes, report),
    }
}

/// Nanoseconds since the Unix epoch: comparable across processes.
pub fn wall_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn sink(out: PathBuf, bracketed: bool, notify: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let _raw = crate::tty::RawMode::enable()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)?;
    let mut notify = notify
        .map(std::os::unix::net::UnixStream::connect)
        .transpose()?;
    let mut stdout = std::io::stdout();
    if bracketed {
        stdout.write_all(b"\x1b[?2004h")?;
    }
    stdout.write_all(b"sink ready\r\n")?;
    stdout.flush()?;
    let mut stdin = std::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    // The last bytes of the previous read, so an end-of-paste marker split
    // across two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    const END: &[u8] = b"\x1b[201~";
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = wall_ns();
        file.write_all(&buf[..n])?;
        file.flush()?;
        if let Some(sock) = notify.as_mut() {
            let mut window = std::mem::take(&mut tail);
            let old = window.len();
            window.extend_from_slice(&buf[..n]);
            let ends = window
                .windows(END.len())
                .enumerate()
                .filter(|(i, w)| *w == END && i + END.len() > old)
                .count();
            for _ in 0..ends {
                writeln!(sock, "paste {now}")?;
            }
            for _ in buf[..n].iter().filter(|&&b| b == b'\r') {
                writeln!(sock, "submit {now}")?;
            }
            tail = window[window.len().saturating_sub(END.len() - 1)..].to_vec();
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spew(bytes: u64, report: PathBuf) -> anyhow::Result<ExitCode> {
    let _raw = if crate::tty::is_tty(std::io::stdin()) {
        Some(crate::tty::RawMode::enable()?)
    } else {
        None
    };
    let mut block = Vec::with_capacity(64 * 1024);
    let mut i = 0u64;
    while block.len() < 60 * 1024 {
        if i.is_multiple_of(7) {
            block.extend_from_slice(
                format!("\x1b[32mline {i}\x1b[0m build step {} finished\r\n", i * 31).as_bytes(),
            );
        } else {
            block.extend_from_slice(
                format!(
                    "output line {i}: the quick brown fox jumps over the lazy dog 0123456789\r\n"
                )
                .as_bytes(),
            );
        }
        i += 1;
    }
    let mut out = std::io::stdout().lock();
    let start = std::time::Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    let elapsed = start.elapsed().as_nanos();
    std::fs::write(report, elapsed.to_string())?;
    Ok(ExitCode::SUCCESS)
}
