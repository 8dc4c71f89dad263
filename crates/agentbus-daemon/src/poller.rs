//! The relay poller (docs/relay.md, "The daemon's poller"): how jekts and
//! messages reach this instance from other machines, and leave for them.
//!
//! Outbound only: the relay never calls in. One long-poll
//! (`POST /v1/relay/poll`) names every agent reachable here; what comes
//! back is delivered through the same paths as local traffic — a jekt
//! through the jekt pipeline (`DELIVERY=wan`), a message into the mailbox
//! — and acked (`POST /v1/relay/ack`) only after that delivery is on disk
//! or typed in. The relay keeps the cursor (per consumer and agent), so
//! an instance that was down resumes where it acked. An item handed over
//! twice (its ack was lost) is recognised by its message id and not
//! delivered again.
//!
//! Errors back off from 1 s, doubling to 60 s; the delay starts again
//! from 1 s only after polls have succeeded for `relay.healthy_after_s`.
//!
//! The target (URL and token) comes from the configuration at start, or
//! else from `relay.json` (0600), where `POST /agentmux/reactive/poller/config`
//! keeps the last one set at run time.

use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::api::{IdleWait, InjectRequest, PollerStats, PollerStatus};
use agentbus_proto::relay::{
    MAX_POLL_AGENTS, RelayAck, RelayEnvelope, RelayKind, RelayPoll, RelayPollResponse, RelaySend,
    RelaySendResponse, name_ok,
};
use agentbus_proto::sync::lock;
use agentbus_proto::{AgentId, RequestId, now_ms};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where `POST poller/config` keeps the run-time target (0600).
pub const RELAY_FILE: &str = "relay.json";
/// This instance's stable name at the relay (its cursors live under it).
pub const INSTANCE_ID_FILE: &str = "instance_id";

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long an agent whose delivery failed for now sits out of polls.
const AGENT_RETRY: Duration = Duration::from_secs(5);
/// How long an agent the relay says another instance hosts sits out of
/// polls before this instance asks again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// A pane younger than this (ms) gets relayed jekts once it is quiet.
const YOUNG_PANE_MS: i64 = 10_000;
/// Items asked for per poll.
const POLL_MAX: u32 = 500;

/// A relay to poll: its URL and the bearer token (may be empty, for an
/// open relay). `url` may list several nodes of one relay, separated by
/// commas: calls go to the one that last answered and move on to the next
/// when it cannot be reached or fails.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTarget {
    pub url: String,
    #[serde(default)]
    pub token: String,
}

impl RelayTarget {
    /// The relay's nodes, in the order given.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty())
    }
}

impl std::fmt::Debug for RelayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTarget")
            .field("url", &self.url)
            .field("token", &if self.token.is_empty() { "" } else { "<set>" })
            .finish()
    }
}

#[derive(Default)]
struct Health {
    connected: bool,
    last_error: Option<String>,
    last_ok_ms: Option<i64>,
    retry_at: Option<Instant>,
    polled: Vec<AgentId>,
    refused: Vec<String>,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    duplicates: AtomicU64,
    sent: AtomicU64,
    polls: AtomicU64,
    errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The poller's shared state: target, health and counters.
pub struct Poller {
    target: watch::Sender<Option<RelayTarget>>,
    consumer: String,
    file: PathBuf,
    // A std mutex: held to read or update a few fields.
    health: Mutex<Health>,
    stats: Counters,
    signing: Option<Signing>,
    /// The node of the target that answered last.
    node: std::sync::atomic::AtomicUsize,
}

/// This instance's key, the instances it trusts, and its policy.
#[derive(Debug)]
pub struct Signing {
    pub key: crate::signing::InstanceKey,
    pub trusted: crate::signing::TrustStore,
    pub policy: crate::signing::Policy,
}

impl Poller {
    /// Signs what it hands over and verifies what it is handed.
    pub fn with_signing(mut self, signing: Signing) -> Self {
        self.signing = Some(signing);
        self
    }

    pub fn signing(&self) -> Option<&Signing> {
        self.signing.as_ref()
    }

