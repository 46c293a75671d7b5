//! Part 1, discovery latency per backend: the daemon with `--apiserver auto` while the bench
//! alternates the `kubernetes` EndpointSlice between two addresses; per change, t0 -> new address
//! blocked and t0 -> old address released, split by the daemon's own figure into delivery and apply.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::daemon_cases::READY_LINE;
use crate::common::guard_cases::Backend;
use crate::common::{API_PORT, API_V4, OTHER_V4};
use crate::daemon::{applied_ms, scrape, BenchDaemon, START_LIMIT};
use crate::probe::{once, probe_around, Watch};
use crate::setup::{sock, Bench, SLICE};
use crate::shared::clock::ms;
use crate::shared::machine::loadavg;
use crate::shared::probe::Conn;
use crate::shared::start::installed_ms;
use crate::shared::stats::{f, pct, sorted};
use crate::shared::stop::check_stop;
use crate::R;

/// Upper bound for one change to reach the kernel (the product target is 1 s).
pub const CHANGE_LIMIT: Duration = Duration::from_secs(10);
const APPLIED_LINE: &str = "discovery: applied";

#[derive(Default)]
pub struct LatencyResult {
    pub blocked: Vec<f64>,
    pub released: Vec<f64>,
    /// Daemon-logged: event folded into its view -> reconcile done ("... ms after the change arrived").
    pub logged: Vec<f64>,
    /// Daemon-logged: the reconcile itself (check + transaction + read-back), "block installed (X ms)".
    pub reconcile: Vec<f64>,
    /// t0 -> the event reached the daemon (time the `applied` line was read minus its figure).
    pub delivery: Vec<f64>,
    /// The event reached the daemon -> new address blocked (t1).
    pub agent_to_kernel: Vec<f64>,
    pub probe_ms: Vec<f64>,
    pub changes: usize,
    pub timeouts: usize,
    pub already: u32,
    pub other: u32,
    pub applied_metric: Option<f64>,
    pub last_apply_metric: Option<f64>,
    pub load_before: String,
    pub load_after: String,
    pub seconds: f64,
}

pub fn run_latency(b: &Bench, bin: &Path, backend: Backend, n: usize) -> R<LatencyResult> {
    let started = Instant::now();
    let mut r = LatencyResult {
        load_before: loadavg(),
        ..Default::default()
    };
    b.reset()?;
    let mut d = BenchDaemon::start(bin, b.node(), &b.discovery_args(backend), b.log(backend.flag()))?;
    d.wait_line(READY_LINE, 0, START_LIMIT)?;
    d.wait_idle()?;
    if once(b.pod(), sock(API_V4))? != Conn::Refused || once(b.pod(), sock(OTHER_V4))? != Conn::Served {
        return Err(format!(
            "{}: after `ready` the pod is not refused at {API_V4} and served at {OTHER_V4}:\n{}",
            backend.flag(),
            d.tail(20)
        ));
    }
    for i in 0..n {
        check_stop()?;
        let (new, old) = if i % 2 == 0 {
            (OTHER_V4, API_V4)
        } else {
            (API_V4, OTHER_V4)
        };
        let mark = d.len();
        let w = Watch {
            refused: Some(sock(new)),
            served: Some(sock(old)),
        };
        let (o, ()) = probe_around(b.pod(), &w, CHANGE_LIMIT, || {
            b.c.api.set_endpoint_slice(SLICE, &[new], API_PORT)
        })?;
        r.changes += 1;
        r.already += o.already;
        r.other += o.other;
        r.probe_ms.extend(o.connect_ns.iter().map(|&n| ms(n)));
        // The daemon computes its figure right before logging it: the time the line was read minus
        // the figure is when the event reached it (late by the pipe wake-up, microseconds).
        let arrived = match d.wait_line(APPLIED_LINE, mark, CHANGE_LIMIT) {
            Ok((read_at, line)) => applied_ms(&line).map(|v| {
                r.logged.push(v);
                read_at.saturating_sub((v * 1e6) as u64)
            }),
            Err(e) => {
                eprintln!("  change {i}: {e}");
                None
            }
        };
        if let Some(v) = d.lines()[mark..]
            .iter()
            .find(|(_, l)| l.contains("block installed"))
            .and_then(|(_, l)| installed_ms(l))
        {
            r.reconcile.push(v);
        }
        match (o.refused_at, o.served_at) {
            (Some(t1), Some(t2)) => {
                r.blocked.push(ms(t1 - o.t0));
                r.released.push(ms(t2 - o.t0));
                if let Some(a) = arrived {
                    r.delivery.push((a as f64 - o.t0 as f64) / 1e6);
                    r.agent_to_kernel.push((t1 as f64 - a as f64) / 1e6);
                }
            }
            _ => {
                r.timeouts += 1;
                eprintln!(
                    "  change {i}: not blocked at {new} and released at {old} within {CHANGE_LIMIT:?}:\n{}",
                    d.tail(10)
                );
                if r.timeouts >= 3 {
                    break;
                }
            }
        }
        d.wait_idle()?;
        if (i + 1) % 5 == 0 || i + 1 == n {
            eprintln!(
                "  {}/{n} changes, blocked p50 so far {} ms, {:.0} s",
                i + 1,
                f(pct(&sorted(r.blocked.clone()), 50.0)),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let m = scrape(
        b.node(),
        &[
            "apiserver_guard_discovery_changes_total{outcome=\"applied\"}",
            "apiserver_guard_discovery_last_apply_seconds",
        ],
    );
    r.applied_metric = m[0];
    r.last_apply_metric = m[1];
    d.stop();
    b.reset()?;
    r.load_after = loadavg();
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}
