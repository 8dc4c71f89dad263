//! `agent.*`: the high-level commands. Each is the HTTP API's operation
//! under another name (`panes::open`, `jekt::inject`, `panes::stop`, ...),
//! plus the process tracker.

use super::methods::{Ctx, NoParams, Params, missing, targets_by};
use super::protocol::RpcError;
use super::scope::Target;
use crate::agents::PaneRecord;
use crate::error::{ApiError, check_range};
use crate::state::AppState;
use crate::tracker::{self, Confidence, Refusal};
use crate::{blocks::View, panes};
use agentbus_proto::api::{
    AgentInfo, AgentList, InjectRequest, InjectResponse, OpenRequest, Provider,
};
use agentbus_proto::{AgentId, BlockId};
use nix::sys::signal::Signal;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The agent a call names: `agent_id`, else the first name bound to
/// `block_id`, else the caller's own agent.
fn agent_of(
    ctx: &Ctx,
    agent: Option<AgentId>,
    block: Option<BlockId>,
) -> Result<AgentId, RpcError> {
    if let Some(a) = agent {
        return Ok(a);
    }
    if let Some(b) = block {
        return ctx
            .state
            .agents()
            .names_of(&b)
            .into_iter()
            .next()
            .ok_or_else(|| {
                if super::blocks::exists(ctx, &b) {
                    RpcError::app("AGENT_NOT_FOUND", format!("no agent is bound to block {b}"))
                } else {
                    super::not_found_block(&b).into()
                }
            });
    }
    ctx.me()
        .cloned()
        .ok_or_else(|| missing("give agent_id or block_id"))
}

/// The pane a call names (by block, agent, or the caller's own).
pub fn pane_of(
    ctx: &Ctx,
    agent: Option<AgentId>,
    block: Option<BlockId>,
) -> Result<PaneRecord, RpcError> {
    if let Some(b) = block {
        return ctx.state.agents().pane(&b).ok_or_else(|| {
            if ctx.state.blocks().get(&b).is_some() {
                RpcError::app("NO_CONTROLLER", format!("block {b} is not a terminal"))
            } else {
                super::not_found_block(&b).into()
            }
        });
    }
    let id = agent_of(ctx, agent, None)?;
    Ok(panes::pane_or_error(&ctx.state, &id)?)
}

fn default_command(provider: Option<Provider>) -> Result<Vec<String>, RpcError> {
    match provider.map(|p| (p, p.command())) {
        Some((_, Some(command))) => Ok(command.into_iter().map(String::from).collect()),
        Some((Provider::Shell, None)) => Ok(vec![login_shell()]),
        _ => Err(missing(
            "agent.open needs a command, or a provider that is one program (claude, codex, gemini, \
             copilot, opencode, qwen, kimi, pi, openclaw, aider) or shell",
        )),
    }
}