    /// The poller of the instance whose data dir is `data_dir`: its target
    /// is `configured` if set, else what `relay.json` kept.
    pub fn new(data_dir: &Path, consumer: String, configured: Option<RelayTarget>) -> Self {
        let file = data_dir.join(RELAY_FILE);
        let target = configured.or_else(|| {
            let text = std::fs::read_to_string(&file).ok()?;
            let t: RelayTarget = serde_json::from_str(&text).ok()?;
            (!t.url.is_empty()).then_some(t)
        });
        Self {
            target: watch::Sender::new(target),
            consumer,
            file,
            health: Mutex::new(Health::default()),
            stats: Counters::default(),
            signing: None,
            node: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn target(&self) -> Option<RelayTarget> {
        self.target.borrow().clone()
    }

    /// Sets (or with `None` clears) the target, keeps it in `relay.json`,
    /// and restarts the poll loop on it.
    pub fn set_target(&self, target: Option<RelayTarget>) -> Result<(), ApiError> {
        let kept = target.clone().unwrap_or(RelayTarget {
            url: String::new(),
            token: String::new(),
        });
        let json = serde_json::to_vec(&kept).map_err(ApiError::internal)?;
        crate::instance::write_private_file(&self.file, &json).map_err(ApiError::internal)?;
        {
            let mut h = lock(&self.health);
            *h = Health::default();
        }
        self.target.send_replace(target);
        Ok(())
    }

    pub fn status(&self) -> PollerStatus {
        let target = self.target();
        let h = lock(&self.health);
        let h = Some(&*h);
        PollerStatus {
            configured: target.is_some(),
            connected: h.is_some_and(|h| h.connected),
            url: target.as_ref().map(|t| t.url.clone()),
            token_set: target.as_ref().is_some_and(|t| !t.token.is_empty()),
            consumer: self.consumer.clone(),
            agents: h.map(|h| h.polled.clone()).unwrap_or_default(),
            refused: h.map(|h| h.refused.clone()).unwrap_or_default(),
            last_error: h.and_then(|h| h.last_error.clone()),
            last_ok_ms: h.and_then(|h| h.last_ok_ms),
            retry_in_s: h
                .and_then(|h| h.retry_at)
                .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64()),
        }
    }

    pub fn stats(&self) -> PollerStats {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PollerStats {
            received: get(&s.received),
            delivered: get(&s.delivered),
            failed: get(&s.failed),
            duplicates: get(&s.duplicates),
            sent: get(&s.sent),
            polls: get(&s.polls),
            errors: get(&s.errors),
        }
    }

    fn health(&self, f: impl FnOnce(&mut Health)) {
        let mut h = lock(&self.health);
        f(&mut h);
    }

    fn failed(&self, error: String, retry_at: Instant) {
        bump(&self.stats.errors);
        tracing::warn!(error = %error, "relay poll failed");
        self.health(|h| {
            h.connected = false;
            h.last_error = Some(error);
            h.retry_at = Some(retry_at);
        });
    }
}

/// This instance's consumer name at the relay, made once and kept in the
/// data dir so cursors survive restarts.
pub fn instance_id(data_dir: &Path) -> Result<String, crate::instance::DaemonError> {
    let path = data_dir.join(INSTANCE_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if AgentId::parse(id).is_ok() {
            return Ok(id.to_string());
        }
    }
    let id = format!("ab-{}", &crate::auth::new_secret()[..16]);
    crate::instance::write_private_file(&path, id.as_bytes())?;
    Ok(id)
}

/// The backoff after errors: 1 s doubling to 60 s, back to 1 s once polls
/// have been healthy for `healthy_after`.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    healthy_since: Option<Instant>,
    healthy_after: Duration,
}

impl Backoff {
    pub fn new(healthy_after: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF,
            healthy_since: None,
            healthy_after,
        }
    }

    /// How long to wait after this failure.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.healthy_since = None;
        wait
    }

    pub fn succeeded(&mut self, now: Instant) {
        let since = *self.healthy_since.get_or_insert(now);
        if now.duration_since(since) >= self.healthy_after {
            self.next = FIRST_BACKOFF;
        }
    }

    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
        self.healthy_since = None;
    }
}

/// Why a call to the relay at `url` failed, as an API error for a caller.
fn relay_error(url: &str, status: Option<StatusCode>, text: &str) -> ApiError {
    let text: String = text.chars().take(300).collect();
    match status {
        None => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "relay_unreachable",
            format!("the relay at {url} did not answer: {text}"),
        ),
        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "relay_refused",
            format!("the relay at {url} refused this instance's token: {text}"),
        ),
        Some(StatusCode::PAYLOAD_TOO_LARGE) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the relay takes at most 64 KiB per message: {text}"),
        ),
        Some(StatusCode::INSUFFICIENT_STORAGE) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "relay_full",
            format!("the relay's queue is full: {text}"),
        ),
        Some(s) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "relay_error",
            format!("the relay at {url} answered {s}: {text}"),
        ),
    }
}

