//! The method table and the one path every call takes: find the method,
//! check the caller is authenticated, check its scopes against the method
//! and the targets the params name, count it against the token's rate,
//! run the handler, audit the outcome.
//!
//! A method is one line of [`TABLE`]: its name, family and handler. A new
//! family (files, sessions, connections, meta) is one more handler file
//! and its lines here.

use super::protocol::{Call, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError, answer};
use super::scope::{self, Target};
use super::session::{Caller, Session};
use super::{agent, blocks, controller, events};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::{AgentId, BlockId};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Agent,
    Pane,
    Block,
    Controller,
    Event,
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
}

pub type Handler = fn(Ctx, Value) -> BoxFuture<'static, Result<Value, RpcError>>;

pub struct Method {
    pub name: &'static str,
    pub family: Family,
    pub handler: Handler,
}

/// Deserializes params into the handler's type (a bad shape is
/// `INVALID_PARAMS` naming the method and the problem), runs it, and
/// serializes its result.
async fn typed<P, R, F, Fut>(name: &str, ctx: Ctx, params: Value, f: F) -> Result<Value, RpcError>
where
    P: DeserializeOwned,
    R: Serialize,
    F: FnOnce(Ctx, P) -> Fut,
    Fut: Future<Output = Result<R, RpcError>>,
{
    let params = match params {
        Value::Array(a) if a.is_empty() => Value::Object(Default::default()),
        p => p,
    };
    let p: P = serde_json::from_value(params)
        .map_err(|e| RpcError::new(INVALID_PARAMS, format!("invalid params for {name}: {e}")))?;
    let r = f(ctx, p).await?;
    serde_json::to_value(r).map_err(|e| RpcError::from(ApiError::internal(e)))
}

macro_rules! method {
    ($name:literal, $family:ident, $f:path) => {
        Method {
            name: $name,
            family: Family::$family,
            handler: |ctx, params| Box::pin(typed($name, ctx, params, $f)),
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
    method!("eventpublish", Event, events::publish),
    method!("eventsub", Event, events::subscribe),
    method!("eventunsub", Event, events::unsubscribe),
    method!("eventunsuball", Event, events::unsubscribe_all),
    method!("eventreadhistory", Event, events::read_history),
    method!("eventrecv", Event, events::receive),
    // Handled by the connection before dispatch; listed so they are known.
    method!("authenticate", Auth, unreachable_auth),
    method!("authenticatetoken", Auth, unreachable_auth),
];

async fn unreachable_auth(_: Ctx, _: Value) -> Result<Value, RpcError> {
    Err(RpcError::app(
        "INTERNAL",
        "authentication is handled by the connection",
    ))
}

pub fn find(name: &str) -> Option<&'static Method> {
    TABLE.iter().find(|m| m.name == name)
}

fn invalid(what: &str, e: impl std::fmt::Display) -> RpcError {
    RpcError::new(INVALID_PARAMS, format!("invalid {what}: {e}"))
}

/// The targets a call's params name: `agent_id`, `block_id`, event
/// `scope` / `scopes` / `allscopes`.
pub fn targets(state: &AppState, params: &Value) -> Result<Vec<Target>, RpcError> {
    let mut out = Vec::new();
    let Value::Object(p) = params else {
        return Ok(out);
    };
    if let Some(Value::String(a)) = p.get("agent_id") {
        out.push(Target::Agent(
            AgentId::parse(a).map_err(|e| invalid("agent_id", e))?,
        ));
    }
    if let Some(Value::String(b)) = p.get("block_id") {
        let id = BlockId::parse(b).map_err(|e| invalid("block_id", e))?;
        out.push(block_target(state, id));
    }
    let mut scopes: Vec<&str> = Vec::new();
    if let Some(Value::String(s)) = p.get("scope") {
        scopes.push(s);
    }
    if let Some(Value::Array(a)) = p.get("scopes") {
        scopes.extend(a.iter().filter_map(Value::as_str));
    }
    for s in scopes {
        out.push(event_scope_target(state, s));
    }
    if p.get("allscopes") == Some(&Value::Bool(true)) {
        out.push(Target::AllEventScopes);
    }
    Ok(out)
}

fn block_target(state: &AppState, id: BlockId) -> Target {
    Target::Block {
        id,
        names: state.agents().names_of(&id),
    }
}

fn event_scope_target(state: &AppState, s: &str) -> Target {
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
/// notification). Every call is audited, refused ones too.
pub async fn dispatch(
    state: &AppState,
    session: &Arc<Session>,
    caller: Caller,
    call: Call,
) -> Option<Value> {
    let Call { id, method, params } = call;
    let mut targets = String::new();
    let result = run(state, session, &caller, &id, &method, params, &mut targets).await;
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e
            .data
            .as_ref()
            .and_then(|d| d["code"].as_str())
            .map_or_else(|| e.code.to_string(), str::to_lowercase),
    };
    let detail: Vec<String> = [
        (!targets.is_empty()).then(|| format!("targets={targets}")),
        result.as_ref().err().map(|e| e.message.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut record = AuditRecord::new(
        caller.identity.actor(),
        "rpc",
        Some(super::truncate(&method, 64)),
        &outcome,
    );
    if !detail.is_empty() {
        record = record.detail(super::truncate(&detail.join(" "), 300).to_string());
    }
    state.audit(record).await;
    Some(answer(&id?, result))
}

/// Finds the method, checks scopes and rate, runs the handler. `shown`
/// gets the call's targets as the audit log names them.
async fn run(
    state: &AppState,
    session: &Arc<Session>,
    caller: &Caller,
    id: &Option<Value>,
    name: &str,
    params: Value,
    shown: &mut String,
) -> Result<Value, RpcError> {
    let Some(method) = find(name) else {
        let name = agentbus_proto::ids::escape_for_display(name, 64);
        return Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {name}"),
        ));
    };
    let targets = targets(state, &params)?;
    *shown = targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if let (Identity::Agent(me), Some(scopes)) = (&caller.identity, &caller.scopes) {
        scope::check(scopes, me, method.name, method.family, &targets).map_err(|missing| {
            RpcError::app(
                "FORBIDDEN",
                format!(
                    "{} lacks scope {missing}; it has: {}",
                    caller.describe(),
                    scopes
                        .iter()
                        .map(scope::Scope::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        state
            .limiter()
            .check_call(&caller.limit_key)
            .map_err(ApiError::from)?;
    }
    let ctx = Ctx {
        state: state.clone(),
        session: session.clone(),
        caller: caller.clone(),
        request_id: id.clone(),
    };
    (method.handler)(ctx, params).await
}

/// Params of a method that takes none.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Params of a method that takes only a block.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockParams {
    pub block_id: BlockId,
}

pub fn missing(what: &str) -> RpcError {
    RpcError::app("MISSING_ARG", what)
}

#[cfg(test)]
mod tests {
    use super::*;

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
