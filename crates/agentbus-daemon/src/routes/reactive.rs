//! The AgentMux reactive routes, same paths and bodies.

use super::Table;
use crate::auth::{AdminOnly, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::poller::RelayTarget;
use crate::state::{AppState, AuditRecord};
use crate::{jekt, panes};
use agentbus_proto::AgentId;
use agentbus_proto::api::{
    AgentInfo, AgentList, InjectRequest, InjectResponse, PollerConfigRequest, PollerStats,
    PollerStatus, RegisterRequest, RegisterResponse, UnregisterRequest, UnregisterResponse,
};
use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;

pub(super) fn add(t: Table) -> Table {
    t.add(&["POST"], "/agentmux/reactive/inject", false, post(inject))
        .add(
            &["POST"],
            "/agentmux/reactive/register",
            false,
            post(register),
        )
        .add(
            &["POST"],
            "/agentmux/reactive/unregister",
            false,
            post(unregister),
        )
        .add(
            &["POST"],
            "/agentmux/reactive/poller/config",
            false,
            post(poller_config),
        )
        .add(
            &["GET"],
            "/agentmux/reactive/poller/status",
            false,
            get(poller_status),
        )
        .add(
            &["GET"],
            "/agentmux/reactive/poller/stats",
            false,
            get(poller_stats),
        )
        .add(&["GET"], "/agentmux/reactive/agents", false, get(agents))
        .add(&["GET"], "/agentmux/reactive/agent", false, get(agent))
        .add(
            &["GET"],
            "/agentmux/reactive/audit",
            false,
            get(super::meta::audit),
        )
}

async fn inject(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<InjectRequest>,
) -> Result<Json<InjectResponse>, ApiError> {
    Ok(Json(jekt::inject(&state, &caller, req).await?))
}

/// Points the poller at a relay, or with both fields empty stops it.
async fn poller_config(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    ApiJson(req): ApiJson<PollerConfigRequest>,
) -> Result<Json<PollerStatus>, ApiError> {
    let (url, token) = (req.agentmux_url.trim(), req.agentmux_token.trim());
    let target = match (url.is_empty(), token.is_empty()) {
        (true, true) => None,
        (true, false) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "agentmux_url is required with a token (both empty stops the poller)",
            ));
        }
        (false, _) => Some(RelayTarget {
            url: crate::config::relay_url(url, &state.config().relay.client_tls())
                .map_err(|m| ApiError::bad_request("invalid_request", m))?,
            token: token.to_string(),
        }),
    };
    let detail = target
        .as_ref()
        .map_or_else(|| "stopped".to_string(), |t| format!("url={}", t.url));
    state.poller().set_target(target)?;
    state
        .audit(AuditRecord::new(actor.as_str(), "poller", None, "configured").detail(detail))
        .await;
    Ok(Json(state.poller().status()))
}

async fn poller_status(State(state): State<AppState>, _: Caller) -> Json<PollerStatus> {
    Json(state.poller().status())
}

async fn poller_stats(State(state): State<AppState>, _: Caller) -> Json<PollerStats> {
    Json(state.poller().stats())
}

async fn register(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    panes::register(&state, actor.as_str(), req).await.map(Json)
}

async fn unregister(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    ApiJson(req): ApiJson<UnregisterRequest>,
) -> Result<Json<UnregisterResponse>, ApiError> {
    panes::unregister(&state, actor.as_str(), &req.agent_id)
        .await
        .map(Json)
}

async fn agents(State(state): State<AppState>, _: Caller) -> Json<AgentList> {
    Json(AgentList {
        agents: state.agent_list(),
    })
}

#[derive(Debug, Deserialize)]
struct AgentParams {
    agent_id: String,
}

/// One agent's state; an agent token may ask only for its own.
async fn agent(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(p): ApiQuery<AgentParams>,
) -> Result<Json<AgentInfo>, ApiError> {
    let id = AgentId::parse(&p.agent_id)?;
    caller.own_or_admin(&id, "status")?;
    state
        .agent_info(&id)
        .map(Json)
        .ok_or_else(|| ApiError::agent_not_found(&id))
}