/// One call to the relay's extension API, on the node that answered last
/// and then on each other node of the target while a node cannot be
/// reached or fails (5xx). Every call may be repeated safely: sends carry
/// their message id, acks only move cursors forward.
async fn call<T: serde::de::DeserializeOwned>(
    state: &AppState,
    target: &RelayTarget,
    path: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Result<T, ApiError> {
    let urls: Vec<&str> = target.urls().collect();
    let n = urls.len().max(1);
    let node = &state.poller().node;
    let first = node.load(Ordering::Relaxed) % n;
    let mut failure = None;
    for k in 0..n {
        let i = (first + k) % n;
        let url = urls.get(i).copied().unwrap_or_default();
        match call_node(state, url, &target.token, path, body, timeout).await {
            Ok(v) => {
                node.store(i, Ordering::Relaxed);
                return Ok(v);
            }
            Err((status, e)) => {
                // What every node of one relay would answer alike (a
                // refusal, a size, a full queue) is the answer; anything
                // else may be this node's own trouble.
                let next = status.is_none_or(|s| {
                    !matches!(
                        s,
                        StatusCode::BAD_REQUEST
                            | StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::PAYLOAD_TOO_LARGE
                            | StatusCode::INSUFFICIENT_STORAGE
                    )
                });
                if !next {
                    return Err(e);
                }
                if n > 1 {
                    tracing::debug!(url, error = %e.message, "relay node failed; trying the next");
                }
                failure = Some(e);
            }
        }
    }
    Err(failure.unwrap_or_else(|| relay_error("(none)", None, "no relay URL is set")))
}

async fn call_node<T: serde::de::DeserializeOwned>(
    state: &AppState,
    url: &str,
    token: &str,
    path: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Result<T, (Option<StatusCode>, ApiError)> {
    let mut req = state
        .http()
        .post(format!("{url}{path}"))
        .json(body)
        .timeout(timeout);
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let unreachable = |text: &str| (None, relay_error(url, None, text));
    let resp = req
        .send()
        .await
        .map_err(|e| unreachable(&crate::tls::error_chain(&e.without_url())))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| unreachable(&e.without_url().to_string()))?;
    if !status.is_success() {
        let text = serde_json::from_slice::<agentbus_proto::relay::SeedError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err((Some(status), relay_error(url, Some(status), &text)));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        (
            Some(StatusCode::BAD_GATEWAY),
            relay_error(
                url,
                Some(StatusCode::BAD_GATEWAY),
                &format!("unreadable answer: {e}"),
            ),
        )
    })
}

/// Hands a jekt or message to the relay. `Ok(None)`: no relay is set.
pub async fn hand_over(
    state: &AppState,
    mut item: RelaySend,
) -> Result<Option<RelaySendResponse>, ApiError> {
    let Some(target) = state.poller().target() else {
        return Ok(None);
    };
    if let Some(s) = state.poller().signing() {
        item.signature = Some(s.key.sign(&item));
    }
    let resp: RelaySendResponse = call(
        state,
        &target,
        "/v1/relay/send",
        &item,
        Duration::from_secs(15),
    )
    .await?;
    bump(&state.poller().stats.sent);
    Ok(Some(resp))
}

/// What became of one item the relay handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    Duplicate,
    /// Refused for good (audited): acked so it does not come back.
    Refused,
    /// Not now (mailbox full, the store failed): left unacked, tried again.
    Later,
}

/// Failures worth another try later; anything else is final.
fn transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::INSUFFICIENT_STORAGE
    ) || (status.is_server_error() && status != StatusCode::GATEWAY_TIMEOUT)
}

