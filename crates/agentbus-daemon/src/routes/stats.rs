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
    let live = state.live_counts();
    let (senders, pairs) = state.limiter().tracked();
    Json(serde_json::json!({
        "agents": state.agent_list().len(),
        "panes": live.panes,
        "panes_running": live.panes_running,
        "held_jekts": live.held_jekts,
        "reads_waiting": live.reads_waiting,
        "jekts_in_flight": live.jekts_in_flight,
        // The daemon's own event logger is one subscriber.
        "event_subscribers": live.event_subscribers,
        "rate_limit_senders": senders,
        "rate_limit_pairs": pairs,
        "app_api_connections": live.app_api_connections,
        "app_api_subscriptions": live.app_api_subscriptions,
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
