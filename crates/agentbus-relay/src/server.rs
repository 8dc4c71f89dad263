//! The relay's routes, generic over its [`Storage`].
//!
//! The agent-bus protocol (`/send`, `/recv`, `/inbox`, `/healthz`) answers exactly as
//! docs/relay.md describes, errors as `{"error": "<text>"}`. The extension
//! (`/v1/relay/send|poll|ack`) is what daemons use. `/metrics` is
//! Prometheus text.
//!
//! Auth modes: **open** keeps the bare agent-bus protocol (anyone may send as
//! anyone); **auth** requires a bearer token on everything but `/healthz`
//! and `/metrics`, and the sender of a message is the token's agent.

use crate::http::{Handling, Method, Request, Response, Service};
use crate::metrics::Metrics;
use crate::storage::{Append, Appended, Meta, Storage, TokenOwner};
use agentbus_proto::MessageId;
use agentbus_proto::jekt::Trust;
use agentbus_proto::relay::{
    DEFAULT_CHANNEL, InboxCounts, MAX_POLL_AGENTS, MAX_SEND_BYTES, NAME_RULE, RecvResponse,
    RelayAck, RelayKind, RelayPoll, RelayPollResponse, RelaySend, RelaySendResponse, SeedError,
    SeedMessage, SendResponse, name_ok,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The bare agent-bus protocol: no tokens.
    Open,
    /// Bearer tokens everywhere but health and metrics.
    Auth,
}

/// The longest an agent-bus `/recv?block=true` waits.
pub const RECV_WAIT: Duration = Duration::from_secs(30);
/// The longest an extension poll waits.
pub const MAX_POLL_WAIT_S: f64 = 30.0;

#[derive(Clone)]
pub struct RelayState<S: Storage> {
    pub storage: S,
    pub mode: AuthMode,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub recv_wait: Duration,
}

/// An error in the agent-bus shape: `{"error": "<text>"}`.
pub struct SeedErr(u16, String);

impl From<SeedErr> for Response {
    fn from(e: SeedErr) -> Response {
        Response::json(e.0, &SeedError { error: e.1 })
    }
}

fn err(status: u16, text: impl Into<String>) -> SeedErr {
    SeedErr(status, text.into())
}

fn storage_failed(e: crate::storage::StorageError) -> SeedErr {
    if let crate::storage::StorageError::Unavailable(why) = &e {
        // This node, not the request: another node may serve it.
        tracing::warn!(error = %why, "relay node unavailable");
        return err(503, format!("relay node unavailable: {why}"));
    }
    tracing::error!(error = %e, "relay storage failed");
    err(500, "storage error")
}

/// Status codes used here.
const BAD_REQUEST: u16 = 400;
const UNAUTHORIZED: u16 = 401;
const FORBIDDEN: u16 = 403;
const PAYLOAD_TOO_LARGE: u16 = 413;
const INSUFFICIENT_STORAGE: u16 = 507;

pub fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The SHA-256 (hex) under which a token is stored.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The caller's token owner: `Ok(None)` without a token, 401 for a token
/// the relay does not know.
async fn identify<S: Storage>(
    st: &RelayState<S>,
    authorization: Option<&str>,
) -> Result<Option<TokenOwner>, SeedErr> {
    let Some(auth) = authorization else {
        return Ok(None);
    };
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Err(err(
            UNAUTHORIZED,
            "unauthorized: use Authorization: Bearer <token>",
        ));
    };
    match st
        .storage
        .token_owner(&token_digest(token.trim()))
        .await
        .map_err(storage_failed)?
    {
        Some(owner) => Ok(Some(owner)),
        None => {
            st.metrics.unauthorized.inc();
            Err(err(UNAUTHORIZED, "unauthorized: unknown or revoked token"))
        }
    }
}

/// In auth mode, a token is required.
async fn require<S: Storage>(
    st: &RelayState<S>,
    req: &Request,
) -> Result<Option<TokenOwner>, SeedErr> {
    let who = identify(st, req.authorization.as_deref()).await?;
    if st.mode == AuthMode::Auth && who.is_none() {
        st.metrics.unauthorized.inc();
        return Err(err(
            UNAUTHORIZED,
            "unauthorized: this relay needs a bearer token",
        ));
    }
    Ok(who)
}

/// The largest body of an extension call.
const MAX_EXT_BODY: usize = 4 * MAX_SEND_BYTES;

