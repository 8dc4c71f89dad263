//! The agents of this instance and the panes they live in.
//!
//! An agent is a name. It may be bound to a pane (a block) or be external
//! (registered with no pane). Several names may be bound to one pane.
//! Names are case-sensitive; a target that matches no name exactly but
//! exactly one name ignoring case resolves to that name, and one that
//! matches several ignoring case is ambiguous, never guessed.

use crate::hold::HeldIndex;
use agentbus_proto::api::{AgentInfo, AgentState, Provider};
use agentbus_proto::{AgentId, BlockId, now_ms};
use agentbus_term::Pane;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub id: AgentId,
    pub block: Option<BlockId>,
    pub registered_at_ms: i64,
    /// Known from an earlier run of the daemon, not registered in this one.
    pub remembered: bool,
}

#[derive(Clone)]
pub struct PaneRecord {
    pub block: BlockId,
    pub pane: Pane,
    pub provider: Provider,
    pub command: Vec<String>,
    /// As opened, so a restart runs the same again.
    pub cwd: Option<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// The host the program runs on (through its ssh master), if not here.
    pub conn: Option<crate::conn::Destination>,
    pub created_ms: i64,
    /// Becomes true once the pane's exit has been published and audited.
    pub exit_recorded: tokio::sync::watch::Receiver<bool>,
}

/// Where a jekt target leads.
pub enum Resolution {
    /// A pane that can take the jekt now (or has just exited).
    Pane {
        agent: AgentId,
        record: PaneRecord,
    },
    /// Known, but with no pane to type into.
    Offline {
        agent: AgentId,
    },
    NotFound {
        known: Vec<AgentId>,
    },
    Ambiguous(Vec<AgentId>),
}

#[derive(Default)]
struct Table {
    agents: BTreeMap<AgentId, AgentRecord>,
    panes: HashMap<BlockId, PaneRecord>,
}

/// The table. A std RwLock: every access is a short lookup or insert,
/// never across an await.
#[derive(Default)]
pub struct Agents {
    table: RwLock<Table>,
    // Bumped whenever a name is bound, unbound or its pane exits, so the
    // relay poller re-polls for the new set at once.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Agents {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        // invariant: no code panics while holding this lock.
        self.table.read().expect("agents lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        // invariant: no code panics while holding this lock.
        self.table.write().expect("agents lock poisoned")
    }

    /// Wakes whoever follows changes to the set of reachable agents.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Names reachable on this instance right now: registered in this run
    /// with a running pane, or external (no pane).
    pub fn reachable(&self) -> Vec<(AgentId, Option<BlockId>)> {
        let t = self.read();
        t.agents
            .values()
            .filter(|a| !a.remembered)
            .filter(|a| {
                a.block
                    .is_none_or(|b| t.panes.get(&b).is_some_and(|p| p.pane.is_running()))
            })
            .map(|a| (a.id.clone(), a.block))
            .collect()
    }

    /// The name `target` stands for: itself if an agent has exactly that
    /// name, else the one name equal to it ignoring case. `Err` with the
    /// candidates when several are; `Ok(None)` when none is.
    pub fn canonical(&self, target: &AgentId) -> Result<Option<AgentId>, Vec<AgentId>> {
        canonical_in(&self.read(), target)
    }

