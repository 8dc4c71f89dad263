//! `agentbus events`: watch the event bus, read history, publish.

use super::print_json;
use crate::client::Client;
use agentbus_proto::api::{EventHistory, PublishEventRequest};
use agentbus_proto::event::Event;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print live events as they happen, one JSON object per line
    Tail {
        /// Only this type (block:exited, jekt:delivered, message:received, ...)
        #[arg(long = "type", value_name = "T")]
        event_type: Option<String>,
        /// Only events with this scope (local, agent:<id>, block:<id>, ...)
        #[arg(long, value_name = "S")]
        scope: Option<String>,
    },
    /// Print the last events of a type in a scope, oldest first
    History {
        #[arg(long = "type", value_name = "T")]
        event_type: String,
        #[arg(long, value_name = "S", default_value = "local")]
        scope: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Publish a custom event
    Publish {
        /// Its type: a-z 0-9 _ . : - (not one of agentbus's own)
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// Scope (repeatable)
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// JSON data
        #[arg(long, default_value = "null")]
        data: String,
        /// Keep the last N of this type per scope in history
        #[arg(long, default_value_t = 0)]
        persist: u32,
    },
}

pub async fn run(client: &Client, args: EventsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EventsCommand::Tail { event_type, scope } => tail(client, event_type, scope).await,
        EventsCommand::History {
            event_type,
            scope,
            limit,
        } => {
            let limit = limit.to_string();
            let h: EventHistory = client
                .get_query(
                    "/v1/events/history",
                    &[("type", &event_type), ("scope", &scope), ("limit", &limit)],
                )
                .await?;
            for e in &h.events {
                outln!("{}", serde_json::to_string(e)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Publish {
            event_type,
            scopes,
            data,
            persist,
        } => {
            let data = serde_json::from_str(&data).context("--data is not JSON")?;
            let e: Event = client
                .post(
                    "/v1/events",
                    &PublishEventRequest {
                        event_type,
                        scopes,
                        data,
                        persist,
                    },
                )
                .await?;
            print_json(&e)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn tail(
    client: &Client,
    event_type: Option<String>,
    scope: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut url = reqwest::Url::parse("http://x/v1/events/stream").context("bad URL")?;
    if let Some(t) = &event_type {
        url.query_pairs_mut().append_pair("type", t);
    }
    if let Some(s) = &scope {
        url.query_pairs_mut().append_pair("scope", s);
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut resp = client.get_stream(&path).await?;
    let mut out = std::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("the event stream broke")? {
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            // Stream bookkeeping is not an event.
            let kind = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["type"].as_str().map(String::from));
            match kind.as_deref() {
                Some("heartbeat") => continue,
                Some("subscribed") => eprintln!("[watching events; Ctrl-C to stop]"),
                Some("lagged") => {
                    eprintln!("[fell behind: {}]", String::from_utf8_lossy(&line).trim())
                }
                _ => {
                    out.write_all(&line)?;
                    out.flush()?;
                }
            }
        }
    }
    eprintln!("[the daemon closed the stream]");
    Ok(ExitCode::SUCCESS)
}
