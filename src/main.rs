//! Entry point: parse the command line and run the subcommand.

use apiserver_guard::cli::{parse_from, UsageError};
use apiserver_guard::commands;
use apiserver_guard::error::Error;

fn main() {
    let cli = match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(UsageError::Clap(e)) => e.exit(),
        Err(UsageError::BadEnv(msg)) => {
            let e = Error::bad_input(msg);
            eprintln!("apiserver-guard: {e}");
            std::process::exit(e.exit_code());
        }
    };
    if !matches!(cli.command, apiserver_guard::cli::Command::Run(_)) {
        // A one-shot command piped into `head` stops quietly when the reader
        // goes, as other command-line tools do, instead of a panic on the
        // write. Not the daemon: it must survive a client that hangs up.
        // SAFETY: setting a signal's disposition to the default; no handler runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        // Warnings of the shared code reach the person running the command.
        apiserver_guard::logging::init_one_shot();
    }
    std::process::exit(commands::run(cli));
}
