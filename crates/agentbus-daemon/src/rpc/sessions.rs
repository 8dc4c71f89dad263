//! Sessions: the workspace as a versioned JSON description
//! (`session:export`), a stable hash of it (`session:digest`), a bundle
//! file of it with scrollback and, on request, mail (`session:archive`),
//! and that bundle opened into a fresh daemon (`session:restore`).
//!
//! The export names every block (view, tab, parent, meta, its program:
//! provider, command, cwd, the *names* of the environment it was given,
//! size), every agent (provider, meta, its block), how many unacked
//! messages each mailbox holds, and where each event history stands.
//! Environment values are never exported: they may be secrets.
//!
//! The digest hashes the export's canonical form: block ids replaced by
//! their place in a sorted order, and times, pids, running or not, the
//! instance's id and event history left out, keys sorted. The same
//! layout, programs, meta and mail give the same digest on any daemon.

use super::blocks::{check_view_args, start_sysinfo, start_unnamed};
use super::methods::{Ctx, InstanceParams, instance_wide};
use super::protocol::{INVALID_PARAMS, RpcError};
use crate::blocks::View;
use crate::panes::Launch;
use agentbus_proto::api::{Message, OpenRequest, Provider};
use agentbus_proto::{AgentId, BlockId, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

pub const EXPORT_FORMAT: &str = "agentbus.session";
pub const ARCHIVE_FORMAT: &str = "agentbus.session.archive";
/// The version of both formats; a bundle of another version is refused.
pub const VERSION: u32 = 1;
/// Lines of scrollback an archive keeps per block unless asked.
const DEFAULT_SCROLLBACK: usize = 1_000;
const MAX_SCROLLBACK: usize = 100_000;
/// Most blocks (and agents) a restore opens.
const MAX_BLOCKS: usize = 1_000;
/// Largest bundle `session:restore` reads.
const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub version: u32,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub exported_ms: i64,
    pub blocks: Vec<BlockOut>,
    pub agents: Vec<AgentOut>,
    pub mailboxes: Vec<MailboxOut>,
    #[serde(default)]
    pub events: Vec<agentbus_store::HistoryPointer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockOut {
    pub block_id: BlockId,
    pub view: View,
    #[serde(default)]
    pub tab_id: Option<String>,
    #[serde(default)]
    pub parent_id: Option<BlockId>,
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// The names bound to this block's pane.
    #[serde(default)]
    pub agents: Vec<AgentId>,
    #[serde(default)]
    pub controller: Option<ControllerOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerOut {
    pub provider: Provider,
    pub command: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Names only: values are never exported.
    #[serde(default)]
    pub env_names: Vec<String>,
    pub rows: u16,
    pub cols: u16,
    #[serde(default)]
    pub running: bool,
    /// An adopted tmux pane: not reopened by a restore.
    #[serde(default)]
    pub tmux: bool,
    /// The ssh destination the program runs on (`conn`), and its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentOut {
    pub agent_id: AgentId,
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub block_id: Option<BlockId>,
    #[serde(default)]
    pub meta: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailboxOut {
    pub agent_id: String,
    /// Unacked messages waiting.
    pub unacked: i64,
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::app("INTERNAL", format!("the session could not be read: {e}"))
}

/// The workspace as it is now.
pub async fn build_export(state: &crate::state::AppState) -> Result<Export, RpcError> {
    let mut blocks: BTreeMap<String, BlockOut> = BTreeMap::new();
    for e in state.blocks().all() {
        blocks.insert(
            e.block_id.to_string(),
            BlockOut {
                block_id: e.block_id,
                view: e.view,
                tab_id: e.tab_id,
                parent_id: e.parent_id,
                meta: e.meta,
                agents: Vec::new(),
                controller: None,
            },
        );
    }
    for r in state.agents().all_panes() {
        let b = blocks.entry(r.block.to_string()).or_insert(BlockOut {
            block_id: r.block,
            view: View::Term,
            tab_id: None,
            parent_id: None,
            meta: Map::new(),
            agents: Vec::new(),
            controller: None,
        });
        let (rows, cols) = r.pane.size();
        b.agents = state.agents().names_of(&r.block);
        b.agents.sort();
        b.controller = Some(ControllerOut {
            provider: r.provider,
            command: r.command.clone(),
            cwd: r.cwd.clone(),
            env_names: r.env.keys().cloned().collect(),
            rows,
            cols,
            running: r.pane.is_running(),
            tmux: r.pane.tmux().is_some(),
            conn: r.conn.as_ref().map(crate::conn::Destination::shown),
            conn_port: r.conn.as_ref().and_then(crate::conn::Destination::port),
        });
    }
    let mut agents: Vec<AgentOut> = state
        .agent_list()
        .into_iter()
        .map(|a| AgentOut {
            meta: state.blocks().agent_meta(&a.agent_id),
            agent_id: a.agent_id,
            provider: a.provider,
            block_id: a.block_id,
        })
        .collect();
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let store = state.store().clone();
    let (mailboxes, events) = tokio::task::spawn_blocking(move || {
        Ok::<_, agentbus_store::StoreError>((store.open_mailboxes()?, store.event_pointers()?))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(Export {
        format: EXPORT_FORMAT.into(),
        version: VERSION,
        instance_id: crate::poller::instance_id(&state.config().daemon.data_dir).ok(),
        exported_ms: now_ms(),
        blocks: blocks.into_values().collect(),
        agents,
        mailboxes: mailboxes
            .into_iter()
            .map(|(agent_id, unacked)| MailboxOut { agent_id, unacked })
            .collect(),
        events,
    })
}

/// `v` with every object's keys sorted, so equal values print alike.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The export's canonical form: what the digest hashes.
pub fn canonical(e: &Export) -> Value {
    // A block as it is, without ids: what orders the blocks.
    let shape = |b: &BlockOut| {
        sorted(json!({
            "view": b.view,
            "tab_id": b.tab_id,
            "meta": b.meta,
            "agents": b.agents,
            "controller": b.controller.as_ref().map(|c| json!({
                "provider": c.provider, "command": c.command, "cwd": c.cwd,
                "env_names": c.env_names, "rows": c.rows, "cols": c.cols, "tmux": c.tmux,
                "conn": c.conn, "conn_port": c.conn_port,
            })),
        }))
    };
    let mut order: Vec<(String, &BlockOut)> =
        e.blocks.iter().map(|b| (shape(b).to_string(), b)).collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let place: HashMap<BlockId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (_, b))| (b.block_id, i))
        .collect();
    let blocks: Vec<Value> = order
        .iter()
        .map(|(_, b)| {
            let mut v = shape(b);
            v["parent"] = json!(b.parent_id.and_then(|p| place.get(&p)));
            sorted(v)
        })
        .collect();
    let agents: Vec<Value> = e
        .agents
        .iter()
        .map(|a| {
            sorted(json!({
                "agent_id": a.agent_id,
                "provider": a.provider,
                "meta": a.meta,
                "block": a.block_id.and_then(|b| place.get(&b)),
            }))
        })
        .collect();
    json!({
        "format": EXPORT_FORMAT,
        "version": VERSION,
        "blocks": blocks,
        "agents": agents,
        "mailboxes": e.mailboxes,
    })
}

pub fn digest_of(e: &Export) -> String {
    let text = canonical(e).to_string();
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

instance_wide!(DigestParams, ArchiveParams, RestoreParams);

pub async fn export(ctx: Ctx, _: InstanceParams) -> Result<Export, RpcError> {
    build_export(&ctx.state).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestParams {
    /// Also return the canonical form that was hashed.
    #[serde(default)]
    canonical: bool,
}

pub async fn digest(ctx: Ctx, p: DigestParams) -> Result<Value, RpcError> {
    let e = build_export(&ctx.state).await?;
    let mut v = json!({
        "digest": digest_of(&e),
        "version": VERSION,
        "blocks": e.blocks.len(),
        "agents": e.agents.len(),
    });
    if p.canonical {
        v["canonical"] = canonical(&e);
    }
    Ok(v)
}

/// A bundle as `session:archive` writes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub version: u32,
    pub digest: String,
    pub export: Export,
    /// The last lines of each terminal block, by block id.
    #[serde(default)]
    pub scrollback: BTreeMap<String, Vec<String>>,
    /// Unacked messages, when asked for.
    #[serde(default)]
    pub mail: Option<Vec<Message>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveParams {
    /// The bundle's name: `<data dir>/sessions/<name>.json`.
    name: String,
    #[serde(default)]
    include_mail: bool,
    scrollback_lines: Option<usize>,
    /// Replace a bundle of that name.
    #[serde(default)]
    overwrite: bool,
    /// Also return the bundle in the answer.
    #[serde(default)]
    return_bundle: bool,
}

/// A bundle name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
fn bundle_path(ctx: &Ctx, name: &str) -> Result<std::path::PathBuf, RpcError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!(
                "invalid params: name {} must be 1 to 64 of A-Z a-z 0-9 . _ - and not start with a dot",
                agentbus_proto::ids::escape_for_display(name, 70)
            ),
        ));
    }
    Ok(ctx
        .state
        .config()
        .daemon
        .data_dir
        .join("sessions")
        .join(format!("{name}.json")))
}

/// Every unacked message of every mailbox.
fn all_mail(store: &agentbus_store::Store) -> Result<Vec<Message>, agentbus_store::StoreError> {
    let mut out = Vec::new();
    for (recipient, _) in store.open_mailboxes()? {
        let Ok(recipient) = AgentId::parse(&recipient) else {
            continue;
        };
        let mut after = 0;
        loop {
            let (page, more) = store.read_inbox(&agentbus_store::InboxQuery {
                recipient: recipient.clone(),
                after,
                limit: 1_000,
                include_acked: false,
                now_ms: now_ms(),
            })?;
            after = page.last().map_or(after, |m| m.seq);
            out.extend(page);
            if !more {
                break;
            }
        }
    }
    Ok(out)
}

/// Writes `bytes` as `path`, 0600, whole or not at all; refuses to
/// replace a file unless `overwrite`.
fn write_bundle(path: &std::path::Path, bytes: &[u8], overwrite: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".bundle.")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if overwrite {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    std::fs::File::open(dir)?.sync_all()
}

pub async fn archive(ctx: Ctx, p: ArchiveParams) -> Result<Value, RpcError> {
    let path = bundle_path(&ctx, &p.name)?;
    let lines = p.scrollback_lines.unwrap_or(DEFAULT_SCROLLBACK);
    if lines > MAX_SCROLLBACK {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!("invalid params: scrollback_lines is at most {MAX_SCROLLBACK}"),
        ));
    }
    let export = build_export(&ctx.state).await?;
    let mut scrollback = BTreeMap::new();
    if lines > 0 {
        for r in ctx.state.agents().all_panes() {
            scrollback.insert(r.block.to_string(), r.pane.numbered_lines(lines, None).1);
        }
    }
    let mail = if p.include_mail {
        let store = ctx.state.store().clone();
        Some(
            tokio::task::spawn_blocking(move || all_mail(&store))
                .await
                .map_err(internal)?
                .map_err(internal)?,
        )
    } else {
        None
    };
    let bundle = Bundle {
        format: ARCHIVE_FORMAT.into(),
        version: VERSION,
        digest: digest_of(&export),
        export,
        scrollback,
        mail,
    };
    let bytes = serde_json::to_vec(&bundle).map_err(internal)?;
    let written = path.clone();
    let size = bytes.len();
    tokio::task::spawn_blocking(move || write_bundle(&written, &bytes, p.overwrite))
        .await
        .map_err(internal)?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                RpcError::app(
                    "EXISTS",
                    format!(
                        "a bundle named {} exists; pass overwrite: true to replace it",
                        p.name
                    ),
                )
            } else {
                RpcError::app("INTERNAL", format!("the bundle could not be written: {e}"))
            }
        })?;
    let mut v = json!({
        "path": path,
        "bytes": size,
        "digest": bundle.digest,
        "blocks": bundle.export.blocks.len(),
        "agents": bundle.export.agents.len(),
        "messages": bundle.mail.as_ref().map(Vec::len),
    });
    if p.return_bundle {
        v["bundle"] = serde_json::to_value(&bundle).map_err(internal)?;
    }
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// A bundle in this daemon's `sessions` dir ...
    name: Option<String>,
    /// ... or the bundle itself.
    bundle: Option<Value>,
    /// Values for the environment the bundle names, by agent (or block
    /// id for a block with no agent): they were not archived.
    #[serde(default)]
    env: BTreeMap<String, BTreeMap<String, String>>,
}