impl<S: Storage> Service for RelayState<S> {
    fn body_limit(&self, path: &str) -> usize {
        if path == "/send" {
            MAX_SEND_BYTES
        } else {
            MAX_EXT_BODY
        }
    }

    fn too_large(&self, path: &str) -> Response {
        if path == "/send" {
            err(PAYLOAD_TOO_LARGE, "message too large (>64KB)").into()
        } else {
            err(PAYLOAD_TOO_LARGE, "request body too large").into()
        }
    }

    fn bad_request(&self, why: &str) -> Response {
        err(BAD_REQUEST, why).into()
    }

    fn call(&self, req: Request) -> Handling<'_> {
        Box::pin(async move { route(self, req).await.unwrap_or_else(Response::from) })
    }
}

/// Dispatches a request to its route.
async fn route<S: Storage>(st: &RelayState<S>, req: Request) -> Result<Response, SeedErr> {
    use Method::{Get, Post};
    match (req.method, req.path.as_str()) {
        (Post, "/send") => send(st, &req).await.map(|r| Response::json(200, &r)),
        (Get, "/recv") => recv(st, &req).await.map(|r| Response::json(200, &r)),
        (Get, "/inbox") => inbox(st, &req).await.map(|r| Response::json(200, &r)),
        (Get, "/healthz") => Ok(match st.storage.unavailable() {
            None => Response::json(200, &serde_json::json!({"ok": true, "now": wall_s()})),
            // A load balancer sends nobody to a node that cannot store.
            Some(why) => Response::json(
                503,
                &serde_json::json!({"ok": false, "error": why, "now": wall_s()}),
            ),
        }),
        (Get, "/metrics") => Ok(metrics(st).await),
        (Post, "/v1/relay/send") => ext_send(st, &req).await.map(|r| Response::json(200, &r)),
        (Post, "/v1/relay/poll") => ext_poll(st, &req).await.map(|r| Response::json(200, &r)),
        (Post, "/v1/relay/ack") => ext_ack(st, &req).await.map(|r| Response::json(200, &r)),
        (
            _,
            "/send" | "/recv" | "/inbox" | "/healthz" | "/metrics" | "/v1/relay/send"
            | "/v1/relay/poll" | "/v1/relay/ack",
        ) => Err(err(405, "method not allowed")),
        _ => Err(err(404, "not found")),
    }
}

/// How long an instance's binding to an agent lasts without a poll that
/// names the agent (a daemon polls for all its agents at least every 30
/// s while it runs).
pub const BINDING_LEASE_MS: i64 = 120_000;

/// The most body bytes one `recv` or `poll` answer holds (past its first
/// message): the rest comes with the next call.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

fn consumer_of_instance(name: &str) -> String {
    format!("instance:{name}")
}

fn consumer_of_agent(name: &str) -> String {
    format!("agent:{name}")
}

/// Whether an instance token (`name`) may act for `agent`: the agent is
/// bound to it (its daemon polls for it).
async fn instance_may<S: Storage>(
    st: &RelayState<S>,
    name: &str,
    agent: &str,
) -> Result<bool, SeedErr> {
    let holder = st.storage.holder(agent).await.map_err(storage_failed)?;
    Ok(holder.as_deref() == Some(consumer_of_instance(name).as_str()))
}

/// The sender an instance token may send as: `Ok(true)` if its daemon
/// hosts `from` (so its proof counts), `Ok(false)` if nobody hosts it (a
/// claim), 403 if another instance hosts it.
async fn instance_sender<S: Storage>(
    st: &RelayState<S>,
    name: &str,
    from: &str,
) -> Result<bool, SeedErr> {
    let holder = st.storage.holder(from).await.map_err(storage_failed)?;
    match holder {
        Some(h) if h == consumer_of_instance(name) => Ok(true),
        None => Ok(false),
        Some(_) => Err(err(
            FORBIDDEN,
            format!("{from} is hosted by another instance: this token may not send as it"),
        )),
    }
}

