//! The measurements: one table row (a backend, a number of foreign rules, a flush, N iterations:
//! flush, then time to the first refused pod connect), and time to block on first start.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::shared::clock::{ms, now_ns};
use crate::shared::foreign::foreign_rules;
use crate::shared::probe::Conn;
use crate::shared::start::StartResult;
use crate::shared::stats::{f, pct, sorted};
use crate::shared::stop::check_stop;
use crate::shared::R;

use crate::daemon::{repair_ms, Daemon};
use crate::flush::Flush;
use crate::topology::Topology;

pub struct Row {
    pub backend: &'static str,
    pub foreign: usize,
    pub flush: Flush,
    pub iterations: usize,
    pub note: &'static str,
}

/// The nftables rows run the daemon with an ordinary table: with its default (an owned table)
/// `nft flush ruleset` skips the table and `nft delete table` is refused, so there is nothing to
/// repair (benches/table_ownership measures that case).
pub const OWNERSHIP_OFF: [&str; 2] = ["--table-ownership", "off"];

impl Row {
    pub fn daemon_args(&self) -> &'static [&'static str] {
        if self.backend == "nftables" {
            &OWNERSHIP_OFF
        } else {
            &[]
        }
    }

    /// The backend column: the nftables rows say that the table is not owned.
    pub fn label(&self) -> String {
        if self.daemon_args().is_empty() {
            self.backend.to_string()
        } else {
            format!("{} (`{}`)", self.backend, self.daemon_args().join(" "))
        }
    }
}

#[derive(Default)]
pub struct RowResult {
    pub latencies: Vec<f64>,
    /// First served connect -> first refused connect after t0 (the hole as the pod saw it).
    pub holes: Vec<f64>,
    pub flush_cmd: Vec<f64>,
    pub repair_logged: Vec<f64>,
    pub probe_ms: Vec<f64>,
    pub repairs: usize,
    pub errors: usize,
    pub never_served: usize,
    pub served_before_t0: usize,
    pub open_at_start: usize,
    pub timeouts: usize,
    pub other: u32,
    pub seconds: f64,
}

pub fn run_row(topo: &Topology, bin: &Path, row: &Row, log_dir: &Path) -> R<RowResult> {
    let started = Instant::now();
    topo.clean_node()?;
    if row.foreign > 0 {
        eprintln!("  loading {} foreign iptables-nft rules ...", row.foreign);
        topo.node
            .run_stdin("iptables-nft-restore", &["--noflush"], foreign_rules(row.foreign))?;
    }
    let log_file = log_dir.join(format!("repair-{}-{}-{:?}.log", row.backend, row.foreign, row.flush));
    let mut d = Daemon::start(bin, &topo.node, row.backend, row.daemon_args(), log_file)?;
    d.wait_line("ready: the block is in place", 0, Duration::from_secs(60))?;
    let slow = Duration::from_secs(if row.foreign > 0 { 120 } else { 30 });
    d.wait_in_sync(&topo.node, slow)?;
    if topo.probe.once()? != Conn::Refused {
        return Err(format!("{}: the pod is not refused after `ready`", row.backend));
    }
    let mut res = RowResult::default();
    for i in 0..row.iterations {
        check_stop()?;
        let before = d.len();
        let (t0, rx) = topo.probe.begin(slow)?;
        let a = now_ns();
        row.flush.run(&topo.node)?;
        let b = now_ns();
        t0.store(b, Ordering::SeqCst);
        let o = rx
            .recv_timeout(slow + Duration::from_secs(5))
            .map_err(|_| "probe did not report".to_string())?;
        d.wait_in_sync(&topo.node, slow)?;
        let new: Vec<String> = d.lines()[before..].iter().map(|(_, l)| l.clone()).collect();
        let repaired: Vec<&String> = new.iter().filter(|l| l.contains("repaired drift")).collect();
        res.repairs += repaired.len();
        res.errors += new.iter().filter(|l| l.contains("check/repair failed")).count();
        res.repair_logged.extend(repaired.iter().filter_map(|l| repair_ms(l)));
        res.flush_cmd.push(ms(b - a));
        res.probe_ms.extend(o.connect_ns.iter().map(|&n| ms(n)));
        res.other += o.other;
        if o.refused_before_t0 == 0 && o.served_before_t0 > 0 {
            res.open_at_start += 1;
        }
        if o.served_before_t0 > 0 {
            res.served_before_t0 += 1;
        }
        if o.served_before_t0 + o.served_after_t0 == 0 {
            res.never_served += 1;
        }
        match o.refused_at {
            Some(r) => {
                res.latencies.push(ms(r - o.t0));
                if let Some(s) = o.first_served {
                    res.holes.push(ms(r - s));
                }
            }
            None => {
                res.timeouts += 1;
                eprintln!("  iteration {i}: not refused again within {slow:?}:\n{}", d.tail(10));
                if res.timeouts >= 3 {
                    break;
                }
            }
        }
        if (i + 1) % 10 == 0 || i + 1 == row.iterations {
            let s = sorted(res.latencies.clone());
            eprintln!(
                "  {}/{} done, p50 so far {} ms, {:.0} s",
                i + 1,
                row.iterations,
                f(pct(&s, 50.0)),
                started.elapsed().as_secs_f64()
            );
        }
    }
    d.stop();
    topo.clean_node()?;
    res.seconds = started.elapsed().as_secs_f64();
    Ok(res)
}

pub fn run_first_start(topo: &Topology, bin: &Path, runs: usize, log_dir: &Path) -> R<StartResult> {
    let mut r = StartResult::default();
    for i in 0..runs {
        check_stop()?;
        topo.clean_node()?;
        if topo.probe.once()? != Conn::Served {
            return Err("the pod is not served with an empty node firewall".into());
        }
        let (t0, rx) = topo.probe.begin(Duration::from_secs(30))?;
        let spawn_at = now_ns();
        t0.store(spawn_at, Ordering::SeqCst);
        let mut d = Daemon::start(
            bin,
            &topo.node,
            "nftables",
            &[],
            log_dir.join(format!("first-start-{i}.log")),
        )?;
        let o = rx
            .recv_timeout(Duration::from_secs(35))
            .map_err(|_| "probe did not report".to_string())?;
        let (ready, _) = d.wait_line("ready: the block is in place", 0, Duration::from_secs(30))?;
        r.record(spawn_at, o.refused_at, ready, &d);
        d.stop();
        eprintln!(
            "  start {}/{runs}: blocked after {} ms",
            i + 1,
            r.to_block.last().map_or("n/a".into(), |v| f(*v))
        );
    }
    topo.clean_node()?;
    Ok(r)
}
