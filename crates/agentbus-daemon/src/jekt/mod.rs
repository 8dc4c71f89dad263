//! Delivering a jekt into a terminal: every rule a jekt must pass, in
//! one pipeline that every way in uses (the HTTP route, the App API's
//! `agent.send`, the MCP tool through the route, the relay poller, a
//! peer's forward).
//!
//! The journey (ARCHITECTURE.md, "A jekt's journey"):
//! 1. who sends it, and how sure we are (`TRUST`), from the credential
//!    ([`Sender`]);
//! 2. a `request_id` seen before is answered from its first delivery;
//! 3. an empty body, the hop limit, then the rate limits (agent senders);
//! 4. resolve the target name: a running pane, a known agent that is
//!    offline (a peer, the relay, or the hold takes it), nobody (404), or
//!    several (409);
//! 5. policy: agent-token senders are held to the allow-list, and may not
//!    jekt into a `shell` pane unless the policy names them ([`shell`]);
//! 6. sanitize, neutralize and wrap the body in the marker;
//! 7. wait for the pane to go quiet if asked (not for `urgent`);
//! 8. paste and submit under the pane's input lock;
//! 9. record: audit entry, `jekt:delivered` event, request id.
//!
//! A jekt for an agent that has jekts in the hold is held too, behind
//! them, so that the replay keeps their order. A refusal is a
//! [`JektError`], audited here once and answered by each API from it.

mod error;
mod onward;
mod shell;

pub use error::JektError;
pub(crate) use shell::shell_refusal;

use crate::agents::{PaneRecord, Resolution};
use crate::auth::Identity;
use crate::config::PolicyConfig;
use crate::error::ApiError;
use crate::hold;
use crate::state::{AppState, AuditRecord, Live};
use agentbus_proto::api::{IdleWait, InjectOutcome, InjectRequest, InjectResponse, SubmitState};
use agentbus_proto::event::EventKind;
use agentbus_proto::jekt::{Delivery, MarkerHeader, Priority, Trust, effective_tier, wrap};
use agentbus_proto::sync::lock;
use agentbus_proto::{AgentId, BlockId, MessageId, now_ms};
use agentbus_term::{Readiness, Submitted, TermError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

type Key = (String, String);

/// Jekts with a request id that are being delivered right now. A second
/// request with the same (sender, request id) waits for the first and gets
/// its answer. Once an answer is on disk the entry leaves this map: later
/// retries find it in the store.
#[derive(Default)]
pub struct InFlight {
    // A std mutex: held only to look up or insert a cell.
    cells: Mutex<HashMap<Key, Arc<OnceCell<InjectResponse>>>>,
    /// Jekts being delivered now, request id or not (`/v1/stats`).
    delivering: Arc<AtomicUsize>,
}

/// Bound on remembered failed attempts before idle ones are dropped.
const MAX_IN_FLIGHT: usize = 10_000;

impl InFlight {
    fn cell(&self, key: &Key) -> Arc<OnceCell<InjectResponse>> {
        let mut cells = lock(&self.cells);
        if cells.len() >= MAX_IN_FLIGHT {
            cells.retain(|_, c| Arc::strong_count(c) > 1);
        }
        cells.entry(key.clone()).or_default().clone()
    }

    fn forget(&self, key: &Key, cell: &Arc<OnceCell<InjectResponse>>) {
        let mut cells = lock(&self.cells);
        if cells.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            cells.remove(key);
        }
    }

    /// Jekts being delivered now: checked, waiting for a quiet pane, or
    /// being typed.
    pub fn delivering(&self) -> usize {
        self.delivering.load(Ordering::Relaxed)
    }
}

pub fn policy_allows(policy: &PolicyConfig, from: &AgentId, to: &AgentId) -> bool {
    policy.jekt_allow.is_empty()
        || policy.jekt_allow.iter().any(|rule| {
            (rule.from == "*" || rule.from == from.as_str())
                && rule.to.iter().any(|t| t == "*" || t == to.as_str())
        })
}

