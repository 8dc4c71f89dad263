//! `agent:output`: a pane's output as events, published only while an App
//! API subscription wants that pane.
//!
//! A subscription says what it wants ([`Taps::want`]): agent names,
//! blocks, or every pane (`allscopes`). While anything is wanted, a keeper
//! task follows the agents table (woken by its changes, and every 500 ms)
//! and keeps one tap per wanted pane; the subscription's own call starts
//! the taps it needs before it is answered, so nothing written after the
//! answer is missed. A tap reads the pane's output feed — what attached
//! viewers get, so the terminal queries the daemon answers are not in it
//! — coalesces it into chunks of up to [`MAX_CHUNK`] bytes or
//! [`COALESCE`] of time, and publishes them on the bus's output channel
//! (never the main one, never history). When the last subscription goes,
//! the taps and the keeper stop: a pane nobody watches costs nothing.
//!
//! Nothing here waits on a subscriber: the pane's feed and the output
//! channel are both bounded broadcasts that drop for whoever falls behind
//! (a tap that does marks its next chunk `resync`; a socket that does gets
//! the usual `lagged` notice).

use crate::state::AppState;
use agentbus_proto::event::{Event, EventKind};
use agentbus_proto::sync::lock;
use agentbus_proto::{AgentId, BlockId, now_ms};
use agentbus_term::{Pane, PaneOutput};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most output bytes one event carries.
pub const MAX_CHUNK: usize = 16 * 1024;
/// How long output waits for more before it is published.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How often the keeper looks for panes started or restarted, besides
/// when the agents table says a name changed.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// What the subscriptions want, and the taps that serve them.
#[derive(Default)]
pub struct Taps {
    inner: Mutex<Wanted>,
}

#[derive(Default)]
struct Wanted {
    all: usize,
    agents: HashMap<AgentId, usize>,
    blocks: HashMap<BlockId, usize>,
    taps: HashMap<BlockId, Tap>,
    keeper: bool,
}

impl Wanted {
    fn nothing(&self) -> bool {
        self.all == 0 && self.agents.is_empty() && self.blocks.is_empty()
    }

    fn covers(&self, block: &BlockId, names: &[AgentId]) -> bool {
        self.all > 0
            || self.blocks.contains_key(block)
            || names.iter().any(|n| self.agents.contains_key(n))
    }
}

struct Tap {
    pane: Pane,
    stop: CancellationToken,
}

/// One subscription's share of what is wanted; dropping it gives that up.
pub struct Want {
    state: AppState,
    agents: Vec<AgentId>,
    blocks: Vec<BlockId>,
    all: bool,
}

fn add<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, usize>, k: &K) {
    *map.entry(k.clone()).or_default() += 1;
}

fn remove<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = map.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            map.remove(k);
        }
    }
}

impl Taps {
    /// Wants the output of the panes `scopes` name (`agent:<name>` as
    /// written, `block:<id>`; other scopes carry no output), or of every
    /// pane with `all`. The taps are running when this returns.
    pub fn want(state: &AppState, scopes: &[String], all: bool) -> Want {
        let agents: Vec<AgentId> = scopes
            .iter()
            .filter_map(|s| AgentId::parse(s.strip_prefix("agent:")?).ok())
            .collect();
        let blocks: Vec<BlockId> = scopes
            .iter()
            .filter_map(|s| BlockId::parse(s.strip_prefix("block:")?).ok())
            .collect();
        let taps = state.events().taps();
        {
            let mut w = lock(&taps.inner);
            w.all += usize::from(all);
            agents.iter().for_each(|a| add(&mut w.agents, a));
            blocks.iter().for_each(|b| add(&mut w.blocks, b));
            if !w.keeper && !w.nothing() {
                w.keeper = true;
                tokio::spawn(keep(state.clone()));
            }
        }
        sync(state);
        Want {
            state: state.clone(),
            agents,
            blocks,
            all,
        }
    }

