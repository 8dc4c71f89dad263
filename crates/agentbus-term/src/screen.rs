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
    /// Lines ever added, including those since dropped: numbers lines.
    pushed: u64,
    capacity: usize,
    capture: BasicFormattedCaptureState,
    buf: String,
}

impl Scrollback {
    fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity.min(1024)),
            pushed: 0,
            capacity,
            capture: BasicFormattedCaptureState::new(),
            buf: String::new(),
        }
    }

    fn push_line(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        self.pushed += 1;
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

    /// The visible screen, cell by cell, and the cursor.
    pub fn snapshot(&self) -> crate::snapshot::Snapshot {
        crate::snapshot::Snapshot::from_vt100(self.parser.screen())
    }

    /// The cursor's (row, column), from 0.
    pub fn cursor(&self) -> (u16, u16) {
        self.parser.screen().cursor_position()
    }

    pub fn scrollback_mut(&mut self) -> &mut Scrollback {
        self.parser.callbacks_mut()
    }

    /// Escape codes that repaint a terminal to show this screen: contents,
    /// cursor and input modes.
    pub fn repaint(&self) -> Vec<u8> {
        self.parser.screen().state_formatted().into_bytes()
    }

    /// The visible rows as they are on screen, one string per row (no
    /// joining of wrapped rows, no scrollback): what readiness is read
    /// from.
    pub fn visible_rows(&self) -> Vec<String> {
        let screen = self.parser.screen();
        let (_, cols) = screen.size();
        screen.rows(0, cols.get()).collect()
    }

    /// The screen's rows as text lines: wrapped rows joined, the blank
    /// rows below the last text dropped.
    fn screen_lines(&self) -> Vec<String> {
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
        rows
    }

    /// The last `n` lines of text: scrollback then the screen, with wrapped
    /// rows joined and the blank rows below the last text dropped.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.numbered_lines(n, None).1
    }

    /// Lines numbered from 1 over the pane's life (a line keeps its number
    /// as it scrolls into history): with `after`, the first `n` lines
    /// numbered above it (from the oldest still kept); without, the last
    /// `n`. Returns the number of the first line returned and the lines.
    pub fn numbered_lines(&self, n: usize, after: Option<u64>) -> (u64, Vec<String>) {
        let sb = self.parser.callbacks();
        let history = &sb.lines;
        // Number of the oldest line still kept.
        let oldest = sb.pushed - history.len() as u64 + 1;
        let lines: Vec<String> = history.iter().cloned().chain(self.screen_lines()).collect();
        select_numbered(lines, oldest, n, after)
    }
}

/// From `lines`, numbered from `oldest`: with `after`, the first `n` lines
/// numbered above it; without, the last `n`. Trailing spaces trimmed.
/// Returns the number of the first line returned and the lines.
pub fn select_numbered(
    lines: Vec<String>,
    oldest: u64,
    n: usize,
    after: Option<u64>,
) -> (u64, Vec<String>) {
    let total = lines.len();
    let start = match after {
        Some(a) => (a.saturating_add(1).max(oldest) - oldest).min(total as u64) as usize,
        None => total.saturating_sub(n),
    };
    let end = (start + n).min(total);
    let out: Vec<String> = lines
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|mut l| {
            let trimmed = l.trim_end().len();
            l.truncate(trimmed);
            l
        })
        .collect();
    (oldest + start as u64, out)
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
    fn lines_keep_their_numbers_as_they_scroll() {
        let mut s = Screen::new(3, 20, 5);
        for i in 1..=4 {
            s.process(format!("line {i}\r\n").as_bytes());
        }
        // 4 lines + an empty cursor row; 2 scrolled into history.
        let (first, lines) = s.numbered_lines(2, None);
        assert_eq!((first, lines), (3, vec!["line 3".into(), "line 4".into()]));
        let (first, lines) = s.numbered_lines(10, Some(1));
        assert_eq!(first, 2);
        assert_eq!(lines[0], "line 2");
        for i in 5..=20 {
            s.process(format!("line {i}\r\n").as_bytes());
        }
        // History keeps 5: asking from line 1 starts at the oldest kept.
        let (first, lines) = s.numbered_lines(1, Some(0));
        assert_eq!(lines, vec![format!("line {first}")]);
        assert!(first > 10);
        let (first, lines) = s.numbered_lines(5, Some(18));
        assert_eq!(
            (first, lines),
            (19, vec!["line 19".into(), "line 20".into()])
        );
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
