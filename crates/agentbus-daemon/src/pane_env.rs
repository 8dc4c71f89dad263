//! What a pane's program finds in its environment.
//!
//! It is built from an allow-list, never by removing names known to be
//! secret: the daemon's own environment may hold anything (the relay
//! token, a key the user exported for another tool), and a pane runs an
//! agent that must see none of it. A pane gets:
//! - the variables of the daemon's environment that `panes.env_pass` (a
//!   terminal's basics: `PATH`, `HOME`, locale, ...) or its provider's
//!   `env_pass` (`ANTHROPIC_*` for Claude Code, ...) name;
//! - what the request asked for (`--env K=V`);
//! - `AGENTBUS_URL`, and for a named pane `AGENTBUS_AGENT_ID` and its own
//!   `AGENTBUS_AGENT_TOKEN`; `TERM`.
//!
//! No `AGENTBUS_*` variable is ever passed through, and a value equal to
//! a credential this daemon holds (the instance key, the forward token,
//! any agent's token, the relay token) is dropped wherever it comes from.

use agentbus_proto::api::Provider;

/// Set by the daemon in every pane; never passed through nor given.
pub const DAEMON_PREFIX: &str = "AGENTBUS_";

/// A terminal program's basics, passed from the daemon's environment
/// unless `panes.env_pass` says otherwise.
pub const BASE_PASS: [&str; 18] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "XDG_*",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "COLORTERM",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "NO_COLOR",
];

/// What each agent CLI reads besides the basics (its endpoint, key and
/// switches), unless `[profiles.<provider>] env_pass` says otherwise.
pub fn provider_pass(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Claude => &["ANTHROPIC_*", "CLAUDE_*", "DISABLE_AUTOUPDATER"],
        Provider::Codex => &["OPENAI_*", "CODEX_*"],
        Provider::Gemini => &["GEMINI_*", "GOOGLE_*"],
        Provider::Copilot => &["COPILOT_*", "GH_TOKEN", "GITHUB_TOKEN"],
        Provider::Opencode => &["OPENCODE_*", "ANTHROPIC_*", "OPENAI_*"],
        Provider::Qwen => &["QWEN_*", "OPENAI_*", "DASHSCOPE_*"],
        Provider::Kimi => &["KIMI_*", "MOONSHOT_*"],
        Provider::Pi => &["PI_*", "ANTHROPIC_*", "OPENAI_*", "GEMINI_*"],
        Provider::Openclaw => &["OPENCLAW_*", "ANTHROPIC_*", "OPENAI_*"],
        Provider::Aider => &["AIDER_*", "OPENAI_*", "ANTHROPIC_*"],
        Provider::Generic | Provider::Shell | Provider::Raw => &[],
    }
}

/// Whether `name` is what `pattern` names: the name itself, or with a
/// trailing `*` any name that starts with the rest.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks one `env_pass` entry: a variable name, or a prefix and `*`.
/// Nothing may name the daemon's own variables, and `*` alone would make
/// the allow-list no list at all.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let bare = pattern.strip_suffix('*').unwrap_or(pattern);
    let valid = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "env_pass entry {pattern:?} must be a variable name, or a prefix followed by * (like LC_*)"
        ));
    }
    if DAEMON_PREFIX.starts_with(bare) || bare.starts_with(DAEMON_PREFIX) {
        return Err(format!(
            "env_pass entry {pattern:?} would pass {DAEMON_PREFIX} variables: the daemon sets a pane's own"
        ));
    }
    Ok(())
}

/// The variables of `from` (the daemon's environment) that `patterns`
/// name, minus the daemon's own and any whose value `is_secret`.
pub fn pass_through(
    from: impl IntoIterator<Item = (String, String)>,
    patterns: &[&str],
    is_secret: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = from
        .into_iter()
        .filter(|(k, _)| !k.starts_with(DAEMON_PREFIX))
        .filter(|(k, _)| patterns.iter().any(|p| matches(p, k)))
        .filter(|(k, v)| {
            let secret = is_secret(v);
            if secret {
                tracing::warn!(variable = %k, "not passing a variable that holds an agentbus credential into a pane");
            }
            !secret
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_listed_names_pass_and_never_the_daemons_own() {
        let env = vars(&[
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("AGENTBUS_RELAY_TOKEN", "rt"),
            ("AGENTBUS_AUTH_KEY", "k"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("ANTHROPIC_API_KEY", "sk"),
            ("MY_VAR", "the-relay-token"),
        ]);
        let mut pass: Vec<&str> = BASE_PASS.to_vec();
        pass.extend(provider_pass(Provider::Claude));
        pass.push("MY_VAR");
        let got = pass_through(env, &pass, |v| v == "the-relay-token");
        assert_eq!(
            got,
            vars(&[
                ("ANTHROPIC_API_KEY", "sk"),
                ("LC_ALL", "C"),
                ("PATH", "/bin")
            ])
        );
    }

    #[test]
    fn patterns_are_names_or_prefixes_and_never_reach_agentbus_variables() {
        for ok in ["PATH", "LC_*", "MY_APP_*", "X"] {
            check_pattern(ok).unwrap();
        }
        for bad in [
            "*",
            "AGENTBUS_*",
            "AGENT*",
            "A*",
            "AGENTBUS_RELAY_TOKEN",
            "a b",
            "",
            "X-Y",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        assert!(matches("LC_*", "LC_ALL") && !matches("LC_*", "LANG"));
        assert!(matches("PATH", "PATH") && !matches("PATH", "PATHX"));
    }
}