pub fn login_shell() -> String {
    std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenParams {
    agent_id: AgentId,
    provider: Option<Provider>,
    command: Option<Vec<String>>,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    tab_id: Option<String>,
    rows: Option<u16>,
    cols: Option<u16>,
    /// Run it on this host, through its ssh master (see `conn*`).
    conn: Option<super::conn::HostArg>,
    conn_port: Option<std::num::NonZeroU16>,
}

/// The name is the agent opened (or found running): exactly as given;
/// and the host it runs on, if not here.
impl Params for OpenParams {
    fn targets(&mut self, _: &AppState) -> Result<Vec<Target>, RpcError> {
        let mut t = vec![Target::Agent(self.agent_id.clone())];
        t.extend(
            super::conn::pane_host(&self.conn, self.conn_port)?
                .map(|d| super::conn::host_target(&d)),
        );
        Ok(t)
    }
}

targets_by!(agent_or_block: SendParams, StopParams, WhichParams, OutputParams, KillProcessParams, KillTreeParams);

pub async fn open(ctx: Ctx, p: OpenParams) -> Result<Value, RpcError> {
    let running = || {
        ctx.state
            .agents()
            .pane_of(&p.agent_id)
            .is_some_and(|r| r.pane.is_running())
    };
    let conn = super::conn::pane_host(&p.conn, p.conn_port)?;
    if let Some(dest) = &conn {
        super::conn::require_connected(&ctx.state, dest).await?;
    }
    let command = match p.command {
        Some(c) => c,
        // Only a name: an agent already running is returned as it is.
        None if p.provider.is_none() && running() => Vec::new(),
        // The host's own login shell.
        None if conn.is_some() && p.provider == Some(Provider::Shell) => {
            crate::conn::remote_login_shell()
        }
        None => default_command(p.provider)?,
    };
    let req = OpenRequest {
        agent_id: p.agent_id,
        provider: p.provider,
        command,
        tmux: None,
        cwd: p.cwd,
        env: p.env,
        rows: p.rows,
        cols: p.cols,
    };
    let r = panes::open_on(&ctx.state, &ctx.actor(), req, conn).await?;
    if r.created {
        ctx.state
            .blocks()
            .insert(r.block_id, View::Term, p.tab_id, None, Default::default());
    }
    let status = ctx.state.agent_info(&r.agent_id).map(|i| i.state);
    Ok(json!({
        "block_id": r.block_id,
        "agent_id": r.agent_id,
        "provider": r.provider,
        "status": status,
        "created": r.created,
        "pid": r.pid,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    message: String,
    /// Passed on as in `POST /agentmux/reactive/inject`.
    request_id: Option<Value>,
    priority: Option<Value>,
    tier: Option<Value>,
    wait_for_idle: Option<Value>,
    /// Type `message` exactly, with no marker and no sanitizing (a
    /// keyboard, as `controllerinput`); needs scope `agent.send:raw`.
    #[serde(default)]
    raw: bool,
    /// With `raw`: press Enter after the text (default true).
    submit: Option<bool>,
}

/// The scope `agent.send` with `raw: true` needs besides `agent.send`.
pub const RAW_SCOPE: &str = "agent.send:raw";

/// `agent.send` with `raw`: the message typed exactly as given.
async fn send_raw(ctx: &Ctx, mut p: SendParams) -> Result<Value, RpcError> {
    if p.request_id.is_some()
        || p.priority.is_some()
        || p.tier.is_some()
        || p.wait_for_idle.is_some()
    {
        return Err(RpcError::new(
            super::protocol::INVALID_PARAMS,
            "invalid params for agent.send: raw input takes none of request_id, priority, tier, wait_for_idle (it is typed at once, as a keyboard would)",
        ));
    }
    let targets = super::methods::which_targets(&ctx.state, &mut p.agent_id, p.block_id)?;
    ctx.authorize_also(RAW_SCOPE, super::methods::Family::Controller, &targets)?;
    let record = pane_of(ctx, p.agent_id, p.block_id)?;
    let not_running = || {
        RpcError::app(
            "NOT_RUNNING",
            format!("block {}'s program has exited", record.block),
        )
    };
    if !record.pane.is_running() {
        return Err(not_running());
    }
    let mut bytes = p.message.into_bytes();
    if p.submit.unwrap_or(true) {
        bytes.push(b'\r');
    }
    record
        .pane
        .write_input(&bytes)
        .await
        .map_err(|_| not_running())?;
    Ok(json!({
        "status": "typed",
        "raw": true,
        "block_id": record.block,
        "agent_id": ctx.state.agents().first_name(&record.block),
        "wrote": bytes.len(),
    }))
}

pub async fn send(ctx: Ctx, p: SendParams) -> Result<Value, RpcError> {
    if p.raw {
        return send_raw(&ctx, p).await;
    }
    if p.submit.is_some() {
        return Err(RpcError::new(
            super::protocol::INVALID_PARAMS,
            "invalid params for agent.send: submit goes with raw: true (a jekt is always submitted)",
        ));
    }
    let target = agent_of(&ctx, p.agent_id, p.block_id)?;
    let mut body = json!({ "target_agent": target, "message": p.message });
    for (k, v) in [
        ("request_id", p.request_id),
        ("priority", p.priority),
        ("tier", p.tier),
        ("wait_for_idle", p.wait_for_idle),
    ] {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    let mut req: InjectRequest = serde_json::from_value(body).map_err(|e| {
        RpcError::new(
            super::protocol::INVALID_PARAMS,
            format!("invalid params for agent.send: {e}"),
        )
    })?;
    // The scopes were checked against exactly this agent.
    req.exact_target = true;
    let r: InjectResponse = crate::jekt::inject(&ctx.state, ctx.identity(), req).await?;
    serde_json::to_value(r).map_err(|e| RpcError::from(ApiError::internal(e)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    #[serde(default)]
    force: bool,
}

pub async fn stop(ctx: Ctx, p: StopParams) -> Result<Value, RpcError> {
    let id = agent_of(&ctx, p.agent_id, p.block_id)?;
    let r = panes::stop(&ctx.state, &ctx.actor(), &id, p.force).await?;
    Ok(json!({
        "agent_id": r.agent_id,
        "block_id": r.block_id,
        "status": r.state,
        "exit_code": r.exit_code,
        "exit_signal": r.exit_signal,
        "stopped_by": r.stopped_by,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhichParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
}

pub async fn status(ctx: Ctx, p: WhichParams) -> Result<AgentInfo, RpcError> {
    let id = agent_of(&ctx, p.agent_id, p.block_id)?;
    ctx.state
        .agent_info(&id)
        .ok_or_else(|| ApiError::agent_not_found(&id).into())
}

pub async fn list(ctx: Ctx, _: NoParams) -> Result<AgentList, RpcError> {
    Ok(AgentList {
        agents: ctx.state.agent_list(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    lines: Option<i64>,
    /// Lines numbered above this (numbers as returned in `next_line`).
    after_line: Option<u64>,
    #[serde(default)]
    follow: bool,
    /// How long a follow may run (default 3600 s).
    follow_s: Option<u64>,
}

const MAX_LINES: i64 = 100_000;

/// The last `lines` lines of the parsed screen (or those after
/// `after_line`). With `follow`, they and every line completed later
/// arrive as `stream` notifications until the program exits, `follow_s`
/// passes or the connection closes; the answer then says why it ended.
pub async fn output(ctx: Ctx, p: OutputParams) -> Result<Value, RpcError> {
    let n = p.lines.unwrap_or(50);
    check_range("lines", n, 1..=MAX_LINES)?;
    let record = pane_of(&ctx, p.agent_id, p.block_id)?;
    let pane = &record.pane;
    let agent = ctx.state.agents().first_name(&record.block);
    if !p.follow {
        let (first, lines) = pane.numbered_lines(n as usize, p.after_line);
        let next = first + lines.len() as u64 - 1;
        return Ok(json!({
            "agent_id": agent, "block_id": record.block,
            "first_line": first, "next_line": next, "lines": lines,
        }));
    }
    let Some(request_id) = ctx.request_id.clone() else {
        return Err(RpcError::new(
            super::protocol::INVALID_PARAMS,
            "follow needs a request id: the stream is tagged with it",
        ));
    };
    let follow_for = Duration::from_secs(p.follow_s.unwrap_or(3600).clamp(1, 86_400));
    let deadline = tokio::time::sleep(follow_for);
    tokio::pin!(deadline);
    let mut wake = pane.subscribe_output();
    let (first, _) = pane.numbered_lines(n as usize, p.after_line);
    // Number of the last line sent.
    let mut sent = first.saturating_sub(1);
    let mut seq = 0u64;
    let mut total = 0usize;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let reason = loop {
        // Every complete line after `sent`: all but the last one, which
        // the program may still be writing.
        let (from, mut lines) = pane.numbered_lines(MAX_LINES as usize, Some(sent));
        let finished = !pane.is_running();
        if !finished {
            lines.pop();
        }
        if !lines.is_empty() {
            seq += 1;
            total += lines.len();
            sent = from + lines.len() as u64 - 1;
            let note = super::protocol::notification(
                "stream",
                json!({"id": request_id, "seq": seq, "data": {"first_line": from, "lines": lines}}),
            );
            if !ctx.session.send(&note).await {
                break "closed";
            }
        }
        if finished {
            break "exited";
        }
        tokio::select! {
            _ = wake.recv() => tokio::time::sleep(Duration::from_millis(30)).await,
            _ = poll.tick() => {}
            _ = &mut deadline => break "timeout",
            _ = ctx.session.cancel.cancelled() => break "closed",
        }
    };
    Ok(json!({
        "agent_id": agent, "block_id": record.block, "follow": "ended",
        "reason": reason, "streamed_lines": total, "chunks": seq, "next_line": sent,
    }))
}

pub async fn process_list(ctx: Ctx, p: WhichParams) -> Result<Value, RpcError> {
    let record = pane_of(&ctx, p.agent_id, p.block_id)?;
    let tree = ctx.state.tracker().list(record.block, live_pid(&record));
    Ok(json!({
        "block_id": record.block,
        "agents": ctx.state.agents().names_of(&record.block),
        "confidence": tree.confidence,
        "processes": tree.processes,
    }))
}

fn live_pid(record: &PaneRecord) -> Option<u32> {
    record.pane.pid().filter(|_| record.pane.is_running())
}

pub async fn tracked_blocks(ctx: Ctx, _: NoParams) -> Result<Value, RpcError> {
    let procs = tracker::all_procs();
    let blocks: Vec<Value> = ctx
        .state
        .agents()
        .all_panes()
        .iter()
        .filter(|r| r.pane.is_running())
        .map(|r| {
            let t = tracker::tree_in(procs.as_deref(), live_pid(r));
            json!({
                "block_id": r.block,
                "agents": ctx.state.agents().names_of(&r.block),
                "pid": r.pane.pid(),
                "processes": t.processes.len(),
                "rss_kb": t.processes.iter().map(|p| p.rss_kb).sum::<u64>(),
                "confidence": t.confidence,
            })
        })
        .collect();
    Ok(json!({ "blocks": blocks }))
}

pub(super) fn parse_signal(name: Option<&str>) -> Result<Signal, RpcError> {
    let name = name.unwrap_or("SIGTERM");
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    full.parse::<Signal>().map_err(|_| {
        RpcError::new(
            super::protocol::INVALID_PARAMS,
            format!(
                "unknown signal {}",
                agentbus_proto::ids::escape_for_display(name, 20)
            ),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillProcessParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    pid: u32,
    signal: Option<String>,
    /// The start time `agent.process-list` reported: the process must
    /// still be that one.
    start_time: Option<u64>,
}

pub async fn kill_process(ctx: Ctx, p: KillProcessParams) -> Result<Value, RpcError> {
    let sig = parse_signal(p.signal.as_deref())?;
    let record = pane_of(&ctx, p.agent_id, p.block_id)?;
    let block = record.block;
    match ctx
        .state
        .tracker()
        .kill(block, live_pid(&record), p.pid, p.start_time, sig)
    {
        Ok(proc_) => Ok(json!({
            "block_id": block, "pid": proc_.pid, "start_time": proc_.start_time,
            "signal": p.signal.unwrap_or_else(|| "SIGTERM".into()), "sent": true,
        })),
        Err(Refusal::NotTracked) => Err(RpcError::app(
            "PROCESS_NOT_TRACKED",
            format!("pid {} is not a process of block {block}: refused", p.pid),
        )),
        Err(Refusal::Reused { expected, found }) => Err(RpcError::app(
            "PROCESS_REUSED",
            format!(
                "pid {} is now another process (started at tick {found}, not {expected}): refused",
                p.pid
            ),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillTreeParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    /// How long after SIGTERM before SIGKILL (default: the stop grace).
    grace_ms: Option<u64>,
}

/// SIGTERM to every member, then SIGKILL to those still alive after the
/// grace. Members are held to their identity throughout: once the
/// program dies its children are re-parented, but they are still known.
pub async fn kill_tree(ctx: Ctx, p: KillTreeParams) -> Result<Value, RpcError> {
    let record = pane_of(&ctx, p.agent_id, p.block_id)?;
    let tree = ctx.state.tracker().list(record.block, live_pid(&record));
    if tree.confidence == Confidence::None {
        return Err(RpcError::app(
            "NOT_RUNNING",
            format!("block {}'s program is not running", record.block),
        ));
    }
    let signalled = tracker::signal_all(&tree.processes, Signal::SIGTERM);
    let grace = Duration::from_millis(
        p.grace_ms
            .unwrap_or(ctx.state.config().panes.stop_grace_ms)
            .min(60_000),
    );
    let mut left = tree.processes.clone();
    tracker::wait_gone(&mut left, grace).await;
    let killed = tracker::signal_all(&left, Signal::SIGKILL);
    tracker::wait_gone(&mut left, Duration::from_secs(2)).await;
    Ok(json!({
        "block_id": record.block,
        "confidence": tree.confidence,
        "processes": tree.processes.len(),
        "sigterm": signalled,
        "sigkill": killed,
        "remaining": left.iter().map(|m| m.pid).collect::<Vec<_>>(),
    }))
}
