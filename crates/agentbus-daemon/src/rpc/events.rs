//! `event*`: publish, subscribe (push or pull), unsubscribe, history.
//!
//! A push subscription sends `{"method":"eventrecv","params":{event,
//! "sub_id"}}` for each match. A subscription to `agent:output` reads the
//! bus's output channel (no other subscription sees those events) and,
//! while it lives, has the panes it names tapped
//! ([`crate::output_events`]); it needs, besides `eventsub` on its scopes,
//! `agent.output` on each agent and block it names: it reads what that
//! method reads. Events never wait for a slow socket: one
//! that finds the connection's queue full is dropped and counted, and a
//! `{"method":"lagged","params":{"sub_id","missed"}}` notice goes out as
//! soon as there is room. A pull subscription keeps the newest
//! `app_api.pull_queue` events for `eventrecv` and counts what it drops.

use super::methods::{Ctx, Family, NoParams, Params, event_scope_target, missing};
use super::protocol::{RpcError, notification};
use super::scope::{self, Target};
use super::session::Sub;
use crate::events::Received;
use crate::state::AppState;
use agentbus_proto::api::PublishEventRequest;
use agentbus_proto::event::{Event, check_scope};
use agentbus_proto::sync::lock;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishParams {
    event: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    persist: u32,
}

impl Params for PublishParams {
    /// Publishing to an agent's or a block's scope reaches it.
    fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
        Ok(self
            .scopes
            .iter()
            .map(|s| event_scope_target(state, s))
            .collect())
    }
}

pub async fn publish(ctx: Ctx, p: PublishParams) -> Result<Arc<Event>, RpcError> {
    let req = PublishEventRequest {
        event_type: p.event,
        scopes: p.scopes,
        data: p.data,
        persist: p.persist,
    };
    Ok(crate::events::publish_custom(
        &ctx.state,
        ctx.identity(),
        req,
    )?)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Push,
    Pull,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubParams {
    /// An event type, or `*` for every type.
    event: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allscopes: bool,
    #[serde(default)]
    mode: Mode,
}

impl Params for SubParams {
    fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
        let mut out: Vec<Target> = self
            .scopes
            .iter()
            .map(|s| event_scope_target(state, s))
            .collect();
        if self.allscopes {
            out.push(Target::AllEventScopes);
        }
        Ok(out)
    }
}

/// Events a pull subscription holds for `eventrecv`.
pub struct PullQueue {
    events: Mutex<(VecDeque<Arc<Event>>, u64)>,
    cap: usize,
    ready: Notify,
}

impl PullQueue {
    fn push(&self, e: Arc<Event>) {
        {
            let mut q = lock(&self.events);
            if q.0.len() == self.cap {
                q.0.pop_front();
                q.1 += 1;
            }
            q.0.push_back(e);
        }
        self.ready.notify_one();
    }

    fn missed(&self, n: u64) {
        let mut q = lock(&self.events);
        q.1 += n;
    }

    fn take(&self, max: usize) -> (Vec<Arc<Event>>, u64) {
        let mut q = lock(&self.events);
        let n = max.min(q.0.len());
        let events = q.0.drain(..n).collect();
        (events, std::mem::take(&mut q.1))
    }
}

/// Most subscriptions one socket may hold.
const MAX_SUBS_PER_SOCKET: usize = 256;