    /// Panes being tapped now.
    pub fn count(&self) -> usize {
        lock(&self.inner).taps.len()
    }
}

impl Drop for Want {
    fn drop(&mut self) {
        {
            let mut w = lock(&self.state.events().taps().inner);
            w.all -= usize::from(self.all);
            self.agents.iter().for_each(|a| remove(&mut w.agents, a));
            self.blocks.iter().for_each(|b| remove(&mut w.blocks, b));
        }
        sync(&self.state);
    }
}

/// Starts a tap for each running pane that is wanted and has none (or
/// one on a pane since replaced in its block), and stops the taps nobody
/// wants any more.
fn sync(state: &AppState) {
    // Read before the taps' lock: the agents table is never read under it.
    let panes: Vec<_> = state
        .agents()
        .all_panes()
        .into_iter()
        .map(|r| {
            let names = state.agents().names_of(&r.block);
            (r, names)
        })
        .collect();
    let mut w = lock(&state.events().taps().inner);
    let mut wanted: HashSet<BlockId> = HashSet::new();
    for (record, names) in panes {
        if !w.covers(&record.block, &names) {
            continue;
        }
        wanted.insert(record.block);
        if w.taps
            .get(&record.block)
            .is_some_and(|t| t.pane.same_as(&record.pane))
        {
            continue;
        }
        if let Some(old) = w.taps.remove(&record.block) {
            old.stop.cancel();
        }
        if !record.pane.is_running() {
            continue;
        }
        let stop = CancellationToken::new();
        // Subscribed here, before the caller is answered.
        let feed = record.pane.subscribe_output();
        tokio::spawn(tap(
            state.clone(),
            record.block,
            record.pane.clone(),
            feed,
            stop.clone(),
        ));
        w.taps.insert(
            record.block,
            Tap {
                pane: record.pane,
                stop,
            },
        );
    }
    w.taps.retain(|block, t| {
        let keep = wanted.contains(block);
        if !keep {
            t.stop.cancel();
        }
        keep
    });
}

/// Keeps the taps in step with the panes while anything is wanted.
async fn keep(state: AppState) {
    let mut changes = state.agents().subscribe_changes();
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
        {
            let mut w = lock(&state.events().taps().inner);
            if w.nothing() {
                w.keeper = false;
                for (_, t) in w.taps.drain() {
                    t.stop.cancel();
                }
                return;
            }
        }
        sync(&state);
    }
}

/// How many bytes at the end of `b` are the start of a UTF-8 character
/// still missing bytes (0 to 3).
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let len = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if len > back { back } else { 0 };
    }
    0
}

/// Takes up to `max` bytes off the front of `buf`, never cutting a UTF-8
/// character in two; with `last` (nothing more will come), an incomplete
/// character at the very end goes too.
fn take_chunk(buf: &mut Vec<u8>, max: usize, last: bool) -> Vec<u8> {
    let mut end = buf.len().min(max);
    if !(last && end == buf.len()) {
        end -= incomplete_tail(&buf[..end]);
    }
    buf.drain(..end).collect()
}

fn publish(state: &AppState, block: BlockId, bytes: &[u8], resync: bool) {
    let names = state.agents().names_of(&block);
    let mut scopes: Vec<String> = names.iter().map(|n| format!("agent:{n}")).collect();
    scopes.push(format!("block:{block}"));
    let kind = EventKind::AgentOutput {
        block_id: block,
        agent_id: names.into_iter().next(),
        data: String::from_utf8_lossy(bytes).into_owned(),
        bytes: bytes.len(),
        resync,
    };
    state.events().emit(
        Event {
            kind,
            scopes,
            ts_ms: now_ms(),
            source: None,
        },
        0,
    );
}

/// Output waiting to be published.
struct Pending {
    buf: Vec<u8>,
    resync: bool,
    /// When what is waiting goes out.
    due: Option<Instant>,
}

