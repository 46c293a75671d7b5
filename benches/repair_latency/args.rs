//! Command-line arguments of the bench (`cargo bench --bench repair_latency -- ...`).

use std::sync::atomic::Ordering;

use crate::shared::cli::bench_argv;
use crate::shared::probe::GAP_US;
use crate::shared::R;

pub struct Args {
    pub iterations: usize,
    pub slow_iterations: usize,
    pub foreign: usize,
    pub start_runs: usize,
    pub doc: bool,
    /// Only rows whose `backend:foreign` label is listed (all when empty); for quick checks.
    pub only: Vec<String>,
}

pub fn parse_args() -> R<Option<Args>> {
    let mut a = Args {
        iterations: 100,
        slow_iterations: 20,
        foreign: 100_000,
        start_runs: 10,
        doc: true,
        only: vec![],
    };
    let Some(argv) = bench_argv() else {
        return Ok(None);
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut num = |name: &str| -> R<usize> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match k.as_str() {
            "--bench" => {}
            "--iterations" => a.iterations = num(k)?,
            "--slow-iterations" => a.slow_iterations = num(k)?,
            "--foreign" => a.foreign = num(k)?,
            "--start-runs" => a.start_runs = num(k)?,
            "--no-doc" => a.doc = false,
            "--only" => {
                a.only = it
                    .next()
                    .map(|v| v.split(',').map(String::from).collect())
                    .unwrap_or_default()
            }
            "--probe-gap-us" => GAP_US.store(num(k)? as u64, Ordering::Relaxed),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}