fn bad_bundle(m: impl Into<String>) -> RpcError {
    RpcError::app("INVALID_BUNDLE", m)
}

async fn read_bundle(ctx: &Ctx, p: &mut RestoreParams) -> Result<Bundle, RpcError> {
    let value = match (p.name.as_deref(), p.bundle.take()) {
        (Some(name), None) => {
            let path = bundle_path(ctx, name)?;
            let text = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let f = std::fs::File::open(&path)?;
                let mut s = String::new();
                f.take(MAX_BUNDLE_BYTES + 1).read_to_string(&mut s)?;
                Ok::<_, std::io::Error>(s)
            })
            .await
            .map_err(internal)?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    RpcError::app("NOT_FOUND", format!("no bundle is named {name}"))
                } else {
                    bad_bundle(format!("bundle {name} could not be read: {e}"))
                }
            })?;
            if text.len() as u64 > MAX_BUNDLE_BYTES {
                return Err(bad_bundle(format!(
                    "bundle {name} is larger than {MAX_BUNDLE_BYTES} bytes"
                )));
            }
            serde_json::from_str(&text)
                .map_err(|e| bad_bundle(format!("bundle {name} is not JSON: {e}")))?
        }
        (None, Some(b)) => b,
        (Some(_), Some(_)) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "give name or bundle, not both",
            ));
        }
        (None, None) => {
            return Err(super::methods::missing(
                "give name (a bundle in the sessions dir) or bundle",
            ));
        }
    };
    let format = value["format"].as_str().unwrap_or_default().to_string();
    let version = value["version"].as_u64();
    if format != ARCHIVE_FORMAT || version != Some(u64::from(VERSION)) {
        return Err(bad_bundle(format!(
            "this is not a bundle this daemon reads: format {format:?} version {version:?}; it reads {ARCHIVE_FORMAT} version {VERSION}"
        )));
    }
    serde_json::from_value(value).map_err(|e| bad_bundle(format!("the bundle is malformed: {e}")))
}

