//! The process tracker: which OS processes belong to a pane, read from
//! `/proc` (Linux).
//!
//! A pane's program is a session leader on its own PTY. Its members are
//! every process descended from it, plus any process still in its session
//! that was re-parented away (a double fork without `setsid`). A process
//! is known by (pid, start time): a pid the kernel handed to a new process
//! after the old one exited has a different start time and is refused.
//! Signals go through a pidfd opened *before* the identity is checked
//! again, so the process checked is the process signalled.
//!
//! Confidence, reported with every answer:
//! - `high` — every member is in the pane's session: nothing left it;
//! - `best_effort` — some descendant started a session of its own, so a
//!   process that then left the tree could not be followed;
//! - `none` — no `/proc`, or the pane's program is not running.

use agentbus_proto::BlockId;
use agentbus_proto::sync::lock;
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    High,
    BestEffort,
    None,
}

/// One process, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    #[serde(skip)]
    pub sid: u32,
    #[serde(skip)]
    pub pgrp: u32,
    /// The executable's name as the kernel keeps it (`/proc/<pid>/comm`).
    #[serde(skip)]
    pub comm: String,
    /// Clock ticks after boot at which it started: with the pid, its
    /// identity.
    pub start_time: u64,
    pub rss_kb: u64,
    pub state: String,
    pub cmdline: String,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(pid: u32, stat: &str) -> Option<Proc> {
    let close = stat.rfind(')')?;
    let name = stat.get(stat.find('(')? + 1..close)?.to_string();
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) session(6) ... starttime(22)
    // ... rss(24); index = field - 3.
    let page_kb = (rustix::param::page_size() / 1024) as u64;
    Some(Proc {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
        rss_kb: f.get(21)?.parse::<u64>().ok()? * page_kb,
        state: f.first()?.to_string(),
        comm: name.clone(),
        cmdline: name,
    })
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut p = parse_stat(pid, &stat)?;
    if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.is_empty() {
            p.cmdline = args.join(" ");
        }
    }
    Some(p)
}

/// Every process `/proc` shows now; `None` without `/proc`.
pub fn all_procs() -> Option<Vec<Proc>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(read_proc)
            .collect(),
    )
}

/// The processes of the pane whose program is `root`.
#[derive(Debug, Clone, Serialize)]
pub struct Tree {
    pub confidence: Confidence,
    pub processes: Vec<Proc>,
}

pub fn tree(root: Option<u32>) -> Tree {
    tree_in(all_procs().as_deref(), root)
}

/// The tree of `root` within a snapshot of `/proc` (one read serves
/// several panes).
pub fn tree_in(procs: Option<&[Proc]>, root: Option<u32>) -> Tree {
    let none = Tree {
        confidence: Confidence::None,
        processes: Vec::new(),
    };
    let (Some(root), Some(procs)) = (root, procs) else {
        return none;
    };
    let Some(leader) = procs.iter().find(|p| p.pid == root) else {
        return none;
    };
    let sid = leader.sid;
    let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut seen: HashSet<u32> = HashSet::from([root]);
    let mut members = vec![leader.clone()];
    let mut i = 0;
    while i < members.len() {
        for c in children.get(&members[i].pid).into_iter().flatten() {
            if seen.insert(c.pid) {
                members.push((*c).clone());
            }
        }
        i += 1;
    }
    // Re-parented away but still in the pane's session.
    for p in procs.iter().filter(|p| p.sid == sid && sid == root) {
        if seen.insert(p.pid) {
            members.push(p.clone());
        }
    }
    let left_session = members.iter().any(|p| p.sid != sid);
    Tree {
        confidence: if left_session {
            Confidence::BestEffort
        } else {
            Confidence::High
        },
        processes: members,
    }
}

/// Why a process may not be signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not (or no longer) a member of the block's tree.
    NotTracked,
    /// The pid now names another process than the one identified.
    Reused { expected: u64, found: u64 },
}

/// Identities the tracker has reported, per block. A pid it has seen with
/// two start times was reused: a kill by that pid alone is ambiguous and
/// refused until the caller names the start time it means.
#[derive(Default)]
pub struct Tracker {
    // A std mutex: a map update per listing, never across an await.
    seen: Mutex<HashMap<BlockId, HashMap<u32, Seen>>>,
}

/// A pid's start time now, and the one before it if it changed.
type Seen = (u64, Option<u64>);

