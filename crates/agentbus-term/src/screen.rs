//! A pane's parsed output: the visible screen (cells, via `vt100`) and the
//! scrollback (plain text lines).
//!
//! Scrollback is kept as text, not cells: a cell-based scrollback of
//! 10,000 lines at 200 columns costs about 64 MB per pane, the same lines
//! as text well under 2 MB. Lines enter it through `vt100`'s `on_scroll`
//! callback when they leave the top of the primary screen; rows scrolled
//! off the alternate screen (full-screen programs) are not history and are
//! not kept.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use vt100::capture::{BasicFormattedCaptureState, RowContents, basic_formatted_to_plain};

/// Plain-text lines that scrolled off the top of the screen, oldest first.
pub struct Scrollback {
    lines: VecDeque<String>,
    capacity: usize,
    capture: BasicFormattedCaptureState,
    buf: String,
}

impl Scrollback {
    fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            capture: BasicFormattedCaptureState::new(),
            buf: String::new(),
        }
    }

    fn push_line(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Adds a line written by agentbus itself (not by the program).
    pub fn note(&mut self, text: &str) {
        self.push_line(text.to_string());
        // The next row from the program starts a fresh line.
        self.capture = BasicFormattedCaptureState::new();
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

impl vt100::Callbacks for Scrollback {
    fn on_scroll(&mut self, row: RowContents<'_>, alternate_screen: bool) {
        if alternate_screen {
            return;
        }
        self.buf.clear();
        if row
            .write_formatted_basic(&mut self.buf, &mut self.capture)
            .is_err()
        {
            return;
        }
        // A leading newline starts a new line; without one, this row is the
        // continuation of a wrapped line.
        let (new_line, rest) = match self.buf.strip_prefix('\n') {
            Some(rest) => (true, rest),
            None => (self.lines.is_empty(), self.buf.as_str()),
        };
        let plain: String = basic_formatted_to_plain(rest).collect();
        match self.lines.back_mut() {
            Some(last) if !new_line => last.push_str(&plain),
            _ => self.push_line(plain),
        }
    }
}

/// The screen plus scrollback of one pane.
pub struct Screen {
    parser: vt100::Parser<Scrollback>,
}

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

impl Screen {
    pub fn new(rows: u16, cols: u16, scrollback_lines: usize) -> Self {
        // Cell scrollback 0: history is kept as text by `Scrollback`.
        Self {
            parser: vt100::Parser::new_with_callbacks(
                nz(rows),
                nz(cols),
                0,
                Scrollback::new(scrollback_lines),
            ),
        }
    }

    pub fn process(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
    }

    pub fn resize(&mut self, rows: u16, cols: u16) {
        self.parser.set_size(nz(rows), nz(cols));
    }

    pub fn size(&self) -> (u16, u16) {
        let (r, c) = self.parser.screen().size();
        (r.get(), c.get())
    }

    pub fn scrollback_mut(&mut self) -> &mut Scrollback {
        self.parser.callbacks_mut()
    }

    /// Escape codes that repaint a terminal to show this screen: contents,
    /// cursor and input modes.
    pub fn repaint(&self) -> Vec<u8> {
        self.parser.screen().state_formatted().into_bytes()
    }

    /// The last `n` lines of text: scrollback then the screen, with wrapped
    /// rows joined and the blank rows below the last text dropped.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let screen = self.parser.screen();
        let (_, cols) = screen.size();
        let mut rows: Vec<String> = Vec::new();
        let mut continuing = false;
        for (i, text) in screen.rows(0, cols.get()).enumerate() {
            if continuing {
                if let Some(last) = rows.last_mut() {
                    last.push_str(&text);
                }
            } else {
                rows.push(text);
            }
            continuing = u16::try_from(i).is_ok_and(|i| screen.row_wrapped(i));
        }
        while rows.last().is_some_and(|r| r.trim_end().is_empty()) {
            rows.pop();
        }
        let history = &self.parser.callbacks().lines;
        let from_history = n.saturating_sub(rows.len()).min(history.len());
        let mut out: Vec<String> = history
            .range(history.len() - from_history..)
            .cloned()
            .collect();
        let skip = rows.len().saturating_sub(n);
        out.extend(rows.into_iter().skip(skip));
        out.iter_mut().for_each(|l| {
            let trimmed = l.trim_end().len();
            l.truncate(trimmed);
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_scroll_into_text_history() {
        let mut s = Screen::new(5, 20, 100);
        for i in 0..30 {
            s.process(format!("line {i}\r\n").as_bytes());
        }
        let last = s.last_lines(10);
        assert_eq!(last.len(), 10);
        assert_eq!(last.first().unwrap(), "line 20");
        assert_eq!(last.last().unwrap(), "line 29");
        assert_eq!(s.last_lines(1000).len(), 30);
    }

    #[test]
    fn wrapped_lines_are_joined_and_colors_dropped() {
        let mut s = Screen::new(3, 10, 100);
        s.process(b"\x1b[31mabcdefghijklmno\x1b[0m\r\nx\r\ny\r\nz\r\nw");
        let all = s.last_lines(100);
        assert_eq!(all[0], "abcdefghijklmno", "{all:?}");
        assert_eq!(all.last().unwrap(), "w");
    }

    #[test]
    fn history_is_bounded() {
        let mut s = Screen::new(2, 10, 50);
        for i in 0..500 {
            s.process(format!("{i}\r\n").as_bytes());
        }
        assert_eq!(s.scrollback_mut().len(), 50);
    }

    #[test]
    fn alternate_screen_rows_are_not_history() {
        let mut s = Screen::new(3, 10, 100);
        s.process(b"keep\r\n\x1b[?1049h");
        for i in 0..20 {
            s.process(format!("tui {i}\r\n").as_bytes());
        }
        s.process(b"\x1b[?1049l");
        let all = s.last_lines(100);
        assert!(all.iter().all(|l| !l.starts_with("tui")), "{all:?}");
        assert!(all.iter().any(|l| l == "keep"));
    }
}
