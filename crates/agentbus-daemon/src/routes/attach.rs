//! `GET /v1/agents/{id}/attach`: a WebSocket that makes a terminal the
//! pane. Binary frames carry bytes (daemon → client: what the program
//! writes; client → daemon: keys). Text frames carry [`AttachControl`]
//! JSON (resize one way; exit and shutdown the other).
//!
//! The first frame repaints the client's terminal from the pane's screen;
//! then the output stream follows, with nothing lost or doubled between
//! them. A client too slow to keep up is repainted rather than buffered
//! without bound. Detaching only closes the socket; the program runs on.

use super::agents::AgentPath;
use crate::auth::AdminOnly;
use crate::error::{ApiError, ApiQuery};
use crate::panes;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::api::AttachControl;
use agentbus_term::{Pane, PaneOutput};
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttachParams {
    rows: Option<u16>,
    cols: Option<u16>,
}

pub(super) async fn attach(
    State(state): State<AppState>,
    _: AdminOnly,
    AgentPath(id): AgentPath,
    ApiQuery(p): ApiQuery<AttachParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let record = panes::pane_or_error(&state, &id)?;
    if !record.pane.is_running() {
        return Err(ApiError::conflict(
            "not_running",
            format!("{id}'s program has exited"),
        ));
    }
    // A tmux pane keeps tmux's size; the attached view mirrors it.
    if let (Some(rows), Some(cols), None) = (p.rows, p.cols, record.pane.tmux()) {
        record
            .pane
            .resize(rows, cols)
            .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    }
    state
        .audit(AuditRecord::new("admin", "attach", Some(id.as_str()), "ok"))
        .await;
    Ok(ws.on_upgrade(move |socket| serve(state, record.pane, socket)))
}

fn control(msg: &AttachControl) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

use crate::state::shutdown_requested;

async fn serve(state: AppState, pane: Pane, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (repaint, mut output) = pane.attach();
    if sink.send(Message::Binary(repaint.into())).await.is_err() {
        return;
    }
    // Keys go in on their own task: a key waits for any jekt in progress,
    // and output must keep flowing meanwhile.
    let keys_pane = pane.clone();
    let mut keys = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(bytes) if keys_pane.write_input(&bytes).await.is_err() => break,
                Message::Binary(_) => {}
                Message::Text(text) => {
                    if let Ok(AttachControl::Resize { rows, cols }) = serde_json::from_str(&text) {
                        let _ = keys_pane.resize(rows, cols);
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let mut shutdown = state.shutdown_signal();
    loop {
        tokio::select! {
            biased;
            out = output.recv() => {
                let frame = match out {
                    Ok(PaneOutput::Bytes(b)) => Message::Binary(b),
                    Ok(PaneOutput::Resync) | Err(RecvError::Lagged(_)) => Message::Binary(pane.repaint().into()),
                    Err(RecvError::Closed) => break,
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            _ = &mut keys => break,
            exit = pane.exited() => {
                let _ = sink.send(control(&AttachControl::Exit { exit_code: exit.code, signal: exit.signal })).await;
                break;
            }
            _ = shutdown_requested(&mut shutdown) => {
                let _ = sink.send(control(&AttachControl::Shutdown)).await;
                break;
            }
        }
    }
    keys.abort();
    let _ = sink.close().await;
}
