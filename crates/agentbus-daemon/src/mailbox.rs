//! The message verb: durable mailboxes (docs/mailbox.md).
//!
//! A send is answered only after the message is committed. A read returns
//! unacked messages after a cursor, oldest first, and marks what it
//! returned `delivered` (a peek marks nothing). A read may wait for mail:
//! each recipient has a watch channel bumped after every commit of mail
//! for it, so a waiting read wakes the moment mail lands, never on a timer,
//! and only the waiters of that recipient wake.

use crate::auth::Identity;
use crate::error::ApiError;
use crate::metrics::MessageOutcome;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::api::{
    AckResponse, InboxPage, Message, MessageKind, MessageState, SearchResults, SendMessageRequest,
    SendMessageResponse,
};
use agentbus_proto::event::EventKind;
use agentbus_proto::relay::{RelayEnvelope, RelayKind, RelaySend};
use agentbus_proto::sync::lock;
use agentbus_proto::{AgentId, MessageId, now_ms};
use agentbus_store::{InboxQuery, NewMessage, SendOutcome};
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Per-recipient wake-ups for waiting reads.
#[derive(Default)]
pub struct Waiters {
    // A std mutex: held for one map operation.
    map: Mutex<HashMap<AgentId, watch::Sender<u64>>>,
}

impl Waiters {
    fn subscribe(&self, agent: &AgentId) -> watch::Receiver<u64> {
        lock(&self.map)
            .entry(agent.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes every read waiting on `agent`'s mailbox.
    pub fn notify(&self, agent: &AgentId) {
        if let Some(tx) = lock(&self.map).get(agent) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Drops channels nobody waits on.
    pub fn prune(&self) {
        let mut m = lock(&self.map);
        m.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Reads waiting right now (a diagnostic).
    pub fn waiting(&self) -> usize {
        lock(&self.map).values().map(|tx| tx.receiver_count()).sum()
    }
}

/// Read ranges waiting to be recorded as `delivered`: (mailbox, lo, hi).
/// Reads add to it; a flusher writes what has gathered every
/// [`MARK_FLUSH`], one transaction for many reads.
#[derive(Default)]
pub struct DeliveredMarks {
    // A std mutex: held to push or to take the batch.
    pending: Mutex<Vec<(String, i64, i64)>>,
}

/// How long `delivered` marks gather before they are written. Every
/// commit briefly slows reads running at that moment (measured here: ~2 ms
/// at p99, with or without fsync); at 50 ms, marks alone pushed inbox-page
/// p99 past 2 ms, at 500 ms it stays under 1 ms. A mark is advisory, so
/// half a second of lag costs nothing.
pub const MARK_FLUSH: Duration = Duration::from_millis(500);

impl DeliveredMarks {
    fn add(&self, recipient: &AgentId, lo: i64, hi: i64) {
        let mut p = lock(&self.pending);
        p.push((recipient.to_string(), lo, hi));
    }

    fn take(&self) -> Vec<(String, i64, i64)> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

/// Writes gathered `delivered` marks until shutdown, then the last ones.
pub async fn flush_marks(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(MARK_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let ranges = state.marks().take();
        if !ranges.is_empty()
            && let Err(e) = state.store().mark_delivered(ranges).await
        {
            tracing::warn!(error = %e, "failed to record delivered messages");
        }
        if stop {
            return;
        }
    }
}

/// Leaves a message in `req.to`'s mailbox.
pub async fn send(
    state: &AppState,
    caller: &Identity,
    req: SendMessageRequest,
) -> Result<(StatusCode, SendMessageResponse), ApiError> {
    let cfg = &state.config().mailbox;
    let r = &req;
    let refuse = |outcome: &'static str, e: ApiError| async move {
        state
            .audit(
                AuditRecord::new(caller.actor(), "message", Some(r.to.as_str()), outcome)
                    .body(&r.body)
                    .detail(e.message.clone())
                    .refusal(),
            )
            .await;
        e
    };
    let (from, trust) = match caller.sender_vouched(req.from.as_ref(), req.origin_trust.clone()) {
        Ok(s) => s,
        Err(e) => return Err(refuse("forbidden", e).await),
    };
    if req.body.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "body must not be empty",
        ));
    }
    if req.body.len() > cfg.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            format!(
                "a message body may hold at most {} bytes; this one has {}",
                cfg.max_body_bytes,
                req.body.len()
            ),
        ));
    }
    let ttl_s = req.ttl_s.unwrap_or(cfg.default_ttl_s);
    if ttl_s == 0 || ttl_s > cfg.max_ttl_s {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("ttl_s must be between 1 and {}", cfg.max_ttl_s),
        ));
    }
    if caller.is_limited(&state.config().limits)
        && let Err(r) = state.limiter().check(&from, req.to.as_str())
    {
        return Err(refuse("rate_limited", r.into()).await);
    }
    let now = now_ms();
    let recipient_known = state.agents().get(&req.to).is_some();
    if !recipient_known && *caller == Identity::Peer {
        // The registry sent it here, but the agent is not here (any more):
        // the forwarding instance evicts the entry and goes on.
        return Err(ApiError::not_found(
            "agent_not_found",
            format!("agent not found: {} (not on this instance)", req.to),
        ));
    }
    if !recipient_known {
        if let Some(resp) = to_peer(state, &from, trust.clone(), &req).await? {
            return Ok(resp);
        }
        match to_relay(state, caller, &from, trust.clone(), &req).await {
            Ok(Some(resp)) => return Ok((StatusCode::ACCEPTED, resp)),
            Ok(None) => {}
            Err(e) => return Err(refuse("relay_failed", e).await),
        }
    }
    let msg = NewMessage {
        id: MessageId::new(),
        recipient: req.to.clone(),
        sender: from.clone(),
        trust,
        kind: MessageKind::Message,
        body: req.body.clone(),
        thread_id: req.thread_id.clone(),
        reply_to: req.reply_to,
        priority: req.priority.unwrap_or_default(),
        created_ms: now,
        expires_ms: now + (ttl_s as i64) * 1000,
        receipt: req.receipt,
        request_id: req.request_id.as_ref().map(|r| r.to_string()),
    };
    let (stored_id, expires_ms) = (msg.id, msg.expires_ms);
    let response = |id, seq, duplicate| SendMessageResponse {
        id,
        seq,
        to: req.to.clone(),
        from: from.clone(),
        duplicate,
        recipient_known,
        expires_ms,
        queued: false,
        forwarded: false,
    };
    match store(state, caller, msg).await? {
        SendOutcome::Stored { seq } => Ok((StatusCode::CREATED, response(stored_id, seq, false))),
        SendOutcome::Duplicate { id, seq, recipient } if recipient == req.to.as_str() => {
            Ok((StatusCode::OK, response(id, seq, true)))
        }
        SendOutcome::Duplicate { recipient, .. } => Err(ApiError::conflict(
            "request_id_reused",
            format!("this request id was already used for a message to {recipient}"),
        )),
        SendOutcome::Full { open } => Err(refuse("mailbox_full", full(&req.to, open)).await),
        SendOutcome::SenderFull { bytes } => {
            Err(refuse("sender_full", sender_full(state, &from, bytes)).await)
        }
    }
}

