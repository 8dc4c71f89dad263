//! Health, version and the audit log.

use super::Table;
use crate::auth::AdminOnly;
use crate::error::{ApiError, ApiQuery, check_range};
use crate::state::AppState;
use agentbus_proto::AgentId;
use agentbus_proto::api::{AuditList, VersionInfo};
use agentbus_store::AuditQuery;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;

pub(super) fn add(t: Table) -> Table {
    t.add(&["GET"], "/healthz", true, get(healthz))
        .add(&["GET"], "/version", true, get(version))
        .add(&["GET"], "/v1/audit", false, get(audit))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}

async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        name: "agentbus".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api: agentbus_proto::API_VERSION.into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    limit: Option<i64>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    agent: Option<String>,
    kind: Option<String>,
}

const MAX_AUDIT_LIMIT: i64 = 10_000;

/// `GET /v1/audit` and AgentMux's `GET /agentmux/reactive/audit`.
pub(super) async fn audit(
    State(state): State<AppState>,
    _: AdminOnly,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    check_range("limit", limit, 1..=MAX_AUDIT_LIMIT)?;
    let agent = p.agent.as_deref().map(AgentId::parse).transpose()?;
    if let Some(k) = &p.kind
        && (k.is_empty() || k.len() > 32 || !k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "kind must be a lowercase word such as jekt or open",
        ));
    }
    let q = AuditQuery {
        limit: limit as u32,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        agent: agent.map(|a| a.to_string()),
        kind: p.kind,
    };
    let entries = state.read_store(move |s| s.query_audit(&q)).await?;
    Ok(Json(AuditList { entries }))
}
