//! A bench's entry: under `cargo test` (no `--bench` argument) it does nothing; otherwise it runs
//! as root with the stop flag installed, and finds the binary under test and the log directory.

use std::path::{Path, PathBuf};

use super::clock::now_ns;
use super::stop::install_signal_handlers;
use super::R;

/// The arguments after the program name, or `None` under `cargo test` (no `--bench` argument).
pub fn bench_argv() -> Option<Vec<String>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    argv.iter().any(|x| x == "--bench").then_some(argv)
}

/// The parsed arguments; `None` (after saying so) under `cargo test`; exits 2 on a bad argument.
/// `how` tells how the bench is run instead, e.g. "use benches/X.sh (needs root)".
pub fn args_or_exit<A>(name: &str, how: &str, parsed: R<Option<A>>) -> Option<A> {
    match parsed {
        Ok(Some(a)) => Some(a),
        Ok(None) => {
            eprintln!("{name}: not run under `cargo test`; {how}");
            None
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    }
}

/// Runs `bench` as root (exits 1 otherwise: it creates network namespaces) with SIGINT and
/// SIGTERM setting the stop flag and the clock started; exits 1 on an error.
pub fn run_as_root(name: &str, bench: impl FnOnce() -> R<()>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{name}: run as root (it creates network namespaces)");
        std::process::exit(1);
    }
    install_signal_handlers();
    now_ns();
    if let Err(e) = bench() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// The source tree (where `target/` is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test: `APISERVER_GUARD_BIN`, default `target/release/apiserver-guard`.
pub fn release_bin(root: &Path) -> R<PathBuf> {
    let bin = std::env::var_os("APISERVER_GUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/apiserver-guard"));
    if !bin.exists() {
        return Err(format!("{} missing: run `cargo build --release` first", bin.display()));
    }
    Ok(bin)
}

/// `target/bench-logs/`, created, where the daemons' logs go.
pub fn log_dir(root: &Path) -> R<PathBuf> {
    let log_dir = root.join("target/bench-logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("mkdir {}: {e}", log_dir.display()))?;
    Ok(log_dir)
}
