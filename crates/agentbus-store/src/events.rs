//! Event history: the last N events per (type, scope), for events
//! published with `persist: N`.

use crate::{Result, Store};
use rusqlite::params;

/// An event as stored: its JSON, as published.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub json: String,
}

/// Where the history of one (type, scope) stands.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HistoryPointer {
    #[serde(rename = "type")]
    pub event_type: String,
    pub scope: String,
    pub count: i64,
    pub last_seq: i64,
    pub last_ts_ms: i64,
}

impl Store {
    /// Appends `json` under each of `scopes` and keeps only the newest
    /// `keep` per (type, scope). Queued at once (not when awaited), so a
    /// caller that does not need the commit may drop the future.
    pub fn persist_event(
        &self,
        event_type: String,
        scopes: Vec<String>,
        json: String,
        ts_ms: i64,
        keep: u32,
    ) -> impl Future<Output = Result<()>> + use<> {
        self.write(move |c| {
            for scope in &scopes {
                c.prepare_cached("INSERT INTO events (type, scope, event, ts_ms) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![event_type, scope, json, ts_ms])?;
                c.prepare_cached(
                    "DELETE FROM events WHERE type = ?1 AND scope = ?2 AND seq <= \
                     (SELECT seq FROM events WHERE type = ?1 AND scope = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
                )?
                                .execute(params![event_type, scope, keep])?;
            }
            Ok(())
        })
    }

    /// What history is kept: each (type, scope) with its count and its
    /// newest entry's seq and time, ordered by type then scope. Blocking.
    pub fn event_pointers(&self) -> Result<Vec<HistoryPointer>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT type, scope, COUNT(*), MAX(seq), MAX(ts_ms) FROM events \
                 GROUP BY type, scope ORDER BY type, scope",
            )?
            .query_map([], |r| {
                Ok(HistoryPointer {
                    event_type: r.get(0)?,
                    scope: r.get(1)?,
                    count: r.get(2)?,
                    last_seq: r.get(3)?,
                    last_ts_ms: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
        })
    }

    /// The newest `limit` events of (type, scope), returned oldest first.
    /// Blocking.
    pub fn event_history(
        &self,
        event_type: &str,
        scope: &str,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        self.read(|c| {
            let mut rows = c
                .prepare_cached(
                    "SELECT seq, event FROM events WHERE type = ?1 AND scope = ?2 ORDER BY seq DESC LIMIT ?3",
                )?
                .query_map(params![event_type, scope, limit], |r| {
                    Ok(StoredEvent {
                        seq: r.get(0)?,
                        json: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.reverse();
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn history_keeps_the_last_n_per_type_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("e.db")).unwrap();
        for i in 0..5 {
            s.persist_event(
                "t".into(),
                vec!["a".into(), "b".into()],
                format!("{i}"),
                i,
                3,
            )
            .await
            .unwrap();
        }
        s.persist_event("t".into(), vec!["b".into()], "x".into(), 9, 3)
            .await
            .unwrap();
        let a: Vec<String> = s
            .event_history("t", "a", 10)
            .unwrap()
            .into_iter()
            .map(|e| e.json)
            .collect();
        assert_eq!(a, vec!["2", "3", "4"]);
        let b: Vec<String> = s
            .event_history("t", "b", 2)
            .unwrap()
            .into_iter()
            .map(|e| e.json)
            .collect();
        assert_eq!(b, vec!["4", "x"]);
        assert_eq!(
            s.sweep(crate::Expiring::Events, 3, 100).await.unwrap(),
            1,
            "one row (scope a, ts 2) is older than 3"
        );
    }
}
