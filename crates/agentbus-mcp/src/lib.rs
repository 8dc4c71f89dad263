//! agentbus as MCP tools: an agent jekts, mails, waits for mail, lists
//! agents and publishes events by calling tools.
//!
//! One tool set serves both transports. The tools speak to the daemon's
//! HTTP API through a [`Backend`]: `agentbus mcp` (stdio, in a pane) sends
//! real HTTP requests with the pane's agent token; the daemon's `/mcp`
//! route calls its own router in process with the caller's credential.
//! Either way every call passes the daemon's auth, confinement, rate
//! limits and audit exactly as a direct HTTP call would — the MCP layer
//! decides nothing about who may do what.
//!
//! - [`tools`] — the tool table: names, descriptions, argument schemas,
//!   and how each call becomes an API request;
//! - [`server`] — the MCP server handler over a backend, and the optional
//!   push of new mail as Claude Code channel notifications.

pub mod server;
pub mod tools;

pub use server::{BusServer, push_mail};

pub use agentbus_proto::api::ApiFailure;
use rmcp::model::Extensions;
use std::future::Future;

/// The name this server announces.
pub const SERVER_NAME: &str = "agentbus";

/// One request to the daemon's HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub method: &'static str,
    /// Path without the query, e.g. `/v1/inbox/alice`.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<serde_json::Value>,
}

impl ApiCall {
    pub fn get(path: impl Into<String>) -> ApiCall {
        ApiCall {
            method: "GET",
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn post(path: impl Into<String>, body: serde_json::Value) -> ApiCall {
        ApiCall {
            method: "POST",
            path: path.into(),
            query: Vec::new(),
            body: Some(body),
        }
    }

    /// Adds `name=value` when `value` is present.
    pub fn query(mut self, name: &'static str, value: Option<impl ToString>) -> ApiCall {
        if let Some(v) = value {
            self.query.push((name, v.to_string()));
        }
        self
    }

    /// Path and encoded query, ready for a request line.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.query.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        format!("{}?{q}", self.path)
    }
}

/// How the tools reach the daemon, and as whom.
pub trait Backend: Send + Sync + 'static {
    /// The agent the calls of this request act as; `Err` says why none
    /// is known (shown to the caller as a tool error). `ext` carries the
    /// transport's request details (for HTTP, the request's parts).
    fn me(&self, ext: &Extensions) -> Result<String, String>;

    /// Performs `call`; the answer's JSON body, or the daemon's error.
    fn call(
        &self,
        ext: &Extensions,
        call: ApiCall,
    ) -> impl Future<Output = Result<serde_json::Value, ApiFailure>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        let c = ApiCall::get("/v1/events/history")
            .query("type", Some("build:done"))
            .query("scope", Some("team web&x"))
            .query("limit", None::<u32>);
        assert_eq!(
            c.path_and_query(),
            "/v1/events/history?type=build%3Adone&scope=team+web%26x"
        );
        assert_eq!(ApiCall::get("/v1/agents").path_and_query(), "/v1/agents");
    }
}