fn sender_full(state: &AppState, from: &str, bytes: i64) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "sender_full",
        format!(
            "{} already has {bytes} bytes of unacked mail waiting in mailboxes, and this would pass the limit of {} (mailbox.max_sender_bytes); nothing was stored. Its recipients must read and ack first.",
            agentbus_proto::jekt::marker_field(from),
            state.config().mailbox.max_sender_bytes
        ),
    )
}

fn full(to: &AgentId, open: i64) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "mailbox_full",
        format!(
            "{to}'s mailbox is full: {open} unacked messages (the quota); nothing was stored and nothing \
             was evicted. The recipient must read and ack first."
        ),
    )
}

/// Stores a message; once it is on disk, wakes waiting reads, publishes
/// `message:received` and audits it.
async fn store(
    state: &AppState,
    caller: &Identity,
    msg: NewMessage,
) -> Result<SendOutcome, ApiError> {
    let (id, to, from, trust, thread_id) = (
        msg.id,
        msg.recipient.clone(),
        msg.sender.clone(),
        msg.trust.clone(),
        msg.thread_id.clone(),
    );
    let audit = AuditRecord::new(caller.actor(), "message", Some(to.as_str()), "stored")
        .body(&msg.body)
        .detail(format!(
            "id={id} from={} trust={trust}",
            agentbus_proto::jekt::marker_field(&from)
        ));
    let outcome = state
        .store()
        .send_message(
            msg,
            agentbus_store::Quota {
                per_mailbox: state.config().mailbox.quota,
                per_sender_bytes: i64::try_from(state.config().mailbox.max_sender_bytes)
                    .unwrap_or(i64::MAX),
            },
        )
        .await?;
    if let SendOutcome::Stored { seq } = outcome {
        state.metrics().message(MessageOutcome::Stored);
        state.waiters().notify(&to);
        state.events().publish(EventKind::MessageReceived {
            id,
            seq,
            from,
            to,
            thread_id,
        });
        state.audit(audit).await;
    }
    Ok(outcome)
}

