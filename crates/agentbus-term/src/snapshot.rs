//! A pane's visible screen as data: every cell's text and attributes and
//! the cursor, read from a `vt100` screen; and, for the App API, each row
//! as its text plus runs of cells with equal attributes.
//!
//! A hosted pane's screen is the `vt100` screen its parser keeps. A tmux
//! pane keeps none of its own: [`Snapshot::from_capture`] replays tmux's
//! `capture-pane -e` (the rows with their attributes as escape codes) and
//! the cursor tmux reports into a `vt100` screen of the pane's size.

use serde::ser::{Serialize, Serializer};
use std::num::NonZeroU16;

/// A cell's color: the terminal's default, one of the 256 indexed colors
/// (0-15 the ANSI colors, 16-231 the 6x6x6 cube, 232-255 the grays), or
/// a true color. On the wire: `"default"`, a number, or `"#rrggbb"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Color {
    #[default]
    Default,
    Index(u8),
    Rgb(u8, u8, u8),
}

impl From<vt100::Color> for Color {
    fn from(c: vt100::Color) -> Color {
        match c {
            vt100::Color::Default => Color::Default,
            vt100::Color::Idx(i) => Color::Index(i),
            vt100::Color::Rgb(r, g, b) => Color::Rgb(r, g, b),
        }
    }
}

impl Serialize for Color {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Color::Default => s.serialize_str("default"),
            Color::Index(i) => s.serialize_u8(i),
            Color::Rgb(r, g, b) => s.serialize_str(&format!("#{r:02x}{g:02x}{b:02x}")),
        }
    }
}

/// What a cell looks like, apart from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Attrs {
    pub fg: Color,
    pub bg: Color,
    pub bold: bool,
    pub italic: bool,
    pub underline: bool,
    pub inverse: bool,
}

/// One cell of the screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    /// The cell's text: empty for a blank cell, one character or a
    /// character with combining marks otherwise.
    pub text: String,
    pub attrs: Attrs,
    /// A double-width character starts here (and covers the next cell).
    pub wide: bool,
    /// The right half of the double-width character before it.
    pub wide_continuation: bool,
}

/// Where the cursor is (from 0) and whether the program shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cursor {
    pub row: u16,
    pub col: u16,
    pub visible: bool,
}

/// Cells next to each other in one row with the same attributes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    /// The first cell's column, from 0.
    pub col: u16,
    /// How many cells.
    pub len: u16,
    #[serde(flatten)]
    pub attrs: Attrs,
}

/// One row for the App API: its text and its runs, which together cover
/// every cell of the row from column 0, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// The row's characters, a blank cell as a space, the right half of a
    /// double-width character left out, trailing spaces trimmed.
    pub text: String,
    pub runs: Vec<Run>,
}

/// The visible screen, cell by cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub rows: u16,
    pub cols: u16,
    pub cursor: Cursor,
    /// `rows` rows of `cols` cells each.
    pub cells: Vec<Vec<Cell>>,
}

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

impl Snapshot {
    /// Reads every visible cell of a `vt100` screen.
    pub fn from_vt100(screen: &vt100::Screen) -> Snapshot {
        let (rows, cols) = screen.size();
        let (rows, cols) = (rows.get(), cols.get());
        let (row, col) = screen.cursor_position();
        let cells = (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|c| match screen.cell(r, c) {
                        Some(cell) => Cell {
                            text: cell.contents().to_string(),
                            attrs: Attrs {
                                fg: cell.fgcolor().into(),
                                bg: cell.bgcolor().into(),
                                bold: cell.bold(),
                                italic: cell.italic(),
                                underline: cell.underline(),
                                inverse: cell.inverse(),
                            },
                            wide: cell.is_wide(),
                            wide_continuation: cell.is_wide_continuation(),
                        },
                        None => Cell::default(),
                    })
                    .collect()
            })
            .collect();
        Snapshot {
            rows,
            cols,
            cursor: Cursor {
                row,
                col,
                visible: !screen.hide_cursor(),
            },
            cells,
        }
    }

    /// The screen of a `rows` x `cols` pane whose rows tmux printed with
    /// `capture-pane -p -e -N` (one line per row, attributes as escape
    /// codes), with the cursor at (`cursor_row`, `cursor_col`). Lines past
    /// `rows` are ignored, so nothing scrolls.
    pub fn from_capture(
        rows: u16,
        cols: u16,
        capture: &str,
        cursor_row: u16,
        cursor_col: u16,
        cursor_visible: bool,
    ) -> Snapshot {
        let mut parser = vt100::Parser::new(nz(rows), nz(cols), 0);
        let text = capture.strip_suffix('\n').unwrap_or(capture);
        for (i, line) in text.split('\n').take(rows as usize).enumerate() {
            if i > 0 {
                // Back to the first column of the next row: never a wrap,
                // even after a row filled to its last column.
                parser.process(b"\r\n");
            }
            parser.process(line.as_bytes());
        }
        // Attributes off, then the cursor where tmux has it.
        parser.process(
            format!(
                "\x1b[0m\x1b[{};{}H",
                cursor_row.saturating_add(1),
                cursor_col.saturating_add(1)
            )
            .as_bytes(),
        );
        let mut shot = Snapshot::from_vt100(parser.screen());
        shot.cursor.visible = cursor_visible;
        shot
    }

    /// Each row as its text and its runs of equal attributes.
    pub fn text_rows(&self) -> Vec<Row> {
        self.cells.iter().map(|cells| row_of(cells)).collect()
    }
}

