//! `controller*`: a terminal block's program — raw input, signals and
//! resize; resync; restart; stop.

use super::agent::{pane_of, parse_signal};
use super::methods::{BlockParams, Ctx, missing, targets_by};
use super::protocol::{INVALID_PARAMS, RpcError};
use crate::panes::{self, Launch};
use crate::state::AuditRecord;
use agentbus_proto::BlockId;
use agentbus_proto::event::EventKind;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    rows: u16,
    cols: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputParams {
    block_id: BlockId,
    /// Text typed as is (no marker, no sanitizing: this is a keyboard).
    data: Option<String>,
    /// Bytes, base64.
    data64: Option<String>,
    /// A signal for the program's process group (`SIGINT`, `INT`, ...).
    signal: Option<String>,
    size: Option<Size>,
}

targets_by!(block: InputParams, ResyncParams, StopParams);

fn not_running(block: BlockId) -> RpcError {
    RpcError::app("NOT_RUNNING", format!("block {block}'s program has exited"))
}

pub async fn input(ctx: Ctx, p: InputParams) -> Result<Value, RpcError> {
    if p.data.is_none() && p.data64.is_none() && p.signal.is_none() && p.size.is_none() {
        return Err(missing(
            "controllerinput needs data, data64, signal or size",
        ));
    }
    let record = pane_of(&ctx, None, Some(p.block_id))?;
    if !record.pane.is_running() {
        return Err(not_running(p.block_id));
    }
    let mut bytes = p.data.unwrap_or_default().into_bytes();
    if let Some(b64) = &p.data64 {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                RpcError::new(
                    INVALID_PARAMS,
                    format!("invalid params for controllerinput: data64 is not base64: {e}"),
                )
            })?;
        bytes.extend(decoded);
    }
    let signal = p
        .signal
        .as_deref()
        .map(|s| parse_signal(Some(s)))
        .transpose()?;
    if let Some(s) = p.size {
        record.pane.resize(s.rows, s.cols).map_err(|e| {
            RpcError::new(
                INVALID_PARAMS,
                format!("invalid params for controllerinput: {e}"),
            )
        })?;
    }
    if !bytes.is_empty() {
        record
            .pane
            .write_input(&bytes)
            .await
            .map_err(|_| not_running(p.block_id))?;
    }
    if let Some(sig) = signal {
        record.pane.signal(sig);
    }
    Ok(json!({
        "block_id": p.block_id,
        "wrote": bytes.len(),
        "signal": p.signal,
        "size": p.size.map(|s| json!({"rows": s.rows, "cols": s.cols})),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncParams {
    block_id: BlockId,
    /// Start the program again if it has exited.
    #[serde(default)]
    restart: bool,
}

/// The controller's state and its screen as text; with `restart`, an
/// exited program is started again first.
pub async fn resync(ctx: Ctx, p: ResyncParams) -> Result<Value, RpcError> {
    let record = pane_of(&ctx, None, Some(p.block_id))?;
    let mut restarted = false;
    if p.restart && !record.pane.is_running() {
        respawn(&ctx, p.block_id).await?;
        restarted = true;
    }
    let record = pane_of(&ctx, None, Some(p.block_id))?;
    let (rows, cols) = record.pane.size();
    let (first, lines) = record.pane.numbered_lines(rows as usize, None);
    Ok(json!({
        "block_id": p.block_id,
        "running": record.pane.is_running(),
        "restarted": restarted,
        "pid": record.pane.pid(),
        "rows": rows, "cols": cols,
        "first_line": first,
        "lines": lines,
    }))
}

/// Stops the block's program (if running) and starts the same command in
/// the same block; the agent names bound to it stay (with a new token).
async fn respawn(ctx: &Ctx, block: BlockId) -> Result<Option<u32>, RpcError> {
    let _one_at_a_time = ctx.state.open_lock().lock().await;
    let old = pane_of(ctx, None, Some(block))?;
    if let Some(t) = old.pane.tmux() {
        return Err(RpcError::app(
            "TMUX_PANE",
            format!(
                "block {block} is tmux pane {}: agentbus did not start it and cannot restart it; \
                 respawn it in tmux and open it again",
                t.id
            ),
        ));
    }
    // A pane on a host runs through its master, never connecting itself.
    if let Some(dest) = &old.conn {
        super::conn::require_connected(&ctx.state, dest).await?;
    }
    if old.pane.is_running() {
        let grace = Duration::from_millis(ctx.state.config().panes.stop_grace_ms);
        old.pane.stop(false, grace).await;
    }
    let names = ctx.state.agents().names_of(&block);
    let launch = Launch {
        provider: old.provider,
        command: old.command.clone(),
        cwd: old.cwd.clone(),
        env: old.env.clone(),
        rows: Some(old.pane.size().0),
        cols: Some(old.pane.size().1),
        conn: old.conn.clone(),
    };
    let started = panes::start(&ctx.state, block, names.first(), &launch)?;
    let pid = started.record.pane.pid();
    ctx.state.agents().replace_pane(started.record.clone());
    started.follow_exit(&ctx.state);
    ctx.state.events().publish(EventKind::BlockCreated {
        block_id: block,
        agent_id: names.first().cloned(),
        provider: Some(launch.provider),
        pid,
        view: Some("term".into()),
    });
    ctx.state
        .audit(
            AuditRecord::new(
                ctx.actor(),
                "restart",
                names.first().map(|a| a.as_str()),
                "ok",
            )
            .detail(format!("block={block}")),
        )
        .await;
    Ok(pid)
}

pub async fn restart(ctx: Ctx, p: BlockParams) -> Result<Value, RpcError> {
    let pid = respawn(&ctx, p.block_id).await?;
    Ok(json!({ "block_id": p.block_id, "restarted": true, "pid": pid }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    block_id: BlockId,
    #[serde(default)]
    force: bool,
}

pub async fn stop(ctx: Ctx, p: StopParams) -> Result<Value, RpcError> {
    let record = pane_of(&ctx, None, Some(p.block_id))?;
    let grace = Duration::from_millis(ctx.state.config().panes.stop_grace_ms);
    let report = record.pane.stop(p.force, grace).await;
    let exit = report.exit;
    Ok(json!({
        "block_id": p.block_id,
        "stopped_by": report.step.as_str(),
        "running": record.pane.is_running(),
        "exit_code": exit.as_ref().and_then(|e| e.code),
        "exit_signal": exit.and_then(|e| e.signal),
    }))
}
