//! The method table and the one path every call takes: find the method,
//! parse its params once (by name; positional params are refused), read
//! the targets from that parsed value (agent names resolved to the agent
//! they stand for), check the caller's scopes against them, run the
//! handler with the same value, audit the outcome. An agent token's rate
//! is counted per frame before any of it ([`super::session`]).
//!
//! A method is one line of [`TABLE`]: its name, family and handler; its
//! params type says what it acts on ([`Params::targets`]). A new family
//! (files, sessions, connections, meta) is one more handler file and its
//! lines here.

use super::protocol::{Call, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError, answer};
use super::scope::{self, Target};
use super::session::{Caller, Session};
use super::{agent, blocks, conn, controller, events, files, meta, screenshot, sessions};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::{AgentId, BlockId};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Agent,
    Pane,
    Block,
    Controller,
    Event,
    Session,
    Meta,
    Conn,
    File,
    Auth,
}

impl Family {
    /// The family a scope names (`agent.*` → agent); auth is never scoped.
    pub fn parse(s: &str) -> Option<Family> {
        Some(match s {
            "agent" => Family::Agent,
            "pane" => Family::Pane,
            "block" => Family::Block,
            "controller" => Family::Controller,
            "event" => Family::Event,
            "session" => Family::Session,
            "meta" => Family::Meta,
            "conn" => Family::Conn,
            "file" => Family::File,
            _ => return None,
        })
    }
}

/// What a handler gets: the daemon, the connection, who is calling, and
/// the request id (streams tag their notifications with it).
#[derive(Clone)]
pub struct Ctx {
    pub state: AppState,
    pub session: Arc<Session>,
    pub caller: Caller,
    pub request_id: Option<Value>,
    /// The call's targets as the audit log names them, once checked.
    shown: Arc<OnceLock<String>>,
    /// A capability the call used beside its method (`agent.send:raw`):
    /// the audit log names the call by it.
    used: Arc<OnceLock<&'static str>>,
}

impl Ctx {
    pub fn identity(&self) -> &Identity {
        &self.caller.identity
    }

    pub fn actor(&self) -> String {
        self.caller.identity.actor()
    }

    /// The caller's own agent, for an agent token.
    pub fn me(&self) -> Option<&AgentId> {
        match &self.caller.identity {
            Identity::Agent(a) => Some(a),
            _ => None,
        }
    }

    /// Checks the caller's scopes for a capability a method has beside
    /// its own name (`agent.send:raw`), on the same targets.
    pub fn authorize_also(
        &self,
        capability: &'static str,
        family: Family,
        targets: &[Target],
    ) -> Result<(), RpcError> {
        let _ = self.used.set(capability);
        self.authorize(capability, family, targets)
    }

