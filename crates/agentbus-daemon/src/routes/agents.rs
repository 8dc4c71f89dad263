//! `/v1/agents`: hosting programs in panes and looking at them.

use super::Table;
use crate::auth::{AdminOnly, Caller};
use crate::error::{ApiError, ApiJson, ApiJsonOrDefault, ApiQuery, check_range};
use crate::panes;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::AgentId;
use agentbus_proto::api::{
    AgentInfo, AgentList, Directory, DirectoryEntry, Location, OpenRequest, OpenResponse,
    OutputResponse, ResizeRequest, StopRequest, StopResponse,
};
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{StatusCode, request::Parts};
use axum::routing::{get, post};
use serde::Deserialize;

pub(super) fn add(t: Table) -> Table {
    t.add(&["GET", "POST"], "/v1/agents", false, get(list).post(open))
        .add(&["GET"], "/v1/agents/{agent_id}", false, get(status))
        .add(&["GET"], "/v1/directory", false, get(directory))
        .add(&["GET"], "/v1/agents/{agent_id}/output", false, get(output))
        .add(&["POST"], "/v1/agents/{agent_id}/stop", false, post(stop))
        .add(
            &["POST"],
            "/v1/agents/{agent_id}/resize",
            false,
            post(resize),
        )
        .add(
            &["GET"],
            "/v1/agents/{agent_id}/attach",
            false,
            get(super::attach::attach),
        )
}

/// An agent id from the path, validated.
pub(super) struct AgentPath(pub AgentId);

impl<S: Send + Sync> FromRequestParts<S> for AgentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_id", e.body_text()))?;
        Ok(AgentPath(AgentId::parse(&raw)?))
    }
}

async fn list(State(state): State<AppState>, _: Caller) -> Json<AgentList> {
    Json(AgentList {
        agents: state.agent_list_with_mail().await,
    })
}

/// This instance's agents, then those of peer instances (a name hosted
/// here shadows a peer's, as delivery does), and the relay if one is set.
async fn directory(State(state): State<AppState>, _: Caller) -> Json<Directory> {
    let local = state.agent_list();
    let mut agents: Vec<DirectoryEntry> = local
        .into_iter()
        .map(|a| DirectoryEntry {
            agent_id: a.agent_id,
            location: Location::Local,
            state: Some(a.state),
            readiness: a.readiness,
            provider: a.provider,
            url: None,
        })
        .collect();
    let peers = state.registry().map(|r| r.peers()).unwrap_or_default();
    for e in peers {
        let Ok(id) = AgentId::parse(&e.agent_id) else {
            continue;
        };
        if agents.iter().any(|a| a.agent_id == id) {
            continue;
        }
        agents.push(DirectoryEntry {
            agent_id: id,
            location: Location::Peer,
            state: None,
            readiness: None,
            provider: None,
            url: Some(e.local_url),
        });
    }
    Json(Directory {
        agents,
        relay: state.poller().status().url,
    })
}

async fn open(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    ApiJson(req): ApiJson<OpenRequest>,
) -> Result<(StatusCode, Json<OpenResponse>), ApiError> {
    let resp = panes::open(&state, actor.as_str(), req).await?;
    let status = if resp.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resp)))
}

async fn status(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AgentPath(id): AgentPath,
) -> Result<Json<AgentInfo>, ApiError> {
    caller.own_or_admin(&id, "status")?;
    state
        .agent_info_with_mail(&id)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::agent_not_found(&id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputParams {
    lines: Option<i64>,
}

const MAX_OUTPUT_LINES: i64 = 100_000;

async fn output(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AgentPath(id): AgentPath,
    ApiQuery(p): ApiQuery<OutputParams>,
) -> Result<Json<OutputResponse>, ApiError> {
    caller.own_or_admin(&id, "output")?;
    let n = p.lines.unwrap_or(50);
    check_range("lines", n, 1..=MAX_OUTPUT_LINES)?;
    let record = panes::pane_or_error(&state, &id)?;
    let lines = record.pane.lines(n as usize);
    Ok(Json(OutputResponse {
        agent_id: id,
        block_id: record.block,
        lines,
    }))
}

async fn stop(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    AgentPath(id): AgentPath,
    ApiJsonOrDefault(req): ApiJsonOrDefault<StopRequest>,
) -> Result<Json<StopResponse>, ApiError> {
    panes::stop(&state, actor.as_str(), &id, req.force)
        .await
        .map(Json)
}

async fn resize(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    AgentPath(id): AgentPath,
    ApiJson(req): ApiJson<ResizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let record = panes::pane_or_error(&state, &id)?;
    record
        .pane
        .resize(req.rows, req.cols)
        .map_err(|e| match e {
            agentbus_term::TermError::Tmux(m) => ApiError::conflict("tmux_pane", m),
            e => ApiError::bad_request("invalid_size", e.to_string()),
        })?;
    state
        .audit(
            AuditRecord::new(actor.as_str(), "resize", Some(id.as_str()), "ok")
                .detail(format!("{}x{}", req.rows, req.cols)),
        )
        .await;
    Ok(Json(
        serde_json::json!({ "agent_id": id, "rows": req.rows, "cols": req.cols }),
    ))
}
