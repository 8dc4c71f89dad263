//! The daemon's embedded SQLite store (`agentbus.db`): mailbox, hold,
//! audit, event history, known agents, jekt request ids.
//!
//! [`Store`] is the daemon's schema on top of [`Db`], the engine (one
//! writer thread with group commit, WAL, a reader pool) that the relay
//! uses for its own database too.

mod agents;
mod audit;
mod db;
mod events;
mod hold;
mod mailbox;
mod retention;
mod schema;

pub use audit::{AuditQuery, NewAudit};
pub use db::{Db, Result, StoreError, WriterStats, count_rows};
pub use events::{HistoryPointer, StoredEvent};
pub use hold::{HoldOutcome, NewHeld, StoredHeld};
pub use mailbox::{AckOutcome, InboxQuery, NewMessage, Quota, SendOutcome};
pub use retention::Expiring;

use rusqlite::Connection;
use std::path::Path;

/// Cheap-clone handle to the daemon's store.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens (creating if needed) the daemon's database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store {
            db: Db::open(path, schema::MIGRATIONS)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The writer thread's commit times and write count (`/metrics`).
    pub fn writer_stats(&self) -> &WriterStats {
        self.db.writer_stats()
    }

    /// Runs `f` in the writer's transaction; see [`Db::write`].
    pub fn write<T, F>(&self, f: F) -> impl std::future::Future<Output = Result<T>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.db.write(f)
    }

    /// Runs a read on a reader connection; see [`Db::read`].
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.db.read(f)
    }

    /// Finishes queued writes and closes; see [`Db::close`].
    pub fn close(&self) {
        self.db.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_job_does_not_undo_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let ok1 =
            store.write(|c| Ok(c.execute("INSERT INTO meta(key, value) VALUES ('a', '1')", [])?));
        let bad = store.write(|c| {
            c.execute("INSERT INTO meta(key, value) VALUES ('b', '2')", [])?;
            Err::<(), _>(StoreError::Malformed("nope".into()))
        });
        let ok2 =
            store.write(|c| Ok(c.execute("INSERT INTO meta(key, value) VALUES ('c', '3')", [])?));
        assert!(ok1.await.is_ok());
        assert!(bad.await.is_err());
        assert!(ok2.await.is_ok());
        let keys: Vec<String> = store
            .read(|c| {
                let mut s =
                    c.prepare("SELECT key FROM meta WHERE key IN ('a','b','c') ORDER BY key")?;
                let rows = s
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(rows)
            })
            .unwrap();
        assert_eq!(keys, vec!["a".to_string(), "c".into()]);
        // Every job is counted and every batch timed before it answers.
        let stats = store.writer_stats();
        assert_eq!(stats.writes.get(), 3);
        assert!((1..=3).contains(&stats.commit_seconds.count()));
        store.close();
        assert!(matches!(
            store.write(|_| Ok(())).await,
            Err(StoreError::Closed)
        ));
    }
}
