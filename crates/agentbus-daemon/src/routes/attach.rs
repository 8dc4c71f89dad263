//! `GET /v1/agents/{id}/attach`: a WebSocket that makes a terminal the
//! pane. Binary frames carry bytes (daemon → client: what the program
//! writes; client → daemon: keys). Text frames carry [`AttachControl`]
//! JSON (resize one way; exit and shutdown the other).
//!
//! The first frame repaints the client's terminal from the pane's screen;
//! then the output stream follows, with nothing lost or doubled between
//! them. A client too slow to keep up is repainted rather than buffered
//! without bound. Detaching only closes the socket; the program runs on.
//!
//! `input=false` makes a view only: keys and resizes from the client are
//! dropped. That is the default for the browser dashboard, whose typing
//! switch reconnects with `input=true`; the audit log names who attached,
//! whether they could type, and how many bytes they typed.

use super::agents::AgentPath;
use crate::auth::{AdminOnly, Caller};
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
    /// Whether the client's keys reach the pane (default: yes for the
    /// instance key, no for a dashboard session).
    input: Option<bool>,
}

pub(super) async fn attach(
    State(state): State<AppState>,
    AdminOnly(actor): AdminOnly,
    Caller(caller): Caller,
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
    let input = p
        .input
        .unwrap_or(!matches!(caller, crate::auth::Identity::Dashboard(_)));
    // A tmux pane keeps tmux's size; the attached view mirrors it. A
    // view only never changes the pane.
    if let (true, Some(rows), Some(cols), None) = (input, p.rows, p.cols, record.pane.tmux()) {
        record
            .pane
            .resize(rows, cols)
            .map_err(|e| ApiError::bad_request("invalid_size", e.to_string()))?;
    }
    let mode = if input { "typing" } else { "view only" };
    state
        .audit(AuditRecord::new(actor.as_str(), "attach", Some(id.as_str()), "ok").detail(mode))
        .await;
    let typist = input.then(|| Typist {
        actor,
        agent: id.to_string(),
    });
    Ok(ws.on_upgrade(move |socket| serve(state, record.pane, socket, typist)))
}

fn control(msg: &AttachControl) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

use crate::state::shutdown_requested;

/// Who may type through an attached socket (none for a view only).
struct Typist {
    actor: String,
    agent: String,
}

async fn serve(state: AppState, pane: Pane, socket: WebSocket, typist: Option<Typist>) {
    let (mut sink, mut stream) = socket.split();
    let (repaint, mut output) = pane.attach();
    if sink.send(Message::Binary(repaint.into())).await.is_err() {
        return;
    }
    // Keys go in on their own task: a key waits for any jekt in progress,
    // and output must keep flowing meanwhile.
    let keys_pane = pane.clone();
    let may_type = typist.is_some();
    let typed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let typed_count = typed.clone();
    let mut keys = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(_) | Message::Text(_) if !may_type => {}
                Message::Binary(bytes) => {
                    if keys_pane.write_input(&bytes).await.is_err() {
                        break;
                    }
                    typed_count.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
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
    let typed = typed.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = typist
        && typed > 0
    {
        state
            .audit(
                AuditRecord::new(t.actor, "type", Some(&t.agent), "ok")
                    .detail(format!("{typed} bytes typed while attached")),
            )
            .await;
    }
}