/// Delivers one relayed item here.
async fn deliver(state: &AppState, env: &RelayEnvelope) -> Fate {
    let Ok(to) = AgentId::parse(&env.to) else {
        return Fate::Refused;
    };
    // A sender name that could begin a line of its own, or hide what it
    // says, is refused here too (whatever relay handed it over).
    if !name_ok(&env.from) {
        tracing::warn!(id = %env.id, to = %env.to, "refusing a relayed item whose sender name has control or invisible characters");
        return Fate::Refused;
    }
    let verdict = match state.poller().signing() {
        Some(s) => crate::signing::verify(env, &s.trusted, s.policy),
        None => crate::signing::Verdict::Unsigned,
    };
    if let crate::signing::Verdict::Later(why) = &verdict {
        tracing::warn!(id = %env.id, to = %env.to, %why, "relayed item left at the relay for now");
        return Fate::Later;
    }
    if let crate::signing::Verdict::Refused(why) = &verdict {
        tracing::warn!(id = %env.id, to = %env.to, from = %env.from, %why, "refusing a relayed item: its signature does not hold");
        state
            .audit(
                AuditRecord::new(&env.from, "relay_item", Some(&env.to), "refused")
                    .refusal()
                    .detail(format!("msg={} signature: {why}", env.id)),
            )
            .await;
        return Fate::Refused;
    }
    let trust = verdict.trust(env.sender_verified);
    let done = match env.kind {
        RelayKind::Plain | RelayKind::Jekt => {
            // A program that has just started draws its screen first (as
            // the hold's replay does, let it go quiet); otherwise now.
            let young = state
                .agents()
                .pane_of(&to)
                .is_some_and(|p| now_ms() - p.created_ms < YOUNG_PANE_MS);
            let req = InjectRequest {
                target_agent: to,
                source_agent: None,
                message: env.body.clone(),
                request_id: RequestId::parse(&format!("relay:{}", env.id)).ok(),
                priority: env.priority,
                tier: env.tier,
                wait_for_idle: if young {
                    IdleWait::Default
                } else {
                    IdleWait::No
                },
                hops: 0,
                origin_trust: None,
                exact_target: true,
            };
            let sender = crate::jekt::Sender {
                caller: &Identity::Relay,
                name: env.from.clone(),
                trust,
            };
            crate::jekt::deliver(state, &sender, &req, env.id)
                .await
                .map(|r| r.duplicate)
                .map_err(ApiError::from)
        }
        RelayKind::Message => crate::mailbox::store_relayed(state, env, to, trust)
            .await
            .map(|(_, dup)| dup),
    };
    match done {
        Ok(true) => Fate::Duplicate,
        Ok(false) => Fate::Delivered,
        Err(e) if transient(e.status) => {
            tracing::info!(id = %env.id, to = %env.to, error = %e.message, "relayed item not delivered yet");
            Fate::Later
        }
        Err(e) => {
            tracing::info!(id = %env.id, to = %env.to, error = %e.message, "relayed item refused");
            Fate::Refused
        }
    }
}

/// Delivers a poll's items, in order per agent (agents side by side), and
/// returns per agent the highest seq up to which everything is done, and
/// the agents to leave out of polls for a while.
async fn deliver_all(
    state: &AppState,
    items: Vec<RelayEnvelope>,
) -> (BTreeMap<String, i64>, Vec<AgentId>) {
    let mut by_agent: BTreeMap<String, Vec<RelayEnvelope>> = BTreeMap::new();
    for e in items {
        by_agent.entry(e.to.clone()).or_default().push(e);
    }
    let stats = &state.poller().stats;
    let runs = by_agent.into_iter().map(|(agent, items)| async move {
        let mut done = None;
        for e in &items {
            bump(&stats.received);
            match deliver(state, e).await {
                Fate::Delivered => bump(&stats.delivered),
                Fate::Duplicate => bump(&stats.duplicates),
                Fate::Refused => bump(&stats.failed),
                Fate::Later => return (agent, done, true),
            }
            done = Some(e.seq);
        }
        (agent, done, false)
    });
    let mut acks = BTreeMap::new();
    let mut later = Vec::new();
    for (agent, done, stalled) in futures_util::future::join_all(runs).await {
        if let Some(seq) = done {
            acks.insert(agent.clone(), seq);
        }
        if stalled && let Ok(a) = AgentId::parse(&agent) {
            later.push(a);
        }
    }
    (acks, later)
}

