//! The mailbox from the command line: msg, inbox, ack, search.

use super::{JsonFlag, print_json};
use crate::client::Client;
use crate::cmd::jekt::PriorityArg;
use agentbus_proto::api::{
    AckRequest, AckResponse, InboxPage, Message, MessageKind, SearchResults, SendMessageRequest,
    SendMessageResponse,
};
use agentbus_proto::jekt::{clean_text, marker_field};
use agentbus_proto::{AgentId, MessageId, RequestId, ThreadId};
use anyhow::{Context, bail};
use clap::Args;
use std::io::Read;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct MsgArgs {
    /// The recipient (it need not be running)
    pub to: AgentId,
    /// The message (the rest of the line; quoting is optional); `-` reads it from stdin
    #[arg(required = true, num_args = 1..)]
    pub text: Vec<String>,
    /// Sender name to claim (with the instance key; an agent token always sends as itself)
    #[arg(long, value_name = "NAME")]
    pub from: Option<AgentId>,
    /// Conversation this message belongs to
    #[arg(long, value_name = "T")]
    pub thread: Option<ThreadId>,
    /// The message this answers
    #[arg(long, value_name = "ID")]
    pub reply_to: Option<MessageId>,
    /// Ask for a receipt in your mailbox when the recipient acks
    #[arg(long)]
    pub receipt: bool,
    /// Seconds until it expires [default: 7 days]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Idempotency key: the same id from the same sender is stored once
    #[arg(long, value_name = "ID")]
    pub request_id: Option<RequestId>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Args, Debug)]
pub struct InboxArgs {
    /// Whose mailbox [default: your own, inside a pane]
    pub agent: Option<AgentId>,
    /// Look without marking anything delivered
    #[arg(long)]
    pub peek: bool,
    /// Wait up to SECONDS for mail when there is none (at most 60)
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<f64>,
    /// Only messages after this cursor (a `seq`)
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Include acked messages
    #[arg(long)]
    pub all: bool,
    /// Ack what is shown
    #[arg(long)]
    pub ack: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Args, Debug)]
