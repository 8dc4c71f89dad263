//! `/ws` (the App API, see [`crate::rpc`]) and `/v1/tokens`: extra App
//! API tokens held to scopes (`agentbus token create`).

use super::Table;
use crate::auth::{AdminOnly, ExtraToken};
use crate::error::{ApiError, ApiJson};
use crate::state::{AppState, AuditRecord};
use agentbus_proto::AgentId;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};

pub(super) fn add(t: Table) -> Table {
    t.add(&["GET"], "/ws", true, get(crate::rpc::upgrade))
        .add(
            &["GET", "POST"],
            "/v1/tokens",
            false,
            get(list).post(create),
        )
        .add(&["DELETE"], "/v1/tokens/{token_id}", false, delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    agent_id: AgentId,
    scopes: Vec<String>,
    label: Option<String>,
}

#[derive(Debug, Serialize)]
struct Created {
    /// Shown once; stored only as a digest.
    token: String,
    #[serde(flatten)]
    info: ExtraToken,
}

const MAX_SCOPES: usize = 64;

async fn create(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
        return Err(ApiError::bad_request(
            "invalid_scope",
            format!("give 1 to {MAX_SCOPES} scopes, such as agent.status or agent.*@worker-*"),
        ));
    }
    if state.agents().get(&req.agent_id).is_none() {
        return Err(ApiError::agent_not_found(&req.agent_id));
    }
    if req.label.as_ref().is_some_and(|l| l.len() > 100) {
        return Err(ApiError::bad_request(
            "invalid_label",
            "label: at most 100 bytes",
        ));
    }
    let (token, info) = state
        .auth()
        .mint_extra(&req.agent_id, req.scopes, req.label)
        .map_err(|e| ApiError::bad_request("invalid_scope", e))?;
    state
        .audit(
            AuditRecord::new(
                actor.as_str(),
                "token",
                Some(req.agent_id.as_str()),
                "created",
            )
            .detail(format!(
                "{} scopes={}",
                info.token_id,
                info.scopes.join(",")
            )),
        )
        .await;
    Ok((StatusCode::CREATED, Json(Created { token, info })))
}

async fn list(State(state): State<AppState>, _: AdminOnly) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "tokens": state.auth().extra_tokens() }))
}

async fn revoke(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    Path(token_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.auth().revoke_extra(&token_id) {
        return Err(ApiError::not_found(
            "token_not_found",
            format!(
                "no token {}",
                agentbus_proto::ids::escape_for_display(&token_id, 40)
            ),
        ));
    }
    state
        .audit(AuditRecord::new(actor.as_str(), "token", None, "revoked").detail(token_id.clone()))
        .await;
    Ok(Json(
        serde_json::json!({ "token_id": token_id, "revoked": true }),
    ))
}
