//! Meta and config: `getmeta` / `setmeta` on blocks and agents,
//! `setview`, `getfullconfig`, `getvar` / `setvar`.
//!
//! Metadata keys are of two kinds. Typed keys are ones the daemon
//! understands and checks (`title`, `description`, `tags`; a block's
//! `tab_id`, an editor's `file`, a browser's `url`; and read-only ones it
//! reports, such as an agent's `provider`). Free keys start with `x:`
//! and hold any JSON value. Any other key is refused, so a typo is an
//! error rather than a silent no-op.

use super::blocks::{check_view_args, exists, invalid_arg, parse_view, start_sysinfo};
use super::methods::{Ctx, InstanceParams, instance_wide, missing, targets_by};
use super::protocol::{INVALID_PARAMS, RpcError};
use crate::blocks::View;
use crate::error::ApiError;
use agentbus_proto::{AgentId, BlockId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Free keys start with this.
pub const FREE_PREFIX: &str = "x:";
/// Largest metadata of one block or agent, as JSON.
pub const MAX_META_BYTES: usize = 64 * 1024;
const MAX_KEY_CHARS: usize = 128;

/// Keys the daemon reports and sets itself.
const BLOCK_READ_ONLY: &[&str] = &["view", "doc", "conn"];
const AGENT_READ_ONLY: &[&str] = &["provider", "command", "cwd", "block_id", "pid", "state"];
/// Keys anyone may set on any block or agent.
const COMMON: &[&str] = &["title", "description", "tags"];

/// A tab id: 1 to 128 characters, none of them a control character.
pub(super) fn valid_tab(t: &str) -> bool {
    !t.is_empty() && t.chars().count() <= 128 && !t.chars().any(char::is_control)
}

fn bad_meta(m: String) -> RpcError {
    RpcError::app("INVALID_META", m)
}

fn plain_text(key: &str, v: &Value, max_chars: usize) -> Result<(), String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("meta {key} must be a string"))?;
    if s.chars().count() > max_chars {
        return Err(format!("meta {key} is longer than {max_chars} characters"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(format!("meta {key} holds control characters"));
    }
    Ok(())
}

/// Checks one common typed key's value.
fn check_common(key: &str, v: &Value) -> Result<(), String> {
    match key {
        "title" => plain_text(key, v, 200),
        "description" => plain_text(key, v, 2000),
        "tags" => {
            let tags = v
                .as_array()
                .ok_or_else(|| "meta tags must be a list of strings".to_string())?;
            if tags.len() > 32 {
                return Err("meta tags holds more than 32 tags".into());
            }
            for t in tags {
                plain_text("tags", t, 64)?;
                if t.as_str().is_some_and(|t| t.is_empty() || t.contains('\n')) {
                    return Err("a tag is empty or holds a line break".into());
                }
            }
            Ok(())
        }
        _ => unreachable!("only common keys are checked here"),
    }
}

fn check_free_key(key: &str) -> Result<(), String> {
    let name = &key[FREE_PREFIX.len()..];
    let ok = !name.is_empty()
        && key.chars().count() <= MAX_KEY_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "free meta key {} must be x: then 1 to {} of A-Z a-z 0-9 . _ : - /",
            agentbus_proto::ids::escape_for_display(key, 60),
            MAX_KEY_CHARS - FREE_PREFIX.len()
        ))
    }
}

fn unknown_key(key: &str, settable: &[&str]) -> String {
    format!(
        "meta key {} is not one the daemon knows (it knows {}); free keys start with {FREE_PREFIX}",
        agentbus_proto::ids::escape_for_display(key, 60),
        settable.join(", ")
    )
}

fn check_size(meta: &Map<String, Value>) -> Result<(), RpcError> {
    let size = serde_json::to_string(meta).map_or(usize::MAX, |s| s.len());
    if size > MAX_META_BYTES {
        return Err(bad_meta(format!(
            "metadata would be {size} bytes as JSON; at most {MAX_META_BYTES} are kept per block or agent"
        )));
    }
    Ok(())
}