/// Who sends a jekt: the credential that carried it, the name it goes
/// out under, and how sure the daemon is of that name.
#[derive(Debug, Clone)]
pub struct Sender<'a> {
    pub caller: &'a Identity,
    pub name: String,
    pub trust: Trust,
}

impl<'a> Sender<'a> {
    /// The sender `caller` may send `req` as: an agent token as its own
    /// agent, the instance key as whoever it names, a peer as the sender
    /// it vouches for.
    pub fn of(caller: &'a Identity, req: &InjectRequest) -> Result<Self, JektError> {
        let (name, trust) = caller
            .sender_vouched(req.source_agent.as_ref(), req.origin_trust.clone())
            .map_err(|e| JektError::Forbidden(e.message))?;
        Ok(Sender {
            caller,
            name,
            trust,
        })
    }

    /// How the jekt reached this daemon, as the marker says it.
    fn delivery(&self) -> Delivery {
        match self.caller {
            Identity::Peer => Delivery::Channel,
            Identity::Relay => Delivery::Wan,
            Identity::Admin | Identity::Dashboard(_) | Identity::Agent(_) => Delivery::Host,
        }
    }

    /// An audit entry for a jekt from this sender to `to`.
    pub(crate) fn audit(&self, to: &AgentId, outcome: &str, body: &str) -> AuditRecord {
        AuditRecord::new(self.caller.actor(), "jekt", Some(to.as_str()), outcome).body(body)
    }
}

/// Handles one inject request end to end.
pub async fn inject(
    state: &AppState,
    caller: &Identity,
    req: InjectRequest,
) -> Result<InjectResponse, JektError> {
    let sender = match Sender::of(caller, &req) {
        Ok(s) => s,
        Err(e) => return Err(refused(state, caller, &req, e).await),
    };
    let msg_id = MessageId::for_request("jekt", &sender.name, req.request_id.as_ref());
    deliver(state, &sender, &req, msg_id).await
}

/// Delivers a jekt whose sender is settled, once per (sender, request
/// id): a repeat is answered from the first delivery. A refusal is
/// audited.
pub(crate) async fn deliver(
    state: &AppState,
    sender: &Sender<'_>,
    req: &InjectRequest,
    msg_id: MessageId,
) -> Result<InjectResponse, JektError> {
    let _counted = Live::new(&state.jekts().delivering);
    let Some(request_id) = req.request_id.clone() else {
        return audited(state, sender, req, msg_id).await;
    };
    let key: Key = (sender.name.clone(), request_id.to_string());
    let cell = state.jekts().cell(&key);
    let fresh = AtomicBool::new(false);
    let answer = cell
        .get_or_try_init(|| async {
            let (from, rid) = key.clone();
            let recalled = state
                .read_store(move |s| s.recall_jekt(&from, &rid))
                .await
                .map_err(JektError::Internal)?;
            if let Some(json) = recalled {
                return serde_json::from_str::<InjectResponse>(&json)
                    .map_err(|e| JektError::Internal(ApiError::internal(e)));
            }
            fresh.store(true, Ordering::Release);
            let resp = audited(state, sender, req, msg_id).await?;
            let json = serde_json::to_string(&resp)
                .map_err(|e| JektError::Internal(ApiError::internal(e)))?;
            if let Err(e) = state
                .store()
                .remember_jekt(key.0.clone(), key.1.clone(), json, now_ms())
                .await
            {
                // Delivered but not remembered: a retry could deliver it
                // twice. Say so in the log; the caller's answer stands.
                tracing::error!(error = %e, "failed to record a jekt request id");
            }
            Ok::<_, JektError>(resp)
        })
        .await
        .cloned();
    if cell.initialized() {
        state.jekts().forget(&key, &cell);
    }
    let mut resp = answer?;
    resp.duplicate = !fresh.load(Ordering::Acquire);
    Ok(resp)
}