/// The blocks in an order that puts each parent before its children.
fn parents_first(blocks: &[BlockOut]) -> Result<Vec<&BlockOut>, RpcError> {
    let ids: HashMap<BlockId, &BlockOut> = blocks.iter().map(|b| (b.block_id, b)).collect();
    if ids.len() != blocks.len() {
        return Err(bad_bundle("two blocks of the bundle have one id"));
    }
    let mut out: Vec<&BlockOut> = Vec::with_capacity(blocks.len());
    let mut placed: std::collections::HashSet<BlockId> = Default::default();
    while out.len() < blocks.len() {
        let before = out.len();
        for b in blocks {
            if placed.contains(&b.block_id) {
                continue;
            }
            match b.parent_id {
                Some(p) if !ids.contains_key(&p) => {
                    return Err(bad_bundle(format!(
                        "block {} names a parent that is not in the bundle",
                        b.block_id
                    )));
                }
                Some(p) if !placed.contains(&p) => continue,
                _ => {
                    placed.insert(b.block_id);
                    out.push(b);
                }
            }
        }
        if out.len() == before {
            return Err(bad_bundle("the bundle's blocks are each other's parents"));
        }
    }
    Ok(out)
}

/// Whether this daemon's workspace is empty: no pane, no block.
fn workspace_empty(ctx: &Ctx) -> bool {
    ctx.state.agents().all_panes().is_empty() && ctx.state.blocks().all().is_empty()
}

