//! The durable hold: jekts for a known agent that is offline, kept until
//! it comes back (or they expire), then replayed in order.

use crate::mailbox::parsed;
use crate::{Result, Store};
use agentbus_proto::{AgentId, MessageId};
use rusqlite::{OptionalExtension, params};

#[derive(Debug, Clone)]
pub struct NewHeld {
    pub id: MessageId,
    pub target: AgentId,
    pub sender: String,
    /// Trust, tier, priority and delivery as their wire names.
    pub trust: String,
    pub tier: String,
    pub priority: String,
    pub delivery: String,
    pub body: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

#[derive(Debug, Clone)]
pub struct StoredHeld {
    pub seq: i64,
    pub held: NewHeld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    Held {
        seq: i64,
    },
    /// The agent already has this many held jekts.
    AgentFull(i64),
    /// The instance already holds this many.
    InstanceFull(i64),
}

impl Store {
    /// Holds a jekt unless a cap is reached; resolves once on disk.
    /// Expired jekts do not count towards the caps.
    pub async fn hold(&self, h: NewHeld, per_agent: i64, per_instance: i64) -> Result<HoldOutcome> {
        self.write(move |c| {
            let total: i64 = c
                .prepare_cached("SELECT count(*) FROM held_jekts WHERE expires_ms > ?1")?
                .query_row([h.created_ms], |r| r.get(0))?;
            if total >= per_instance {
                return Ok(HoldOutcome::InstanceFull(total));
            }
            let mine: i64 = c
                .prepare_cached("SELECT count(*) FROM held_jekts WHERE target = ?1 AND expires_ms > ?2")?
                .query_row(params![h.target.as_str(), h.created_ms], |r| r.get(0))?;
            if mine >= per_agent {
                return Ok(HoldOutcome::AgentFull(mine));
            }
            c.prepare_cached(
                "INSERT INTO held_jekts (id, target, sender, trust, tier, priority, body, created_ms, expires_ms, delivery) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                h.id.to_string(),
                h.target.as_str(),
                h.sender,
                h.trust,
                h.tier,
                h.priority,
                h.body,
                h.created_ms,
                h.expires_ms,
                h.delivery
            ])?;
            Ok(HoldOutcome::Held {
                seq: c.last_insert_rowid(),
            })
        })
        .await
    }

    /// The unexpired held jekts of `target`, oldest first. Blocking.
    pub fn held_for(&self, target: &AgentId, now_ms: i64) -> Result<Vec<StoredHeld>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT seq, id, target, sender, trust, tier, priority, body, created_ms, expires_ms, delivery \
                 FROM held_jekts WHERE target = ?1 AND expires_ms > ?2 ORDER BY seq",
            )?
            .query_map(params![target.as_str(), now_ms], |r| {
                Ok(StoredHeld {
                    seq: r.get(0)?,
                    held: NewHeld {
                        id: parsed(r, 1, MessageId::parse)?,
                        target: parsed(r, 2, AgentId::parse)?,
                        sender: r.get(3)?,
                        trust: r.get(4)?,
                        tier: r.get(5)?,
                        priority: r.get(6)?,
                        body: r.get(7)?,
                        created_ms: r.get(8)?,
                        expires_ms: r.get(9)?,
                        delivery: r.get(10)?,
                    },
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
        })
    }

    /// Unexpired held jekts per agent. Blocking.
    pub fn held_counts(&self, now_ms: i64) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT target, count(*) FROM held_jekts WHERE expires_ms > ?1 GROUP BY target",
                )?
                .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Removes one held jekt (it was delivered). Returns whether it was there.
    pub async fn release_held(&self, seq: i64) -> Result<bool> {
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM held_jekts WHERE seq = ?1")?
                .execute([seq])?
                > 0)
        })
        .await
    }

    /// Removes every held jekt of `target`; returns how many.
    pub async fn drop_held_for(&self, target: AgentId) -> Result<usize> {
        self.write(move |c| {
            Ok(
                c.prepare_cached("DELETE FROM held_jekts WHERE target = ?1")?
                    .execute([target.as_str()])?,
            )
        })
        .await
    }

    /// Whether a held jekt with this id exists. Blocking.
    pub fn is_held(&self, id: &MessageId) -> Result<bool> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT 1 FROM held_jekts WHERE id = ?1")?
                .query_row([id.to_string()], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(to: &str, created: i64) -> NewHeld {
        NewHeld {
            id: MessageId::new(),
            target: AgentId::parse(to).unwrap(),
            sender: "bob".into(),
            trust: "self-declared".into(),
            tier: "info".into(),
            priority: "normal".into(),
            delivery: "host".into(),
            body: "b".into(),
            created_ms: created,
            expires_ms: created + 1000,
        }
    }

    #[tokio::test]
    async fn caps_order_expiry_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("h.db")).unwrap();
        for _ in 0..2 {
            assert!(matches!(
                s.hold(held("a", 10), 2, 3).await.unwrap(),
                HoldOutcome::Held { .. }
            ));
        }
        assert_eq!(
            s.hold(held("a", 10), 2, 3).await.unwrap(),
            HoldOutcome::AgentFull(2)
        );
        assert!(matches!(
            s.hold(held("b", 10), 2, 3).await.unwrap(),
            HoldOutcome::Held { .. }
        ));
        assert_eq!(
            s.hold(held("c", 10), 2, 3).await.unwrap(),
            HoldOutcome::InstanceFull(3)
        );
        let a = AgentId::parse("a").unwrap();
        let list = s.held_for(&a, 11).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].seq < list[1].seq);
        assert!(s.release_held(list[0].seq).await.unwrap());
        assert_eq!(s.held_for(&a, 11).unwrap().len(), 1);
        // Past their expiry they are not offered and are swept.
        assert!(s.held_for(&a, 2000).unwrap().is_empty());
        assert_eq!(
            s.sweep(crate::Expiring::HeldJekts, 2001, 100)
                .await
                .unwrap(),
            2
        );
    }
}
