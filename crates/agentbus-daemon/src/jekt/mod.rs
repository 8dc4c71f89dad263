//! Delivering a jekt into a terminal.
//!
//! The journey (ARCHITECTURE.md, "A jekt's journey"):
//! 1. who sends it, and how sure we are (`TRUST`), from the credential;
//! 2. a `request_id` seen before is answered from its first delivery;
//! 3. the hop limit, then the rate limits (agent senders);
//! 4. resolve the target name: a running pane, a known agent that is
//!    offline (held), nobody (404), or several (409);
//! 5. policy: agent-token senders are held to the allow-list, and may not
//!    jekt into a `shell` pane unless the policy names them;
//! 6. sanitize, neutralize and wrap the body in the marker;
//! 7. wait for the pane to go quiet if asked (not for `urgent`);
//! 8. paste and submit under the pane's input lock;
//! 9. record: audit entry, `jekt:delivered` event, request id.
//!
//! A jekt for an agent that has jekts in the hold is held too, behind
//! them, so that the replay keeps their order.

use crate::agents::{PaneRecord, Resolution};
use crate::auth::Identity;
use crate::config::PolicyConfig;
use crate::error::ApiError;
use crate::hold;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::api::{IdleWait, InjectOutcome, InjectRequest, InjectResponse, Provider};
use agentbus_proto::event::EventKind;
use agentbus_proto::jekt::{Delivery, MarkerHeader, Priority, Tier, Trust, effective_tier, wrap};
use agentbus_proto::relay::{RelayKind, RelaySend};
use agentbus_proto::{AgentId, MessageId, now_ms};
use agentbus_term::TermError;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// Bound on remembered failed attempts before idle ones are dropped.
const MAX_IN_FLIGHT: usize = 10_000;

impl InFlight {
    fn cell(&self, key: &Key) -> Arc<OnceCell<InjectResponse>> {
        let Ok(mut cells) = self.cells.lock() else {
            return Arc::new(OnceCell::new());
        };
        if cells.len() >= MAX_IN_FLIGHT {
            cells.retain(|_, c| Arc::strong_count(c) > 1);
        }
        cells.entry(key.clone()).or_default().clone()
    }

    fn forget(&self, key: &Key, cell: &Arc<OnceCell<InjectResponse>>) {
        if let Ok(mut cells) = self.cells.lock()
            && cells.get(key).is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            cells.remove(key);
        }
    }
}

pub fn policy_allows(policy: &PolicyConfig, from: &AgentId, to: &AgentId) -> bool {
    policy.jekt_allow.is_empty()
        || policy.jekt_allow.iter().any(|rule| {
            (rule.from == "*" || rule.from == from.as_str())
                && rule.to.iter().any(|t| t == "*" || t == to.as_str())
        })
}

/// Handles one inject request end to end.
pub async fn inject(
    state: &AppState,
    caller: &Identity,
    req: InjectRequest,
) -> Result<InjectResponse, ApiError> {
    let (from, trust) = match caller.sender_vouched(req.source_agent.as_ref(), req.origin_trust) {
        Ok(s) => s,
        Err(e) => return Err(refused(state, caller, &req, "forbidden", e).await),
    };
    let msg_id = crate::poller::travel_id("jekt", &from, req.request_id.as_ref());
    inject_as(state, caller, &from, trust, &req, msg_id).await
}

