//! Scopes: what an agent token may call on the App API, and on what.
//!
//! A scope is `method[@target]`:
//! - `method` is a method name (`agent.send`), a family (`agent.*`,
//!   `pane.*`, `block.*`, `controller.*`, `event.*`, `session.*`,
//!   `meta.*`, `conn.*`, `file.*`) or `*`;
//! - `target` is `self` (the token's own agent and its blocks), an agent
//!   name or glob (`worker-*`), `block:<id>`, `scope:<event scope glob>`,
//!   `host:<glob>` (an ssh destination's host; with an `@`, its
//!   `user@host`), `root:<root name glob>[:<path glob>]` (files beneath a
//!   root), or `*`. Without one, any target.
//!
//! A call is allowed when one scope covers its method and every target it
//! names. The instance key is not held to scopes.

use super::methods::{self, Family};
use agentbus_proto::{AgentId, BlockId};
use std::fmt;

/// Capabilities a method has beside its own name, granted by scopes
/// like methods: `agent.send:raw` (type exact input with `agent.send`;
/// in the controller family, as `controllerinput` is).
pub const CAPABILITIES: &[&str] = &[super::agent::RAW_SCOPE];

/// What a call acts on, as read from its params.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Agent(AgentId),
    /// A block and the agent names bound to it.
    Block {
        id: BlockId,
        names: Vec<AgentId>,
    },
    /// An event scope that names neither an agent nor a block.
    EventScope(String),
    /// Every event scope (`allscopes`).
    AllEventScopes,
    /// The whole daemon: methods that read or change more than one agent's
    /// things (sessions, the config and live settings). Only a scope with
    /// no target, or `@*`, covers it; `@self` does not.
    Instance,
    /// An ssh destination (`conn*`, a pane opened with `conn`): its host
    /// and user.
    Host {
        host: String,
        user: Option<String>,
    },
    /// Every known connection (`connlist`, `connstatus` without a host).
    AllHosts,
    /// A file: a root's name (empty when the call did not say which) and
    /// the path beneath it, normalized (`.` for the root itself).
    Path {
        root: String,
        path: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Agent(a) => write!(f, "{a}"),
            Target::Block { id, .. } => write!(f, "block:{id}"),
            Target::EventScope(s) => write!(f, "scope:{s}"),
            Target::AllEventScopes => f.write_str("*"),
            Target::Instance => f.write_str("instance"),
            Target::Host {
                host,
                user: Some(u),
            } => write!(f, "host:{u}@{host}"),
            Target::Host { host, user: None } => write!(f, "host:{host}"),
            Target::AllHosts => f.write_str("host:*"),
            Target::Path { root, path } => {
                // A root as the caller wrote it may be any text.
                let plain = root
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain && root.len() <= 64 {
                    write!(f, "root:{root}:")?;
                } else {
                    write!(
                        f,
                        "root:{}:",
                        agentbus_proto::ids::escape_for_display(root, 64)
                    )?;
                }
                f.write_str(&agentbus_proto::ids::escape_for_display(path, 120))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum MethodPattern {
    Any,
    Family(Family),
    Exact(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
enum TargetPattern {
    Any,
    Own,
    Block(String),
    EventScope(String),
    AgentGlob(String),
    Host(String),
    /// `root:<name glob>[:<path glob>]`.
    Root(String, Option<String>),
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    text: String,
    method: MethodPattern,
    target: Option<TargetPattern>,
}

/// `*` anywhere in `pattern` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn glob_ok(s: &str) -> bool {
    // A host target may name a user (`host:deploy@web-*`).
    let extra = if s.starts_with("host:") { "@[]" } else { "" };
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_*:./".contains(c) || extra.contains(c))
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, String> {
        let bad = |why: &str| format!("scope {text:?} is invalid: {why}");
        let (m, t) = match text.split_once('@') {
            Some((m, t)) => (m, Some(t)),
            None => (text, None),
        };
        let method = if m == "*" {
            MethodPattern::Any
        } else if let Some(fam) = m.strip_suffix(".*") {
            MethodPattern::Family(Family::parse(fam).ok_or_else(|| {
                bad("families are agent.*, pane.*, block.*, controller.*, event.*, session.*, meta.*, conn.*, file.*")
            })?)
        } else {
            MethodPattern::Exact(
                methods::find(m)
                    .map(|m| m.name)
                    .or_else(|| CAPABILITIES.iter().copied().find(|c| *c == m))
                    .ok_or_else(|| bad(&format!("no method named {m}")))?,
            )
        };
        let target = match t {
            None => None,
            Some("*") => Some(TargetPattern::Any),
            Some("self") => Some(TargetPattern::Own),
            Some(t) if !glob_ok(t) => {
                return Err(bad(
                    "a target is self, *, an agent name or glob, block:<id>, scope:<scope>, \
                     host:<glob> or root:<root>[:<path>]",
                ));
            }
            Some(t) => Some(if let Some(b) = t.strip_prefix("block:") {
                TargetPattern::Block(b.to_string())
            } else if let Some(s) = t.strip_prefix("scope:") {
                TargetPattern::EventScope(s.to_string())
            } else if let Some(h) = t.strip_prefix("host:") {
                TargetPattern::Host(h.to_ascii_lowercase())
            } else if let Some(r) = t.strip_prefix("root:") {
                match r.split_once(':') {
                    Some((name, path)) => {
                        TargetPattern::Root(name.to_string(), Some(path.to_string()))
                    }
                    None => TargetPattern::Root(r.to_string(), None),
                }
            } else {
                TargetPattern::AgentGlob(t.to_string())
            }),
        };
        Ok(Scope {
            text: text.to_string(),
            method,
            target,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn covers_method(&self, name: &str, family: Family) -> bool {
        match &self.method {
            MethodPattern::Any => true,
            MethodPattern::Family(f) => *f == family,
            MethodPattern::Exact(m) => *m == name,
        }
    }

    fn covers_target(&self, target: &Target, me: &AgentId) -> bool {
        let Some(p) = &self.target else { return true };
        let agent = |a: &AgentId| match p {
            TargetPattern::Any => true,
            TargetPattern::Own => a == me,
            TargetPattern::AgentGlob(g) => glob(g, a.as_str()),
            TargetPattern::Block(_)
            | TargetPattern::EventScope(_)
            | TargetPattern::Host(_)
            | TargetPattern::Root(..) => false,
        };
        match target {
            Target::Agent(a) => agent(a),
            Target::Block { id, names } => {
                matches!(p, TargetPattern::Block(b) if glob(b, &id.to_string()))
                    || names.iter().any(agent)
            }
            Target::EventScope(s) => match p {
                TargetPattern::Any => true,
                TargetPattern::EventScope(g) => glob(g, s),
                _ => false,
            },
            Target::AllEventScopes | Target::Instance => *p == TargetPattern::Any,
            // A glob with `@` is matched against `user@host` (a
            // destination without a user has none to match); without,
            // against the host alone.
            Target::Host { host, user } => match p {
                TargetPattern::Any => true,
                TargetPattern::Host(g) if g.contains('@') => user
                    .as_ref()
                    .is_some_and(|u| glob(g, &format!("{}@{host}", u.to_ascii_lowercase()))),
                TargetPattern::Host(g) => glob(g, host),
                _ => false,
            },
            Target::AllHosts => {
                matches!(p, TargetPattern::Any) || matches!(p, TargetPattern::Host(g) if g == "*")
            }
            Target::Path { root, path } => match p {
                TargetPattern::Any => true,
                // A call that left its root to be chosen is covered only
                // by a pattern for every root (it is refused later).
                TargetPattern::Root(r, rest) => {
                    glob(r, root) && rest.as_ref().is_none_or(|g| glob(g, path))
                }
                _ => false,
            },
        }
    }
}

/// A token's scopes, checked against one call.
pub fn check(
    scopes: &[Scope],
    me: &AgentId,
    method: &str,
    family: Family,
    targets: &[Target],
) -> Result<(), String> {
    let mine = Target::Agent(me.clone());
    // A call that names no target acts for the caller itself.
    let targets: &[Target] = if targets.is_empty() {
        std::slice::from_ref(&mine)
    } else {
        targets
    };
    for t in targets {
        let ok = scopes
            .iter()
            .any(|s| s.covers_method(method, family) && s.covers_target(t, me));
        if !ok {
            let t = if *t == mine {
                "self".to_string()
            } else {
                t.to_string()
            };
            return Err(format!("{method}@{t}"));
        }
    }
    Ok(())
}

pub fn parse_all(texts: &[String]) -> Result<Vec<Scope>, String> {
    texts.iter().map(|s| Scope::parse(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> AgentId {
        AgentId::parse(s).unwrap()
    }

    fn allowed(scopes: &[&str], method: &str, targets: &[Target]) -> Result<(), String> {
        let scopes: Vec<Scope> = scopes.iter().map(|s| Scope::parse(s).unwrap()).collect();
        let family = methods::find(method).unwrap().family;
        check(&scopes, &a("me"), method, family, targets)
    }

    #[test]
    fn scopes_parse_or_say_why_not() {
        for ok in [
            "*",
            "agent.*",
            "agent.send@worker-*",
            "controllerinput@block:0190*",
            "eventsub@scope:team-*",
            "agent.output@self",
            "conn.*@host:web-*",
            "connstatus@host:[::1]",
            "file.*@root:docs",
            "fileread@root:docs:reports/*",
        ] {
            Scope::parse(ok).unwrap();
        }
        for bad in [
            "agent.sned",
            "files.*",
            "agent.send@",
            "agent.send@a b",
            "fileread@root:a b",
        ] {
            let e = Scope::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn methods_and_targets_are_both_checked() {
        let bob = Target::Agent(a("bob"));
        assert!(allowed(&["agent.*"], "agent.stop", std::slice::from_ref(&bob)).is_ok());
        assert_eq!(
            allowed(&["agent.send"], "agent.stop", std::slice::from_ref(&bob)),
            Err("agent.stop@bob".into())
        );
        assert!(allowed(&["agent.output@self"], "agent.output", &[]).is_ok());
        assert_eq!(
            allowed(&["agent.output@self"], "agent.output", &[bob]),
            Err("agent.output@bob".into())
        );
        let block = Target::Block {
            id: BlockId::new(),
            names: vec![a("worker-2")],
        };
        assert!(allowed(&["controller.*@worker-*"], "controllerinput", &[block]).is_ok());
        let unbound = Target::Block {
            id: BlockId::new(),
            names: vec![],
        };
        assert!(allowed(&["controller.*@self"], "controllerinput", &[unbound]).is_err());
        assert!(
            allowed(
                &["eventsub@scope:team*"],
                "eventsub",
                &[Target::EventScope("team-a".into())]
            )
            .is_ok()
        );
        assert!(allowed(&["eventsub@scope:*"], "eventsub", &[Target::AllEventScopes]).is_err());
        assert!(allowed(&["eventsub"], "eventsub", &[Target::AllEventScopes]).is_ok());
    }

    #[test]
    fn raw_input_is_a_capability_of_its_own() {
        let bob = Target::Agent(a("bob"));
        let raw = |scopes: &[&str]| {
            let scopes: Vec<Scope> = scopes.iter().map(|s| Scope::parse(s).unwrap()).collect();
            check(
                &scopes,
                &a("me"),
                "agent.send:raw",
                Family::Controller,
                std::slice::from_ref(&bob),
            )
        };
        assert!(raw(&["agent.send"]).is_err());
        assert!(raw(&["agent.*"]).is_err());
        assert!(raw(&["agent.send:raw@bob"]).is_ok());
        assert!(raw(&["agent.send:raw@alice"]).is_err());
        assert!(raw(&["controller.*"]).is_ok());
        for default in crate::config::DEFAULT_APP_SCOPES {
            assert!(raw(&[default]).is_err(), "{default}");
        }
    }

    #[test]
    fn host_targets_match_the_host_or_user_and_host() {
        let host = |h: &str, u: Option<&str>| Target::Host {
            host: h.into(),
            user: u.map(Into::into),
        };
        let web = host("web-1", Some("deploy"));
        assert!(
            allowed(
                &["conn.*@host:web-*"],
                "connconnect",
                std::slice::from_ref(&web)
            )
            .is_ok()
        );
        assert!(
            allowed(
                &["conn.*@host:deploy@web-*"],
                "connconnect",
                std::slice::from_ref(&web)
            )
            .is_ok()
        );
        assert!(
            allowed(
                &["conn.*@host:root@web-*"],
                "connconnect",
                std::slice::from_ref(&web)
            )
            .is_err()
        );
        assert!(
            allowed(
                &["conn.*@host:deploy@*"],
                "connconnect",
                &[host("web-1", None)]
            )
            .is_err()
        );
        assert!(
            allowed(
                &["conn.*@host:db-*"],
                "connconnect",
                std::slice::from_ref(&web)
            )
            .is_err()
        );
        assert!(
            allowed(
                &["conn.*@worker-*"],
                "connconnect",
                std::slice::from_ref(&web)
            )
            .is_err()
        );
        assert!(allowed(&["conn.*@self"], "connconnect", std::slice::from_ref(&web)).is_err());
        assert!(allowed(&["agent.*"], "connconnect", std::slice::from_ref(&web)).is_err());
        assert!(allowed(&["conn.*"], "connconnect", &[web]).is_ok());
        assert!(allowed(&["connlist@host:web-*"], "connlist", &[Target::AllHosts]).is_err());
        assert!(allowed(&["connlist@host:*"], "connlist", &[Target::AllHosts]).is_ok());
        assert!(Scope::parse("conn.*@host:Deploy@Web-1").is_ok());
        assert!(Scope::parse("conn.*@web@1").is_err());
    }

    #[test]
    fn file_scopes_cover_their_root_and_path_only() {
        let at = |root: &str, path: &str| Target::Path {
            root: root.into(),
            path: path.into(),
        };
        assert!(allowed(&["fileread@root:docs"], "fileread", &[at("docs", "a/b")]).is_ok());
        assert!(allowed(&["file.*@root:docs"], "filewrite", &[at("docs", ".")]).is_ok());
        assert!(allowed(&["fileread@root:docs"], "filewrite", &[at("docs", "a")]).is_err());
        assert!(allowed(&["fileread@root:docs"], "fileread", &[at("work", "a")]).is_err());
        assert!(allowed(&["fileread@root:docs"], "fileread", &[at("", "a")]).is_err());
        assert!(
            allowed(
                &["fileread@root:docs:reports/*"],
                "fileread",
                &[at("docs", "reports/q1.txt")]
            )
            .is_ok()
        );
        assert!(
            allowed(
                &["fileread@root:docs:reports/*"],
                "fileread",
                &[at("docs", "secrets")]
            )
            .is_err()
        );
        // Both ends of a copy must be covered.
        assert!(
            allowed(
                &["filecopy@root:docs"],
                "filecopy",
                &[at("docs", "a"), at("work", "a")]
            )
            .is_err()
        );
        // Agent-name patterns never cover a file, nor self.
        assert!(
            allowed(
                &["file.*@*-x", "file.*@self"],
                "fileread",
                &[at("docs", "a")]
            )
            .is_err()
        );
        // How the audit shows a file: root and path, any text escaped.
        assert_eq!(at("docs", "a b.txt").to_string(), "root:docs:\"a b.txt\"");
        let odd = at("x\ny", "p\nq").to_string();
        assert!(!odd.contains('\n') && odd.starts_with("root:\""), "{odd}");
        // Nor does a root pattern cover an agent.
        assert!(
            allowed(
                &["agent.*@root:*"],
                "agent.stop",
                &[Target::Agent(a("bob"))]
            )
            .is_err()
        );
    }

    #[test]
    fn instance_wide_methods_need_an_unrestricted_scope() {
        for method in ["session:restore", "setvar", "getfullconfig"] {
            let t = [Target::Instance];
            assert!(
                allowed(&[&format!("{method}@self")], method, &t).is_err(),
                "{method}"
            );
            assert!(allowed(&["*@self"], method, &t).is_err(), "{method}");
            assert!(allowed(&[&format!("{method}@worker-*")], method, &t).is_err());
            assert!(allowed(&[method], method, &t).is_ok(), "{method}");
            assert!(
                allowed(&[&format!("{method}@*")], method, &t).is_ok(),
                "{method}"
            );
            assert!(allowed(&["*"], method, &t).is_ok(), "{method}");
        }
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("w*-*x", "w1-2x"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "ab-"));
        assert!(glob("a*b", "ab"));
        assert!(!glob("abc", "ab"));
    }
}
