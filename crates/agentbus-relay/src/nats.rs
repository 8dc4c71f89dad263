//! The relay's NATS JetStream storage: any number of relay nodes share one
//! JetStream (one server or a cluster) and keep nothing of their own, so
//! any node accepts a send and any node delivers it.
//!
//! What lives in JetStream, under a prefix `P` (`agentbus` by default):
//! - stream `P_MSGS`, subjects `P.m.<hex channel>.<hex recipient>`: every
//!   message as JSON, published with its id as `Nats-Msg-Id`, so a retried
//!   send is stored once within the stream's duplicate window (beyond it,
//!   the ids every node indexes answer it, and the receiving daemon drops
//!   an id it already delivered); `max_age` is the relay's retention;
//! - KV `P_cursors`: `<hex consumer>.<hex agent>` → the seq acked;
//! - KV `P_bindings`: `a.<hex agent>` → `{consumer, expires_ms}`, changed
//!   only by revision-checked writes, and `c.<hex consumer>` → the agents
//!   that consumer claimed last (a hint, each checked against `a.`);
//! - KV `P_tokens`: `d.<digest>` → the token, `n.<hex name>` → its digest.
//!
//! Each node follows the message stream with an ordered push consumer
//! (headers only: bodies are read when asked for, by direct get) and keeps
//! an index: the (seq, ts) of every message per queue, and the ids seen.
//! The server pushes each stored message to every node, so a long-poll on
//! one node wakes when another node stores its mail: nobody polls
//! JetStream.
//!
//! Timestamps: every node walks the stream in the same order and gives
//! message n `ts = max(JetStream's time for n, ts of n−1 nudged up)`, so
//! `ts` grows with the stream sequence and the nodes agree on it. A
//! fetch's `now` is the `ts` of the last message the node indexed:
//! anything it has not indexed yet comes later in the stream, so gets a
//! greater `ts` (no "now race"). A send is answered once JetStream
//! acknowledged it (stored on a quorum of replicas) and this node indexed
//! it, which also gives the `ts` the answer carries.

use crate::storage::{
    Append, Appended, Fetched, Meta, Result, Storage, StorageError, TokenInfo, TokenOwner, Waiters,
    kind_of, kind_text, plan_claim,
};
use agentbus_proto::MessageId;
use agentbus_proto::relay::{DEFAULT_CHANNEL, RelayEnvelope};
use agentbus_proto::sync::lock;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How to reach JetStream and lay out the relay's data there.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// One or more `nats://` (or `tls://`) URLs, comma-separated.
    pub urls: String,
    /// Replicas of the stream and buckets (1, 3 or 5 in a cluster).
    pub replicas: usize,
    /// Names the stream, the buckets and the subjects: several relays may
    /// share one NATS under different prefixes.
    pub prefix: String,
    /// Messages older than this are deleted by JetStream.
    pub retention: Duration,
    /// Most messages one (channel, recipient) queue may hold.
    pub queue_cap: u64,
    /// A PEM file of CAs to trust for `tls://` NATS URLs, beside the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// A relay node: follows the stream, and brings the retention and
    /// replicas of an existing stream and buckets to these options. Off
    /// for `agentbus relay token`, which only reads and writes tokens.
    pub serve: bool,
}

impl NatsOptions {
    pub fn new(urls: impl Into<String>) -> NatsOptions {
        NatsOptions {
            urls: urls.into(),
            replicas: 1,
            prefix: "agentbus".into(),
            retention: Duration::from_secs(7 * 86_400),
            queue_cap: 100_000,
            ca_file: None,
            serve: true,
        }
    }
}

/// A prefix is a NATS subject token and part of stream and bucket names.
pub fn prefix_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 32
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `urls` without any `user:password@`, for errors and logs.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://…@{}", &u[..s], &u[at + 1..]),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn backend(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("{what}: {e}"))
}

/// How long a send waits for this node to index what JetStream stored.
const INDEX_WAIT: Duration = Duration::from_secs(10);
/// How long a send waits for its message to be indexed before the
/// follower is taken as stuck and started again.
const FOLLOWER_STALL: Duration = Duration::from_secs(2);
/// Bodies read from JetStream at once.
const READ_AHEAD: usize = 32;
/// JetStream drops a message whose id it saw this recently.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

type QueueKey = (String, String);

#[derive(Default)]
struct Index {
    /// Per (channel, recipient): (seq, ts), oldest first.
    queues: HashMap<QueueKey, VecDeque<(u64, f64)>>,
    ids: HashMap<MessageId, (u64, f64)>,
    last_seq: u64,
    last_ts: f64,
}

