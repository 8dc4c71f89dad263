//! `agentbus daemon`: run an instance in the foreground.

use agentbus_daemon::config::{Config, Overrides};
use agentbus_daemon::instance::{Daemon, remove_instance_files, shutdown_signal};
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Address to listen on; port 0 picks a free port [env: AGENTBUS_LISTEN] [default: 127.0.0.1:0]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory of the shared cross-instance registry [env: AGENTBUS_REGISTRY_DIR] [default: <data dir>/registry]
    #[arg(long, value_name = "DIR")]
    pub registry_dir: Option<PathBuf>,
    /// Config file [env: AGENTBUS_CONFIG] [default: <data dir>/config.toml if it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Relay to long-poll for agents of other machines (several nodes of
    /// one relay comma-separated: the daemon fails over between them); its
    /// token comes from AGENTBUS_RELAY_TOKEN or the config file, never the
    /// command line [env: AGENTBUS_RELAY_URL]
    #[arg(long, value_name = "URL[,URL...]")]
    pub relay_url: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How a client that may cross a network trusts servers.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM file of CA certificates to trust besides the system's (a private CA) [env: AGENTBUS_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Allow plain http:// to a host that is not loopback (tokens and messages cross the network unencrypted) [env: AGENTBUS_INSECURE_HTTP=1]
    #[arg(long)]
    pub insecure_http: bool,
}

impl TlsArgs {
    pub fn client_tls(&self) -> agentbus_daemon::tls::ClientTls {
        agentbus_daemon::tls::ClientTls::from_args_or_env(self.ca_file.clone(), self.insecure_http)
    }
}

pub async fn run(args: DaemonArgs, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = Config::load(&Overrides {
        config_file: args.config,
        listen: args.listen,
        data_dir,
        registry_dir: args.registry_dir,
        relay_url: args.relay_url,
        ca_file: args.tls.ca_file,
        insecure_http: args.tls.insecure_http,
    })?;
    agentbus_daemon::instance::protect_process();
    let data_dir = config.daemon.data_dir.clone();
    // Signals are caught from here on, before anyone can learn the URL.
    let dir = data_dir.clone();
    let shutdown = shutdown_signal(move || remove_instance_files(&dir))
        .context("failed to listen for signals")?;
    let daemon = Daemon::start(config).await?;
    // The URL is the first line on stdout: scripts and tests read it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", daemon.url())?;
    out.flush()?;
    drop(out);
    tracing::info!(url = daemon.url(), data_dir = %data_dir.display(), "agentbus daemon ready");
    if let Some(t) = daemon.state().poller().target() {
        tracing::info!(relay = %t.url, "polling the relay");
    }
    daemon.serve(shutdown).await?;
    tracing::info!("agentbus daemon stopped");
    Ok(ExitCode::SUCCESS)
}
