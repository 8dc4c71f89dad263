//! `agentbus rpc`, `agentbus ps` (through the App API's typed client) and
//! `agentbus token` (extra App API tokens, over HTTP).

use super::{JsonFlag, print_json};
use crate::app_client::AppClient;
use crate::client::Client;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct RpcArgs {
    /// Method name, e.g. agent.list, pane.open, eventsub
    pub method: String,
    /// Params as a JSON object, e.g. '{"agent_id":"alice"}'
    #[arg(default_value = "{}")]
    pub params: String,
    /// Keep printing notifications (stream chunks, events) as JSON lines
    /// after the answer, until the connection closes or Ctrl-C
    #[arg(long)]
    pub watch: bool,
}

/// Calls one method and prints its answer (and, for a streaming call or
/// with `--watch`, the notifications, one JSON line each).
pub async fn rpc(client: &Client, a: RpcArgs) -> anyhow::Result<ExitCode> {
    let params: Value = serde_json::from_str(&a.params)
        .with_context(|| format!("params must be JSON: {}", a.params))?;
    let app = AppClient::connect(client).await?;
    let streaming = (a.method == "agent.output" && params["follow"] == json!(true))
        || ["filereadstream", "fileliststream", "filestreamtar"].contains(&a.method.as_str());
    if !streaming {
        let answer = app.call(&a.method, params).await?;
        print_json(&answer)?;
        if !a.watch {
            return Ok(ExitCode::SUCCESS);
        }
        while let Some(n) = app.next_notification().await {
            outln!("{}", json!({"method": n.method, "params": n.params}));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A follow streams lines until it ends, a file stream its chunks
    // (one JSON line each); print them as they come.
    let call = app.call(&a.method, params);
    tokio::pin!(call);
    loop {
        tokio::select! {
            answer = &mut call => {
                while let Some(n) = app.try_notification() { print_stream(&n) }
                print_json(&answer?)?;
                return Ok(ExitCode::SUCCESS);
            }
            Some(n) = app.next_notification() => print_stream(&n),
        }
    }
}

fn print_stream(n: &crate::app_client::Notification) {
    if n.method == "stream" {
        match n.params["data"]["lines"].as_array() {
            Some(lines) => {
                for line in lines {
                    outln!("{}", line.as_str().unwrap_or_default());
                }
            }
            None => outln!("{}", n.params["data"]),
        }
    } else {
        outln!("{}", json!({"method": n.method, "params": n.params}));
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// The agent whose pane's processes to list
    pub name: String,
    /// End the whole tree (SIGTERM, then SIGKILL after the stop grace)
    #[arg(long)]
    pub kill_tree: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// The processes under an agent's pane, from the tracker.
pub async fn ps(client: &Client, a: PsArgs) -> anyhow::Result<ExitCode> {
    let app = AppClient::connect(client).await?;
    if a.kill_tree {
        print_json(&app.kill_tree(&a.name).await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list = app.process_list(&a.name).await?;
    if a.json.json {
        print_json(
            &app.call("agent.process-list", json!({"agent_id": a.name}))
                .await?,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("block {}  confidence {}", list.block_id, list.confidence);
    outln!(
        "{:>8} {:>8} {:>12} {:>9} {:<2} COMMAND",
        "PID",
        "PPID",
        "START",
        "RSS_KB",
        "S"
    );
    for p in &list.processes {
        outln!(
            "{:>8} {:>8} {:>12} {:>9} {:<2} {}",
            p.pid,
            p.ppid,
            p.start_time,
            p.rss_kb,
            p.state,
            p.cmdline
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Mint an App API token for an agent, held to the scopes given
    Create {
        /// The agent the token acts as
        #[arg(long)]
        agent: String,
        /// A scope: method[@target], e.g. agent.status, agent.*@worker-*,
        /// controllerinput@self (repeat for more)
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A note to recognise it by
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List extra tokens (never their secrets)
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke one by its id
    Revoke { token_id: String },
    /// Make a new read-only /metrics token in <data dir>/metrics.token;
    /// the old one stops working at once
    RotateMetrics {
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub async fn token(client: &Client, a: TokenArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        TokenAction::Create {
            agent,
            scopes,
            label,
            json,
        } => {
            let r: Value = client
                .post(
                    "/v1/tokens",
                    &json!({"agent_id": agent, "scopes": scopes, "label": label}),
                )
                .await?;
            if json.json {
                print_json(&r)?;
            } else {
                // The secret alone on stdout, so it can be captured.
                outln!("{}", r["token"].as_str().unwrap_or_default());
                eprintln!(
                    "token {} for {} with scopes {} (shown once; valid until revoked, the agent is unregistered or the daemon stops)",
                    r["token_id"].as_str().unwrap_or_default(),
                    r["agent_id"].as_str().unwrap_or_default(),
                    r["scopes"]
                );
            }
        }
        TokenAction::List { json } => {
            let r: Value = client.get("/v1/tokens").await?;
            if json.json {
                print_json(&r)?;
            } else {
                for t in r["tokens"].as_array().into_iter().flatten() {
                    outln!(
                        "{}  {}  {}{}",
                        t["token_id"].as_str().unwrap_or_default(),
                        t["agent_id"].as_str().unwrap_or_default(),
                        t["scopes"],
                        t["label"]
                            .as_str()
                            .map(|l| format!("  ({l})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        TokenAction::Revoke { token_id } => {
            let _: Value = client.delete(&format!("/v1/tokens/{token_id}")).await?;
            outln!("revoked {token_id}");
        }
        TokenAction::RotateMetrics { json } => {
            let r: Value = client.post("/v1/metrics/token", &json!({})).await?;
            if json.json {
                print_json(&r)?;
            } else {
                outln!(
                    "a new metrics token is in {}; the old one no longer opens /metrics",
                    r["file"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
