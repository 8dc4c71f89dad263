//! Questions a program asks its terminal, and the answers a terminal
//! gives.
//!
//! Programs ask where the cursor is (`ESC [ 6 n`), whether the terminal
//! is there (`ESC [ 5 n`) and what it is (`ESC [ c`), then wait for the
//! answer on their input: Aider's prompt warns when none comes, and
//! others wait out a timeout at start. In a pane of our own the daemon
//! is the terminal, so it answers from the screen it parses. Attached
//! viewers (`agentbus attach`, a browser) are terminals too and would
//! answer as well, a second answer the program would read as typed
//! input; so the questions are taken out of what they are sent, as tmux
//! does for its clients.

/// A question a program asked its terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Device status report 6: where is the cursor?
    CursorPosition,
    /// Device status report 5: are you there?
    Status,
    /// Primary device attributes: what are you?
    Attributes,
}

const QUESTIONS: [(&[u8], Query); 4] = [
    (b"\x1b[6n", Query::CursorPosition),
    (b"\x1b[5n", Query::Status),
    (b"\x1b[c", Query::Attributes),
    (b"\x1b[0c", Query::Attributes),
];

impl Query {
    /// The answer a VT100-class terminal gives; `cursor` is the cursor's
    /// (row, column), from 0.
    pub fn answer(self, cursor: (u16, u16)) -> Vec<u8> {
        match self {
            Query::CursorPosition => {
                format!("\x1b[{};{}R", cursor.0 + 1, cursor.1 + 1).into_bytes()
            }
            Query::Status => b"\x1b[0n".to_vec(),
            // A VT100 with advanced video, as most emulators say at least.
            Query::Attributes => b"\x1b[?1;2c".to_vec(),
        }
    }
}

/// One piece of output: text (everything that is not a question) or a
/// question, in the order the program wrote them.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Query(Query),
}

/// Finds the questions in a stream of output cut into chunks anywhere: a
/// chunk that ends partway into what may be a question keeps that tail
/// back until the next chunk tells.
#[derive(Debug, Default)]
pub struct QueryScanner {
    held: Vec<u8>,
}

