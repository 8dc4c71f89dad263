//! Whether an agent CLI is ready for input, told from its screen.
//!
//! A timer cannot tell a CLI that is drawing its first screen, waiting at
//! its prompt, streaming a reply or asking to sign in: they can all be
//! quiet for a second. The screen can. Each provider profile carries
//! [`ScreenRules`]: what its prompt line starts with, what an empty input
//! box shows, the words seen only while a turn runs, and the words of the
//! screens that are not the prompt at all (sign-in, onboarding, trust and
//! permission dialogs). [`ScreenRules::read`] turns the visible rows into
//! a [`Readiness`].

use serde::{Deserialize, Serialize};

/// A screen that is not the prompt: seeing `text` means the CLI waits
/// for something other than a message (`what` names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockedRule {
    pub text: String,
    pub what: String,
}

/// How a CLI's screen shows that it is ready, busy or blocked. All lists
/// are plain text matched anywhere in a visible row (no patterns): the
/// rules are data a user can read and override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScreenRules {
    /// What the input line starts with once the prompt is drawn, after
    /// any box border (`❯`, `›`, `>`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompt: Vec<String>,
    /// What an empty input box shows after the prompt (its placeholder);
    /// nothing at all counts as empty too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placeholder: Vec<String>,
    /// For a framed input box with no prompt sign: text on the box's own
    /// last row (OpenCode's `agent · model` line). The box's text is the
    /// framed row above it, past one blank padding row.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub box_footer: Vec<String>,
    /// For an input box drawn between two horizontal rules with no
    /// prompt sign: text of the rule rows (Pi's `────`). The box is what
    /// lies between the two lowest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub box_rule: Vec<String>,
    /// Text seen only while a turn runs (`esc to interrupt`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
    /// For a CLI that draws no prompt sign: text seen only once it takes
    /// input (a footer); until one shows, it is still starting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ready_marks: Vec<String>,
    /// Screens where nothing may be typed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<BlockedRule>,
}

/// What a pane's program is doing, as far as input goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The prompt is drawn, its input box is empty and no turn runs.
    Ready,
    /// Not now: a turn runs, the prompt is not drawn yet, or the input
    /// box holds text.
    Busy(&'static str),
    /// A screen that is not the prompt (sign-in, a dialog): nothing may
    /// be typed until a person deals with it.
    Blocked(String),
    /// The profile has no screen rules: only quiet time can be used.
    Unknown,
}

/// Why a CLI is busy, in the words `status` uses.
pub const WORKING: &str = "working";
pub const NO_PROMPT: &str = "no prompt on screen";
pub const INPUT_NOT_EMPTY: &str = "input box not empty";

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }

    /// `ready`, `busy: working`, `blocked: sign-in screen`, `unknown`.
    pub fn label(&self) -> String {
        match self {
            Readiness::Ready => "ready".into(),
            Readiness::Busy(why) => format!("busy: {why}"),
            Readiness::Blocked(what) => format!("blocked: {what}"),
            Readiness::Unknown => "unknown".into(),
        }
    }
}

/// What the input box holds, read off the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputBox {
    /// No prompt line on screen.
    Missing,
    Empty,
    /// Text after the prompt (its first row).
    Holds(String),
}

/// Box-drawing and space characters a framed input box puts around its
/// line (and the zero-width space one CLI ends its input with).
fn is_frame(c: char) -> bool {
    c.is_whitespace() || matches!(c, '│' | '┃' | '║' | '|' | '▌' | '▐' | '\u{200b}')
}

impl ScreenRules {
    pub fn is_empty(&self) -> bool {
        !self.reads_box()
            && self.busy.is_empty()
            && self.blocked.is_empty()
            && self.ready_marks.is_empty()
    }

    /// Whether these rules can find the input box (by a prompt sign or a
    /// box footer): only then can a submission be confirmed.
    pub fn reads_box(&self) -> bool {
        !self.prompt.is_empty() || !self.box_footer.is_empty() || !self.box_rule.is_empty()
    }

