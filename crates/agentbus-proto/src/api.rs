//! Bodies of the HTTP API: the AgentMux reactive routes (same paths and
//! field names) and the `/v1` routes that manage panes.

use crate::ids::{AgentId, BlockId, MessageId, RequestId};
use crate::jekt::{Delivery, Priority, Tier, Trust};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Every failure: a real HTTP status plus `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `agent_not_found`, `ambiguous_agent`, ...
    pub code: String,
    /// A sentence a person (or an agent) can act on.
    pub message: String,
    /// Extra facts for the caller, such as the candidates of an ambiguous
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error answer as a caller holds it: status, code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status; 0 when the server could not be reached at all.
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiFailure {
    /// From an error answer's status and body; a body that is not an
    /// agentbus error becomes its text under `fallback_code`.
    pub fn from_body(status: u16, body: &[u8], fallback_code: &str) -> ApiFailure {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => ApiFailure {
                status,
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => ApiFailure {
                status,
                code: fallback_code.into(),
                message: String::from_utf8_lossy(body).into_owned(),
            },
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            return f.write_str(&self.message);
        }
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for ApiFailure {}

/// The CLI program a pane hosts; selects its profile (how to type into
/// it, how its screen shows it ready, how to ask it to quit).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Claude,
    Codex,
    Gemini,
    /// GitHub Copilot CLI.
    Copilot,
    Opencode,
    /// Qwen Code.
    Qwen,
    /// Kimi CLI.
    Kimi,
    /// The Pi coding agent.
    Pi,
    Openclaw,
    Aider,
    /// Any other agent CLI: bracketed paste, Enter, `/exit`; readiness
    /// from quiet time only.
    Generic,
    #[default]
    Shell,
    Raw,
}

impl Provider {
    pub const ALL: [Provider; 13] = [
        Provider::Claude,
        Provider::Codex,
        Provider::Gemini,
        Provider::Copilot,
        Provider::Opencode,
        Provider::Qwen,
        Provider::Kimi,
        Provider::Pi,
        Provider::Openclaw,
        Provider::Aider,
        Provider::Generic,
        Provider::Shell,
        Provider::Raw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Claude => "claude",
            Provider::Codex => "codex",
            Provider::Gemini => "gemini",
            Provider::Copilot => "copilot",
            Provider::Opencode => "opencode",
            Provider::Qwen => "qwen",
            Provider::Kimi => "kimi",
            Provider::Pi => "pi",
            Provider::Openclaw => "openclaw",
            Provider::Aider => "aider",
            Provider::Generic => "generic",
            Provider::Shell => "shell",
            Provider::Raw => "raw",
        }
    }

    /// The command that starts this agent CLI, for the providers that
    /// are one program (`generic`, `shell` and `raw` are not).
    pub fn program(self) -> Option<&'static str> {
        match self {
            Provider::Generic | Provider::Shell | Provider::Raw => None,
            p => Some(p.as_str()),
        }
    }

    /// The command line that starts this agent CLI at its prompt, for the
    /// providers that are one program.
    pub fn command(self) -> Option<Vec<&'static str>> {
        match self {
            // Bare `openclaw` starts its setup wizard; `chat` is its prompt.
            Provider::Openclaw => Some(vec!["openclaw", "chat"]),
            p => p.program().map(|prog| vec![prog]),
        }
    }

    /// Guesses the provider from the command a pane runs (`claude ...`
    /// → claude); anything unknown is a shell, the cautious choice since a
    /// jekt into a shell is command execution.
    pub fn guess(command: &[String]) -> Provider {
        let prog = command
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c))
            .unwrap_or("");
        Provider::ALL
            .into_iter()
            .find(|p| p.program() == Some(prog))
            .unwrap_or(Provider::Shell)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown provider {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How long a jekt may wait for its pane to go quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleWait {
    /// Deliver now.
    #[default]
    No,
    /// Wait, up to the daemon's configured bound.
    Default,
    /// Wait at most this many milliseconds.
    UpToMs(u64),
}

/// Longest wait a caller may ask for, in seconds.
pub const MAX_IDLE_WAIT_S: f64 = 600.0;

impl<'de> Deserialize<'de> for IdleWait {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "wait_for_idle must be true, false or a number of seconds from 0 to {MAX_IDLE_WAIT_S}"
            ))
        };
        match v {
            serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(IdleWait::No),
            serde_json::Value::Bool(true) => Ok(IdleWait::Default),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(s) if (0.0..=MAX_IDLE_WAIT_S).contains(&s) => {
                    Ok(IdleWait::UpToMs((s * 1000.0) as u64))
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl Serialize for IdleWait {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IdleWait::No => s.serialize_bool(false),
            IdleWait::Default => s.serialize_bool(true),
            IdleWait::UpToMs(ms) => s.serialize_f64(*ms as f64 / 1000.0),
        }
    }
}

/// `POST /agentmux/reactive/inject` (the reactive routes; docs/http-api.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectRequest {
    pub target_agent: AgentId,
    /// A claimed sender. Ignored in favour of the token's agent when the
    /// caller holds an agent token (and refused if it names another agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_agent: Option<AgentId>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub wait_for_idle: IdleWait,
    /// How many instances have forwarded this jekt already.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u32,
    /// Set by a forwarding instance: how sure it was of the sender.
    /// Honoured only from a peer's forward token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_trust: Option<Trust>,
    /// Set in process, never on the wire: the caller resolved
    /// `target_agent` already and checked what it may do to exactly that
    /// agent (the App API, the relay poller), so the name must match
    /// exactly, not ignoring case.
    #[serde(skip)]
    pub exact_target: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What became of a jekt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectOutcome {
    /// Written into the pane and submitted (see `submitted`).
    Delivered,
    /// A peer instance on this machine delivered it.
    Forwarded,
    /// The relay accepted it; not yet delivered.
    Queued,
    /// Kept in the durable hold and replayed when the agent can take it:
    /// it is offline, or its CLI is not at a ready prompt (`reason`).
    Held,
}

/// Whether the screen showed a jekt's text leave the input box after the
/// submit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitState {
    /// The input box emptied: the text became a turn or a queued input.
    Confirmed,
    /// Submitted, but this provider's screen cannot be read to confirm it.
    Unconfirmed,
    /// The profile has no submit key (`raw`): typed only.
    NotSent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectResponse {
    pub outcome: InjectOutcome,
    pub msg_id: MessageId,
    pub target_agent: AgentId,
    /// The sender as the marker shows it.
    pub source_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_id: Option<BlockId>,
    pub trust: Trust,
    pub tier: Tier,
    pub delivery: Delivery,
    /// Whether the text went in as a bracketed paste.
    pub bracketed: bool,
    /// How long delivery waited for the pane to be ready (or quiet).
    pub waited_ms: u64,
    /// True when this `request_id` was seen before and nothing new was
    /// written: the response repeats the first delivery.
    #[serde(default)]
    pub duplicate: bool,
    /// For `delivered`: whether the submit was seen to take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<SubmitState>,
    /// For `held` while the agent runs: why it could not be typed now
    /// (`busy: working`, `blocked: sign-in screen`, `not submitted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /agentmux/reactive/register` (the reactive routes; docs/http-api.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub agent_id: AgentId,
    /// Bind the name to this existing pane; without it the agent is
    /// external (a script or a mailbox-only participant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_id: Option<BlockId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tab_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub agent_id: AgentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_id: Option<BlockId>,
    /// The agent's own token (`Authorization: Bearer ...`). Shown once.
    pub token: String,
}

/// `POST /agentmux/reactive/unregister` (the reactive routes; docs/http-api.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnregisterRequest {
    pub agent_id: AgentId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnregisterResponse {
    pub agent_id: AgentId,
    pub removed: bool,
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// The pane's program has not written anything yet, and started less
    /// than the idle threshold ago.
    Starting,
    /// The pane's program wrote output recently, or has written nothing
    /// since it started (it waits for input).
    Running,
    /// The pane has been quiet for the idle threshold.
    Idle,
    /// The pane's program ended.
    Exited,
    /// A registered agent with no pane (reachable by mailbox).
    External,
    /// Known from an earlier run of the daemon; not registered in this one.
    /// Jekts to it are held until it comes back.
    Offline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent_id: AgentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_id: Option<BlockId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    pub state: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Unix ms of the pane's last output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_ms: Option<i64>,
    pub registered_at_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// Whether the pane's program has bracketed paste enabled.
    #[serde(default)]
    pub bracketed_paste: bool,
    /// Bytes the pane's program has written.
    #[serde(default)]
    pub output_bytes: u64,
    /// Of those, bytes the screen parser skipped under a flood.
    #[serde(default)]
    pub output_skipped_bytes: u64,
    /// Jekts waiting in the durable hold for this agent.
    #[serde(default)]
    pub held_jekts: u32,
    /// Whether its CLI takes input now, read off its screen: `ready`,
    /// `busy: <why>` or `blocked: <what>` (absent for a provider whose
    /// screen agentbus cannot read, and for an agent without a pane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// The tmux pane the agent lives in, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmux: Option<TmuxPane>,
    /// Messages in its mailbox not acknowledged yet (in `/v1/agents` and
    /// `/v1/agents/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_mail: Option<u64>,
}