pub async fn subscribe(ctx: Ctx, p: SubParams) -> Result<Value, RpcError> {
    if p.scopes.is_empty() && !p.allscopes {
        return Err(missing("eventsub needs scopes, or allscopes: true"));
    }
    if p.event.is_empty() || p.event.len() > 64 {
        return Err(crate::events::bad_event("event must be 1-64 characters (or *)".into()).into());
    }
    for s in &p.scopes {
        check_scope(s).map_err(crate::events::bad_event)?;
    }
    let output = p.event == OUTPUT;
    if output {
        may_read_output(&ctx, &p)?;
    }
    let session = ctx.session.clone();
    if lock(&session.subs).len() >= MAX_SUBS_PER_SOCKET {
        return Err(RpcError::app(
            "TOO_MANY_SUBSCRIPTIONS",
            format!(
                "a socket may hold {MAX_SUBS_PER_SOCKET} subscriptions; unsubscribe some (eventunsub) first"
            ),
        ));
    }
    let sub_id = session.next_sub_id();
    let cancel = session.cancel.child_token();
    let pull = (p.mode == Mode::Pull).then(|| {
        Arc::new(PullQueue {
            events: Mutex::new((VecDeque::new(), 0)),
            // Output chunks are large (up to 16 KiB each): fewer kept.
            cap: if output {
                ctx.state.config().app_api.pull_queue.min(OUTPUT_PULL_QUEUE)
            } else {
                ctx.state.config().app_api.pull_queue
            },
            ready: Notify::new(),
        })
    });
    {
        let mut subs = lock(&session.subs);
        subs.insert(
            sub_id.clone(),
            Sub {
                cancel: cancel.clone(),
                pull: pull.clone(),
            },
        );
    }
    // Subscribed (and the panes tapped) before answering: nothing
    // published after the answer is missed.
    let mut bus = if output {
        ctx.state.events().subscribe_output()
    } else {
        ctx.state.events().subscribe()
    };
    let want = output.then(|| crate::output_events::Taps::want(&ctx.state, &p.scopes, p.allscopes));
    // Counted until the task ends, however it ends.
    let live = crate::state::Live::new(&ctx.state.app_api().subscriptions);
    let id = sub_id.clone();
    let mode = if pull.is_some() { "pull" } else { "push" };
    let event_type = (p.event != "*").then_some(p.event);
    let scopes = p.scopes;
    let all = p.allscopes;
    tokio::spawn(async move {
        let _live = live;
        // Wanted as long as this task runs.
        let _want = want;
        let mut missed: u64 = 0;
        let lag_notice = |missed: &mut u64| {
            let lag = notification("lagged", json!({ "sub_id": id, "missed": *missed }));
            if session.try_send(&lag) {
                *missed = 0;
            }
        };
        loop {
            let r = tokio::select! {
                r = bus.recv() => r,
                _ = cancel.cancelled() => break,
                // Events were dropped and none has come since: retry the
                // notice until there is room for it.
                _ = tokio::time::sleep(Duration::from_millis(100)), if missed > 0 => {
                    lag_notice(&mut missed);
                    continue;
                }
            };
            let e = match r {
                Some(Received::Event(e)) => e,
                Some(Received::Lagged(n)) => {
                    match &pull {
                        Some(q) => q.missed(n),
                        None => missed += n,
                    }
                    continue;
                }
                None => break,
            };
            let wanted = e.matches(event_type.as_deref(), None)
                && (all || e.scopes.iter().any(|s| scopes.contains(s)));
            if !wanted {
                continue;
            }
            if let Some(q) = &pull {
                q.push(e);
                continue;
            }
            if missed > 0 {
                lag_notice(&mut missed);
                if missed > 0 {
                    missed += 1;
                    continue;
                }
            }
            let mut params = serde_json::to_value(&*e).unwrap_or_default();
            params["sub_id"] = json!(id);
            if !session.try_send(&notification("eventrecv", params)) {
                missed += 1;
            }
        }
    });
    Ok(json!({ "sub_id": sub_id, "mode": mode }))
}

/// The type of a pane's output events.
const OUTPUT: &str = "agent:output";

/// Most `agent:output` events a pull subscription keeps (about 1 MiB).
const OUTPUT_PULL_QUEUE: usize = 64;