    /// Checks the caller's scopes (an agent token's) against method
    /// `name` acting on `targets`, and records the targets for the audit.
    fn authorize(&self, name: &str, family: Family, targets: &[Target]) -> Result<(), RpcError> {
        let _ = self.shown.set(
            targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        let (Identity::Agent(me), Some(scopes)) = (&self.caller.identity, &self.caller.scopes)
        else {
            return Ok(());
        };
        scope::check(scopes, me, name, family, targets).map_err(|missing| {
            RpcError::app(
                "FORBIDDEN",
                format!(
                    "{} lacks scope {missing}; it has: {}",
                    self.caller.describe(),
                    scopes
                        .iter()
                        .map(scope::Scope::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }
}

pub type Handler = fn(Ctx, Value) -> BoxFuture<'static, Result<Value, RpcError>>;

pub struct Method {
    pub name: &'static str,
    pub family: Family,
    pub handler: Handler,
    /// Parses params as the handler would, without running it.
    pub check: fn(Value) -> Result<(), RpcError>,
}

/// Parses `params` into the params type of handler `_f`, as the call
/// would (the type is inferred from the handler).
fn parses<P, R, F, Fut>(name: &str, params: Value, _f: F) -> Result<(), RpcError>
where
    P: Params,
    F: FnOnce(Ctx, P) -> Fut,
    Fut: Future<Output = Result<R, RpcError>>,
{
    parse_params::<P>(name, params).map(drop)
}

/// Whether `params` are valid for `method`: `None` if there is no such
/// method.
pub fn check_params(method: &str, params: Value) -> Option<Result<(), RpcError>> {
    find(method).map(|m| (m.check)(params))
}

/// Feeds arbitrary text through the App API's framing and every method's
/// params parsing, and checks what they promise: no panic, a batch never
/// empty, positional params always refused with -32602. For the fuzz
/// target (`fuzz/`) and the replay of its seeds in the tests.
#[doc(hidden)]
pub fn fuzz_frame(text: &str) {
    use super::protocol::{Frame, Item, parse};
    let items = match parse(text) {
        Frame::Broken(e) => {
            assert!(
                e.code == super::protocol::PARSE_ERROR
                    || e.code == super::protocol::INVALID_REQUEST
            );
            return;
        }
        Frame::Single(i) => vec![i],
        Frame::Batch(items) => {
            assert!(!items.is_empty());
            items
        }
    };
    for item in items {
        let Item::Call(call) = item else { continue };
        let positional = matches!(&call.params, Value::Array(a) if !a.is_empty());
        if let Some(r) = check_params(&call.method, call.params)
            && positional
        {
            assert_eq!(r.map_err(|e| e.code), Err(INVALID_PARAMS));
        }
    }
}

/// A method's params, parsed once. The targets the caller's scopes are
/// checked against are read from this very value (names resolved in
/// place to the agent they stand for), and the handler then runs with
/// it, so no shape of params can reach a handler unchecked.
pub trait Params: DeserializeOwned + Send + 'static {
    /// What the call acts on; nothing means the caller itself.
    fn targets(&mut self, _state: &AppState) -> Result<Vec<Target>, RpcError> {
        Ok(Vec::new())
    }
}

/// Implements [`Params`] for params types that name their target the
/// usual way: `agent_or_block` types by `agent_id` and/or `block_id`
/// (the name resolved in place), `block` types by `block_id` alone.
macro_rules! targets_by {
    (agent_or_block: $($t:ty),+ $(,)?) => {$(
        impl $crate::rpc::methods::Params for $t {
            fn targets(
                &mut self,
                state: &$crate::state::AppState,
            ) -> Result<Vec<$crate::rpc::scope::Target>, $crate::rpc::protocol::RpcError> {
                $crate::rpc::methods::which_targets(state, &mut self.agent_id, self.block_id)
            }
        }
    )+};
    (block: $($t:ty),+ $(,)?) => {$(
        impl $crate::rpc::methods::Params for $t {
            fn targets(
                &mut self,
                state: &$crate::state::AppState,
            ) -> Result<Vec<$crate::rpc::scope::Target>, $crate::rpc::protocol::RpcError> {
                Ok(vec![$crate::rpc::methods::block_target(state, self.block_id)])
            }
        }
    )+};
}
pub(crate) use targets_by;

/// Parses params by name. Positional params (an array) are refused: a
/// struct filled by position could name a target the check never saw.
pub fn parse_params<P: DeserializeOwned>(name: &str, params: Value) -> Result<P, RpcError> {
    let params = match params {
        Value::Array(a) if a.is_empty() => Value::Object(Default::default()),
        Value::Array(_) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!(
                    "invalid params for {name}: params must be an object of named fields; \
                     positional params (an array) are not supported"
                ),
            ));
        }
        p => p,
    };
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(INVALID_PARAMS, format!("invalid params for {name}: {e}")))
}

/// Parses the params, checks the caller's scopes against their targets,
/// runs the handler and serializes its result.
async fn typed<P, R, F, Fut>(
    name: &'static str,
    family: Family,
    ctx: Ctx,
    params: Value,
    f: F,
) -> Result<Value, RpcError>
where
    P: Params,
    R: Serialize,
    F: FnOnce(Ctx, P) -> Fut,
    Fut: Future<Output = Result<R, RpcError>>,
{
    let mut p: P = parse_params(name, params)?;
    let targets = p.targets(&ctx.state)?;
    ctx.authorize(name, family, &targets)?;
    let r = f(ctx, p).await?;
    serde_json::to_value(r).map_err(|e| RpcError::from(ApiError::internal(e)))
}

macro_rules! method {
    ($name:literal, $family:ident, $f:path) => {
        Method {
            name: $name,
            family: Family::$family,
            handler: |ctx, params| Box::pin(typed($name, Family::$family, ctx, params, $f)),
            check: |params| parses($name, params, $f),
        }
    };
}

/// Every method of the App API.
pub static TABLE: &[Method] = &[
    method!("agent.open", Agent, agent::open),
    method!("agent.send", Agent, agent::send),
    method!("agent.stop", Agent, agent::stop),
    method!("agent.status", Agent, agent::status),
    method!("agent.list", Agent, agent::list),
    method!("agent.output", Agent, agent::output),
    method!("agent.process-list", Agent, agent::process_list),
    method!("agent.tracked-blocks", Agent, agent::tracked_blocks),
    method!("agent.kill-process", Agent, agent::kill_process),
    method!("agent.kill-tree", Agent, agent::kill_tree),
    method!("pane.open", Pane, blocks::pane_open),
    method!("createblock", Block, blocks::create_block),
    method!("createsubblock", Block, blocks::create_sub_block),
    method!("deleteblock", Block, blocks::delete_block),
    method!("deletesubblock", Block, blocks::delete_sub_block),
    method!("blockinfo", Block, blocks::block_info),
    method!("blockslist", Block, blocks::blocks_list),
    method!("controllerinput", Controller, controller::input),
    method!("controllerresync", Controller, controller::resync),
    method!("controllerrestart", Controller, controller::restart),
    method!("controllerstop", Controller, controller::stop),
    method!("captureblockscreenshot", Controller, screenshot::capture),
    method!("eventpublish", Event, events::publish),
    method!("eventsub", Event, events::subscribe),
    method!("eventunsub", Event, events::unsubscribe),
    method!("eventunsuball", Event, events::unsubscribe_all),
    method!("eventreadhistory", Event, events::read_history),
    method!("eventrecv", Event, events::receive),
    method!("session:export", Session, sessions::export),
    method!("session:digest", Session, sessions::digest),
    method!("session:archive", Session, sessions::archive),
    method!("session:restore", Session, sessions::restore),
    method!("getmeta", Meta, meta::get_meta),
    method!("setmeta", Meta, meta::set_meta),
    method!("setview", Meta, meta::set_view),
    method!("getfullconfig", Meta, meta::get_full_config),
    method!("getvar", Meta, meta::get_var),
    method!("setvar", Meta, meta::set_var),
    method!("connconnect", Conn, conn::connect),
    method!("connensure", Conn, conn::ensure),
    method!("conndisconnect", Conn, conn::disconnect),
    method!("connstatus", Conn, conn::status),
    method!("connlist", Conn, conn::list),
    method!("connlistaws", Conn, conn::list_aws),
    method!("fileread", File, files::read),
    method!("filewrite", File, files::write),
    method!("filecreate", File, files::create),
    method!("filedelete", File, files::delete),
    method!("fileappend", File, files::append),
    method!("filecopy", File, files::copy),
    method!("filemove", File, files::rename),
    method!("filemkdir", File, files::mkdir),
    method!("filelist", File, files::list),
    method!("fileliststream", File, files::list_stream),
    method!("filereadstream", File, files::read_stream),
    method!("filestreamtar", File, files::stream_tar),
    method!("fileinfo", File, files::info),
    method!("filejoin", File, files::join),
    // Handled by the connection before dispatch; listed so they are known.
    method!("authenticate", Auth, unreachable_auth),
    method!("authenticatetoken", Auth, unreachable_auth),
];

async fn unreachable_auth(_: Ctx, _: NoParams) -> Result<Value, RpcError> {
    Err(RpcError::app(
        "INTERNAL",
        "authentication is handled by the connection",
    ))
}

pub fn find(name: &str) -> Option<&'static Method> {
    TABLE.iter().find(|m| m.name == name)
}

