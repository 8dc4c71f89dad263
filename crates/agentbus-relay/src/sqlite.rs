//! The relay's embedded SQLite storage (one relay node).
//!
//! Timestamps: the writer thread runs appends one at a time, so it hands
//! out `ts = max(wall clock, next float above the last ts)` in commit
//! order. After each append is committed, `committed` is raised to its
//! `ts`. A fetch reads `committed` *before* it queries: every message with
//! a `ts` at or below that value is committed, hence visible to the query,
//! and every message stored later gets a greater `ts`. That value is the
//! fetch's `now` — the "now race" of the reference server cannot happen.

use crate::storage::{
    Append, Appended, Fetched, Meta, Result, Storage, TokenInfo, TokenOwner, Waiters, kind_of,
    kind_text, plan_claim,
};
use agentbus_proto::MessageId;
use agentbus_proto::relay::{DEFAULT_CHANNEL, RelayEnvelope};
use agentbus_proto::sync::lock;
use agentbus_store::Db;
use rusqlite::{OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        meta TEXT,
        created_ms INTEGER NOT NULL
     );
     CREATE INDEX messages_queue ON messages(channel, recipient, ts);
     CREATE INDEX messages_recipient ON messages(recipient, seq);
     CREATE INDEX messages_created ON messages(created_ms);
     CREATE TABLE queue_counts (
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (channel, recipient)
     ) WITHOUT ROWID;
     CREATE TRIGGER queue_counts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO queue_counts(channel, recipient, n) VALUES (new.channel, new.recipient, 1)
          ON CONFLICT(channel, recipient) DO UPDATE SET n = n + 1;
     END;
     CREATE TRIGGER queue_counts_delete AFTER DELETE ON messages BEGIN
        UPDATE queue_counts SET n = n - 1 WHERE channel = old.channel AND recipient = old.recipient;
     END;
     CREATE TABLE cursors (
        consumer TEXT NOT NULL,
        agent TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (consumer, agent)
     ) WITHOUT ROWID;
     CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
     );",
    // 2: fewer indexes, fewer pages written per commit. Polls find a
    // queue's messages after a cursor through messages_queue (ts and seq
    // grow together within a queue); the sweep walks the oldest by seq.
    "DROP INDEX messages_recipient;
     DROP INDEX messages_created;",
    // 3: which instance hosts which agent (instance tokens may act only
    // for their own agents).
    "CREATE TABLE bindings (
        agent TEXT PRIMARY KEY,
        consumer TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX bindings_consumer ON bindings(consumer);",
];

/// The bindings of `consumer` and of `agents`, as (agent, consumer,
/// expires_ms).
fn bindings_of(
    c: &rusqlite::Connection,
    consumer: &str,
    agents: &[String],
) -> rusqlite::Result<HashMap<String, (String, i64)>> {
    let mut out = HashMap::new();
    let mut mine =
        c.prepare_cached("SELECT agent, consumer, expires_ms FROM bindings WHERE consumer = ?1")?;
    for row in mine.query_map([consumer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (a, who, exp): (String, String, i64) = row?;
        out.insert(a, (who, exp));
    }
    let mut one = c.prepare_cached("SELECT consumer, expires_ms FROM bindings WHERE agent = ?1")?;
    for a in agents {
        if let Some((who, exp)) = one
            .query_row([a], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .optional()?
        {
            out.insert(a.clone(), (who, exp));
        }
    }
    Ok(out)
}

fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// The last ts handed out; used only by jobs on the writer thread.
    assigned: Mutex<f64>,
    /// Bits of the highest ts known committed (positive floats order like
    /// their bits).
    committed: AtomicU64,
    queue_cap: u64,
    waiters: Waiters,
}

impl SqliteStorage {
    /// Opens (creating) the relay database at `path`. `queue_cap` bounds
    /// each (channel, recipient) queue.
    pub fn open(path: &Path, queue_cap: u64) -> Result<SqliteStorage> {
        let db = Db::open(path, MIGRATIONS)?;
        let max_ts: f64 = db.read(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(ts), 0.0) FROM messages", [], |r| {
                    r.get(0)
                })?,
            )
        })?;
        // Never hand out a ts at or below one handed out before a restart.
        let start = wall_s().max(max_ts);
        Ok(SqliteStorage {
            inner: Arc::new(Inner {
                db,
                assigned: Mutex::new(start),
                committed: AtomicU64::new(start.to_bits()),
                queue_cap,
                waiters: Waiters::default(),
            }),
        })
    }

    /// Runs a read on a reader connection, off the async workers.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> agentbus_store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.read(f))
            .await
            .map_err(|e| crate::storage::StorageError::Backend(e.to_string()))?
            .map_err(Into::into)
    }

    fn committed(&self) -> f64 {
        f64::from_bits(self.inner.committed.load(Ordering::Acquire))
    }
}