    /// Where a jekt for `target` goes, the name resolved as
    /// [`Agents::canonical`] says; with `exact`, only an agent of exactly
    /// that name (a caller that resolved the name already and checked
    /// what it may do with that agent).
    pub fn resolve(&self, target: &AgentId, exact: bool) -> Resolution {
        let t = self.read();
        let found = if exact {
            Ok(t.agents.contains_key(target).then(|| target.clone()))
        } else {
            canonical_in(&t, target)
        };
        let id = match found {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Resolution::NotFound {
                    known: t.agents.keys().cloned().collect(),
                };
            }
            Err(several) => return Resolution::Ambiguous(several),
        };
        let rec = &t.agents[&id];
        match rec.block.and_then(|b| t.panes.get(&b)) {
            Some(p) if p.pane.is_running() => Resolution::Pane {
                agent: id,
                record: p.clone(),
            },
            _ => Resolution::Offline { agent: id },
        }
    }

    pub fn get(&self, id: &AgentId) -> Option<AgentRecord> {
        self.read().agents.get(id).cloned()
    }

    /// Adds agents known from an earlier run (offline until they come
    /// back); names already present are left alone.
    pub fn remember(&self, known: Vec<(AgentId, i64)>) {
        let mut t = self.write();
        for (id, at) in known {
            t.agents.entry(id.clone()).or_insert(AgentRecord {
                id,
                block: None,
                registered_at_ms: at,
                remembered: true,
            });
        }
    }

    pub fn pane_of(&self, id: &AgentId) -> Option<PaneRecord> {
        let t = self.read();
        t.agents
            .get(id)?
            .block
            .and_then(|b| t.panes.get(&b))
            .cloned()
    }

    pub fn pane(&self, block: &BlockId) -> Option<PaneRecord> {
        self.read().panes.get(block).cloned()
    }

    /// The first name bound to `block`, if any (the one shown for it).
    pub fn first_name(&self, block: &BlockId) -> Option<AgentId> {
        self.names_of(block).into_iter().next()
    }

    pub fn names_of(&self, block: &BlockId) -> Vec<AgentId> {
        self.read()
            .agents
            .values()
            .filter(|a| a.block.as_ref() == Some(block))
            .map(|a| a.id.clone())
            .collect()
    }

    /// Names registered in this run (not merely remembered), with their
    /// panes.
    pub fn registered(&self) -> Vec<(AgentId, Option<BlockId>)> {
        self.read()
            .agents
            .values()
            .filter(|a| !a.remembered)
            .map(|a| (a.id.clone(), a.block))
            .collect()
    }

    pub fn all_panes(&self) -> Vec<PaneRecord> {
        self.read().panes.values().cloned().collect()
    }

    /// Adds a pane and binds `agent` to it, replacing whatever the name was
    /// bound to. Returns the pane the name was bound to before, if it is
    /// left with no name (the caller stops it).
    pub fn add_pane(&self, agent: &AgentId, record: PaneRecord) -> Option<PaneRecord> {
        let mut t = self.write();
        let block = record.block;
        t.panes.insert(block, record);
        let old = t.agents.insert(
            agent.clone(),
            AgentRecord {
                id: agent.clone(),
                block: Some(block),
                registered_at_ms: now_ms(),
                remembered: false,
            },
        );
        let orphaned = old.and_then(|o| o.block).and_then(|b| orphan(&mut t, b));
        drop(t);
        self.changed();
        orphaned
    }

    /// Adds a pane no name is bound to (a `term` block of the App API).
    pub fn add_unnamed_pane(&self, record: PaneRecord) {
        self.write().panes.insert(record.block, record);
    }

    /// Puts a new pane in `record.block`'s place (a restart); the names
    /// bound to the block stay bound. Returns the pane it replaced.
    pub fn replace_pane(&self, record: PaneRecord) -> Option<PaneRecord> {
        let old = self.write().panes.insert(record.block, record);
        self.changed();
        old
    }

    /// Removes a pane no name is bound to; `Err` with the names if any are.
    pub fn remove_unnamed_pane(&self, block: &BlockId) -> Result<Option<PaneRecord>, Vec<AgentId>> {
        let mut t = self.write();
        let names: Vec<AgentId> = t
            .agents
            .values()
            .filter(|a| a.block.as_ref() == Some(block))
            .map(|a| a.id.clone())
            .collect();
        if !names.is_empty() {
            return Err(names);
        }
        Ok(t.panes.remove(block))
    }

    /// Binds `agent` to `block` (which must exist) or, with `None`, makes
    /// it external. Returns the pane the name was bound to before, if that
    /// pane is left with no name.
    pub fn bind(
        &self,
        agent: &AgentId,
        block: Option<BlockId>,
    ) -> Result<Option<PaneRecord>, BindError> {
        let mut t = self.write();
        if let Some(b) = block
            && !t.panes.contains_key(&b)
        {
            return Err(BindError::NoSuchBlock(b));
        }
        let old = t.agents.insert(
            agent.clone(),
            AgentRecord {
                id: agent.clone(),
                block,
                registered_at_ms: now_ms(),
                remembered: false,
            },
        );
        let orphaned = old
            .and_then(|o| o.block)
            .filter(|b| Some(*b) != block)
            .and_then(|b| orphan(&mut t, b));
        drop(t);
        self.changed();
        Ok(orphaned)
    }

    /// Removes a name. Returns its record and, if its pane is left with no
    /// name, that pane (the caller stops it).
    pub fn remove(&self, agent: &AgentId) -> Option<(AgentRecord, Option<PaneRecord>)> {
        let mut t = self.write();
        let rec = t.agents.remove(agent)?;
        let pane = rec.block.and_then(|b| orphan(&mut t, b));
        drop(t);
        self.changed();
        Some((rec, pane))
    }

    pub fn info(&self, id: &AgentId, idle_quiet_ms: u64, held: &HeldIndex) -> Option<AgentInfo> {
        let t = self.read();
        let rec = t.agents.get(id)?;
        Some(describe(
            rec,
            rec.block.and_then(|b| t.panes.get(&b)),
            idle_quiet_ms,
            held,
        ))
    }

    pub fn list(&self, idle_quiet_ms: u64, held: &HeldIndex) -> Vec<AgentInfo> {
        let t = self.read();
        t.agents
            .values()
            .map(|rec| {
                describe(
                    rec,
                    rec.block.and_then(|b| t.panes.get(&b)),
                    idle_quiet_ms,
                    held,
                )
            })
            .collect()
    }
}

