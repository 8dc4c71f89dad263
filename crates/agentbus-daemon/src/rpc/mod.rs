//! The Agent App API: JSON-RPC 2.0 over a WebSocket at `/ws`.
//!
//! - [`protocol`] — framing, batches, error codes, the daemon's errors
//!   mapped onto them;
//! - [`session`] — one connection: auth on the upgrade or as the first
//!   call, the bounded out-queue and its writer, ping, subscriptions
//!   owned by the connection;
//! - [`methods`] — the method table and the one dispatch path (scopes,
//!   rate limit, audit);
//! - [`scope`] — what an agent token may call, and on what;
//! - one handler file per family: [`agent`] (`agent.*`), [`blocks`]
//!   (`pane.open` and the block primitives), [`controller`] (and its
//!   [`screenshot`]), [`events`], [`sessions`] (`session:*`), [`meta`]
//!   (metadata, views, config), [`conn`] (`conn*`: ssh connections, AWS
//!   profiles), [`files`] (`file*`, beneath the configured roots).

pub mod agent;
pub mod blocks;
pub mod conn;
pub mod controller;
pub mod events;
pub mod files;
pub mod meta;
pub mod methods;
pub mod protocol;
pub mod scope;
pub mod screenshot;
pub mod session;
pub mod sessions;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct UpgradeParams {
    /// The instance key or an agent token, for clients that cannot set
    /// headers on a WebSocket upgrade (browsers).
    authkey: Option<String>,
}

/// `GET /ws`. A credential on the upgrade (`X-AuthKey`, `Authorization:
/// Bearer`, or `?authkey=`) is checked before upgrading: a wrong one is a
/// 401 and no socket. Without one, the socket opens and must
/// authenticate with its first call.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<UpgradeParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let presented = crate::auth::presented_credential(&headers)
        .map(str::to_string)
        .or(p.authkey);
    let caller = match presented {
        None => None,
        Some(secret) => match session::Caller::from_secret(&state, &secret) {
            Ok(c) => Some(c),
            Err(e) => {
                state
                    .audit_refusal("anonymous", "GET /ws", "unauthorized", &e.message)
                    .await;
                return e.into_response();
            }
        },
    };
    let Ok(ws) = ws else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "/ws is the App API's WebSocket: connect with a WebSocket client (Upgrade: websocket)",
        )
        .into_response();
    };
    let max = state.config().daemon.max_body_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session::serve(state, socket, caller))
        .into_response()
}

pub(crate) use crate::auth::truncate;

pub(crate) fn not_found_block(id: &agentbus_proto::BlockId) -> ApiError {
    ApiError::not_found("block_not_found", format!("block not found: {id}"))
}
