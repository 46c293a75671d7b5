//! Entry point: parse the command line and run the subcommand.

use apiserver_guard::{cli::Cli, commands};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    std::process::exit(commands::run(cli));
}