/// Hands a message for an agent unknown here to the relay, if one is set.
async fn to_relay(
    state: &AppState,
    caller: &Identity,
    from: &str,
    trust: agentbus_proto::jekt::Trust,
    req: &SendMessageRequest,
) -> Result<Option<SendMessageResponse>, ApiError> {
    if *caller == Identity::Relay {
        return Ok(None);
    }
    let id = MessageId::for_request("message", from, req.request_id.as_ref());
    let item = RelaySend {
        id,
        from: from.to_string(),
        to: req.to.clone(),
        kind: RelayKind::Message,
        body: req.body.clone(),
        thread_id: req.thread_id.clone(),
        reply_to: req.reply_to,
        tier: None,
        priority: req.priority,
        origin_trust: Some(trust.clone()),
        signature: None,
    };
    let Some(sent) = crate::poller::hand_over(state, item).await? else {
        return Ok(None);
    };
    if !sent.duplicate {
        state.metrics().message(MessageOutcome::Queued);
    }
    state
        .audit(
            AuditRecord::new(caller.actor(), "message", Some(req.to.as_str()), "queued")
                .body(&req.body)
                .detail(format!("id={id} relay_seq={} trust={trust}", sent.seq)),
        )
        .await;
    Ok(Some(SendMessageResponse {
        id,
        seq: 0,
        to: req.to.clone(),
        from: from.to_string(),
        duplicate: sent.duplicate,
        recipient_known: false,
        expires_ms: (sent.ts * 1000.0) as i64
            + (state.config().mailbox.default_ttl_s as i64) * 1000,
        queued: true,
        forwarded: false,
    }))
}

/// Hands a message for an agent that another instance of this machine
/// hosts (the shared registry says which) to that instance. `Ok(None)`:
/// no live peer has it (a stale entry is evicted); go on to the relay.
async fn to_peer(
    state: &AppState,
    from: &str,
    trust: agentbus_proto::jekt::Trust,
    req: &SendMessageRequest,
) -> Result<Option<(StatusCode, SendMessageResponse)>, ApiError> {
    let Some(registry) = state.registry() else {
        return Ok(None);
    };
    let Some(entry) = registry.lookup(&req.to) else {
        return Ok(None);
    };
    let body = SendMessageRequest {
        from: AgentId::parse(from).ok(),
        origin_trust: Some(trust),
        ..req.clone()
    };
    let Some((status, bytes)) = registry
        .post_to_peer(
            state.http(),
            &entry,
            "/v1/messages",
            &body,
            Duration::from_secs(15),
        )
        .await
    else {
        return Ok(None);
    };
    if status.is_success()
        && let Ok(mut r) = serde_json::from_slice::<SendMessageResponse>(&bytes)
    {
        r.forwarded = true;
        if !r.duplicate {
            state.metrics().message(MessageOutcome::Forwarded);
        }
        return Ok(Some((status, r)));
    }
    let (code, message) = crate::registry::peer_error(&bytes);
    Err(ApiError::new(
        if status.is_success() {
            StatusCode::BAD_GATEWAY
        } else {
            status
        },
        "peer_refused",
        format!(
            "the instance hosting {} refused the message ({code}): {message}",
            req.to
        ),
    ))
}

/// Leaves a message the relay handed over in its recipient's mailbox,
/// under the id it travelled with. Returns whether it was there already.
pub(crate) async fn store_relayed(
    state: &AppState,
    env: &RelayEnvelope,
    to: AgentId,
    trust: agentbus_proto::jekt::Trust,
) -> Result<(MessageId, bool), ApiError> {
    let now = now_ms();
    let msg = NewMessage {
        id: env.id,
        recipient: to.clone(),
        sender: env.from.clone(),
        trust,
        kind: MessageKind::Message,
        body: env.body.clone(),
        thread_id: env.thread_id.clone(),
        reply_to: env.reply_to,
        priority: env.priority.unwrap_or_default(),
        created_ms: now,
        expires_ms: now + (state.config().mailbox.default_ttl_s as i64) * 1000,
        receipt: false,
        // The id is the request id: a second hand-over is a duplicate.
        request_id: Some(format!("relay:{}", env.id)),
    };
    match store(state, &Identity::Relay, msg).await? {
        SendOutcome::Stored { .. } => Ok((env.id, false)),
        SendOutcome::Duplicate { id, .. } => Ok((id, true)),
        SendOutcome::Full { open } => Err(full(&to, open)),
        SendOutcome::SenderFull { bytes } => Err(sender_full(state, &env.from, bytes)),
    }
}

/// What a read asks for.
pub struct ReadParams {
    pub after: i64,
    pub limit: u32,
    pub peek: bool,
    pub wait: Duration,
    pub include_acked: bool,
}

