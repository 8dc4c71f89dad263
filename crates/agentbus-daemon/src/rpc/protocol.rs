//! JSON-RPC 2.0 framing: parsing a frame into calls (single or batch),
//! the standard error codes, and application errors carrying `data.code`.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde_json::{Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Application errors: -32000 and below, with `data.code` saying which.
pub const APP_ERROR: i64 = -32000;

/// An error answer: JSON-RPC code, message, and `data` (`{"code": ...}`
/// for application errors).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// An application error named `name` (`AGENT_NOT_FOUND`, `FORBIDDEN`, ...).
    pub fn app(name: &str, message: impl Into<String>) -> RpcError {
        RpcError {
            code: APP_ERROR,
            message: message.into(),
            data: Some(json!({ "code": name })),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

/// The daemon's HTTP-shaped errors, as the App API names them.
impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> RpcError {
        // Bad input is invalid params; everything else an application
        // error. The daemon's snake_case codes become the API's names,
        // except where the App API names the same thing differently.
        let (code, name) = match (e.status, e.code) {
            (StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY, c) => {
                (INVALID_PARAMS, c.to_uppercase())
            }
            (StatusCode::FORBIDDEN, _) => (APP_ERROR, "FORBIDDEN".into()),
            (StatusCode::TOO_MANY_REQUESTS, _) => (APP_ERROR, "RATE_LIMITED".into()),
            (_, c) => (APP_ERROR, c.to_uppercase()),
        };
        let mut data = json!({ "code": name });
        if let Some(s) = e.retry_after_s {
            data["retry_after_s"] = json!(s);
        }
        RpcError {
            code,
            message: e.message,
            data: Some(data),
        }
    }
}

/// One call of a frame: its id (absent for a notification), method, params.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

/// What one element of a frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Call(Call),
    /// Not a valid request; answered with this error (id null unless one
    /// could be read).
    Invalid(Option<Value>, RpcError),
}

/// A parsed frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Single(Item),
    Batch(Vec<Item>),
    /// Not JSON, or an empty batch: one error answer with id null.
    Broken(RpcError),
}

impl Frame {
    /// How many calls (or invalid items) the frame holds.
    pub fn len(&self) -> usize {
        match self {
            Frame::Batch(items) => items.len(),
            Frame::Single(_) => 1,
            Frame::Broken(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn parse(text: &str) -> Frame {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Frame::Broken(RpcError::new(PARSE_ERROR, format!("parse error: {e}"))),
    };
    match v {
        Value::Array(items) if items.is_empty() => Frame::Broken(RpcError::new(
            INVALID_REQUEST,
            "invalid request: empty batch",
        )),
        Value::Array(items) => Frame::Batch(items.into_iter().map(item).collect()),
        other => Frame::Single(item(other)),
    }
}

fn item(v: Value) -> Item {
    let Value::Object(mut m) = v else {
        return Item::Invalid(
            None,
            RpcError::new(INVALID_REQUEST, "invalid request: not an object"),
        );
    };
    let id = m.remove("id");
    let bad_id = matches!(
        id,
        Some(Value::Object(_) | Value::Array(_) | Value::Bool(_))
    );
    let invalid = |why: &str| {
        let id = if bad_id { None } else { id.clone() };
        Item::Invalid(
            id,
            RpcError::new(INVALID_REQUEST, format!("invalid request: {why}")),
        )
    };
    if m.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return invalid("\"jsonrpc\" must be \"2.0\"");
    }
    if bad_id {
        return invalid("\"id\" must be a string, a number or null");
    }
    let method = match m.remove("method") {
        Some(Value::String(s)) => s,
        _ => return invalid("\"method\" must be a string"),
    };
    let params = match m.remove("params") {
        None => Value::Object(Default::default()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return invalid("\"params\" must be an object or an array"),
    };
    Item::Call(Call { id, method, params })
}

/// The answer to a call with `id`.
pub fn answer(id: &Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(r) => json!({ "jsonrpc": "2.0", "id": id, "result": r }),
        Err(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() }),
    }
}

/// A notification from the daemon.
pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_into_calls_batches_and_errors() {
        match parse("{not json") {
            Frame::Broken(e) => assert_eq!(e.code, PARSE_ERROR),
            f => panic!("{f:?}"),
        }
        match parse("[]") {
            Frame::Broken(e) => assert_eq!(e.code, INVALID_REQUEST),
            f => panic!("{f:?}"),
        }
        let f = parse(r#"{"jsonrpc":"2.0","id":7,"method":"agent.list"}"#);
        assert_eq!(
            f,
            Frame::Single(Item::Call(Call {
                id: Some(json!(7)),
                method: "agent.list".into(),
                params: json!({})
            }))
        );
        match parse(
            r#"[{"jsonrpc":"2.0","method":"x"}, 1, {"jsonrpc":"1.0","id":"a","method":"y"}]"#,
        ) {
            Frame::Batch(items) => {
                assert!(matches!(&items[0], Item::Call(c) if c.id.is_none()));
                assert!(matches!(&items[1], Item::Invalid(None, e) if e.code == INVALID_REQUEST));
                assert!(matches!(&items[2], Item::Invalid(Some(id), _) if id == "a"));
            }
            f => panic!("{f:?}"),
        }
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#),
            Frame::Single(Item::Invalid(None, _))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            Frame::Single(Item::Invalid(Some(_), _))
        ));
    }

    #[test]
    fn answers_and_notifications_are_json_rpc() {
        assert_eq!(
            answer(&json!(3), Ok(json!({"ok": true}))),
            json!({"jsonrpc": "2.0", "id": 3, "result": {"ok": true}})
        );
        let e = RpcError::app("NOT_RUNNING", "alice's program has exited");
        assert_eq!(
            answer(&Value::Null, Err(e)),
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": APP_ERROR,
                "message": "alice's program has exited", "data": {"code": "NOT_RUNNING"}}})
        );
        assert_eq!(
            answer(&json!("x"), Err(RpcError::new(METHOD_NOT_FOUND, "no"))),
            json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "no"}})
        );
        assert_eq!(
            notification("eventrecv", json!({"type": "t"})),
            json!({"jsonrpc": "2.0", "method": "eventrecv", "params": {"type": "t"}})
        );
    }

    #[test]
    fn daemon_errors_keep_their_meaning() {
        let e: RpcError = ApiError::not_found("agent_not_found", "agent not found: bob").into();
        assert_eq!(e.code, APP_ERROR);
        assert_eq!(e.data, Some(json!({"code": "AGENT_NOT_FOUND"})));
        let e: RpcError = ApiError::bad_request("invalid_id", "bad").into();
        assert_eq!(e.code, INVALID_PARAMS);
        let e: RpcError = ApiError::forbidden("no").into();
        assert_eq!(e.data, Some(json!({"code": "FORBIDDEN"})));
        let e: RpcError = ApiError::conflict("not_running", "exited").into();
        assert_eq!(
            (e.code, e.data),
            (APP_ERROR, Some(json!({"code": "NOT_RUNNING"})))
        );
    }
}
