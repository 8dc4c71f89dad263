//! Deleting what has expired, a batch at a time.

use crate::{Result, Store};
use rusqlite::params;

/// Kinds of rows that expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Messages past their TTL (`expires_ms`).
    Messages,
    /// Held jekts past theirs.
    HeldJekts,
    /// Event history older than a cut-off (`ts_ms`).
    Events,
    /// Audit entries older than a cut-off.
    Audit,
}

impl Expiring {
    pub const ALL: [Expiring; 4] = [
        Expiring::Messages,
        Expiring::HeldJekts,
        Expiring::Events,
        Expiring::Audit,
    ];

    /// (table, key column, time column): fixed names, never input.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Expiring::Messages => ("messages", "seq", "expires_ms"),
            Expiring::HeldJekts => ("held_jekts", "seq", "expires_ms"),
            Expiring::Events => ("events", "seq", "ts_ms"),
            Expiring::Audit => ("audit", "id", "ts_ms"),
        }
    }
}

impl Store {
    /// Deletes up to `batch` rows of `what` whose time is before
    /// `before_ms`; returns how many. One short transaction: call it in a
    /// loop to delete more without holding writers up.
    pub async fn sweep(&self, what: Expiring, before_ms: i64, batch: u32) -> Result<usize> {
        let (table, key, time) = what.columns();
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {time} < ?1 LIMIT ?2)"
        );
        self.write(move |c| Ok(c.prepare_cached(&sql)?.execute(params![before_ms, batch])?))
            .await
    }
}
