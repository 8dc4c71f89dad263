//! The MCP server handler: the tool table over a [`Backend`], and the
//! optional push of new mail to Claude Code.

use crate::{ApiCall, Backend, SERVER_NAME, tools};
use agentbus_proto::api::InboxPage;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CustomNotification, Extensions, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, ServerNotification,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The experimental capability Claude Code looks for before it accepts
/// channel notifications from a server.
pub const CLAUDE_CHANNEL: &str = "claude/channel";
/// The notification that carries one pushed message.
pub const CLAUDE_CHANNEL_METHOD: &str = "notifications/claude/channel";

const INSTRUCTIONS: &str = "agentbus connects you with other agents. list_agents shows who is reachable. \
inject_terminal types a message into another agent's terminal now; send_message leaves it in their \
mailbox. Read your own mail with read_messages or wait_for_messages, and ack_messages what you have handled.";

/// The `agentbus` MCP server over backend `B`.
pub struct BusServer<B> {
    backend: Arc<B>,
    channel: bool,
}

impl<B> Clone for BusServer<B> {
    fn clone(&self) -> Self {
        BusServer {
            backend: self.backend.clone(),
            channel: self.channel,
        }
    }
}

impl<B: Backend> BusServer<B> {
    /// `channel`: announce the `claude/channel` capability (the caller
    /// then runs [`push_mail`]).
    pub fn new(backend: Arc<B>, channel: bool) -> Self {
        BusServer { backend, channel }
    }
}

impl<B: Backend> ServerHandler for BusServer<B> {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::builder().enable_tools().build();
        if self.channel {
            caps.experimental = Some(BTreeMap::from([(
                CLAUDE_CHANNEL.to_string(),
                serde_json::Map::new(),
            )]));
        }
        ServerConfig::new(caps)
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::find(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = tools::call(
            self.backend.as_ref(),
            &context.extensions,
            &request.name,
            request.arguments,
        )
        .await;
        Ok(result.into())
    }
}

/// Until the client goes away: waits for new mail of the agent `backend`
/// acts as and sends each message to `peer` as a Claude Code channel
/// notification. It peeks, so the mail stays unread in the inbox for
/// `read_messages`; the push is a nudge, not the delivery.
pub async fn push_mail<B: Backend>(backend: Arc<B>, peer: Peer<RoleServer>) {
    let ext = Extensions::new();
    let me = match backend.me(&ext) {
        Ok(me) => me,
        Err(e) => {
            tracing::warn!(error = %e, "not pushing mail: no agent to push for");
            return;
        }
    };
    let mut after = 0i64;
    loop {
        let call = ApiCall::get(format!("/v1/inbox/{me}"))
            .query("peek", Some(true))
            .query("after", Some(after))
            .query("wait", Some(tools::DEFAULT_WAIT_S));
        let page = match backend.call(&ext, call).await {
            Ok(v) => serde_json::from_value::<InboxPage>(v).ok(),
            Err(e) => {
                tracing::warn!(code = %e.code, error = %e.message, "mail push: inbox read failed; retrying");
                None
            }
        };
        let Some(page) = page else {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        };
        for m in &page.messages {
            let mut meta = serde_json::Map::new();
            meta.insert("from".into(), json!(m.from));
            meta.insert("message_id".into(), json!(m.id.to_string()));
            meta.insert("trust".into(), json!(m.trust.to_string()));
            if let Some(t) = &m.thread_id {
                meta.insert("thread_id".into(), json!(t.to_string()));
            }
            let params = json!({ "content": m.body, "meta": meta });
            let note = CustomNotification::new(CLAUDE_CHANNEL_METHOD, Some(params));
            if peer
                .send_notification(ServerNotification::CustomNotification(note))
                .await
                .is_err()
            {
                tracing::info!("mail push: the client is gone");
                return;
            }
        }
        after = after.max(page.next_cursor);
    }
}
