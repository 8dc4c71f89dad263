//! The command tree. One file per subcommand; this file holds the clap
//! definitions and the dispatch.

mod agents;
mod app;
mod attach;
mod audit;
#[cfg(feature = "bench")]
mod bench;
pub(crate) mod bus;
mod config;
mod daemon;
mod events;
mod jekt;
mod mail;
mod mcp;
mod open;
mod poller;
mod probe;
pub(crate) mod relay;
mod setup;
pub(crate) mod tmux;
mod trust;
mod ui;

use crate::client::Client;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "agentbus",
    version,
    about = "The message bus for AI coding agents that live in terminals",
    long_about = "agentbus hosts agent CLIs (Claude Code, Codex, Gemini, shells) in panes and lets agents, \
                  scripts and people reach each other. A jekt injects a marked, sanitized message into a \
                  running agent's terminal and submits it.\n\nStart a daemon with `agentbus daemon`; every other command \
                  finds it through <data dir>/daemon.json, or AGENTBUS_URL plus a credential."
)]
pub struct Cli {
    /// Data directory of the daemon [env: AGENTBUS_DATA_DIR] [default: ~/.agentbus]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: host panes, deliver jekts, serve the API
    Daemon(daemon::DaemonArgs),
    /// Run the cross-machine relay (agent-bus protocol), or manage its tokens
    Relay(relay::RelayArgs),
    /// Send one message to a bus (agent-bus protocol): body from stdin, AGENT_BUS_URL, AGENT_NAME
    Send(bus::SendArgs),
    /// Print a bus's messages for a name as they arrive, one block each (for a Monitor tool)
    Recv(bus::RecvArgs),
    /// Log a bus's messages for AGENT_NAME to files, in the background
    Listen(bus::ListenArgs),
    /// Host a program in a new pane as an agent; prints the block id
    Open(open::OpenArgs),
    /// Open an agent and attach to it at once
    Run(open::OpenArgs),
    /// Make this terminal the agent's pane (detach with Ctrl-])
    Attach(attach::AttachArgs),
    /// Inject a marked message into an agent's terminal and submit it
    Jekt(jekt::JektArgs),
    /// Leave a message in an agent's mailbox (it need not be running)
    Msg(mail::MsgArgs),
    /// Read a mailbox: oldest first, optionally waiting for mail
    Inbox(mail::InboxArgs),
    /// Acknowledge messages
    Ack(mail::AckArgs),
    /// Find messages by words in their body
    Search(mail::SearchArgs),
    /// Watch, read or publish events
    Events(events::EventsArgs),
    /// List the agents of this instance
    Ls(agents::LsArgs),
    /// Show one agent's state
    Status(agents::StatusArgs),
    /// Print the last lines of an agent's pane as text
    Output(agents::OutputArgs),
    /// Stop an agent's program (quit, then SIGTERM, then SIGKILL)
    Stop(agents::StopArgs),
    /// Resize an agent's pane
    Resize(agents::ResizeArgs),
    /// Register a name: bind it to an existing pane, or an external agent; prints its token
    Register(agents::RegisterArgs),
    /// Forget an agent's name and revoke its token
    Unregister(agents::UnregisterArgs),
    /// Serve the agentbus tools to an agent CLI over MCP (stdio)
    Mcp(mcp::McpArgs),
    /// Print or write the config that registers `agentbus mcp` with claude, codex or gemini
    Setup(setup::SetupArgs),
    /// Point this instance at a relay, stop polling it, or show how it goes
    Poller(poller::PollerArgs),
    /// Call one App API method over the WebSocket (JSON-RPC) and print the answer
    Rpc(app::RpcArgs),
    /// List the processes under an agent's pane (the process tracker)
    Ps(app::PsArgs),
    /// Mint, list or revoke App API tokens held to scopes; rotate the /metrics token
    Token(app::TokenArgs),
    /// The tmux bridge: list, read, type into and message other tmux panes (read before you act)
    Tmux(tmux::TmuxArgs),
    /// Read the audit log
    Audit(audit::AuditArgs),
    /// Open the browser dashboard: print (and open) a one-time login link
    Ui(ui::UiArgs),
    /// This instance's signing key, and the instances whose signed relay items it trusts
    Trust(trust::TrustArgs),
    /// Show the effective configuration
    Config(config::ConfigArgs),
    /// Measure this build (daemon, mailbox, relay) and print a table
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Measure this build (built with `--features bench`)
    #[cfg(not(feature = "bench"))]
    #[command(hide = true)]
    Bench(NoBench),
    /// Helper programs used by the tests and benchmarks
    #[command(hide = true)]
    Probe(probe::ProbeArgs),
}