/// Checks the `meta` a new block is created with: common typed keys and
/// free keys (what its view needs comes as `file` / `url` params).
pub(super) fn check_new(view: View, meta: &Map<String, Value>) -> Result<(), RpcError> {
    for (k, v) in meta {
        if k.starts_with(FREE_PREFIX) {
            check_free_key(k).map_err(bad_meta)?;
        } else if COMMON.contains(&k.as_str()) {
            check_common(k, v).map_err(bad_meta)?;
        } else {
            let mut known = COMMON.to_vec();
            if view == View::Editor {
                known.push("file (as the file param)");
            }
            if view == View::Browser {
                known.push("url (as the url param)");
            }
            return Err(bad_meta(unknown_key(k, &known)));
        }
    }
    check_size(meta)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetMetaParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMetaParams {
    agent_id: Option<AgentId>,
    block_id: Option<BlockId>,
    /// Keys to set; a `null` value removes the key.
    meta: Map<String, Value>,
}

targets_by!(agent_or_block: GetMetaParams, SetMetaParams);

enum Object {
    Block(BlockId),
    Agent(AgentId),
}

fn object(agent: Option<AgentId>, block: Option<BlockId>) -> Result<Object, RpcError> {
    match (agent, block) {
        (Some(a), None) => Ok(Object::Agent(a)),
        (None, Some(b)) => Ok(Object::Block(b)),
        (Some(_), Some(_)) => Err(RpcError::new(
            INVALID_PARAMS,
            "give agent_id or block_id, not both: metadata belongs to one of them",
        )),
        (None, None) => Err(missing("give agent_id or block_id")),
    }
}

fn block_meta(ctx: &Ctx, id: &BlockId) -> Result<Value, RpcError> {
    if !exists(ctx, id) {
        return Err(super::not_found_block(id).into());
    }
    let entry = ctx.state.blocks().get(id);
    let mut meta = entry.as_ref().map(|e| e.meta.clone()).unwrap_or_default();
    meta.insert(
        "view".into(),
        json!(entry.as_ref().map_or(View::Term, |e| e.view)),
    );
    if let Some(tab) = entry.and_then(|e| e.tab_id) {
        meta.insert("tab_id".into(), json!(tab));
    }
    Ok(json!({ "block_id": id, "meta": meta }))
}

fn agent_meta(ctx: &Ctx, id: &AgentId) -> Result<Value, RpcError> {
    let info = ctx
        .state
        .agent_info(id)
        .ok_or_else(|| RpcError::from(ApiError::agent_not_found(id)))?;
    let mut meta = ctx.state.blocks().agent_meta(id);
    meta.insert("provider".into(), json!(info.provider));
    meta.insert("state".into(), json!(info.state));
    if let Some(r) = ctx.state.agents().pane_of(id) {
        meta.insert("block_id".into(), json!(r.block));
        meta.insert("command".into(), json!(r.command));
        meta.insert("cwd".into(), json!(r.cwd));
        meta.insert("pid".into(), json!(r.pane.pid()));
    }
    Ok(json!({ "agent_id": id, "meta": meta }))
}

pub async fn get_meta(ctx: Ctx, p: GetMetaParams) -> Result<Value, RpcError> {
    match object(p.agent_id, p.block_id)? {
        Object::Block(b) => block_meta(&ctx, &b),
        Object::Agent(a) => agent_meta(&ctx, &a),
    }
}

/// Applies `changes` to `meta` (null removes): the common typed keys and
/// free keys; `special` handles the object's own typed keys first.
fn merge(
    meta: &mut Map<String, Value>,
    changes: Map<String, Value>,
    read_only: &[&str],
    own: &[&str],
    mut special: impl FnMut(&str, &Value, &mut Map<String, Value>) -> Result<bool, RpcError>,
) -> Result<(), RpcError> {
    for (k, v) in changes {
        if read_only.contains(&k.as_str()) {
            return Err(RpcError::app(
                "READ_ONLY_META",
                format!("meta {k} is kept by the daemon and cannot be set"),
            ));
        }
        if special(&k, &v, meta)? {
            continue;
        }
        if k.starts_with(FREE_PREFIX) {
            check_free_key(&k).map_err(bad_meta)?;
        } else if COMMON.contains(&k.as_str()) {
            if !v.is_null() {
                check_common(&k, &v).map_err(bad_meta)?;
            }
        } else {
            let known: Vec<&str> = COMMON.iter().chain(own).copied().collect();
            return Err(bad_meta(unknown_key(&k, &known)));
        }
        if v.is_null() {
            meta.remove(&k);
        } else {
            meta.insert(k, v);
        }
    }
    check_size(meta)
}

fn set_block_meta(ctx: &Ctx, id: BlockId, changes: Map<String, Value>) -> Result<(), RpcError> {
    if !exists(ctx, &id) {
        return Err(super::not_found_block(&id).into());
    }
    let pane = ctx.state.agents().pane(&id).is_some();
    // Checked outside the table's lock (a file's check reads the disk),
    // then written only if nobody changed the block meanwhile; else again.
    for _ in 0..8 {
        let current = ctx
            .state
            .blocks()
            .update(&id, pane, |e| (e.view, e.meta.clone(), e.tab_id.clone()));
        let Some(seen) = current else {
            return Err(super::not_found_block(&id).into());
        };
        let (meta, tab) = merge_block(seen.0, seen.1.clone(), seen.2.clone(), changes.clone())?;
        let written = ctx.state.blocks().update(&id, pane, |e| {
            let unchanged = e.view == seen.0 && e.meta == seen.1 && e.tab_id == seen.2;
            if unchanged {
                e.meta = meta;
                e.tab_id = tab;
            }
            unchanged
        });
        match written {
            Some(true) => return Ok(()),
            Some(false) => continue,
            None => return Err(super::not_found_block(&id).into()),
        }
    }
    Err(RpcError::app(
        "BUSY",
        format!("block {id}'s metadata kept changing under this call; try again"),
    ))
}

/// `changes` applied to a block's `meta` and `tab` as its `view` allows.
fn merge_block(
    view: View,
    mut meta: Map<String, Value>,
    mut tab: Option<String>,
    changes: Map<String, Value>,
) -> Result<(Map<String, Value>, Option<String>), RpcError> {
    let own: &[&str] = match view {
        View::Editor => &["tab_id", "file"],
        View::Browser => &["tab_id", "url"],
        _ => &["tab_id"],
    };
    merge(
        &mut meta,
        changes,
        BLOCK_READ_ONLY,
        own,
        |k, v, meta| match (k, view) {
            ("tab_id", _) => {
                tab = match v {
                    Value::Null => None,
                    Value::String(t) if valid_tab(t) => Some(t.clone()),
                    _ => {
                        return Err(bad_meta(
                            "meta tab_id must be 1 to 128 printable characters, or null for no tab"
                                .into(),
                        ));
                    }
                };
                Ok(true)
            }
            ("file", View::Editor) | ("url", View::Browser) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad_meta(format!("meta {k} must be a string")))?;
                let (file, url) = if k == "file" {
                    (Some(s), None)
                } else {
                    (None, Some(s))
                };
                check_view_args(view, file, url, meta)?;
                Ok(true)
            }
            _ => Ok(false),
        },
    )?;
    Ok((meta, tab))
}

