//! The durable hold: jekts for agents that are offline (docs/jekt.md,
//! "The durable hold").
//!
//! A jekt for a known agent with no running pane is stored — 24 h, 64 per
//! agent, 1,000 per instance, `hold_full` (507) beyond — and its caller is
//! told `held`. When a pane is bound to that name again (`open`, or
//! `register` with a block), a replay task pastes the held jekts into it
//! in the order they came, each marked `HELD_FOR=<n>s`, removing each from
//! the store once it is written. The store is the truth; [`HeldIndex`]
//! keeps per-agent counts in memory so a live jekt knows without a query
//! whether it must queue behind a backlog.

use crate::auth::Identity;
use crate::error::ApiError;
use crate::jekt::{Jekt, JektError, Sender, paste};
use crate::state::{AppState, AuditRecord};
use agentbus_proto::api::{InjectOutcome, InjectResponse};
use agentbus_proto::event::EventKind;
use agentbus_proto::jekt::{Delivery, MarkerHeader, Tier, Trust};
use agentbus_proto::sync::lock;
use agentbus_proto::{AgentId, now_ms};
use agentbus_store::{HoldOutcome, NewHeld, StoredHeld};
use agentbus_term::Readiness;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Held jekts per agent, and which agents are being replayed.
#[derive(Default)]
pub struct HeldIndex {
    // Std mutexes: each use is one map operation.
    counts: Mutex<HashMap<AgentId, usize>>,
    replaying: Mutex<HashSet<AgentId>>,
}

impl HeldIndex {
    pub fn count(&self, agent: &AgentId) -> usize {
        lock(&self.counts).get(agent).copied().unwrap_or(0)
    }

    /// Jekts held for every agent.
    pub fn total(&self) -> usize {
        lock(&self.counts).values().sum()
    }

    fn add(&self, agent: &AgentId) {
        let mut c = lock(&self.counts);
        *c.entry(agent.clone()).or_default() += 1;
    }

    fn remove_one(&self, agent: &AgentId) {
        let mut c = lock(&self.counts);
        if let Some(n) = c.get_mut(agent) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(agent);
            }
        }
    }

    pub fn clear(&self, agent: &AgentId) {
        let mut c = lock(&self.counts);
        c.remove(agent);
    }

    /// Replaces every count with what the store says.
    pub fn reset(&self, counts: Vec<(String, i64)>) {
        let mut c = lock(&self.counts);
        *c = counts
            .into_iter()
            .filter_map(|(a, n)| Some((AgentId::parse(&a).ok()?, usize::try_from(n).ok()?)))
            .filter(|(_, n)| *n > 0)
            .collect();
    }

    fn start_replay(&self, agent: &AgentId) -> bool {
        lock(&self.replaying).insert(agent.clone())
    }

    fn end_replay(&self, agent: &AgentId) {
        let mut r = lock(&self.replaying);
        r.remove(agent);
    }
}

/// A trust, tier or priority read back from its stored wire name.
fn parse_wire<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// Holds `j` for later; answers `held` (with `reason` when the agent runs
/// but its CLI cannot take it now), or `hold_full` past a cap.
pub(crate) async fn hold(
    state: &AppState,
    sender: &Sender<'_>,
    j: &Jekt<'_>,
    reason: Option<String>,
) -> Result<InjectResponse, JektError> {
    let cfg = &state.config().hold;
    let h = &j.header;
    let held = NewHeld {
        id: h.msg_id,
        target: h.to.clone(),
        sender: h.from.to_string(),
        trust: h.trust.to_string(),
        tier: h.tier.to_string(),
        priority: h.priority.to_string(),
        delivery: h.delivery.to_string(),
        body: j.body.to_string(),
        created_ms: h.accepted_ms,
        expires_ms: h.accepted_ms + (cfg.ttl_s as i64) * 1000,
    };
    match state
        .store()
        .hold(held, cfg.per_agent, cfg.per_instance)
        .await?
    {
        HoldOutcome::Held { .. } => {
            state.held().add(h.to);
            state.events().publish(EventKind::JektHeld {
                msg_id: h.msg_id,
                from: h.from.to_string(),
                to: h.to.clone(),
            });
            let why = reason
                .as_deref()
                .map(|r| format!(" reason={r}"))
                .unwrap_or_default();
            state
                .audit(
                    sender
                        .audit(h.to, "held", j.body)
                        .detail(format!("msg_id={} trust={}{why}", h.msg_id, h.trust)),
                )
                .await;
            kick(state, h.to);
            let mut answer = j.answer(InjectOutcome::Held, None);
            answer.reason = reason;
            Ok(answer)
        }
        HoldOutcome::AgentFull(n) => Err(JektError::HoldFull(format!(
            "hold full: {} already has {n} held jekts (the limit); nothing was stored",
            h.to
        ))),
        HoldOutcome::InstanceFull(n) => Err(JektError::HoldFull(format!(
            "hold full: this instance already holds {n} jekts for offline agents (the limit); nothing was stored"
        ))),
    }
}

/// Starts replaying `agent`'s held jekts if it has a running pane and no
/// replay is under way.
pub fn kick(state: &AppState, agent: &AgentId) {
    let running = state
        .agents()
        .pane_of(agent)
        .is_some_and(|r| r.pane.is_running());
    if !running || state.held().count(agent) == 0 || !state.held().start_replay(agent) {
        return;
    }
    let (state, agent) = (state.clone(), agent.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = replay(&state, &agent).await {
                tracing::warn!(agent = %agent, error = %e, "replay of held jekts stopped");
            }
            state.held().end_replay(&agent);
            // Something held while the replay was finishing goes out too.
            let again = state.held().count(&agent) > 0
                && state
                    .agents()
                    .pane_of(&agent)
                    .is_some_and(|r| r.pane.is_running())
                && state.held().start_replay(&agent);
            if !again {
                break;
            }
        }
    });
}