/// `--json` for commands that print records.
#[derive(Args, Debug, Clone, Copy)]
pub struct JsonFlag {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match &cli.command {
        Command::Daemon(_) => "info",
        // The relay logs NATS connection changes itself.
        Command::Relay(r) if r.command.is_none() => "info,async_nats=warn",
        _ => "warn",
    };
    let filter = std::env::var("AGENTBUS_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = cli.data_dir.as_deref();
    let client = || Client::discover(dir);
    match cli.command {
        Command::Daemon(a) => daemon::run(a, cli.data_dir).await,
        Command::Relay(a) => relay::run(a, cli.data_dir).await,
        Command::Trust(a) => trust::run(a, cli.data_dir),
        Command::Send(a) => bus::send(a).await,
        Command::Recv(a) => bus::recv(a, cli.data_dir).await,
        Command::Listen(a) => bus::listen(a, cli.data_dir).await,
        Command::Open(a) => open::open(&client()?, a).await.map(|_| ExitCode::SUCCESS),
        Command::Run(a) => {
            let c = client()?;
            let name = open::open(&c, a).await?;
            attach::attach(&c, &name, attach::DEFAULT_DETACH_KEY).await
        }
        Command::Attach(a) => attach::run(&client()?, a).await,
        Command::Jekt(a) => jekt::run(&client()?, a).await,
        Command::Msg(a) => mail::msg(&client()?, a).await,
        Command::Inbox(a) => mail::inbox(&client()?, a).await,
        Command::Ack(a) => mail::ack(&client()?, a).await,
        Command::Search(a) => mail::search(&client()?, a).await,
        Command::Events(a) => events::run(&client()?, a).await,
        Command::Ls(a) => agents::ls(&client()?, a).await,
        Command::Status(a) => agents::status(&client()?, a).await,
        Command::Output(a) => agents::output(&client()?, a).await,
        Command::Stop(a) => agents::stop(&client()?, a).await,
        Command::Resize(a) => agents::resize(&client()?, a).await,
        Command::Register(a) => agents::register(&client()?, a).await,
        Command::Unregister(a) => agents::unregister(&client()?, a).await,
        Command::Tmux(a) => tmux::run(a, dir),
        Command::Audit(a) => audit::run(&client()?, a).await,
        Command::Ui(a) => ui::run(&client()?, a).await,
        Command::Rpc(a) => app::rpc(&client()?, a).await,
        Command::Ps(a) => app::ps(&client()?, a).await,
        Command::Token(a) => app::token(&client()?, a).await,
        Command::Poller(a) => poller::run(&client()?, a).await,
        Command::Config(a) => config::run(a, cli.data_dir),
        Command::Mcp(a) => mcp::run(a, dir).await,
        Command::Setup(a) => setup::run(a),
        #[cfg(feature = "bench")]
        Command::Bench(a) => bench::run(a).await,
        #[cfg(not(feature = "bench"))]
        Command::Bench(a) => Err(anyhow::anyhow!(
            "this agentbus was built without its benchmarks; run them with: cargo run --release -p agentbus --features bench -- bench {}",
            a.args.join(" ")
        )),
        Command::Probe(a) => probe::run(a),
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "3s ago" style age of a unix-ms time.
pub fn ago(ms: i64) -> String {
    let secs = (agentbus_proto::now_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// `agentbus bench ...` in a build without the benchmarks: whatever was
/// asked, the answer says how to get them.
#[cfg(not(feature = "bench"))]
#[derive(Debug, clap::Args)]
pub struct NoBench {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}
