//! What the relay needs from its storage, as a trait with two backends:
//! embedded SQLite ([`crate::sqlite`], one relay node, the default) and
//! NATS JetStream ([`crate::nats`], any number of relay nodes sharing one
//! JetStream).
//!
//! The trait owns the three things that make the agent-bus protocol lossless,
//! because only the storage can do them right for its topology:
//! - **timestamps**: every message gets a `ts` strictly greater than every
//!   earlier one (so greater than every earlier `ts` of its queue);
//! - **`now` of a fetch**: a value such that any message not returned has
//!   a `ts` above it — taken atomically with the fetch, so a message
//!   accepted meanwhile cannot fall behind a client's cursor;
//! - **wake-ups**: a watch per recipient that bumps when mail for it is
//!   stored, whichever node stored it.

use agentbus_proto::MessageId;
use agentbus_proto::relay::{RelayEnvelope, RelayKind};
use agentbus_proto::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage error: {0}")]
    Backend(String),
    /// This node cannot reach its storage now; another node may.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl From<agentbus_store::StoreError> for StorageError {
    fn from(e: agentbus_store::StoreError) -> Self {
        StorageError::Backend(e.to_string())
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Backend(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A message to store.
#[derive(Debug, Clone)]
pub struct Append {
    pub id: MessageId,
    pub channel: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub kind: RelayKind,
    /// Extension fields (thread, tier, priority, ...) as stored.
    pub meta: Meta,
}

/// Extension fields carried along with a message.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<agentbus_proto::ThreadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<agentbus_proto::jekt::Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<agentbus_proto::jekt::Priority>,
    #[serde(default)]
    pub sender_verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<agentbus_proto::relay::SenderSignature>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Appended {
    /// Durably stored.
    Stored { seq: i64, ts: f64 },
    /// A message with this id was stored before; nothing new was.
    Duplicate { seq: i64, ts: f64 },
    /// The queue holds `count` messages, its cap: nothing was stored.
    QueueFull { count: u64 },
}

/// The answer to a agent-bus `/recv`.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `ts > since`, oldest first, at most `max` (and `max_bytes`).
    pub messages: Vec<(f64, String, String)>,
    /// See the module docs. When the answer was cut short (at `max` or
    /// `max_bytes`), the `ts` of its last message.
    pub now: f64,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    /// One agent: sends as itself, receives its own queue.
    Agent(String),
    /// A daemon: sends for its agents, polls and acks as a consumer.
    Instance(String),
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub owner: TokenOwner,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// The relay's storage. Implementations are cheap to clone (shared).
pub trait Storage: Clone + Send + Sync + 'static {
    /// Stores a message unless its id was seen or its queue is full;
    /// resolves once it is durable.
    fn append(&self, m: Append) -> impl Future<Output = Result<Appended>> + Send;

    /// Agent-bus fetch: `channel`/`to` messages with `ts > since`, at
    /// most `max` of them and (past the first) at most `max_bytes` of
    /// bodies.
    fn fetch(
        &self,
        channel: &str,
        to: &str,
        since: f64,
        max: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Fetched>> + Send;

    /// Bumps whenever mail for `to` is stored (any channel).
    fn watch(&self, to: &str) -> watch::Receiver<u64>;

    /// Messages for `agents` after `consumer`'s cursor for each, oldest
    /// first per agent, at most `max` in all and (past the first) at most
    /// `max_bytes` of bodies (default channel).
    fn poll(
        &self,
        consumer: &str,
        agents: &[String],
        max: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<RelayEnvelope>>> + Send;

    /// Moves `consumer`'s cursor for each agent up to the given seq.
    fn ack(
        &self,
        consumer: &str,
        acks: BTreeMap<String, i64>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Message counts per channel and recipient.
    fn inbox(&self)
    -> impl Future<Output = Result<BTreeMap<String, BTreeMap<String, u64>>>> + Send;

    /// Messages stored in all.
    fn stored(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes up to `batch` messages stored before `before_ms`.
    fn sweep(&self, before_ms: i64, batch: u32) -> impl Future<Output = Result<usize>> + Send;

    /// Binds `agents` to instance consumer `consumer` for `lease_ms` (or
    /// renews the binding), and releases the agents it held that are not
    /// among them: an instance polls for every agent it hosts, every
    /// time. An agent bound to another consumer whose lease runs is not
    /// bound. Returns the agents bound to `consumer` now, in the order
    /// given. Writes only when a binding changes or nears its end.
    fn claim(
        &self,
        consumer: &str,
        agents: &[String],
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The consumer `agent` is bound to, while its lease runs.
    fn holder(&self, agent: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// The agents bound to `consumer` whose lease runs.
    fn bound(&self, consumer: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Tokens: by the SHA-256 of the secret.
    fn token_owner(&self, digest: &str) -> impl Future<Output = Result<Option<TokenOwner>>> + Send;
    fn create_token(
        &self,
        name: &str,
        owner: TokenOwner,
        digest: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn revoke_token(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
    fn tokens(&self) -> impl Future<Output = Result<Vec<(String, TokenInfo)>>> + Send;

    /// Drops wake channels nobody waits on (the retention sweep calls it).
    fn prune_waiters(&self);

    /// Called once the relay stopped serving.
    fn close(&self) {}

    /// Why this node cannot store now (its storage is out of reach), if so.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// The wake channel of each recipient somebody waits on.
#[derive(Default)]
pub struct Waiters(Mutex<HashMap<String, watch::Sender<u64>>>);

impl Waiters {
    pub fn watch(&self, to: &str) -> watch::Receiver<u64> {
        // A std mutex: one map operation per use.
        lock(&self.0)
            .entry(to.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn notify(&self, to: &str) {
        if let Some(tx) = lock(&self.0).get(to) {
            tx.send_modify(|v| *v += 1);
        }
    }

    pub fn prune(&self) {
        lock(&self.0).retain(|_, tx| tx.receiver_count() > 0);
    }
}

/// What a claim must change, given the current bindings (agent →
/// (consumer, expires_ms)): agents to bind (or renew), agents of
/// `consumer` to release, and the agents bound to `consumer` once done.
pub fn plan_claim(
    current: &HashMap<String, (String, i64)>,
    consumer: &str,
    agents: &[String],
    now: i64,
    lease_ms: i64,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut bind, mut bound) = (Vec::new(), Vec::new());
    for a in agents {
        match current.get(a) {
            Some((who, exp)) if who != consumer && *exp > now => {}
            Some((who, exp)) if who == consumer && *exp - now > lease_ms / 2 => {
                bound.push(a.clone())
            }
            _ => {
                bind.push(a.clone());
                bound.push(a.clone());
            }
        }
    }
    let release = current
        .iter()
        .filter(|(a, (who, _))| who == consumer && !agents.contains(a))
        .map(|(a, _)| a.clone())
        .collect();
    (bind, release, bound)
}

/// The kind as stored.
pub fn kind_text(k: RelayKind) -> &'static str {
    match k {
        RelayKind::Plain => "plain",
        RelayKind::Jekt => "jekt",
        RelayKind::Message => "message",
    }
}

pub fn kind_of(s: &str) -> RelayKind {
    match s {
        "jekt" => RelayKind::Jekt,
        "message" => RelayKind::Message,
        _ => RelayKind::Plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_free_and_lapsed_agents_renews_its_own_and_releases_the_rest() {
        let held = |who: &str, exp: i64| (who.to_string(), exp);
        let current = HashMap::from([
            ("x-live".to_string(), held("instance:x", 10_000)),
            ("x-lapsed".to_string(), held("instance:x", 400)),
            ("mine-fresh".to_string(), held("instance:y", 2_000)),
            ("mine-ageing".to_string(), held("instance:y", 900)),
            ("mine-dropped".to_string(), held("instance:y", 2_000)),
        ]);
        let asked: Vec<String> = ["x-live", "x-lapsed", "mine-fresh", "mine-ageing", "free"]
            .map(String::from)
            .to_vec();
        let (mut bind, release, bound) = plan_claim(&current, "instance:y", &asked, 500, 1_000);
        bind.sort();
        assert_eq!(bind, ["free", "mine-ageing", "x-lapsed"]);
        assert_eq!(release, ["mine-dropped"]);
        assert_eq!(bound, ["x-lapsed", "mine-fresh", "mine-ageing", "free"]);
    }
}
