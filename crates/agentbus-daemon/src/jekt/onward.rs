//! The tiers past this instance: a jekt for an agent that has no pane
//! here goes to the peer instance that hosts it (the shared registry), or
//! to the relay for another machine; only if neither takes it is it held
//! here (`super::hold`) or refused.

use super::{Jekt, JektError, Sender, check_policy};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;
use agentbus_proto::AgentId;
use agentbus_proto::api::{IdleWait, InjectOutcome, InjectRequest, InjectResponse};
use agentbus_proto::jekt::Delivery;
use agentbus_proto::relay::{RelayKind, RelaySend};
use std::time::Duration;

/// Hands `j` to the peer that hosts its recipient, or else to the relay.
/// `Ok(None)`: neither took it. A relay that fails is an error only when
/// `relay_must_answer` (nobody here knows the agent); otherwise the
/// failure is logged and the jekt is held here.
pub(super) async fn elsewhere(
    state: &AppState,
    sender: &Sender<'_>,
    req: &InjectRequest,
    j: &Jekt<'_>,
    relay_must_answer: bool,
) -> Result<Option<InjectResponse>, JektError> {
    let agent = j.header.to;
    if let Some(done) = forward(state, sender, req, agent).await? {
        return Ok(Some(done));
    }
    match queue_at_relay(state, sender, req, j).await {
        Ok(done) => Ok(done),
        Err(e) if !relay_must_answer && matches!(e, JektError::Relay(_)) => {
            tracing::warn!(agent = %agent, error = %e, "relay failed; holding the jekt here");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Hands the jekt to the relay for an agent on another machine.
/// `Ok(None)`: no relay is set, or the jekt came from the relay.
async fn queue_at_relay(
    state: &AppState,
    sender: &Sender<'_>,
    req: &InjectRequest,
    j: &Jekt<'_>,
) -> Result<Option<InjectResponse>, JektError> {
    let agent = j.header.to;
    if *sender.caller == Identity::Relay || state.poller().target().is_none() {
        return Ok(None);
    }
    check_policy(state, sender, agent)?;
    let h = &j.header;
    let item = RelaySend {
        id: h.msg_id,
        from: sender.name.clone(),
        to: agent.clone(),
        kind: RelayKind::Jekt,
        body: j.body.to_string(),
        thread_id: None,
        reply_to: None,
        tier: Some(h.tier),
        priority: req.priority,
        origin_trust: Some(sender.trust.clone()),
        signature: None,
    };
    let Some(sent) = crate::poller::hand_over(state, item)
        .await
        .map_err(JektError::Relay)?
    else {
        return Ok(None);
    };
    state
        .audit(sender.audit(agent, "queued", j.body).detail(format!(
            "msg_id={} relay_seq={} trust={}",
            h.msg_id, sent.seq, sender.trust
        )))
        .await;
    let mut answer = j.answer(InjectOutcome::Queued, None);
    answer.delivery = Delivery::Wan;
    answer.duplicate = sent.duplicate;
    Ok(Some(answer))
}

/// Error codes a peer may answer with, as this daemon's own.
fn peer_code(code: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "forbidden",
        "rate_limited",
        "hold_full",
        "hop_limit",
        "input_stalled",
        "agent_offline",
        "ambiguous_agent",
        "invalid_request",
        "invalid_json",
        "payload_too_large",
        "unauthorized",
        "internal",
    ];
    KNOWN
        .into_iter()
        .find(|k| *k == code)
        .unwrap_or("peer_error")
}

/// Hands the jekt to the peer instance that hosts `agent`, if the shared
/// registry names a live one. `Ok(None)`: no peer has it — its entry, if
/// it was stale or the peer no longer knows the agent, is evicted — and
/// delivery goes on to the next tier.
async fn forward(
    state: &AppState,
    sender: &Sender<'_>,
    req: &InjectRequest,
    agent: &AgentId,
) -> Result<Option<InjectResponse>, JektError> {
    let config = state.config();
    let Some(registry) = state.registry() else {
        return Ok(None);
    };
    if req.hops + 1 > config.limits.max_hops {
        return Ok(None);
    }
    let Some(entry) = registry.lookup(agent) else {
        return Ok(None);
    };
    check_policy(state, sender, agent)?;
    let body = InjectRequest {
        target_agent: agent.clone(),
        source_agent: AgentId::parse(&sender.name).ok(),
        message: req.message.clone(),
        request_id: req.request_id.clone(),
        priority: req.priority,
        tier: req.tier,
        wait_for_idle: req.wait_for_idle,
        hops: req.hops + 1,
        origin_trust: Some(sender.trust.clone()),
        exact_target: false,
    };
    let waits = match req.wait_for_idle {
        IdleWait::No => 0,
        IdleWait::Default => config.jekt.idle_max_wait_ms,
        IdleWait::UpToMs(ms) => ms,
    };
    let Some((status, bytes)) = registry
        .post_to_peer(
            state.http(),
            &entry,
            "/agentmux/reactive/inject",
            &body,
            Duration::from_millis(15_000 + waits),
        )
        .await
    else {
        return Ok(None);
    };
    if !status.is_success() {
        let (code, message) = crate::registry::peer_error(&bytes);
        return Err(JektError::PeerRefused {
            agent: agent.clone(),
            error: ApiError::new(status, peer_code(&code), message),
        });
    }
    let mut done: InjectResponse =
        serde_json::from_slice(&bytes).map_err(|e| JektError::Internal(ApiError::internal(e)))?;
    if done.outcome == InjectOutcome::Delivered {
        done.outcome = InjectOutcome::Forwarded;
    }
    done.delivery = Delivery::Channel;
    state
        .audit(
            sender
                .audit(agent, "forwarded", &req.message)
                .detail(format!(
                    "msg_id={} peer={} trust={}",
                    done.msg_id, entry.local_url, sender.trust
                )),
        )
        .await;
    Ok(Some(done))
}
