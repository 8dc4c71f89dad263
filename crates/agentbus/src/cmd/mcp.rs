//! `agentbus mcp`: the MCP server on stdio, for an agent CLI to launch.
//!
//! It acts as one agent. In a pane that is the pane's agent
//! (`AGENTBUS_AGENT_ID`, with `AGENTBUS_AGENT_TOKEN` against
//! `AGENTBUS_URL`); elsewhere `--as <agent>` with the instance key. stdout
//! carries MCP messages only; logs go to stderr.

use crate::client::{ApiFailure, Client};
use agentbus_mcp::{ApiCall, Backend, BusServer, push_mail};
use anyhow::{Context, bail};
use clap::Args;
use rmcp::ServiceExt;
use rmcp::model::Extensions;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct McpArgs {
    /// Act as this agent (with the instance key, outside a pane)
    #[arg(long = "as", value_name = "AGENT")]
    pub as_agent: Option<String>,
    /// Push new mail to Claude Code as channel notifications (experimental `claude/channel`)
    #[arg(long)]
    pub channel: bool,
}

/// The tools' way to the daemon: HTTP, as one agent.
struct HttpBackend {
    client: Client,
    me: String,
}

impl Backend for HttpBackend {
    fn me(&self, _: &Extensions) -> Result<String, String> {
        Ok(self.me.clone())
    }

    async fn call(&self, _: &Extensions, call: ApiCall) -> Result<serde_json::Value, ApiFailure> {
        self.client.request(&call).await
    }
}

fn backend(args: &McpArgs, data_dir: Option<&Path>) -> anyhow::Result<HttpBackend> {
    let me = match &args.as_agent {
        Some(name) => name.clone(),
        None => match std::env::var("AGENTBUS_AGENT_ID") {
            Ok(id) if !id.is_empty() => id,
            _ => bail!(
                "agentbus mcp needs to know which agent it acts as: run it in an agentbus pane \
                 (AGENTBUS_URL, AGENTBUS_AGENT_ID and AGENTBUS_AGENT_TOKEN are set there), \
                 or pass --as <agent> to act for that agent with the instance key"
            ),
        },
    };
    let me = agentbus_proto::AgentId::parse(&me)
        .with_context(|| format!("invalid agent name {me:?}"))?
        .to_string();
    Ok(HttpBackend {
        client: Client::discover(data_dir)?,
        me,
    })
}

pub async fn run(args: McpArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let backend = Arc::new(backend(&args, data_dir)?);
    tracing::info!(agent = %backend.me, "MCP server on stdio");
    let server = BusServer::new(backend.clone(), args.channel);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client did not complete the handshake")?;
    if args.channel {
        tokio::spawn(push_mail(backend, running.peer().clone()));
    }
    running.waiting().await.context("the MCP session failed")?;
    Ok(ExitCode::SUCCESS)
}
