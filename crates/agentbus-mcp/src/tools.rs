//! The tool table. Each tool is a name, a description an agent can act
//! on, an argument type (its JSON schema is generated from it) and the
//! API request it becomes. Arguments are checked here only as far as
//! their shape; the daemon checks the rest and its error text is what
//! the agent sees.

use crate::{ApiCall, Backend};
use agentbus_proto::AgentId;
use rmcp::model::{CallToolResult, ContentBlock, Extensions, JsonObject, Tool, ToolAnnotations};
use rmcp::schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// Longest `wait_for_messages` wait this server asks the daemon for.
pub const MAX_WAIT_S: f64 = 120.0;
/// `wait_for_messages` wait when none is given.
pub const DEFAULT_WAIT_S: f64 = 30.0;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(crate = "rmcp::schemars")]
enum IdleWait {
    /// true: wait up to the daemon's bound; false: type it now.
    Flag(bool),
    /// Wait at most this many seconds.
    Seconds(f64),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct InjectArgs {
    /// Name of the agent whose terminal receives the message, e.g. "reviewer".
    target: String,
    /// What to type into its terminal. It arrives marked with your name and is submitted once.
    message: String,
    /// low | normal | high | urgent (default normal).
    #[schemars(extend("enum" = ["low", "normal", "high", "urgent"]))]
    priority: Option<String>,
    /// Wait for the target's terminal to go quiet first: true (daemon's bound) or seconds.
    wait_for_idle: Option<IdleWait>,
    /// Your id for this jekt; repeating it never types the message twice.
    request_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct SendArgs {
    /// Name of the recipient; it need not be running now.
    to: String,
    /// The message text (up to 64 KiB).
    body: String,
    /// Groups messages of one conversation, e.g. "pr-812".
    thread_id: Option<String>,
    /// Id of the message this answers.
    reply_to: Option<String>,
    /// low | normal | high | urgent (default normal).
    #[schemars(extend("enum" = ["low", "normal", "high", "urgent"]))]
    priority: Option<String>,
    /// Seconds until the message expires unread (default: the daemon's).
    ttl: Option<u64>,
    /// Ask for a receipt in your own inbox when it is read.
    receipt: Option<bool>,
    /// Your id for this message; repeating it never stores it twice.
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct ReadArgs {
    /// Look without marking anything delivered (default false).
    peek: Option<bool>,
    /// At most this many messages, 1-1000 (default 100).
    limit: Option<u32>,
    /// Only messages after this cursor: pass the `next_cursor` of the previous page.
    after: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct AckArgs {
    /// Ids of messages of your inbox that you have handled.
    ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct WaitArgs {
    /// How long to wait for mail, 0-120 seconds (default 30).
    timeout_s: Option<f64>,
    /// Look without marking anything delivered (default false).
    peek: Option<bool>,
    /// At most this many messages, 1-1000 (default 100).
    limit: Option<u32>,
    /// Only messages after this cursor (the `next_cursor` of your last read).
    after: Option<i64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct AgentArgs {
    /// Agent name.
    agent: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct OutputArgs {
    /// Agent name.
    agent: String,
    /// How many of the last lines of its screen and scrollback (default 50).
    lines: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct PublishArgs {
    /// Event type, e.g. "build:done" (1-64 characters).
    #[serde(rename = "type")]
    event_type: String,
    /// Any JSON payload.
    data: Option<Value>,
    /// Scopes it is published to, e.g. ["team:web"] (default ["local"]: everyone on this instance).
    scopes: Option<Vec<String>>,
    /// Keep the last this-many events of this type for read_events (default 0: live only).
    persist: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
struct ReadEventsArgs {
    /// Event type, e.g. "build:done".
    #[serde(rename = "type")]
    event_type: String,
    /// Scope it was published to (default "local").
    scope: Option<String>,
    /// At most this many, newest last (default 100).
    limit: Option<u32>,
}

/// One tool: how it is listed and how a call runs.
struct Spec {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Arc<JsonObject>,
    read_only: bool,
}

fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_type::<T>()
}

const SPECS: &[Spec] = &[
    Spec {
        name: "inject_terminal",
        description: "Type a message into another agent's terminal and submit it (a jekt), so it acts on it now. \
                      The text is sanitized and marked with your name. Answers the outcome — delivered, forwarded \
                      (to the instance that hosts it), queued (at the relay, for another machine) or held (the \
                      agent is offline; delivered when it returns) — and the message id. Use send_message instead \
                      for anything that can wait in a mailbox.",
        schema: schema::<InjectArgs>,
        read_only: false,
    },
    Spec {
        name: "send_message",
        description: "Leave a message in an agent's durable mailbox; it need not be running. Answers the message \
                      id. The recipient reads it with read_messages or wait_for_messages.",
        schema: schema::<SendArgs>,
        read_only: false,
    },
    Spec {
        name: "read_messages",
        description: "Read your own inbox, oldest first. Reading marks the messages delivered unless peek is true; \
                      ack them with ack_messages once handled. Page with `after` = the `next_cursor` of the \
                      previous page.",
        schema: schema::<ReadArgs>,
        read_only: false,
    },
    Spec {
        name: "ack_messages",
        description: "Acknowledge messages of your inbox by id once you have handled them; acked messages are \
                      not shown again.",
        schema: schema::<AckArgs>,
        read_only: false,
    },
    Spec {
        name: "wait_for_messages",
        description: "Wait until mail arrives in your inbox (at most timeout_s seconds, default 30, max 120), then \
                      return it like read_messages. Returns an empty list when nothing came.",
        schema: schema::<WaitArgs>,
        read_only: false,
    },
    Spec {
        name: "list_agents",
        description: "List every agent you can reach: name, where it runs (this instance, a peer instance on this \
                      machine), its state and whether its CLI takes input now (readiness: ready, busy: ..., \
                      blocked: ...); and whether a relay reaches agents on other machines.",
        schema: schema::<NoArgs>,
        read_only: true,
    },
    Spec {
        name: "agent_status",
        description: "One agent's state (starting, running, idle, exited), readiness (ready, busy: ..., blocked: \
                      ...: a jekt is typed only when ready, else held), program, pid and last activity.",
        schema: schema::<AgentArgs>,
        read_only: true,
    },
    Spec {
        name: "agent_output",
        description: "The last lines of an agent's terminal as text (its screen and scrollback).",
        schema: schema::<OutputArgs>,
        read_only: true,
    },
    Spec {
        name: "publish_event",
        description: "Publish an event (a type and any JSON data) to subscribers; with persist > 0 it is also \
                      kept for read_events.",
        schema: schema::<PublishArgs>,
        read_only: false,
    },
    Spec {
        name: "read_events",
        description: "Read the kept history of one event type in one scope, oldest first.",
        schema: schema::<ReadEventsArgs>,
        read_only: true,
    },
];

/// Every tool, as `tools/list` shows it.
pub fn list() -> Vec<Tool> {
    SPECS
        .iter()
        .map(|s| {
            let mut annotations = ToolAnnotations::new().read_only(s.read_only);
            annotations.open_world_hint = Some(false);
            Tool::new(s.name, s.description, (s.schema)()).with_annotations(annotations)
        })
        .collect()
}

/// The tool named `name`.
pub fn find(name: &str) -> Option<Tool> {
    list().into_iter().find(|t| t.name == name)
}

/// Every tool name, in table order.
pub fn names() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.name).collect()
}

/// Runs tool `name` with `args` as the agent the backend says; every
/// failure is a tool error result with a message the agent can act on.
pub async fn call<B: Backend>(
    backend: &B,
    ext: &Extensions,
    name: &str,
    args: Option<JsonObject>,
) -> CallToolResult {
    let args = Value::Object(args.unwrap_or_default());
    match run(backend, ext, name, args).await {
        Ok(value) => {
            let text = value.to_string();
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            if value.is_object() {
                r.structured_content = Some(value);
            }
            r
        }
        Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
    }
}

async fn run<B: Backend>(
    backend: &B,
    ext: &Extensions,
    name: &str,
    args: Value,
) -> Result<Value, String> {
    let me = || backend.me(ext);
    let api = |c: ApiCall| async move { backend.call(ext, c).await.map_err(|e| e.to_string()) };
    match name {
        "inject_terminal" => {
            let a: InjectArgs = parse(name, args)?;
            let wait = match a.wait_for_idle {
                None => Value::Bool(false),
                Some(IdleWait::Flag(b)) => Value::Bool(b),
                Some(IdleWait::Seconds(s)) => json!(s),
            };
            let body = json!({
                "target_agent": agent(&a.target, "target")?,
                "source_agent": me()?,
                "message": a.message,
                "priority": a.priority,
                "wait_for_idle": wait,
                "request_id": a.request_id,
            });
            api(ApiCall::post(
                "/agentmux/reactive/inject",
                strip_nulls(body),
            ))
            .await
        }
        "send_message" => {
            let a: SendArgs = parse(name, args)?;
            let body = json!({
                "to": agent(&a.to, "to")?,
                "from": me()?,
                "body": a.body,
                "thread_id": a.thread_id,
                "reply_to": a.reply_to,
                "priority": a.priority,
                "ttl_s": a.ttl,
                "receipt": a.receipt.unwrap_or(false),
                "request_id": a.request_id,
            });
            let mut answer = api(ApiCall::post("/v1/messages", strip_nulls(body))).await?;
            if answer["recipient_known"] == Value::Bool(false) && answer["queued"] != true {
                answer["note"] = json!(format!(
                    "no agent named {} is known here; the message waits in that mailbox until an agent of that name reads it (check the name with list_agents)",
                    a.to
                ));
            }
            Ok(answer)
        }
        "read_messages" => {
            let a: ReadArgs = parse(name, args)?;
            let c = inbox(&me()?, a.peek, a.limit, a.after);
            api(c).await
        }
        "wait_for_messages" => {
            let a: WaitArgs = parse(name, args)?;
            let wait = a.timeout_s.unwrap_or(DEFAULT_WAIT_S);
            if !(0.0..=MAX_WAIT_S).contains(&wait) {
                return Err(format!(
                    "timeout_s must be a number of seconds from 0 to {MAX_WAIT_S}, not {wait}"
                ));
            }
            let c = inbox(&me()?, a.peek, a.limit, a.after).query("wait", Some(wait));
            api(c).await
        }
        "ack_messages" => {
            let a: AckArgs = parse(name, args)?;
            if a.ids.is_empty() {
                return Err("ids must name at least one message id".into());
            }
            api(ApiCall::post("/v1/messages/ack", json!({ "ids": a.ids }))).await
        }
        "list_agents" => {
            let _: NoArgs = parse(name, args)?;
            api(ApiCall::get("/v1/directory")).await
        }
        "agent_status" => {
            let a: AgentArgs = parse(name, args)?;
            api(ApiCall::get(format!(
                "/v1/agents/{}",
                agent(&a.agent, "agent")?
            )))
            .await
        }
        "agent_output" => {
            let a: OutputArgs = parse(name, args)?;
            let path = format!("/v1/agents/{}/output", agent(&a.agent, "agent")?);
            api(ApiCall::get(path).query("lines", a.lines)).await
        }
        "publish_event" => {
            let a: PublishArgs = parse(name, args)?;
            let body = json!({
                "type": a.event_type,
                "data": a.data.unwrap_or(Value::Null),
                "scopes": a.scopes.unwrap_or_else(|| vec!["local".into()]),
                "persist": a.persist.unwrap_or(0),
            });
            api(ApiCall::post("/v1/events", body)).await
        }
        "read_events" => {
            let a: ReadEventsArgs = parse(name, args)?;
            let c = ApiCall::get("/v1/events/history")
                .query("type", Some(a.event_type))
                .query("scope", Some(a.scope.unwrap_or_else(|| "local".into())))
                .query("limit", a.limit);
            api(c).await
        }
        other => Err(format!(
            "unknown tool: {other} — tools: {}",
            names().join(", ")
        )),
    }
}

fn inbox(me: &str, peek: Option<bool>, limit: Option<u32>, after: Option<i64>) -> ApiCall {
    ApiCall::get(format!("/v1/inbox/{me}"))
        .query("peek", peek)
        .query("limit", limit)
        .query("after", after)
}

/// `args` as `T`, or an error naming the tool, the problem and the
/// arguments it takes.
fn parse<T: DeserializeOwned + JsonSchema + 'static>(tool: &str, args: Value) -> Result<T, String> {
    serde_json::from_value(args).map_err(|e| {
        let schema = schema::<T>();
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let all: Vec<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.keys()
                    .map(|k| {
                        if required.contains(&k.as_str()) {
                            k.clone()
                        } else {
                            format!("{k}?")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "invalid arguments for {tool}: {e}; it takes {{{}}}",
            all.join(", ")
        )
    })
}

/// An agent name from argument `field`, checked before it goes into a path.
fn agent(name: &str, field: &str) -> Result<String, String> {
    AgentId::parse(name)
        .map(|a| a.to_string())
        .map_err(|e| format!("invalid {field}: {e}"))
}

/// Drops `null` members so the daemon applies its defaults.
fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let tools = list();
        assert_eq!(tools.len(), SPECS.len());
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                t.name
            );
        }
        let send = find("send_message").unwrap();
        let required = send.input_schema["required"].as_array().unwrap();
        assert!(required.contains(&json!("to")) && required.contains(&json!("body")));
    }

    #[test]
    fn bad_arguments_name_the_tool_the_problem_and_the_shape() {
        let e = parse::<SendArgs>("send_message", json!({"to": "bob"})).unwrap_err();
        assert!(
            e.starts_with("invalid arguments for send_message: missing field `body`"),
            "{e}"
        );
        assert!(e.contains("to, ") && e.contains("thread_id?"), "{e}");
        let e = parse::<AckArgs>("ack_messages", json!({"ids": "x", "extra": 1})).unwrap_err();
        assert!(e.contains("ack_messages"), "{e}");
    }

    #[test]
    fn agent_names_are_checked_before_they_reach_a_path() {
        assert!(
            agent("../v1/stats", "agent")
                .unwrap_err()
                .starts_with("invalid agent")
        );
        assert_eq!(agent("alice", "agent").unwrap(), "alice");
    }
}