fn set_agent_meta(ctx: &Ctx, id: &AgentId, changes: Map<String, Value>) -> Result<(), RpcError> {
    if ctx.state.agent_info(id).is_none() {
        return Err(ApiError::agent_not_found(id).into());
    }
    // Read, changed and written under the one lock: no update is lost.
    ctx.state.blocks().with_agent_meta(id, |meta| {
        merge(meta, changes, AGENT_READ_ONLY, &[], |_, _, _| Ok(false))
    })
}

pub async fn set_meta(ctx: Ctx, p: SetMetaParams) -> Result<Value, RpcError> {
    match object(p.agent_id, p.block_id)? {
        Object::Block(b) => {
            set_block_meta(&ctx, b, p.meta)?;
            block_meta(&ctx, &b)
        }
        Object::Agent(a) => {
            set_agent_meta(&ctx, &a, p.meta)?;
            agent_meta(&ctx, &a)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetViewParams {
    block_id: BlockId,
    view: String,
    /// `editor`: the file to show.
    file: Option<String>,
    /// `browser`: the page.
    url: Option<String>,
}

targets_by!(block: SetViewParams);

/// Changes what a block shows. A block whose program is running stays a
/// terminal (stop it first); only a block that has had a program can be
/// a terminal again. What the old view needed (`file`, `url`, `doc`)
/// goes with it; a `sysinfo` block starts or stops publishing.
pub async fn set_view(ctx: Ctx, p: SetViewParams) -> Result<Value, RpcError> {
    let id = p.block_id;
    let view = parse_view(&p.view)?;
    if !exists(&ctx, &id) {
        return Err(super::not_found_block(&id).into());
    }
    let pane = ctx.state.agents().pane(&id);
    let current = ctx.state.blocks().get(&id).map_or(View::Term, |e| e.view);
    if view != View::Term && pane.as_ref().is_some_and(|r| r.pane.is_running()) {
        return Err(RpcError::app(
            "HAS_CONTROLLER",
            format!(
                "block {id}'s program is running: stop it first (controllerstop), then change its view"
            ),
        ));
    }
    if view == View::Term && pane.is_none() {
        return Err(RpcError::app(
            "NO_CONTROLLER",
            format!(
                "block {id} has no program to show as a terminal: open a term block with pane.open"
            ),
        ));
    }
    let (file, url) = (p.file.as_deref(), p.url.as_deref());
    if (file.is_some() && view != View::Editor) || (url.is_some() && view != View::Browser) {
        return Err(invalid_arg(
            "file goes with the editor view and url with the browser view".into(),
        ));
    }
    let mut meta = ctx
        .state
        .blocks()
        .get(&id)
        .map(|e| e.meta)
        .unwrap_or_default();
    for k in ["file", "url", "doc"] {
        meta.remove(k);
    }
    check_view_args(view, file, url, &mut meta)?;
    if current == View::Sysinfo && view != View::Sysinfo {
        ctx.state.blocks().stop_task(&id);
    }
    ctx.state.blocks().update(&id, pane.is_some(), |e| {
        e.view = view;
        e.meta = meta;
    });
    if view == View::Sysinfo && current != View::Sysinfo {
        start_sysinfo(&ctx.state, id);
    }
    Ok(json!({ "block_id": id, "view": view, "previous": current, "changed": view != current }))
}

pub async fn get_full_config(ctx: Ctx, _: InstanceParams) -> Result<Value, RpcError> {
    let config = ctx.state.config();
    Ok(json!({
        "config": crate::vars::redacted(&config),
        "live_vars": ctx.state.saved_vars(),
        "redacted": crate::vars::REDACTED,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetVarParams {
    /// One setting; without it, all of them.
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVarParams {
    name: String,
    /// The new value; `null` returns the setting to the config's value.
    value: Value,
}

instance_wide!(GetVarParams, SetVarParams);

fn var_error(e: crate::vars::VarError) -> RpcError {
    match e {
        crate::vars::VarError::Unknown(_) => RpcError::app("UNKNOWN_VAR", e.to_string()),
        crate::vars::VarError::Invalid(..) => RpcError::app("INVALID_VALUE", e.to_string()),
        crate::vars::VarError::Save(_) => RpcError::app("INTERNAL", e.to_string()),
    }
}

fn describe_var(ctx: &Ctx, var: &crate::vars::Var) -> Value {
    crate::vars::describe(
        var,
        ctx.state.base_config(),
        &ctx.state.config(),
        &ctx.state.saved_vars(),
    )
}

pub async fn get_var(ctx: Ctx, p: GetVarParams) -> Result<Value, RpcError> {
    match p.name {
        Some(name) => {
            let var = crate::vars::find(&name)
                .ok_or_else(|| var_error(crate::vars::VarError::Unknown(name)))?;
            Ok(describe_var(&ctx, var))
        }
        None => Ok(json!({
            "vars": crate::vars::VARS.iter().map(|v| describe_var(&ctx, v)).collect::<Vec<_>>()
        })),
    }
}

pub async fn set_var(ctx: Ctx, p: SetVarParams) -> Result<Value, RpcError> {
    let var = crate::vars::find(&p.name)
        .ok_or_else(|| var_error(crate::vars::VarError::Unknown(p.name.clone())))?;
    let previous = var.get(&ctx.state.config());
    ctx.state.set_var(var.name, p.value).map_err(var_error)?;
    let mut v = describe_var(&ctx, var);
    v["previous"] = previous;
    Ok(v)
}
