//! `agentbus ui`: a one-time login link to the browser dashboard, or
//! `--logout-all`.

use super::{JsonFlag, print_json};
use crate::client::Client;
use clap::Args;
use serde::Deserialize;
use std::process::{Command, ExitCode, Stdio};

#[derive(Args, Debug)]
pub struct UiArgs {
    /// Log every dashboard session out, and void the links not used yet
    #[arg(long)]
    pub logout_all: bool,
    /// Print the link only; do not start a browser
    #[arg(long)]
    pub no_open: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Link {
    url: String,
    expires_ms: i64,
}

/// The program that opens a URL in the desktop's browser, when there is
/// a desktop.
fn opener() -> Option<&'static str> {
    if cfg!(target_os = "macos") {
        return Some("open");
    }
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    (desktop && on_path("xdg-open")).then_some("xdg-open")
}

pub async fn run(client: &Client, args: UiArgs) -> anyhow::Result<ExitCode> {
    if args.logout_all {
        let out: serde_json::Value = client.delete("/v1/ui/sessions").await?;
        if args.json.json {
            print_json(&out)?;
        } else {
            let n = out["ended"].as_u64().unwrap_or(0);
            println!(
                "logged out {n} dashboard session(s); login links not used yet no longer work"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let link: Link = client.post("/v1/ui/links", &serde_json::json!({})).await?;
    if args.json.json {
        print_json(&link)?;
        return Ok(ExitCode::SUCCESS);
    }
    let secs = (link.expires_ms - agentbus_proto::now_ms()).max(0) / 1000;
    println!(
        "Open the dashboard (this link works once, within {secs} s):\n\n  {}\n",
        link.url
    );
    if !args.no_open
        && let Some(open) = opener()
    {
        let started = Command::new(open)
            .arg(&link.url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if started.is_ok() {
            println!("(opened with {open}; if no browser came up, paste the link into one)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
