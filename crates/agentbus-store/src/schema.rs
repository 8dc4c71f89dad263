//! Schema migrations, applied in order at open; `PRAGMA user_version`
//! records how many have run.

use crate::Result;
use rusqlite::Connection;

/// The daemon's schema, in order.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: audit log and jekt idempotency.
    "CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
     );
     CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT,
        outcome TEXT NOT NULL,
        body_len INTEGER,
        body_sha256 TEXT,
        detail TEXT
     );
     CREATE INDEX audit_ts ON audit(ts_ms);
     CREATE INDEX audit_kind ON audit(kind, id);
     CREATE INDEX audit_actor ON audit(actor, id);
     CREATE INDEX audit_target ON audit(target, id);
     CREATE TABLE jekt_requests (
        sender TEXT NOT NULL,
        request_id TEXT NOT NULL,
        response TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        PRIMARY KEY (sender, request_id)
     ) WITHOUT ROWID;",
    // 2: mailbox (+ full-text search), held jekts, known agents, events.
    "CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        trust TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        thread_id TEXT,
        reply_to TEXT,
        priority TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        acked_ms INTEGER,
        receipt INTEGER NOT NULL DEFAULT 0,
        request_id TEXT
     );
     CREATE INDEX messages_inbox ON messages(recipient, seq);
     -- Unacked mail only.
     CREATE INDEX messages_open ON messages(recipient, seq) WHERE acked_ms IS NULL;
     CREATE INDEX messages_expiry ON messages(expires_ms);
     CREATE UNIQUE INDEX messages_request ON messages(sender, request_id) WHERE request_id IS NOT NULL;
     CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='seq');
     CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, body) VALUES (new.seq, new.body);
     END;
     CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.seq, old.body);
     END;
     -- Unacked messages per recipient, for the quota; kept by triggers.
     CREATE TABLE mailbox_open (
        recipient TEXT PRIMARY KEY,
        open INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TRIGGER mailbox_open_insert AFTER INSERT ON messages WHEN new.acked_ms IS NULL BEGIN
        INSERT INTO mailbox_open(recipient, open) VALUES (new.recipient, 1)
          ON CONFLICT(recipient) DO UPDATE SET open = open + 1;
     END;
     CREATE TRIGGER mailbox_open_ack AFTER UPDATE OF acked_ms ON messages
       WHEN old.acked_ms IS NULL AND new.acked_ms IS NOT NULL BEGIN
        UPDATE mailbox_open SET open = open - 1 WHERE recipient = new.recipient;
     END;
     CREATE TRIGGER mailbox_open_delete AFTER DELETE ON messages WHEN old.acked_ms IS NULL BEGIN
        UPDATE mailbox_open SET open = open - 1 WHERE recipient = old.recipient;
     END;
     -- Cursor ranges of a mailbox that reads have returned: a message is
     -- `delivered` when its seq lies in one. A read records one range (a
     -- small write) instead of touching every row it returned.
     CREATE TABLE delivered_ranges (
        recipient TEXT NOT NULL,
        lo INTEGER NOT NULL,
        hi INTEGER NOT NULL,
        PRIMARY KEY (recipient, lo)
     ) WITHOUT ROWID;
     CREATE TABLE held_jekts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        target TEXT NOT NULL,
        sender TEXT NOT NULL,
        trust TEXT NOT NULL,
        tier TEXT NOT NULL,
        priority TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
     );
     CREATE INDEX held_target ON held_jekts(target, seq);
     CREATE INDEX held_expiry ON held_jekts(expires_ms);
     CREATE TABLE known_agents (
        agent_id TEXT PRIMARY KEY,
        registered_at_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        scope TEXT NOT NULL,
        event TEXT NOT NULL,
        ts_ms INTEGER NOT NULL
     );
     CREATE INDEX events_type_scope ON events(type, scope, seq);
     CREATE INDEX events_ts ON events(ts_ms);",
    // 3: how a held jekt arrived (host, channel, wan), kept for its replay.
    "ALTER TABLE held_jekts ADD COLUMN delivery TEXT NOT NULL DEFAULT 'host';",
    // Bytes of unacked mail per sender, for the per-sender cap (a sender
    // cannot fill the disk by spreading mail over many mailboxes); kept
    // by triggers, like the quota.
    "CREATE TABLE sender_open (
        sender TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO sender_open(sender, bytes)
       SELECT sender, SUM(length(CAST(body AS BLOB))) FROM messages WHERE acked_ms IS NULL GROUP BY sender;
     CREATE TRIGGER sender_open_insert AFTER INSERT ON messages WHEN new.acked_ms IS NULL BEGIN
        INSERT INTO sender_open(sender, bytes) VALUES (new.sender, length(CAST(new.body AS BLOB)))
          ON CONFLICT(sender) DO UPDATE SET bytes = bytes + excluded.bytes;
     END;
     CREATE TRIGGER sender_open_ack AFTER UPDATE OF acked_ms ON messages
       WHEN old.acked_ms IS NULL AND new.acked_ms IS NOT NULL BEGIN
        UPDATE sender_open SET bytes = bytes - length(CAST(old.body AS BLOB)) WHERE sender = old.sender;
     END;
     CREATE TRIGGER sender_open_delete AFTER DELETE ON messages WHEN old.acked_ms IS NULL BEGIN
        UPDATE sender_open SET bytes = bytes - length(CAST(old.body AS BLOB)) WHERE sender = old.sender;
     END;",
];

/// Applies the `migrations` not yet applied to this database.
pub(crate) fn migrate(conn: &Connection, migrations: &[&str]) -> Result<()> {
    let done: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in migrations.iter().enumerate().skip(done) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