/// Delivers a jekt whose sender and trust are settled, once per
/// (sender, request id): a repeat is answered from the first delivery.
pub(crate) async fn inject_as(
    state: &AppState,
    caller: &Identity,
    from: &str,
    trust: Trust,
    req: &InjectRequest,
    msg_id: MessageId,
) -> Result<InjectResponse, ApiError> {
    let Some(request_id) = req.request_id.clone() else {
        return route(state, caller, from, trust, req, msg_id).await;
    };
    let key: Key = (from.to_string(), request_id.to_string());
    let cell = state.jekts().cell(&key);
    let fresh = AtomicBool::new(false);
    let answer = cell
        .get_or_try_init(|| async {
            let (sender, rid) = key.clone();
            if let Some(json) = state
                .read_store(move |s| s.recall_jekt(&sender, &rid))
                .await?
            {
                return serde_json::from_str::<InjectResponse>(&json).map_err(ApiError::internal);
            }
            fresh.store(true, Ordering::Release);
            let resp = route(state, caller, from, trust, req, msg_id).await?;
            let json = serde_json::to_string(&resp).map_err(ApiError::internal)?;
            if let Err(e) = state
                .store()
                .remember_jekt(key.0.clone(), key.1.clone(), json, now_ms())
                .await
            {
                // Delivered but not remembered: a retry could deliver it
                // twice. Say so in the log; the caller's answer stands.
                tracing::error!(error = %e, "failed to record a jekt request id");
            }
            Ok::<_, ApiError>(resp)
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

/// Audits a refused jekt and hands the error back.
async fn refused(
    state: &AppState,
    caller: &Identity,
    req: &InjectRequest,
    outcome: &str,
    err: ApiError,
) -> ApiError {
    state
        .audit(
            AuditRecord::new(
                caller.actor(),
                "jekt",
                Some(req.target_agent.as_str()),
                outcome,
            )
            .body(&req.message)
            .detail(err.message.clone())
            .refusal(),
        )
        .await;
    err
}

fn term_error(agent: &AgentId, e: TermError) -> ApiError {
    match e {
        TermError::NotRunning => ApiError::conflict(
            "agent_offline",
            format!("{agent}'s program exited before the jekt was written; nothing was delivered"),
        ),
        TermError::InputStalled(ms) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "input_stalled",
            format!(
                "{agent}'s program has not read its input for {ms} ms; the jekt may be partly written"
            ),
        ),
        TermError::Tmux(msg) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "tmux_failed",
            format!("tmux refused the jekt for {agent}: {msg}"),
        ),
        other => ApiError::internal(other),
    }
}

/// What the sender asked for, with what the daemon decided about it.
pub(crate) struct Jekt<'a> {
    pub from: &'a str,
    pub to: &'a AgentId,
    pub trust: Trust,
    pub delivery: Delivery,
    pub tier: Tier,
    pub priority: Priority,
    pub msg_id: MessageId,
    pub body: &'a str,
    /// Unix ms when the jekt was accepted.
    pub accepted_ms: i64,
    /// Seconds it waited in the hold, if it did.
    pub held_for_s: Option<u64>,
}

/// Wraps, pastes and submits `j` into `record`'s pane, then publishes the
/// delivery. Shared by live jekts and the replay of held ones.
pub(crate) async fn paste(
    state: &AppState,
    record: &PaneRecord,
    j: &Jekt<'_>,
) -> Result<agentbus_term::PasteReport, TermError> {
    let text = wrap(
        &MarkerHeader {
            from: j.from,
            to: j.to.as_str(),
            tier: j.tier,
            delivery: j.delivery,
            trust: j.trust,
            msg_id: j.msg_id,
            priority: j.priority,
            ts: j.accepted_ms / 1000,
            held_for_s: j.held_for_s,
        },
        j.body,
    );
    let report = record.pane.paste_and_submit(&text).await?;
    state.events().publish(EventKind::JektDelivered {
        msg_id: j.msg_id,
        from: j.from.to_string(),
        to: j.to.clone(),
        block_id: record.block,
        trust: j.trust,
        bytes: report.bytes,
        held_for_s: j.held_for_s,
    });
    Ok(report)
}