fn row_of(cells: &[Cell]) -> Row {
    let mut text = String::with_capacity(cells.len());
    let mut runs: Vec<Run> = Vec::new();
    for (col, cell) in cells.iter().enumerate() {
        let col = col as u16;
        if !cell.wide_continuation {
            if cell.text.is_empty() {
                text.push(' ');
            } else {
                text.push_str(&cell.text);
            }
        }
        match runs.last_mut() {
            Some(run) if run.attrs == cell.attrs => run.len += 1,
            _ => runs.push(Run {
                col,
                len: 1,
                attrs: cell.attrs,
            }),
        }
    }
    let trimmed = text.trim_end_matches(' ').len();
    text.truncate(trimmed);
    Row { text, runs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(rows: u16, cols: u16, bytes: &[u8]) -> Snapshot {
        let mut p = vt100::Parser::new(nz(rows), nz(cols), 0);
        p.process(bytes);
        Snapshot::from_vt100(p.screen())
    }

    #[test]
    fn runs_cover_each_row_and_split_where_attributes_change() {
        let s = shot(
            3,
            20,
            b"\x1b[1;31mRED\x1b[0m \x1b[42mgreen\x1b[0m \x1b[38;2;1;2;255mtc\x1b[0m\r\n\x1b[4;7;3mu\x1b[m",
        );
        let rows = s.text_rows();
        assert_eq!(rows[0].text, "RED green tc");
        let r = &rows[0].runs;
        let red = Attrs {
            fg: Color::Index(1),
            bold: true,
            ..Attrs::default()
        };
        assert_eq!(
            r[0],
            Run {
                col: 0,
                len: 3,
                attrs: red
            }
        );
        assert_eq!((r[1].col, r[1].len, r[1].attrs), (3, 1, Attrs::default()));
        assert_eq!((r[2].col, r[2].len, r[2].attrs.bg), (4, 5, Color::Index(2)));
        assert_eq!(
            (r[4].col, r[4].len, r[4].attrs.fg),
            (10, 2, Color::Rgb(1, 2, 255))
        );
        // The runs tile the row.
        for row in &rows {
            let mut at = 0;
            for run in &row.runs {
                assert_eq!(run.col, at);
                at += run.len;
            }
            assert_eq!(at, 20);
        }
        let u = rows[1].runs[0].attrs;
        assert!(u.underline && u.inverse && u.italic && !u.bold);
        assert_eq!(rows[2].text, "");
        assert_eq!(
            s.cursor,
            Cursor {
                row: 1,
                col: 1,
                visible: true
            }
        );
    }

    #[test]
    fn colors_serialize_as_default_an_index_or_hex() {
        let j = serde_json::to_value([Color::Default, Color::Index(196), Color::Rgb(255, 8, 0)])
            .unwrap();
        assert_eq!(j, serde_json::json!(["default", 196, "#ff0800"]));
        let run = Run {
            col: 2,
            len: 3,
            attrs: Attrs {
                fg: Color::Index(1),
                bold: true,
                ..Attrs::default()
            },
        };
        assert_eq!(
            serde_json::to_value(run).unwrap(),
            serde_json::json!({"col": 2, "len": 3, "fg": 1, "bg": "default", "bold": true,
                "italic": false, "underline": false, "inverse": false})
        );
    }

    #[test]
    fn wide_characters_take_two_cells_and_one_character_of_text() {
        let s = shot(1, 6, "a日b".as_bytes());
        assert!(s.cells[0][1].wide && s.cells[0][2].wide_continuation);
        assert_eq!(s.text_rows()[0].text, "a日b");
        assert_eq!(s.cursor.col, 4);
        let hidden = shot(1, 6, b"x\x1b[?25l");
        assert!(!hidden.cursor.visible);
    }

    #[test]
    fn a_capture_replays_into_a_screen_of_the_panes_size() {
        // As tmux prints it: full-width rows (-N), attributes as codes
        // carried across lines, more lines than rows.
        let capture = "\x1b[31mab\x1b[39m  \n\x1b[1mcdef\n  gh\nextra\n";
        let s = Snapshot::from_capture(3, 4, capture, 2, 3, false);
        let rows = s.text_rows();
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["ab", "cdef", "  gh"]);
        assert_eq!(rows[0].runs[0].attrs.fg, Color::Index(1));
        assert_eq!(rows[0].runs[0].len, 2);
        // Bold was still on at the start of the next line.
        assert!(rows[1].runs[0].attrs.bold);
        assert_eq!(
            s.cursor,
            Cursor {
                row: 2,
                col: 3,
                visible: false
            }
        );
    }
}