/// A page of `agent`'s mailbox, waiting up to `p.wait` for mail if there
/// is none.
pub async fn read(
    state: &AppState,
    caller: &Identity,
    agent: AgentId,
    p: ReadParams,
) -> Result<InboxPage, ApiError> {
    caller.own_or_admin(&agent, "mailbox")?;
    let deadline = tokio::time::Instant::now() + p.wait;
    let mut wake = state.waiters().subscribe(&agent);
    let mut shutdown = state.shutdown_signal();
    let (mut messages, more) = loop {
        // Subscribed (and marked seen) before the query: mail committed
        // after the query still wakes us.
        wake.borrow_and_update();
        let q = InboxQuery {
            recipient: agent.clone(),
            after: p.after,
            limit: p.limit,
            include_acked: p.include_acked,
            now_ms: now_ms(),
        };
        let page = state.read_store(move |s| s.read_inbox(&q)).await?;
        if !page.0.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            break page;
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { break page },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    };
    if !p.peek && messages.iter().any(|m| m.state == MessageState::Queued) {
        // The page is every unacked message of this mailbox in
        // (after, last seq]: that range is now delivered. Written within
        // MARK_FLUSH; a crash before then leaves them `queued`, and the
        // next read returns them again (at least once), which a reader
        // must expect anyway.
        if let Some(last) = messages.last() {
            state.marks().add(&agent, p.after + 1, last.seq);
        }
        for m in messages
            .iter_mut()
            .filter(|m| m.state == MessageState::Queued)
        {
            m.state = MessageState::Delivered;
        }
    }
    let next_cursor = messages.last().map_or(p.after, |m| m.seq);
    Ok(InboxPage {
        agent_id: agent,
        messages,
        next_cursor,
        more,
    })
}

/// Acks messages: an agent its own; the instance key any.
pub async fn ack(
    state: &AppState,
    caller: &Identity,
    ids: Vec<MessageId>,
) -> Result<AckResponse, ApiError> {
    if ids.is_empty() || ids.len() > 1000 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "ids must hold 1 to 1000 message ids",
        ));
    }
    let mine = match caller {
        Identity::Agent(me) => Some(me.clone()),
        Identity::Admin | Identity::Dashboard(_) => None,
        Identity::Peer | Identity::Relay => {
            return Err(ApiError::forbidden("a forward token cannot ack mail"));
        }
    };
    let cfg = &state.config().mailbox;
    let out = state
        .store()
        .ack(
            mine,
            ids,
            now_ms(),
            (cfg.default_ttl_s as i64) * 1000,
            cfg.quota,
        )
        .await?;
    if !out.forbidden.is_empty() {
        let e = ApiError::forbidden(format!(
            "an agent token may ack only messages in its own mailbox; {} of these are not, so nothing was acked",
            out.forbidden.len()
        ));
        state
            .audit(
                AuditRecord::new(caller.actor(), "ack", None, "forbidden")
                    .detail(e.message.clone())
                    .refusal(),
            )
            .await;
        return Err(e);
    }
    state.metrics().acked(out.acked.len());
    for r in &out.receipts {
        state.waiters().notify(&r.to);
        state.events().publish(EventKind::MessageReceived {
            id: r.id,
            seq: r.seq,
            from: r.from.clone(),
            to: r.to.clone(),
            thread_id: r.thread_id.clone(),
        });
    }
    state
        .audit(
            AuditRecord::new(caller.actor(), "ack", None, "ok").detail(format!(
                "acked={} already={} not_found={} receipts={}",
                out.acked.len(),
                out.already_acked.len(),
                out.not_found.len(),
                out.receipts.len()
            )),
        )
        .await;
    Ok(AckResponse {
        acked: out.acked,
        already_acked: out.already_acked,
        not_found: out.not_found,
    })
}

/// Full-text search over bodies: an agent in its own mailbox; the
/// instance key in one mailbox or all.
pub async fn search(
    state: &AppState,
    caller: &Identity,
    query: String,
    agent: Option<AgentId>,
    limit: u32,
) -> Result<SearchResults, ApiError> {
    if query.trim().is_empty() || query.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q must hold 1 to 256 characters",
        ));
    }
    if query.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q must not hold control characters (NUL, line breaks, ...)",
        ));
    }
    let scope = match (caller, agent) {
        (Identity::Agent(me), Some(a)) => {
            caller.own_or_admin(&a, "mailbox")?;
            Some(me.clone())
        }
        (Identity::Agent(me), None) => Some(me.clone()),
        (Identity::Admin | Identity::Dashboard(_), a) => a,
        (Identity::Peer | Identity::Relay, _) => {
            return Err(ApiError::forbidden("a forward token cannot search mail"));
        }
    };
    let messages: Vec<Message> = state
        .read_store(move |s| s.search(scope.as_ref(), &query, limit, now_ms()))
        .await?;
    Ok(SearchResults { messages })
}