/// A pane's output through events is what `agent.output` reads: an agent
/// token needs that method's scope on every agent and block the
/// subscription names (every pane, for `allscopes`), not only `eventsub`.
fn may_read_output(ctx: &Ctx, p: &SubParams) -> Result<(), RpcError> {
    let (Some(me), Some(scopes)) = (ctx.me(), &ctx.caller.scopes) else {
        return Ok(());
    };
    let mut targets: Vec<Target> = p
        .scopes
        .iter()
        .map(|s| event_scope_target(&ctx.state, s))
        .filter(|t| !matches!(t, Target::EventScope(_)))
        .collect();
    if p.allscopes {
        targets.push(Target::AllEventScopes);
    }
    if targets.is_empty() {
        return Ok(());
    }
    scope::check(scopes, me, "agent.output", Family::Agent, &targets).map_err(|missing| {
        RpcError::app(
            "FORBIDDEN",
            format!(
                "{} lacks scope {missing}: agent:output events are a pane's output, \
                 so reading them needs agent.output on the agent or block as well as eventsub",
                ctx.caller.describe()
            ),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubParams {
    sub_id: String,
}

impl Params for UnsubParams {}

fn no_sub(id: &str) -> RpcError {
    RpcError::app(
        "SUBSCRIPTION_NOT_FOUND",
        format!(
            "no subscription {} on this connection",
            agentbus_proto::ids::escape_for_display(id, 40)
        ),
    )
}

pub async fn unsubscribe(ctx: Ctx, p: UnsubParams) -> Result<Value, RpcError> {
    let removed = lock(&ctx.session.subs).remove(&p.sub_id);
    match removed {
        Some(sub) => {
            sub.cancel.cancel();
            Ok(json!({ "sub_id": p.sub_id, "removed": true }))
        }
        None => Err(no_sub(&p.sub_id)),
    }
}

pub async fn unsubscribe_all(ctx: Ctx, _: NoParams) -> Result<Value, RpcError> {
    let subs: Vec<(String, Sub)> = lock(&ctx.session.subs).drain().collect();
    for (_, s) in &subs {
        s.cancel.cancel();
    }
    Ok(json!({ "removed": subs.len() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    event: String,
    scope: String,
    maxitems: Option<i64>,
}

impl Params for HistoryParams {
    fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
        Ok(vec![event_scope_target(state, &self.scope)])
    }
}

pub async fn read_history(ctx: Ctx, p: HistoryParams) -> Result<Value, RpcError> {
    if p.event == OUTPUT {
        return Ok(json!({
            "events": [],
            "live_only": true,
            "note": "agent:output events are never kept in history: subscribe with eventsub to get them as they come, or read the screen with agent.output",
        }));
    }
    let events =
        crate::events::read_history(&ctx.state, p.event, p.scope, p.maxitems.unwrap_or(100))
            .await?;
    Ok(json!({ "events": events }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecvParams {
    sub_id: String,
    max: Option<i64>,
    /// Wait this long for an event when none is queued (at most 60,000).
    wait_ms: Option<i64>,
}

impl Params for RecvParams {}

/// Takes queued events of a pull subscription.
pub async fn receive(ctx: Ctx, p: RecvParams) -> Result<Value, RpcError> {
    let max = p.max.unwrap_or(100);
    crate::error::check_range("max", max, 1..=1000)?;
    let wait = p.wait_ms.unwrap_or(0);
    crate::error::check_range("wait_ms", wait, 0..=60_000)?;
    let queue = {
        let subs = lock(&ctx.session.subs);
        let sub = subs.get(&p.sub_id).ok_or_else(|| no_sub(&p.sub_id))?;
        sub.pull.clone().ok_or_else(|| {
            RpcError::app(
                "NOT_PULL",
                format!(
                    "{} is a push subscription: its events arrive as eventrecv notifications",
                    p.sub_id
                ),
            )
        })?
    };
    let (mut events, mut missed) = queue.take(max as usize);
    if events.is_empty() && wait > 0 {
        let cancel: CancellationToken = ctx.session.cancel.clone();
        tokio::select! {
            _ = queue.ready.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = cancel.cancelled() => {}
        }
        let (more, m) = queue.take(max as usize);
        events = more;
        missed += m;
    }
    Ok(json!({ "sub_id": p.sub_id, "events": events, "missed": missed }))
}
