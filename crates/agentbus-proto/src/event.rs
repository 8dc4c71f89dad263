//! Events: typed facts the daemon publishes on its internal bus, each with
//! the scopes a subscriber can filter on (`local`, `agent:<id>`,
//! `block:<id>`), plus custom events that clients publish.
//!
//! On the wire every event is `{"type", "scopes", "data", "ts_ms"}`.

use crate::api::Provider;
use crate::ids::{AgentId, BlockId, MessageId};
use crate::jekt::Trust;
use serde::{Deserialize, Serialize};

/// What happened. Serialized as `{"type": "<name>", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventKind {
    #[serde(rename = "agent:registered")]
    AgentRegistered {
        agent_id: AgentId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_id: Option<BlockId>,
    },
    #[serde(rename = "agent:unregistered")]
    AgentUnregistered { agent_id: AgentId },
    /// What a list of agents shows of one, published when it changes
    /// (its last activity at most every few seconds), and once for every
    /// agent when a listener comes to a daemon nobody was listening to.
    /// Never kept in history.
    #[serde(rename = "agent:state")]
    AgentStatus {
        agent_id: AgentId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_id: Option<BlockId>,
        state: crate::api::AgentState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        readiness: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        /// Unix ms of the pane's last output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_activity_ms: Option<i64>,
        held_jekts: u32,
        /// Messages in its mailbox not acknowledged yet.
        unread_mail: u64,
    },
    #[serde(rename = "block:created")]
    BlockCreated {
        block_id: BlockId,
        /// Absent for a block no agent is bound to (App API `pane.open`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<AgentId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<Provider>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        /// The block's view, for blocks made through the App API.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        view: Option<String>,
    },
    #[serde(rename = "block:deleted")]
    BlockDeleted { block_id: BlockId },
    #[serde(rename = "block:exited")]
    BlockExited {
        block_id: BlockId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<AgentId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    #[serde(rename = "jekt:delivered")]
    JektDelivered {
        msg_id: MessageId,
        from: String,
        to: AgentId,
        block_id: BlockId,
        trust: Trust,
        /// Bytes written into the pane, marker included.
        bytes: usize,
        /// Seconds it waited in the durable hold, if it was held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held_for_s: Option<u64>,
    },
    #[serde(rename = "jekt:held")]
    JektHeld {
        msg_id: MessageId,
        from: String,
        to: AgentId,
    },
    #[serde(rename = "message:received")]
    MessageReceived {
        id: MessageId,
        seq: i64,
        from: String,
        to: AgentId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<crate::ThreadId>,
    },
    /// The machine's load, published for a `sysinfo` block.
    #[serde(rename = "sysinfo")]
    Sysinfo {
        block_id: BlockId,
        /// Busy share of all CPUs since the previous sample, 0-100.
        cpu_percent: f64,
        mem_total_kb: u64,
        mem_available_kb: u64,
        mem_used_percent: f64,
        /// 1, 5 and 15 minute load averages.
        load: [f64; 3],
    },
    /// A pane's output as it came, coalesced (up to 16 KiB or 50 ms a
    /// chunk). Published only while an App API subscription asks for it,
    /// on a channel of its own, and never kept in history.
    #[serde(rename = "agent:output")]
    AgentOutput {
        block_id: BlockId,
        /// The first agent name bound to the block, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<AgentId>,
        /// The output as UTF-8 text (a byte that is not UTF-8 becomes
        /// U+FFFD; a character split between chunks is kept whole),
        /// escape sequences included, the terminal queries the daemon
        /// answers left out.
        data: String,
        /// Bytes of output this chunk holds.
        bytes: usize,
        /// Output before this chunk did not all reach the feed (a flood
        /// outran it), or, for a tmux pane, its screen changed: read the
        /// screen (`agent.output`, `captureblockscreenshot`) for the
        /// whole picture.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resync: bool,
    },
    /// Published by a client; its type is not one of the above.
    #[serde(untagged)]
    Custom {
        #[serde(rename = "type")]
        event_type: String,
        data: serde_json::Value,
    },
}

/// Type names agentbus itself publishes; clients may not publish these.
pub const BUILTIN_TYPES: [&str; 11] = [
    "agent:output",
    "agent:registered",
    "agent:state",
    "agent:unregistered",
    "block:created",
    "block:deleted",
    "block:exited",
    "jekt:delivered",
    "jekt:held",
    "message:received",
    "sysinfo",
];

impl EventKind {
    /// The event's type name, as on the wire.
    pub fn type_name(&self) -> &str {
        match self {
            EventKind::AgentRegistered { .. } => "agent:registered",
            EventKind::AgentUnregistered { .. } => "agent:unregistered",
            EventKind::AgentStatus { .. } => "agent:state",
            EventKind::AgentOutput { .. } => "agent:output",
            EventKind::BlockCreated { .. } => "block:created",
            EventKind::BlockDeleted { .. } => "block:deleted",
            EventKind::Sysinfo { .. } => "sysinfo",
            EventKind::BlockExited { .. } => "block:exited",
            EventKind::JektDelivered { .. } => "jekt:delivered",
            EventKind::JektHeld { .. } => "jekt:held",
            EventKind::MessageReceived { .. } => "message:received",
            EventKind::Custom { event_type, .. } => event_type,
        }
    }