    /// The input box: the lowest visible row that starts (after its
    /// frame) with a prompt. The box sits at the bottom of the screen, so
    /// earlier turns echoed above it with the same sign do not count.
    /// Without a prompt sign, the box above the lowest footer row, or
    /// between the two lowest rules.
    pub fn input_box(&self, rows: &[String]) -> InputBox {
        if self.prompt.is_empty() {
            return if self.box_footer.is_empty() {
                self.ruled_box(rows)
            } else {
                self.footed_box(rows)
            };
        }
        for row in rows.iter().rev() {
            let line = row.trim_start_matches(is_frame);
            let Some(rest) = self
                .prompt
                .iter()
                .find_map(|p| line.strip_prefix(p.as_str()))
            else {
                continue;
            };
            return self.box_holding(rest.trim_matches(is_frame));
        }
        InputBox::Missing
    }

    /// A box with no prompt sign, found by its footer row: walking up
    /// from it past one blank padding row, the first framed row is its
    /// (last) line of text. A second blank row or the frame's end means
    /// it is empty; rows beyond belong to earlier turns.
    fn footed_box(&self, rows: &[String]) -> InputBox {
        let framed = |row: &str| {
            row.trim_start()
                .starts_with(|c: char| !c.is_whitespace() && is_frame(c))
        };
        let Some(footer) = rows.iter().rposition(|r| {
            framed(r)
                && self
                    .box_footer
                    .iter()
                    .any(|f| !f.is_empty() && r.contains(f.as_str()))
        }) else {
            return InputBox::Missing;
        };
        let mut blanks = 0;
        for row in rows[..footer].iter().rev() {
            if !framed(row) {
                break;
            }
            let text = row.trim_matches(is_frame);
            if !text.is_empty() {
                return self.box_holding(text);
            }
            blanks += 1;
            if blanks > 1 {
                break;
            }
        }
        InputBox::Empty
    }

    /// A box with no prompt sign between two rules: its first row with
    /// text, if any.
    fn ruled_box(&self, rows: &[String]) -> InputBox {
        let ruled = |r: &String| {
            self.box_rule
                .iter()
                .any(|m| !m.is_empty() && r.contains(m.as_str()))
        };
        let mut rules = rows.iter().enumerate().rev().filter(|(_, r)| ruled(r));
        let (Some((below, _)), Some((above, _))) = (rules.next(), rules.next()) else {
            return InputBox::Missing;
        };
        rows[above + 1..below]
            .iter()
            .map(|r| r.trim_matches(is_frame))
            .find(|t| !t.is_empty())
            .map_or(InputBox::Empty, |t| self.box_holding(t))
    }

    /// What a box line showing `text` (its frame trimmed) holds.
    fn box_holding(&self, text: &str) -> InputBox {
        let empty = text.is_empty()
            || self
                .placeholder
                .iter()
                .any(|p| !p.is_empty() && text.starts_with(p.as_str()));
        if empty {
            InputBox::Empty
        } else {
            InputBox::Holds(text.to_string())
        }
    }

    /// Whether any visible row shows one of the busy words.
    pub fn shows_busy(&self, rows: &[String]) -> bool {
        rows.iter().any(|r| {
            self.busy
                .iter()
                .any(|b| !b.is_empty() && r.contains(b.as_str()))
        })
    }