/// One restore at a time: a second waits, then finds the workspace full.
static RESTORING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The trust a restored message keeps: what the bundle claims was proven
/// on another daemon, which this one cannot check, so it is only claimed.
fn restored_trust(t: &agentbus_proto::jekt::Trust) -> agentbus_proto::jekt::Trust {
    use agentbus_proto::jekt::Trust;
    match t {
        Trust::NetworkClaimed => Trust::NetworkClaimed,
        _ => Trust::SelfDeclared,
    }
}

pub async fn restore(ctx: Ctx, mut p: RestoreParams) -> Result<Value, RpcError> {
    let bundle = read_bundle(&ctx, &mut p).await?;
    let _one = RESTORING.lock().await;
    if !workspace_empty(&ctx) {
        return Err(RpcError::app(
            "WORKSPACE_NOT_EMPTY",
            "a session is restored into a fresh workspace: this daemon has blocks or panes (stop and delete them, or use a new data dir)",
        ));
    }
    let state = &ctx.state;
    let export = &bundle.export;
    // Check everything before anything starts.
    if export.blocks.len() > MAX_BLOCKS || export.agents.len() > MAX_BLOCKS {
        return Err(bad_bundle(format!(
            "the bundle has {} blocks and {} agents; a restore opens at most {MAX_BLOCKS} of each",
            export.blocks.len(),
            export.agents.len()
        )));
    }
    let order = parents_first(&export.blocks)?;
    for env in p.env.values() {
        crate::panes::check_env(state, env)?;
    }
    for a in &export.agents {
        super::meta::check_new(View::Term, &a.meta)?;
    }
    let config = state.config();
    let too_big = bundle
        .mail
        .iter()
        .flatten()
        .find(|m| m.body.len() > config.mailbox.max_body_bytes);
    if let Some(m) = too_big {
        return Err(bad_bundle(format!(
            "message {} has {} bytes; this daemon takes at most {} (mailbox.max_body_bytes)",
            m.id,
            m.body.len(),
            config.mailbox.max_body_bytes
        )));
    }
    // Each block's meta as it will be: what its view needs checked again.
    let mut metas: HashMap<BlockId, Map<String, Value>> = HashMap::new();
    for b in &order {
        if let Some(t) = &b.tab_id
            && !super::meta::valid_tab(t)
        {
            return Err(bad_bundle(format!(
                "block {} has an invalid tab id",
                b.block_id
            )));
        }
        let mut free = b.meta.clone();
        for k in ["file", "url", "doc", "conn"] {
            free.remove(k);
        }
        super::meta::check_new(b.view, &free)?;
        if let Some(conn) = b.controller.as_ref().and_then(|c| c.conn.clone()) {
            free.insert("conn".into(), json!(conn));
        }
        let text = |k: &str| b.meta.get(k).and_then(Value::as_str);
        match b.view {
            // The file may not exist on this machine yet: only its shape.
            View::Editor => match text("file") {
                Some(f) if !f.is_empty() && f.len() <= 4096 && !f.contains('\0') => {
                    free.insert("file".into(), json!(f));
                }
                _ => {
                    return Err(bad_bundle(format!(
                        "editor block {} has no valid file",
                        b.block_id
                    )));
                }
            },
            View::Browser | View::Help => {
                check_view_args(b.view, None, text("url"), &mut free)?;
            }
            View::Term | View::Sysinfo => {}
        }
        metas.insert(b.block_id, free);
    }
    let mut new_ids: HashMap<BlockId, BlockId> = HashMap::new();
    let mut missing_env: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut skipped: Vec<Value> = Vec::new();
    for b in order {
        let parent = b.parent_id.and_then(|p| new_ids.get(&p).copied());
        let id = match &b.controller {
            Some(c) if c.tmux => {
                skipped.push(
                    json!({"block_id": b.block_id, "why": "an adopted tmux pane is not reopened"}),
                );
                continue;
            }
            Some(c) => {
                let key = b
                    .agents
                    .first()
                    .map_or_else(|| b.block_id.to_string(), ToString::to_string);
                let given = p.env.get(&key).cloned().unwrap_or_default();
                let env: BTreeMap<String, String> = c
                    .env_names
                    .iter()
                    .filter_map(|n| given.get(n).map(|v| (n.clone(), v.clone())))
                    .collect();
                let lacking: Vec<String> = c
                    .env_names
                    .iter()
                    .filter(|n| !env.contains_key(*n))
                    .cloned()
                    .collect();
                if !lacking.is_empty() {
                    missing_env.insert(key, lacking);
                }
                let conn = match &c.conn {
                    Some(host) => {
                        let dest = crate::conn::Destination::parse(host, c.conn_port)
                            .map_err(|e| bad_bundle(e.0))?;
                        super::conn::require_connected(state, &dest).await?;
                        Some(dest)
                    }
                    None => None,
                };
                match b.agents.first() {
                    Some(agent) => {
                        let r = crate::panes::open_on(
                            state,
                            &ctx.actor(),
                            OpenRequest {
                                agent_id: agent.clone(),
                                provider: Some(c.provider),
                                command: c.command.clone(),
                                tmux: None,
                                cwd: c.cwd.clone(),
                                env,
                                rows: Some(c.rows),
                                cols: Some(c.cols),
                            },
                            conn,
                        )
                        .await?;
                        r.block_id
                    }
                    None => {
                        let id = BlockId::new();
                        start_unnamed(
                            state,
                            id,
                            &Launch {
                                provider: c.provider,
                                command: c.command.clone(),
                                cwd: c.cwd.clone(),
                                env,
                                rows: Some(c.rows),
                                cols: Some(c.cols),
                                conn,
                            },
                        )?;
                        id
                    }
                }
            }
            None => BlockId::new(),
        };
        let meta = metas.remove(&b.block_id).unwrap_or_default();
        state
            .blocks()
            .insert(id, b.view, b.tab_id.clone(), parent, meta);
        if b.view == View::Sysinfo {
            start_sysinfo(state, id);
        }
        new_ids.insert(b.block_id, id);
    }
    // Agents with no pane are known again (offline: jekts to them hold).
    let offline: Vec<(AgentId, i64)> = export
        .agents
        .iter()
        .filter(|a| state.agents().get(&a.agent_id).is_none())
        .map(|a| (a.agent_id.clone(), now_ms()))
        .collect();
    for (a, at) in &offline {
        state
            .store()
            .remember_agent(a.to_string(), *at)
            .await
            .map_err(internal)?;
    }
    state.agents().remember(offline);
    for a in &export.agents {
        state.blocks().set_agent_meta(&a.agent_id, a.meta.clone());
    }
    let mut messages = 0;
    if let Some(mail) = &bundle.mail {
        let msgs: Vec<agentbus_store::NewMessage> = mail
            .iter()
            .map(|m| agentbus_store::NewMessage {
                id: m.id,
                recipient: m.to.clone(),
                sender: m.from.clone(),
                trust: restored_trust(&m.trust),
                kind: m.kind,
                body: m.body.clone(),
                thread_id: m.thread_id.clone(),
                reply_to: m.reply_to,
                priority: m.priority,
                created_ms: m.created_ms,
                expires_ms: m.expires_ms.min(
                    now_ms()
                        + i64::try_from(config.mailbox.max_ttl_s).unwrap_or(i64::MAX / 2_000)
                            * 1000,
                ),
                receipt: m.receipt_requested,
                request_id: None,
            })
            .collect();
        messages = msgs.len();
        state.store().bulk_insert(msgs).await.map_err(internal)?;
        for m in mail {
            state.waiters().notify(&m.to);
        }
    }
    let now = build_export(state).await?;
    Ok(json!({
        "restored_from": bundle.digest,
        "digest": digest_of(&now),
        "blocks": new_ids.iter().map(|(old, new)| json!({"old": old, "new": new})).collect::<Vec<_>>(),
        "agents": export.agents.iter().map(|a| &a.agent_id).collect::<Vec<_>>(),
        "messages": messages,
        "missing_env": missing_env,
        "skipped": skipped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(id: BlockId, parent: Option<BlockId>, title: &str) -> BlockOut {
        let mut meta = Map::new();
        meta.insert("title".into(), json!(title));
        BlockOut {
            block_id: id,
            view: View::Help,
            tab_id: Some("t".into()),
            parent_id: parent,
            meta,
            agents: Vec::new(),
            controller: None,
        }
    }

    fn export(blocks: Vec<BlockOut>, at: i64) -> Export {
        Export {
            format: EXPORT_FORMAT.into(),
            version: VERSION,
            instance_id: Some(format!("ab-{at}")),
            exported_ms: at,
            blocks,
            agents: Vec::new(),
            mailboxes: Vec::new(),
            events: Vec::new(),
        }
    }

    #[test]
    fn the_digest_ignores_ids_times_and_order_but_not_structure() {
        let (a, b, c, d) = (
            BlockId::new(),
            BlockId::new(),
            BlockId::new(),
            BlockId::new(),
        );
        let one = export(vec![block(a, None, "top"), block(b, Some(a), "child")], 1);
        // Other ids, another time, another order: the same workspace.
        let two = export(vec![block(d, Some(c), "child"), block(c, None, "top")], 2);
        assert_eq!(digest_of(&one), digest_of(&two));
        // The child under another parent is another workspace.
        let three = export(
            vec![
                block(c, None, "top"),
                block(d, None, "child"),
                block(a, Some(d), "x"),
            ],
            3,
        );
        assert_ne!(digest_of(&one), digest_of(&three));
        let mut renamed = one.clone();
        renamed.blocks[1]
            .meta
            .insert("title".into(), json!("other"));
        assert_ne!(digest_of(&one), digest_of(&renamed));
        assert!(digest_of(&one).starts_with("sha256:"));
    }

    #[test]
    fn parents_come_first_and_loops_are_refused() {
        let (a, b, c) = (BlockId::new(), BlockId::new(), BlockId::new());
        let blocks = vec![
            block(c, Some(b), "c"),
            block(b, Some(a), "b"),
            block(a, None, "a"),
        ];
        let order: Vec<BlockId> = parents_first(&blocks)
            .unwrap()
            .iter()
            .map(|b| b.block_id)
            .collect();
        assert_eq!(order, vec![a, b, c]);
        let looped = vec![block(a, Some(b), "a"), block(b, Some(a), "b")];
        assert_eq!(
            parents_first(&looped).unwrap_err().data.unwrap()["code"],
            "INVALID_BUNDLE"
        );
        let dangling = vec![block(a, Some(c), "a")];
        assert!(parents_first(&dangling).is_err());
        let twice = vec![block(a, None, "a"), block(a, None, "b")];
        assert!(parents_first(&twice).is_err());
    }
}
