//! `agentbus config show`: the configuration a daemon started here would
//! use (file, then environment, then flags, then the live settings saved
//! by `setvar`).

use agentbus_daemon::config::{Config, Overrides};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML (with the live settings
    /// changed by the App API's setvar)
    Show {
        /// Config file to read [env: AGENTBUS_CONFIG]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub fn run(args: ConfigArgs, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Show { config } => {
            let c = Config::load(&Overrides {
                config_file: config,
                data_dir,
                ..Default::default()
            })?;
            let saved = agentbus_daemon::vars::load(&c.daemon.data_dir);
            let c = agentbus_daemon::vars::apply(&c, &saved);
            if !saved.is_empty() {
                let names: Vec<&str> = saved.keys().map(String::as_str).collect();
                out!(
                    "# live settings from {}: {}",
                    agentbus_daemon::vars::file(&c.daemon.data_dir).display(),
                    names.join(", ")
                );
            }
            out!("{}", c.to_toml());
        }
    }
    Ok(ExitCode::SUCCESS)
}