/// [`check_and_deliver`], with a refusal written to the audit log, and
/// the outcome counted (`/metrics`). It runs once per jekt: a repeated
/// request id is answered from the first delivery without coming here.
async fn audited(
    state: &AppState,
    sender: &Sender<'_>,
    req: &InjectRequest,
    msg_id: MessageId,
) -> Result<InjectResponse, JektError> {
    match check_and_deliver(state, sender, req, msg_id).await {
        Err(e) => Err(refused(state, sender.caller, req, e).await),
        Ok(resp) => {
            state.metrics().jekt(resp.outcome);
            Ok(resp)
        }
    }
}

/// Audits a refused jekt (sampled, as every refusal), counts it, and
/// hands the error back.
async fn refused(
    state: &AppState,
    caller: &Identity,
    req: &InjectRequest,
    err: JektError,
) -> JektError {
    state.metrics().jekt_refused();
    state
        .audit(
            AuditRecord::new(
                caller.actor(),
                "jekt",
                Some(req.target_agent.as_str()),
                err.outcome(),
            )
            .body(&req.message)
            .detail(err.to_string())
            .refusal(),
        )
        .await;
    err
}

fn term_error(agent: &AgentId, e: TermError) -> JektError {
    let agent = agent.clone();
    match e {
        TermError::NotRunning => JektError::Exited(agent),
        TermError::InputStalled(ms) => JektError::InputStalled { agent, ms },
        TermError::Tmux(reason) => JektError::Tmux { agent, reason },
        other => JektError::Internal(ApiError::internal(other)),
    }
}

/// A jekt as it will be typed: the marker's header and the body.
pub(crate) struct Jekt<'a> {
    pub header: MarkerHeader<'a>,
    pub body: &'a str,
}

impl Jekt<'_> {
    /// The answer for this jekt: the one place an [`InjectResponse`] is
    /// made. Delivery fills in `bracketed` and `waited_ms`.
    pub(crate) fn answer(
        &self,
        outcome: InjectOutcome,
        block_id: Option<BlockId>,
    ) -> InjectResponse {
        let h = &self.header;
        InjectResponse {
            outcome,
            msg_id: h.msg_id,
            target_agent: h.to.clone(),
            source_agent: h.from.to_string(),
            block_id,
            trust: h.trust.clone(),
            tier: h.tier,
            delivery: h.delivery,
            bracketed: false,
            waited_ms: 0,
            duplicate: false,
            submitted: None,
            reason: None,
        }
    }
}

/// Wraps, pastes and submits `j` into `record`'s pane, then publishes the
/// delivery (unless the text stuck in the input box: then it was not
/// delivered). Shared by live jekts and the replay of held ones.
pub(crate) async fn paste(
    state: &AppState,
    record: &PaneRecord,
    j: &Jekt<'_>,
) -> Result<agentbus_term::PasteReport, TermError> {
    let h = &j.header;
    let report = record.pane.paste_and_submit(&wrap(h, j.body)).await?;
    if report.stuck {
        tracing::warn!(agent = %h.to, msg_id = %h.msg_id, cleared = report.cleared,
            "a jekt's text stayed in the input box after two submits");
        return Ok(report);
    }
    state.events().publish(EventKind::JektDelivered {
        msg_id: h.msg_id,
        from: h.from.to_string(),
        to: h.to.clone(),
        block_id: record.block,
        trust: h.trust.clone(),
        bytes: report.bytes,
        held_for_s: h.held_for_s,
    });
    Ok(report)
}

