//! Blocks: the panes of the App API's workspace, whatever they show.
//!
//! A `term` block's PTY lives in the agents table (named or not, see
//! [`crate::agents::Agents::add_unnamed_pane`]), so jekts, attach and the
//! tracker find it the same way. This table keeps what the App API adds
//! about any block: its view, tab, parent, metadata, and for a `sysinfo`
//! block the task publishing its events. A pane opened over HTTP has no
//! entry here and shows as a `term` block in no tab.

use agentbus_proto::event::EventKind;
use agentbus_proto::{AgentId, BlockId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    Term,
    Editor,
    Browser,
    Sysinfo,
    Help,
}

impl View {
    pub const NAMES: &str = "term, editor, browser, sysinfo, help";

    pub fn parse(s: &str) -> Option<View> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// Aborts its task when dropped (the block is gone).
#[derive(Debug)]
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
pub struct BlockEntry {
    pub view: View,
    pub tab_id: Option<String>,
    pub parent: Option<BlockId>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub created_ms: i64,
    task: Option<TaskGuard>,
}

/// What `blockinfo` and `blockslist` report of one block.
#[derive(Debug, Clone, Serialize)]
pub struct BlockSummary {
    pub block_id: BlockId,
    pub view: View,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tab_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<BlockId>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub created_ms: i64,
}

#[derive(Default)]
pub struct Blocks {
    // A std RwLock: short lookups and inserts, never across an await.
    table: RwLock<HashMap<BlockId, BlockEntry>>,
    /// Agents' metadata (`setmeta` on an agent), by name: it stays with
    /// the name across its panes.
    agent_meta: RwLock<HashMap<AgentId, serde_json::Map<String, serde_json::Value>>>,
}

impl Blocks {
    pub fn insert(
        &self,
        id: BlockId,
        view: View,
        tab_id: Option<String>,
        parent: Option<BlockId>,
        meta: serde_json::Map<String, serde_json::Value>,
    ) {
        if let Ok(mut t) = self.table.write() {
            t.insert(
                id,
                BlockEntry {
                    view,
                    tab_id,
                    parent,
                    meta,
                    created_ms: agentbus_proto::now_ms(),
                    task: None,
                },
            );
        }
    }

    /// Ties `task` to block `id`: it is aborted when the block goes.
    pub fn own_task(&self, id: &BlockId, task: tokio::task::AbortHandle) {
        match self.table.write() {
            Ok(mut t) => match t.get_mut(id) {
                Some(e) => e.task = Some(TaskGuard(task)),
                None => task.abort(),
            },
            Err(_) => task.abort(),
        }
    }

    pub fn get(&self, id: &BlockId) -> Option<BlockSummary> {
        let t = self.table.read().ok()?;
        t.get(id).map(|e| summary(*id, e))
    }

    pub fn all(&self) -> Vec<BlockSummary> {
        self.table
            .read()
            .map(|t| t.iter().map(|(id, e)| summary(*id, e)).collect())
            .unwrap_or_default()
    }