impl Index {
    fn apply(&mut self, seq: u64, stored_s: f64, key: QueueKey, id: Option<MessageId>) -> bool {
        if seq <= self.last_seq {
            return false;
        }
        let ts = stored_s.max(self.last_ts.next_up());
        self.last_seq = seq;
        self.last_ts = ts;
        self.queues.entry(key).or_default().push_back((seq, ts));
        if let Some(id) = id {
            self.ids.insert(id, (seq, ts));
        }
        true
    }

    /// Forgets what JetStream deleted (everything below `first_seq`).
    fn prune(&mut self, first_seq: u64) -> usize {
        let mut gone = 0;
        self.queues.retain(|_, q| {
            while q.front().is_some_and(|(s, _)| *s < first_seq) {
                q.pop_front();
                gone += 1;
            }
            !q.is_empty()
        });
        self.ids.retain(|_, (s, _)| *s >= first_seq);
        gone
    }
}

/// A message as stored in the stream.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    id: MessageId,
    channel: String,
    from: String,
    to: String,
    kind: String,
    body: String,
    #[serde(default)]
    meta: Meta,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Binding {
    consumer: String,
    expires_ms: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TokenRecord {
    name: String,
    kind: String,
    owner: String,
    created_ms: i64,
    #[serde(default)]
    revoked_ms: Option<i64>,
}

impl TokenRecord {
    fn owner(&self) -> TokenOwner {
        if self.kind == "instance" {
            TokenOwner::Instance(self.owner.clone())
        } else {
            TokenOwner::Agent(self.owner.clone())
        }
    }
}

#[derive(Clone)]
pub struct NatsStorage {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    stream: stream::Stream,
    subjects: String,
    cursors: kv::Store,
    bindings: kv::Store,
    tokens: kv::Store,
    queue_cap: u64,
    index: Mutex<Index>,
    /// The last stream seq indexed.
    indexed: watch::Sender<u64>,
    /// The follower's consumer is delivering.
    following: AtomicBool,
    /// When a stalled follower was last started again.
    restarted: Mutex<Option<std::time::Instant>>,
    waiters: Waiters,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(f) = lock(&self.follower).take() {
            f.abort();
        }
    }
}

fn hexed(s: &str) -> String {
    hex::encode(s.as_bytes())
}

fn unhexed(s: &str) -> Option<String> {
    String::from_utf8(hex::decode(s).ok()?).ok()
}

/// The value and revision of `key`, unless it is absent or deleted.
async fn live(store: &kv::Store, key: String, what: &str) -> Result<Option<(Bytes, u64)>> {
    let entry = store
        .entry(key)
        .await
        .map_err(|e| backend(&format!("cannot read {what}"), e))?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| (e.value, e.revision)))
}

/// The (channel, recipient) of a message subject under `subjects`.
fn queue_of(subjects: &str, subject: &str) -> Option<QueueKey> {
    let rest = subject.strip_prefix(subjects)?.strip_prefix('.')?;
    let (c, t) = rest.split_once('.')?;
    Some((unhexed(c)?, unhexed(t)?))
}