/// Runs every check a jekt must pass, in order, then delivers it by the
/// first tier that can take it: the agent's pane here (after waiting for
/// it to go quiet), a peer instance, the relay, or the hold.
async fn check_and_deliver(
    state: &AppState,
    sender: &Sender<'_>,
    req: &InjectRequest,
    msg_id: MessageId,
) -> Result<InjectResponse, JektError> {
    let config = state.config();
    if req.message.trim().is_empty() {
        return Err(JektError::Empty);
    }
    if req.hops > config.limits.max_hops {
        return Err(JektError::HopLimit {
            hops: req.hops,
            max: config.limits.max_hops,
        });
    }
    if sender.caller.is_limited(&config.limits) {
        state
            .limiter()
            .check(&sender.name, req.target_agent.as_str())
            .map_err(JektError::RateLimited)?;
    }
    // The agent, its pane if it has one here, and if nobody here knows
    // the name, the names that are known.
    let (to, record, unknown) = match state.agents().resolve(&req.target_agent, req.exact_target) {
        Resolution::Pane { agent, record } => (agent, Some(record), None),
        Resolution::Offline { agent } => (agent, None, None),
        Resolution::NotFound { known } => (req.target_agent.clone(), None, Some(known)),
        Resolution::Ambiguous(candidates) => {
            return Err(JektError::Ambiguous {
                target: req.target_agent.clone(),
                candidates,
            });
        }
    };
    let to = &to;
    let j = Jekt {
        header: MarkerHeader {
            from: &sender.name,
            to,
            tier: effective_tier(req.tier, &req.message),
            delivery: sender.delivery(),
            trust: sender.trust.clone(),
            msg_id,
            priority: req.priority.unwrap_or_default(),
            accepted_ms: now_ms(),
            held_for_s: None,
        },
        body: &req.message,
    };
    if record.is_none() {
        // No pane here: it may be running on a peer now, or on another
        // machine (the relay); if neither, a known agent's jekt is held
        // here and an unknown name refused.
        let relay_must_answer = unknown.is_some();
        if let Some(done) = onward::elsewhere(state, sender, req, &j, relay_must_answer).await? {
            return Ok(done);
        }
        if let Some(known) = unknown {
            return Err(JektError::NotFound {
                target: req.target_agent.clone(),
                known,
            });
        }
    }
    check_policy(state, sender, to)?;
    if let Some(r) = &record {
        check_shell(state, sender, to, r).await?;
    }
    let record = match record {
        // Behind a backlog of held jekts, wait in line.
        Some(r) if state.held().count(to) == 0 => r,
        _ => return hold::hold(state, sender, &j, None).await,
    };

    // A CLI whose screen can be read takes a jekt only at a ready prompt
    // (never a sign-in screen or a dialog, never text already in its
    // box): wait for one, within the bound, or hold the jekt; the replay
    // waits for the prompt. Other programs are waited on to go quiet.
    let bound = match req.wait_for_idle {
        IdleWait::UpToMs(ms) => ms,
        _ => config.jekt.idle_max_wait_ms,
    };
    let (readiness, mut waited) = record.pane.wait_ready(Duration::from_millis(bound)).await;
    let max_wait = match (readiness.is_ready(), j.header.priority, req.wait_for_idle) {
        (true, _, _) | (_, Priority::Urgent, _) | (_, _, IdleWait::No) => None,
        (_, _, IdleWait::Default) => Some(config.jekt.idle_max_wait_ms),
        (_, _, IdleWait::UpToMs(ms)) => Some(ms),
    };
    match readiness {
        Readiness::Ready | Readiness::Unknown => {}
        not_now if record.pane.is_running() => {
            return hold::hold(state, sender, &j, Some(not_now.label())).await;
        }
        // Ended while it waited: the paste below says so.
        _ => {}
    }
    if let Some(max) = max_wait {
        waited += record
            .pane
            .wait_idle(
                Duration::from_millis(config.jekt.idle_quiet_ms),
                Duration::from_millis(max),
            )
            .await;
    }
    // While it waited, the program in the pane may have become a shell.
    if !waited.is_zero() {
        check_shell(state, sender, to, &record).await?;
    }

    let report = paste(state, &record, &j)
        .await
        .map_err(|e| term_error(to, e))?;
    if report.stuck {
        // The text never left the box (it was cleared from it): it was
        // not delivered, so it waits in the hold for the next ready prompt.
        return hold::hold(state, sender, &j, Some(NOT_SUBMITTED.into())).await;
    }
    let submitted = submit_state(report.submitted);
    state
        .audit(sender.audit(to, "delivered", j.body).detail(format!(
            "msg_id={} from={} trust={} tier={} bracketed={} waited_ms={} submitted={}{}",
            msg_id,
            agentbus_proto::jekt::marker_field(&sender.name),
            sender.trust,
            j.header.tier,
            report.bracketed,
            waited.as_millis(),
            report.submitted.as_str(),
            if report.retried { " retried=1" } else { "" },
        )))
        .await;
    let mut answer = j.answer(InjectOutcome::Delivered, Some(record.block));
    answer.bracketed = report.bracketed;
    answer.waited_ms = waited.as_millis() as u64;
    answer.submitted = Some(submitted);
    Ok(answer)
}