async fn route(
    state: &AppState,
    caller: &Identity,
    from: &str,
    trust: Trust,
    req: &InjectRequest,
    msg_id: MessageId,
) -> Result<InjectResponse, ApiError> {
    let config = state.config();
    if req.hops > config.limits.max_hops {
        let e = ApiError::new(
            StatusCode::LOOP_DETECTED,
            "hop_limit",
            format!(
                "this jekt has been forwarded {} times, more than the limit of {}",
                req.hops, config.limits.max_hops
            ),
        );
        return Err(refused(state, caller, req, "hop_limit", e).await);
    }
    if caller.is_limited(&config.limits)
        && let Err(r) = state.limiter().check(from, req.target_agent.as_str())
    {
        return Err(refused(state, caller, req, "rate_limited", r.into()).await);
    }
    let (agent, record) = match state.agents().resolve(&req.target_agent, req.exact_target) {
        Resolution::Pane { agent, record } => (agent, Some(record)),
        // Known here but offline: it may be running on a peer now, or on
        // another machine (the relay); if neither, it is held here.
        Resolution::Offline { agent } => {
            if let Some(done) = forward(state, caller, from, trust, req, &agent).await? {
                return Ok(done);
            }
            match queue_at_relay(state, caller, from, trust, req, &agent, msg_id).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(agent = %agent, error = %e.message, "relay failed; holding the jekt here");
                }
            }
            (agent, None)
        }
        Resolution::NotFound { known } => {
            let target = &req.target_agent;
            if let Some(done) = forward(state, caller, from, trust, req, target).await? {
                return Ok(done);
            }
            match queue_at_relay(state, caller, from, trust, req, target, msg_id).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => return Err(refused(state, caller, req, "relay_failed", e).await),
            }
            let names: Vec<&str> = known.iter().map(AgentId::as_str).collect();
            let e = ApiError::not_found(
                "agent_not_found",
                format!(
                    "agent not found: {} — known agents: {}",
                    req.target_agent,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
            .with_details(serde_json::json!({ "known_agents": names }));
            return Err(refused(state, caller, req, "not_found", e).await);
        }
        Resolution::Ambiguous(candidates) => {
            let e = ApiError::ambiguous_agent(&req.target_agent, &candidates);
            return Err(refused(state, caller, req, "ambiguous", e).await);
        }
    };
    check_policy(state, caller, req, &agent).await?;
    if let Some(r) = &record {
        check_shell(state, caller, req, from, trust, &agent, r).await?;
    }

    let j = Jekt {
        from,
        to: &agent,
        trust,
        delivery: match caller {
            Identity::Peer => Delivery::Channel,
            Identity::Relay => Delivery::Wan,
            Identity::Admin | Identity::Agent(_) => Delivery::Host,
        },
        tier: effective_tier(req.tier, &req.message),
        priority: req.priority.unwrap_or_default(),
        msg_id,
        body: &req.message,
        accepted_ms: now_ms(),
        held_for_s: None,
    };
    let record = match record {
        // Behind a backlog of held jekts, wait in line.
        Some(r) if state.held().count(&agent) == 0 => r,
        _ => return hold::hold(state, caller, req, &j).await,
    };

    let max_wait = match (j.priority, req.wait_for_idle) {
        (Priority::Urgent, _) | (_, IdleWait::No) => None,
        (_, IdleWait::Default) => Some(config.jekt.idle_max_wait_ms),
        (_, IdleWait::UpToMs(ms)) => Some(ms),
    };
    let waited = match max_wait {
        Some(max) => {
            record
                .pane
                .wait_idle(
                    Duration::from_millis(config.jekt.idle_quiet_ms),
                    Duration::from_millis(max),
                )
                .await
        }
        None => Duration::ZERO,
    };
    // While it waited, the program in the pane may have become a shell.
    if max_wait.is_some() {
        check_shell(state, caller, req, from, trust, &agent, &record).await?;
    }

    let report = match paste(state, &record, &j).await {
        Ok(r) => r,
        Err(e) => return Err(refused(state, caller, req, "failed", term_error(&agent, e)).await),
    };
    state
        .audit(
            AuditRecord::new(caller.actor(), "jekt", Some(agent.as_str()), "delivered")
                .body(&req.message)
                .detail(format!(
                    "msg_id={} from={} trust={trust} tier={} bracketed={} waited_ms={}",
                    j.msg_id,
                    agentbus_proto::jekt::marker_field(from),
                    j.tier,
                    report.bracketed,
                    waited.as_millis()
                )),
        )
        .await;
    Ok(InjectResponse {
        outcome: InjectOutcome::Delivered,
        msg_id: j.msg_id,
        target_agent: agent.clone(),
        source_agent: from.to_string(),
        block_id: Some(record.block),
        trust,
        tier: j.tier,
        delivery: j.delivery,
        bracketed: report.bracketed,
        waited_ms: waited.as_millis() as u64,
        duplicate: false,
    })
}

