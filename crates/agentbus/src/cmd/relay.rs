//! `agentbus relay`: run the cross-machine relay, and manage its tokens.

use super::agents::print_table;
use agentbus_relay::nats::{NatsOptions, NatsStorage};
use agentbus_relay::storage::{Storage, TokenOwner};
use agentbus_relay::{AuthMode, Relay, RelayConfig, SqliteStorage, new_token, token_digest};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct RelayArgs {
    #[command(subcommand)]
    pub command: Option<RelayCommand>,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: String,
    /// Database file [default: <data dir>/relay.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// No tokens: the bare agent-bus protocol (loopback only; the default there)
    #[arg(long, conflicts_with = "auth")]
    pub open: bool,
    /// Require bearer tokens (the default off loopback)
    #[arg(long)]
    pub auth: bool,
    /// Delete messages older than this many days
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub retention_days: u64,
    /// Most messages one (channel, recipient) queue may hold
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub queue_cap: u64,
    /// How long a `recv?block=true` waits for mail (agent-bus clients give up at 35)
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=60))]
    pub recv_wait_s: u64,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep everything in NATS JetStream instead of --db: any number of
    /// relay nodes given the same URLs serve one relay (comma-separated
    /// nats:// or tls:// URLs of one cluster) [default:
    /// $AGENTBUS_RELAY_NATS, where a URL with a password belongs: a flag
    /// shows in `ps`]
    #[arg(
        long,
        global = true,
        value_name = "URL[,URL...]",
        conflicts_with = "db"
    )]
    pub nats: Option<String>,
    /// Replicas of the JetStream stream and buckets (at most the cluster's size)
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,
    /// Names the stream, buckets and subjects, so several relays can share one NATS
    #[arg(long, global = true, default_value = "agentbus", value_name = "NAME")]
    pub nats_prefix: String,
    /// A PEM file of CAs to trust for tls:// NATS URLs, beside the system's
    /// [default: $AGENTBUS_CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum RelayCommand {
    /// Manage the relay's bearer tokens (the relay may be running)
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token; prints it once
    Create {
        /// For one agent: it sends as itself and receives its own messages
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with = "instance",
            required_unless_present = "instance"
        )]
        agent: Option<String>,
        /// For a daemon: it sends for its agents and polls for them
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token by name (agent:<name> or instance:<name>)
    Revoke { name: String },
}

fn db_path(args: &RelayArgs, data_dir: Option<&Path>) -> PathBuf {
    args.db
        .clone()
        .unwrap_or_else(|| crate::client::data_dir(data_dir).join("relay.db"))
}

fn nats_options(args: &RelayArgs, urls: &str) -> NatsOptions {
    NatsOptions {
        replicas: usize::from(args.nats_replicas),
        prefix: args.nats_prefix.clone(),
        retention: Duration::from_secs(args.retention_days.max(1) * 86_400),
        queue_cap: args.queue_cap.max(1),
        ca_file: args
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("AGENTBUS_CA_FILE").map(PathBuf::from)),
        ..NatsOptions::new(urls)
    }
}

pub async fn run(args: RelayArgs, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let db = db_path(&args, data_dir.as_deref());
    let urls = args.nats.clone().or_else(|| {
        std::env::var("AGENTBUS_RELAY_NATS")
            .ok()
            .filter(|u| !u.trim().is_empty())
    });
    if urls.is_some() && args.db.is_some() {
        bail!("--db and NATS (--nats or AGENTBUS_RELAY_NATS) exclude each other: say one");
    }
    let nats = urls.as_deref().map(|urls| nats_options(&args, urls));
    if let Some(RelayCommand::Token { command }) = args.command {
        if let Some(nats) = &nats {
            // Tokens only: no following the stream, no changing its settings.
            let nats = NatsOptions {
                serve: false,
                ..nats.clone()
            };
            let storage = NatsStorage::connect(&nats).await?;
            return token(&storage, command).await;
        }
        if !db.exists() && !matches!(command, TokenCommand::Create { .. }) {
            bail!("no relay database at {} (pass --db)", db.display());
        }
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let storage =
            SqliteStorage::open(&db, u64::MAX).context("failed to open the relay database")?;
        let code = token(&storage, command).await;
        storage.close();
        return code;
    }
    agentbus_daemon::instance::protect_process();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(agentbus_relay::tls::server_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let config = RelayConfig {
        listen: args.listen,
        db,
        mode: match (args.open, args.auth) {
            (true, _) => Some(AuthMode::Open),
            (_, true) => Some(AuthMode::Auth),
            _ => None,
        },
        retention: Duration::from_secs(args.retention_days.max(1) * 86_400),
        queue_cap: args.queue_cap.max(1),
        recv_wait: Duration::from_secs(args.recv_wait_s),
        tls,
    };
    let shutdown = agentbus_daemon::instance::shutdown_signal(|| {})
        .context("failed to listen for signals")?;
    raise_fd_limit();
    match nats {
        Some(nats) => serve(Relay::start_nats(config, &nats).await?, shutdown).await,
        None => serve(Relay::start(config).await?, shutdown).await,
    }
}

async fn serve<S: Storage>(
    relay: Relay<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", relay.url())?;
    out.flush()?;
    drop(out);
    tracing::info!(url = relay.url(), mode = ?relay.mode(), "agentbus relay ready");
    relay.serve(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn token<S: Storage>(storage: &S, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let code = match command {
        TokenCommand::Create { agent, instance } => {
            let (name, owner) = match (agent, instance) {
                (Some(a), _) => (format!("agent:{a}"), TokenOwner::Agent(a)),
                (None, Some(i)) => (format!("instance:{i}"), TokenOwner::Instance(i)),
                (None, None) => bail!("say --agent NAME or --instance NAME"),
            };
            let secret = new_token();
            if !storage
                .create_token(&name, owner, &token_digest(&secret))
                .await?
            {
                bail!(
                    "{name} already has a token; revoke it first (agentbus relay token revoke {name})"
                );
            }
            outln!("{secret}");
            eprintln!("token {name} created; the line above is the secret, shown once");
            ExitCode::SUCCESS
        }
        TokenCommand::List => {
            let rows: Vec<[String; 3]> = storage
                .tokens()
                .await?
                .into_iter()
                .map(|(name, info)| {
                    [
                        name,
                        match info.owner {
                            TokenOwner::Agent(_) => "agent".into(),
                            TokenOwner::Instance(_) => "instance".into(),
                        },
                        if info.revoked_ms.is_some() {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                    ]
                })
                .collect();
            print_table(&["NAME", "KIND", "STATE"], &rows);
            ExitCode::SUCCESS
        }
        TokenCommand::Revoke { name } => {
            if storage.revoke_token(&name).await? {
                outln!("revoked {name}");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: no active token named {name}");
                ExitCode::FAILURE
            }
        }
    };
    Ok(code)
}

/// Raises the open-files limit to the hard limit: every waiting long-poll
/// is a socket, and ten thousand of them must fit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-files limit");
    }
}
