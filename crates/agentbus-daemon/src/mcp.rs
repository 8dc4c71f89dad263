//! `/mcp`: the agentbus MCP tools over streamable HTTP.
//!
//! The tools (crate `agentbus-mcp`) call this daemon's own router in
//! process, with the credential the MCP request arrived with, so a tool
//! call is authenticated, confined, rate limited and audited exactly like
//! the HTTP call it stands for. Handshake-era clients (`initialize`, up to
//! 2025-11-25) get a session; clients of the stateless revision
//! (2026-07-28) are served per request.

use crate::auth::Identity;
use crate::state::AppState;
use agentbus_mcp::{ApiCall, Backend, BusServer};
use agentbus_proto::AgentId;
use agentbus_proto::api::ApiFailure;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, header, request::Parts};
use rmcp::model::Extensions;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest answer of an in-process API call (an inbox page of 1,000
/// messages of 64 KiB fits).
const MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// The tools' way into this daemon: its router, in process.
pub struct RouterBackend {
    api: Router,
}

fn parts(ext: &Extensions) -> Option<&Parts> {
    ext.get::<Parts>()
}

/// `as=<agent>` from the `/mcp` URL's query.
fn acting_as(parts: &Parts) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, _)| k == "as")
        .map(|(_, v)| v.into_owned())
}

impl Backend for RouterBackend {
    fn me(&self, ext: &Extensions) -> Result<String, String> {
        let parts = parts(ext).ok_or("this request carries no HTTP request")?;
        match parts.extensions.get::<Identity>() {
            Some(Identity::Agent(a)) => Ok(a.to_string()),
            Some(Identity::Admin) => match acting_as(parts) {
                Some(name) => AgentId::parse(&name)
                    .map(|a| a.to_string())
                    .map_err(|e| format!("invalid as= on the /mcp URL: {e}")),
                None => Err(
                    "the instance key acts for no agent here: connect to /mcp?as=<agent>, or use that agent's token"
                        .into(),
                ),
            },
            _ => Err("this credential cannot use the MCP tools".into()),
        }
    }

    async fn call(&self, ext: &Extensions, call: ApiCall) -> Result<serde_json::Value, ApiFailure> {
        let internal = |message: String| ApiFailure {
            status: 500,
            code: "internal".into(),
            message,
        };
        let parts = parts(ext).ok_or_else(|| internal("no HTTP request to act for".into()))?;
        let mut req = Request::builder()
            .method(call.method)
            .uri(call.path_and_query());
        for name in [header::AUTHORIZATION.as_str(), crate::auth::AUTH_KEY_HEADER] {
            if let Some(v) = parts.headers.get(name) {
                req = req.header(name, v);
            }
        }
        let body = match &call.body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(|e| internal(e.to_string()))?;
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| internal(format!("failed to read the answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| internal(format!("the answer is not JSON: {e}")));
        }
        Err(ApiFailure::from_body(status.as_u16(), &bytes, "http_error"))
    }
}

/// The `/mcp` service over `api` (the daemon's router without `/mcp`).
/// Sessions end when the daemon shuts down.
pub fn service(
    api: Router,
    state: &AppState,
) -> StreamableHttpService<BusServer<RouterBackend>, LocalSessionManager> {
    let cancel = CancellationToken::new();
    let mut shutdown = state.shutdown_signal();
    let on_shutdown = cancel.clone();
    tokio::spawn(async move {
        let _ = shutdown.changed().await;
        on_shutdown.cancel();
    });
    let backend = Arc::new(RouterBackend { api });
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(state.config().daemon.max_body_bytes)
        // Our own layer admits loopback origins only, before this; the
        // SDK's Host check (loopback names) stays on against rebinding.
        .disable_allowed_origins();
    StreamableHttpService::new(
        move || Ok(BusServer::new(backend.clone(), false)),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
