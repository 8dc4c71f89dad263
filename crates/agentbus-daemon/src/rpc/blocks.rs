//! `pane.open` and the block primitives: `createblock`,
//! `createsubblock`, `deleteblock`, `deletesubblock`, `blockinfo`,
//! `blockslist`. `pane.open` is `createblock` with its view's argument
//! required.

use super::methods::{BlockParams, Ctx, Params, block_target, missing};
use super::protocol::RpcError;
use super::scope::Target;
use crate::blocks::{BlockSummary, View};
use crate::panes::{self, Launch};
use crate::state::AppState;
use agentbus_proto::api::Provider;
use agentbus_proto::event::EventKind;
use agentbus_proto::{AgentId, BlockId};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// `createsubblock`: the parent block.
    block_id: Option<BlockId>,
    view: String,
    tab_id: Option<String>,
    #[serde(default)]
    meta: Map<String, Value>,
    /// `editor`: the file to show.
    file: Option<String>,
    /// `browser`: the page.
    url: Option<String>,
    /// `term`: what to run (default: the user's shell), where, with what.
    command: Option<Vec<String>>,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    provider: Option<Provider>,
    rows: Option<u16>,
    cols: Option<u16>,
    /// `term`: run it on this host, through its ssh master (see `conn*`).
    conn: Option<super::conn::HostArg>,
    conn_port: Option<std::num::NonZeroU16>,
}

/// `createsubblock` acts on its parent; the others create a new block;
/// a term on a host acts on that host.
impl Params for CreateParams {
    fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
        let host = super::conn::pane_host(&self.conn, self.conn_port)?;
        Ok(self
            .block_id
            .map(|b| block_target(state, b))
            .into_iter()
            .chain(host.map(|d| super::conn::host_target(&d)))
            .collect())
    }
}

pub(super) fn invalid_arg(m: String) -> RpcError {
    RpcError::app("INVALID_ARG", m)
}

/// Checks what `view` needs (`editor` a file, `browser` a URL) and puts
/// it into `meta`.
pub(super) fn check_view_args(
    view: View,
    file: Option<&str>,
    url: Option<&str>,
    meta: &mut Map<String, Value>,
) -> Result<(), RpcError> {
    match view {
        View::Editor => {
            let file = file
                .filter(|f| !f.is_empty())
                .ok_or_else(|| missing("the editor view needs file"))?;
            let path = std::path::Path::new(file);
            let parent_ok = path
                .parent()
                .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir());
            if path.is_dir() || !(path.is_file() || parent_ok) {
                return Err(invalid_arg(format!(
                    "file {} is not a file, nor a new file in an existing directory",
                    agentbus_proto::ids::escape_for_display(file, 200)
                )));
            }
            meta.insert("file".into(), json!(file));
        }
        View::Browser => {
            let raw = url
                .filter(|u| !u.is_empty())
                .ok_or_else(|| missing("the browser view needs url"))?;
            match url::Url::parse(raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https" | "file") => {
                    meta.insert("url".into(), json!(u.as_str()));
                }
                _ => {
                    return Err(invalid_arg(format!(
                        "url {} must be an http, https or file URL",
                        agentbus_proto::ids::escape_for_display(raw, 200)
                    )));
                }
            }
        }
        View::Help => {
            meta.insert("doc".into(), json!("docs/app-api.md"));
        }
        View::Term | View::Sysinfo => {}
    }
    Ok(())
}

/// A view by name, or `INVALID_VIEW` naming the views there are.
pub(super) fn parse_view(name: &str) -> Result<View, RpcError> {
    View::parse(name).ok_or_else(|| {
        RpcError::app(
            "INVALID_VIEW",
            format!(
                "view {} is not one of {}",
                agentbus_proto::ids::escape_for_display(name, 40),
                View::NAMES
            ),
        )
    })
}

