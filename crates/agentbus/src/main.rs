//! `agentbus`: the one binary. `main` parses the command line and hands
//! each subcommand to its file under `cmd/`.

/// `println!` for what the CLI prints: a reader that has gone away
/// (`agentbus ... | head`) ends the program quietly, never with a panic.
macro_rules! outln {
    () => {
        $crate::write_out(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*), true)
    };
}

/// `print!` likewise.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*), false)
    };
}

mod app_client;
mod client;
mod cmd;
mod tty;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Installed (linked) as `tmux-bridge`, it is `agentbus tmux`, so a skill
    // written for smux's `tmux-bridge` runs unchanged.
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
        // The reader of our output went away: nothing to say about it.
        Err(e) if broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout for [`outln!`] and [`out!`]. A closed pipe ends the
/// process with the status a shell gives a program SIGPIPE ended (141);
/// any other failure to write is reported once, then the same.
pub fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: failed to write to stdout: {e}");
        }
        std::process::exit(141);
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
