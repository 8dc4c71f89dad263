//! `agentbus jekt`: inject a marked message into an agent's terminal.

use crate::client::Client;
use agentbus_proto::api::{IdleWait, InjectRequest, InjectResponse};
use agentbus_proto::jekt::{Priority, Tier};
use agentbus_proto::{AgentId, RequestId};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct JektArgs {
    /// The agent to deliver to
    pub target: AgentId,
    /// The message (the rest of the line; quoting is optional); `-` reads it from stdin
    #[arg(required = true, num_args = 1..)]
    pub text: Vec<String>,
    /// Sender name to claim (with the instance key; an agent token always sends as itself)
    #[arg(long, value_name = "NAME")]
    pub from: Option<AgentId>,
    /// Urgency; `urgent` does not wait for --wait-idle
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Declare the tier (`sensitive` is also forced by sensitive words)
    #[arg(long, value_enum)]
    pub tier: Option<TierArg>,
    /// Wait for the pane to go quiet first; optionally at most SECONDS
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "default")]
    pub wait_idle: Option<String>,
    /// Idempotency key: the same id from the same sender is delivered once
    #[arg(long, value_name = "ID")]
    pub request_id: Option<RequestId>,
    #[command(flatten)]
    pub json: super::JsonFlag,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum PriorityArg {
    Low,
    Normal,
    High,
    Urgent,
}

impl From<PriorityArg> for Priority {
    fn from(p: PriorityArg) -> Priority {
        match p {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
            PriorityArg::Urgent => Priority::Urgent,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum TierArg {
    Info,
    Coord,
    Sensitive,
}

pub async fn run(client: &Client, args: JektArgs) -> anyhow::Result<ExitCode> {
    let message = super::mail::read_text(args.text)?;
    let wait_for_idle = match args.wait_idle.as_deref() {
        None => IdleWait::No,
        Some("default") => IdleWait::Default,
        Some(s) => {
            let secs: f64 = s
                .parse()
                .with_context(|| format!("--wait-idle {s:?} is not a number of seconds"))?;
            anyhow::ensure!(
                (0.0..=600.0).contains(&secs),
                "--wait-idle must be between 0 and 600 seconds"
            );
            IdleWait::UpToMs((secs * 1000.0) as u64)
        }
    };
    let req = InjectRequest {
        target_agent: args.target,
        source_agent: args.from,
        message,
        request_id: args.request_id,
        priority: args.priority.map(Into::into),
        tier: args.tier.map(|t| match t {
            TierArg::Info => Tier::Info,
            TierArg::Coord => Tier::Coord,
            TierArg::Sensitive => Tier::Sensitive,
        }),
        wait_for_idle,
        hops: 0,
        origin_trust: None,
        exact_target: false,
    };
    let resp: InjectResponse = client.post("/agentmux/reactive/inject", &req).await?;
    if args.json.json {
        super::print_json(&resp)?;
    } else {
        let outcome = serde_json::to_value(resp.outcome)?;
        let mut notes = String::new();
        if let Some(sub) = resp.submitted {
            let sub = serde_json::to_value(sub)?;
            notes.push_str(&format!(", submitted {}", sub.as_str().unwrap_or("?")));
        }
        if resp.waited_ms > 0 {
            notes.push_str(&format!(
                ", waited {} ms for it to be ready",
                resp.waited_ms
            ));
        }
        if let Some(why) = &resp.reason {
            notes.push_str(&format!("; {why}"));
        }
        let dup = if resp.duplicate {
            " (repeat of an earlier request; not delivered again)"
        } else {
            ""
        };
        outln!(
            "{} to {} from {} (msg {}, trust {}{notes}){dup}",
            outcome.as_str().unwrap_or("done"),
            resp.target_agent,
            resp.source_agent,
            resp.msg_id,
            resp.trust
        );
    }
    Ok(ExitCode::SUCCESS)
}
