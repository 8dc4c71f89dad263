//! Why a jekt was not delivered, and how each reason is answered: once
//! for HTTP (status, snake_case code, JSON body) and once for the App
//! API (JSON-RPC code, `data.code` in capitals). Each reason names its
//! own codes, so neither answer is guessed from the other.

use crate::error::ApiError;
use crate::limits::Refusal;
use crate::rpc::protocol::{APP_ERROR, INVALID_PARAMS, RpcError};
use agentbus_proto::AgentId;
use axum::http::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, thiserror::Error)]
pub enum JektError {
    #[error("message must not be empty")]
    Empty,
    #[error("this jekt has been forwarded {hops} times, more than the limit of {max}")]
    HopLimit { hops: u32, max: u32 },
    #[error("{}", .0.reason)]
    RateLimited(Refusal),
    /// The sender may not jekt this agent (a claimed name, the policy,
    /// a shell pane); the text says which rule.
    #[error("{0}")]
    Forbidden(String),
    #[error("agent not found: {target} — known agents: {}", listed(.known))]
    NotFound {
        target: AgentId,
        known: Vec<AgentId>,
    },
    #[error("{}", crate::error::ambiguous_message(.target, .candidates))]
    Ambiguous {
        target: AgentId,
        candidates: Vec<AgentId>,
    },
    /// The agent is offline and the hold has no room; nothing was stored.
    #[error("{0}")]
    HoldFull(String),
    #[error("{0}'s program exited before the jekt was written; nothing was delivered")]
    Exited(AgentId),
    #[error("{agent}'s program has not read its input for {ms} ms; the jekt may be partly written")]
    InputStalled { agent: AgentId, ms: u64 },
    #[error("tmux refused the jekt for {agent}: {reason}")]
    Tmux { agent: AgentId, reason: String },
    /// The peer instance hosting the agent refused; `error` is its answer
    /// (status, and its code where this daemon knows it).
    #[error("the instance hosting {agent} refused: {}", .error.message)]
    PeerRefused { agent: AgentId, error: ApiError },
    /// The relay could not take the jekt, as the relay client said.
    #[error("{}", .0.message)]
    Relay(ApiError),
    /// A failure of the daemon itself (the store, a task), already
    /// logged with its cause; the answer says no more.
    #[error("{}", .0.message)]
    Internal(ApiError),
}

fn listed(names: &[AgentId]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(AgentId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn names(ids: &[AgentId]) -> Value {
    json!(ids.iter().map(AgentId::as_str).collect::<Vec<_>>())
}

impl JektError {
    /// The outcome the audit log records for this refusal.
    pub fn outcome(&self) -> &'static str {
        match self {
            JektError::Empty => "invalid",
            JektError::HopLimit { .. } => "hop_limit",
            JektError::RateLimited(_) => "rate_limited",
            JektError::Forbidden(_) => "forbidden",
            JektError::NotFound { .. } => "not_found",
            JektError::Ambiguous { .. } => "ambiguous",
            JektError::HoldFull(_) => "hold_full",
            JektError::PeerRefused { .. } => "forward_refused",
            JektError::Relay(_) => "relay_failed",
            JektError::Exited(_)
            | JektError::InputStalled { .. }
            | JektError::Tmux { .. }
            | JektError::Internal(_) => "failed",
        }
    }

    /// Machine-readable details beside the message, if any.
    fn details(&self) -> Option<Value> {
        match self {
            JektError::NotFound { known, .. } => Some(json!({ "known_agents": names(known) })),
            JektError::Ambiguous { candidates, .. } => {
                Some(json!({ "candidates": names(candidates) }))
            }
            _ => None,
        }
    }
}

impl From<agentbus_store::StoreError> for JektError {
    fn from(e: agentbus_store::StoreError) -> Self {
        JektError::Internal(ApiError::from(e))
    }
}

/// The HTTP answer: status, code and message.
impl From<JektError> for ApiError {
    fn from(e: JektError) -> ApiError {
        let message = e.to_string();
        let details = e.details();
        let err = match e {
            JektError::Empty => ApiError::bad_request("invalid_request", message),
            JektError::HopLimit { .. } => {
                ApiError::new(StatusCode::LOOP_DETECTED, "hop_limit", message)
            }
            JektError::RateLimited(r) => r.into(),
            JektError::Forbidden(m) => ApiError::forbidden(m),
            JektError::NotFound { .. } => ApiError::not_found("agent_not_found", message),
            JektError::Ambiguous { .. } => ApiError::conflict("ambiguous_agent", message),
            JektError::HoldFull(m) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "hold_full", m)
            }
            JektError::Exited(_) => ApiError::conflict("agent_offline", message),
            JektError::InputStalled { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "input_stalled", message)
            }
            JektError::Tmux { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "tmux_failed", message)
            }
            JektError::PeerRefused { error, .. } => {
                ApiError::new(error.status, error.code, message)
            }
            JektError::Relay(e) | JektError::Internal(e) => e,
        };
        match details {
            Some(d) => err.with_details(d),
            None => err,
        }
    }
}

