//! `/v1/events`: publish, read history, and stream live events.

use super::Table;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::events::Received;
use crate::state::AppState;
use agentbus_proto::api::{EventHistory, PublishEventRequest};
use agentbus_proto::event::{Event, check_scope};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

pub(super) fn add(t: Table) -> Table {
    t.add(&["POST"], "/v1/events", false, post(publish))
        .add(&["GET"], "/v1/events/history", false, get(history))
        .add(&["GET"], "/v1/events/stream", false, get(stream))
}

async fn publish(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<PublishEventRequest>,
) -> Result<(StatusCode, Json<Event>), ApiError> {
    let published = crate::events::publish_custom(&state, &caller, req)?;
    Ok((StatusCode::CREATED, Json((*published).clone())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    #[serde(rename = "type")]
    event_type: String,
    scope: String,
    limit: Option<i64>,
}

async fn history(
    State(state): State<AppState>,
    _: Caller,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<Json<EventHistory>, ApiError> {
    let events =
        crate::events::read_history(&state, p.event_type, p.scope, p.limit.unwrap_or(100)).await?;
    Ok(Json(EventHistory { events }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    scope: Option<String>,
}

fn line(value: &impl serde::Serialize) -> Result<Bytes, Infallible> {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// Newline-delimited JSON: `{"type":"subscribed"}`, then each matching
/// event, `{"type":"lagged","missed":n}` when this reader fell behind,
/// and `{"type":"heartbeat"}` on a quiet stream.
async fn stream(
    State(state): State<AppState>,
    _: Caller,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    if let Some(s) = &p.scope {
        check_scope(s).map_err(crate::events::bad_event)?;
    }
    let sub = state.events().subscribe();
    let shutdown = state.shutdown_signal();
    // A line every so often on a quiet stream: a client that went away is
    // noticed (the write fails) and its subscription freed.
    let mut heartbeat =
        tokio::time::interval(Duration::from_secs(state.config().events.heartbeat_s));
    heartbeat.reset();
    let first =
        futures_util::stream::once(async { line(&serde_json::json!({"type": "subscribed"})) });
    let rest = futures_util::stream::unfold(
        (sub, shutdown, heartbeat, p),
        |(mut sub, mut shutdown, mut heartbeat, p)| async move {
            loop {
                let item = tokio::select! {
                    r = sub.recv() => match r {
                        Some(Received::Event(e)) if e.matches(p.event_type.as_deref(), p.scope.as_deref()) => line(&*e),
                        Some(Received::Event(_)) => continue,
                        Some(Received::Lagged(n)) => line(&serde_json::json!({"type": "lagged", "missed": n})),
                        None => return None,
                    },
                    _ = heartbeat.tick() => line(&serde_json::json!({"type": "heartbeat", "ts_ms": agentbus_proto::now_ms()})),
                    _ = shutdown.wait_for(|down| *down) => return None,
                };
                return Some((item, (sub, shutdown, heartbeat, p)));
            }
        },
    );
    let body = Body::from_stream(futures_util::StreamExt::chain(first, rest));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .map_err(ApiError::internal)
}