    /// The scopes a built-in event is published under; custom events
    /// carry the scopes their publisher gave.
    fn scopes(&self) -> Vec<String> {
        // A pane's output is never under `local`: a scope on `local`
        // alone must not read every terminal.
        let mut scopes = match self {
            EventKind::AgentOutput { .. } => Vec::new(),
            _ => vec!["local".to_string()],
        };
        let (agent, block) = match self {
            EventKind::AgentRegistered { agent_id, block_id } => (Some(agent_id), *block_id),
            EventKind::AgentUnregistered { agent_id } => (Some(agent_id), None),
            EventKind::AgentStatus {
                agent_id, block_id, ..
            } => (Some(agent_id), *block_id),
            EventKind::BlockCreated {
                block_id, agent_id, ..
            }
            | EventKind::AgentOutput {
                block_id, agent_id, ..
            }
            | EventKind::BlockExited {
                block_id, agent_id, ..
            } => (agent_id.as_ref(), Some(*block_id)),
            EventKind::BlockDeleted { block_id } | EventKind::Sysinfo { block_id, .. } => {
                (None, Some(*block_id))
            }
            EventKind::JektDelivered { to, block_id, .. } => (Some(to), Some(*block_id)),
            EventKind::JektHeld { to, .. } | EventKind::MessageReceived { to, .. } => {
                (Some(to), None)
            }
            EventKind::Custom { .. } => (None, None),
        };
        if let Some(a) = agent {
            scopes.push(format!("agent:{a}"));
        }
        if let Some(b) = block {
            scopes.push(format!("block:{b}"));
        }
        scopes
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub kind: EventKind,
    pub scopes: Vec<String>,
    pub ts_ms: i64,
    /// Who published a custom event (`admin`, `agent:<id>`); absent for
    /// agentbus's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Event {
    /// Stamps `kind` with the current time and its scopes.
    pub fn new(kind: EventKind) -> Self {
        let scopes = kind.scopes();
        Self {
            kind,
            scopes,
            ts_ms: crate::now_ms(),
            source: None,
        }
    }

    /// A client's event, with the scopes it chose.
    pub fn custom(
        event_type: String,
        scopes: Vec<String>,
        data: serde_json::Value,
        source: String,
    ) -> Self {
        Self {
            kind: EventKind::Custom { event_type, data },
            scopes,
            ts_ms: crate::now_ms(),
            source: Some(source),
        }
    }

    /// Whether this event matches a filter: its type (if given) and one
    /// of its scopes (if given).
    pub fn matches(&self, event_type: Option<&str>, scope: Option<&str>) -> bool {
        event_type.is_none_or(|t| self.kind.type_name() == t)
            && scope.is_none_or(|s| self.scopes.iter().any(|x| x == s))
    }
}

/// A custom event type: `[a-z0-9_.:-]{1,64}`, not a built-in name.
pub fn check_custom_type(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
    if !ok {
        return Err(format!(
            "event type {} must be 1-64 of a-z 0-9 _ . : -",
            crate::ids::escape_for_display(t, 40)
        ));
    }
    if BUILTIN_TYPES.contains(&t) {
        return Err(format!(
            "{t} is published by agentbus itself and cannot be published by a client"
        ));
    }
    Ok(())
}

/// A scope: `[A-Za-z0-9_.:-]{1,128}`.
pub fn check_scope(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope {} must be 1-128 of A-Z a-z 0-9 _ . : -",
            crate::ids::escape_for_display(s, 40)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_scopes_and_type_on_the_wire() {
        let a = AgentId::parse("alice").unwrap();
        let b = BlockId::new();
        let e = Event::new(EventKind::BlockCreated {
            block_id: b,
            agent_id: Some(a),
            provider: Some(Provider::Shell),
            pid: Some(7),
            view: None,
        });
        assert_eq!(
            e.scopes,
            vec![
                "local".to_string(),
                "agent:alice".into(),
                format!("block:{b}")
            ]
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "block:created");
        assert_eq!(v["data"]["agent_id"], "alice");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn custom_events_have_the_same_shape_and_cannot_take_builtin_names() {
        let e = Event::custom(
            "build:done".into(),
            vec!["team:a".into()],
            serde_json::json!({"ok": true}),
            "agent:ci".into(),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "build:done");
        assert_eq!(v["data"]["ok"], true);
        assert_eq!(v["scopes"][0], "team:a");
        assert_eq!(v["source"], "agent:ci");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert!(e.matches(Some("build:done"), Some("team:a")));
        assert!(!e.matches(Some("build:done"), Some("team:b")));
        assert!(e.matches(None, None));
        assert!(check_custom_type("block:exited").is_err());
        assert!(check_custom_type("Bad Type").is_err());
        assert!(check_custom_type("build:done").is_ok());
        assert!(check_scope("agent:alice").is_ok());
        assert!(check_scope("a b").is_err());
    }
}
