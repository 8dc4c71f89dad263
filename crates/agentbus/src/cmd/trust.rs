//! `agentbus trust`: the instances whose signatures this one believes.
//!
//! Works on the data dir's files, with the daemon running or not; a
//! running daemon reads the list again for every relayed item.

use super::agents::print_table;
use agentbus_daemon::config::{Config, Overrides};
use agentbus_daemon::signing::{InstanceKey, TrustStore, key_id, parse_public};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TrustArgs {
    #[command(subcommand)]
    pub command: TrustCommand,
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Print this instance's name and public key (give them to the other machines)
    Key,
    /// Trust the instance NAME: items it signs with KEY are `TRUST=signed:NAME`
    Add {
        /// The name it signs as (its `agentbus trust key`)
        name: String,
        /// Its public key, base64 (its `agentbus trust key`)
        key: String,
    },
    /// List the trusted instances
    List,
    /// Stop trusting an instance
    Remove { name: String },
}

fn config(data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(Config::load(&Overrides {
        data_dir,
        ..Default::default()
    })?)
}

pub fn run(args: TrustArgs, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = config(data_dir)?;
    let dir = &config.daemon.data_dir;
    // Made (0700) if this is its first use, and checked as the daemon does.
    agentbus_daemon::private_dir::PrivateDir::open(dir)
        .with_context(|| format!("cannot use the data dir {}", dir.display()))?;
    let store = TrustStore::new(dir);
    match args.command {
        TrustCommand::Key => {
            let key = InstanceKey::of_instance(dir, &config.relay)?;
            outln!("name:   {}", key.name());
            outln!("key:    {}", key.public());
            outln!("key id: {}", key.key_id());
            outln!(
                "# on another machine: agentbus trust add {} {}",
                key.name(),
                key.public()
            );
        }
        TrustCommand::Add { name, key } => {
            let t = store.add(&name, &key, false).map_err(anyhow::Error::msg)?;
            let id = parse_public(&t.key).map(|k| key_id(&k)).unwrap_or_default();
            outln!("trusted {name} (key id {id})");
        }
        TrustCommand::List => {
            let all = store.load().map_err(anyhow::Error::msg)?;
            if all.is_empty() {
                outln!("no instance is trusted (agentbus trust add NAME KEY)");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<[String; 4]> = all
                .iter()
                .map(|(name, t)| {
                    [
                        name.clone(),
                        parse_public(&t.key).map(|k| key_id(&k)).unwrap_or_default(),
                        if t.pinned { "pinned" } else { "added" }.to_string(),
                        super::audit::clock(t.added_ms),
                    ]
                })
                .collect();
            print_table(&["NAME", "KEY ID", "HOW", "SINCE"], &rows);
        }
        TrustCommand::Remove { name } => {
            if !store.remove(&name).map_err(anyhow::Error::msg)? {
                bail!("{name} is not trusted (see agentbus trust list)");
            }
            outln!("no longer trusted: {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
