//! The retention sweeper: removes expired messages, expired held jekts,
//! old event history and old audit entries.
//!
//! It deletes in batches of `retention.batch` rows, each batch its own
//! write job, so a sweep of a million rows is many short transactions
//! with other writers' jobs in between, never one long one.

use crate::state::AppState;
use agentbus_proto::now_ms;
use agentbus_store::Expiring;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

/// Runs one sweep of everything; returns rows deleted per kind, in the
/// order of [`Expiring::ALL`].
pub async fn sweep(state: &AppState) -> agentbus_store::Result<[usize; 4]> {
    let cfg = &state.config().retention;
    let now = now_ms();
    let mut deleted = [0usize; 4];
    for (n, what) in Expiring::ALL.into_iter().enumerate() {
        let before = match what {
            // Expiry times: gone once the time has passed.
            Expiring::Messages | Expiring::HeldJekts => now + 1,
            Expiring::Events => now - cfg.events_days as i64 * DAY_MS,
            Expiring::Audit => now - cfg.audit_days as i64 * DAY_MS,
        };
        loop {
            let gone = state.store().sweep(what, before, cfg.batch).await?;
            deleted[n] += gone;
            if gone < cfg.batch as usize {
                break;
            }
        }
    }
    if deleted[1] > 0 {
        // Expired held jekts are gone: recount from the store.
        let s = state.store().clone();
        if let Ok(Ok(counts)) = tokio::task::spawn_blocking(move || s.held_counts(now_ms())).await {
            state.held().reset(counts);
        }
    }
    state.waiters().prune();
    state.limiter().prune();
    Ok(deleted)
}

/// Sweeps every `retention.sweep_interval_s` until shutdown.
pub async fn run(state: AppState) {
    let every = Duration::from_secs(state.config().retention.sweep_interval_s);
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match sweep(&state).await {
            Ok([m, h, e, a]) if m + h + e + a > 0 => {
                tracing::info!(
                    messages = m,
                    held = h,
                    events = e,
                    audit = a,
                    "retention sweep"
                );
            }
            Ok(_) => {}
            // Closed under a running sweep: the daemon is shutting down.
            Err(agentbus_store::StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use agentbus_store::NewAudit;

    /// A daemon's state over `store`, with nothing else running.
    fn state_on(config: Config, store: &agentbus_store::Store, dir: &std::path::Path) -> AppState {
        AppState::new(
            config,
            "http://127.0.0.1:9".into(),
            store.clone(),
            "k",
            "f",
            None,
            crate::poller::Poller::new(dir, "test".into(), None),
        )
    }

    #[tokio::test]
    async fn old_audit_and_event_rows_go_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.retention.batch = 10;
        config.retention.audit_days = 1;
        config.retention.events_days = 1;
        let store = agentbus_store::Store::open(&dir.path().join("r.db")).unwrap();
        let state = state_on(config, &store, dir.path());
        let old = now_ms() - 3 * DAY_MS;
        for i in 0..25 {
            let ts = if i < 23 { old } else { now_ms() };
            store
                .append_audit(NewAudit {
                    ts_ms: ts,
                    actor: "admin".into(),
                    kind: "test".into(),
                    outcome: "ok".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            store
                .persist_event("t".into(), vec!["s".into()], "{}".into(), ts, 1000)
                .await
                .unwrap();
        }
        let [messages, held, events, audit] = sweep(&state).await.unwrap();
        assert_eq!((messages, held, events, audit), (0, 0, 23, 23));
        let left = store
            .query_audit(&agentbus_store::AuditQuery {
                limit: 100,
                kind: Some("test".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(left.len(), 2, "recent entries stay");
        store.close();
    }

    #[tokio::test]
    async fn a_closed_store_ends_the_sweeper_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let store = agentbus_store::Store::open(&dir.path().join("r.db")).unwrap();
        let state = state_on(Config::default(), &store, dir.path());
        store.close();
        // No shutdown signal: the closed store alone ends it, instead of
        // a warning at every tick.
        tokio::time::timeout(Duration::from_secs(10), run(state))
            .await
            .expect("the sweeper ends once the store is closed");
    }
}
