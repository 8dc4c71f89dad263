//! The relay's wire protocol.
//!
//! - The **agent-bus protocol** (`POST /send`, `GET /recv`, `GET /inbox`,
//!   `GET /healthz`): plain JSON, existing clients unchanged. Errors are
//!   `{"error": "<text>"}`.
//! - The **daemon extension** (`/v1/relay/*`): a daemon sends jekts and
//!   messages with ids (idempotent), and keeps one long-poll for all its
//!   agents at once, against a cursor the relay keeps per (consumer,
//!   agent), which the daemon advances by acking after local delivery.

use crate::ids::{AgentId, MessageId, ThreadId};
use crate::jekt::{Priority, Tier, Trust};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The channel of a send or recv that names none.
pub const DEFAULT_CHANNEL: &str = "default";
/// Largest `/send` body, in bytes.
pub const MAX_SEND_BYTES: usize = 65_536;

/// The most agents one `/v1/relay/poll` may name.
pub const MAX_POLL_AGENTS: usize = 1_000;
/// Longest recipient, sender or channel name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// What [`name_ok`] asks of a name, for error messages.
pub const NAME_RULE: &str =
    "must be 1 to 256 bytes, without control characters or invisible formatting";

/// Whether `s` may be a recipient, sender or channel name on the relay:
/// 1 to [`MAX_NAME_BYTES`] bytes with no control character, line or
/// paragraph separator, or invisible formatting character. A name is
/// shown on a terminal line of its own, so it must not be able to begin
/// another line or hide what it says.
pub fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.chars().all(|c| {
            !c.is_control()
                && !matches!(c, '\u{2028}' | '\u{2029}')
                && !crate::jekt::is_invisible_format(c)
        })
}

/// A message as agent-bus `/recv` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedMessage {
    pub ts: f64,
    pub from: String,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecvResponse {
    pub messages: Vec<SeedMessage>,
    pub now: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResponse {
    pub ok: bool,
    pub ts: f64,
    pub channel: String,
}

/// The agent-bus error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedError {
    pub error: String,
}

/// What a relayed message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayKind {
    /// Sent by a agent-bus client with `/send`: the receiving daemon types
    /// it in as a jekt.
    Plain,
    /// A jekt a daemon could not deliver locally.
    Jekt,
    /// A mailbox message for an agent elsewhere.
    Message,
}

/// `POST /v1/relay/send`: a daemon hands over a jekt or a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelaySend {
    /// Idempotency: the same id is stored once.
    pub id: MessageId,
    pub from: String,
    pub to: AgentId,
    pub kind: RelayKind,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<ThreadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// How sure the sending daemon is of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_trust: Option<Trust>,
    /// The sending instance's signature over what it hands over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SenderSignature>,
}

/// An instance's Ed25519 signature over a relayed item: its id, kind,
/// sender, recipient, the SHA-256 of its body, its tier, priority, thread
/// and reply-to, the instance's name and the time of signing (see the
/// daemon's `signing` module for the exact bytes). The relay passes it on
/// untouched; it cannot make one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderSignature {
    /// The name the instance gives itself (`[daemon] instance_name`).
    pub instance: String,
    /// Its public key, base64 (32 bytes).
    pub key: String,
    /// Unix ms when it signed.
    pub at_ms: i64,
    /// The signature, base64 (64 bytes).
    pub sig: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelaySendResponse {
    pub id: MessageId,
    pub seq: i64,
    pub ts: f64,
    /// This id was stored before; nothing new was stored.
    #[serde(default)]
    pub duplicate: bool,
}

/// `POST /v1/relay/poll`: wait for mail for any of `agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayPoll {
    /// Who is polling. With an instance token the token's name is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    pub agents: Vec<AgentId>,
    /// Seconds to wait when nothing is pending (at most 30).
    #[serde(default)]
    pub wait_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// One relayed item as a daemon receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayEnvelope {
    pub id: MessageId,
    pub seq: i64,
    pub ts: f64,
    pub channel: String,
    pub from: String,
    pub to: String,
    pub kind: RelayKind,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<ThreadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The relay authenticated the sender: its own agent token, or an
    /// instance token vouching for a sender it had proven.
    #[serde(default)]
    pub sender_verified: bool,
    /// As the sending instance signed it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SenderSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayPollResponse {
    /// The agents with mail in this answer.
    pub wake: Vec<String>,
    /// Oldest first per agent.
    pub messages: Vec<RelayEnvelope>,
    /// Agents of the poll it may not act for: another instance hosts
    /// them (or, for an agent token, they are not its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// `POST /v1/relay/ack`: everything up to `seq` for each agent is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    pub acks: BTreeMap<String, i64>,
}

/// `GET /inbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxCounts {
    pub recipients: BTreeMap<String, BTreeMap<String, u64>>,
    pub now: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_timestamps_round_trip_exactly() {
        for ts in [
            1_795_266_075.123_456_7_f64,
            f64::from_bits(0x41DA_BCDE_F012_3457),
            0.1 + 0.2,
        ] {
            let m = SeedMessage {
                ts,
                from: "a".into(),
                msg: "b".into(),
            };
            let back: SeedMessage =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back.ts.to_bits(), ts.to_bits());
        }
    }
}
