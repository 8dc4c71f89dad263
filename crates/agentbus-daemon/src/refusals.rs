//! Refusals under a flood: counted, and sampled into the audit log.
//!
//! Every refusal is audited — but a flood of them (thousands of requests
//! without a credential a second, a token far over its rate) must not
//! cost a row each, or the database grows by hundreds of megabytes in
//! seconds. So refusals are grouped by (actor, kind, outcome): in each
//! minute the first few of a group are written in full, the rest only
//! counted, and when the minute ends one summary row says how many more
//! there were and the last target. Nothing is lost from the count;
//! accepted requests are audited one row each as always.

use agentbus_proto::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a group's window lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Refusals of one group written in full per window.
pub const WRITTEN_PER_WINDOW: u32 = 10;
/// Groups tracked at once; past this, refusals of new groups are counted
/// under one overflow group.
const MAX_GROUPS: usize = 4_096;

type Group = (String, String, String);

struct Window {
    started: Instant,
    written: u32,
    counted: u64,
    last_target: Option<String>,
}

/// A summary of refusals counted and not written one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub actor: String,
    pub kind: String,
    pub outcome: String,
    pub counted: u64,
    pub last_target: Option<String>,
    pub over_s: u64,
}

#[derive(Default)]
pub struct Sampler {
    // A std mutex: one map operation per refusal, never across an await.
    groups: Mutex<HashMap<Group, Window>>,
    counted_total: std::sync::atomic::AtomicU64,
}

impl Sampler {
    /// Whether this refusal is written in full (`false`: it is counted).
    pub fn admit(&self, actor: &str, kind: &str, outcome: &str, target: Option<&str>) -> bool {
        self.admit_at(actor, kind, outcome, target, Instant::now())
    }

    fn admit_at(
        &self,
        actor: &str,
        kind: &str,
        outcome: &str,
        target: Option<&str>,
        now: Instant,
    ) -> bool {
        let mut groups = lock(&self.groups);
        let mut key: Group = (actor.to_string(), kind.to_string(), outcome.to_string());
        if !groups.contains_key(&key) && groups.len() >= MAX_GROUPS {
            key = ("*".into(), kind.to_string(), outcome.to_string());
        }
        let w = groups.entry(key).or_insert(Window {
            started: now,
            written: 0,
            counted: 0,
            last_target: None,
        });
        if w.written < WRITTEN_PER_WINDOW {
            w.written += 1;
            return true;
        }
        w.counted += 1;
        w.last_target = target.map(|t| agentbus_proto::ids::escape_for_display(t, 120));
        self.counted_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        false
    }

    /// Summaries of the windows that have ended (all of them with
    /// `all`, at shutdown); those windows are closed.
    pub fn take(&self, all: bool) -> Vec<Summary> {
        self.take_at(Instant::now(), all)
    }

    fn take_at(&self, now: Instant, all: bool) -> Vec<Summary> {
        let mut groups = lock(&self.groups);
        let mut out = Vec::new();
        groups.retain(|(actor, kind, outcome), w| {
            let ended = all || now.duration_since(w.started) >= WINDOW;
            if ended && w.counted > 0 {
                out.push(Summary {
                    actor: actor.clone(),
                    kind: kind.clone(),
                    outcome: outcome.clone(),
                    counted: w.counted,
                    last_target: w.last_target.clone(),
                    over_s: now.duration_since(w.started).as_secs().max(1),
                });
            }
            !ended
        });
        out
    }

    /// Refusals counted and not written one by one, since start.
    pub fn counted(&self) -> u64 {
        self.counted_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Writes the summaries of ended windows every few seconds, and all of
/// them at shutdown.
pub async fn flush(state: crate::state::AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        state.write_refusal_summaries(stop).await;
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_written_a_few_times_and_counted_the_rest() {
        let s = Sampler::default();
        let t0 = Instant::now();
        let written = (0..10_000)
            .filter(|i| {
                s.admit_at(
                    "anonymous",
                    "auth",
                    "unauthorized",
                    Some(&format!("GET /x{i}")),
                    t0,
                )
            })
            .count();
        assert_eq!(written, WRITTEN_PER_WINDOW as usize);
        assert!(
            s.admit_at("agent:a", "auth", "unauthorized", None, t0),
            "groups are apart"
        );
        assert!(s.take_at(t0 + Duration::from_secs(1), false).is_empty());
        let sums = s.take_at(t0 + WINDOW, false);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[0].counted, 10_000 - WRITTEN_PER_WINDOW as u64);
        assert_eq!(sums[0].last_target.as_deref(), Some("\"GET /x9999\""));
        // A new window writes in full again.
        assert!(s.admit_at("anonymous", "auth", "unauthorized", None, t0 + WINDOW));
        assert_eq!(s.counted(), 10_000 - WRITTEN_PER_WINDOW as u64);
    }

    #[test]
    fn the_groups_are_bounded() {
        let s = Sampler::default();
        let t0 = Instant::now();
        for i in 0..(MAX_GROUPS + 100) {
            for _ in 0..=WRITTEN_PER_WINDOW {
                s.admit_at(&format!("agent:{i}"), "rpc", "forbidden", None, t0);
            }
        }
        let groups = lock(&s.groups).len();
        assert!(groups <= MAX_GROUPS + 1, "{groups}");
    }
}
