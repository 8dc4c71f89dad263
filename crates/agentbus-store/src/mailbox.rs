//! Mailboxes: durable messages per recipient.
//!
//! A message is `queued` when stored, `delivered` once a read (not a peek)
//! has returned it, and `acked` when its recipient says so. `acked` is a
//! column; `delivered` is not: a read returns a contiguous stretch of one
//! mailbox's cursor, so it is recorded as that range (`delivered_ranges`,
//! merged with its neighbours). Mail of all mailboxes shares one sequence,
//! so one page's rows lie on many B-tree pages; marking each row would
//! rewrite all of those pages on every read. Reads page by
//! `seq` (the cursor), oldest first, and by default skip acked messages,
//! through a partial index that holds only unacked ones — a mailbox with a
//! long acked history reads as fast as an empty one. The per-recipient
//! count of unacked messages (the quota) is kept by triggers in
//! `mailbox_open`, so checking it costs one lookup.

use crate::{Result, Store, StoreError};
use agentbus_proto::api::{Message, MessageKind, MessageState};
use agentbus_proto::jekt::{Priority, Trust};
use agentbus_proto::{AgentId, MessageId, ThreadId};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::de::DeserializeOwned;

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub recipient: AgentId,
    pub sender: String,
    pub trust: Trust,
    pub kind: MessageKind,
    pub body: String,
    pub thread_id: Option<ThreadId>,
    pub reply_to: Option<MessageId>,
    pub priority: Priority,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub receipt: bool,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Stored {
        seq: i64,
    },
    /// The sender used this request id before; that message stands.
    Duplicate {
        id: MessageId,
        seq: i64,
        recipient: String,
    },
    /// The recipient has `open` unacked messages, the quota.
    Full {
        open: i64,
    },
    /// The sender has `bytes` of unacked mail waiting in mailboxes; this
    /// one would pass the cap.
    SenderFull {
        bytes: i64,
    },
}

/// What one send may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Unacked messages one mailbox may hold.
    pub per_mailbox: i64,
    /// Bytes of unacked mail one sender may have waiting, all mailboxes
    /// together.
    pub per_sender_bytes: i64,
}

#[derive(Debug, Clone)]
pub struct InboxQuery {
    pub recipient: AgentId,
    /// Only messages with `seq` greater than this.
    pub after: i64,
    pub limit: u32,
    pub include_acked: bool,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AckOutcome {
    pub acked: Vec<MessageId>,
    pub already_acked: Vec<MessageId>,
    pub not_found: Vec<MessageId>,
    /// In another mailbox than the one acking; when any is, nothing else
    /// in the request was acked.
    pub forbidden: Vec<MessageId>,
    /// Receipts stored for senders who asked: (their mailbox, message).
    pub receipts: Vec<Message>,
}

/// Who sends receipts.
pub const RECEIPT_SENDER: &str = "agentbus";

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    // invariant: these enums serialize to a JSON string.
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn conversion(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))
}

fn enum_col<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = r.get(idx)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| conversion(idx, e))
}

pub(crate) fn parsed<T, E>(
    r: &Row<'_>,
    idx: usize,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let s: String = r.get(idx)?;
    parse(&s).map_err(|e| conversion(idx, e))
}

fn parsed_opt<T, E>(
    r: &Row<'_>,
    idx: usize,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<Option<T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let s: Option<String> = r.get(idx)?;
    s.map(|s| parse(&s).map_err(|e| conversion(idx, e)))
        .transpose()
}

const COLUMNS: &str = "seq, id, recipient, sender, trust, kind, body, thread_id, reply_to, priority, acked_ms, created_ms, expires_ms, receipt";

fn row_to_message(r: &Row<'_>) -> rusqlite::Result<Message> {
    // `Delivered` is settled afterwards from the ranges (see apply_ranges).
    let state = match r.get::<_, Option<i64>>(10)? {
        Some(_) => MessageState::Acked,
        None => MessageState::Queued,
    };
    Ok(Message {
        seq: r.get(0)?,
        id: parsed(r, 1, MessageId::parse)?,
        to: parsed(r, 2, AgentId::parse)?,
        from: r.get(3)?,
        trust: enum_col(r, 4)?,
        kind: enum_col(r, 5)?,
        body: r.get(6)?,
        thread_id: parsed_opt(r, 7, ThreadId::parse)?,
        reply_to: parsed_opt(r, 8, MessageId::parse)?,
        priority: enum_col(r, 9)?,
        state,
        created_ms: r.get(11)?,
        expires_ms: r.get(12)?,
        receipt_requested: r.get::<_, i64>(13)? != 0,
    })
}