async fn send<S: Storage>(st: &RelayState<S>, req: &Request) -> Result<SendResponse, SeedErr> {
    let who = require(st, req).await?;
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(&req.body) else {
        return Err(err(BAD_REQUEST, "invalid JSON"));
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let (Some(from), Some(to), Some(msg)) = (text("from"), text("to"), text("msg")) else {
        return Err(err(BAD_REQUEST, "from, to, msg required"));
    };
    if from.is_empty() || to.is_empty() {
        return Err(err(BAD_REQUEST, "from, to, msg required"));
    }
    let channel = text("channel")
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_CHANNEL);
    if !name_ok(from) || !name_ok(to) || !name_ok(channel) {
        return Err(err(
            BAD_REQUEST,
            format!("from, to and channel {NAME_RULE}"),
        ));
    }
    // With a token, an agent sends as itself; an instance only as a name
    // no other instance hosts, and the agent-bus route carries no proof.
    let (from, verified) = match who {
        Some(TokenOwner::Agent(me)) => (me, true),
        Some(TokenOwner::Instance(name)) => {
            instance_sender(st, &name, from).await?;
            (from.to_string(), false)
        }
        None => (from.to_string(), false),
    };
    let appended = append(
        st,
        Append {
            id: MessageId::new(),
            channel: channel.to_string(),
            to: to.to_string(),
            from,
            body: msg.to_string(),
            kind: RelayKind::Plain,
            meta: Meta {
                sender_verified: verified,
                ..Default::default()
            },
        },
    )
    .await?;
    match appended {
        Appended::Stored { ts, .. } | Appended::Duplicate { ts, .. } => {
            st.metrics.sends.inc();
            Ok(SendResponse {
                ok: true,
                ts,
                channel: channel.to_string(),
            })
        }
        Appended::QueueFull { count } => {
            st.metrics.refused_full.inc();
            Err(err(
                INSUFFICIENT_STORAGE,
                format!(
                    "queue full: {count} messages wait for {to} on channel {channel}; nothing was stored"
                ),
            ))
        }
    }
}

/// Waits until `rx` changes, `until` passes or the relay shuts down.
async fn wait_change(
    rx: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
    until: tokio::time::Instant,
) {
    tokio::select! {
        _ = rx.changed() => {}
        _ = tokio::time::sleep_until(until) => {}
        _ = shutdown.wait_for(|down| *down) => {}
    }
}

async fn recv<S: Storage>(st: &RelayState<S>, req: &Request) -> Result<RecvResponse, SeedErr> {
    let q: HashMap<String, String> = url::form_urlencoded::parse(req.query.as_bytes())
        .into_owned()
        .collect();
    let Some(to) = q.get("to").filter(|t| !t.is_empty()) else {
        return Err(err(BAD_REQUEST, "to= required"));
    };
    let since = match q.get("since") {
        None => 0.0,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => {
                return Err(err(BAD_REQUEST, "since must be a number (seconds)"));
            }
        },
    };
    let max = match q.get("max") {
        None => 100,
        Some(s) => match s.parse::<u32>() {
            Ok(v) if (1..=10_000).contains(&v) => v,
            _ => {
                return Err(err(BAD_REQUEST, "max must be an integer from 1 to 10000"));
            }
        },
    };
    let block = q
        .get("block")
        .is_some_and(|b| b.eq_ignore_ascii_case("true"));
    let channel = q
        .get("channel")
        .filter(|c| !c.is_empty())
        .map_or(DEFAULT_CHANNEL, String::as_str);
    if !name_ok(to) || !name_ok(channel) {
        return Err(err(BAD_REQUEST, format!("to and channel {NAME_RULE}")));
    }
    match require(st, req).await? {
        Some(TokenOwner::Agent(me)) if me != *to => {
            return Err(err(
                FORBIDDEN,
                format!("this token may receive only {me}'s messages"),
            ));
        }
        Some(TokenOwner::Instance(name)) if !instance_may(st, &name, to).await? => {
            return Err(err(
                FORBIDDEN,
                format!(
                    "this instance token may receive only for agents its daemon hosts, not {to}"
                ),
            ));
        }
        _ => {}
    }
    st.metrics.recvs.inc();
    let until = tokio::time::Instant::now() + st.recv_wait;
    let mut wake = st.storage.watch(to);
    let mut shutdown = st.shutdown.clone();
    let _waiting = block.then(|| st.metrics.waiting.hold());
    loop {
        wake.borrow_and_update();
        let f = st
            .storage
            .fetch(channel, to, since, max, MAX_ANSWER_BYTES)
            .await
            .map_err(storage_failed)?;
        let done = !f.messages.is_empty()
            || !block
            || tokio::time::Instant::now() >= until
            || *shutdown.borrow();
        if done {
            return Ok(RecvResponse {
                messages: f
                    .messages
                    .into_iter()
                    .map(|(ts, from, msg)| SeedMessage { ts, from, msg })
                    .collect(),
                now: f.now,
            });
        }
        wait_change(&mut wake, &mut shutdown, until).await;
    }
}

