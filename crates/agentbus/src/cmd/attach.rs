//! `agentbus attach`: this terminal becomes the agent's pane.
//!
//! The terminal goes into raw mode; keys go to the pane, the pane's output
//! comes here, window-size changes follow. The detach key (Ctrl-] unless
//! `--detach-key` says otherwise) returns the terminal and leaves the agent
//! running.

use crate::client::Client;
use crate::tty;
use agentbus_proto::api::AttachControl;
use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::process::ExitCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Ctrl-]
pub const DEFAULT_DETACH_KEY: u8 = 0x1d;

#[derive(Args, Debug)]
pub struct AttachArgs {
    pub name: agentbus_proto::AgentId,
    /// Key that detaches: ctrl-<letter or one of [\]^_>, or ^X
    #[arg(long, value_name = "KEY", default_value = "ctrl-]", value_parser = parse_detach_key)]
    pub detach_key: u8,
}

/// `ctrl-]`, `ctrl-a`, `^A`, ... → the control byte.
pub fn parse_detach_key(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    let key = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("c-"))
        .or_else(|| lower.strip_prefix('^'))
        .ok_or_else(|| {
            format!("{s:?}: write the detach key as ctrl-<key>, for example ctrl-] or ctrl-q")
        })?;
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'a'..='z'), None) => Ok(c as u8 - b'a' + 1),
        (Some(c @ ('[' | '\\' | ']' | '^' | '_')), None) => Ok(c as u8 - b'@'),
        _ => Err(format!(
            "{s:?}: the detach key must be ctrl- plus a letter or one of [ \\ ] ^ _"
        )),
    }
}

fn describe_key(byte: u8) -> String {
    format!("Ctrl-{}", (byte + b'@') as char)
}

pub async fn run(client: &Client, args: AttachArgs) -> anyhow::Result<ExitCode> {
    attach(client, args.name.as_str(), args.detach_key).await
}

/// Resets what a program in the pane may have turned on in this terminal.
const RESET_TERMINAL: &[u8] =
    b"\x1b[0m\x1b[?25h\x1b[?2004l\x1b[?1l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\r\n";

pub async fn attach(client: &Client, name: &str, detach_key: u8) -> anyhow::Result<ExitCode> {
    if !tty::is_tty(std::io::stdin()) {
        bail!("attach needs a terminal: stdin is not a tty");
    }
    let (rows, cols) = tty::size(std::io::stdout()).unwrap_or((24, 80));
    let url = client.ws_url(&format!("/v1/agents/{name}/attach?rows={rows}&cols={cols}"));
    let mut request = url.into_client_request().context("bad attach URL")?;
    let (header, value) = client.auth_header();
    request
        .headers_mut()
        .insert(header, value.parse().context("bad credential")?);
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let message = serde_json::from_str::<agentbus_proto::api::ErrorBody>(&body)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| format!("HTTP {}", resp.status()));
            bail!("cannot attach to {name}: {message}");
        }
        Err(e) => return Err(e).with_context(|| format!("cannot attach to {name}")),
    };
    let (mut sink, mut stream) = ws.split();
    eprint!(
        "[attached to {name}; detach with {}]\r\n",
        describe_key(detach_key)
    );

    let raw = tty::RawMode::enable().context("failed to put the terminal in raw mode")?;
    // Stdin is read on a thread of its own: a blocking read cannot be
    // cancelled, and must not hold an async worker.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdout = std::io::stdout();
    let farewell = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<AttachControl>(&text) {
                    Ok(AttachControl::Exit { exit_code, signal }) => {
                        let how = match (exit_code, signal) {
                            (Some(c), _) => format!("exit code {c}"),
                            (None, Some(s)) => format!("signal {s}"),
                            (None, None) => "unknown status".into(),
                        };
                        break format!("[{name} exited: {how}]");
                    }
                    Ok(AttachControl::Shutdown) => break "[the daemon shut down]".to_string(),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => break "[connection closed]".to_string(),
                Some(Err(e)) => break format!("[connection lost: {e}]"),
                Some(Ok(_)) => {}
            },
            Some(bytes) = keys.recv() => {
                if let Some(at) = bytes.iter().position(|&b| b == detach_key) {
                    if at > 0 {
                        sink.send(Message::Binary(bytes[..at].to_vec().into())).await?;
                    }
                    break format!("[detached from {name}; it is still running]");
                }
                sink.send(Message::Binary(bytes.into())).await?;
            }
            _ = winch.recv() => {
                if let Some((rows, cols)) = tty::size(std::io::stdout()) {
                    let resize = serde_json::to_string(&AttachControl::Resize { rows, cols })?;
                    sink.send(Message::Text(resize.into())).await?;
                }
            }
        }
    };
    let _ = sink.close().await;
    drop(raw);
    stdout.write_all(RESET_TERMINAL)?;
    stdout.flush()?;
    eprintln!("{farewell}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse() {
        assert_eq!(parse_detach_key("ctrl-]"), Ok(0x1d));
        assert_eq!(parse_detach_key("Ctrl-Q"), Ok(0x11));
        assert_eq!(parse_detach_key("^a"), Ok(1));
        assert!(parse_detach_key("q").is_err());
        assert!(parse_detach_key("ctrl-1").is_err());
        assert_eq!(describe_key(0x1d), "Ctrl-]");
    }
}