/// The allow-list, for senders holding an agent token here.
async fn check_policy(
    state: &AppState,
    caller: &Identity,
    req: &InjectRequest,
    agent: &AgentId,
) -> Result<(), ApiError> {
    match caller {
        Identity::Agent(me) if !policy_allows(&state.config().policy, me, agent) => {
            let e = ApiError::forbidden(format!("the policy does not allow {me} to jekt {agent}"));
            Err(refused(state, caller, req, "forbidden", e).await)
        }
        _ => Ok(()),
    }
}

/// Shells: a pane whose foreground program is one of these runs a jekt
/// as a command line, whatever its provider says.
const SHELLS: [&str; 20] = [
    "sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "pdksh", "yash", "tcsh", "csh", "ash",
    "busybox", "nu", "elvish", "xonsh", "pwsh", "rc", "osh", "ysh",
];

fn is_shell(name: &str) -> bool {
    SHELLS.contains(&name.trim_start_matches('-'))
}

/// Whether `record` is a shell pane: opened as one, or with a shell
/// reading its terminal now, whatever its provider says. The process
/// tracker tells: every process of the pane in the terminal's foreground
/// process group is a shell (a shell running a program in the foreground
/// waits for it; the program reads what is typed). tmux tells for its
/// panes.
pub(crate) async fn is_shell_pane(record: &PaneRecord) -> bool {
    if record.provider == Provider::Shell {
        return true;
    }
    // The common case costs one look: a foreground led by a program that
    // is not a shell is that program's.
    let Some(leader) = record.pane.foreground_program().await else {
        return false;
    };
    if !is_shell(&leader) {
        return false;
    }
    // A shell leads it. tmux tells no more; for a PTY of our own, the
    // tracker tells whether the shell runs a program in its own group.
    let (Some(group), Some(pid)) = (record.pane.foreground_group(), record.pane.pid()) else {
        return true;
    };
    let tree = tokio::task::spawn_blocking(move || crate::tracker::tree(Some(pid)))
        .await
        .map(|t| t.processes)
        .unwrap_or_default();
    tree.iter()
        .filter(|p| p.pgrp == group)
        .all(|p| is_shell(&p.comm))
}

/// Refuses (403, audited) a jekt this sender may not type into `record`
/// because it is a shell pane.
async fn check_shell(
    state: &AppState,
    caller: &Identity,
    req: &InjectRequest,
    from: &str,
    trust: Trust,
    agent: &AgentId,
    record: &PaneRecord,
) -> Result<(), ApiError> {
    match shell_refusal(state, record, caller, from, trust).await {
        None => Ok(()),
        Some(why) => {
            let e = ApiError::forbidden(format!(
                "{agent} is a shell pane, where a jekt runs as a command; {why}"
            ));
            Err(refused(state, caller, req, "forbidden", e).await)
        }
    }
}

/// Why this sender may not jekt `record`, if it is a shell pane and the
/// sender may not run commands there; `None` if it may.
pub(crate) async fn shell_refusal(
    state: &AppState,
    record: &PaneRecord,
    caller: &Identity,
    from: &str,
    trust: Trust,
) -> Option<String> {
    let why = may_jekt_shell(&state.config().policy, caller, from, trust).err()?;
    is_shell_pane(record).await.then_some(why)
}

