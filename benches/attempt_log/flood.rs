//! The flood: the daemon with its defaults in the node namespace; a pod thread connects to the
//! blocked apiserver back to back (refused by our rule) from `sources` addresses round robin, while
//! another pod thread tries once from a fresh address every `--single-every-ms`. The pod holds
//! both ranges as local routes (AnyIP: any address in them can be bound), the node routes them back
//! to the pod. Measures the daemon's CPU over the flood (/proc/PID/stat), its RSS and peak RSS
//! (/proc/PID/status), the attempts made and reported (`apiserver-guard attempts --output json`:
//! rows and counts; log lines), and each single attempt's connect -> log line time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::common::{Netns, Topology, API_PORT, API_V4, NODE_POD_IF};
use crate::shared::cli::{release_bin, root};
use crate::shared::clock::{ms, now_ns};
use crate::shared::probe::{connect, Conn};
use crate::shared::stop::{check_stop, STOP};
use crate::shared::R;
use crate::{addr, ready_daemon, Args};

/// The flooding sources (round robin from the first N of 10.0.4.0/24) and the single ones
/// (10.0.2.1, 10.0.2.2, ... one per attempt).
const FLOOD_NET: &str = "10.0.4.0/24";
const SINGLE_NET: &str = "10.0.2.0/23";
/// The singles start this long after the flood: the flood's own new-pair log lines come first.
const SINGLE_DELAY: Duration = Duration::from_millis(1500);
/// Connect timeout of a single attempt (refused at once when the block works).
const SINGLE_TIMEOUT: Duration = Duration::from_millis(500);

/// One single attempt: its source, when it was made (bench clock, ns), how it ended.
type Single = (Ipv4Addr, u64, Conn);

/// One flood, measured.
pub struct FloodRow {
    pub sources: usize,
    pub seconds: f64,
    pub made: u64,
    /// Reported by the daemon for the flooding sources (sum of their rows' counts).
    pub reported: u64,
    /// What the kernel's per-source meter lets through: sources x (burst + rate x seconds).
    pub budget: u64,
    pub singles_made: usize,
    /// Single attempts with a row of their own in the table.
    pub singles_in_table: usize,
    /// Single attempts with a log line of their own.
    pub singles_logged: usize,
    /// Connect -> log line, ms, sorted.
    pub latency_ms: Vec<f64>,
    pub cpu_pct: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub overflows: u64,
    pub suppressed_lines: String,
}

fn kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// User + system CPU ticks of `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(end) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[end + 2..].split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// One connect from `src` (bound first), closed with RST.
fn connect_from(src: Ipv4Addr, to: &SocketAddr, timeout: Duration) -> Conn {
    let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) else {
        return Conn::Other;
    };
    if s.bind(&SocketAddr::new(IpAddr::V4(src), 0).into()).is_err() {
        return Conn::Other;
    }
    let _ = s.set_linger(Some(Duration::ZERO));
    match s.connect_timeout(&(*to).into(), timeout) {
        Ok(()) => Conn::Served,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Conn::Refused,
        Err(_) => Conn::Other,
    }
}

fn nth(net_base: [u8; 4], i: usize) -> Ipv4Addr {
    let v = u32::from(Ipv4Addr::from(net_base)) + 1 + i as u32;
    Ipv4Addr::from(v)
}