/// An existing tmux pane, named so it cannot be mistaken for another:
/// `%N` ids are reused across servers, and `respawn-pane` keeps the id
/// but starts a new program (pid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmuxPane {
    /// The tmux server's socket path (absolute).
    pub socket: String,
    /// `%N`
    pub pane_id: String,
    /// The pid of the pane's first process.
    pub pane_pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
}

/// Where a reachable agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// This instance hosts it.
    Local,
    /// Another instance on this machine hosts it (found in the registry).
    Peer,
}

/// One entry of `GET /v1/directory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub agent_id: AgentId,
    #[serde(rename = "where")]
    pub location: Location,
    /// Known for agents of this instance only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,
    /// Whether its CLI takes input now (agents of this instance whose
    /// screen agentbus reads): `ready`, `busy: ...`, `blocked: ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// The peer instance's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `GET /v1/directory`: every agent this instance can reach by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Directory {
    pub agents: Vec<DirectoryEntry>,
    /// The relay names not found here are sent to, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

/// `POST /v1/agents`: host a program in a new pane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRequest {
    pub agent_id: AgentId,
    /// Defaults to a guess from the command's program name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// The program to start; empty (or absent) with `tmux`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Adopt this existing tmux pane instead of starting a program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmux: Option<TmuxPane>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenResponse {
    pub agent_id: AgentId,
    pub block_id: BlockId,
    pub provider: Provider,
    /// False when the agent was already running: nothing new was started.
    pub created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// For an adopted tmux pane, newly opened: the agent's token (a
    /// hosted pane gets it in its environment). Shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /v1/agents/{id}/stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopRequest {
    /// Skip the graceful quit and SIGTERM: SIGKILL the pane's processes.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopResponse {
    pub agent_id: AgentId,
    pub block_id: BlockId,
    pub state: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Which step ended it: `exited` (already gone), `quit`, `sigterm`,
    /// `sigkill`.
    pub stopped_by: String,
}