async fn replay(state: &AppState, agent: &AgentId) -> Result<(), ApiError> {
    loop {
        let Some(record) = state
            .agents()
            .pane_of(agent)
            .filter(|r| r.pane.is_running())
        else {
            return Ok(());
        };
        if !ready_for_replay(state, &record).await {
            // Not at its prompt yet (busy, or a screen a person must
            // answer): look again, for as long as the pane runs.
            continue;
        }
        let who = agent.clone();
        let list = state
            .read_store(move |s| s.held_for(&who, now_ms()))
            .await?;
        if list.is_empty() {
            return Ok(());
        }
        for (i, h) in list.into_iter().enumerate() {
            // The one before started a turn: the next waits for the prompt.
            if i > 0 && !ready_for_replay(state, &record).await {
                break;
            }
            if !deliver_one(state, agent, &record, h).await? {
                return Ok(());
            }
        }
    }
}

/// How long one look for a ready prompt lasts during a replay.
const REPLAY_READY_WAIT: Duration = Duration::from_secs(30);

/// Waits for `record`'s program to take input: a CLI whose screen can be
/// read at its ready prompt, any other program gone quiet (a program that
/// has just started draws its screen first). False if it is still not
/// ready after one look.
async fn ready_for_replay(state: &AppState, record: &crate::agents::PaneRecord) -> bool {
    let cfg = state.config();
    match record.pane.wait_ready(REPLAY_READY_WAIT).await.0 {
        Readiness::Ready => true,
        Readiness::Unknown => {
            record
                .pane
                .wait_idle(
                    Duration::from_millis(cfg.jekt.idle_quiet_ms),
                    Duration::from_millis(cfg.jekt.idle_max_wait_ms),
                )
                .await;
            true
        }
        _ => false,
    }
}

/// Who sent a held jekt, as far as the shell rule is concerned: what
/// carried it, and how sure the daemon was of the sender.
fn held_caller(delivery: Delivery, trust: Trust, from: &str) -> Identity {
    match (delivery, trust) {
        (Delivery::Host, Trust::HostVerified) => {
            AgentId::parse(from).map_or(Identity::Relay, Identity::Agent)
        }
        (Delivery::Host, _) => Identity::Admin,
        (Delivery::Channel, _) => Identity::Peer,
        (Delivery::Wan, _) => Identity::Relay,
    }
}

/// Pastes one held jekt; false if the pane could not take it (it stays held).
async fn deliver_one(
    state: &AppState,
    agent: &AgentId,
    record: &crate::agents::PaneRecord,
    h: StoredHeld,
) -> Result<bool, ApiError> {
    let held_for_s = ((now_ms() - h.held.created_ms).max(0) / 1000) as u64;
    let j = Jekt {
        header: MarkerHeader {
            from: &h.held.sender,
            to: agent,
            // Unreadable stored values fall back to the most cautious.
            trust: parse_wire(&h.held.trust).unwrap_or(Trust::NetworkClaimed),
            tier: parse_wire(&h.held.tier).unwrap_or(Tier::Sensitive),
            priority: parse_wire(&h.held.priority).unwrap_or_default(),
            delivery: parse_wire(&h.held.delivery).unwrap_or(Delivery::Host),
            msg_id: h.held.id,
            accepted_ms: h.held.created_ms,
            held_for_s: Some(held_for_s),
        },
        body: &h.held.body,
    };
    // The checks of a live jekt hold at replay too: the pane may be a
    // shell now, where this sender may not type.
    let caller = held_caller(j.header.delivery, j.header.trust.clone(), j.header.from);
    let sender = Sender {
        caller: &caller,
        name: h.held.sender.clone(),
        trust: j.header.trust.clone(),
    };
    if let Some(why) = crate::jekt::shell_refusal(&state.config().policy, record, &sender).await {
        if state.store().release_held(h.seq).await? {
            state.held().remove_one(agent);
        }
        state
            .audit(
                AuditRecord::new(caller.actor(), "jekt", Some(agent.as_str()), "forbidden")
                    .body(&h.held.body)
                    .detail(format!(
                        "msg_id={} held jekt dropped: {agent} is a shell pane; {why}",
                        h.held.id
                    )),
            )
            .await;
        return Ok(true);
    }
    let report = match paste(state, record, &j).await {
        Ok(r) if !r.stuck => r,
        Ok(_) => {
            tracing::info!(agent = %agent, "held jekt not submitted (it stayed in the input box); it stays held");
            return Ok(false);
        }
        Err(e) => {
            tracing::info!(agent = %agent, error = %e, "held jekt not replayed; it stays held");
            return Ok(false);
        }
    };
    if state.store().release_held(h.seq).await? {
        state.held().remove_one(agent);
    }
    state
        .audit(
            AuditRecord::new("daemon", "jekt", Some(agent.as_str()), "delivered")
                .body(&h.held.body)
                .detail(format!(
                    "msg_id={} from={} trust={} held_for={held_for_s}s submitted={}",
                    h.held.id,
                    agentbus_proto::jekt::marker_field(&h.held.sender),
                    h.held.trust,
                    report.submitted.as_str()
                )),
        )
        .await;
    Ok(true)
}
