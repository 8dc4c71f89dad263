//! `agentbus open`: host a program in a new pane.

use crate::client::Client;
use crate::tty;
use agentbus_proto::AgentId;
use agentbus_proto::api::{OpenRequest, OpenResponse, Provider};
use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct OpenArgs {
    /// The agent's name: 1-64 of A-Z a-z 0-9 _ -
    pub name: AgentId,
    /// How input is typed into it [default: guessed from the program; unknown programs are `shell`]
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Provider::ALL.map(Provider::as_str)))]
    pub provider: Option<String>,
    /// Working directory of the program [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Extra environment variable for the program (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Pane size [default: this terminal's size, else 24x80]
    #[arg(long)]
    pub rows: Option<u16>,
    #[arg(long)]
    pub cols: Option<u16>,
    /// Make an existing tmux pane the agent's terminal instead of starting
    /// a program: %N, session:window.pane or a label (found as `agentbus
    /// tmux` finds it). Prints the block id, then the agent's token.
    #[arg(long, value_name = "TARGET", conflicts_with_all = ["command", "cwd", "env", "rows", "cols"])]
    pub tmux: Option<String>,
    /// The program and its arguments, after `--`
    #[arg(last = true, required_unless_present = "tmux", value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Opens the agent; prints its block id. Returns the agent's name.
pub async fn open(client: &Client, args: OpenArgs) -> anyhow::Result<String> {
    if let Some(target) = &args.tmux {
        return open_tmux(client, &args, target).await;
    }
    let provider = provider(&args)?;
    let mut env = BTreeMap::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let cwd = match args.cwd {
        Some(d) => d,
        None => std::env::current_dir().context("failed to read the current directory")?,
    };
    let cwd = std::fs::canonicalize(&cwd)
        .with_context(|| format!("--cwd {} does not exist", cwd.display()))?;
    let size = tty::size(std::io::stdout());
    let req = OpenRequest {
        agent_id: args.name.clone(),
        provider,
        command: args.command,
        tmux: None,
        cwd: Some(cwd.display().to_string()),
        env,
        rows: args.rows.or(size.map(|s| s.0)),
        cols: args.cols.or(size.map(|s| s.1)),
    };
    let resp: OpenResponse = client.post("/v1/agents", &req).await?;
    outln!("{}", resp.block_id);
    if resp.created {
        eprintln!(
            "opened {} ({}, pid {})",
            resp.agent_id,
            resp.provider,
            resp.pid.unwrap_or(0)
        );
    } else {
        eprintln!("{} is already open", resp.agent_id);
    }
    Ok(resp.agent_id.to_string())
}

/// `open --tmux`: the CLI finds the pane (it runs where the caller's tmux
/// environment is); the daemon adopts exactly that (socket, pane, pid).
async fn open_tmux(client: &Client, args: &OpenArgs, target: &str) -> anyhow::Result<String> {
    let pane = crate::cmd::tmux::locate(target)?;
    let req = OpenRequest {
        agent_id: args.name.clone(),
        provider: provider(args)?,
        command: Vec::new(),
        tmux: Some(pane.clone()),
        cwd: None,
        env: BTreeMap::new(),
        rows: None,
        cols: None,
    };
    let resp: OpenResponse = client.post("/v1/agents", &req).await?;
    outln!("{}", resp.block_id);
    match &resp.token {
        Some(token) => {
            // The token goes to stdout alone, so it can be captured.
            outln!("{token}");
            eprintln!(
                "opened {} in tmux pane {} ({}, pid {}, server {}); the line above is its token \
                 (AGENTBUS_AGENT_TOKEN for a program in that pane), shown once",
                resp.agent_id, pane.pane_id, resp.provider, pane.pane_pid, pane.socket
            );
        }
        None => eprintln!("{} is already open", resp.agent_id),
    }
    Ok(resp.agent_id.to_string())
}

fn provider(args: &OpenArgs) -> anyhow::Result<Option<Provider>> {
    args.provider
        .as_deref()
        .map(str::parse::<Provider>)
        .transpose()
        .map_err(anyhow::Error::msg)
}
