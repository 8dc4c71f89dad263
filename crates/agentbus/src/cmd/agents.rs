//! Looking at and managing agents: ls, status, output, stop, resize,
//! register, unregister.

use super::{JsonFlag, ago, print_json};
use crate::client::Client;
use agentbus_proto::api::{
    AgentInfo, AgentList, AgentState, OutputResponse, RegisterRequest, RegisterResponse,
    ResizeRequest, StopRequest, StopResponse, UnregisterRequest, UnregisterResponse,
};
use agentbus_proto::{AgentId, BlockId};
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub name: AgentId,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    pub name: AgentId,
    /// How many lines (scrollback, then screen)
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: u32,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    pub name: AgentId,
    /// Skip the graceful steps: SIGKILL at once
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ResizeArgs {
    pub name: AgentId,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    pub name: AgentId,
    /// Bind the name to this existing pane; without it the agent is external (no pane)
    #[arg(long, value_name = "BLOCK_ID")]
    pub block: Option<BlockId>,
}

#[derive(Args, Debug)]
pub struct UnregisterArgs {
    pub name: AgentId,
}

fn state_word(a: &AgentInfo) -> String {
    let base = serde_json::to_value(a.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    match (a.state, a.exit_code, &a.exit_signal) {
        (AgentState::Exited, Some(c), _) => format!("{base}({c})"),
        (AgentState::Exited, None, Some(s)) => format!("{base}({s})"),
        _ => base,
    }
}

pub async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<ExitCode> {
    let list: AgentList = client.get("/v1/agents").await?;
    if args.json.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.agents.is_empty() {
        outln!("no agents (open one with `agentbus open <name> -- <command>`)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 7]> = list
        .agents
        .iter()
        .map(|a| {
            [
                a.agent_id.to_string(),
                state_word(a),
                a.readiness.clone().unwrap_or_else(|| "-".into()),
                a.provider
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                a.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                a.last_activity_ms.map(ago).unwrap_or_else(|| "-".into()),
                a.block_id
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME", "STATE", "INPUT", "PROVIDER", "PID", "ACTIVE", "BLOCK",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub async fn status(client: &Client, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let a: AgentInfo = client.get(&format!("/v1/agents/{}", args.name)).await?;
    if args.json.json {
        print_json(&a)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("agent:     {}", a.agent_id);
    outln!("state:     {}", state_word(&a));
    if let Some(r) = &a.readiness {
        outln!("input:     {r}");
    }
    if a.held_jekts > 0 {
        outln!(
            "held:      {} jekt(s), typed when it is ready",
            a.held_jekts
        );
    }
    if let Some(b) = a.block_id {
        outln!("block:     {b}");
    }
    if let Some(p) = a.provider {
        outln!("provider:  {p}");
    }
    if let Some(p) = a.pid {
        outln!("pid:       {p}");
    }
    if !a.command.is_empty() {
        outln!("command:   {}", a.command.join(" "));
    }
    if let (Some(r), Some(c)) = (a.rows, a.cols) {
        outln!("size:      {r}x{c}");
    }
    if let Some(t) = a.last_activity_ms {
        outln!("active:    {}", ago(t));
    }
    outln!(
        "bracketed: {}",
        if a.bracketed_paste { "on" } else { "off" }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn output(client: &Client, args: OutputArgs) -> anyhow::Result<ExitCode> {
    let out: OutputResponse = client
        .get(&format!(
            "/v1/agents/{}/output?lines={}",
            args.name, args.lines
        ))
        .await?;
    for l in out.lines {
        outln!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(client: &Client, args: StopArgs) -> anyhow::Result<ExitCode> {
    let r: StopResponse = client
        .post(
            &format!("/v1/agents/{}/stop", args.name),
            &StopRequest { force: args.force },
        )
        .await?;
    let how = match (&r.exit_code, &r.exit_signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => "still running".into(),
    };
    outln!("{} stopped by {} ({how})", r.agent_id, r.stopped_by);
    Ok(if r.state == AgentState::Exited {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn resize(client: &Client, args: ResizeArgs) -> anyhow::Result<ExitCode> {
    let _: serde_json::Value = client
        .post(
            &format!("/v1/agents/{}/resize", args.name),
            &ResizeRequest {
                rows: args.rows,
                cols: args.cols,
            },
        )
        .await?;
    outln!("{} resized to {}x{}", args.name, args.rows, args.cols);
    Ok(ExitCode::SUCCESS)
}

pub async fn register(client: &Client, args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let r: RegisterResponse = client
        .post(
            "/agentmux/reactive/register",
            &RegisterRequest {
                agent_id: args.name,
                block_id: args.block,
                tab_id: None,
            },
        )
        .await?;
    // The token goes to stdout alone, so it can be captured.
    outln!("{}", r.token);
    eprintln!(
        "registered {}{}; the line above is its token (Authorization: Bearer ...), shown once",
        r.agent_id,
        r.block_id
            .map(|b| format!(" on block {b}"))
            .unwrap_or_else(|| " (external)".into())
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn unregister(client: &Client, args: UnregisterArgs) -> anyhow::Result<ExitCode> {
    let r: UnregisterResponse = client
        .post(
            "/agentmux/reactive/unregister",
            &UnregisterRequest {
                agent_id: args.name,
            },
        )
        .await?;
    outln!("unregistered {}", r.agent_id);
    Ok(ExitCode::SUCCESS)
}