/// `apiserver-guard attempts --output json` in the node namespace: count per source.
fn table(node: &Netns) -> R<(BTreeMap<String, u64>, u64)> {
    let bin = release_bin(&root())?;
    let out = Command::new("ip")
        .args(["netns", "exec", &node.name])
        .arg(bin)
        .args(["attempts", "--output", "json"])
        .output()
        .map_err(|e| format!("attempts: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("attempts --output json: {e}"))?;
    let mut rows = BTreeMap::new();
    for r in v["attempts"].as_array().cloned().unwrap_or_default() {
        let src = r["source"].as_str().unwrap_or("").to_string();
        *rows.entry(src).or_default() += r["count"].as_u64().unwrap_or(0);
    }
    Ok((rows, v["overflows"].as_u64().unwrap_or(0)))
}

/// The pod holds both ranges (any address bindable), the node routes them to the pod.
fn add_sources(topo: &Topology) {
    for net in [FLOOD_NET, SINGLE_NET] {
        topo.pod.ip_ok(&["route", "add", "local", net, "dev", "lo"]);
        topo.node.ip_ok(&["route", "add", net, "dev", NODE_POD_IF]);
    }
}

/// Runs the flood from 1 source, then from 250, each with a fresh daemon.
pub fn run(topo: &Topology, args: &Args, log_dir: &Path) -> R<Vec<FloodRow>> {
    add_sources(topo);
    let mut rows = Vec::new();
    let mut first_single = 0;
    for (i, sources) in [1usize, 250].into_iter().enumerate() {
        eprintln!("flood from {sources} source(s), {} s", args.flood_seconds);
        let log = log_dir.join(format!("attempt-log-flood-{sources}.log"));
        let row = one(topo, args, sources, first_single, &log)?;
        first_single += row.singles_made;
        eprintln!(
            "  {} connects, {} reported; singles {}/{} logged, p99 {:.1} ms; CPU {:.1} %, RSS {} KiB",
            row.made,
            row.reported,
            row.singles_logged,
            row.singles_made,
            crate::shared::stats::pct(&row.latency_ms, 99.0),
            row.cpu_pct,
            row.rss_kib
        );
        rows.push(row);
        if i == 0 {
            // The next daemon starts with an empty table and a fresh meter.
            thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(rows)
}

fn one(topo: &Topology, args: &Args, sources: usize, first_single: usize, log: &Path) -> R<FloodRow> {
    let mut d = ready_daemon(&topo.node, &[], log)?;
    let pid = d.pid();
    let api = addr(API_V4, API_PORT);
    let flood = Duration::from_secs(args.flood_seconds);
    let every = Duration::from_millis(args.single_every_ms);
    let done = AtomicBool::new(false);
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let (made, singles) = thread::scope(|sc| -> R<(u64, Vec<Single>)> {
        let flooder = sc.spawn(|| {
            topo.pod.in_thread(|| {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < flood && !STOP.load(Ordering::Relaxed) {
                    // Refused by our rule; the outcome does not matter here.
                    let _refused = if sources == 1 {
                        connect(&api)
                    } else {
                        connect_from(nth([10, 0, 4, 0], n as usize % sources), &api, SINGLE_TIMEOUT)
                    };
                    n += 1;
                }
                n
            })
        });
        let singler = sc.spawn(|| {
            topo.pod.in_thread(|| {
                thread::sleep(SINGLE_DELAY);
                let mut out = Vec::new();
                let mut k = first_single;
                while !done.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                    let src = nth([10, 0, 2, 0], k);
                    let at = now_ns();
                    let c = connect_from(src, &api, SINGLE_TIMEOUT);
                    out.push((src, at, c));
                    k += 1;
                    thread::sleep(every);
                }
                out
            })
        });
        let made = flooder
            .join()
            .map_err(|_| "the flood thread panicked".to_string())?
            .map_err(|e| format!("enter the pod: {e}"))?;
        done.store(true, Ordering::Relaxed);
        let singles = singler
            .join()
            .map_err(|_| "the single-attempt thread panicked".to_string())?
            .map_err(|e| format!("enter the pod: {e}"))?;
        Ok((made, singles))
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_pct = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_second() / seconds * 100.0;
    check_stop()?;
    // Let the last reports arrive.
    thread::sleep(Duration::from_millis(500));
    let (rss_kib, hwm_kib) = (kib(pid, "VmRSS:"), kib(pid, "VmHWM:"));
    let (table, overflows) = table(&topo.node)?;
    let lines = d.lines();
    let mut latency_ms = Vec::new();
    let mut singles_in_table = 0;
    let mut singles_logged = 0;
    for (src, at, _) in &singles {
        if table.contains_key(&src.to_string()) {
            singles_in_table += 1;
        }
        let needle = format!("blocked attempt: {src}:");
        if let Some((t, _)) = lines.iter().find(|(_, l)| l.contains(&needle)) {
            singles_logged += 1;
            latency_ms.push(ms(t.saturating_sub(*at)));
        }
    }
    let single_refused = singles.iter().filter(|(_, _, c)| *c == Conn::Refused).count();
    if single_refused != singles.len() {
        eprintln!(
            "  note: {} of {} single attempts were not refused",
            singles.len() - single_refused,
            singles.len()
        );
    }
    let flood_sources: Vec<String> = if sources == 1 {
        vec![crate::common::POD_V4.to_string()]
    } else {
        (0..sources).map(|i| nth([10, 0, 4, 0], i).to_string()).collect()
    };
    let reported: u64 = flood_sources.iter().filter_map(|s| table.get(s)).sum();
    use apiserver_guard::core::model::{Meter, METER, METER_IIF_KNOWN, METER_IIF_NEW};
    let allows = |m: &Meter| u64::from(m.burst) + (m.rate as f64 * seconds).ceil() as u64;
    // Per source, in the meter of connects (a connect over it is logged by
    // no other rule), capped by the one interface all flooding sources come
    // in on.
    let budget = (sources as u64 * allows(&METER)).min(allows(&METER_IIF_NEW) + allows(&METER_IIF_KNOWN));
    let suppressed = lines
        .iter()
        .filter(|(_, l)| l.contains("not logged one by one"))
        .count();
    d.stop();
    Ok(FloodRow {
        sources,
        seconds,
        made,
        reported,
        budget,
        singles_made: singles.len(),
        singles_in_table,
        singles_logged,
        latency_ms: crate::shared::stats::sorted(latency_ms),
        cpu_pct,
        rss_kib,
        hwm_kib,
        overflows,
        suppressed_lines: if suppressed > 0 {
            format!("{suppressed} summary line(s) name unlogged new pairs")
        } else {
            String::new()
        },
    })
}