/// Why a jekt whose text stayed in the input box was held.
pub(crate) const NOT_SUBMITTED: &str = "not submitted: the text stayed in the input box";

pub(crate) fn submit_state(s: Submitted) -> SubmitState {
    match s {
        Submitted::Confirmed => SubmitState::Confirmed,
        Submitted::Unconfirmed => SubmitState::Unconfirmed,
        Submitted::NotSent => SubmitState::NotSent,
    }
}

/// The allow-list, for senders holding an agent token here.
fn check_policy(state: &AppState, sender: &Sender<'_>, agent: &AgentId) -> Result<(), JektError> {
    match sender.caller {
        Identity::Agent(me) if !policy_allows(&state.config().policy, me, agent) => Err(
            JektError::Forbidden(format!("the policy does not allow {me} to jekt {agent}")),
        ),
        _ => Ok(()),
    }
}

/// Refuses a jekt this sender may not type into `record` because it is
/// a shell pane.
async fn check_shell(
    state: &AppState,
    sender: &Sender<'_>,
    agent: &AgentId,
    record: &PaneRecord,
) -> Result<(), JektError> {
    match shell_refusal(&state.config().policy, record, sender).await {
        None => Ok(()),
        Some(why) => Err(JektError::Forbidden(format!(
            "{agent} is a shell pane, where a jekt runs as a command; {why}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowRule;
    use axum::http::StatusCode;

    #[test]
    fn an_empty_policy_allows_everyone_and_rules_restrict() {
        let a = AgentId::parse("a").unwrap();
        let b = AgentId::parse("b").unwrap();
        let c = AgentId::parse("c").unwrap();
        let mut p = PolicyConfig::default();
        assert!(policy_allows(&p, &a, &b));
        p.jekt_allow.push(AllowRule {
            from: "a".into(),
            to: vec!["b".into()],
        });
        assert!(policy_allows(&p, &a, &b));
        assert!(!policy_allows(&p, &a, &c));
        assert!(!policy_allows(&p, &b, &a));
        p.jekt_allow.push(AllowRule {
            from: "*".into(),
            to: vec!["*".into()],
        });
        assert!(policy_allows(&p, &b, &c));
    }

    #[test]
    fn an_agent_token_cannot_claim_another_sender() {
        let me = AgentId::parse("bob").unwrap();
        let carol = AgentId::parse("carol").unwrap();
        assert_eq!(
            Identity::Agent(me.clone())
                .sender(Some(&carol))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Identity::Admin.sender(Some(&carol)).unwrap(),
            ("carol".to_string(), Trust::SelfDeclared)
        );
        assert_eq!(
            Identity::Agent(me).sender(None).unwrap(),
            ("bob".to_string(), Trust::HostVerified)
        );
        assert_eq!(
            Identity::Admin.sender(None).unwrap().0,
            crate::auth::DEFAULT_ADMIN_SENDER
        );
    }

    #[test]
    fn only_a_peer_may_vouch_for_its_sender() {
        let carol = AgentId::parse("carol").unwrap();
        for (who, claim, got) in [
            (Identity::Peer, Trust::HostVerified, Trust::ChannelVerified),
            (Identity::Peer, Trust::SelfDeclared, Trust::SelfDeclared),
            (Identity::Admin, Trust::HostVerified, Trust::SelfDeclared),
            (Identity::Relay, Trust::HostVerified, Trust::SelfDeclared),
        ] {
            let trust = who
                .sender_vouched(Some(&carol), Some(claim.clone()))
                .unwrap()
                .1;
            assert_eq!(trust, got, "{who:?} vouching {claim:?}");
        }
    }
}