/// Counts per channel and recipient: all of them in open mode without a
/// token; an agent token's own; an instance token's agents'.
async fn inbox<S: Storage>(st: &RelayState<S>, req: &Request) -> Result<InboxCounts, SeedErr> {
    let who = require(st, req).await?;
    let mut recipients = st.storage.inbox().await.map_err(storage_failed)?;
    let mine: Option<std::collections::HashSet<String>> = match &who {
        None => None,
        Some(TokenOwner::Agent(me)) => Some([me.clone()].into()),
        Some(TokenOwner::Instance(name)) => Some(
            st.storage
                .bound(&consumer_of_instance(name))
                .await
                .map_err(storage_failed)?
                .into_iter()
                .collect(),
        ),
    };
    if let Some(mine) = mine {
        for counts in recipients.values_mut() {
            counts.retain(|to, _| mine.contains(to));
        }
        recipients.retain(|_, counts| !counts.is_empty());
    }
    Ok(InboxCounts {
        recipients,
        now: wall_s(),
    })
}

/// Stores `m`, timing the storage's answer for `/metrics`.
async fn append<S: Storage>(st: &RelayState<S>, m: Append) -> Result<Appended, SeedErr> {
    let start = std::time::Instant::now();
    let appended = st.storage.append(m).await.map_err(storage_failed)?;
    st.metrics.append_seconds.observe(start.elapsed());
    Ok(appended)
}

async fn metrics<S: Storage>(st: &RelayState<S>) -> Response {
    let stored = st.storage.stored().await.ok();
    Response::text(
        200,
        agentbus_proto::metrics::CONTENT_TYPE,
        st.metrics.render(stored),
    )
}