async fn create(ctx: &Ctx, parent: Option<BlockId>, p: CreateParams) -> Result<Value, RpcError> {
    let view = parse_view(&p.view)?;
    if let Some(parent) = parent
        && !exists(ctx, &parent)
    {
        return Err(super::not_found_block(&parent).into());
    }
    if p.tab_id
        .as_deref()
        .is_some_and(|t| !super::meta::valid_tab(t))
    {
        return Err(invalid_arg(
            "tab_id must be 1 to 128 characters, none of them a control character".into(),
        ));
    }
    let mut meta = p.meta.clone();
    super::meta::check_new(view, &meta)?;
    check_view_args(view, p.file.as_deref(), p.url.as_deref(), &mut meta)?;
    let conn = super::conn::pane_host(&p.conn, p.conn_port)?;
    if let Some(dest) = &conn {
        if view != View::Term {
            return Err(RpcError::new(
                super::protocol::INVALID_PARAMS,
                "invalid params: conn is for the term view only",
            ));
        }
        super::conn::require_connected(&ctx.state, dest).await?;
        meta.insert("conn".into(), json!(dest.shown()));
    }
    let state = &ctx.state;
    let block = BlockId::new();
    let mut pid = None;
    let mut provider = None;
    if view == View::Term {
        panes::check_env(state, &p.env)?;
        let launch = Launch {
            provider: p.provider.unwrap_or(Provider::Shell),
            command: p.command.clone().unwrap_or_else(|| match &conn {
                Some(_) => crate::conn::remote_login_shell(),
                None => vec![super::agent::login_shell()],
            }),
            cwd: p.cwd.clone(),
            env: p.env.clone(),
            rows: p.rows,
            cols: p.cols,
            conn: conn.clone(),
        };
        pid = start_unnamed(state, block, &launch)?;
        provider = Some(launch.provider);
    }
    state.blocks().insert(block, view, p.tab_id, parent, meta);
    if view == View::Sysinfo {
        start_sysinfo(state, block);
    }
    state.events().publish(EventKind::BlockCreated {
        block_id: block,
        agent_id: None,
        provider,
        pid,
        view: Some(p.view),
    });
    Ok(json!({ "block_id": block, "view": view, "parent_id": parent, "pid": pid }))
}

/// Starts `launch` in a new PTY as block `block`, bound to no agent;
/// returns its pid.
pub(super) fn start_unnamed(
    state: &AppState,
    block: BlockId,
    launch: &Launch,
) -> Result<Option<u32>, RpcError> {
    let started = panes::start(state, block, None, launch)?;
    let pid = started.record.pane.pid();
    state.agents().add_unnamed_pane(started.record.clone());
    started.follow_exit(state);
    Ok(pid)
}

/// Starts block `block`'s `sysinfo` publisher, tied to the block.
pub(super) fn start_sysinfo(state: &AppState, block: BlockId) {
    let every = Duration::from_millis(state.config().app_api.sysinfo_interval_ms);
    let task = tokio::spawn(crate::blocks::publish_sysinfo(
        state.events().clone(),
        block,
        every,
    ));
    state.blocks().own_task(&block, task.abort_handle());
}

/// Whether block `id` exists: an App API block, or any pane.
pub(super) fn exists(ctx: &Ctx, id: &BlockId) -> bool {
    ctx.state.blocks().get(id).is_some() || ctx.state.agents().pane(id).is_some()
}

fn no_parent(p: &CreateParams, method: &str) -> Result<(), RpcError> {
    match p.block_id {
        Some(_) => Err(RpcError::new(
            super::protocol::INVALID_PARAMS,
            format!("invalid params for {method}: block_id names a parent; use createsubblock"),
        )),
        None => Ok(()),
    }
}

pub async fn pane_open(ctx: Ctx, p: CreateParams) -> Result<Value, RpcError> {
    no_parent(&p, "pane.open")?;
    create(&ctx, None, p).await
}

pub async fn create_block(ctx: Ctx, p: CreateParams) -> Result<Value, RpcError> {
    no_parent(&p, "createblock")?;
    create(&ctx, None, p).await
}

pub async fn create_sub_block(ctx: Ctx, p: CreateParams) -> Result<Value, RpcError> {
    let parent = p
        .block_id
        .ok_or_else(|| missing("createsubblock needs block_id, the parent"))?;
    create(&ctx, Some(parent), p).await
}