impl Pending {
    /// Publishes every whole chunk (`all`: everything, else only full
    /// ones); a `resync` with no bytes goes out as an empty chunk.
    fn flush(&mut self, state: &AppState, block: BlockId, all: bool, last: bool) {
        while self.buf.len() >= MAX_CHUNK || (all && !self.buf.is_empty()) {
            let chunk = take_chunk(&mut self.buf, MAX_CHUNK, last);
            if chunk.is_empty() {
                break;
            }
            publish(state, block, &chunk, std::mem::take(&mut self.resync));
        }
        if all {
            if self.resync {
                publish(state, block, &[], true);
                self.resync = false;
            }
            self.due = None;
        }
    }
}

/// Follows one pane's output feed until the pane exits or nobody wants it.
async fn tap(
    state: AppState,
    block: BlockId,
    pane: Pane,
    mut feed: broadcast::Receiver<PaneOutput>,
    stop: CancellationToken,
) {
    let mut p = Pending {
        buf: Vec::new(),
        resync: false,
        due: None,
    };
    let exited = pane.exited();
    tokio::pin!(exited);
    let far = || Instant::now() + Duration::from_secs(3600);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = feed.recv() => match r {
                Ok(PaneOutput::Bytes(b)) => {
                    p.buf.extend_from_slice(&b);
                    p.due.get_or_insert_with(|| Instant::now() + COALESCE);
                    p.flush(&state, block, false, false);
                }
                Ok(PaneOutput::Resync) | Err(RecvError::Lagged(_)) => {
                    p.resync = true;
                    p.due.get_or_insert_with(|| Instant::now() + COALESCE);
                }
                Err(RecvError::Closed) => break,
            },
            _ = tokio::time::sleep_until(p.due.unwrap_or_else(far)), if p.due.is_some() => {
                p.flush(&state, block, true, false);
            }
            _ = &mut exited => {
                // The program's last words were in the feed before its
                // exit was recorded.
                loop {
                    match feed.try_recv() {
                        Ok(PaneOutput::Bytes(b)) => p.buf.extend_from_slice(&b),
                        Ok(PaneOutput::Resync) | Err(TryRecvError::Lagged(_)) => p.resync = true,
                        Err(_) => break,
                    }
                }
                break;
            }
        }
    }
    p.flush(&state, block, true, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_cut_a_character_in_two() {
        let text = "aé€😀".repeat(3000);
        let mut buf = text.as_bytes().to_vec();
        let mut out = Vec::new();
        while !buf.is_empty() {
            let c = take_chunk(&mut buf, 1000, false);
            assert!(c.len() <= 1000 && !c.is_empty());
            assert!(std::str::from_utf8(&c).is_ok());
            out.extend(c);
        }
        assert_eq!(out, text.as_bytes());
        // An incomplete character at the end waits for the rest...
        let mut buf = b"ab\xe2\x82".to_vec();
        assert_eq!(take_chunk(&mut buf, 1000, false), b"ab");
        assert_eq!(buf, b"\xe2\x82");
        buf.push(0xac);
        assert_eq!(take_chunk(&mut buf, 1000, false), "€".as_bytes());
        // ...unless nothing more will come; bytes that are not UTF-8 at all
        // go as they are (shown as U+FFFD).
        let mut buf = b"x\xf0\x9f".to_vec();
        assert_eq!(take_chunk(&mut buf, 1000, true), b"x\xf0\x9f");
        let mut buf = b"\xff\xfe".to_vec();
        assert_eq!(take_chunk(&mut buf, 1000, false), b"\xff\xfe");
        assert_eq!(incomplete_tail(b"\xc3"), 1);
        assert_eq!(incomplete_tail(b"\xc3\xa9"), 0);
        assert_eq!(incomplete_tail(b"\xf0\x9f\x98"), 3);
        assert_eq!(incomplete_tail(b""), 0);
    }
}
