//! One WebSocket connection of the App API: authentication, the frames
//! it sends, the calls it has running, the subscriptions it owns.
//!
//! Everything the daemon sends goes through one bounded queue to one
//! writer task. Answers wait for room (a client that does not read its
//! answers slows only its own calls); events never wait: when the queue
//! is full they are dropped for this connection and counted, and the next
//! frame that fits is a `lagged` notice. The queue is bounded twice: in
//! frames (`app_api.out_queue`) and in bytes (`app_api.out_queue_bytes`,
//! a frame larger than that waits until the queue is empty), and a frame
//! the client does not take within `app_api.write_deadline_s` closes the
//! socket. So
//! a reader that stops reading costs the daemon at most the queue, never
//! the publisher's time.
//!
//! When the socket closes, the connection's cancel token fires: its
//! subscriptions and streams end and are freed.

use super::protocol::{self, Frame, Item, RpcError};
use super::scope::Scope;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;
use agentbus_proto::sync::lock;
use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// `None` for the instance key (admin); the scopes for an agent token.
    pub scopes: Option<Arc<Vec<Scope>>>,
    /// The rate limit's key: the token, not the agent (an extra token has
    /// its own bucket).
    pub limit_key: String,
    /// An extra token's id.
    pub token_id: Option<String>,
}

impl Caller {
    /// The caller for a presented secret, or why not.
    pub fn from_secret(state: &AppState, secret: &str) -> Result<Caller, ApiError> {
        let Some(cred) = state.auth().lookup(secret) else {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid credential: give the instance key or an agent token",
            ));
        };
        match (cred.identity, cred.extra) {
            (Identity::Admin, _) => Ok(Caller {
                identity: Identity::Admin,
                scopes: None,
                limit_key: "admin".into(),
                token_id: None,
            }),
            (Identity::Agent(a), Some(extra)) => Ok(Caller {
                identity: Identity::Agent(a),
                scopes: Some(extra.parsed.clone()),
                limit_key: extra.token_id.clone(),
                token_id: Some(extra.token_id),
            }),
            (Identity::Agent(a), None) => {
                let config = state.config();
                let texts = config.policy.app_scopes_of(a.as_str());
                // Validated when the config was loaded.
                let scopes = super::scope::parse_all(texts).unwrap_or_default();
                Ok(Caller {
                    limit_key: format!("agent:{a}"),
                    identity: Identity::Agent(a),
                    scopes: Some(Arc::new(scopes)),
                    token_id: None,
                })
            }
            (Identity::Peer | Identity::Relay | Identity::Dashboard(_), _) => Err(
                ApiError::forbidden("a forward token does not open the App API"),
            ),
        }
    }

    /// How errors name this caller.
    pub fn describe(&self) -> String {
        match (&self.identity, &self.token_id) {
            (Identity::Agent(a), Some(t)) => format!("token {t} of {a}"),
            (Identity::Agent(a), None) => format!("the agent token of {a}"),
            (other, _) => other.actor(),
        }
    }
}

/// A subscription: its task (cancelled with the connection or by
/// `eventunsub`) and, in pull mode, the queue `eventrecv` reads.
pub struct Sub {
    pub cancel: CancellationToken,
    pub pull: Option<Arc<super::events::PullQueue>>,
}

/// A queued frame and its share of the byte budget, given back once sent.
type Queued = (Message, tokio::sync::OwnedSemaphorePermit);

pub struct Session {
    out: mpsc::Sender<Queued>,
    /// The byte budget of the out-queue.
    bytes: Arc<Semaphore>,
    /// File streams this socket may run at once.
    pub file_streams: Arc<Semaphore>,
    budget: u32,
    caller: RwLock<Option<Caller>>,
    pub subs: Mutex<HashMap<String, Sub>>,
    next_sub: AtomicU64,
    pub cancel: CancellationToken,
    last_heard_ms: AtomicI64,
}

impl Session {
    pub fn caller(&self) -> Option<Caller> {
        self.caller.read().ok()?.clone()
    }

    fn set_caller(&self, c: Caller) {
        if let Ok(mut w) = self.caller.write() {
            *w = Some(c);
        }
    }

