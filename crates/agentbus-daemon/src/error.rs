//! One error type for every route: a real HTTP status and a JSON body
//! `{"error":{"code","message"}}`. Internal failures are logged with their
//! cause and answered with a generic message, so nothing internal (paths,
//! SQL, secrets) reaches a client.

use agentbus_proto::api::{ErrorBody, ErrorDetail};
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{HeaderValue, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    // Boxed: keeps `Result<_, ApiError>` small on the happy path.
    pub details: Option<Box<serde_json::Value>>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_s: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 404 `agent_not_found`, in the words every route uses.
    pub fn agent_not_found(id: impl std::fmt::Display) -> Self {
        Self::not_found("agent_not_found", format!("agent not found: {id}"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 409 `ambiguous_agent`: `target` matches several agents ignoring
    /// case, and a name is never guessed.
    pub fn ambiguous_agent(
        target: &agentbus_proto::AgentId,
        candidates: &[agentbus_proto::AgentId],
    ) -> Self {
        let names: Vec<&str> = candidates.iter().map(|a| a.as_str()).collect();
        Self::conflict("ambiguous_agent", ambiguous_message(target, candidates))
            .with_details(serde_json::json!({ "candidates": names }))
    }

    /// Logs `cause` and answers 500 without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the daemon's log has the cause",
        )
    }
}

/// `target` matches several agents ignoring case: the words every
/// answer uses.
pub fn ambiguous_message(
    target: &agentbus_proto::AgentId,
    candidates: &[agentbus_proto::AgentId],
) -> String {
    let names: Vec<&str> = candidates.iter().map(|a| a.as_str()).collect();
    format!(
        "{target} matches several agents ({}); name one exactly",
        names.join(", ")
    )
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details.map(|d| *d),
            },
        };
        let status = self.status;
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was not read: the connection cannot be
            // reused, and a client must not try.
            resp.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
        }
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

impl From<agentbus_store::StoreError> for ApiError {
    fn from(e: agentbus_store::StoreError) -> Self {
        match e {
            agentbus_store::StoreError::BadQuery(why) => ApiError::bad_request(
                "invalid_query",
                format!("the search query cannot be parsed: {why}"),
            ),
            e => ApiError::internal(e),
        }
    }
}

impl From<agentbus_proto::IdError> for ApiError {
    fn from(e: agentbus_proto::IdError) -> Self {
        ApiError::bad_request("invalid_id", e.to_string())
    }
}

/// A JSON body, with every way it can be wrong answered as an [`ApiError`]:
/// too large (413), not JSON (400 `invalid_json`), the wrong shape (400
/// `invalid_request`, naming the field). The content type is not required,
/// so plain `curl -d` and existing AgentMux clients work.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(&body_bytes(req, state).await?).map(ApiJson)
    }
}

/// The request body, within the body limit (413 beyond it).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<bytes::Bytes, ApiError> {
    bytes::Bytes::from_request(req, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "payload_too_large", "request body is too large")
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })
}

/// Parses a JSON body, naming what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_request", e.to_string())
        }
        _ => ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}")),
    })
}

/// A JSON body that may be absent: an empty body is `T::default()`.
pub struct ApiJsonOrDefault<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_json(&bytes).map(Self)
    }
}

/// Query parameters, with a bad value answered as 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Rejects a number outside `range`, naming the parameter.
pub fn check_range(
    name: &str,
    value: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<(), ApiError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "{name} must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        ))
    }
}