    pub fn children(&self, id: &BlockId) -> Vec<BlockId> {
        self.table
            .read()
            .map(|t| {
                t.iter()
                    .filter(|(_, e)| e.parent.as_ref() == Some(id))
                    .map(|(c, _)| *c)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `f` on block `id`'s entry, first made (a `term` block in no
    /// tab) for a pane opened over HTTP when `pane` says it is one.
    pub fn update<R>(
        &self,
        id: &BlockId,
        pane: bool,
        f: impl FnOnce(&mut BlockEntry) -> R,
    ) -> Option<R> {
        let mut t = self.table.write().ok()?;
        if pane && !t.contains_key(id) {
            t.insert(
                *id,
                BlockEntry {
                    view: View::Term,
                    tab_id: None,
                    parent: None,
                    meta: Default::default(),
                    created_ms: agentbus_proto::now_ms(),
                    task: None,
                },
            );
        }
        t.get_mut(id).map(f)
    }

    /// Stops block `id`'s task, if it has one.
    pub fn stop_task(&self, id: &BlockId) {
        if let Ok(mut t) = self.table.write()
            && let Some(e) = t.get_mut(id)
        {
            e.task = None;
        }
    }

    pub fn agent_meta(&self, id: &AgentId) -> serde_json::Map<String, serde_json::Value> {
        self.agent_meta
            .read()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .unwrap_or_default()
    }

    /// Every agent with metadata, and it.
    pub fn all_agent_meta(&self) -> Vec<(AgentId, serde_json::Map<String, serde_json::Value>)> {
        self.agent_meta
            .read()
            .map(|m| m.iter().map(|(a, v)| (a.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Runs `f` on agent `id`'s metadata under the table's lock; what it
    /// leaves is kept only if it succeeds.
    pub fn with_agent_meta<E>(
        &self,
        id: &AgentId,
        f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut all = self
            .agent_meta
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut meta = all.get(id).cloned().unwrap_or_default();
        f(&mut meta)?;
        if meta.is_empty() {
            all.remove(id);
        } else {
            all.insert(id.clone(), meta);
        }
        Ok(())
    }

    pub fn set_agent_meta(&self, id: &AgentId, meta: serde_json::Map<String, serde_json::Value>) {
        if let Ok(mut m) = self.agent_meta.write() {
            if meta.is_empty() {
                m.remove(id);
            } else {
                m.insert(id.clone(), meta);
            }
        }
    }

    /// Removes a block (its task stops); whether it was here.
    pub fn remove(&self, id: &BlockId) -> bool {
        self.table.write().is_ok_and(|mut t| t.remove(id).is_some())
    }

    /// How many blocks have a live task (sysinfo publishers).
    pub fn tasks(&self) -> usize {
        self.table
            .read()
            .map(|t| t.values().filter(|e| e.task.is_some()).count())
            .unwrap_or(0)
    }
}

fn summary(id: BlockId, e: &BlockEntry) -> BlockSummary {
    BlockSummary {
        block_id: id,
        view: e.view,
        tab_id: e.tab_id.clone(),
        parent_id: e.parent,
        meta: e.meta.clone(),
        created_ms: e.created_ms,
    }
}

/// CPU counters from the first line of `/proc/stat`: (busy, total).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().filter_map(|x| x.parse().ok());
    Some([it.next()?, it.next()?, it.next()?])
}

/// Publishes a `sysinfo` event for `block` every `every`, until aborted.
pub async fn publish_sysinfo(events: crate::events::EventBus, block: BlockId, every: Duration) {
    let mut last = cpu_ticks();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = cpu_ticks();
        let cpu_percent = match (last, now) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                (b1.saturating_sub(b0)) as f64 * 100.0 / (t1 - t0) as f64
            }
            _ => 0.0,
        };
        last = now;
        let (total, available) = meminfo().unwrap_or((0, 0));
        let used = if total > 0 {
            (total - available.min(total)) as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        events.publish(EventKind::Sysinfo {
            block_id: block,
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            mem_total_kb: total,
            mem_available_kb: available,
            mem_used_percent: (used * 10.0).round() / 10.0,
            load: loadavg().unwrap_or([0.0; 3]),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_parse_by_name() {
        assert_eq!(View::parse("sysinfo"), Some(View::Sysinfo));
        assert_eq!(View::parse("Term"), None);
        assert!(cpu_ticks().is_some_and(|(b, t)| b <= t));
        assert!(meminfo().is_some_and(|(t, a)| t > 0 && a <= t));
        assert!(loadavg().is_some());
    }

    #[tokio::test]
    async fn a_removed_block_stops_its_task() {
        let blocks = Blocks::default();
        let id = BlockId::new();
        blocks.insert(id, View::Sysinfo, None, None, Default::default());
        let task = tokio::spawn(std::future::pending::<()>());
        blocks.own_task(&id, task.abort_handle());
        assert_eq!(blocks.tasks(), 1);
        assert!(blocks.remove(&id));
        assert!(task.await.unwrap_err().is_cancelled());
    }
}
