//! Shared state of one running instance: a cheap-clone handle.

use crate::agents::Agents;
use crate::auth::Auth;
use crate::blocks::Blocks;
use crate::config::Config;
use crate::error::ApiError;
use crate::events::EventBus;
use crate::hold::HeldIndex;
use crate::jekt::InFlight;
use crate::limits::Limiter;
use crate::mailbox::{DeliveredMarks, Waiters};
use crate::poller::Poller;
use crate::registry::Registry;
use crate::tracker::Tracker;
use agentbus_proto::api::AgentInfo;
use agentbus_proto::{AgentId, now_ms};
use agentbus_store::{NewAudit, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// Live App API connections and subscriptions (`/v1/stats`), so a leak
/// shows.
#[derive(Default)]
pub struct AppApiCounts {
    pub connections: Arc<AtomicUsize>,
    pub subscriptions: Arc<AtomicUsize>,
}

/// What is live in the daemon at one moment (see
/// [`AppState::live_counts`]).
#[derive(Debug, Clone, Copy)]
pub struct LiveCounts {
    pub panes: usize,
    pub panes_running: usize,
    pub held_jekts: usize,
    pub jekts_in_flight: usize,
    pub reads_waiting: usize,
    pub app_api_connections: usize,
    pub app_api_subscriptions: usize,
    /// The daemon's own event logger is one.
    pub event_subscribers: usize,
}

/// Counts one live thing (a connection, a subscription) while it exists.
pub struct Live(Arc<AtomicUsize>);

impl Live {
    pub fn new(counter: &Arc<AtomicUsize>) -> Live {
        counter.fetch_add(1, Ordering::Relaxed);
        Live(counter.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    // Swapped whole by `setvar` (crate::vars); readers take the current
    // one at the moment they use it.
    config: std::sync::Mutex<Arc<Config>>,
    /// The config as the file, environment and flags give it, and the
    /// live settings changed over it (`crate::vars`).
    base_config: Config,
    vars: std::sync::Mutex<crate::vars::Saved>,
    url: String,
    store: Store,
    auth: Auth,
    agents: Agents,
    events: EventBus,
    jekts: InFlight,
    limiter: Limiter,
    waiters: Waiters,
    marks: DeliveredMarks,
    held: HeldIndex,
    blocks: Blocks,
    tracker: Tracker,
    app_api: AppApiCounts,
    refusals: crate::refusals::Sampler,
    metrics: crate::metrics::Metrics,
    // Serializes pane creation so two opens of one name cannot both start
    // a program. An async mutex: spawning is awaited while it is held.
    open_lock: tokio::sync::Mutex<()>,
    shutdown: watch::Sender<bool>,
    registry: Option<Registry>,
    poller: Poller,
    // One pooled client for calls to peers (and the relay).
    http: reqwest::Client,
    conns: crate::conn::Conns,
    ui: crate::ui::Ui,
}

/// Resolves once shutdown has begun. The borrow guard `wait_for` returns
/// is dropped here, not held by the caller's future (it is not `Send`).
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await.map(|_| ());
}

/// An audit entry being built. Bodies contribute only length and hash.
pub struct AuditRecord {
    entry: NewAudit,
    /// A refusal: sampled under a flood (see [`crate::refusals`]).
    refusal: bool,
}

impl AuditRecord {
    pub fn new(actor: impl Into<String>, kind: &str, target: Option<&str>, outcome: &str) -> Self {
        Self {
            entry: NewAudit {
                ts_ms: now_ms(),
                actor: actor.into(),
                kind: kind.into(),
                target: target.map(Into::into),
                outcome: outcome.into(),
                ..Default::default()
            },
            refusal: false,
        }
    }

    /// Marks this a refusal: under a flood, refusals are sampled (see
    /// [`crate::refusals`]).
    pub fn refusal(mut self) -> Self {
        self.refusal = true;
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.entry.body_len = Some(body.len() as i64);
        self.entry.body_sha256 = Some(hex::encode(Sha256::digest(body.as_bytes())));
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.entry.detail = Some(detail.into());
        self
    }
}

impl AppState {
    pub fn new(
        config: Config,
        url: String,
        store: Store,
        instance_key: &str,
        forward_token: &str,
        registry: Option<Registry>,
        poller: Poller,
    ) -> Self {
        // The relay poller's client (the one that may cross a network),
        // also used for instances on this machine. Its settings were
        // checked when the config was loaded.
        let http = config.relay.client_tls().client().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the relay's TLS settings could not be used");
            crate::tls::default_client()
        });
        let events = EventBus::with_history(
            config.events.channel_capacity,
            Some(store.clone()),
            config.events.persist_builtin,
        );
        let limiter = Limiter::new(config.limits.clone())
            .with_call_rate(config.app_api.calls_per_s, config.app_api.calls_burst);
        let (shutdown, _) = watch::channel(false);
        let mut saved = crate::vars::load(&config.daemon.data_dir);
        let mut live = crate::vars::apply(&config, &saved);
        if let Err(e) = live.validate() {
            tracing::warn!(error = %e, "the saved live settings do not fit this config together; the config's values are used");
            saved.clear();
            live = config.clone();
        }
        let ui = crate::ui::Ui::new(&config.daemon.data_dir);
        Self {
            inner: Arc::new(Inner {
                config: std::sync::Mutex::new(Arc::new(live)),
                base_config: config,
                vars: std::sync::Mutex::new(saved),
                url,
                store,
                auth: Auth::new(instance_key, forward_token),
                agents: Agents::default(),
                events,
                jekts: InFlight::default(),
                limiter,
                waiters: Waiters::default(),
                marks: DeliveredMarks::default(),
                held: HeldIndex::default(),
                blocks: Blocks::default(),
                tracker: Tracker::default(),
                app_api: AppApiCounts::default(),
                refusals: crate::refusals::Sampler::default(),
                metrics: crate::metrics::Metrics::default(),
                open_lock: tokio::sync::Mutex::new(()),
                shutdown,
                registry,
                poller,
                http,
                conns: crate::conn::Conns::default(),
                ui,
            }),
        }
    }

    /// The config as it is now (live settings may change it: `setvar`).
    pub fn config(&self) -> Arc<Config> {
        agentbus_proto::sync::lock(&self.inner.config).clone()
    }

    /// The config without the live settings changed over it.
    pub fn base_config(&self) -> &Config {
        &self.inner.base_config
    }

    /// The live settings changed with `setvar`.
    pub fn saved_vars(&self) -> crate::vars::Saved {
        agentbus_proto::sync::lock(&self.inner.vars).clone()
    }

    /// Changes live setting `name` (`null`: back to the config's value),
    /// saves it, and puts the new config in place.
    pub fn set_var(&self, name: &str, value: Value) -> Result<(), crate::vars::VarError> {
        let mut saved = agentbus_proto::sync::lock(&self.inner.vars);
        let mut next = saved.clone();
        if value.is_null() {
            let var = crate::vars::find(name)
                .ok_or_else(|| crate::vars::VarError::Unknown(name.to_string()))?;
            next.remove(var.name);
        } else {
            let var = crate::vars::check(name, &value)?;
            next.insert(var.name.to_string(), value);
        }
        let live = crate::vars::apply(&self.inner.base_config, &next);
        live.validate().map_err(|e| {
            crate::vars::VarError::Invalid(
                crate::vars::find(name).map_or("", |v| v.name),
                e.to_string(),
            )
        })?;
        crate::vars::save(&self.inner.base_config.daemon.data_dir, &next)?;
        *saved = next;
        *agentbus_proto::sync::lock(&self.inner.config) = Arc::new(live);
        Ok(())
    }

    /// This instance's base URL, as given to panes.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn agents(&self) -> &Agents {
        &self.inner.agents
    }

    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    pub(crate) fn jekts(&self) -> &InFlight {
        &self.inner.jekts
    }

    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    pub fn waiters(&self) -> &Waiters {
        &self.inner.waiters
    }

    pub fn marks(&self) -> &DeliveredMarks {
        &self.inner.marks
    }

    /// The shared registry; `None` only in unit tests.
    pub fn registry(&self) -> Option<&Registry> {
        self.inner.registry.as_ref()
    }

    pub fn poller(&self) -> &Poller {
        &self.inner.poller
    }

    /// Whether `value` is a secret this daemon holds: a credential it
    /// accepts (instance key, forward token, any agent token, the metrics
    /// token) or the token it presents to the relay.
    pub fn holds_secret(&self, value: &str) -> bool {
        !value.is_empty()
            && (self.auth().is_credential(value)
                || self.metrics().is_token(value)
                || self.poller().target().is_some_and(|t| t.token == value)
                || self.config().relay.token.as_deref() == Some(value))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub fn held(&self) -> &HeldIndex {
        &self.inner.held
    }

    /// Every agent of this instance, as `/v1/agents` and `agent.list` show them.
    pub fn agent_list(&self) -> Vec<AgentInfo> {
        self.agents()
            .list(self.config().jekt.idle_quiet_ms, self.held())
    }

    /// What is live now, for `/v1/stats` and the `/metrics` gauges.
    pub fn live_counts(&self) -> LiveCounts {
        let panes = self.agents().all_panes();
        let load = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        LiveCounts {
            panes: panes.len(),
            panes_running: panes.iter().filter(|p| p.pane.is_running()).count(),
            held_jekts: self.held().total(),
            jekts_in_flight: self.jekts().delivering(),
            reads_waiting: self.waiters().waiting(),
            app_api_connections: load(&self.inner.app_api.connections),
            app_api_subscriptions: load(&self.inner.app_api.subscriptions),
            event_subscribers: self.events().subscriber_count(),
        }
    }

    /// [`Self::agent_list`] with each agent's unread mail counted.
    pub async fn agent_list_with_mail(&self) -> Vec<AgentInfo> {
        let mut agents = self.agent_list();
        let open = self
            .read_store(|s| s.open_mailboxes())
            .await
            .unwrap_or_default();
        let open: std::collections::HashMap<String, i64> = open.into_iter().collect();
        for a in &mut agents {
            a.unread_mail = Some(open.get(a.agent_id.as_str()).copied().unwrap_or(0) as u64);
        }
        agents
    }

    /// [`Self::agent_info`] with the agent's unread mail counted.
    pub async fn agent_info_with_mail(&self, id: &AgentId) -> Option<AgentInfo> {
        let mut info = self.agent_info(id)?;
        let who = id.clone();
        let open = self
            .read_store(move |s| s.open_messages(&who))
            .await
            .unwrap_or(0);
        info.unread_mail = Some(open as u64);
        Some(info)
    }

    pub fn agent_info(&self, id: &AgentId) -> Option<AgentInfo> {
        self.agents()
            .info(id, self.config().jekt.idle_quiet_ms, self.held())
    }

    pub fn blocks(&self) -> &Blocks {
        &self.inner.blocks
    }

    /// The SSH connections (`conn*` methods).
    pub fn conns(&self) -> &crate::conn::Conns {
        &self.inner.conns
    }

    /// The browser dashboard's sessions.
    pub fn ui(&self) -> &crate::ui::Ui {
        &self.inner.ui
    }

    pub fn tracker(&self) -> &Tracker {
        &self.inner.tracker
    }

    pub fn app_api(&self) -> &AppApiCounts {
        &self.inner.app_api
    }

    /// The counters of `/metrics`, and the metrics token.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    pub(crate) fn open_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.open_lock
    }

    /// Tells long-lived connections (attached terminals) to finish.
    pub fn begin_shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Appends to the audit log. A failure is logged, not returned: the
    /// action it records has already happened.
    pub async fn audit(&self, record: AuditRecord) {
        let AuditRecord { entry, refusal } = record;
        if refusal {
            self.inner.metrics.refusal(&entry.kind);
        }
        if refusal
            && !self.inner.refusals.admit(
                &entry.actor,
                &entry.kind,
                &entry.outcome,
                entry.target.as_deref(),
            )
        {
            return;
        }
        self.append_audit(entry).await;
    }

    async fn append_audit(&self, entry: NewAudit) {
        if let Err(e) = self.inner.store.append_audit(entry).await {
            tracing::error!(error = %e, "failed to write an audit entry");
        }
    }

    pub async fn audit_refusal(&self, actor: &str, target: &str, outcome: &str, detail: &str) {
        self.audit(
            AuditRecord::new(actor, "auth", Some(target), outcome)
                .detail(detail)
                .refusal(),
        )
        .await;
    }

    /// Writes one audit row for each group of refusals that were counted
    /// and not written one by one (windows that ended; all with `all`).
    pub async fn write_refusal_summaries(&self, all: bool) {
        for s in self.inner.refusals.take(all) {
            let mut detail = format!(
                "{} more refusals like this in {} s, counted and not written one by one",
                s.counted, s.over_s
            );
            if let Some(t) = &s.last_target {
                detail.push_str(&format!("; the last was for {t}"));
            }
            let record = AuditRecord::new(s.actor, &s.kind, None, &s.outcome).detail(detail);
            self.append_audit(record.entry).await;
        }
    }

    /// Refusals counted and not written one by one, since start.
    pub fn refusals_counted(&self) -> u64 {
        self.inner.refusals.counted()
    }

    /// Runs a blocking store read off the async workers.
    pub async fn read_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> agentbus_store::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }
}