/// The App API's answer: bad input is invalid params (-32602); every
/// other reason an application error (-32000) named in `data.code`.
impl From<JektError> for RpcError {
    fn from(e: JektError) -> RpcError {
        let (code, name) = match &e {
            JektError::Empty => (INVALID_PARAMS, "INVALID_REQUEST".to_string()),
            JektError::HopLimit { .. } => (APP_ERROR, "HOP_LIMIT".into()),
            JektError::RateLimited(_) => (APP_ERROR, "RATE_LIMITED".into()),
            JektError::Forbidden(_) => (APP_ERROR, "FORBIDDEN".into()),
            JektError::NotFound { .. } => (APP_ERROR, "AGENT_NOT_FOUND".into()),
            JektError::Ambiguous { .. } => (APP_ERROR, "AMBIGUOUS_AGENT".into()),
            JektError::HoldFull(_) => (APP_ERROR, "HOLD_FULL".into()),
            JektError::Exited(_) => (APP_ERROR, "AGENT_OFFLINE".into()),
            JektError::InputStalled { .. } => (APP_ERROR, "INPUT_STALLED".into()),
            JektError::Tmux { .. } => (APP_ERROR, "TMUX_FAILED".into()),
            JektError::Internal(_) => (APP_ERROR, "INTERNAL".into()),
            // Another instance's answer, under the name it gave.
            JektError::PeerRefused { error, .. } | JektError::Relay(error) => {
                (APP_ERROR, error.code.to_uppercase())
            }
        };
        let mut data = json!({ "code": name });
        if let JektError::RateLimited(r) = &e {
            data["retry_after_s"] = json!(r.retry_after_s);
        }
        if let Some(Value::Object(d)) = e.details() {
            data.as_object_mut().expect("an object").extend(d);
        }
        RpcError {
            code,
            message: e.to_string(),
            data: Some(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(s: &str) -> AgentId {
        AgentId::parse(s).unwrap()
    }

    /// Every reason, with the HTTP and JSON-RPC answers it must get.
    fn table() -> Vec<(JektError, u16, &'static str, i64, &'static str)> {
        let peer = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "bad");
        vec![
            (
                JektError::Empty,
                400,
                "invalid_request",
                INVALID_PARAMS,
                "INVALID_REQUEST",
            ),
            (
                JektError::HopLimit { hops: 4, max: 3 },
                508,
                "hop_limit",
                APP_ERROR,
                "HOP_LIMIT",
            ),
            (
                JektError::RateLimited(Refusal {
                    retry_after_s: 7,
                    reason: "slow down".into(),
                }),
                429,
                "rate_limited",
                APP_ERROR,
                "RATE_LIMITED",
            ),
            (
                JektError::Forbidden("no".into()),
                403,
                "forbidden",
                APP_ERROR,
                "FORBIDDEN",
            ),
            (
                JektError::NotFound {
                    target: agent("x"),
                    known: vec![agent("a")],
                },
                404,
                "agent_not_found",
                APP_ERROR,
                "AGENT_NOT_FOUND",
            ),
            (
                JektError::Ambiguous {
                    target: agent("bob"),
                    candidates: vec![agent("Bob"), agent("BOB")],
                },
                409,
                "ambiguous_agent",
                APP_ERROR,
                "AMBIGUOUS_AGENT",
            ),
            (
                JektError::HoldFull("full".into()),
                507,
                "hold_full",
                APP_ERROR,
                "HOLD_FULL",
            ),
            (
                JektError::Exited(agent("a")),
                409,
                "agent_offline",
                APP_ERROR,
                "AGENT_OFFLINE",
            ),
            (
                JektError::InputStalled {
                    agent: agent("a"),
                    ms: 5,
                },
                504,
                "input_stalled",
                APP_ERROR,
                "INPUT_STALLED",
            ),
            (
                JektError::Tmux {
                    agent: agent("a"),
                    reason: "gone".into(),
                },
                502,
                "tmux_failed",
                APP_ERROR,
                "TMUX_FAILED",
            ),
            (
                JektError::PeerRefused {
                    agent: agent("a"),
                    error: peer.clone(),
                },
                400,
                "invalid_request",
                APP_ERROR,
                "INVALID_REQUEST",
            ),
            (
                JektError::Relay(peer),
                400,
                "invalid_request",
                APP_ERROR,
                "INVALID_REQUEST",
            ),
        ]
    }

    #[test]
    fn each_reason_has_its_own_http_and_json_rpc_answer() {
        for (e, status, code, rpc_code, rpc_name) in table() {
            let message = e.to_string();
            let rate = matches!(e, JektError::RateLimited(_));
            let rpc = RpcError::from(e.clone());
            let http = ApiError::from(e);
            assert_eq!(
                (http.status.as_u16(), http.code),
                (status, code),
                "{message}"
            );
            assert_eq!(http.message, message);
            assert_eq!(rpc.code, rpc_code, "{message}");
            assert_eq!(rpc.message, message);
            let data = rpc.data.unwrap();
            assert_eq!(data["code"], rpc_name, "{message}");
            assert_eq!(rate, data.get("retry_after_s") == Some(&json!(7)));
            assert_eq!(rate, http.retry_after_s == Some(7));
        }
    }

    #[test]
    fn names_travel_with_the_answer() {
        let e = || JektError::Ambiguous {
            target: agent("bob"),
            candidates: vec![agent("Bob"), agent("BOB")],
        };
        assert_eq!(
            ApiError::from(e()).details.unwrap()["candidates"],
            json!(["Bob", "BOB"])
        );
        assert_eq!(
            RpcError::from(e()).data.unwrap()["candidates"],
            json!(["Bob", "BOB"])
        );
        let none = JektError::NotFound {
            target: agent("x"),
            known: vec![],
        };
        assert!(none.to_string().ends_with("known agents: none"), "{none}");
    }
}