/// Resolves `agent` in place to the agent it stands for (exactly that
/// name, else the one name equal to it ignoring case) and returns it as a
/// target. A name that matches several agents ignoring case is refused.
pub fn agent_target(state: &AppState, agent: &mut AgentId) -> Result<Target, RpcError> {
    match state.agents().canonical(agent) {
        Ok(Some(found)) => *agent = found,
        Ok(None) => {}
        Err(several) => return Err(ApiError::ambiguous_agent(agent, &several).into()),
    }
    Ok(Target::Agent(agent.clone()))
}

/// The targets of a call that names an agent, a block, or neither.
pub fn which_targets(
    state: &AppState,
    agent: &mut Option<AgentId>,
    block: Option<BlockId>,
) -> Result<Vec<Target>, RpcError> {
    let mut out = Vec::new();
    if let Some(a) = agent {
        out.push(agent_target(state, a)?);
    }
    if let Some(b) = block {
        out.push(block_target(state, b));
    }
    Ok(out)
}

pub fn block_target(state: &AppState, id: BlockId) -> Target {
    Target::Block {
        id,
        names: state.agents().names_of(&id),
    }
}

/// An event scope as a target: `agent:<name>` is that agent,
/// `block:<id>` that block (matched as written: events are).
pub fn event_scope_target(state: &AppState, s: &str) -> Target {
    if let Some(a) = s
        .strip_prefix("agent:")
        .and_then(|a| AgentId::parse(a).ok())
    {
        return Target::Agent(a);
    }
    if let Some(b) = s
        .strip_prefix("block:")
        .and_then(|b| BlockId::parse(b).ok())
    {
        return block_target(state, b);
    }
    Target::EventScope(s.to_string())
}

