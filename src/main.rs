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
    std::process::exit(commands::run(cli));
}