fn insert(c: &Connection, m: &NewMessage) -> Result<i64> {
    c.prepare_cached(
        "INSERT INTO messages (id, recipient, sender, trust, kind, body, thread_id, reply_to, priority, \
         created_ms, expires_ms, receipt, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        m.id.to_string(),
        m.recipient.as_str(),
        m.sender,
        enum_text(&m.trust),
        enum_text(&m.kind),
        m.body,
        m.thread_id.as_ref().map(ThreadId::as_str),
        m.reply_to.map(|r| r.to_string()),
        enum_text(&m.priority),
        m.created_ms,
        m.expires_ms,
        m.receipt as i64,
        m.request_id,
    ])?;
    Ok(c.last_insert_rowid())
}

fn open_count(c: &Connection, recipient: &str) -> Result<i64> {
    Ok(
        c.prepare_cached("SELECT open FROM mailbox_open WHERE recipient = ?1")?
            .query_row([recipient], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

/// Marks as `Delivered` the queued messages whose seq lies in a range a
/// read has returned.
fn apply_ranges(c: &Connection, msgs: &mut [Message]) -> Result<()> {
    let mut stmt = c.prepare_cached(
        "SELECT lo, hi FROM delivered_ranges WHERE recipient = ?1 AND hi >= ?2 AND lo <= ?3",
    )?;
    let mut recipients: Vec<AgentId> = msgs.iter().map(|m| m.to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    for r in recipients {
        let (lo, hi) = msgs
            .iter()
            .filter(|m| m.to == r)
            .fold((i64::MAX, i64::MIN), |(lo, hi), m| {
                (lo.min(m.seq), hi.max(m.seq))
            });
        let ranges = stmt
            .query_map(params![r.as_str(), lo, hi], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for m in msgs
            .iter_mut()
            .filter(|m| m.to == r && m.state == MessageState::Queued)
        {
            if ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&m.seq)) {
                m.state = MessageState::Delivered;
            }
        }
    }
    Ok(())
}

/// Records that reads returned (lo..=hi] stretches of mailboxes, merging
/// each with ranges it overlaps or touches.
fn record_range(c: &Connection, recipient: &str, lo: i64, hi: i64) -> Result<()> {
    let touching = c
        .prepare_cached(
            "SELECT lo, hi FROM delivered_ranges WHERE recipient = ?1 AND hi >= ?2 - 1 AND lo <= ?3 + 1",
        )?
        .query_map(params![recipient, lo, hi], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (mut new_lo, mut new_hi) = (lo, hi);
    for (l, h) in &touching {
        new_lo = new_lo.min(*l);
        new_hi = new_hi.max(*h);
        c.prepare_cached("DELETE FROM delivered_ranges WHERE recipient = ?1 AND lo = ?2")?
            .execute(params![recipient, l])?;
    }
    c.prepare_cached("INSERT INTO delivered_ranges (recipient, lo, hi) VALUES (?1, ?2, ?3)")?
        .execute(params![recipient, new_lo, new_hi])?;
    Ok(())
}

/// Turns what a person types into an FTS5 query that cannot be a syntax
/// error: every word quoted, all of them required.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

impl Store {
    /// Stores a message unless its request id was seen or the recipient's
    /// mailbox is full; resolves once it is on disk.
    pub async fn send_message(&self, msg: NewMessage, quota: Quota) -> Result<SendOutcome> {
        self.write(move |c| {
            if let Some(rid) = &msg.request_id {
                let seen = c
                    .prepare_cached("SELECT id, seq, recipient FROM messages WHERE sender = ?1 AND request_id = ?2")?
                    .query_row(params![msg.sender, rid], |r| {
                        Ok((parsed(r, 0, MessageId::parse)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                if let Some((id, seq, recipient)) = seen {
                    return Ok(SendOutcome::Duplicate { id, seq, recipient });
                }
            }
            let open = open_count(c, msg.recipient.as_str())?;
            if open >= quota.per_mailbox {
                return Ok(SendOutcome::Full { open });
            }
            let bytes: i64 = c
                .prepare_cached("SELECT bytes FROM sender_open WHERE sender = ?1")?
                .query_row([&msg.sender], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if bytes.saturating_add(msg.body.len() as i64) > quota.per_sender_bytes {
                return Ok(SendOutcome::SenderFull { bytes });
            }
            Ok(SendOutcome::Stored { seq: insert(c, &msg)? })
        })
        .await
    }

    /// A page of a mailbox, oldest first, and whether more follow.
    /// Changes nothing (see [`Store::mark_delivered`]). Blocking.
    pub fn read_inbox(&self, q: &InboxQuery) -> Result<(Vec<Message>, bool)> {
        // The partial index messages_open serves the default (unacked) read.
        let sql = if q.include_acked {
            format!(
                "SELECT {COLUMNS} FROM messages WHERE recipient = ?1 AND seq > ?2 AND expires_ms > ?3 \
                 ORDER BY seq LIMIT ?4"
            )
        } else {
            format!(
                "SELECT {COLUMNS} FROM messages WHERE recipient = ?1 AND seq > ?2 AND acked_ms IS NULL AND expires_ms > ?3 \
                 ORDER BY seq LIMIT ?4"
            )
        };
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt
                .query_map(
                    params![
                        q.recipient.as_str(),
                        q.after,
                        q.now_ms,
                        i64::from(q.limit) + 1
                    ],
                    row_to_message,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = rows.len() > q.limit as usize;
            rows.truncate(q.limit as usize);
            apply_ranges(c, &mut rows)?;
            Ok((rows, more))
        })
    }

    /// Records that reads returned the cursor ranges `(recipient, lo,
    /// hi)`: every unacked message of that mailbox with seq in lo..=hi is
    /// `delivered` from now on. Queued at once (not when awaited).
    pub fn mark_delivered(
        &self,
        ranges: Vec<(String, i64, i64)>,
    ) -> impl Future<Output = Result<()>> + use<> {
        self.write(move |c| {
            for (recipient, lo, hi) in ranges {
                record_range(c, &recipient, lo, hi)?;
            }
            Ok(())
        })
    }

    /// Acks messages. With `recipient`, every id must be that mailbox's
    /// (or unknown): one of another mailbox makes the whole request
    /// `forbidden` and changes nothing. Stores a receipt for each sender
    /// who asked, unless its mailbox is full.
    pub async fn ack(
        &self,
        recipient: Option<AgentId>,
        ids: Vec<MessageId>,
        now_ms: i64,
        receipt_ttl_ms: i64,
        quota: i64,
    ) -> Result<AckOutcome> {
        self.write(move |c| {
            let mut out = AckOutcome::default();
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                let m = c
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE id = ?1"))?
                    .query_row([id.to_string()], row_to_message)
                    .optional()?;
                if let (Some(m), Some(r)) = (&m, &recipient)
                    && m.to != *r
                {
                    out.forbidden.push(*id);
                }
                found.push((*id, m));
            }
            // Someone else's mail: refuse the whole request, change nothing.
            if !out.forbidden.is_empty() {
                return Ok(out);
            }
            for (id, m) in found {
                let Some(m) = m else {
                    out.not_found.push(id);
                    continue;
                };
                if m.state == MessageState::Acked {
                    out.already_acked.push(id);
                    continue;
                }
                c.prepare_cached("UPDATE messages SET acked_ms = ?1 WHERE seq = ?2")?
                    .execute(params![now_ms, m.seq])?;
                out.acked.push(id);
                let Ok(sender) = AgentId::parse(&m.from) else {
                    continue;
                };
                if !m.receipt_requested || open_count(c, sender.as_str())? >= quota {
                    continue;
                }
                let mut receipt = Message {
                    id: MessageId::new(),
                    seq: 0,
                    from: RECEIPT_SENDER.into(),
                    to: sender,
                    trust: Trust::HostVerified,
                    kind: MessageKind::Receipt,
                    body: format!("receipt: {} acknowledged message {}", m.to, m.id),
                    thread_id: m.thread_id.clone(),
                    reply_to: Some(m.id),
                    priority: Priority::Normal,
                    state: MessageState::Queued,
                    created_ms: now_ms,
                    expires_ms: now_ms + receipt_ttl_ms,
                    receipt_requested: false,
                };
                receipt.seq = insert(
                    c,
                    &NewMessage {
                        id: receipt.id,
                        recipient: receipt.to.clone(),
                        sender: receipt.from.clone(),
                        trust: receipt.trust.clone(),
                        kind: receipt.kind,
                        body: receipt.body.clone(),
                        thread_id: receipt.thread_id.clone(),
                        reply_to: receipt.reply_to,
                        priority: receipt.priority,
                        created_ms: now_ms,
                        expires_ms: receipt.expires_ms,
                        receipt: false,
                        request_id: None,
                    },
                )?;
                out.receipts.push(receipt);
            }
            Ok(out)
        })
        .await
    }

    /// Messages whose body has every word of `query`, newest first; within
    /// one mailbox if `recipient` is given. Blocking.
    pub fn search(
        &self,
        recipient: Option<&AgentId>,
        query: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<Vec<Message>> {
        let Some(fts) = fts_query(query) else {
            return Err(StoreError::Malformed("empty search".into()));
        };
        let cols = COLUMNS
            .split(", ")
            .map(|c| format!("m.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid \
             WHERE messages_fts MATCH ?1 AND (?2 IS NULL OR m.recipient = ?2) AND m.expires_ms > ?3 \
             ORDER BY m.seq DESC LIMIT ?4"
        );
        self.read(|c| {
            let rows = c
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        fts,
                        recipient.map(AgentId::as_str),
                        now_ms,
                        i64::from(limit)
                    ],
                    row_to_message,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| match e {
                    // FTS5 refuses the query itself (not a fault of the
                    // store): say so to the caller.
                    rusqlite::Error::SqliteFailure(f, Some(m))
                        if f.code == rusqlite::ErrorCode::Unknown =>
                    {
                        StoreError::BadQuery(m)
                    }
                    other => StoreError::Sqlite(other),
                })?;
            let mut rows = rows;
            apply_ranges(c, &mut rows)?;
            Ok(rows)
        })
    }

    /// Unacked messages of `recipient` (what the quota counts). Blocking.
    pub fn open_messages(&self, recipient: &AgentId) -> Result<i64> {
        self.read(|c| open_count(c, recipient.as_str()))
    }

    /// Every mailbox holding unacked messages, by name, with how many.
    /// Blocking.
    pub fn open_mailboxes(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT recipient, open FROM mailbox_open WHERE open > 0 ORDER BY recipient",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
        })
    }

    /// Inserts many messages in one transaction (benchmarks and imports);
    /// no quota, no request ids.
    pub async fn bulk_insert(&self, msgs: Vec<NewMessage>) -> Result<()> {
        self.write(move |c| {
            for m in &msgs {
                insert(c, m)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: &str, body: &str, request_id: Option<&str>) -> NewMessage {
        NewMessage {
            id: MessageId::new(),
            recipient: AgentId::parse(to).unwrap(),
            sender: "bob".into(),
            trust: Trust::HostVerified,
            kind: MessageKind::Message,
            body: body.into(),
            thread_id: None,
            reply_to: None,
            priority: Priority::Normal,
            created_ms: 1,
            expires_ms: i64::MAX,
            receipt: true,
            request_id: request_id.map(Into::into),
        }
    }

    fn q(to: &str, after: i64) -> InboxQuery {
        InboxQuery {
            recipient: AgentId::parse(to).unwrap(),
            after,
            limit: 10,
            include_acked: false,
            now_ms: 2,
        }
    }

    #[tokio::test]
    async fn a_query_the_index_cannot_parse_is_the_callers_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        let e = s.search(None, "a\0b", 10, 0).unwrap_err();
        assert!(matches!(e, StoreError::BadQuery(_)), "{e:?}");
        assert!(
            s.search(None, "hello \"world\" NEAR( *", 10, 0)
                .unwrap()
                .is_empty()
        );
        s.close();
    }

    #[tokio::test]
    async fn one_sender_cannot_fill_more_than_its_bytes_across_mailboxes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        let quota = Quota {
            per_mailbox: 1_000,
            per_sender_bytes: 100,
        };
        let q_ = |to: &str| q(to, 0);
        let to = |r: &str| {
            let mut m = msg(r, &"x".repeat(40), None);
            m.sender = "flood".into();
            m
        };
        for r in ["a1", "a2"] {
            assert!(matches!(
                s.send_message(to(r), quota).await.unwrap(),
                SendOutcome::Stored { .. }
            ));
        }
        // 80 bytes wait; 40 more would pass 100, in any mailbox.
        assert_eq!(
            s.send_message(to("a3"), quota).await.unwrap(),
            SendOutcome::SenderFull { bytes: 80 }
        );
        // Another sender is not held to it.
        let mut other = to("a3");
        other.sender = "calm".into();
        assert!(matches!(
            s.send_message(other, quota).await.unwrap(),
            SendOutcome::Stored { .. }
        ));
        // Acking frees the sender's bytes.
        let page = s.read_inbox(&q_("a1")).unwrap().0;
        let ids = page.iter().map(|m| m.id).collect();
        s.ack(None, ids, 0, 1_000, 1_000).await.unwrap();
        assert!(matches!(
            s.send_message(to("a3"), quota).await.unwrap(),
            SendOutcome::Stored { .. }
        ));
        s.close();
    }

    /// A quota of two messages a mailbox, and no cap per sender.
    const TWO: Quota = Quota {
        per_mailbox: 2,
        per_sender_bytes: i64::MAX,
    };

    #[tokio::test]
    async fn quota_receipts_duplicates_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        assert!(matches!(
            s.send_message(msg("al", "one apple", Some("r1")), TWO)
                .await
                .unwrap(),
            SendOutcome::Stored { .. }
        ));
        assert!(matches!(
            s.send_message(msg("al", "again", Some("r1")), TWO)
                .await
                .unwrap(),
            SendOutcome::Duplicate { .. }
        ));
        assert!(matches!(
            s.send_message(msg("al", "two pears", None), TWO)
                .await
                .unwrap(),
            SendOutcome::Stored { .. }
        ));
        assert_eq!(
            s.send_message(msg("al", "three", None), TWO).await.unwrap(),
            SendOutcome::Full { open: 2 }
        );
        let (page, more) = s.read_inbox(&q("al", 0)).unwrap();
        assert_eq!((page.len(), more), (2, false));
        assert!(page.iter().all(|m| m.state == MessageState::Queued));
        // A read of the first one records its range: only it is delivered.
        s.mark_delivered(vec![("al".into(), 1, page[0].seq)])
            .await
            .unwrap();
        let (page, _) = s.read_inbox(&q("al", 0)).unwrap();
        assert_eq!(page[0].state, MessageState::Delivered);
        assert_eq!(page[1].state, MessageState::Queued);
        // Acking frees the quota and sends a receipt to bob.
        let out = s
            .ack(
                Some(AgentId::parse("al").unwrap()),
                vec![page[0].id],
                3,
                1000,
                10,
            )
            .await
            .unwrap();
        assert_eq!(out.acked, vec![page[0].id]);
        assert_eq!(out.receipts.len(), 1);
        assert_eq!(out.receipts[0].to.as_str(), "bob");
        assert_eq!(s.open_messages(&AgentId::parse("al").unwrap()).unwrap(), 1);
        let (bob, _) = s.read_inbox(&q("bob", 0)).unwrap();
        assert_eq!(bob[0].kind, MessageKind::Receipt);
        assert_eq!(bob[0].reply_to, Some(page[0].id));
        // Someone else's ack is refused and changes nothing.
        let other = s
            .ack(
                Some(AgentId::parse("eve").unwrap()),
                vec![page[1].id],
                3,
                1000,
                10,
            )
            .await
            .unwrap();
        assert_eq!((other.forbidden, other.acked.len()), (vec![page[1].id], 0));
        // Search, with characters FTS5 would otherwise choke on.
        assert_eq!(s.search(None, "pears", 10, 2).unwrap().len(), 1);
        assert_eq!(s.search(None, "\"pea* OR", 10, 2).unwrap().len(), 0);
        assert_eq!(
            s.search(Some(&AgentId::parse("zz").unwrap()), "pears", 10, 2)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn fts_queries_are_quoted() {
        assert_eq!(fts_query("a \"b"), Some("\"a\" \"\"\"b\"".into()));
        assert_eq!(fts_query("   "), None);
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    fn ranges(s: &Store, r: &str) -> Vec<(i64, i64)> {
        s.read(|c| {
            Ok(
                c.prepare("SELECT lo, hi FROM delivered_ranges WHERE recipient = ?1 ORDER BY lo")?
                    .query_map([r], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            )
        })
        .unwrap()
    }

    #[tokio::test]
    async fn ranges_merge_when_they_touch_or_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("r.db")).unwrap();
        for (lo, hi) in [(1, 10), (21, 30), (11, 15), (14, 22), (50, 60)] {
            s.mark_delivered(vec![("a".into(), lo, hi)]).await.unwrap();
        }
        assert_eq!(ranges(&s, "a"), vec![(1, 30), (50, 60)]);
        s.mark_delivered(vec![("b".into(), 5, 6)]).await.unwrap();
        assert_eq!(ranges(&s, "a").len(), 2, "mailboxes do not mix");
    }
}
