//! `agentbus`: the one binary. `main` parses the command line and hands
//! each subcommand to its file under `cmd/`.

mod app_client;
mod client;
mod cmd;
mod tty;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Installed (linked) as `tmux-bridge`, it is `agentbus tmux`, so a skill
    // written for the seed's bridge runs unchanged.
    if args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        == Some("tmux-bridge".as_ref())
    {
        args.insert(1, "tmux".into());
    }
    let cli = cmd::Cli::parse_from(args);
    cmd::init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
