//! A typed client of the App API (`/ws`, JSON-RPC 2.0). One socket: calls
//! are matched to answers by id, so several may run at once; the daemon's
//! notifications (`stream`, `eventrecv`, `lagged`) are handed out in order
//! by [`AppClient::next_notification`].

use crate::client::Client;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An error answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({name}, JSON-RPC {code})")]
pub struct RpcFailure {
    pub code: i64,
    pub message: String,
    /// `data.code` of an application error, else the standard name.
    pub name: String,
}

/// A notification from the daemon.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcFailure>>>>>;

pub struct AppClient {
    out: mpsc::Sender<Message>,
    pending: Pending,
    notes: tokio::sync::Mutex<mpsc::UnboundedReceiver<Notification>>,
    next_id: AtomicU64,
}

fn failure(e: &Value) -> RpcFailure {
    let code = e["code"].as_i64().unwrap_or(0);
    let name = e["data"]["code"].as_str().map_or_else(
        || {
            match code {
                -32700 => "PARSE_ERROR",
                -32600 => "INVALID_REQUEST",
                -32601 => "METHOD_NOT_FOUND",
                -32602 => "INVALID_PARAMS",
                _ => "ERROR",
            }
            .to_string()
        },
        str::to_string,
    );
    RpcFailure {
        code,
        message: e["message"].as_str().unwrap_or("").to_string(),
        name,
    }
}

impl AppClient {
    /// Opens `/ws` of the daemon `client` reaches, authenticated on the
    /// upgrade with its credential.
    pub async fn connect(client: &Client) -> anyhow::Result<AppClient> {
        let mut request = client
            .ws_url("/ws")
            .into_client_request()
            .context("bad daemon URL")?;
        let (name, value) = client.auth_header();
        request.headers_mut().insert(
            name,
            value.parse().context("credential is not a valid header")?,
        );
        let (ws, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().unwrap_or_default();
                let f = agentbus_proto::api::ApiFailure::from_body(
                    resp.status().as_u16(),
                    body,
                    "http_error",
                );
                bail!("the App API refused the connection: {f}");
            }
            Err(e) => return Err(e).context("cannot open the App API socket"),
        };
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(64);
        let pending: Pending = Arc::default();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                for item in match v {
                    Value::Array(a) => a,
                    one => vec![one],
                } {
                    if let Some(method) = item["method"].as_str() {
                        let _ = notes_tx.send(Notification {
                            method: method.to_string(),
                            params: item["params"].clone(),
                        });
                    } else if let Some(id) = item["id"].as_u64() {
                        let waiter = reader_pending.lock().ok().and_then(|mut p| p.remove(&id));
                        if let Some(w) = waiter {
                            let r = match item.get("error") {
                                Some(e) => Err(failure(e)),
                                None => Ok(item["result"].clone()),
                            };
                            let _ = w.send(r);
                        }
                    }
                }
            }
            // The socket closed: every call still waiting fails.
            if let Ok(mut p) = reader_pending.lock() {
                p.clear();
            }
        });
        Ok(AppClient {
            out,
            pending,
            notes: tokio::sync::Mutex::new(notes),
            next_id: AtomicU64::new(1),
        })
    }

    /// Calls `method` and waits for its answer.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.out
            .send(Message::Text(frame.to_string().into()))
            .await
            .context("the App API connection is closed")?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(f)) => Err(f.into()),
            Err(_) => bail!("the App API connection closed before answering {method}"),
        }
    }

    async fn typed<T: DeserializeOwned>(&self, method: &str, params: Value) -> anyhow::Result<T> {
        let v = self.call(method, params).await?;
        serde_json::from_value(v).with_context(|| format!("unexpected answer to {method}"))
    }

    /// The next notification, in order; `None` once the socket is closed.
    pub async fn next_notification(&self) -> Option<Notification> {
        self.notes.lock().await.recv().await
    }

    /// A notification already received, if any.
    pub fn try_notification(&self) -> Option<Notification> {
        self.notes.try_lock().ok()?.try_recv().ok()
    }

    pub async fn process_list(&self, agent: &str) -> anyhow::Result<ProcessList> {
        self.typed("agent.process-list", json!({"agent_id": agent}))
            .await
    }

    pub async fn kill_tree(&self, agent: &str) -> anyhow::Result<Value> {
        self.call("agent.kill-tree", json!({"agent_id": agent}))
            .await
    }
}

/// `agent.process-list`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProcessList {
    pub block_id: String,
    pub confidence: String,
    pub processes: Vec<TrackedProcess>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TrackedProcess {
    pub pid: u32,
    pub ppid: u32,
    pub start_time: u64,
    pub rss_kb: u64,
    pub state: String,
    pub cmdline: String,
}