fn envelope(r: &rusqlite::Row<'_>) -> rusqlite::Result<RelayEnvelope> {
    let id: String = r.get(0)?;
    let meta: Option<String> = r.get(8)?;
    let meta: Meta = meta
        .and_then(|m| serde_json::from_str(&m).ok())
        .unwrap_or_default();
    Ok(RelayEnvelope {
        id: MessageId::parse(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        seq: r.get(1)?,
        ts: r.get(2)?,
        channel: r.get(3)?,
        from: r.get(4)?,
        to: r.get(5)?,
        kind: kind_of(&r.get::<_, String>(6)?),
        body: r.get(7)?,
        thread_id: meta.thread_id,
        reply_to: meta.reply_to,
        tier: meta.tier,
        priority: meta.priority,
        sender_verified: meta.sender_verified,
        signature: meta.signature,
    })
}

impl Storage for SqliteStorage {
    async fn append(&self, m: Append) -> Result<Appended> {
        let inner = self.inner.clone();
        let to = m.to.clone();
        let appended = self
            .inner
            .db
            .write(move |c| {
                let seen = c
                    .prepare_cached("SELECT seq, ts FROM messages WHERE id = ?1")?
                    .query_row([m.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((seq, ts)) = seen {
                    return Ok(Appended::Duplicate { seq, ts });
                }
                let count: u64 = c
                    .prepare_cached("SELECT n FROM queue_counts WHERE channel = ?1 AND recipient = ?2")?
                    .query_row(params![m.channel, m.to], |r| r.get::<_, i64>(0))
                    .optional()?
                    .unwrap_or(0)
                    .max(0) as u64;
                if count >= inner.queue_cap {
                    return Ok(Appended::QueueFull { count });
                }
                // invariant: only writer-thread jobs take this lock.
                let mut last = lock(&inner.assigned);
                let ts = wall_s().max(last.next_up());
                let meta = serde_json::to_string(&m.meta).ok();
                c.prepare_cached(
                    "INSERT INTO messages (id, channel, recipient, sender, body, ts, kind, meta, created_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    m.id.to_string(),
                    m.channel,
                    m.to,
                    m.from,
                    m.body,
                    ts,
                    kind_text(m.kind),
                    meta,
                    agentbus_proto::now_ms()
                ])?;
                // Taken only if the job's savepoint is released; a failed
                // insert leaves `last` as it was.
                *last = ts;
                Ok(Appended::Stored {
                    seq: c.last_insert_rowid(),
                    ts,
                })
            })
            .await?;
        if let Appended::Stored { ts, .. } = appended {
            // Committed: fetches may now report this ts as `now`.
            self.inner
                .committed
                .fetch_max(ts.to_bits(), Ordering::AcqRel);
            self.inner.waiters.notify(&to);
        }
        Ok(appended)
    }

    async fn fetch(
        &self,
        channel: &str,
        to: &str,
        since: f64,
        max: u32,
        max_bytes: usize,
    ) -> Result<Fetched> {
        // Before the query: everything at or below it is visible to it.
        let committed = self.committed();
        let (channel, to) = (channel.to_string(), to.to_string());
        let (messages, cut) = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT ts, sender, body FROM messages WHERE channel = ?1 AND recipient = ?2 AND ts > ?3 \
                     ORDER BY ts LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![channel, to, since, i64::from(max) + 1], |r| {
                    Ok((r.get::<_, f64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?;
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for row in rows {
                    let row = row?;
                    bytes = bytes.saturating_add(row.1.len() + row.2.len());
                    if out.len() == max as usize || (!out.is_empty() && bytes > max_bytes) {
                        return Ok((out, true));
                    }
                    out.push(row);
                }
                Ok((out, false))
            })
            .await?;
        let now = if cut {
            // Cut short: the client must come back right after the last.
            messages.last().map_or(committed, |m| m.0)
        } else {
            // A message committed after `committed` was read but before the
            // query ran may be in the page; `now` must not fall below it.
            messages.last().map_or(committed, |m| m.0.max(committed))
        };
        Ok(Fetched { messages, now })
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
        let (consumer, agents) = (consumer.to_string(), agents.to_vec());
        self
            .read(move |c| {
                let mut out: Vec<RelayEnvelope> = Vec::new();
                let mut bytes = 0usize;
                'agents: for agent in &agents {
                    let left = i64::from(max).saturating_sub(out.len() as i64);
                    if left <= 0 {
                        break;
                    }
                    let cursor: i64 = c
                        .prepare_cached("SELECT seq FROM cursors WHERE consumer = ?1 AND agent = ?2")?
                        .query_row(params![consumer, agent], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0);
                    // Within a queue ts grows with seq: start after the ts of
                    // the acked message (if retention took it, scan the queue
                    // and let `seq` decide).
                    let mut stmt = c.prepare_cached(
                        "SELECT id, seq, ts, channel, sender, recipient, kind, body, meta FROM messages \
                         WHERE channel = ?2 AND recipient = ?1 AND seq > ?3 \
                           AND ts > COALESCE((SELECT ts FROM messages WHERE seq = ?3), 0) \
                         ORDER BY ts LIMIT ?4",
                    )?;
                    for row in stmt.query_map(params![agent, DEFAULT_CHANNEL, cursor, left], envelope)? {
                        let e = row?;
                        bytes = bytes.saturating_add(e.body.len() + e.from.len());
                        if !out.is_empty() && bytes > max_bytes {
                            break 'agents;
                        }
                        out.push(e);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn ack(&self, consumer: &str, acks: BTreeMap<String, i64>) -> Result<()> {
        let consumer = consumer.to_string();
        self.inner
            .db
            .write(move |c| {
                for (agent, seq) in acks {
                    c.prepare_cached(
                        "INSERT INTO cursors (consumer, agent, seq) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(consumer, agent) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    )?
                    .execute(params![consumer, agent, seq])?;
                }
                Ok(())
            })
            .await
            .map_err(Into::into)
    }

    async fn inbox(&self) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
        let rows = self
            .read(move |c| {
                let rows = c
                    .prepare_cached("SELECT channel, recipient, n FROM queue_counts WHERE n > 0")?
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (channel, recipient, n) in rows {
            out.entry(channel)
                .or_default()
                .insert(recipient, n.max(0) as u64);
        }
        Ok(out)
    }

    async fn stored(&self) -> Result<u64> {
        self.read(move |c| {
            Ok(
                c.query_row("SELECT COALESCE(SUM(n), 0) FROM queue_counts", [], |r| {
                    r.get::<_, i64>(0)
                })?,
            )
        })
        .await
        .map(|n| n.max(0) as u64)
    }

    async fn sweep(&self, before_ms: i64, batch: u32) -> Result<usize> {
        self.inner
            .db
            .write(move |c| {
                // The oldest `batch` messages by seq, those past the cutoff.
                Ok(c.prepare_cached(
                    "DELETE FROM messages WHERE seq IN \
                     (SELECT seq FROM (SELECT seq, created_ms FROM messages ORDER BY seq LIMIT ?2) \
                      WHERE created_ms < ?1)",
                )?
                .execute(params![before_ms, batch])?)
            })
            .await
            .map_err(Into::into)
    }

    async fn claim(&self, consumer: &str, agents: &[String], lease_ms: i64) -> Result<Vec<String>> {
        let (consumer, agents) = (consumer.to_string(), agents.to_vec());
        let now = agentbus_proto::now_ms();
        // Mostly nothing changes: decide on a reader first, write only if
        // a binding must change (a write is a commit and an fsync).
        let (c2, a2) = (consumer.clone(), agents.clone());
        let (bind, release, bound) = self
            .read(move |c| {
                Ok(plan_claim(
                    &bindings_of(c, &c2, &a2)?,
                    &c2,
                    &a2,
                    now,
                    lease_ms,
                ))
            })
            .await?;
        if bind.is_empty() && release.is_empty() {
            return Ok(bound);
        }
        self.inner
            .db
            .write(move |c| {
                // Again inside the write: another instance may have
                // claimed meanwhile.
                let now = agentbus_proto::now_ms();
                let current = bindings_of(c, &consumer, &agents)?;
                let (bind, release, bound) = plan_claim(&current, &consumer, &agents, now, lease_ms);
                for a in &release {
                    c.prepare_cached("DELETE FROM bindings WHERE agent = ?1 AND consumer = ?2")?
                        .execute(params![a, consumer])?;
                }
                for a in &bind {
                    c.prepare_cached(
                        "INSERT INTO bindings (agent, consumer, expires_ms) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(agent) DO UPDATE SET consumer = excluded.consumer, expires_ms = excluded.expires_ms",
                    )?
                    .execute(params![a, consumer, now + lease_ms])?;
                }
                Ok(bound)
            })
            .await
            .map_err(Into::into)
    }

    async fn holder(&self, agent: &str) -> Result<Option<String>> {
        let agent = agent.to_string();
        let now = agentbus_proto::now_ms();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT consumer FROM bindings WHERE agent = ?1 AND expires_ms > ?2",
            )?
            .query_row(params![agent, now], |r| r.get::<_, String>(0))
            .optional()?)
        })
        .await
    }

    async fn bound(&self, consumer: &str) -> Result<Vec<String>> {
        let consumer = consumer.to_string();
        let now = agentbus_proto::now_ms();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT agent FROM bindings WHERE consumer = ?1 AND expires_ms > ?2",
            )?
            .query_map(params![consumer, now], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn token_owner(&self, digest: &str) -> Result<Option<TokenOwner>> {
        let digest = digest.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT kind, owner FROM tokens WHERE digest = ?1 AND revoked_ms IS NULL",
            )?
            .query_row([digest], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
            .map(|(kind, owner)| match kind.as_str() {
                "instance" => TokenOwner::Instance(owner),
                _ => TokenOwner::Agent(owner),
            }))
        })
        .await
    }

    async fn create_token(&self, name: &str, owner: TokenOwner, digest: &str) -> Result<bool> {
        let (name, digest) = (name.to_string(), digest.to_string());
        let (kind, who) = match owner {
            TokenOwner::Agent(a) => ("agent", a),
            TokenOwner::Instance(i) => ("instance", i),
        };
        self.inner
            .db
            .write(move |c| {
                let taken: bool = c
                    .prepare_cached("SELECT 1 FROM tokens WHERE name = ?1 AND revoked_ms IS NULL")?
                    .query_row([&name], |_| Ok(()))
                    .optional()?
                    .is_some();
                if taken {
                    return Ok(false);
                }
                c.prepare_cached("DELETE FROM tokens WHERE name = ?1")?.execute([&name])?;
                c.prepare_cached(
                    "INSERT INTO tokens (name, kind, owner, digest, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![name, kind, who, digest, agentbus_proto::now_ms()])?;
                Ok(true)
            })
            .await
            .map_err(Into::into)
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.inner
            .db
            .write(move |c| {
                Ok(c.prepare_cached(
                    "UPDATE tokens SET revoked_ms = ?1 WHERE name = ?2 AND revoked_ms IS NULL",
                )?
                .execute(params![agentbus_proto::now_ms(), name])?
                    > 0)
            })
            .await
            .map_err(Into::into)
    }

    async fn tokens(&self) -> Result<Vec<(String, TokenInfo)>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT name, kind, owner, created_ms, revoked_ms FROM tokens ORDER BY name",
                )?
                .query_map([], |r| {
                    let kind: String = r.get(1)?;
                    let owner: String = r.get(2)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        TokenInfo {
                            owner: if kind == "instance" {
                                TokenOwner::Instance(owner)
                            } else {
                                TokenOwner::Agent(owner)
                            },
                            created_ms: r.get(3)?,
                            revoked_ms: r.get(4)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    fn prune_waiters(&self) {
        self.inner.waiters.prune();
    }

    fn close(&self) {
        self.inner.db.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentbus_proto::relay::RelayKind;

    fn msg(to: &str, body: &str) -> Append {
        Append {
            id: MessageId::new(),
            channel: DEFAULT_CHANNEL.into(),
            to: to.into(),
            from: "a".into(),
            body: body.into(),
            kind: RelayKind::Plain,
            meta: Meta::default(),
        }
    }

    #[tokio::test]
    async fn timestamps_increase_and_now_never_passes_an_unreturned_message() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("r.db"), 100).unwrap();
        let mut last = 0.0;
        for i in 0..50 {
            let Appended::Stored { ts, .. } = s.append(msg("bob", &format!("{i}"))).await.unwrap()
            else {
                panic!()
            };
            assert!(ts > last);
            last = ts;
        }
        let f = s
            .fetch(DEFAULT_CHANNEL, "bob", 0.0, 20, usize::MAX)
            .await
            .unwrap();
        assert_eq!(f.messages.len(), 20);
        assert_eq!(f.now, f.messages[19].0, "cut short: now is the last ts");
        let rest = s
            .fetch(DEFAULT_CHANNEL, "bob", f.now, 100, usize::MAX)
            .await
            .unwrap();
        assert_eq!(rest.messages.len(), 30);
        assert!(rest.now >= last);
        let m = msg("bob", "dup");
        let first = s.append(m.clone()).await.unwrap();
        assert!(
            matches!(s.append(m).await.unwrap(), Appended::Duplicate { seq, .. } if matches!(first, Appended::Stored { seq: s2, .. } if s2 == seq))
        );
    }

    #[tokio::test]
    async fn queues_are_capped_and_timestamps_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let s = SqliteStorage::open(&path, 2).unwrap();
        s.append(msg("q", "1")).await.unwrap();
        let Appended::Stored { ts: high, .. } = s.append(msg("q", "2")).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            s.append(msg("q", "3")).await.unwrap(),
            Appended::QueueFull { count: 2 }
        );
        s.close();
        let s = SqliteStorage::open(&path, 10).unwrap();
        let Appended::Stored { ts, .. } = s.append(msg("q", "4")).await.unwrap() else {
            panic!()
        };
        assert!(ts > high);
    }

    #[tokio::test]
    async fn polls_are_bounded_in_bytes_but_always_make_progress() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("r.db"), 100).unwrap();
        for to in ["a", "a", "b", "b"] {
            s.append(msg(to, &"z".repeat(1000))).await.unwrap();
        }
        let agents = vec!["a".to_string(), "b".to_string()];
        let page = s.poll("c", &agents, 100, 2_500).await.unwrap();
        assert_eq!(
            page.len(),
            2,
            "two 1 KB bodies fit in 2.5 KB, a third does not"
        );
        let one = s.poll("c", &agents, 100, 10).await.unwrap();
        assert_eq!(one.len(), 1, "the first message always comes");
        let f = s
            .fetch(DEFAULT_CHANNEL, "b", 0.0, 100, 1_500)
            .await
            .unwrap();
        assert_eq!(f.messages.len(), 1);
        assert_eq!(f.now, f.messages[0].0, "cut short: now is the last ts");
    }

    #[tokio::test]
    async fn consumers_have_cursors_per_agent() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("r.db"), 100).unwrap();
        for to in ["a", "b", "a"] {
            s.append(msg(to, to)).await.unwrap();
        }
        let agents = vec!["a".to_string(), "b".to_string()];
        let got = s.poll("laptop", &agents, 10, usize::MAX).await.unwrap();
        assert_eq!(got.len(), 3);
        let last_a = got
            .iter()
            .filter(|e| e.to == "a")
            .map(|e| e.seq)
            .max()
            .unwrap();
        s.ack("laptop", BTreeMap::from([("a".to_string(), last_a)]))
            .await
            .unwrap();
        let got = s.poll("laptop", &agents, 10, usize::MAX).await.unwrap();
        assert_eq!(got.iter().map(|e| e.to.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            s.poll("other", &agents, 10, usize::MAX)
                .await
                .unwrap()
                .len(),
            3,
            "cursors are per consumer"
        );
    }
}
