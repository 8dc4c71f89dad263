//! The internal event bus: typed events fanned out to subscribers.
//!
//! Publishing never waits. Each subscriber has a bounded window of
//! `events.channel_capacity` events; one that falls further behind is not
//! allowed to hold memory or block the publisher: its next receive returns
//! [`Received::Lagged`] with the number of events it missed, then carries
//! on from the oldest event still buffered.
//!
//! History: an event published with `persist: N` is also written to the
//! store, which keeps the newest N per (type, scope). agentbus's own
//! events keep `events.persist_builtin` each, except `message:received`
//! (the mailbox itself is the durable record of mail).
//!
//! A pane's output (`agent:output`, see [`crate::output_events`]) goes on
//! a channel of its own, [`OUTPUT_CAPACITY`] events deep, and is never
//! kept: a flood of output neither pushes other events out of the main
//! channel's window nor reaches the history, and only the App API
//! subscriptions that ask for it receive it.

use crate::auth::Identity;
use crate::error::{ApiError, check_range};
use crate::state::AppState;
use agentbus_proto::api::PublishEventRequest;
use agentbus_proto::event::{Event, EventKind, check_custom_type, check_scope};
use agentbus_store::Store;
use axum::http::StatusCode;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Output events buffered for a subscriber of `agent:output` (each up to
/// 16 KiB of output) before it is told it lagged.
pub const OUTPUT_CAPACITY: usize = 256;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    output: broadcast::Sender<Arc<Event>>,
    taps: Arc<crate::output_events::Taps>,
    store: Option<Store>,
    persist_builtin: u32,
}

/// What a subscriber gets.
#[derive(Debug, Clone)]
pub enum Received {
    Event(Arc<Event>),
    /// This many events were dropped for this subscriber.
    Lagged(u64),
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl EventBus {
    /// A bus that keeps no history.
    pub fn new(capacity: usize) -> Self {
        Self::with_history(capacity, None, 0)
    }

    pub fn with_history(capacity: usize, store: Option<Store>, persist_builtin: u32) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            output: broadcast::channel(OUTPUT_CAPACITY).0,
            taps: Arc::default(),
            store,
            persist_builtin,
        }
    }

    /// Stamps and publishes one of agentbus's own events.
    pub fn publish(&self, kind: EventKind) -> Arc<Event> {
        let keep = match kind {
            EventKind::MessageReceived { .. } | EventKind::AgentStatus { .. } => 0,
            _ => self.persist_builtin,
        };
        self.emit(Event::new(kind), keep)
    }

    /// Publishes a prepared event (a client's), keeping `persist` of its
    /// kind per scope in history.
    pub fn emit(&self, event: Event, persist: u32) -> Arc<Event> {
        let event = Arc::new(event);
        if let EventKind::AgentOutput { .. } = event.kind {
            // Live only: no history, and only its own subscribers.
            let _ = self.output.send(event.clone());
            return event;
        }
        if persist > 0
            && let Some(store) = &self.store
            && let Ok(json) = serde_json::to_string(&*event)
        {
            // Queued now; the commit is not awaited (history is a record,
            // not a delivery guarantee), so the future is dropped.
            drop(store.persist_event(
                event.kind.type_name().to_string(),
                event.scopes.clone(),
                json,
                event.ts_ms,
                persist,
            ));
        }
        // No subscriber is not an error: the event simply has no audience.
        let _ = self.tx.send(event.clone());
        event
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// A subscription to `agent:output` events, which [`Self::subscribe`]
    /// never carries. Panes publish them only while
    /// [`crate::output_events::Taps::want`] says someone wants them.
    pub fn subscribe_output(&self) -> Subscription {
        Subscription {
            rx: self.output.subscribe(),
        }
    }

    /// The panes' output taps.
    pub fn taps(&self) -> &crate::output_events::Taps {
        &self.taps
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Subscription {
    /// The next event or lag notice; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Largest `data` of a published event, serialized.
const MAX_EVENT_DATA: usize = 64 * 1024;
const MAX_SCOPES: usize = 16;

pub fn bad_event(m: String) -> ApiError {
    ApiError::bad_request("invalid_event", m)
}

/// Checks and publishes a client's event (HTTP `POST /v1/events` and the
/// App API's `eventpublish`).
pub fn publish_custom(
    state: &AppState,
    caller: &Identity,
    req: PublishEventRequest,
) -> Result<Arc<Event>, ApiError> {
    check_custom_type(&req.event_type).map_err(bad_event)?;
    if req.scopes.len() > MAX_SCOPES {
        return Err(bad_event(format!("at most {MAX_SCOPES} scopes")));
    }
    for s in &req.scopes {
        check_scope(s).map_err(bad_event)?;
    }
    let size = serde_json::to_vec(&req.data)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_EVENT_DATA {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("event data may be at most {MAX_EVENT_DATA} bytes"),
        ));
    }
    let max = state.config().events.max_persist;
    if req.persist > max {
        return Err(bad_event(format!("persist may be at most {max}")));
    }
    let event = Event::custom(req.event_type, req.scopes, req.data, caller.actor());
    Ok(state.events().emit(event, req.persist))
}

/// The newest `limit` events of `event_type` in `scope`, oldest first.
pub async fn read_history(
    state: &AppState,
    event_type: String,
    scope: String,
    limit: i64,
) -> Result<Vec<Event>, ApiError> {
    check_range("limit", limit, 1..=10_000)?;
    check_scope(&scope).map_err(bad_event)?;
    if event_type.is_empty() || event_type.len() > 64 {
        return Err(bad_event("type must be 1-64 characters".into()));
    }
    let rows = state
        .read_store(move |s| s.event_history(&event_type, &scope, limit as u32))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| serde_json::from_str(&r.json).ok())
        .collect())
}

/// Logs every event at debug level; a lag is a warning. Runs for the
/// daemon's life.
pub async fn log_events(mut sub: Subscription) {
    while let Some(r) = sub.recv().await {
        match r {
            Received::Event(e) => {
                tracing::debug!(event = e.kind.type_name(), scopes = ?e.scopes, "event")
            }
            Received::Lagged(n) => tracing::warn!(missed = n, "event logger fell behind"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentbus_proto::AgentId;

    fn ev(i: usize) -> EventKind {
        EventKind::AgentUnregistered {
            agent_id: AgentId::parse(&format!("a{i}")).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged_and_the_publisher_never_waits() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..10 {
            bus.publish(ev(i));
        }
        match slow.recv().await {
            Some(Received::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        // It resumes with the oldest event still buffered.
        match slow.recv().await {
            Some(Received::Event(e)) => assert_eq!(e.kind, ev(6)),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn subscribers_see_events_in_order_and_can_leave() {
        let bus = EventBus::new(16);
        let mut a = bus.subscribe();
        let b = bus.subscribe();
        assert_eq!(bus.subscriber_count(), 2);
        drop(b);
        assert_eq!(bus.subscriber_count(), 1);
        bus.publish(ev(1));
        bus.publish(ev(2));
        for want in [ev(1), ev(2)] {
            match a.recv().await {
                Some(Received::Event(e)) => assert_eq!(e.kind, want),
                other => panic!("{other:?}"),
            }
        }
    }
}