/// Runs one authenticated call and returns its answer (none for a
/// notification). Every call is audited, refused ones too (refusals are
/// sampled by the audit log under a flood). `counted`: the call's rate
/// was already checked, as part of its frame.
pub async fn dispatch(
    state: &AppState,
    session: &Arc<Session>,
    caller: Caller,
    call: Call,
    counted: Result<(), RpcError>,
) -> Option<Value> {
    let Call { id, method, params } = call;
    let shown = Arc::new(OnceLock::new());
    let used = Arc::new(OnceLock::new());
    let result = match counted {
        Ok(()) => {
            let marks = (shown.clone(), used.clone());
            run(state, session, &caller, &id, &method, params, marks).await
        }
        Err(e) => Err(e),
    };
    state.metrics().app_api_call(&method, result.is_ok());
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e
            .data
            .as_ref()
            .and_then(|d| d["code"].as_str())
            .map_or_else(|| e.code.to_string(), str::to_lowercase),
    };
    let targets = shown.get().filter(|t| !t.is_empty());
    let detail: Vec<String> = [
        targets.map(|t| format!("targets={t}")),
        result.as_ref().err().map(|e| e.message.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut record = AuditRecord::new(
        caller.identity.actor(),
        "rpc",
        Some(super::truncate(used.get().copied().unwrap_or(&method), 64)),
        &outcome,
    );
    if !detail.is_empty() {
        record = record.detail(super::truncate(&detail.join(" "), 300).to_string());
    }
    if result.is_err() {
        record = record.refusal();
    }
    state.audit(record).await;
    Some(answer(&id?, result))
}

/// Finds the method and runs it: its handler parses the params, checks
/// scopes against them, and acts.
async fn run(
    state: &AppState,
    session: &Arc<Session>,
    caller: &Caller,
    id: &Option<Value>,
    name: &str,
    params: Value,
    (shown, used): (Arc<OnceLock<String>>, Arc<OnceLock<&'static str>>),
) -> Result<Value, RpcError> {
    let Some(method) = find(name) else {
        let name = agentbus_proto::ids::escape_for_display(name, 64);
        return Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {name}"),
        ));
    };
    let ctx = Ctx {
        state: state.clone(),
        session: session.clone(),
        caller: caller.clone(),
        request_id: id.clone(),
        shown,
        used,
    };
    (method.handler)(ctx, params).await
}