/// A jekt into a shell runs a command. The instance key (this one's, or a
/// peer's: the same user) may; a proven agent sender (here, vouched for by
/// a peer, or authenticated by the relay) needs `policy.shell_jekt_senders`
/// to name it; an unproven sender from the relay never may.
fn may_jekt_shell(
    policy: &PolicyConfig,
    caller: &Identity,
    from: &str,
    trust: Trust,
) -> Result<(), String> {
    let named = |who: &str| policy.shell_jekt_senders.iter().any(|s| s == who);
    match caller {
        Identity::Admin => Ok(()),
        Identity::Peer if !trust.is_proven() => Ok(()),
        Identity::Relay if !trust.is_proven() => Err(format!(
            "a sender the relay did not authenticate ({}) may never jekt it",
            agentbus_proto::jekt::marker_field(from)
        )),
        Identity::Agent(_) | Identity::Peer | Identity::Relay if named(from) => Ok(()),
        _ => Err(format!(
            "agent senders may jekt it only if policy.shell_jekt_senders names the sender ({})",
            agentbus_proto::jekt::marker_field(from)
        )),
    }
}

/// Hands the jekt to the relay for an agent on another machine.
/// `Ok(None)`: no relay is set, or the jekt came from the relay.
async fn queue_at_relay(
    state: &AppState,
    caller: &Identity,
    from: &str,
    trust: Trust,
    req: &InjectRequest,
    agent: &AgentId,
    msg_id: MessageId,
) -> Result<Option<InjectResponse>, ApiError> {
    if *caller == Identity::Relay || state.poller().target().is_none() {
        return Ok(None);
    }
    check_policy(state, caller, req, agent).await?;
    let tier = effective_tier(req.tier, &req.message);
    let item = RelaySend {
        id: msg_id,
        from: from.to_string(),
        to: agent.clone(),
        kind: RelayKind::Jekt,
        body: req.message.clone(),
        thread_id: None,
        reply_to: None,
        tier: Some(tier),
        priority: req.priority,
        origin_trust: Some(trust),
    };
    let Some(sent) = crate::poller::hand_over(state, &item).await? else {
        return Ok(None);
    };
    state
        .audit(
            AuditRecord::new(caller.actor(), "jekt", Some(agent.as_str()), "queued")
                .body(&req.message)
                .detail(format!(
                    "msg_id={msg_id} relay_seq={} trust={trust}",
                    sent.seq
                )),
        )
        .await;
    Ok(Some(InjectResponse {
        outcome: InjectOutcome::Queued,
        msg_id,
        target_agent: agent.clone(),
        source_agent: from.to_string(),
        block_id: None,
        trust,
        tier,
        delivery: Delivery::Wan,
        bracketed: false,
        waited_ms: 0,
        duplicate: sent.duplicate,
    }))
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
    caller: &Identity,
    from: &str,
    trust: Trust,
    req: &InjectRequest,
    agent: &AgentId,
) -> Result<Option<InjectResponse>, ApiError> {
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
    check_policy(state, caller, req, agent).await?;
    let body = InjectRequest {
        target_agent: agent.clone(),
        source_agent: AgentId::parse(from).ok(),
        message: req.message.clone(),
        request_id: req.request_id.clone(),
        priority: req.priority,
        tier: req.tier,
        wait_for_idle: req.wait_for_idle,
        hops: req.hops + 1,
        origin_trust: Some(trust),
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
        let e = ApiError::new(
            status,
            peer_code(&code),
            format!("the instance hosting {agent} refused: {message}"),
        );
        return Err(refused(state, caller, req, "forward_refused", e).await);
    }
    let mut done: InjectResponse = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    if done.outcome == InjectOutcome::Delivered {
        done.outcome = InjectOutcome::Forwarded;
    }
    done.delivery = Delivery::Channel;
    state
        .audit(
            AuditRecord::new(caller.actor(), "jekt", Some(agent.as_str()), "forwarded")
                .body(&req.message)
                .detail(format!(
                    "msg_id={} peer={} trust={trust}",
                    done.msg_id, entry.local_url
                )),
        )
        .await;
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowRule;

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
            let trust = who.sender_vouched(Some(&carol), Some(claim)).unwrap().1;
            assert_eq!(trust, got, "{who:?} vouching {claim:?}");
        }
    }
}