/// Runs the poller until the daemon shuts down.
pub async fn run(state: AppState) {
    let poller = state.poller();
    let cfg = state.config().relay.clone();
    let mut target_rx = poller.target.subscribe();
    let mut agents_rx = state.agents().subscribe_changes();
    let mut shutdown = state.shutdown_signal();
    let mut backoff = Backoff::new(Duration::from_secs(cfg.healthy_after_s));
    // Agents whose delivery failed for now, and until when they sit out.
    let mut resting: HashMap<AgentId, Instant> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let target = target_rx.borrow_and_update().clone();
        let now = Instant::now();
        resting.retain(|_, until| *until > now);
        agents_rx.borrow_and_update();
        let mut agents: Vec<AgentId> = state
            .agents()
            .reachable()
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| !resting.contains_key(a))
            .collect();
        if agents.len() > MAX_POLL_AGENTS {
            tracing::warn!(
                agents = agents.len(),
                "more agents than one relay poll may name; polling for the first {MAX_POLL_AGENTS}"
            );
            agents.truncate(MAX_POLL_AGENTS);
        }
        poller.health(|h| h.polled = agents.clone());
        let Some(target) = target.filter(|_| !agents.is_empty()) else {
            // Nothing to poll for: wait for a target, an agent, or the end
            // of a rest.
            let rest_end = resting.values().min().copied();
            tokio::select! {
                _ = target_rx.changed() => {}
                _ = agents_rx.changed() => {}
                _ = sleep_until_opt(rest_end) => {}
                _ = shutdown.wait_for(|d| *d) => return,
            }
            continue;
        };
        // Until a poll has succeeded, do not wait at the relay: status
        // says "connected" as soon as the relay answers. After that, wait
        // no longer than the first rest ends.
        let connected = lock(&poller.health).connected;
        let mut wait_s = if connected {
            cfg.poll_wait_s as f64
        } else {
            0.0
        };
        if let Some(end) = resting.values().min() {
            wait_s = wait_s.min(end.saturating_duration_since(now).as_secs_f64());
        }
        let poll = RelayPoll {
            consumer: Some(poller.consumer.clone()),
            agents: agents.clone(),
            wait_s,
            max: Some(POLL_MAX),
        };
        bump(&poller.stats.polls);
        let timeout = Duration::from_secs_f64(wait_s) + Duration::from_secs(15);
        let answer = tokio::select! {
            r = call::<RelayPollResponse>(&state, &target, "/v1/relay/poll", &poll, timeout) => r,
            // A new set of agents: poll again for it (the dropped poll
            // changed nothing at the relay).
            _ = agents_rx.changed() => continue,
            _ = target_rx.changed() => { backoff.reset(); continue }
            _ = shutdown.wait_for(|d| *d) => return,
        };
        let result = match answer {
            Ok(resp) => {
                backoff.succeeded(Instant::now());
                poller.health(|h| {
                    h.connected = true;
                    h.last_error = None;
                    h.last_ok_ms = Some(now_ms());
                    h.retry_at = None;
                });
                // Another instance hosts these: leave them out for a
                // while rather than ask again at once.
                if !resp.refused.is_empty() {
                    tracing::warn!(agents = ?resp.refused, "the relay says another instance hosts these agents");
                }
                for a in resp.refused.iter().filter_map(|a| AgentId::parse(a).ok()) {
                    resting.insert(a, Instant::now() + REFUSED_RETRY);
                }
                poller.health(|h| h.refused = resp.refused.clone());
                let (acks, later) = deliver_all(&state, resp.messages).await;
                for a in later {
                    resting.insert(a, Instant::now() + AGENT_RETRY);
                }
                if acks.is_empty() {
                    Ok(())
                } else {
                    let ack = RelayAck {
                        consumer: Some(poller.consumer.clone()),
                        acks,
                    };
                    call::<serde_json::Value>(
                        &state,
                        &target,
                        "/v1/relay/ack",
                        &ack,
                        Duration::from_secs(15),
                    )
                    .await
                    .map(|_| ())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let wait = backoff.failed();
            poller.failed(e.message, Instant::now() + wait);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = target_rx.changed() => backoff.reset(),
                _ = shutdown.wait_for(|d| *d) => return,
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_only_after_a_healthy_period() {
        let mut b = Backoff::new(Duration::from_secs(30));
        let waits: Vec<u64> = (0..8).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        let t0 = Instant::now();
        b.succeeded(t0);
        assert_eq!(b.failed().as_secs(), 60, "one success is not health");
        b.succeeded(t0);
        b.succeeded(t0 + Duration::from_secs(31));
        assert_eq!(b.failed().as_secs(), 1);
        assert_eq!(b.failed().as_secs(), 2);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = RelayTarget {
            url: "http://r".into(),
            token: "abr_secret".into(),
        };
        assert!(!format!("{t:?}").contains("abr_secret"));
    }
}
