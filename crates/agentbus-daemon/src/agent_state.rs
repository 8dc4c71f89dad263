//! `agent:state` events: what a list of agents shows of each (state,
//! readiness, pid, held jekts, unread mail, last activity), published when
//! it changes, so a dashboard stays current from the event stream alone.
//!
//! A task looks every [`TICK`] while anyone but the daemon's own logger
//! listens to the bus, and not at all otherwise. A change of anything but
//! the last activity is published at the next look; output alone (a
//! program printing) at most every [`ACTIVITY_EVERY_MS`] per agent. When
//! the first listener comes, every agent is published once.

use crate::state::{AppState, shutdown_requested};
use agentbus_proto::api::{AgentInfo, AgentState};
use agentbus_proto::event::EventKind;
use agentbus_proto::{AgentId, BlockId, now_ms};
use std::collections::HashMap;
use std::time::Duration;

pub const TICK: Duration = Duration::from_millis(500);
pub const ACTIVITY_EVERY_MS: i64 = 2_000;

/// What is compared between looks (the last activity apart).
#[derive(Debug, Clone, PartialEq)]
struct View {
    block_id: Option<BlockId>,
    state: AgentState,
    readiness: Option<String>,
    pid: Option<u32>,
    held_jekts: u32,
    unread_mail: u64,
}

struct Seen {
    view: View,
    activity: Option<i64>,
    published_ms: i64,
}

impl View {
    fn of(a: &AgentInfo) -> View {
        View {
            block_id: a.block_id,
            state: a.state,
            readiness: a.readiness.clone(),
            pid: a.pid,
            held_jekts: a.held_jekts,
            unread_mail: a.unread_mail.unwrap_or(0),
        }
    }
}

/// Whether an agent seen as `now` (last activity `activity`) is news.
fn is_news(prev: Option<&Seen>, view: &View, activity: Option<i64>, now: i64) -> bool {
    match prev {
        None => true,
        Some(p) if p.view != *view => true,
        Some(p) => p.activity != activity && now - p.published_ms >= ACTIVITY_EVERY_MS,
    }
}

/// Looks at the agents until shutdown.
pub async fn run(state: AppState) {
    let mut seen: HashMap<AgentId, Seen> = HashMap::new();
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown_requested(&mut shutdown) => return,
        }
        // The daemon's own event logger is always there.
        if state.events().subscriber_count() <= 1 {
            seen.clear();
            continue;
        }
        let now = now_ms();
        let mut next = HashMap::new();
        for a in state.agent_list_with_mail().await {
            let view = View::of(&a);
            let prev = seen.remove(&a.agent_id);
            let entry = match prev {
                // Nothing new: what was last published stays the mark.
                Some(p) if !is_news(Some(&p), &view, a.last_activity_ms, now) => p,
                _ => {
                    state.events().publish(EventKind::AgentStatus {
                        agent_id: a.agent_id.clone(),
                        block_id: view.block_id,
                        state: view.state,
                        readiness: view.readiness.clone(),
                        pid: view.pid,
                        last_activity_ms: a.last_activity_ms,
                        held_jekts: view.held_jekts,
                        unread_mail: view.unread_mail,
                    });
                    Seen {
                        view,
                        activity: a.last_activity_ms,
                        published_ms: now,
                    }
                }
            };
            next.insert(a.agent_id, entry);
        }
        seen = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(held: u32) -> View {
        View {
            block_id: None,
            state: AgentState::Running,
            readiness: Some("ready".into()),
            pid: Some(7),
            held_jekts: held,
            unread_mail: 0,
        }
    }

    #[test]
    fn changes_are_news_at_once_and_activity_at_most_every_few_seconds() {
        let seen = Seen {
            view: view(0),
            activity: Some(100),
            published_ms: 1_000,
        };
        assert!(is_news(None, &view(0), None, 0), "first sight");
        assert!(is_news(Some(&seen), &view(1), Some(100), 1_001), "a change");
        assert!(
            !is_news(Some(&seen), &view(0), Some(100), 9_999),
            "nothing new"
        );
        assert!(
            !is_news(Some(&seen), &view(0), Some(200), 1_500),
            "output, too soon"
        );
        assert!(
            is_news(Some(&seen), &view(0), Some(200), 3_000),
            "output, later"
        );
    }
}
