//! `agentbus mcp`: the MCP server on stdio, for an agent CLI to launch.
//!
//! It acts as one agent. In a pane that is the pane's agent
//! (`AGENTBUS_AGENT_ID`, with `AGENTBUS_AGENT_TOKEN` against
//! `AGENTBUS_URL`); elsewhere `--as <agent>` with the instance key. stdout
//! carries MCP messages only; logs go to stderr.
//!
//! Before the handshake it asks the daemon about its agent with its own
//! credential: a token the daemon refuses (revoked when the agent was
//! reopened, or another agent's) or a pane that has ended stops it with
//! the reason on stderr, so the CLI shows the server as failed instead of
//! acting as nobody, or as someone else. In a pane it keeps asking while
//! it serves, and exits once its pane is gone.

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
    /// Acting for its pane's agent (not `--as`): it lives as long as the pane.
    in_pane: bool,
}

/// How often a server in a pane checks that its pane still runs.
const PANE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl HttpBackend {
    /// Asks the daemon, with this server's own credential, whether its
    /// agent is there to act for. `Err` says why not; `Unreachable` is
    /// not an answer (the daemon may be restarting).
    async fn check(&self) -> Result<(), Check> {
        let path = format!("/v1/agents/{}", self.me);
        let call = agentbus_mcp::ApiCall::get(path);
        let refused = |e: anyhow::Error| Check::Refused(e);
        let info = match self.client.request(&call).await {
            Ok(v) => v,
            Err(f) if f.status == 0 => {
                return Err(Check::Unreachable(anyhow::anyhow!(
                    "the agentbus daemon cannot be reached: {}",
                    f.message
                )));
            }
            Err(f) if f.status == 401 || f.status == 403 => {
                return Err(refused(anyhow::anyhow!(
                    "the daemon refused this server's credential for agent {} ({}): the token is not \
                 this agent's, or was revoked when the agent was reopened; restart the agent CLI \
                 from its pane (`agentbus open`) so it gets the current one",
                    self.me,
                    f.message
                )));
            }
            Err(f) if f.status == 404 && !self.in_pane => return Ok(()),
            Err(f) => {
                return Err(refused(anyhow::anyhow!(
                    "agent {} is not known to the daemon: {}",
                    self.me,
                    f.message
                )));
            }
        };
        let state = info.get("state").and_then(|s| s.as_str()).unwrap_or("");
        if self.in_pane && state == "exited" {
            return Err(refused(anyhow::anyhow!(
                "agent {}'s pane has ended; this server acts for no one",
                self.me
            )));
        }
        Ok(())
    }
}

/// Why a server may not act for its agent.
enum Check {
    /// The daemon gave no answer.
    Unreachable(anyhow::Error),
    /// The daemon said no: a refused credential, an unknown agent, an
    /// ended pane.
    Refused(anyhow::Error),
}

impl Check {
    fn into_error(self) -> anyhow::Error {
        match self {
            Check::Unreachable(e) | Check::Refused(e) => e,
        }
    }
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
        in_pane: args.as_agent.is_none(),
    })
}

pub async fn run(args: McpArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let backend = Arc::new(backend(&args, data_dir)?);
    backend
        .check()
        .await
        .map_err(Check::into_error)
        .context("agentbus mcp will not start")?;
    tracing::info!(agent = %backend.me, "MCP server on stdio");
    let server = BusServer::new(backend.clone(), args.channel);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client did not complete the handshake")?;
    if args.channel {
        tokio::spawn(push_mail(backend.clone(), running.peer().clone()));
    }
    if !backend.in_pane {
        running.waiting().await.context("the MCP session failed")?;
        return Ok(ExitCode::SUCCESS);
    }
    let watcher = backend.clone();
    let gone = tokio::spawn(async move {
        loop {
            tokio::time::sleep(PANE_CHECK).await;
            // Only a definite answer ends it: a daemon restarting is not
            // a pane gone.
            if let Err(Check::Refused(e)) = watcher.check().await {
                tracing::warn!(agent = %watcher.me, "MCP server stopping: {e:#}");
                // At once: the thread blocked reading stdin would keep a
                // clean shutdown waiting for the client to close it.
                std::process::exit(0);
            }
        }
    });
    let ended = running.waiting().await;
    gone.abort();
    ended.context("the MCP session failed")?;
    Ok(ExitCode::SUCCESS)
}