/// `POST /v1/agents/{id}/resize`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ResizeRequest {
    pub rows: u16,
    pub cols: u16,
}

/// `GET /v1/agents/{id}/output?lines=N`: parsed text, oldest line first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputResponse {
    pub agent_id: AgentId,
    pub block_id: BlockId,
    pub lines: Vec<String>,
}

/// One audit record. Bodies are represented by their length and SHA-256,
/// never by their text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub ts_ms: i64,
    /// Resolved identity: `admin`, `agent:<id>`, `anonymous`, ...
    pub actor: String,
    /// `jekt`, `open`, `stop`, `register`, `unregister`, `auth`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `delivered`, `ok`, `denied`, `not_found`, ...
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_len: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

/// Text frames of the attach WebSocket (output and input are binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AttachControl {
    /// Client → daemon: the attached terminal's size changed.
    Resize { rows: u16, cols: u16 },
    /// Daemon → client: the pane's program ended.
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    /// Daemon → client: the daemon is shutting down.
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub api: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_request_accepts_the_seed_body() {
        let r: InjectRequest =
            serde_json::from_str(r#"{"target_agent":"a","source_agent":"b","message":"hi"}"#)
                .unwrap();
        assert_eq!(r.wait_for_idle, IdleWait::No);
        let r: InjectRequest =
            serde_json::from_str(r#"{"target_agent":"a","message":"hi","wait_for_idle":2.5}"#)
                .unwrap();
        assert_eq!(r.wait_for_idle, IdleWait::UpToMs(2500));
        let err = serde_json::from_str::<InjectRequest>(
            r#"{"target_agent":"a","message":"hi","wait_for_idle":-1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("wait_for_idle"), "{err}");
        let err = serde_json::from_str::<InjectRequest>(r#"{"message":"hi"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("target_agent"), "{err}");
    }

    #[test]
    fn providers_are_guessed_from_the_program() {
        let cmd = |s: &str| vec![s.to_string()];
        assert_eq!(
            Provider::guess(&cmd("/usr/local/bin/claude")),
            Provider::Claude
        );
        assert_eq!(Provider::guess(&cmd("codex")), Provider::Codex);
        assert_eq!(Provider::guess(&cmd("bash")), Provider::Shell);
        assert_eq!(Provider::guess(&cmd("raw")), Provider::Shell);
        assert_eq!("gemini".parse::<Provider>().unwrap(), Provider::Gemini);
        assert!("vim".parse::<Provider>().is_err());
    }
}

/// `POST /v1/messages`: leave a message in an agent's mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageRequest {
    pub to: AgentId,
    pub body: String,
    /// A claimed sender (instance key only; an agent token sends as itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<crate::ThreadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Seconds until the message expires (default 7 days, at most 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// Put a receipt in the sender's mailbox when the recipient acks.
    #[serde(default)]
    pub receipt: bool,
    /// The same id from the same sender stores the message once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// Set by a peer instance forwarding the message: how sure it is of
    /// the sender. Ignored from anyone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_trust: Option<Trust>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageResponse {
    pub id: MessageId,
    /// Position in the mailbox: read cursors are these numbers.
    pub seq: i64,
    pub to: AgentId,
    pub from: String,
    /// True when this request id was seen before: nothing new was stored.
    #[serde(default)]
    pub duplicate: bool,
    /// Whether an agent of that name is known to this instance. Mail to an
    /// unknown name is kept all the same (it may register later).
    pub recipient_known: bool,
    pub expires_ms: i64,
    /// The recipient is not on this instance: the relay holds the message
    /// for the instance that has it (`seq` is then 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// The recipient lives on another instance of this machine, which
    /// stored the message (`seq` is its mailbox's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
}

/// Where a message is in its life, per recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Stored, not yet seen by a read.
    Queued,
    /// Returned by a read (not a peek), not yet acked.
    Delivered,
    /// The recipient acknowledged it.
    Acked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Message,
    /// Sent by agentbus to a sender who asked for one, when its message
    /// was acked.
    Receipt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub seq: i64,
    pub from: String,
    pub to: AgentId,
    pub trust: Trust,
    pub kind: MessageKind,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<crate::ThreadId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    pub priority: Priority,
    pub state: MessageState,
    pub created_ms: i64,
    pub expires_ms: i64,
    #[serde(default)]
    pub receipt_requested: bool,
}

/// One page of a mailbox, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxPage {
    pub agent_id: AgentId,
    pub messages: Vec<Message>,
    /// Pass as `after` to read on from here.
    pub next_cursor: i64,
    /// More messages wait beyond this page.
    pub more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckRequest {
    pub ids: Vec<MessageId>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AckResponse {
    /// Newly acked.
    pub acked: Vec<MessageId>,
    /// Acked before.
    pub already_acked: Vec<MessageId>,
    /// No such message in this mailbox (or expired).
    pub not_found: Vec<MessageId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResults {
    pub messages: Vec<Message>,
}

/// `POST /v1/events`: publish an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishEventRequest {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    /// Keep the last `persist` events of this type per scope in history.
    #[serde(default)]
    pub persist: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventHistory {
    pub events: Vec<crate::event::Event>,
}

/// A jekt waiting in the durable hold for its agent to come back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldJekt {
    pub msg_id: MessageId,
    pub target_agent: AgentId,
    pub source_agent: String,
    pub trust: Trust,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub body_len: usize,
}

/// `POST /agentmux/reactive/poller/config` (the reactive routes; docs/http-api.md): where the poller
/// long-polls. Both empty stops it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollerConfigRequest {
    #[serde(default)]
    pub agentmux_url: String,
    /// The relay token (bearer). Never echoed back.
    #[serde(default)]
    pub agentmux_token: String,
}

/// `GET /agentmux/reactive/poller/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollerStatus {
    pub configured: bool,
    /// The last poll of the relay succeeded.
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Whether a token is set (the token itself is never shown).
    pub token_set: bool,
    /// The name this instance polls as (its cursor at the relay).
    pub consumer: String,
    /// Agents polled for.
    pub agents: Vec<AgentId>,
    /// Agents the relay would not let this instance poll for: another
    /// instance hosts them (until its binding lapses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix ms of the last successful poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_ms: Option<i64>,
    /// Seconds until the next attempt after an error (the backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<f64>,
}

/// `GET /agentmux/reactive/poller/stats`: counters since the daemon
/// started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollerStats {
    /// Items the relay handed over.
    pub received: u64,
    /// Of those, delivered here (typed in, held for the agent, or left in
    /// its mailbox).
    pub delivered: u64,
    /// Of those, refused for good (audited) and acked so they do not
    /// come back.
    pub failed: u64,
    /// Of those, seen before (a redelivery after a lost ack): not
    /// delivered again.
    pub duplicates: u64,
    /// Jekts and messages this instance handed to the relay.
    pub sent: u64,
    pub polls: u64,
    pub errors: u64,
}