/// The consumer an extension call acts as: an instance token's name; an
/// agent token's agent (for itself only); in open mode, what the body says.
fn consumer(
    mode: AuthMode,
    who: &Option<TokenOwner>,
    claimed: Option<&str>,
) -> Result<String, SeedErr> {
    match (who, claimed) {
        (Some(TokenOwner::Instance(name)), _) => Ok(consumer_of_instance(name)),
        (Some(TokenOwner::Agent(name)), _) => Ok(consumer_of_agent(name)),
        (None, Some(c)) if mode == AuthMode::Open && name_ok(c) => Ok(format!("open:{c}")),
        (None, _) => Err(err(BAD_REQUEST, "consumer required (or an instance token)")),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, SeedErr> {
    serde_json::from_slice(&req.body).map_err(|e| err(BAD_REQUEST, format!("invalid request: {e}")))
}

async fn ext_send<S: Storage>(
    st: &RelayState<S>,
    req: &Request,
) -> Result<RelaySendResponse, SeedErr> {
    let who = require(st, req).await?;
    let m: RelaySend = json_body(req)?;
    if m.body.len() > MAX_SEND_BYTES {
        return Err(err(PAYLOAD_TOO_LARGE, "message too large (>64KB)"));
    }
    if !name_ok(&m.from) {
        return Err(err(BAD_REQUEST, format!("from {NAME_RULE}")));
    }
    if let Some(sig) = &m.signature
        && !(agentbus_proto::jekt::instance_name_ok(&sig.instance)
            && sig.key.len() <= 64
            && sig.sig.len() <= 128)
    {
        return Err(err(
            BAD_REQUEST,
            "signature: instance must be 1-64 of A-Z a-z 0-9 _ - ., key and sig base64",
        ));
    }
    // Verified only when the relay knows who sent it: an agent token as
    // itself, or an instance vouching for an agent its daemon hosts and
    // proved.
    let verified = match &who {
        Some(TokenOwner::Agent(me)) if *me != m.from => {
            return Err(err(FORBIDDEN, format!("this token may send only as {me}")));
        }
        Some(TokenOwner::Agent(_)) => true,
        Some(TokenOwner::Instance(name)) => {
            instance_sender(st, name, &m.from).await?
                && m.origin_trust.as_ref().is_some_and(Trust::is_proven)
        }
        None => false,
    };
    let appended = append(
        st,
        Append {
            id: m.id,
            channel: DEFAULT_CHANNEL.into(),
            to: m.to.to_string(),
            from: m.from.clone(),
            body: m.body,
            kind: m.kind,
            meta: Meta {
                thread_id: m.thread_id,
                reply_to: m.reply_to,
                tier: m.tier,
                priority: m.priority,
                sender_verified: verified,
                signature: m.signature,
            },
        },
    )
    .await?;
    match appended {
        Appended::Stored { seq, ts } => {
            st.metrics.sends.inc();
            Ok(RelaySendResponse {
                id: m.id,
                seq,
                ts,
                duplicate: false,
            })
        }
        Appended::Duplicate { seq, ts } => Ok(RelaySendResponse {
            id: m.id,
            seq,
            ts,
            duplicate: true,
        }),
        Appended::QueueFull { count } => {
            st.metrics.refused_full.inc();
            Err(err(
                INSUFFICIENT_STORAGE,
                format!(
                    "queue full: {count} messages wait for {}; nothing was stored",
                    m.to
                ),
            ))
        }
    }
}

async fn ext_poll<S: Storage>(
    st: &RelayState<S>,
    req: &Request,
) -> Result<RelayPollResponse, SeedErr> {
    let who = require(st, req).await?;
    let p: RelayPoll = json_body(req)?;
    let consumer = consumer(st.mode, &who, p.consumer.as_deref())?;
    if p.agents.is_empty() || p.agents.len() > MAX_POLL_AGENTS {
        return Err(err(
            BAD_REQUEST,
            format!("agents must name 1 to {MAX_POLL_AGENTS} agents"),
        ));
    }
    let asked: Vec<String> = p.agents.iter().map(ToString::to_string).collect();
    // An instance polls for the agents its daemon hosts, and that claims
    // them; one another instance holds is left out (and named).
    let agents: Vec<String> = match &who {
        Some(TokenOwner::Agent(me)) => asked.iter().filter(|a| *a == me).cloned().collect(),
        Some(TokenOwner::Instance(_)) => st
            .storage
            .claim(&consumer, &asked, BINDING_LEASE_MS)
            .await
            .map_err(storage_failed)?,
        None => asked.clone(),
    };
    let refused: Vec<String> = asked
        .iter()
        .filter(|a| !agents.contains(a))
        .cloned()
        .collect();
    if agents.is_empty() {
        return Err(err(
            FORBIDDEN,
            format!(
                "none of these agents may be polled with this token: {}",
                refused.join(", ")
            ),
        ));
    }
    if !(0.0..=MAX_POLL_WAIT_S).contains(&p.wait_s) {
        return Err(err(BAD_REQUEST, "wait_s must be from 0 to 30"));
    }
    let max = p.max.unwrap_or(500).clamp(1, 5_000);
    st.metrics.polls.inc();
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(p.wait_s);
    let mut wakes: Vec<watch::Receiver<u64>> = agents.iter().map(|a| st.storage.watch(a)).collect();
    let mut shutdown = st.shutdown.clone();
    let _waiting = st.metrics.waiting.hold();
    loop {
        for w in &mut wakes {
            w.borrow_and_update();
        }
        let messages = st
            .storage
            .poll(&consumer, &agents, max, MAX_ANSWER_BYTES)
            .await
            .map_err(storage_failed)?;
        if !messages.is_empty() || tokio::time::Instant::now() >= until || *shutdown.borrow() {
            let mut wake: Vec<String> = messages.iter().map(|m| m.to.clone()).collect();
            wake.sort();
            wake.dedup();
            return Ok(RelayPollResponse {
                wake,
                messages,
                refused,
            });
        }
        let any = futures_util::future::select_all(wakes.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = any => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.wait_for(|down| *down) => {}
        }
    }
}

async fn ext_ack<S: Storage>(st: &RelayState<S>, req: &Request) -> Result<Value, SeedErr> {
    let who = require(st, req).await?;
    let mut a: RelayAck = json_body(req)?;
    let consumer = consumer(st.mode, &who, a.consumer.as_deref())?;
    // An instance acks only for the agents bound to it, an agent token
    // only for itself.
    let may: Option<Vec<String>> = match &who {
        Some(TokenOwner::Agent(me)) => Some(vec![me.clone()]),
        Some(TokenOwner::Instance(_)) => {
            Some(st.storage.bound(&consumer).await.map_err(storage_failed)?)
        }
        None => None,
    };
    let refused: Vec<String> = a
        .acks
        .keys()
        .filter(|agent| may.as_ref().is_some_and(|m| !m.contains(agent)))
        .cloned()
        .collect();
    a.acks.retain(|agent, _| !refused.contains(agent));
    let n = a.acks.len();
    st.storage
        .ack(&consumer, a.acks)
        .await
        .map_err(storage_failed)?;
    st.metrics.acks.inc();
    Ok(serde_json::json!({"ok": true, "acked_agents": n, "refused": refused}))
}
