//! `GET /metrics`: the daemon's metrics in the Prometheus text format
//! (docs/metrics.md), for the instance key or the read-only metrics
//! token (`<data dir>/metrics.token`), which opens this route alone.
//!
//! The handler checks the credential itself, because the auth
//! middleware does not know the metrics token (so on any other route
//! that token is an unknown credential: 401).
//!
//! `POST /v1/metrics/token` (instance key only) makes a new token in that
//! file; the old one stops working at once.

use super::Table;
use crate::auth::{Caller, Identity, presented_credential};
use crate::error::ApiError;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::metrics::CONTENT_TYPE;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

const ROUTE: &str = "GET /metrics";

pub(super) fn add(t: Table) -> Table {
    t.add_self_checked(&["GET"], "/metrics", get(metrics)).add(
        &["POST"],
        "/v1/metrics/token",
        false,
        post(rotate),
    )
}

/// `POST /v1/metrics/token`: a new metrics token in its file, in force
/// at once. The answer names the file; the token is never in it.
async fn rotate(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::ui::instance_key_only(
        &caller,
        "the metrics token is rotated (`agentbus token rotate-metrics`)",
    )?;
    let data_dir = state.config().daemon.data_dir.clone();
    let (s, dir) = (state.clone(), data_dir.clone());
    tokio::task::spawn_blocking(move || s.metrics().rotate_token(&dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("cannot rotate the metrics token: {e}")))?;
    state
        .audit(AuditRecord::new(
            caller.actor(),
            "metrics_token",
            None,
            "rotated",
        ))
        .await;
    Ok(Json(serde_json::json!({
        "rotated": true,
        "file": data_dir.join(crate::metrics::TOKEN_FILE),
    })))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&state, &headers).await {
        return e.into_response();
    }
    let page = state.metrics().render(&state);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], page).into_response()
}

/// The metrics token or the instance key pass; an agent's (or a peer's)
/// credential is 403, none or an unknown one 401. Refusals are audited,
/// never with the secret presented.
async fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = presented_credential(headers);
    if presented.is_some_and(|c| state.metrics().is_token(c)) {
        return Ok(());
    }
    let (actor, outcome, why) = match presented.map(|c| state.auth().lookup(c)) {
        Some(Some(c)) if c.identity == Identity::Admin => return Ok(()),
        Some(Some(c)) => (c.identity.actor(), "forbidden", "metrics route"),
        Some(None) => (
            "anonymous".to_string(),
            "unauthorized",
            "invalid credential",
        ),
        None => (
            "anonymous".to_string(),
            "unauthorized",
            "missing credential",
        ),
    };
    state.audit_refusal(&actor, ROUTE, outcome, why).await;
    Err(if outcome == "forbidden" {
        ApiError::forbidden(format!(
            "{ROUTE} needs the metrics token or the instance key; {actor} may not read it"
        ))
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "{why}: send the metrics token (<data dir>/metrics.token) or the instance key, as Authorization: Bearer or X-AuthKey"
            ),
        )
    })
}
