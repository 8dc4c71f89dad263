//! `/v1/messages`, `/v1/inbox`, `/v1/search`: the mailbox.

use super::Table;
use super::agents::AgentPath;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, check_range};
use crate::mailbox::{self, ReadParams};
use crate::state::AppState;
use agentbus_proto::AgentId;
use agentbus_proto::api::{
    AckRequest, AckResponse, InboxPage, SearchResults, SendMessageRequest, SendMessageResponse,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use std::time::Duration;

pub(super) fn add(t: Table) -> Table {
    t.add(&["POST"], "/v1/messages", false, post(send))
        .add(&["POST"], "/v1/messages/ack", false, post(ack))
        .add(&["GET"], "/v1/inbox/{agent_id}", false, get(inbox))
        .add(&["GET"], "/v1/search", false, get(search))
}

async fn send(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> Result<(StatusCode, Json<SendMessageResponse>), ApiError> {
    let (status, resp) = mailbox::send(&state, &caller, req).await?;
    Ok((status, Json(resp)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxParams {
    after: Option<i64>,
    limit: Option<i64>,
    peek: Option<bool>,
    wait: Option<f64>,
    include_acked: Option<bool>,
}

async fn inbox(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AgentPath(agent): AgentPath,
    ApiQuery(p): ApiQuery<InboxParams>,
) -> Result<Json<InboxPage>, ApiError> {
    let after = p.after.unwrap_or(0);
    check_range("after", after, 0..=i64::MAX)?;
    let limit = p.limit.unwrap_or(100);
    check_range("limit", limit, 1..=1000)?;
    let max_wait = state.config().mailbox.max_wait_s as f64;
    let wait = p.wait.unwrap_or(0.0);
    if !(0.0..=max_wait).contains(&wait) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait must be a number of seconds from 0 to {max_wait}"),
        ));
    }
    let params = ReadParams {
        after,
        limit: limit as u32,
        peek: p.peek.unwrap_or(false),
        wait: Duration::from_secs_f64(wait),
        include_acked: p.include_acked.unwrap_or(false),
    };
    mailbox::read(&state, &caller, agent, params)
        .await
        .map(Json)
}

async fn ack(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    mailbox::ack(&state, &caller, req.ids).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: String,
    agent: Option<String>,
    limit: Option<i64>,
}

async fn search(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<Json<SearchResults>, ApiError> {
    let limit = p.limit.unwrap_or(50);
    check_range("limit", limit, 1..=500)?;
    let agent = p.agent.as_deref().map(AgentId::parse).transpose()?;
    mailbox::search(&state, &caller, p.q, agent, limit as u32)
        .await
        .map(Json)
}
