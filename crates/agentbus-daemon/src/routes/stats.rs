//! `GET /v1/stats`: counts that show whether anything is leaking — reads
//! waiting, jekts in flight, event subscribers, panes, held jekts,
//! rate-limit state.

use super::Table;
use crate::auth::AdminOnly;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::routing::get;

pub(super) fn add(t: Table) -> Table {
    t.add(&["GET"], "/v1/stats", false, get(stats))
}

async fn stats(State(state): State<AppState>, _: AdminOnly) -> Json<serde_json::Value> {
    let panes = state.agents().all_panes();
    let running = panes.iter().filter(|p| p.pane.is_running()).count();
    let agents = state.agent_list();
    let held: u64 = agents.iter().map(|a| u64::from(a.held_jekts)).sum();
    let (senders, pairs) = state.limiter().tracked();
    Json(serde_json::json!({
        "agents": agents.len(),
        "panes": panes.len(),
        "panes_running": running,
        "held_jekts": held,
        "reads_waiting": state.waiters().waiting(),
        "jekts_in_flight": state.jekts().delivering(),
        // The daemon's own event logger is one subscriber.
        "event_subscribers": state.events().subscriber_count(),
        "rate_limit_senders": senders,
        "rate_limit_pairs": pairs,
        "app_api_connections": state.app_api().connections.load(std::sync::atomic::Ordering::Relaxed),
        "app_api_subscriptions": state.app_api().subscriptions.load(std::sync::atomic::Ordering::Relaxed),
        "blocks": state.blocks().all().len(),
        "block_tasks": state.blocks().tasks(),
        // Panes whose output is published as `agent:output` right now.
        "output_taps": state.events().taps().count(),
        // Registry entries ignored because another user could have
        // written them (each reported once in the log).
        "registry_untrusted": state.registry().map_or(0, |r| r.untrusted()),
        // Refusals counted under a flood and not written one row each
        // (the audit log has one summary row per group and minute).
        "refusals_counted": state.refusals_counted(),
    }))
}