/// Deletes a block and its sub-blocks; a terminal's program is stopped.
/// An agent's pane is not deleted this way: stop or unregister the agent.
fn delete(ctx: &Ctx, id: BlockId) -> Result<Vec<BlockId>, RpcError> {
    if !exists(ctx, &id) {
        return Err(super::not_found_block(&id).into());
    }
    let names: Vec<AgentId> = ctx.state.agents().names_of(&id);
    if !names.is_empty() {
        return Err(RpcError::app(
            "BLOCK_HAS_AGENT",
            format!(
                "block {id} is the pane of {}: use agent.stop, or unregister the agent",
                names
                    .iter()
                    .map(AgentId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut deleted = Vec::new();
    for child in ctx.state.blocks().children(&id) {
        deleted.extend(delete(ctx, child)?);
    }
    if let Ok(Some(record)) = ctx.state.agents().remove_unnamed_pane(&id) {
        panes::retire(&ctx.state, record);
    }
    ctx.state.blocks().remove(&id);
    ctx.state
        .events()
        .publish(EventKind::BlockDeleted { block_id: id });
    deleted.push(id);
    Ok(deleted)
}

pub async fn delete_block(ctx: Ctx, p: BlockParams) -> Result<Value, RpcError> {
    let deleted = delete(&ctx, p.block_id)?;
    Ok(json!({ "deleted": deleted }))
}

pub async fn delete_sub_block(ctx: Ctx, p: BlockParams) -> Result<Value, RpcError> {
    let is_sub = ctx
        .state
        .blocks()
        .get(&p.block_id)
        .is_some_and(|b| b.parent_id.is_some());
    if !is_sub {
        if !exists(&ctx, &p.block_id) {
            return Err(super::not_found_block(&p.block_id).into());
        }
        return Err(RpcError::app(
            "NOT_A_SUBBLOCK",
            format!("block {} has no parent: use deleteblock", p.block_id),
        ));
    }
    let deleted = delete(&ctx, p.block_id)?;
    Ok(json!({ "deleted": deleted }))
}

/// A block as `blockinfo` and `blockslist` show it: the App API's record
/// (if any) and the pane (if any).
fn describe(ctx: &Ctx, id: BlockId, entry: Option<BlockSummary>) -> Value {
    let pane = ctx.state.agents().pane(&id);
    let mut v = match entry {
        Some(e) => serde_json::to_value(e).unwrap_or_default(),
        None => json!({ "block_id": id, "view": View::Term, "meta": {} }),
    };
    v["agents"] = json!(ctx.state.agents().names_of(&id));
    v["subblocks"] = json!(ctx.state.blocks().children(&id));
    if let Some(r) = pane {
        let (rows, cols) = r.pane.size();
        let exit = r.pane.exit_info();
        v["controller"] = json!({
            "running": r.pane.is_running(),
            "pid": r.pane.pid(),
            "provider": r.provider,
            "command": r.command,
            "conn": r.conn.as_ref().map(crate::conn::Destination::shown),
            "rows": rows,
            "cols": cols,
            "exit_code": exit.as_ref().and_then(|e| e.code),
            "exit_signal": exit.and_then(|e| e.signal),
        });
    }
    v
}

pub async fn block_info(ctx: Ctx, p: BlockParams) -> Result<Value, RpcError> {
    if !exists(&ctx, &p.block_id) {
        return Err(super::not_found_block(&p.block_id).into());
    }
    let entry = ctx.state.blocks().get(&p.block_id);
    Ok(describe(&ctx, p.block_id, entry))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    tab_id: Option<String>,
    view: Option<String>,
}

impl Params for ListParams {}

pub async fn blocks_list(ctx: Ctx, p: ListParams) -> Result<Value, RpcError> {
    let mut entries: BTreeMap<String, (BlockId, Option<BlockSummary>)> = BTreeMap::new();
    for e in ctx.state.blocks().all() {
        entries.insert(e.block_id.to_string(), (e.block_id, Some(e)));
    }
    for r in ctx.state.agents().all_panes() {
        entries
            .entry(r.block.to_string())
            .or_insert((r.block, None));
    }
    let blocks: Vec<Value> = entries
        .into_values()
        .filter(|(_, e)| {
            let tab = e.as_ref().and_then(|e| e.tab_id.as_deref());
            let view = e.as_ref().map_or(View::Term, |e| e.view);
            p.tab_id.as_deref().is_none_or(|t| tab == Some(t))
                && p.view
                    .as_deref()
                    .is_none_or(|v| View::parse(v) == Some(view))
        })
        .map(|(id, e)| describe(&ctx, id, e))
        .collect();
    Ok(json!({ "blocks": blocks }))
}