    pub fn next_sub_id(&self) -> String {
        format!("sub-{}", self.next_sub.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The budget a frame of `len` bytes takes (a larger frame than the
    /// whole budget takes all of it).
    fn share(&self, len: usize) -> u32 {
        u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.budget)
    }

    /// Queues a frame, waiting for room; false once the connection is gone.
    pub async fn send(&self, v: &Value) -> bool {
        let text = v.to_string();
        let share = self.share(text.len());
        let queued = async {
            let Ok(permit) = self.bytes.clone().acquire_many_owned(share).await else {
                return false;
            };
            self.out
                .send((Message::Text(text.into()), permit))
                .await
                .is_ok()
        };
        tokio::select! {
            r = queued => r,
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Queues a frame if there is room now.
    pub fn try_send(&self, v: &Value) -> bool {
        let text = v.to_string();
        let Ok(permit) = self
            .bytes
            .clone()
            .try_acquire_many_owned(self.share(text.len()))
        else {
            return false;
        };
        self.out
            .try_send((Message::Text(text.into()), permit))
            .is_ok()
    }
}

/// `authenticate` and `authenticatetoken`, which the connection handles.
fn is_auth(method: &str) -> bool {
    super::methods::find(method).is_some_and(|m| m.family == super::methods::Family::Auth)
}
const MAX_FAILED_AUTH: u32 = 3;

/// Serves one connection until it closes (or the daemon shuts down).
pub async fn serve(state: AppState, socket: WebSocket, caller: Option<Caller>) {
    let _live = crate::state::Live::new(&state.app_api().connections);
    let config = state.config().app_api.clone();
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Queued>(config.out_queue);
    let budget = u32::try_from(config.out_queue_bytes)
        .unwrap_or(u32::MAX)
        .max(1);
    let session = Arc::new(Session {
        out,
        bytes: Arc::new(Semaphore::new(budget as usize)),
        file_streams: Arc::new(Semaphore::new(
            super::files::MAX_STREAMS_PER_SOCKET as usize,
        )),
        budget,
        caller: RwLock::new(None),
        subs: Mutex::new(HashMap::new()),
        next_sub: AtomicU64::new(0),
        cancel: CancellationToken::new(),
        last_heard_ms: AtomicI64::new(agentbus_proto::now_ms()),
    });
    if let Some(c) = caller {
        session.set_caller(c);
    }
    // The writer: the queue, and a ping every interval; a connection not
    // heard from for three intervals is closed.
    let ping_every = Duration::from_secs(config.ping_interval_s);
    let write_deadline = Duration::from_secs(config.write_deadline_s);
    let writer_session = session.clone();
    let mut shutdown = state.shutdown_signal();
    let writer = tokio::spawn(async move {
        let s = writer_session;
        let mut ping = tokio::time::interval(ping_every);
        ping.reset();
        loop {
            tokio::select! {
                m = out_rx.recv() => match m {
                    Some((m, _share)) => match tokio::time::timeout(write_deadline, sink.send(m)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            tracing::debug!("app api client took no frame for {write_deadline:?}; closing");
                            break;
                        }
                    },
                    None => break,
                },
                _ = ping.tick() => {
                    let silent = agentbus_proto::now_ms() - s.last_heard_ms.load(Ordering::Relaxed);
                    if silent > 3 * ping_every.as_millis() as i64 {
                        tracing::debug!("app api connection silent; closing");
                        break;
                    }
                    if !matches!(tokio::time::timeout(write_deadline, sink.send(Message::Ping(Vec::new().into()))).await, Ok(Ok(()))) { break }
                }
                _ = s.cancel.cancelled() => break,
                _ = crate::state::shutdown_requested(&mut shutdown) => break,
            }
        }
        // The connection's calls and subscriptions end now; then our close
        // frame (or the reply to the client's) is sent and flushed, if the
        // client takes it in time.
        s.cancel.cancel();
        let _ = tokio::time::timeout(write_deadline, sink.close()).await;
    });
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let max_batch = config.max_batch.clamp(1, config.max_in_flight.max(1));
    let auth_deadline = tokio::time::sleep(Duration::from_secs(config.auth_timeout_s));
    tokio::pin!(auth_deadline);
    let mut failed_auth = 0;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = session.cancel.cancelled() => break,
            _ = &mut auth_deadline, if session.caller().is_none() => {
                let e = RpcError::app("UNAUTHORIZED", "not authenticated in time; closing");
                session.send(&protocol::answer(&Value::Null, Err(e))).await;
                break;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {
                // Ping / pong: the peer is alive.
                session
                    .last_heard_ms
                    .store(agentbus_proto::now_ms(), Ordering::Relaxed);
                continue;
            }
        };
        session
            .last_heard_ms
            .store(agentbus_proto::now_ms(), Ordering::Relaxed);
        let frame = protocol::parse(&text);
        match session.caller() {
            None => {
                // Before authentication frames are handled one at a time,
                // and only an authentication call does anything.
                let answer = pre_auth(&state, &session, frame, &mut failed_auth).await;
                if let Some(a) = answer {
                    session.send(&a).await;
                }
                if failed_auth >= MAX_FAILED_AUTH {
                    break;
                }
            }
            Some(caller) => {
                // Each call of a batch holds its own permit: a batch runs
                // no more calls at once than single frames could.
                let calls = frame.len().max(1);
                if calls > max_batch {
                    let e = RpcError::new(
                        protocol::INVALID_REQUEST,
                        format!(
                            "invalid request: a batch of {calls} calls is over the limit of {max_batch}; \
                             send it in smaller batches"
                        ),
                    );
                    state
                        .audit(
                            crate::state::AuditRecord::new(
                                caller.identity.actor(),
                                "rpc",
                                Some("batch"),
                                "batch_too_large",
                            )
                            .detail(format!("calls={calls}"))
                            .refusal(),
                        )
                        .await;
                    session.send(&protocol::answer(&Value::Null, Err(e))).await;
                    continue;
                }
                let Ok(permit) = in_flight.clone().acquire_many_owned(calls as u32).await else {
                    break;
                };
                let (state, session) = (state.clone(), session.clone());
                tokio::spawn(async move {
                    let answer = handle_frame(&state, &session, caller, frame).await;
                    if let Some(a) = answer {
                        session.send(&a).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    session.cancel.cancel();
    {
        let mut subs = lock(&session.subs);
        for (_, s) in subs.drain() {
            s.cancel.cancel();
        }
    }
    let _ = writer.await;
}

/// Answers a frame from an authenticated caller: one call, or a batch run
/// concurrently and answered as one array.
async fn handle_frame(
    state: &AppState,
    session: &Arc<Session>,
    caller: Caller,
    frame: Frame,
) -> Option<Value> {
    // An agent token's calls count against its rate as a whole frame: a
    // batch costs as many calls as it holds, and is refused whole.
    let counted: Result<(), RpcError> = match &caller.identity {
        Identity::Agent(_) if !frame.is_empty() => state
            .limiter()
            .check_calls(&caller.limit_key, frame.len() as u32)
            .map_err(|r| ApiError::from(r).into()),
        _ => Ok(()),
    };
    let one = |item: Item| {
        let caller = caller.clone();
        let counted = counted.clone();
        async move {
            match item {
                Item::Invalid(id, e) => Some(protocol::answer(&id.unwrap_or(Value::Null), Err(e))),
                Item::Call(c) if is_auth(&c.method) => {
                    // Re-authenticating on an open connection switches
                    // who it is.
                    let id = c.id.clone();
                    let r = authenticate(state, session, &c.method, c.params).await;
                    id.map(|id| protocol::answer(&id, r))
                }
                Item::Call(c) => super::methods::dispatch(state, session, caller, c, counted).await,
            }
        }
    };
    match frame {
        Frame::Broken(e) => Some(protocol::answer(&Value::Null, Err(e))),
        Frame::Single(item) => one(item).await,
        Frame::Batch(items) => {
            let answers: Vec<Value> = futures_util::future::join_all(items.into_iter().map(one))
                .await
                .into_iter()
                .flatten()
                .collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
    }
}

async fn pre_auth(
    state: &AppState,
    session: &Arc<Session>,
    frame: Frame,
    failed: &mut u32,
) -> Option<Value> {
    let not_yet = || {
        RpcError::app(
            "UNAUTHORIZED",
            "authenticate first: call authenticate {token} or authenticatetoken {token}",
        )
    };
    let item = match frame {
        Frame::Broken(e) => return Some(protocol::answer(&Value::Null, Err(e))),
        Frame::Batch(_) => {
            *failed += 1;
            return Some(protocol::answer(&Value::Null, Err(not_yet())));
        }
        Frame::Single(item) => item,
    };
    match item {
        Item::Invalid(id, e) => Some(protocol::answer(&id.unwrap_or(Value::Null), Err(e))),
        Item::Call(c) if is_auth(&c.method) => {
            let r = authenticate(state, session, &c.method, c.params).await;
            if r.is_err() {
                *failed += 1;
            }
            Some(protocol::answer(&c.id.unwrap_or(Value::Null), r))
        }
        Item::Call(c) => {
            *failed += 1;
            state
                .audit_refusal(
                    "anonymous",
                    &format!("rpc {}", super::truncate(&c.method, 64)),
                    "unauthorized",
                    "call before authenticate",
                )
                .await;
            Some(protocol::answer(
                &c.id.unwrap_or(Value::Null),
                Err(not_yet()),
            ))
        }
    }
}

/// `authenticate {token}` / `authenticatetoken {token, agent_id?}`.
async fn authenticate(
    state: &AppState,
    session: &Arc<Session>,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let token = params
        .get("token")
        .or_else(|| params.get(0))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RpcError::new(
                protocol::INVALID_PARAMS,
                format!("invalid params for {method}: give {{\"token\": \"<instance key or agent token>\"}}"),
            )
        })?;
    let result = Caller::from_secret(state, token).map_err(RpcError::from);
    let result = result.and_then(|c| match (params.get("agent_id"), &c.identity) {
        (Some(Value::String(claimed)), Identity::Agent(me)) if claimed != me.as_str() => {
            Err(RpcError::app(
                "FORBIDDEN",
                format!("this token belongs to {me}, not {claimed}"),
            ))
        }
        _ => Ok(c),
    });
    match result {
        Ok(c) => {
            state
                .audit(
                    crate::state::AuditRecord::new(c.identity.actor(), "rpc", Some(method), "ok")
                        .detail(c.describe()),
                )
                .await;
            let answer = json!({
                "authenticated": true,
                "actor": c.identity.actor(),
                "scopes": c.scopes.as_ref().map(|s| s.iter().map(Scope::as_str).collect::<Vec<_>>()),
            });
            session.set_caller(c);
            Ok(answer)
        }
        Err(e) => {
            state
                .audit_refusal(
                    "anonymous",
                    &format!("rpc {method}"),
                    "unauthorized",
                    &e.message,
                )
                .await;
            Err(e)
        }
    }
}
