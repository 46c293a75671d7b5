//! Part 2, the cost of the Kubernetes client: spawn -> first refused pod connect (static policy and
//! with discovery), idle memory and `--version` wall time, per binary and mode, interleaved so that
//! a change in the machine's load hits every variant alike; `Cost` gathers them for the report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::daemon_cases::READY_LINE;
use crate::common::guard_cases::Backend;
use crate::common::API_V4;
use crate::daemon::{BenchDaemon, START_LIMIT};
use crate::probe::{once, probe_around, Watch};
use crate::setup::{sock, Bench};
use crate::shared::probe::Conn;
use crate::shared::start::StartResult;
use crate::shared::stats::{f, pct, sorted};
use crate::shared::stop::check_stop;
use crate::R;

/// One binary and mode whose start-up and idle memory are measured.
pub struct Variant {
    pub label: String,
    pub bin: PathBuf,
    pub discovery: bool,
}

fn variant_args(b: &Bench, v: &Variant) -> Vec<String> {
    if v.discovery {
        b.discovery_args(Backend::Nftables)
    } else {
        b.static_args()
    }
}

/// Spawn -> first refused pod connect, `runs` times per variant, interleaved (A B C A B C ...)
/// so that a change in the machine's load hits every variant alike.
pub fn run_start(b: &Bench, variants: &[Variant], runs: usize) -> R<Vec<StartResult>> {
    let mut res: Vec<StartResult> = variants.iter().map(|_| StartResult::default()).collect();
    for i in 0..runs {
        for (v, r) in variants.iter().zip(res.iter_mut()) {
            check_stop()?;
            b.reset()?;
            if once(b.pod(), sock(API_V4))? != Conn::Served {
                return Err("the pod is not served with an empty node firewall".into());
            }
            let w = Watch {
                refused: Some(sock(API_V4)),
                served: None,
            };
            let log = b.log(&format!("start-{}-{i}", v.label.replace([' ', '/', ','], "_")));
            let args = variant_args(b, v);
            let (o, d) = probe_around(b.pod(), &w, START_LIMIT, || {
                BenchDaemon::start(&v.bin, b.node(), &args, log)
            })?;
            let mut d = d?;
            let (ready, _) = d.wait_line(READY_LINE, 0, START_LIMIT)?;
            r.record(o.t0, o.refused_at, ready, &d);
            d.stop();
            eprintln!(
                "  start {}/{runs}, {}: blocked after {} ms",
                i + 1,
                v.label,
                r.to_block.last().map_or("n/a".into(), |x| f(*x))
            );
        }
    }
    b.reset()?;
    Ok(res)
}

/// (VmRSS, VmHWM, threads) medians of `runs` daemons, each read `wait` after `ready`.
pub fn run_rss(b: &Bench, v: &Variant, runs: usize, wait: Duration) -> R<(f64, f64, f64)> {
    let (mut rss, mut hwm, mut thr) = (vec![], vec![], vec![]);
    for i in 0..runs {
        check_stop()?;
        b.reset()?;
        let log = b.log(&format!("rss-{}-{i}", v.label.replace([' ', '/', ','], "_")));
        let mut d = BenchDaemon::start(&v.bin, b.node(), &variant_args(b, v), log)?;
        d.wait_line(READY_LINE, 0, START_LIMIT)?;
        let until = Instant::now() + wait;
        while Instant::now() < until {
            check_stop()?;
            thread::sleep(Duration::from_millis(50));
        }
        let (r, h, t) = d
            .memory()
            .ok_or_else(|| format!("cannot read /proc/{}/status", d.pid()))?;
        rss.push(r as f64 / 1024.0);
        hwm.push(h as f64 / 1024.0);
        thr.push(t as f64);
        d.stop();
        eprintln!("  idle RSS {}/{runs}, {}: {:.1} MiB", i + 1, v.label, r as f64 / 1024.0);
    }
    b.reset()?;
    Ok((
        pct(&sorted(rss), 50.0),
        pct(&sorted(hwm), 50.0),
        pct(&sorted(thr), 50.0),
    ))
}

/// Median wall time (ms) of `bin --version`, `runs` times per binary, interleaved.
pub fn run_version(bins: &[&Path], runs: usize) -> R<Vec<f64>> {
    let mut times: Vec<Vec<f64>> = bins.iter().map(|_| vec![]).collect();
    for _ in 0..runs {
        for (bin, t) in bins.iter().zip(times.iter_mut()) {
            check_stop()?;
            let a = Instant::now();
            let out = Command::new(bin)
                .arg("--version")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            t.push(a.elapsed().as_secs_f64() * 1e3);
            if !out.status.success() {
                return Err(format!("{} --version failed", bin.display()));
            }
        }
    }
    Ok(times.into_iter().map(|t| pct(&sorted(t), 50.0)).collect())
}

pub struct Cost {
    pub now_label: String,
    pub base_label: Option<String>,
    pub size_now: Option<u64>,
    pub size_base: Option<u64>,
    pub version_now: f64,
    pub version_base: f64,
    pub version_runs: usize,
    pub start_runs: usize,
    /// Per variant, same order as the variants: start-up and (rss, hwm, threads).
    pub variants: Vec<(Variant, StartResult, (f64, f64, f64))>,
    pub rss_runs: usize,
    pub rss_wait: Duration,
}
