//! Identifiers, validated once at the edge.
//!
//! An [`AgentId`] is `[A-Za-z0-9_-]{1,64}`: safe as a file name, a header
//! field in a jekt marker and a URL path segment. Anything else is rejected
//! when it is parsed, so code that holds an `AgentId` never re-checks it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid {kind} {shown}: {rule}")]
    Invalid {
        kind: &'static str,
        /// The rejected value, escaped and shortened for display.
        shown: String,
        rule: &'static str,
    },
}

const AGENT_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ -";
const REQUEST_RULE: &str = "must be 1-128 characters of A-Z a-z 0-9 _ - . :";

/// Escapes a value for display in an error or a marker field: printable
/// ASCII except quotes and backslashes stays, everything else becomes
/// `\u{..}`; long values are cut. The result never contains a control
/// character, so it is safe in a terminal and in a log line.
pub fn escape_for_display(raw: &str, max_chars: usize) -> String {
    let mut out = String::from("\"");
    for (i, c) in raw.chars().enumerate() {
        if i == max_chars {
            out.push_str("...");
            break;
        }
        if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out.push('"');
    out
}

fn is_agent_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The name of an agent: `[A-Za-z0-9_-]{1,64}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(is_agent_char) {
            return Err(IdError::Invalid {
                kind: "agent id",
                shown: escape_for_display(raw, 70),
                rule: AGENT_RULE,
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request id chosen by a client to make a send idempotent.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .chars()
                .all(|c| is_agent_char(c) || c == '.' || c == ':');
        if !ok {
            return Err(IdError::Invalid {
                kind: "request id",
                shown: escape_for_display(raw, 40),
                rule: REQUEST_RULE,
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A conversation a message belongs to, chosen by its sender.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ThreadId(String);

impl ThreadId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        RequestId::parse(raw)
            .map(|r| Self(r.0))
            .map_err(|_| IdError::Invalid {
                kind: "thread id",
                shown: escape_for_display(raw, 40),
                rule: REQUEST_RULE,
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A hosted pane ("block"). UUID v4.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlockId(uuid::Uuid);

impl BlockId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        uuid::Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| IdError::Invalid {
                kind: "block id",
                shown: escape_for_display(raw, 40),
                rule: "must be a UUID",
            })
    }
}

impl Default for BlockId {
    fn default() -> Self {
        Self::new()
    }
}

/// A jekt or mailbox message. UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(uuid::Uuid);

impl MessageId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The id a jekt or message (`kind`) travels under: with a request id,
    /// the same sender and request id give the same id on every attempt
    /// (a UUID v8 of a SHA-256 digest), so every store on the way — the
    /// request-id table here, the relay, a peer — keeps a retried send
    /// once; without one, a fresh [`MessageId::new`].
    pub fn for_request(kind: &str, sender: &str, request_id: Option<&RequestId>) -> Self {
        use sha2::{Digest, Sha256};
        let Some(rid) = request_id else {
            return Self::new();
        };
        let d = Sha256::new()
            .chain_update(kind)
            .chain_update([0])
            .chain_update(sender)
            .chain_update([0])
            .chain_update(rid.as_str())
            .finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Self(uuid::Builder::from_custom_bytes(b).into_uuid())
    }

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        uuid::Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| IdError::Invalid {
                kind: "message id",
                shown: escape_for_display(raw, 40),
                rule: "must be a UUID",
            })
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! string_id_impls {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.0)
            }
        }
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.to_string()
            }
        }
    )*};
}
string_id_impls!(AgentId, RequestId, ThreadId, BlockId, MessageId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_for_a_request_follow_the_request_id() {
        let rid = RequestId::parse("r1").unwrap();
        let id = |kind, sender| MessageId::for_request(kind, sender, Some(&rid));
        let a = id("jekt", "alice");
        assert_eq!(a, id("jekt", "alice"));
        assert_ne!(a, id("message", "alice"));
        assert_ne!(a, id("jekt", "bob"));
        assert_ne!(
            MessageId::for_request("jekt", "alice", None),
            MessageId::for_request("jekt", "alice", None)
        );
    }

    #[test]
    fn agent_ids_accept_the_documented_alphabet_only() {
        assert!(AgentId::parse("alice").is_ok());
        assert!(AgentId::parse("a_b-C9").is_ok());
        assert!(AgentId::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "../x", "a b", "a/b", "a\u{7}", "é", &"x".repeat(65)] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejected_values_are_shown_escaped() {
        let err = AgentId::parse("a\u{1b}[2J").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("\\u{1b}"), "{err}");
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id = AgentId::parse("bob").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"bob\"");
        let back: AgentId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<AgentId>("\"../x\"").is_err());
        let m = MessageId::new();
        assert_eq!(MessageId::parse(&m.to_string()).unwrap(), m);
    }
}
