//! Who tried, under a flood (issue 13's benchmark), nftables backend, the daemon with its
//! defaults (log rules to NFLOG group 1443, metered per source in the kernel: 10/s, burst 20).
//!
//! 1. Flood (`flood.rs`): in the harness's topology `pod <-veth-> node (forwarding) <-veth-> api`,
//!    a pod thread connects to the blocked apiserver as fast as it can (from 1 source address, then
//!    round robin from 250) while another thread tries once from a fresh source address every
//!    `--single-every-ms`: the daemon's CPU (% of one core over the flood) and RSS, attempts made
//!    and reported (flood and single), and the time from a single attempt's connect to the daemon's
//!    log line about it (read from its stderr, same clock). Targets: attempt to log line
//!    p99 <= 100 ms; daemon CPU <= 5 % of a core at the kernel rate limit; RSS <= 20 MiB.
//! 2. Data-path cost of the log statement (`datapath.rs`) on traffic that is not blocked: the pod's
//!    connect rate with the log rules (the default) and with `--log-group off`, to an address the
//!    block does not match (reject policy: every packet walks the log rule and the block rule
//!    without matching) and to the apiserver in audit mode (every packet matches the log rule: the
//!    meter, and NFLOG for those under the limit, then the audit counter). Rounds interleaved.
//!
//! Prints markdown tables to stdout (no assertions; each target says met or missed), progress to
//! stderr. Never touches the root namespace's firewall; the namespaces are deleted on exit (also on
//! panic, SIGINT or SIGTERM).
//!
//! Run as root: `benches/attempt-log.sh` (builds the release binary, then
//! `cargo bench --bench attempt_log -- [--flood-seconds 10] [--single-every-ms 100]
//! [--rate-seconds 3] [--rounds 5] [--datapath-only]`). `APISERVER_GUARD_BIN` overrides the binary under test;
//! daemon logs go to `target/bench-logs/`. Under `cargo test` (no `--bench` argument) it does
//! nothing.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/mod.rs"]
mod shared;

mod datapath;
mod flood;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Netns, Topology, API_PORT, API_V4, OTHER_V4};
use shared::cli::{args_or_exit, bench_argv, log_dir, release_bin, root, run_as_root};
use shared::daemon::DaemonProc;
use shared::listener::Listener;
use shared::machine::machine_facts;
use shared::R;

/// The policy of every daemon here (tunnel mode: the FORWARD hook).
pub const POLICY: [&str; 10] = [
    "--container-cidr",
    "10.0.0.0/16",
    "--apiserver",
    "192.168.50.10:5443",
    "--mode",
    "tunnel",
    "--backend",
    "nftables",
    "--config",
    "/dev/null",
];
pub const READY: &str = "ready: the block is in place";
pub const BOUND: &str = "reading blocked attempts from NFLOG group";

pub struct Args {
    pub flood_seconds: u64,
    pub single_every_ms: u64,
    pub rate_seconds: f64,
    pub rounds: usize,
    /// Skip the floods: only the data-path rows (to compare builds quickly).
    pub datapath_only: bool,
}

fn parse_args() -> R<Option<Args>> {
    let mut a = Args {
        flood_seconds: 10,
        single_every_ms: 100,
        rate_seconds: 3.0,
        rounds: 5,
        datapath_only: false,
    };
    let Some(argv) = bench_argv() else {
        return Ok(None);
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut num = |name: &str| -> R<f64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match k.as_str() {
            "--bench" => {}
            "--flood-seconds" => a.flood_seconds = (num(k)? as u64).max(2),
            "--single-every-ms" => a.single_every_ms = (num(k)? as u64).max(60),
            "--rate-seconds" => a.rate_seconds = num(k)?.max(0.5),
            "--rounds" => a.rounds = (num(k)? as usize).max(1),
            "--datapath-only" => a.datapath_only = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("valid constant"), port)
}

/// `apiserver-guard run` with `POLICY` (and `extra`) in `node`, through `ip netns exec` (which
/// execs it: the child's pid is the daemon's).
pub fn daemon_cmd(node: &Netns, extra: &[&str]) -> R<Command> {
    let bin = release_bin(&root())?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.name])
        .arg(bin)
        .arg("run")
        .args(POLICY)
        .args(["--log-format", "text"])
        .args(extra);
    Ok(cmd)
}

/// The daemon with `extra` flags, ready (and reading its NFLOG group unless `--log-group off`).
pub fn ready_daemon(node: &Netns, extra: &[&str], log: &Path) -> R<DaemonProc> {
    let mut d = DaemonProc::spawn(daemon_cmd(node, extra)?, log.to_path_buf())?;
    d.wait_line(READY, 0, Duration::from_secs(30))?;
    if !extra.windows(2).any(|w| w == ["--log-group", "off"]) {
        d.wait_line(BOUND, 0, Duration::from_secs(10))?;
    }
    Ok(d)
}

fn main() {
    let how = "use benches/attempt-log.sh (needs root)";
    if let Some(args) = args_or_exit("attempt_log", how, parse_args()) {
        run_as_root("attempt_log", || bench(&args));
    }
}

fn bench(args: &Args) -> R<()> {
    let root = root();
    let bin = release_bin(&root)?;
    let log_dir = log_dir(&root)?;
    let facts = machine_facts();
    eprintln!("{facts}\nbinary: {}", bin.display());
    // The harness panics on setup failures; unwinding drops the topology, deleting the namespaces.
    let mut topo = Topology::new();
    topo.stop_listeners();
    let socks = topo
        .api
        .in_thread(|| {
            [API_V4, OTHER_V4]
                .iter()
                .map(|ip| TcpListener::bind(addr(ip, API_PORT)).map_err(|e| format!("bind {ip}:{API_PORT}: {e}")))
                .collect::<R<Vec<TcpListener>>>()
        })
        .map_err(|e| format!("enter {}: {e}", topo.api.name))??;
    let _listener = Listener::serve(socks)?;
    eprintln!("namespaces: {}", topo.netns_names().join(", "));
    let mut out = vec![facts];
    if !args.datapath_only {
        let floods = flood::run(&topo, args, &log_dir)?;
        out.push(report::flood_report(&floods, args));
    }
    let rates = datapath::run(&topo, args, &log_dir)?;
    out.push(report::datapath_report(&rates, args));
    println!("{}", out.join("\n\n"));
    Ok(())
}