impl NatsStorage {
    /// Connects, creates (or adopts) the stream and buckets, and indexes
    /// the stream before returning.
    pub async fn connect(opts: &NatsOptions) -> Result<NatsStorage> {
        if !prefix_ok(&opts.prefix) {
            return Err(StorageError::Backend(format!(
                "bad NATS prefix {:?}: 1 to 32 of A-Z a-z 0-9 _ -",
                opts.prefix
            )));
        }
        let shown = redact_urls(&opts.urls);
        let addrs = opts
            .urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| backend(&format!("bad NATS URL in {shown}"), e))?;
        if addrs.is_empty() {
            return Err(StorageError::Backend("no NATS URL given".into()));
        }
        let mut connect = async_nats::ConnectOptions::new()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the connection to NATS; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    other => tracing::info!(event = %other, "NATS"),
                }
            })
            .name("agentbus-relay")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)));
        if let Some(ca) = &opts.ca_file {
            connect = connect.add_root_certificates(ca.clone());
        }
        let client = connect
            .connect(addrs)
            .await
            .map_err(|e| backend(&format!("cannot reach NATS at {shown}"), e))?;
        let js = jetstream::new(client);
        // A cluster starting beside its relay nodes elects its leaders for
        // a few seconds first: setting up is tried again until then.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let storage = loop {
            match Self::set_up(js.clone(), opts).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "JetStream is not ready yet; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        if opts.serve {
            storage.follow().await?;
        }
        Ok(storage)
    }

    /// Creates (or adopts) the stream and the buckets.
    async fn set_up(js: jetstream::Context, opts: &NatsOptions) -> Result<NatsStorage> {
        let p = &opts.prefix;
        let config = stream::Config {
            name: format!("{p}_MSGS"),
            subjects: vec![format!("{p}.m.>")],
            max_age: opts.retention,
            storage: stream::StorageType::File,
            num_replicas: opts.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| backend("cannot create the JetStream stream", e))?;
        let have = stream
            .info()
            .await
            .map_err(|e| backend("cannot read the JetStream stream", e))?
            .config
            .clone();
        if opts.serve
            && (have.max_age != config.max_age || have.num_replicas != config.num_replicas)
        {
            tracing::warn!(
                stream = config.name,
                retention_s = config.max_age.as_secs(),
                replicas = config.num_replicas,
                "changing the stream's retention and replicas to this node's (every relay node \
                 should be given the same)"
            );
            js.update_stream(config)
                .await
                .map_err(|e| backend("cannot update the JetStream stream", e))?;
        }
        // A bucket is a stream laid out as JetStream's KV expects. Made
        // here rather than by the client's KV helper, which asks the
        // account for limits in a form servers before 2.10 do not answer.
        // Reads go to the bucket's leader (no direct gets): a replica that
        // lags could show a revoked token as live or an old cursor.
        let mut stores = Vec::new();
        for name in ["cursors", "bindings", "tokens"] {
            let bucket = format!("{p}_{name}");
            let config = stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: opts.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: false,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            };
            let mut made = js
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| backend(&format!("cannot create the {name} bucket"), e))?;
            let have = made
                .info()
                .await
                .map_err(|e| backend(&format!("cannot read the {name} bucket"), e))?;
            if have.config.allow_direct || (opts.serve && have.config.num_replicas != opts.replicas)
            {
                js.update_stream(config)
                    .await
                    .map_err(|e| backend(&format!("cannot update the {name} bucket"), e))?;
            }
            stores.push(
                js.get_key_value(&bucket)
                    .await
                    .map_err(|e| backend(&format!("cannot open the {name} bucket"), e))?,
            );
        }
        let [cursors, bindings, tokens] = <[kv::Store; 3]>::try_from(stores)
            .unwrap_or_else(|_| unreachable!("three buckets were made"));
        let storage = NatsStorage {
            inner: Arc::new(Inner {
                js,
                stream,
                subjects: format!("{p}.m"),
                cursors,
                bindings,
                tokens,
                queue_cap: opts.queue_cap,
                index: Mutex::new(Index::default()),
                indexed: watch::channel(0).0,
                following: AtomicBool::new(false),
                restarted: Mutex::new(None),
                waiters: Waiters::default(),
                follower: Mutex::new(None),
            }),
        };
        Ok(storage)
    }

    /// Deletes the stream and buckets of `opts.prefix` (what a bench made).
    pub async fn remove(opts: &NatsOptions) -> Result<()> {
        // Not a node: nothing to index or reconfigure before deleting.
        let me = NatsStorage::connect(&NatsOptions {
            serve: false,
            ..opts.clone()
        })
        .await?;
        let p = &opts.prefix;
        let js = me.inner.js.clone();
        drop(me);
        for name in [
            format!("{p}_MSGS"),
            format!("KV_{p}_cursors"),
            format!("KV_{p}_bindings"),
            format!("KV_{p}_tokens"),
        ] {
            js.delete_stream(&name)
                .await
                .map_err(|e| backend(&format!("cannot delete {name}"), e))?;
        }
        Ok(())
    }

    fn subject(&self, channel: &str, to: &str) -> String {
        format!("{}.{}.{}", self.inner.subjects, hexed(channel), hexed(to))
    }

    /// The message stream's state (first and last sequence, count), as
    /// its leader tells it.
    async fn stream_state(&self) -> Result<stream::State> {
        Ok(self
            .inner
            .stream
            .get_info()
            .await
            .map_err(|e| backend("cannot read the JetStream stream", e))?
            .state)
    }

    /// Starts following the stream, and waits until everything stored
    /// before now is indexed.
    async fn follow(&self) -> Result<()> {
        let state = self.stream_state().await?;
        let last = state.last_sequence;
        if state.messages == 0 {
            // Empty, or everything expired: nothing to index; follow on
            // from its last sequence.
            lock(&self.inner.index).last_seq = last;
            self.inner.indexed.send_replace(last);
        }
        self.start_follower();
        // A long stream takes a while: wait as long as indexing moves.
        let mut rx = self.inner.indexed.subscribe();
        loop {
            if *rx.borrow_and_update() >= last {
                break;
            }
            // JetStream may be electing leaders (a node of its cluster
            // just died): its requests time out meanwhile.
            if tokio::time::timeout(Duration::from_secs(60), rx.changed())
                .await
                .is_err()
            {
                return Err(StorageError::Backend(format!(
                    "indexing the JetStream stream stalled before message {last}"
                )));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.inner.following.load(Ordering::Acquire) {
            if tokio::time::Instant::now() > deadline {
                return Err(StorageError::Backend(
                    "could not start following the JetStream stream".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// (Re)starts the task that follows the stream, from the next
    /// unindexed seq; a running one is stopped first.
    fn start_follower(&self) {
        let mut slot = lock(&self.inner.follower);
        if let Some(old) = slot.take() {
            old.abort();
        }
        // Before the new task runs: it says when it follows.
        self.inner.following.store(false, Ordering::Release);
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match Self::follow_once(&weak).await {
                    Ok(()) => delay = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, "following the JetStream stream failed; again shortly");
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        });
        *slot = Some(task);
    }

    /// Starts the follower again unless that was done within the last
    /// [`FOLLOWER_STALL`] (sends waiting together restart it once).
    fn restart_stalled_follower(&self) {
        {
            let mut last = lock(&self.inner.restarted);
            if last.is_some_and(|at| at.elapsed() < FOLLOWER_STALL) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        tracing::warn!("the stream follower fell behind; starting it again");
        self.start_follower();
    }

    /// One ordered consumer from the next unindexed seq, until it ends
    /// or the storage is dropped (it holds the storage only to apply a
    /// message, so dropping the last clone ends it).
    async fn follow_once(weak: &std::sync::Weak<Inner>) -> Result<()> {
        let Some(inner) = weak.upgrade() else {
            return Ok(());
        };
        let from = lock(&inner.index).last_seq + 1;
        let subjects = inner.subjects.clone();
        let consumer = inner
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: inner.js_client().new_inbox(),
                filter_subject: format!("{subjects}.>"),
                headers_only: true,
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| backend("cannot follow the stream", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| backend("cannot follow the stream", e))?;
        inner.following.store(true, Ordering::Release);
        drop(inner);
        let ended = |weak: &std::sync::Weak<Inner>| {
            if let Some(inner) = weak.upgrade() {
                inner.following.store(false, Ordering::Release);
            }
        };
        while let Some(m) = messages.next().await {
            let Some(inner) = weak.upgrade() else {
                return Ok(());
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    ended(weak);
                    return Err(backend("following the stream", e));
                }
            };
            let Ok(info) = m.info() else { continue };
            let seq = info.stream_sequence;
            if seq <= lock(&inner.index).last_seq {
                // The client recreated the consumer from the start (it
                // does before its first message): start again after what
                // is indexed instead of reading the stream again.
                ended(weak);
                return Ok(());
            }
            let stored_s = info.published.unix_timestamp_nanos() as f64 / 1e9;
            let Some(key) = queue_of(&subjects, m.subject.as_str()) else {
                tracing::warn!(subject = %m.subject, "a message on a subject the relay does not use");
                lock(&inner.index).last_seq = seq;
                inner.indexed.send_replace(seq);
                continue;
            };
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .and_then(|v| MessageId::parse(v.as_str()).ok());
            let to = key.1.clone();
            let fresh = lock(&inner.index).apply(seq, stored_s, key, id);
            if fresh {
                inner.indexed.send_replace(seq);
                inner.waiters.notify(&to);
            }
        }
        ended(weak);
        Ok(())
    }

    async fn indexed_up_to(&self, seq: u64, wait: Duration) -> Result<()> {
        let mut rx = self.inner.indexed.subscribe();
        match tokio::time::timeout(wait, rx.wait_for(|s| *s >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StorageError::Backend(format!(
                "this relay node has not indexed message {seq} of the JetStream stream yet"
            ))),
        }
    }

    /// The records at `seqs`, in order; `None` for one JetStream deleted.
    /// Read from any replica first; one that does not have it yet (a
    /// replica may lag the leader the index was told by) sends the read
    /// to the stream's leader. JetStream deletes only from the front of
    /// the stream (`max_age`), so the leader's "not found" means deleted
    /// only below the stream's first message: at or past it, the message
    /// is there but not readable yet (a leader just elected may still be
    /// applying what it was sent), and the read fails to be tried again,
    /// rather than let a reader's `since` pass over it.
    /// A message that is not a relay record, or whose record names
    /// another queue than its subject (written by something else with
    /// access to the stream), is skipped and logged.
    async fn records(&self, seqs: &[u64]) -> Result<Vec<Option<Record>>> {
        let gets = seqs.iter().map(|&s| async move {
            let m = match self.inner.stream.direct_get(s).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => {
                    match self.inner.stream.get_raw_message(s).await {
                        Ok(m) => m,
                        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                            let first = self.stream_state().await?.first_sequence;
                            if s < first {
                                return Ok(None);
                            }
                            return Err(StorageError::Unavailable(format!(
                                "message {s} of the JetStream stream is not readable yet; try again"
                            )));
                        }
                        Err(e) => return Err(backend("cannot read a message", e)),
                    }
                }
                Err(e) => return Err(backend("cannot read a message", e)),
            };
            match serde_json::from_slice::<Record>(&m.payload) {
                Ok(r) if m.subject.as_str() == self.subject(&r.channel, &r.to) => Ok(Some(r)),
                Ok(_) => {
                    tracing::warn!(seq = s, "a record whose queue is not its subject's; skipped");
                    Ok(None)
                }
                Err(e) => {
                    tracing::warn!(seq = s, error = %e, "a message that is not a relay record; skipped");
                    Ok(None)
                }
            }
        });
        futures_util::future::try_join_all(gets).await
    }

    /// Bodies for `picked` (seq, ts) in order, read ahead in small groups
    /// and cut once past `max_bytes` (the first always comes). The bool
    /// says it was cut.
    async fn load(
        &self,
        picked: &[(u64, f64)],
        max_bytes: usize,
    ) -> Result<(Vec<(u64, f64, Record)>, bool)> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for group in picked.chunks(READ_AHEAD) {
            let seqs: Vec<u64> = group.iter().map(|p| p.0).collect();
            for ((seq, ts), record) in group.iter().zip(self.records(&seqs).await?) {
                let Some(r) = record else { continue };
                bytes = bytes.saturating_add(r.from.len() + r.body.len());
                if !out.is_empty() && bytes > max_bytes {
                    return Ok((out, true));
                }
                out.push((*seq, *ts, r));
            }
        }
        Ok((out, false))
    }

    async fn binding(&self, agent: &str) -> Result<Option<(Binding, u64)>> {
        let found = live(
            &self.inner.bindings,
            format!("a.{}", hexed(agent)),
            "a binding",
        )
        .await?;
        Ok(found.and_then(|(v, rev)| Some((serde_json::from_slice(&v).ok()?, rev))))
    }

    async fn claimed_by(&self, consumer: &str) -> Result<(Vec<String>, Option<u64>)> {
        let key = format!("c.{}", hexed(consumer));
        Ok(match live(&self.inner.bindings, key, "a binding").await? {
            Some((v, rev)) => (serde_json::from_slice(&v).unwrap_or_default(), Some(rev)),
            None => (Vec::new(), None),
        })
    }

    /// Writes `key` only if it is still at `revision` (`None`: absent).
    /// `Ok(false)`: it changed meanwhile.
    async fn put_if(
        store: &kv::Store,
        key: &str,
        value: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<bool> {
        match revision {
            Some(r) => match store.update(key, value.into(), r).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(backend("cannot write to a bucket", e)),
            },
            None => match store.create(key, value.into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(backend("cannot write to a bucket", e)),
            },
        }
    }

    async fn token_record(&self, digest: &str) -> Result<Option<(TokenRecord, u64)>> {
        let found = live(&self.inner.tokens, format!("d.{digest}"), "a token").await?;
        Ok(found.and_then(|(v, rev)| Some((serde_json::from_slice(&v).ok()?, rev))))
    }

    async fn digest_of(&self, name: &str) -> Result<Option<(String, u64)>> {
        let found = live(&self.inner.tokens, format!("n.{}", hexed(name)), "a token").await?;
        Ok(found.and_then(|(v, rev)| Some((String::from_utf8(v.to_vec()).ok()?, rev))))
    }
}

impl Inner {
    fn js_client(&self) -> async_nats::Client {
        self.js.client()
    }
}

fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Storage for NatsStorage {
    async fn append(&self, m: Append) -> Result<Appended> {
        // The client would queue a publish until it reconnects, after the
        // send was answered with an error: refuse it now instead.
        if let Some(why) = self.unavailable() {
            return Err(StorageError::Unavailable(why));
        }
        let key = (m.channel.clone(), m.to.clone());
        {
            let ix = lock(&self.inner.index);
            if let Some(&(seq, ts)) = ix.ids.get(&m.id) {
                return Ok(Appended::Duplicate {
                    seq: to_i64(seq),
                    ts,
                });
            }
            let count = ix.queues.get(&key).map_or(0, VecDeque::len) as u64;
            if count >= self.inner.queue_cap {
                return Ok(Appended::QueueFull { count });
            }
        }
        let subject = self.subject(&m.channel, &m.to);
        let id = m.id;
        let record = Record {
            id,
            channel: m.channel,
            from: m.from,
            to: m.to,
            kind: kind_text(m.kind).into(),
            body: m.body,
            meta: m.meta,
        };
        let payload = Bytes::from(
            serde_json::to_vec(&record).map_err(|e| backend("cannot encode a message", e))?,
        );
        let ack = self
            .inner
            .js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .message_id(id.to_string()),
            )
            .await
            .map_err(|e| backend("cannot publish to JetStream", e))?
            .await
            .map_err(|e| backend("JetStream did not acknowledge a message", e))?;
        if self
            .indexed_up_to(ack.sequence, FOLLOWER_STALL)
            .await
            .is_err()
        {
            // JetStream has it; this node's follower has not: its consumer
            // may be gone with a NATS node, unnoticed until its heartbeats
            // are missed. A new one starts after what is indexed.
            self.restart_stalled_follower();
            self.indexed_up_to(ack.sequence, INDEX_WAIT).await?;
        }
        let Some(&(seq, ts)) = lock(&self.inner.index).ids.get(&id) else {
            return Err(StorageError::Backend(format!(
                "message {id} was stored as {} but is not in the index",
                ack.sequence
            )));
        };
        let seq = to_i64(seq);
        Ok(if ack.duplicate {
            Appended::Duplicate { seq, ts }
        } else {
            Appended::Stored { seq, ts }
        })
    }

    async fn fetch(
        &self,
        channel: &str,
        to: &str,
        since: f64,
        max: u32,
        max_bytes: usize,
    ) -> Result<Fetched> {
        // Taken with the page, under one lock: anything not in it comes
        // later in the stream.
        let (picked, more, indexed_ts) = {
            let ix = lock(&self.inner.index);
            let key = (channel.to_string(), to.to_string());
            match ix.queues.get(&key) {
                Some(q) => {
                    let start = q.partition_point(|(_, ts)| *ts <= since);
                    let picked: Vec<(u64, f64)> =
                        q.range(start..).take(max as usize).copied().collect();
                    (picked, q.len() - start > max as usize, ix.last_ts)
                }
                None => (Vec::new(), false, ix.last_ts),
            }
        };
        if let Some(why) = self.unavailable() {
            return Err(StorageError::Unavailable(why));
        }
        let (page, cut) = self.load(&picked, max_bytes).await?;
        let now = if cut {
            // Cut by bytes: come back right after the last returned.
            page.last().map_or(since, |p| p.1)
        } else if more {
            // Cut at `max`: right after the last picked (returned, or
            // deleted by JetStream since it was indexed).
            picked.last().map_or(since, |p| p.1)
        } else {
            // Everything indexed was looked at. Never below `since`: a
            // node that lags another must not send a client back.
            page.last()
                .map_or(indexed_ts, |p| p.1.max(indexed_ts))
                .max(since)
        };
        Ok(Fetched {
            messages: page
                .into_iter()
                .map(|(_, ts, r)| (ts, r.from, r.body))
                .collect(),
            now,
        })
    }

    fn watch(&self, to: &str) -> watch::Receiver<u64> {
        self.inner.waiters.watch(to)
    }

    async fn poll(
        &self,
        consumer: &str,
        agents: &[String],
        max: u32,
        max_bytes: usize,
    ) -> Result<Vec<RelayEnvelope>> {
        if let Some(why) = self.unavailable() {
            return Err(StorageError::Unavailable(why));
        }
        let cursors = futures_util::future::try_join_all(agents.iter().map(|a| async move {
            let v = self
                .inner
                .cursors
                .get(format!("{}.{}", hexed(consumer), hexed(a)))
                .await
                .map_err(|e| backend("cannot read a cursor", e))?;
            Ok::<u64, StorageError>(
                v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                    .unwrap_or(0),
            )
        }))
        .await?;
        let picked: Vec<(u64, f64)> = {
            let ix = lock(&self.inner.index);
            let mut picked = Vec::new();
            for (agent, cursor) in agents.iter().zip(cursors) {
                let left = (max as usize).saturating_sub(picked.len());
                if left == 0 {
                    break;
                }
                let key = (DEFAULT_CHANNEL.to_string(), agent.clone());
                if let Some(q) = ix.queues.get(&key) {
                    let start = q.partition_point(|(s, _)| *s <= cursor);
                    picked.extend(q.range(start..).take(left).copied());
                }
            }
            picked
        };
        let (page, _) = self.load(&picked, max_bytes).await?;
        page.into_iter()
            .map(|(seq, ts, r)| {
                Ok(RelayEnvelope {
                    id: r.id,
                    seq: to_i64(seq),
                    ts,
                    channel: r.channel,
                    from: r.from,
                    to: r.to,
                    kind: kind_of(&r.kind),
                    body: r.body,
                    thread_id: r.meta.thread_id,
                    reply_to: r.meta.reply_to,
                    tier: r.meta.tier,
                    priority: r.meta.priority,
                    sender_verified: r.meta.sender_verified,
                    signature: r.meta.signature,
                })
            })
            .collect()
    }

    async fn ack(&self, consumer: &str, acks: BTreeMap<String, i64>) -> Result<()> {
        for (agent, seq) in acks {
            let key = format!("{}.{}", hexed(consumer), hexed(&agent));
            // Only forward, whoever else writes meanwhile.
            let mut done = false;
            for _ in 0..16 {
                let entry = live(&self.inner.cursors, key.clone(), "a cursor").await?;
                let have: i64 = entry
                    .as_ref()
                    .and_then(|(v, _)| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                let value = seq.to_string().into_bytes();
                if have >= seq
                    || Self::put_if(&self.inner.cursors, &key, value, entry.map(|(_, r)| r)).await?
                {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(StorageError::Backend(format!(
                    "the cursor of {agent} kept changing; not acked"
                )));
            }
        }
        Ok(())
    }

    async fn inbox(&self) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
        let ix = lock(&self.inner.index);
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for ((channel, to), q) in &ix.queues {
            if !q.is_empty() {
                out.entry(channel.clone())
                    .or_default()
                    .insert(to.clone(), q.len() as u64);
            }
        }
        Ok(out)
    }

    async fn stored(&self) -> Result<u64> {
        let ix = lock(&self.inner.index);
        Ok(ix.queues.values().map(|q| q.len() as u64).sum())
    }

    async fn sweep(&self, _before_ms: i64, _batch: u32) -> Result<usize> {
        // JetStream deletes by age itself (the stream's max_age); the index
        // forgets what it deleted.
        let first = self.stream_state().await?.first_sequence;
        Ok(lock(&self.inner.index).prune(first))
    }

    async fn claim(&self, consumer: &str, agents: &[String], lease_ms: i64) -> Result<Vec<String>> {
        let (before, list_rev) = self.claimed_by(consumer).await?;
        let mut names: Vec<&String> = agents.iter().chain(before.iter()).collect();
        names.sort();
        names.dedup();
        let found = futures_util::future::try_join_all(
            names
                .iter()
                .map(|a| async move { Ok::<_, StorageError>((*a, self.binding(a).await?)) }),
        )
        .await?;
        let mut current = HashMap::new();
        let mut revisions = HashMap::new();
        for (a, b) in found {
            if let Some((b, rev)) = b {
                current.insert(a.clone(), (b.consumer, b.expires_ms));
                revisions.insert(a.clone(), rev);
            }
        }
        let now = agentbus_proto::now_ms();
        let (bind, release, mut bound) = plan_claim(&current, consumer, agents, now, lease_ms);
        for a in &bind {
            let value = serde_json::to_vec(&Binding {
                consumer: consumer.to_string(),
                expires_ms: now + lease_ms,
            })
            .map_err(|e| backend("cannot encode a binding", e))?;
            let key = format!("a.{}", hexed(a));
            if !Self::put_if(&self.inner.bindings, &key, value, revisions.get(a).copied()).await? {
                // Another claim changed it first: not ours this time.
                bound.retain(|b| b != a);
            }
        }
        for a in &release {
            if let Some(rev) = revisions.get(a) {
                let _ = self
                    .inner
                    .bindings
                    .delete_expect_revision(format!("a.{}", hexed(a)), Some(*rev))
                    .await;
            }
        }
        // The consumer's list (what `bound` checks): merged with what
        // another claim of the same consumer wrote meanwhile.
        let key = format!("c.{}", hexed(consumer));
        let (mut listed, mut rev) = (before, list_rev);
        for _ in 0..8 {
            let mut want: Vec<String> = listed
                .iter()
                .filter(|a| {
                    !release.contains(a)
                        && !agents.contains(a)
                        && current.get(*a).is_none_or(|(who, _)| who == consumer)
                })
                .chain(bound.iter())
                .cloned()
                .collect();
            want.sort();
            want.dedup();
            let mut was = listed.clone();
            was.sort();
            if want == was {
                break;
            }
            let value =
                serde_json::to_vec(&want).map_err(|e| backend("cannot encode a binding", e))?;
            if Self::put_if(&self.inner.bindings, &key, value, rev).await? {
                break;
            }
            (listed, rev) = self.claimed_by(consumer).await?;
        }
        Ok(bound)
    }

    async fn holder(&self, agent: &str) -> Result<Option<String>> {
        let now = agentbus_proto::now_ms();
        Ok(self
            .binding(agent)
            .await?
            .filter(|(b, _)| b.expires_ms > now)
            .map(|(b, _)| b.consumer))
    }

    async fn bound(&self, consumer: &str) -> Result<Vec<String>> {
        let (listed, _) = self.claimed_by(consumer).await?;
        let now = agentbus_proto::now_ms();
        let held = futures_util::future::try_join_all(listed.into_iter().map(|a| async move {
            let b = self.binding(&a).await?;
            Ok::<_, StorageError>(
                b.filter(|(b, _)| b.consumer == consumer && b.expires_ms > now)
                    .map(|_| a),
            )
        }))
        .await?;
        Ok(held.into_iter().flatten().collect())
    }

    async fn token_owner(&self, digest: &str) -> Result<Option<TokenOwner>> {
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(self
            .token_record(digest)
            .await?
            .filter(|(t, _)| t.revoked_ms.is_none())
            .map(|(t, _)| t.owner()))
    }

    async fn create_token(&self, name: &str, owner: TokenOwner, digest: &str) -> Result<bool> {
        let named = self.digest_of(name).await?;
        if let Some((old, _)) = &named
            && self
                .token_record(old)
                .await?
                .is_some_and(|(t, _)| t.revoked_ms.is_none())
        {
            return Ok(false);
        }
        let (kind, who) = match owner {
            TokenOwner::Agent(a) => ("agent", a),
            TokenOwner::Instance(i) => ("instance", i),
        };
        let record = serde_json::to_vec(&TokenRecord {
            name: name.to_string(),
            kind: kind.into(),
            owner: who,
            created_ms: agentbus_proto::now_ms(),
            revoked_ms: None,
        })
        .map_err(|e| backend("cannot encode a token", e))?;
        // The name first: two creating at once, one wins.
        if !Self::put_if(
            &self.inner.tokens,
            &format!("n.{}", hexed(name)),
            digest.as_bytes().to_vec(),
            named.map(|(_, rev)| rev),
        )
        .await?
        {
            return Ok(false);
        }
        // A digest is one token's: never overwritten (a name whose record
        // is missing counts as free, so a failure here leaves no harm).
        if !Self::put_if(&self.inner.tokens, &format!("d.{digest}"), record, None).await? {
            return Err(StorageError::Backend(
                "a token with this secret exists already".into(),
            ));
        }
        Ok(true)
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let Some((digest, _)) = self.digest_of(name).await? else {
            return Ok(false);
        };
        for _ in 0..16 {
            let Some((mut t, rev)) = self.token_record(&digest).await? else {
                return Ok(false);
            };
            if t.revoked_ms.is_some() {
                return Ok(false);
            }
            t.revoked_ms = Some(agentbus_proto::now_ms());
            let value = serde_json::to_vec(&t).map_err(|e| backend("cannot encode a token", e))?;
            if Self::put_if(&self.inner.tokens, &format!("d.{digest}"), value, Some(rev)).await? {
                return Ok(true);
            }
        }
        Err(StorageError::Backend(format!(
            "could not revoke {name}: it kept changing"
        )))
    }

    async fn tokens(&self) -> Result<Vec<(String, TokenInfo)>> {
        let mut keys = self
            .inner
            .tokens
            .keys()
            .await
            .map_err(|e| backend("cannot list tokens", e))?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| backend("cannot list tokens", e))?;
            if let Some(name) = k.strip_prefix("n.").and_then(unhexed) {
                names.push(name);
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Some((digest, _)) = self.digest_of(&name).await? else {
                continue;
            };
            if let Some((t, _)) = self.token_record(&digest).await? {
                out.push((
                    name,
                    TokenInfo {
                        owner: t.owner(),
                        created_ms: t.created_ms,
                        revoked_ms: t.revoked_ms,
                    },
                ));
            }
        }
        Ok(out)
    }

    fn prune_waiters(&self) {
        self.inner.waiters.prune();
    }

    fn unavailable(&self) -> Option<String> {
        if self.inner.js_client().connection_state() != async_nats::connection::State::Connected {
            return Some("this relay node has lost its connection to NATS".into());
        }
        if lock(&self.inner.follower).is_some() && !self.inner.following.load(Ordering::Acquire) {
            return Some("this relay node is not following the JetStream stream".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_grow_with_the_stream_even_when_its_clock_steps_back() {
        let mut ix = Index::default();
        let q = || (DEFAULT_CHANNEL.to_string(), "bob".to_string());
        assert!(ix.apply(1, 100.0, q(), None));
        assert!(ix.apply(2, 99.0, q(), None), "a clock stepped back");
        assert!(ix.apply(3, 100.0, q(), None), "the same time");
        assert!(!ix.apply(3, 500.0, q(), None), "seen already");
        let ts: Vec<f64> = ix.queues[&q()].iter().map(|e| e.1).collect();
        assert!(ts.windows(2).all(|w| w[1] > w[0]), "{ts:?}");
        assert_eq!(ix.last_seq, 3);
        assert_eq!(ix.prune(3), 2);
        assert_eq!(ix.queues[&q()].len(), 1);
        assert_eq!(ix.prune(10), 1);
        assert!(ix.queues.is_empty());
    }

    #[test]
    fn prefixes_and_urls() {
        for ok in ["agentbus", "a", "relay_2-b"] {
            assert!(prefix_ok(ok), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", ">", "é", &"x".repeat(33)] {
            assert!(!prefix_ok(bad), "{bad}");
        }
        assert_eq!(
            redact_urls("nats://u:secret@h:4222,nats://h2:4222"),
            "nats://…@h:4222,nats://h2:4222"
        );
    }
}
