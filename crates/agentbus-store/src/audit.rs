//! The audit log: append-only, one row per jekt, registration, pane action
//! and auth failure. Bodies are kept as length + SHA-256 only.

use crate::{Result, Store};
use agentbus_proto::api::AuditEntry;
use rusqlite::{Connection, params_from_iter, types::Value};

/// An audit record to append. The daemon fills `body_len`/`body_sha256`
/// from the body; the body itself never reaches this type.
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    pub ts_ms: i64,
    pub actor: String,
    pub kind: String,
    pub target: Option<String>,
    pub outcome: String,
    pub body_len: Option<i64>,
    pub body_sha256: Option<String>,
    pub detail: Option<String>,
}

/// Filters for reading the log; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub limit: u32,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Entries where this agent is the actor or the target.
    pub agent: Option<String>,
    pub kind: Option<String>,
}

pub(crate) fn insert(conn: &Connection, e: &NewAudit) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO audit (ts_ms, actor, kind, target, outcome, body_len, body_sha256, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        e.ts_ms,
        e.actor,
        e.kind,
        e.target,
        e.outcome,
        e.body_len,
        e.body_sha256,
        e.detail
    ])?;
    Ok(conn.last_insert_rowid())
}

impl Store {
    /// Appends one entry; resolves once it is on disk.
    pub async fn append_audit(&self, entry: NewAudit) -> Result<i64> {
        self.write(move |c| insert(c, &entry)).await
    }

    /// Reads entries matching `q`, newest first. Blocking.
    pub fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from(
            "SELECT id, ts_ms, actor, kind, target, outcome, body_len, body_sha256, detail FROM audit WHERE 1=1",
        );
        let mut args: Vec<Value> = Vec::new();
        if let Some(s) = q.since_ms {
            sql.push_str(" AND ts_ms >= ?");
            args.push(s.into());
        }
        if let Some(u) = q.until_ms {
            sql.push_str(" AND ts_ms <= ?");
            args.push(u.into());
        }
        if let Some(a) = &q.agent {
            sql.push_str(" AND (actor = ? OR target = ?)");
            args.push(format!("agent:{a}").into());
            args.push(a.clone().into());
        }
        if let Some(k) = &q.kind {
            sql.push_str(" AND kind = ?");
            args.push(k.clone().into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push(i64::from(q.limit).into());
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        ts_ms: r.get(1)?,
                        actor: r.get(2)?,
                        kind: r.get(3)?,
                        target: r.get(4)?,
                        outcome: r.get(5)?,
                        body_len: r.get(6)?,
                        body_sha256: r.get(7)?,
                        detail: r.get(8)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Remembers the response to a jekt request id, so a retry with the
    /// same id is answered without a second delivery.
    pub async fn remember_jekt(
        &self,
        sender: String,
        request_id: String,
        response: String,
        ts_ms: i64,
    ) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO jekt_requests (sender, request_id, response, ts_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![sender, request_id, response, ts_ms])?;
            Ok(())
        })
        .await
    }

    /// The remembered response for (sender, request id), if any. Blocking.
    pub fn recall_jekt(&self, sender: &str, request_id: &str) -> Result<Option<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT response FROM jekt_requests WHERE sender = ?1 AND request_id = ?2",
            )?;
            let mut rows = stmt.query(rusqlite::params![sender, request_id])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(actor: &str, kind: &str, target: &str) -> NewAudit {
        NewAudit {
            ts_ms: agentbus_proto::now_ms(),
            actor: actor.into(),
            kind: kind.into(),
            target: Some(target.into()),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn audit_filters_by_agent_and_kind_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).unwrap();
        store
            .append_audit(entry("agent:bob", "jekt", "alice"))
            .await
            .unwrap();
        store
            .append_audit(entry("admin", "open", "carol"))
            .await
            .unwrap();
        store
            .append_audit(entry("admin", "jekt", "bob"))
            .await
            .unwrap();
        let q = |agent: Option<&str>, kind: Option<&str>| AuditQuery {
            limit: 10,
            agent: agent.map(Into::into),
            kind: kind.map(Into::into),
            ..Default::default()
        };
        let bob = store.query_audit(&q(Some("bob"), None)).unwrap();
        assert_eq!(bob.len(), 2);
        assert!(bob[0].id > bob[1].id);
        assert_eq!(store.query_audit(&q(None, Some("open"))).unwrap().len(), 1);
        assert_eq!(
            store
                .query_audit(&AuditQuery {
                    limit: 1,
                    ..Default::default()
                })
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn jekt_request_ids_are_remembered_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j.db")).unwrap();
        store
            .remember_jekt("bob".into(), "r1".into(), "first".into(), 1)
            .await
            .unwrap();
        store
            .remember_jekt("bob".into(), "r1".into(), "second".into(), 2)
            .await
            .unwrap();
        assert_eq!(
            store.recall_jekt("bob", "r1").unwrap().as_deref(),
            Some("first")
        );
        assert_eq!(store.recall_jekt("eve", "r1").unwrap(), None);
    }
}
