//! Provider profiles: how each kind of program takes a jekt, shows that
//! it is ready for one, and is asked to quit.

use crate::ready::{BlockedRule, ScreenRules};
use agentbus_proto::api::Provider;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How input is typed into a pane, per provider. Every field can be
/// overridden in the config file under `[profiles.<provider>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Wrap pasted text in `ESC[200~` / `ESC[201~` when the program has
    /// enabled bracketed paste. Without it, the text is typed as is.
    pub bracketed_paste: bool,
    /// Pause between the paste and the submit key, so the program has
    /// taken the paste in before Enter arrives (an Enter in the same
    /// burst as the text is taken as part of it by some CLIs).
    pub settle_ms: u64,
    /// The submit key, sent once after the settle time. Empty: never submit.
    pub submit: String,
    /// Typed, then after the settle time submitted, to ask the program to
    /// quit. Absent: the pane gets SIGHUP instead, as when a terminal
    /// window closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quit_text: Option<String>,
    /// Keys that empty a non-empty input box (before a quit). Empty: the
    /// CLI has none that is safe.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clear_input: String,
    /// Keys that stop a running turn (before a quit while busy).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interrupt: String,
    /// How long the screen must show the ready prompt, unchanged, before
    /// a jekt is typed: a prompt drawn a moment ago may not read keys yet.
    #[serde(default = "default_ready_quiet_ms")]
    pub ready_quiet_ms: u64,
    /// For a CLI whose screen shows no sign while it streams a reply: how
    /// long it must have printed nothing to count as ready (0: the screen
    /// alone decides).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_quiet_ms: u64,
    /// How long to wait for the screen to show that submitted text left
    /// the input box before the submit key is tried once more.
    #[serde(default = "default_confirm_ms")]
    pub confirm_ms: u64,
    /// How the screen shows ready, busy and blocked. Without rules,
    /// readiness is told from quiet time alone and a submission cannot
    /// be confirmed.
    #[serde(default, skip_serializing_if = "ScreenRules::is_empty")]
    pub screen: ScreenRules,
}

fn default_ready_quiet_ms() -> u64 {
    300
}