impl QueryScanner {
    /// Splits the next chunk of output into text and questions; `None`
    /// when the chunk is all text and nothing was held back, so that the
    /// caller uses it as it is (no copy on the path every byte takes).
    pub fn scan(&mut self, chunk: &[u8]) -> Option<Vec<Piece>> {
        if self.held.is_empty() && !chunk.contains(&0x1b) {
            return None;
        }
        let had_held = !self.held.is_empty();
        let joined;
        let buf: &[u8] = if had_held {
            self.held.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.held);
            &joined
        } else {
            chunk
        };
        let mut pieces = Vec::new();
        let (mut start, mut at) = (0, 0);
        while let Some(off) = buf[at..].iter().position(|&b| b == 0x1b) {
            let esc = at + off;
            let rest = &buf[esc..];
            if let Some((q, len)) = QUESTIONS
                .iter()
                .find(|(seq, _)| rest.starts_with(seq))
                .map(|(seq, q)| (*q, seq.len()))
            {
                if start < esc {
                    pieces.push(Piece::Text(buf[start..esc].to_vec()));
                }
                pieces.push(Piece::Query(q));
                start = esc + len;
                at = start;
            } else if QUESTIONS.iter().any(|(seq, _)| seq.starts_with(rest)) {
                // The chunk ends partway into what may be a question.
                self.held = rest.to_vec();
                if start < esc {
                    pieces.push(Piece::Text(buf[start..esc].to_vec()));
                }
                return Some(pieces);
            } else {
                at = esc + 1;
            }
        }
        if !had_held && start == 0 {
            return None;
        }
        if start < buf.len() {
            pieces.push(Piece::Text(buf[start..].to_vec()));
        }
        Some(pieces)
    }

    /// [`scan`](Self::scan), with a chunk that is all text as one piece.
    #[cfg(test)]
    fn split(&mut self, chunk: &[u8]) -> Vec<Piece> {
        self.scan(chunk).unwrap_or_else(|| {
            if chunk.is_empty() {
                Vec::new()
            } else {
                vec![Piece::Text(chunk.to_vec())]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &[u8]) -> Piece {
        Piece::Text(s.to_vec())
    }

    #[test]
    fn questions_are_taken_out_in_order() {
        let mut s = QueryScanner::default();
        assert_eq!(
            s.split(b"ab\x1b[6ncd\x1b[1mef\x1b[c\x1b[0c\x1b[5n"),
            vec![
                text(b"ab"),
                Piece::Query(Query::CursorPosition),
                text(b"cd\x1b[1mef"),
                Piece::Query(Query::Attributes),
                Piece::Query(Query::Attributes),
                Piece::Query(Query::Status),
            ]
        );
        // Look-alikes are text: other reports, private forms, colors.
        let plain = b"\x1b[16n\x1b[?6n\x1b[6;1H\x1b[>c\x1b[60m\x1b";
        let mut s = QueryScanner::default();
        let got = s.split(&plain[..plain.len() - 1]);
        assert_eq!(got, vec![text(&plain[..plain.len() - 1])]);
    }

    #[test]
    fn a_question_cut_between_chunks_is_found() {
        let whole = b"xy\x1b[6nz";
        for cut in 0..=whole.len() {
            let mut s = QueryScanner::default();
            let mut got = s.split(&whole[..cut]);
            got.extend(s.split(&whole[cut..]));
            let mut bytes = Vec::new();
            let mut queries = Vec::new();
            for p in got {
                match p {
                    Piece::Text(t) => bytes.extend(t),
                    Piece::Query(q) => queries.push(q),
                }
            }
            assert_eq!(bytes, b"xyz", "cut at {cut}");
            assert_eq!(queries, vec![Query::CursorPosition], "cut at {cut}");
        }
    }

    #[test]
    fn plain_output_is_not_copied() {
        let mut s = QueryScanner::default();
        assert_eq!(s.scan(b"hello\r\n"), None);
        assert_eq!(s.scan(b"\x1b[1mbold\x1b[0m"), None);
        assert!(s.scan(b"x\x1b[6n").is_some());
        // A tail held back makes the next chunk not plain.
        assert_eq!(s.scan(b"ab\x1b["), Some(vec![text(b"ab")]));
        assert_eq!(s.scan(b"1m"), Some(vec![text(b"\x1b[1m")]));
    }

    #[test]
    fn answers_are_what_a_terminal_says() {
        assert_eq!(Query::CursorPosition.answer((0, 0)), b"\x1b[1;1R");
        assert_eq!(Query::CursorPosition.answer((23, 79)), b"\x1b[24;80R");
        assert_eq!(Query::Status.answer((5, 5)), b"\x1b[0n");
        assert_eq!(Query::Attributes.answer((5, 5)), b"\x1b[?1;2c");
    }

    proptest! {
        /// However output is cut into chunks, the text that comes out is
        /// the output without its questions, and no byte is lost or made
        /// up.
        #[test]
        fn chunking_never_changes_what_comes_out(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"\x1b[6n".to_vec()),
                    Just(b"\x1b[c".to_vec()),
                    Just(b"\x1b[".to_vec()),
                    Just(b"\x1b".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..6),
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let all: Vec<u8> = parts.concat();
            let whole = {
                let mut s = QueryScanner::default();
                let mut p = s.split(&all);
                p.extend(s.split(b"."));
                p
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            cuts.sort_unstable();
            let mut s = QueryScanner::default();
            let mut chunked = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([all.len()]) {
                chunked.extend(s.split(&all[from..c]));
                from = c;
            }
            chunked.extend(s.split(b"."));
            let flatten = |ps: Vec<Piece>| {
                let (mut bytes, mut qs) = (Vec::new(), Vec::new());
                for p in ps {
                    match p {
                        Piece::Text(t) => bytes.extend(t),
                        Piece::Query(q) => qs.push((bytes.len(), q)),
                    }
                }
                (bytes, qs)
            };
            prop_assert_eq!(flatten(whole), flatten(chunked));
        }
    }
}
