//! Terminal modes a program sets on its own terminal, tracked from every
//! byte it writes.
//!
//! The parser thread may skip output under a flood (see [`crate::screen`]),
//! but whether bracketed paste is on decides how a jekt is framed, so the
//! reader thread scans every byte for mode changes itself. A bare `vte`
//! scan runs at gigabytes per second; it costs the reader nothing.

use std::sync::atomic::{AtomicBool, Ordering};

/// Modes shared between the reader thread (writer of these flags) and
/// everyone else (readers).
#[derive(Debug, Default)]
pub struct Modes {
    bracketed_paste: AtomicBool,
    alternate_screen: AtomicBool,
}

impl Modes {
    /// Whether the program has enabled bracketed paste (DECSET 2004).
    pub fn bracketed_paste(&self) -> bool {
        self.bracketed_paste.load(Ordering::Acquire)
    }

    /// Whether the program is on the alternate screen (DECSET 1049/1047/47).
    pub fn alternate_screen(&self) -> bool {
        self.alternate_screen.load(Ordering::Acquire)
    }
}

/// Feeds output bytes through a VT parser that only watches for mode
/// changes.
pub struct ModeScanner {
    parser: vte::Parser,
}

impl Default for ModeScanner {
    fn default() -> Self {
        Self {
            parser: vte::Parser::new(),
        }
    }
}

impl ModeScanner {
    pub fn scan(&mut self, modes: &Modes, bytes: &[u8]) {
        self.parser.advance(&mut Watch(modes), bytes);
    }
}

struct Watch<'a>(&'a Modes);

impl vte::Perform for Watch<'_> {
    fn csi_dispatch(
        &mut self,
        params: &vte::Params,
        intermediates: &[u8],
        _ignore: bool,
        action: char,
    ) {
        if intermediates != b"?" || (action != 'h' && action != 'l') {
            return;
        }
        let on = action == 'h';
        for p in params.iter() {
            match p.first() {
                Some(2004) => self.0.bracketed_paste.store(on, Ordering::Release),
                Some(1049 | 1047 | 47) => self.0.alternate_screen.store(on, Ordering::Release),
                _ => {}
            }
        }
    }

    fn esc_dispatch(&mut self, intermediates: &[u8], _ignore: bool, byte: u8) {
        // RIS (ESC c) resets the terminal, modes included.
        if intermediates.is_empty() && byte == b'c' {
            self.0.bracketed_paste.store(false, Ordering::Release);
            self.0.alternate_screen.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_bracketed_paste_across_split_writes() {
        let modes = Modes::default();
        let mut s = ModeScanner::default();
        s.scan(&modes, b"hello \x1b[?20");
        assert!(!modes.bracketed_paste());
        s.scan(&modes, b"04h world");
        assert!(modes.bracketed_paste());
        s.scan(&modes, b"\x1b[?1049;2004l");
        assert!(!modes.bracketed_paste());
        s.scan(&modes, b"\x1b[?1049h\x1b[?2004h");
        assert!(modes.alternate_screen() && modes.bracketed_paste());
        s.scan(&modes, b"\x1bc");
        assert!(!modes.alternate_screen() && !modes.bracketed_paste());
    }
}
