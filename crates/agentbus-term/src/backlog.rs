//! The queue between a pane's reader thread (which absorbs output as fast
//! as the program writes) and its parser thread (which is slower).
//!
//! It is bounded in bytes. When a program floods its terminal faster than
//! the parser keeps up and the backlog passes its bound, the *oldest*
//! unparsed chunks are dropped and counted: the program is never slowed by
//! parsing, the screen ends up showing the latest output, and what is lost
//! is the middle of the flood, which a 10,000-line scrollback would have
//! evicted anyway. The parser records the gap as a line in the scrollback.

use agentbus_proto::sync::{lock, wait};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

pub(crate) enum Item {
    Chunk(Bytes),
    /// This many bytes were dropped unparsed before the next chunk.
    Skipped(u64),
}

pub(crate) struct Backlog {
    // A std mutex with a condvar: both ends are blocking threads.
    state: Mutex<State>,
    ready: Condvar,
    max_bytes: usize,
}

struct State {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    skipped: u64,
    closed: bool,
}

impl Backlog {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                bytes: 0,
                skipped: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            max_bytes,
        }
    }

    pub(crate) fn push(&self, chunk: Bytes) {
        let mut s = lock(&self.state);
        s.bytes += chunk.len();
        s.chunks.push_back(chunk);
        while s.bytes > self.max_bytes && s.chunks.len() > 1 {
            if let Some(old) = s.chunks.pop_front() {
                s.bytes -= old.len();
                s.skipped += old.len() as u64;
            }
        }
        drop(s);
        self.ready.notify_one();
    }

    /// No more chunks will come; `take` drains what is left, then ends.
    pub(crate) fn close(&self) {
        {
            let mut s = lock(&self.state);
            s.closed = true;
        }
        self.ready.notify_all();
    }

    /// Waits for work and takes all of it. `None` once closed and drained.
    pub(crate) fn take(&self) -> Option<Vec<Item>> {
        let mut s = lock(&self.state);
        while s.chunks.is_empty() && s.skipped == 0 && !s.closed {
            s = wait(&self.ready, s);
        }
        if s.chunks.is_empty() && s.skipped == 0 {
            return None;
        }
        let mut items = Vec::with_capacity(s.chunks.len() + 1);
        if s.skipped > 0 {
            items.push(Item::Skipped(std::mem::take(&mut s.skipped)));
        }
        s.bytes = 0;
        items.extend(s.chunks.drain(..).map(Item::Chunk));
        Some(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_chunks_past_the_bound_and_reports_the_gap() {
        let b = Backlog::new(10);
        for c in [&b"aaaa"[..], b"bbbb", b"cccc", b"dddd"] {
            b.push(Bytes::copy_from_slice(c));
        }
        let items = b.take().unwrap();
        assert!(matches!(items[0], Item::Skipped(8)));
        let kept: Vec<&[u8]> = items[1..]
            .iter()
            .map(|i| match i {
                Item::Chunk(c) => &c[..],
                Item::Skipped(_) => &b""[..],
            })
            .collect();
        assert_eq!(kept, vec![&b"cccc"[..], b"dddd"]);
        b.close();
        assert!(b.take().is_none());
    }
}