fn canonical_in(t: &Table, target: &AgentId) -> Result<Option<AgentId>, Vec<AgentId>> {
    if t.agents.contains_key(target) {
        return Ok(Some(target.clone()));
    }
    let folded = target.as_str().to_ascii_lowercase();
    let mut matches: Vec<AgentId> = t
        .agents
        .keys()
        .filter(|k| k.as_str().to_ascii_lowercase() == folded)
        .cloned()
        .collect();
    match matches.len() {
        0 | 1 => Ok(matches.pop()),
        _ => Err(matches),
    }
}

/// Drops pane `block` from the table if no name is bound to it any more.
fn orphan(t: &mut Table, block: BlockId) -> Option<PaneRecord> {
    if t.agents.values().any(|a| a.block == Some(block)) {
        return None;
    }
    t.panes.remove(&block)
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("no pane with block id {0}")]
    NoSuchBlock(BlockId),
}

fn describe(
    rec: &AgentRecord,
    pane: Option<&PaneRecord>,
    idle_quiet_ms: u64,
    held: &HeldIndex,
) -> AgentInfo {
    let mut info = AgentInfo {
        agent_id: rec.id.clone(),
        block_id: rec.block,
        provider: None,
        state: if rec.remembered {
            AgentState::Offline
        } else {
            AgentState::External
        },
        pid: None,
        exit_code: None,
        exit_signal: None,
        last_activity_ms: None,
        registered_at_ms: rec.registered_at_ms,
        command: Vec::new(),
        rows: None,
        cols: None,
        bracketed_paste: false,
        output_bytes: 0,
        output_skipped_bytes: 0,
        held_jekts: held.count(&rec.id) as u32,
        readiness: None,
        tmux: None,
        unread_mail: None,
    };
    let Some(p) = pane else { return info };
    info.tmux = p.pane.tmux().map(|t| agentbus_proto::api::TmuxPane {
        socket: t
            .server
            .socket()
            .map(|s| s.display().to_string())
            .unwrap_or_default(),
        pane_id: t.id.clone(),
        pane_pid: t.pid,
    });
    let (rows, cols) = p.pane.size();
    info.provider = Some(p.provider);
    info.pid = p.pane.pid();
    info.command = p.command.clone();
    info.rows = Some(rows);
    info.cols = Some(cols);
    info.bracketed_paste = p.pane.modes().bracketed_paste();
    info.last_activity_ms = p.pane.last_output_ms();
    let stats = p.pane.stats();
    info.output_bytes = stats.absorbed;
    info.output_skipped_bytes = stats.skipped;
    // The screen is read (for a tmux pane: one capture) only for a pane
    // that still runs.
    info.readiness = p
        .pane
        .is_running()
        .then(|| p.pane.readiness())
        .filter(|r| *r != agentbus_term::Readiness::Unknown)
        .map(|r| r.label());
    info.state = match (p.pane.exit_info(), info.last_activity_ms) {
        (Some(exit), _) => {
            info.exit_code = exit.code;
            info.exit_signal = exit.signal;
            AgentState::Exited
        }
        // A program that prints nothing (it waits for input) is running
        // once it has had the quiet time to start.
        (None, None) if now_ms() - p.created_ms < idle_quiet_ms as i64 => AgentState::Starting,
        (None, None) => AgentState::Running,
        (None, Some(last)) if now_ms() - last < idle_quiet_ms as i64 => AgentState::Running,
        (None, Some(_)) => AgentState::Idle,
    };
    info
}
