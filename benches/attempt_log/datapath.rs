//! The data-path cost of the log statement on traffic that is not blocked: the pod's connect rate
//! (back to back, RST-closed, one thread) with the daemon's log rules (the default, group 1443) and
//! with `--log-group off`, for two kinds of traffic: to an address the block does not match (reject
//! policy: each packet walks the log rule and the block rule and matches neither) and to the
//! apiserver in audit mode (each packet matches the log rule: the per-source meter, NFLOG for the
//! packets under its limit, then the audit rule's counter). Every configuration once per round, a
//! fresh daemon each time, so that other load on the machine spreads over all of them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::{Topology, API_PORT, API_V4, OTHER_V4};
use crate::shared::probe::{connect, Conn};
use crate::shared::stop::{check_stop, STOP};
use crate::shared::R;
use crate::{addr, ready_daemon, Args};

/// One kind of traffic with and without the log rules.
pub struct RateRow {
    pub traffic: &'static str,
    /// Served connects per second, per round.
    pub logged: Vec<f64>,
    pub off: Vec<f64>,
    /// Connects that were not served (should be 0: this traffic is never blocked).
    pub not_served: u64,
}

struct Config {
    traffic: &'static str,
    target: SocketAddr,
    action: &'static str,
}

/// Served connects per second from the pod to `target` over `seconds`, and the others.
fn rate(topo: &Topology, target: SocketAddr, seconds: f64) -> R<(f64, u64)> {
    topo.pod
        .in_thread(|| {
            let limit = Duration::from_secs_f64(seconds);
            let start = Instant::now();
            let (mut served, mut other) = (0u64, 0u64);
            while start.elapsed() < limit && !STOP.load(Ordering::Relaxed) {
                match connect(&target) {
                    Conn::Served => served += 1,
                    _ => other += 1,
                }
            }
            (served as f64 / start.elapsed().as_secs_f64(), other)
        })
        .map_err(|e| format!("enter the pod: {e}"))
}

pub fn run(topo: &Topology, args: &Args, log_dir: &Path) -> R<Vec<RateRow>> {
    let configs = [
        Config {
            traffic: "pod -> 192.168.50.20:5443 (not matched), reject policy",
            target: addr(OTHER_V4, API_PORT),
            action: "reject",
        },
        Config {
            traffic: "pod -> 192.168.50.10:5443 (the apiserver), audit policy",
            target: addr(API_V4, API_PORT),
            action: "audit",
        },
    ];
    let mut rows: Vec<RateRow> = configs
        .iter()
        .map(|c| RateRow {
            traffic: c.traffic,
            logged: Vec::new(),
            off: Vec::new(),
            not_served: 0,
        })
        .collect();
    for round in 0..args.rounds {
        for (i, c) in configs.iter().enumerate() {
            for log_off in [false, true] {
                check_stop()?;
                let mut extra = vec!["--action", c.action];
                if log_off {
                    extra.extend(["--log-group", "off"]);
                }
                let log = log_dir.join(format!(
                    "attempt-log-rate-{}-{}.log",
                    c.action,
                    if log_off { "off" } else { "on" }
                ));
                let mut d = ready_daemon(&topo.node, &extra, &log)?;
                // Warm up (ARP, the meter's first elements), then measure.
                rate(topo, c.target, 0.2)?;
                let (r, other) = rate(topo, c.target, args.rate_seconds)?;
                d.stop();
                let row = &mut rows[i];
                row.not_served += other;
                if log_off {
                    row.off.push(r);
                } else {
                    row.logged.push(r);
                }
                eprintln!(
                    "  round {}/{}: {} {}: {r:.0} connects/s",
                    round + 1,
                    args.rounds,
                    c.action,
                    if log_off { "--log-group off" } else { "log rules" }
                );
            }
        }
    }
    Ok(rows)
}