fn default_confirm_ms() -> u64 {
    1500
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

const CTRL_C: &str = "\x03";
const CTRL_U: &str = "\x15";
const ESC: &str = "\x1b";

fn blocked(list: &[(&str, &str)]) -> Vec<BlockedRule> {
    list.iter()
        .map(|(text, what)| BlockedRule {
            text: (*text).into(),
            what: (*what).into(),
        })
        .collect()
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

impl Profile {
    /// An agent CLI: bracketed paste, a pause, Enter; quit by command.
    fn agent_cli(quit: &str, screen: ScreenRules) -> Profile {
        Profile {
            bracketed_paste: true,
            settle_ms: 250,
            submit: "\r".into(),
            quit_text: Some(quit.into()),
            clear_input: CTRL_U.into(),
            interrupt: ESC.into(),
            ready_quiet_ms: default_ready_quiet_ms(),
            output_quiet_ms: 0,
            confirm_ms: default_confirm_ms(),
            screen,
        }
    }

    /// The built-in profile of `provider`.
    pub fn builtin(provider: Provider) -> Profile {
        let cli = Profile::agent_cli;
        match provider {
            // Ctrl-U clears its box (Escape twice would too, but on an
            // empty box opens its rewind menu).
            Provider::Claude => cli(
                "/exit",
                ScreenRules {
                    ready_marks: Vec::new(),
                    prompt: words(&["❯"]),
                    box_footer: Vec::new(),
                    box_rule: Vec::new(),
                    placeholder: words(&[
                        "Try \"",
                        "Press up to edit queued messages",
                        "Once fixed, resend your message",
                    ]),
                    busy: words(&["esc to interrupt"]),
                    blocked: blocked(&[
                        ("Not logged in", "not logged in (run /login)"),
                        ("Select login method", "sign-in screen"),
                        ("Choose the text style", "onboarding"),
                        (
                            "Do you trust the files in this folder",
                            "folder trust dialog",
                        ),
                        ("Quick safety check", "folder trust dialog"),
                        ("Detected a custom API key", "API key dialog"),
                        ("Enter to confirm", "a selection dialog"),
                        ("Do you want to proceed?", "permission dialog"),
                        ("Do you want to make this edit", "permission dialog"),
                        ("new MCP server", "MCP server approval dialog"),
                    ]),
                },
            ),
            // While it streams a reply Codex draws no sign of it, and an
            // Enter then steers the running turn.
            Provider::Codex => Profile {
                output_quiet_ms: 1000,
                ..cli(
                    "/quit",
                    ScreenRules {
                        ready_marks: Vec::new(),
                        prompt: words(&["›"]),
                        box_footer: Vec::new(),
                        box_rule: Vec::new(),
                        placeholder: words(&[
                            "Ask Codex to do anything",
                            "Ask a follow-up question",
                        ]),
                        busy: words(&["esc to interrupt"]),
                        blocked: blocked(&[
                            ("Sign in with ChatGPT", "sign-in screen"),
                            ("Provide your own API key", "sign-in screen"),
                            ("Finish signing in", "sign-in screen"),
                            (
                                "Do you trust the files in this folder",
                                "folder trust dialog",
                            ),
                            ("Allow Codex to work in this folder", "folder trust dialog"),
                            ("enter/esc confirm", "a selection dialog"),
                            ("Press enter to continue", "a notice"),
                            (
                                "Would you like to run the following command",
                                "approval dialog",
                            ),
                            (
                                "Would you like to make the following edits",
                                "approval dialog",
                            ),
                        ]),
                    },
                )
            },
            // Its prompt is drawn before it has started its MCP servers;
            // what is typed until then is queued as a prompt.
            Provider::Gemini => Profile {
                ready_quiet_ms: 1000,
                ..cli(
                    "/quit",
                    ScreenRules {
                        ready_marks: Vec::new(),
                        prompt: words(&[">"]),
                        box_footer: Vec::new(),
                        box_rule: Vec::new(),
                        placeholder: words(&["Type your message"]),
                        // While it starts its MCP servers it queues what is
                        // typed as a prompt, a slash command too.
                        busy: words(&["esc to cancel", "Prompts will be queued"]),
                        blocked: blocked(&[
                            ("How would you like to authenticate", "sign-in screen"),
                            ("Enter the authorization code", "sign-in screen"),
                            ("Waiting for auth", "sign-in screen"),
                            (
                                "Do you trust the files in this folder",
                                "folder trust dialog",
                            ),
                            ("Allow execution of", "approval dialog"),
                            ("Apply this change?", "approval dialog"),
                        ]),
                    },
                )
            },
            Provider::Copilot
            | Provider::Opencode
            | Provider::Qwen
            | Provider::Kimi
            | Provider::Pi
            | Provider::Openclaw
            | Provider::Aider
            | Provider::Generic => other_cli(provider),
            Provider::Shell => Profile {
                bracketed_paste: true,
                settle_ms: 50,
                submit: "\r".into(),
                quit_text: None,
                clear_input: CTRL_U.into(),
                interrupt: CTRL_C.into(),
                ready_quiet_ms: 0,
                output_quiet_ms: 0,
                confirm_ms: 0,
                screen: ScreenRules::default(),
            },
            Provider::Raw => Profile {
                bracketed_paste: true,
                settle_ms: 0,
                submit: String::new(),
                quit_text: None,
                clear_input: String::new(),
                interrupt: String::new(),
                ready_quiet_ms: 0,
                output_quiet_ms: 0,
                confirm_ms: 0,
                screen: ScreenRules::default(),
            },
        }
    }

    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

/// The agent CLIs beyond the three the test command runs. Their rules
/// come from their screens as seen on the versions docs/providers.md
/// names; where a CLI draws no prompt sign, only its busy words count.
fn other_cli(provider: Provider) -> Profile {
    let cli = Profile::agent_cli;
    let esc_esc = format!("{ESC}{ESC}");
    match provider {
        Provider::Copilot => Profile {
            clear_input: esc_esc.clone(),
            interrupt: esc_esc,
            ..cli(
                "/exit",
                ScreenRules {
                    ready_marks: Vec::new(),
                    prompt: words(&["❯"]),
                    box_footer: Vec::new(),
                    box_rule: Vec::new(),
                    placeholder: Vec::new(),
                    busy: words(&["esc esc edit prompt", "esc esc interrupt", "esc again to"]),
                    blocked: blocked(&[
                        ("Confirm folder trust", "folder trust dialog"),
                        (
                            "Do you trust the files in this folder",
                            "folder trust dialog",
                        ),
                        ("Please use /login to sign in", "not signed in (run /login)"),
                        ("enter to select", "a selection dialog"),
                    ]),
                },
            )
        },
        // OpenCode quits on Ctrl-C at an empty box: never send it one.
        // With no prompt sign to read, a CLI that still prints is busy.
        // Its framed box ends in the `agent · model` line; a paste shows
        // there as `[Pasted ~N lines]`.
        Provider::Opencode => Profile {
            interrupt: esc_esc,
            output_quiet_ms: 1000,
            ready_quiet_ms: 1000,
            ..cli(
                "/exit",
                ScreenRules {
                    busy: words(&["esc interrupt", "esc again to interrupt"]),
                    ready_marks: words(&["ctrl+p commands"]),
                    placeholder: words(&["Ask anything"]),
                    box_footer: words(&[" · "]),
                    ..ScreenRules::default()
                },
            )
        },
        Provider::Qwen => Profile {
            clear_input: esc_esc,
            ..cli(
                "/quit",
                ScreenRules {
                    ready_marks: Vec::new(),
                    prompt: words(&[">"]),
                    box_footer: Vec::new(),
                    box_rule: Vec::new(),
                    placeholder: words(&["Type your message"]),
                    busy: words(&["esc to cancel", "Prompts will be queued"]),
                    blocked: blocked(&[
                        ("Connect a Provider", "sign-in screen"),
                        (
                            "Do you trust the files in this folder",
                            "folder trust dialog",
                        ),
                        ("Allow execution of", "approval dialog"),
                    ]),
                },
            )
        },
        Provider::Kimi => Profile {
            clear_input: CTRL_C.into(),
            ..cli(
                "/exit",
                ScreenRules {
                    ready_marks: Vec::new(),
                    prompt: words(&[">"]),
                    box_footer: Vec::new(),
                    box_rule: Vec::new(),
                    placeholder: Vec::new(),
                    // Its spinner is the moon's phases.
                    busy: words(&["🌑", "🌒", "🌓", "🌔", "🌕", "🌖", "🌗", "🌘"]),
                    blocked: blocked(&[
                        ("Trust this folder?", "folder trust dialog"),
                        ("run /login or /provider", "not signed in (run /login)"),
                        ("send /login to login", "not signed in (run /login)"),
                    ]),
                },
            )
        },
        Provider::Pi => Profile {
            clear_input: CTRL_C.into(),
            output_quiet_ms: 1000,
            ..cli(
                "/quit",
                ScreenRules {
                    busy: words(&["Working"]),
                    blocked: blocked(&[("No models available", "no model (run /login)")]),
                    // Its footer: the context used, e.g. `0.0%/128k (auto)`.
                    ready_marks: words(&["%/"]),
                    // Its box lies between two rules, above that footer.
                    box_rule: words(&["───"]),
                    ..ScreenRules::default()
                },
            )
        },
        Provider::Openclaw => Profile {
            clear_input: CTRL_C.into(),
            ..cli(
                "/exit",
                ScreenRules {
                    busy: words(&["| local ready"]),
                    ready_marks: words(&["| idle"]),
                    blocked: blocked(&[
                        ("How would you like to start?", "setup wizard"),
                        ("Continue?", "setup wizard"),
                    ]),
                    ..ScreenRules::default()
                },
            )
        },
        Provider::Aider => Profile {
            clear_input: CTRL_C.into(),
            interrupt: CTRL_C.into(),
            ..cli(
                "/exit",
                ScreenRules {
                    ready_marks: Vec::new(),
                    prompt: words(&[">"]),
                    box_footer: Vec::new(),
                    box_rule: Vec::new(),
                    placeholder: Vec::new(),
                    busy: words(&["Waiting for"]),
                    blocked: blocked(&[("(Y)es/(N)o", "a yes/no question")]),
                },
            )
        },
        // A CLI whose screen agentbus does not know: quiet time decides.
        _ => cli("/exit", ScreenRules::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_submits_nothing_and_agents_submit_once_with_cr() {
        assert!(Profile::builtin(Provider::Raw).submit.is_empty());
        for p in Provider::ALL.into_iter().filter(|p| *p != Provider::Raw) {
            assert_eq!(Profile::builtin(p).submit, "\r", "{p}");
        }
        assert_eq!(
            Profile::builtin(Provider::Claude).quit_text.as_deref(),
            Some("/exit")
        );
    }

    #[test]
    fn the_three_tested_clis_have_screen_rules_and_every_agent_cli_a_quit() {
        for p in [Provider::Claude, Provider::Codex, Provider::Gemini] {
            let prof = Profile::builtin(p);
            assert!(!prof.screen.prompt.is_empty(), "{p}");
            assert!(!prof.screen.blocked.is_empty(), "{p}");
        }
        for p in Provider::ALL {
            let has_quit = Profile::builtin(p).quit_text.is_some();
            assert_eq!(
                has_quit,
                !matches!(p, Provider::Shell | Provider::Raw),
                "{p}"
            );
        }
    }

    #[test]
    fn a_profile_round_trips_through_toml() {
        for p in Provider::ALL {
            let prof = Profile::builtin(p);
            let text = toml::to_string(&prof).unwrap();
            let back: Profile = toml::from_str(&text).unwrap();
            assert_eq!(back, prof, "{p}");
        }
    }

    /// Excerpts of each CLI's screens as seen on the versions in
    /// docs/providers.md (only the lines that tell the states apart).
    #[test]
    fn each_clis_screens_read_as_seen() {
        use crate::ready::{INPUT_NOT_EMPTY, NO_PROMPT, Readiness as R, WORKING};
        let blocked = |_: &str| R::Blocked(String::new());
        let cases: &[(Provider, &str, R)] = &[
            (
                Provider::Claude,
                "───\n❯\u{a0}\n───\n  auto mode on",
                R::Ready,
            ),
            (
                Provider::Claude,
                "───\n❯\u{a0}hello world typed\n───",
                R::Busy(INPUT_NOT_EMPTY),
            ),
            (
                Provider::Claude,
                "❯ slow\n● \n✽ Schlepping…\n───\n❯\u{a0}\n───\n  auto mode on · esc to interrupt",
                R::Busy(WORKING),
            ),
            (
                Provider::Claude,
                "───\n❯\u{a0}Press up to edit queued messages\n───\n esc to interrupt",
                R::Busy(WORKING),
            ),
            (
                Provider::Claude,
                " Quick safety check: Is this a project you trust?\n ❯ No, exit\n   Yes, I trust this folder\n Enter to confirm · Esc to cancel",
                blocked(""),
            ),
            (
                Provider::Codex,
                "› Ask Codex to do anything\n  GPT-5.5 default · ~/p",
                R::Ready,
            ),
            (
                Provider::Codex,
                "› hello\n• ok 1\n› Ask a follow-up question",
                R::Ready,
            ),
            (
                Provider::Codex,
                "› hello world typed\n  GPT-5.5 default",
                R::Busy(INPUT_NOT_EMPTY),
            ),
            (
                Provider::Codex,
                "• Working (2s • esc to interrupt)\n› Ask Codex to do anything",
                R::Busy(WORKING),
            ),
            (
                Provider::Codex,
                "  Meet a new model\n› 1. Try new model\n  2. Use existing model\n  enter/esc confirm · ^c quit",
                blocked(""),
            ),
            (
                Provider::Codex,
                "  Sign in with ChatGPT to use Codex\n> 1. Sign in with ChatGPT\n  2. Provide your own API key",
                blocked(""),
            ),
            (
                Provider::Gemini,
                "▄▄▄\n >   Type your message or @path/to/file\n▀▀▀",
                R::Ready,
            ),
            (
                Provider::Gemini,
                "▄▄▄\n > hello there\n▀▀▀",
                R::Busy(INPUT_NOT_EMPTY),
            ),
            (
                Provider::Gemini,
                " ⠋ Thinking... (esc to cancel, 0s)\n▄▄▄\n >   Type your message\n▀▀▀",
                R::Busy(WORKING),
            ),
            (
                Provider::Gemini,
                " │ Do you trust the files in this folder? │\n │ ● 1. Trust folder (p) │",
                blocked(""),
            ),
            (
                Provider::Gemini,
                "Tips for getting started:\n1. Create GEMINI.md files\n",
                R::Busy(NO_PROMPT),
            ),
            (
                Provider::Copilot,
                "───\n❯ \n───\n / commands · ? help",
                R::Ready,
            ),
            (
                Provider::Copilot,
                " ○ Working esc esc edit prompt\n───\n❯ \n───",
                R::Busy(WORKING),
            ),
            (
                Provider::Copilot,
                "│ Do you trust the files in this folder? │\n│ ❯ 1. Yes │\n│ ↑/↓ to navigate · enter to select │",
                blocked(""),
            ),
            (
                Provider::Qwen,
                "───\n>   Type your message or @path/to/file\n───",
                R::Ready,
            ),
            (
                Provider::Qwen,
                "───\n> hello there \u{200b}\n───",
                R::Busy(INPUT_NOT_EMPTY),
            ),
            (
                Provider::Qwen,
                "│ Connect a Provider │\n│ › Alibaba ModelStudio │",
                blocked(""),
            ),
            (Provider::Aider, "Aider v0.86.2\n───\n>", R::Ready),
            (
                Provider::Aider,
                "     ░█    Waiting for openai/local-model",
                R::Busy(WORKING),
            ),
            (
                Provider::Aider,
                "Login to OpenRouter or create a free account? (Y)es/(N)o [Yes]:",
                blocked(""),
            ),
            (Provider::Kimi, " ╭───╮\n │ >   │\n ╰───╯", R::Ready),
            (
                Provider::Opencode,
                "  ┃  Ask anything…\n  ┃  Build · Local Model\n  tab agents  ctrl+p commands",
                R::Ready,
            ),
            (Provider::Opencode, "  loading", R::Busy(NO_PROMPT)),
            (
                Provider::Opencode,
                "  ┃\n  ┃  [Pasted ~5 lines]\n  ┃\n  ┃  Build · Local Model\n  ╹▀▀▀\n  tab agents  ctrl+p commands",
                R::Busy(INPUT_NOT_EMPTY),
            ),
            (
                Provider::Opencode,
                "  ┃\n  ┃  [JEKT:FROM=a]\n  ┃\n\n  ┃\n  ┃\n  ┃\n  ┃  Build · Local Model\n  ╹▀▀▀\n  ctrl+p commands",
                R::Ready,
            ),
            (
                Provider::Pi,
                "───\n\n───\n~/project\n0.0%/128k (auto)      local-model",
                R::Ready,
            ),
            (Provider::Pi, " pi v0.73.1\n", R::Busy(NO_PROMPT)),
            (
                Provider::Pi,
                "───\n[JEKT:FROM=a TO=b\n[/JEKT]\n───\n~/project\n0.0%/128k (auto)",
                R::Busy(INPUT_NOT_EMPTY),
            ),
            (
                Provider::Opencode,
                "   ⬝■■■■■■⬝  esc interrupt",
                R::Busy(WORKING),
            ),
            (Provider::Pi, " ⠼ Working...\n───\n\n───", R::Busy(WORKING)),
        ];
        for (provider, screen, want) in cases {
            let rows: Vec<String> = screen.lines().map(String::from).collect();
            let got = Profile::builtin(*provider).screen.read(&rows);
            let same = match (want, &got) {
                (R::Blocked(_), R::Blocked(_)) => true,
                (w, g) => w == g,
            };
            assert!(same, "{provider}: {screen:?} read as {got:?}, not {want:?}");
        }
    }
}