    /// Reads the visible rows.
    pub fn read(&self, rows: &[String]) -> Readiness {
        if self.is_empty() {
            return Readiness::Unknown;
        }
        for rule in &self.blocked {
            if !rule.text.is_empty() && rows.iter().any(|r| r.contains(rule.text.as_str())) {
                return Readiness::Blocked(rule.what.clone());
            }
        }
        if self.shows_busy(rows) {
            return Readiness::Busy(WORKING);
        }
        let marked = self.ready_marks.is_empty()
            || rows.iter().any(|r| {
                self.ready_marks
                    .iter()
                    .any(|m| !m.is_empty() && r.contains(m.as_str()))
            });
        if !marked {
            return Readiness::Busy(NO_PROMPT);
        }
        if !self.reads_box() {
            // No input box to read: its marks and busy words decide.
            return Readiness::Ready;
        }
        match self.input_box(rows) {
            InputBox::Missing => Readiness::Busy(NO_PROMPT),
            InputBox::Holds(_) => Readiness::Busy(INPUT_NOT_EMPTY),
            InputBox::Empty => Readiness::Ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> ScreenRules {
        ScreenRules {
            ready_marks: Vec::new(),
            prompt: vec!["❯".into(), ">".into()],
            placeholder: vec!["Type your message".into()],
            box_footer: Vec::new(),
            box_rule: Vec::new(),
            busy: vec!["esc to interrupt".into()],
            blocked: vec![BlockedRule {
                text: "Sign in with".into(),
                what: "sign-in screen".into(),
            }],
        }
    }

    fn rows(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn an_empty_box_under_a_drawn_prompt_is_ready() {
        let r = rules();
        assert_eq!(
            r.read(&rows("banner\n────\n❯ \n────\n  ? for shortcuts")),
            Readiness::Ready
        );
        assert_eq!(
            r.read(&rows("╭──╮\n│ >   Type your message or @path │\n╰──╯")),
            Readiness::Ready
        );
    }

    #[test]
    fn text_in_the_box_a_running_turn_and_no_prompt_are_busy() {
        let r = rules();
        assert_eq!(
            r.read(&rows("❯ [JEKT:FROM=a TO=b")),
            Readiness::Busy(INPUT_NOT_EMPTY)
        );
        assert_eq!(
            r.read(&rows("✻ Thinking… (esc to interrupt)\n❯ ")),
            Readiness::Busy(WORKING)
        );
        assert_eq!(
            r.read(&rows("Welcome to the CLI")),
            Readiness::Busy(NO_PROMPT)
        );
    }

    #[test]
    fn a_sign_in_screen_blocks_whatever_else_shows() {
        let r = rules();
        assert_eq!(
            r.read(&rows("Sign in with ChatGPT\n> 1. Sign in\n  2. API key")),
            Readiness::Blocked("sign-in screen".into())
        );
    }

    #[test]
    fn earlier_turns_echoed_with_the_prompt_sign_do_not_count() {
        let r = rules();
        assert_eq!(r.read(&rows("> hello there\nok\n❯ ")), Readiness::Ready);
        assert_eq!(
            r.read(&rows("❯ \nsomething\n❯ still typing")),
            Readiness::Busy(INPUT_NOT_EMPTY)
        );
    }

    /// A framed box with no prompt sign, found by its footer row (as
    /// OpenCode draws it).
    fn footed() -> ScreenRules {
        ScreenRules {
            placeholder: vec!["Ask anything".into()],
            box_footer: vec![" · ".into()],
            busy: vec!["esc interrupt".into()],
            ..ScreenRules::default()
        }
    }

    /// An OpenCode-like screen: `above`, then the box holding `text`.
    fn footed_screen(above: &[&str], text: &str) -> Vec<String> {
        let mut rows: Vec<String> = above.iter().map(|r| r.to_string()).collect();
        for r in [
            "  ┃",
            &format!("  ┃  {text}"),
            "  ┃",
            "  ┃  Build · Local Model",
        ] {
            rows.push(r.to_string());
        }
        rows.push("  ╹▀▀▀▀▀▀▀▀".into());
        rows.push("   ~/project     tab agents  ctrl+p commands".into());
        rows
    }

    #[test]
    fn a_box_found_by_its_footer_reads_empty_or_holding() {
        let r = footed();
        let home = footed_screen(&["  █▀▀█ █▀▀█", ""], "Ask anything… \"Fix broken tests\"");
        assert_eq!(r.input_box(&home), InputBox::Empty);
        assert_eq!(r.read(&home), Readiness::Ready);
        let pasted = footed_screen(&[""], "[Pasted ~5 lines]");
        assert_eq!(
            r.input_box(&pasted),
            InputBox::Holds("[Pasted ~5 lines]".into())
        );
        assert_eq!(r.read(&pasted), Readiness::Busy(INPUT_NOT_EMPTY));
        // An earlier turn framed the same way, right above an empty box
        // in the session view, is not the box.
        let session = footed_screen(&["  ┃", "  ┃  [JEKT:FROM=a TO=b]", "  ┃  hello", "  ┃"], "");
        assert_eq!(r.input_box(&session), InputBox::Empty);
        assert_eq!(r.read(&session), Readiness::Ready);
        // The status line under a turn is not framed: not the footer.
        assert_eq!(
            r.input_box(&rows("     ▣  Build · Local Model · 1.5s")),
            InputBox::Missing
        );
        assert_eq!(
            r.read(&rows("  ┃  hello\n     ▣  Build · Local Model")),
            Readiness::Busy(NO_PROMPT)
        );
    }

    #[test]
    fn a_box_between_rules_reads_empty_or_holding() {
        let r = ScreenRules {
            box_rule: vec!["────".into()],
            ready_marks: vec!["%/".into()],
            busy: vec!["Working".into()],
            ..ScreenRules::default()
        };
        let screen = |between: &str| {
            rows(&format!(
                " pi v0.73.1\n────────\n earlier ────── turn\n\n────────\n{between}\n────────\n~/project\n0.0%/128k (auto)"
            ))
        };
        assert_eq!(r.read(&screen("")), Readiness::Ready);
        assert_eq!(
            r.input_box(&screen("[JEKT:FROM=a TO=b\nsecond row")),
            InputBox::Holds("[JEKT:FROM=a TO=b".into())
        );
        assert_eq!(r.read(&screen("hello")), Readiness::Busy(INPUT_NOT_EMPTY));
        assert_eq!(
            r.input_box(&rows("────────\n~/project\n0.0%/128k")),
            InputBox::Missing
        );
    }

    #[test]
    fn no_rules_means_unknown() {
        assert_eq!(ScreenRules::default().read(&rows("❯ ")), Readiness::Unknown);
    }

    proptest! {
        // Whatever a program prints, reading it never panics, and a
        // screen showing a blocked rule's text is never ready.
        #[test]
        fn any_screen_reads_and_a_blocked_screen_is_never_ready(
            lines in proptest::collection::vec(".{0,80}", 0..30),
            at in 0usize..30,
        ) {
            let r = rules();
            let mut screen = lines.clone();
            let _ = r.read(&screen);
            let at = at.min(screen.len());
            screen.insert(at, "  Sign in with your account".into());
            prop_assert!(matches!(r.read(&screen), Readiness::Blocked(_)));
        }

        // Text in the input box (the lowest prompt row) is never read as
        // an empty box, whatever it is and whatever is above it: a jekt
        // never joins what someone typed.
        #[test]
        fn a_box_holding_text_is_never_ready(
            above in proptest::collection::vec("[^❯>]{0,60}", 0..20),
            typed in "[a-zA-Z0-9\\[\\]:=/ ]{0,40}[a-zA-Z0-9]",
        ) {
            prop_assume!(!typed.trim_start().starts_with("Type your message"));
            let r = rules();
            let mut screen = above.clone();
            screen.push(format!("❯ {typed}"));
            prop_assert_ne!(r.read(&screen), Readiness::Ready);
        }

        // The same for a box found by its footer, whatever turns are
        // framed above it.
        #[test]
        fn a_footed_box_holding_text_is_never_ready(
            above in proptest::collection::vec("(  ┃)?[^·]{0,60}", 0..20),
            typed in "[a-zA-Z0-9\\[\\]:=/~ ]{0,40}[a-zA-Z0-9\\]]",
        ) {
            prop_assume!(!typed.trim_start().starts_with("Ask anything"));
            let r = footed();
            let above: Vec<&str> = above.iter().map(String::as_str).collect();
            let screen = footed_screen(&above, &typed);
            prop_assert_eq!(r.input_box(&screen), InputBox::Holds(typed.trim().to_string()));
            prop_assert_ne!(r.read(&screen), Readiness::Ready);
        }

        // And for a box between rules, whatever is above it, rules too.
        #[test]
        fn a_ruled_box_holding_text_is_never_ready(
            above in proptest::collection::vec("(───)?.{0,60}", 0..20),
            typed in "[a-zA-Z0-9\\[\\]:=/~ ]{0,40}[a-zA-Z0-9\\]]",
        ) {
            let r = ScreenRules {
                box_rule: vec!["───".into()],
                ..ScreenRules::default()
            };
            let mut screen = above.clone();
            screen.extend(["─────".to_string(), typed.clone(), "─────".into(), "0.0%/128k".into()]);
            prop_assert_eq!(r.input_box(&screen), InputBox::Holds(typed.trim().to_string()));
            prop_assert_ne!(r.read(&screen), Readiness::Ready);
        }
    }
}
