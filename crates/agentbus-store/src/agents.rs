//! Agents this instance has known, so that after a restart a jekt to one
//! of them is held (it is offline) rather than refused as unknown.

use crate::{Result, Store};
use rusqlite::params;

impl Store {
    pub async fn remember_agent(&self, agent_id: String, at_ms: i64) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO known_agents (agent_id, registered_at_ms) VALUES (?1, ?2) \
                 ON CONFLICT(agent_id) DO UPDATE SET registered_at_ms = excluded.registered_at_ms",
            )?
            .execute(params![agent_id, at_ms])?;
            Ok(())
        })
        .await
    }

    pub async fn forget_agent(&self, agent_id: String) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM known_agents WHERE agent_id = ?1")?
                .execute([agent_id])?;
            Ok(())
        })
        .await
    }

    /// Every remembered agent with when it last registered. Blocking.
    pub fn known_agents(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT agent_id, registered_at_ms FROM known_agents ORDER BY agent_id",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
