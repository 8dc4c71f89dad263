//! `agentbus audit`: read the audit log, newest first.

use super::agents::print_table;
use super::{JsonFlag, print_json};
use crate::client::Client;
use agentbus_proto::api::AuditList;
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// How many entries
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only entries where this agent acts or is the target
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this kind: jekt, open, stop, register, unregister, auth, exit, attach, resize
    #[arg(long)]
    pub kind: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub(crate) fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}Z", day / 3600, day / 60 % 60, day % 60)
}

pub async fn run(client: &Client, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/audit?limit={}", args.limit);
    if let Some(a) = &args.agent {
        path.push_str(&format!("&agent={a}"));
    }
    if let Some(k) = &args.kind {
        path.push_str(&format!("&kind={k}"));
    }
    let list: AuditList = client.get(&path).await?;
    if args.json.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 7]> = list
        .entries
        .iter()
        .map(|e| {
            [
                clock(e.ts_ms),
                e.actor.clone(),
                e.kind.clone(),
                e.target.clone().unwrap_or_else(|| "-".into()),
                e.outcome.clone(),
                e.body_len
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME", "ACTOR", "KIND", "TARGET", "OUTCOME", "BYTES", "DETAIL",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