impl Tracker {
    /// The tree of `block`'s pane, remembering who was in it.
    pub fn list(&self, block: BlockId, root: Option<u32>) -> Tree {
        let t = tree(root);
        {
            let mut seen = lock(&self.seen);
            let ids = seen.entry(block).or_default();
            for p in &t.processes {
                let e = ids.entry(p.pid).or_insert((p.start_time, None));
                if e.0 != p.start_time {
                    *e = (p.start_time, Some(e.0));
                }
            }
        }
        t
    }

    pub fn forget(&self, block: &BlockId) {
        let mut seen = lock(&self.seen);
        seen.remove(block);
    }

    /// The start time a kill of `pid` alone must find: the one listed,
    /// or, if the pid was seen reused, the one before (so it is refused).
    fn remembered(&self, block: BlockId, pid: u32) -> Option<u64> {
        let (now, before) = *lock(&self.seen).get(&block)?.get(&pid)?;
        Some(before.unwrap_or(now))
    }

    /// Signals `pid` if it is a member of `block`'s tree with the identity
    /// the caller (`start_time`) or an earlier listing saw.
    pub fn kill(
        &self,
        block: BlockId,
        root: Option<u32>,
        pid: u32,
        start_time: Option<u64>,
        signal: Signal,
    ) -> Result<Proc, Refusal> {
        let t = tree(root);
        let Some(member) = t.processes.into_iter().find(|p| p.pid == pid) else {
            return Err(Refusal::NotTracked);
        };
        let expected = start_time.or_else(|| self.remembered(block, pid));
        if let Some(e) = expected
            && e != member.start_time
        {
            return Err(Refusal::Reused {
                expected: e,
                found: member.start_time,
            });
        }
        signal_identified(&member, signal)?;
        Ok(member)
    }
}

/// Whether `p` is still running: its pid names the same process (start
/// time) and it is not a zombie waiting to be reaped.
pub fn is_alive(p: &Proc) -> bool {
    read_proc(p.pid).is_some_and(|now| {
        now.start_time == p.start_time && !matches!(now.state.as_str(), "Z" | "X")
    })
}

/// Signals each of `procs` (by identity); how many were signalled.
pub fn signal_all(procs: &[Proc], signal: Signal) -> usize {
    procs
        .iter()
        .filter(|p| signal_identified(p, signal).is_ok())
        .count()
}

/// Waits until every one of `procs` has ended, or `bound` has passed;
/// `procs` keeps those still running.
pub async fn wait_gone(procs: &mut Vec<Proc>, bound: std::time::Duration) {
    let end = tokio::time::Instant::now() + bound;
    procs.retain(is_alive);
    while !procs.is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        procs.retain(is_alive);
    }
}

/// Opens a pidfd for `p`, checks its start time again (the pidfd pins the
/// process: a pid reused in between is caught here), then signals it.
pub fn signal_identified(p: &Proc, signal: Signal) -> Result<(), Refusal> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};
    let pid = Pid::from_raw(p.pid as i32).ok_or(Refusal::NotTracked)?;
    let fd = pidfd_open(pid, PidfdFlags::empty()).map_err(|_| Refusal::NotTracked)?;
    match read_proc(p.pid) {
        Some(now) if now.start_time == p.start_time => {}
        Some(now) => {
            return Err(Refusal::Reused {
                expected: p.start_time,
                found: now.start_time,
            });
        }
        None => return Err(Refusal::NotTracked),
    }
    let sig = rustix::process::Signal::from_named_raw(signal as i32).ok_or(Refusal::NotTracked)?;
    pidfd_send_signal(&fd, sig).map_err(|_| Refusal::NotTracked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (we (i) rd) S 1 4242 4242 34816 4242 4194560 1 0 0 0 3 1 0 0 20 0 1 0 987654 1000 321 18446744073709551615";
        let p = parse_stat(4242, line).unwrap();
        assert_eq!(
            (p.ppid, p.sid, p.start_time, p.rss_kb, p.state.as_str()),
            (1, 4242, 987654, 321 * 4, "S")
        );
        assert_eq!(p.cmdline, "we (i) rd");
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn this_process_is_found_with_a_stable_identity() {
        let me = std::process::id();
        let a = read_proc(me).unwrap();
        let b = read_proc(me).unwrap();
        assert_eq!(a.start_time, b.start_time);
        assert!(a.cmdline.contains("agentbus_daemon"), "{}", a.cmdline);
        assert_eq!(tree(Some(u32::MAX)).confidence, Confidence::None);
    }
}