/// Params of a method that takes none.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl Params for NoParams {}

/// Params of a method that takes none and acts on the whole daemon.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceParams {}

impl Params for InstanceParams {
    fn targets(&mut self, _: &AppState) -> Result<Vec<Target>, RpcError> {
        Ok(vec![Target::Instance])
    }
}

/// Implements [`Params`] for params types of methods that act on the
/// whole daemon.
macro_rules! instance_wide {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::rpc::methods::Params for $t {
            fn targets(
                &mut self,
                _: &$crate::state::AppState,
            ) -> Result<Vec<$crate::rpc::scope::Target>, $crate::rpc::protocol::RpcError> {
                Ok(vec![$crate::rpc::scope::Target::Instance])
            }
        }
    )+};
}
pub(crate) use instance_wide;

/// Params of a method that takes only a block.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockParams {
    pub block_id: BlockId,
}

targets_by!(block: BlockParams);

pub fn missing(what: &str) -> RpcError {
    RpcError::app("MISSING_ARG", what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_params_are_refused_for_every_method() {
        for m in TABLE {
            for params in [
                serde_json::json!(["bob"]),
                serde_json::json!([{"agent_id": "bob"}]),
                serde_json::json!([null, "x", 1]),
            ] {
                let e = (m.check)(params).unwrap_err();
                assert_eq!(e.code, INVALID_PARAMS, "{}", m.name);
                assert!(
                    e.message.contains("positional"),
                    "{}: {}",
                    m.name,
                    e.message
                );
            }
        }
    }

    #[test]
    fn the_fuzz_seeds_replay_cleanly() {
        for seed in agentbus_proto::fuzz_seeds("jsonrpc") {
            fuzz_frame(&String::from_utf8_lossy(&seed));
        }
    }

    /// The App API catalog as AgentMux documents it: every name is served.
    const CATALOG: [&str; 60] = [
        "agent.open",
        "agent.send",
        "agent.stop",
        "agent.status",
        "agent.list",
        "agent.output",
        "agent.process-list",
        "agent.tracked-blocks",
        "agent.kill-process",
        "agent.kill-tree",
        "pane.open",
        "session:archive",
        "session:restore",
        "session:export",
        "session:digest",
        "createblock",
        "createsubblock",
        "deleteblock",
        "deletesubblock",
        "blockinfo",
        "blockslist",
        "controllerinput",
        "controllerresync",
        "controllerrestart",
        "controllerstop",
        "captureblockscreenshot",
        "fileread",
        "filewrite",
        "filecreate",
        "filedelete",
        "fileappend",
        "filecopy",
        "filemove",
        "filemkdir",
        "filelist",
        "fileliststream",
        "filereadstream",
        "filestreamtar",
        "fileinfo",
        "filejoin",
        "eventpublish",
        "eventrecv",
        "eventsub",
        "eventunsub",
        "eventunsuball",
        "eventreadhistory",
        "connconnect",
        "conndisconnect",
        "connensure",
        "connlist",
        "connlistaws",
        "connstatus",
        "getmeta",
        "setmeta",
        "setview",
        "getfullconfig",
        "getvar",
        "setvar",
        "authenticate",
        "authenticatetoken",
    ];

    #[test]
    fn every_method_of_the_catalog_is_served_and_documented() {
        let doc = include_str!("../../../../docs/app-api.md");
        let missing: Vec<&str> = CATALOG
            .iter()
            .copied()
            .filter(|m| find(m).is_none())
            .collect();
        assert!(missing.is_empty(), "not served: {missing:?}");
        assert_eq!(TABLE.len(), CATALOG.len(), "served beyond the catalog");
        let undocumented: Vec<&str> = TABLE
            .iter()
            .map(|m| m.name)
            .filter(|m| !doc.contains(&format!("`{m}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/app-api.md: {undocumented:?}"
        );
    }

    #[test]
    fn the_table_has_each_name_once() {
        let mut names: Vec<&str> = TABLE.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        assert!(find("agent.kill-tree").is_some());
        assert!(find("files.read").is_none());
    }
}
