//! Provider profiles: how each kind of program takes a jekt.

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
    /// taken the paste in before Enter arrives.
    pub settle_ms: u64,
    /// The submit key, sent once after the settle time. Empty: never submit.
    pub submit: String,
    /// Typed (then submitted) to ask the program to quit. Absent: the pane
    /// gets SIGHUP instead, as when a terminal window closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quit_text: Option<String>,
}

impl Profile {
    /// The built-in profile of `provider`.
    pub fn builtin(provider: Provider) -> Profile {
        let agent_cli = |quit: &str| Profile {
            bracketed_paste: true,
            settle_ms: 250,
            submit: "\r".into(),
            quit_text: Some(quit.into()),
        };
        match provider {
            Provider::Claude => agent_cli("/exit"),
            Provider::Codex | Provider::Gemini => agent_cli("/quit"),
            Provider::Shell => Profile {
                bracketed_paste: true,
                settle_ms: 50,
                submit: "\r".into(),
                quit_text: None,
            },
            Provider::Raw => Profile {
                bracketed_paste: true,
                settle_ms: 0,
                submit: String::new(),
                quit_text: None,
            },
        }
    }

    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_submits_nothing_and_agents_submit_once_with_cr() {
        assert!(Profile::builtin(Provider::Raw).submit.is_empty());
        for p in [
            Provider::Claude,
            Provider::Codex,
            Provider::Gemini,
            Provider::Shell,
        ] {
            assert_eq!(Profile::builtin(p).submit, "\r");
        }
        assert_eq!(
            Profile::builtin(Provider::Claude).quit_text.as_deref(),
            Some("/exit")
        );
    }
}
