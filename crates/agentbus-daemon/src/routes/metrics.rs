//! `GET /metrics`: the daemon's metrics in the Prometheus text format
//! (docs/metrics.md), for the instance key or the read-only metrics
//! token (`<data dir>/metrics.token`), which opens this route alone.
//!
//! The handler checks the credential itself, because the auth
//! middleware does not know the metrics token (so on any other route
//! that token is an unknown credential: 401).

use super::Table;
use crate::auth::{Identity, presented_credential};
use crate::error::ApiError;
use crate::state::AppState;
use agentbus_proto::metrics::CONTENT_TYPE;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const ROUTE: &str = "GET /metrics";

pub(super) fn add(t: Table) -> Table {
    t.add_self_checked(&["GET"], "/metrics", get(metrics))
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
