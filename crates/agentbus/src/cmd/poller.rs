//! `agentbus poller`: point this instance at a relay, stop, or look.

use super::{JsonFlag, print_json};
use crate::client::Client;
use agentbus_proto::api::{PollerConfigRequest, PollerStats, PollerStatus};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct PollerArgs {
    #[command(subcommand)]
    pub command: Option<PollerCommand>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Subcommand, Debug)]
pub enum PollerCommand {
    /// Whether the poller is configured and connected (the default)
    Status,
    /// Counters: received, delivered, failed, duplicates, sent
    Stats,
    /// Long-poll this relay from now on (kept across restarts). The token
    /// is read from AGENTBUS_RELAY_TOKEN, or from stdin with --token-stdin
    Set {
        /// The relay's base URL, e.g. http://127.0.0.1:8787
        url: String,
        /// Read the relay token from the first line of stdin
        #[arg(long)]
        token_stdin: bool,
    },
    /// Stop polling (jekts for other machines are then held or refused)
    Stop,
}

fn print_status(s: &PollerStatus) {
    match &s.url {
        None => outln!("poller: off (agentbus poller set <relay url> to start)"),
        Some(url) => {
            let state = if s.connected {
                "connected"
            } else if s.agents.is_empty() && s.last_error.is_none() {
                // Nothing to poll for: no long-poll is open, by design.
                "idle (no agents here to poll for)"
            } else {
                "not connected"
            };
            outln!("poller: {state}, relay {url}, consumer {}", s.consumer);
            outln!(
                "token: {}",
                if s.token_set {
                    "set"
                } else {
                    "none (open relay)"
                }
            );
            let names: Vec<&str> = s.agents.iter().map(|a| a.as_str()).collect();
            outln!(
                "agents: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            if let Some(e) = &s.last_error {
                outln!("last error: {e}");
            }
            if let Some(r) = s.retry_in_s {
                outln!("next try in: {r:.1}s");
            }
        }
    }
}

pub async fn run(client: &Client, args: PollerArgs) -> anyhow::Result<ExitCode> {
    let json = args.json.json;
    let status = match args.command.unwrap_or(PollerCommand::Status) {
        PollerCommand::Status => client.get("/agentmux/reactive/poller/status").await?,
        PollerCommand::Stats => {
            let s: PollerStats = client.get("/agentmux/reactive/poller/stats").await?;
            if json {
                print_json(&s)?;
            } else {
                outln!(
                    "received {}  delivered {}  failed {}  duplicates {}  sent {}  polls {}  errors {}",
                    s.received,
                    s.delivered,
                    s.failed,
                    s.duplicates,
                    s.sent,
                    s.polls,
                    s.errors
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        PollerCommand::Set { url, token_stdin } => {
            let token = if token_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("failed to read the token from stdin")?;
                line.trim().to_string()
            } else {
                std::env::var("AGENTBUS_RELAY_TOKEN").unwrap_or_default()
            };
            let body = PollerConfigRequest {
                agentmux_url: url,
                agentmux_token: token,
            };
            client
                .post("/agentmux/reactive/poller/config", &body)
                .await?
        }
        PollerCommand::Stop => {
            let body = PollerConfigRequest {
                agentmux_url: String::new(),
                agentmux_token: String::new(),
            };
            client
                .post("/agentmux/reactive/poller/config", &body)
                .await?
        }
    };
    let status: PollerStatus = status;
    if json {
        print_json(&status)?;
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}