pub struct AckArgs {
    /// Message ids
    #[arg(required = true)]
    pub ids: Vec<MessageId>,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Words that must all appear in the body
    #[arg(required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Only this mailbox (an agent token always searches its own)
    #[arg(long)]
    pub agent: Option<AgentId>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// The words of a text argument joined, or stdin for a lone `-`.
pub fn read_text(words: Vec<String>) -> anyhow::Result<String> {
    if words != ["-"] {
        return Ok(words.join(" "));
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("failed to read the message from stdin")?;
    Ok(s)
}

/// `[12:00:01Z] <id> from bob (host-verified) [...]`, then the body,
/// cleaned of anything a terminal would act on and indented, so no line
/// of a body can pass for a header; a sender name that is not a plain id
/// is quoted and escaped, so it cannot begin a line of its own.
fn print_message(m: &Message) {
    let ms = m.created_ms.rem_euclid(86_400_000) / 1000;
    let mut meta = vec![
        format!("seq {}", m.seq),
        format!("{:?}", m.state).to_lowercase(),
    ];
    if let Some(t) = &m.thread_id {
        meta.push(format!("thread {t}"));
    }
    if let Some(r) = &m.reply_to {
        meta.push(format!("reply to {r}"));
    }
    if m.kind == MessageKind::Receipt {
        meta.push("receipt".into());
    }
    outln!(
        "[{:02}:{:02}:{:02}Z] {} from {} ({}) [{}]",
        ms / 3600,
        ms / 60 % 60,
        ms % 60,
        m.id,
        marker_field(&m.from),
        m.trust,
        meta.join(", ")
    );
    outln!("{}", indented(&m.body));
    outln!();
}

/// A message body for a terminal: cleaned, every line indented by two
/// spaces.
pub fn indented(body: &str) -> String {
    clean_text(body)
        .trim_end()
        .split('\n')
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn msg(client: &Client, args: MsgArgs) -> anyhow::Result<ExitCode> {
    let req = SendMessageRequest {
        to: args.to,
        body: read_text(args.text)?,
        from: args.from,
        thread_id: args.thread,
        reply_to: args.reply_to,
        priority: args.priority.map(Into::into),
        ttl_s: args.ttl,
        receipt: args.receipt,
        request_id: args.request_id,
        origin_trust: None,
    };
    let r: SendMessageResponse = client.post("/v1/messages", &req).await?;
    if args.json.json {
        print_json(&r)?;
    } else {
        let dup = if r.duplicate {
            " (repeat of an earlier request; stored once)"
        } else {
            ""
        };
        let what = match (r.queued, r.forwarded, r.duplicate) {
            (true, _, false) => "queued at the relay",
            (true, _, true) => "already queued at the relay",
            (false, true, false) => "stored by the instance that hosts it:",
            (false, true, true) => "already stored by the instance that hosts it:",
            (false, false, false) => "stored",
            (false, false, true) => "already stored",
        };
        outln!("{what} {} for {} from {}{dup}", r.id, r.to, r.from);
        if !r.recipient_known && !r.queued && !r.forwarded {
            eprintln!(
                "note: no agent named {} is known here yet; the message waits for one",
                r.to
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inbox(client: &Client, args: InboxArgs) -> anyhow::Result<ExitCode> {
    let agent = match (args.agent, client.own_agent()) {
        (Some(a), _) => a.to_string(),
        (None, Some(me)) => me,
        (None, None) => bail!(
            "name the mailbox: agentbus inbox <agent> (inside a pane it defaults to the pane's agent)"
        ),
    };
    let mut path = format!(
        "/v1/inbox/{agent}?after={}&limit={}",
        args.after, args.limit
    );
    if args.peek {
        path.push_str("&peek=true");
    }
    if args.all {
        path.push_str("&include_acked=true");
    }
    if let Some(w) = args.wait {
        path.push_str(&format!("&wait={w}"));
    }
    let page: InboxPage = client.get(&path).await?;
    if args.ack && !page.messages.is_empty() {
        let ids = page.messages.iter().map(|m| m.id).collect();
        let _: AckResponse = client.post("/v1/messages/ack", &AckRequest { ids }).await?;
    }
    if args.json.json {
        print_json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.messages.is_empty() {
        eprintln!("no messages for {agent}");
    }
    for m in &page.messages {
        print_message(m);
    }
    if page.more {
        eprintln!(
            "more messages follow: agentbus inbox {agent} --after {}",
            page.next_cursor
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ack(client: &Client, args: AckArgs) -> anyhow::Result<ExitCode> {
    let r: AckResponse = client
        .post("/v1/messages/ack", &AckRequest { ids: args.ids })
        .await?;
    outln!(
        "acked {}{}{}",
        r.acked.len(),
        if r.already_acked.is_empty() {
            String::new()
        } else {
            format!(", {} acked before", r.already_acked.len())
        },
        if r.not_found.is_empty() {
            String::new()
        } else {
            format!(", {} not found", r.not_found.len())
        }
    );
    for id in &r.not_found {
        eprintln!("not found: {id}");
    }
    Ok(if r.not_found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn search(client: &Client, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let limit = args.limit.to_string();
    let words = args.query.join(" ");
    let mut query = vec![("q", words.as_str()), ("limit", limit.as_str())];
    let agent = args.agent.map(|a| a.to_string());
    if let Some(a) = &agent {
        query.push(("agent", a));
    }
    let r: SearchResults = client.get_query("/v1/search", &query).await?;
    if args.json.json {
        print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    if r.messages.is_empty() {
        eprintln!("nothing found");
    }
    for m in &r.messages {
        outln!("to {}:", marker_field(m.to.as_str()));
        print_message(m);
    }
    Ok(ExitCode::SUCCESS)
}
