//! Table ownership and what an apply costs (issue 12's targets), nftables backend.
//!
//! 1. Foreign flushes (`flush.rs`): the daemon with its defaults (its table owned by its netlink
//!    socket, flags owner|persist) in the node namespace of the harness's three-namespace topology
//!    `pod (10.0.1.2) <-veth-> node (forwarding) <-veth-> api (192.168.50.10)`; a pod thread
//!    connects back to back while another process runs `nft flush ruleset` N times, then
//!    `nft delete table inet apiserver_guard` N times. Target: 0 connections served.
//! 2. Apply cost (`apply_cost.rs`), in a namespace of its own with foreign iptables-nft rules:
//!    an allow-list element update in process (target <= 2 ms), apply with nothing to change and
//!    cold in process, and `apiserver-guard apply` (cold), `status` and `--version` as processes
//!    (targets: apply cold <= 5 ms beyond process start; status <= 3x --version).
//!
//! The harness's listeners in the api namespace are replaced by the benches' lean one
//! (`shared::listener`), which keeps up with a probe that connects back to back.
//! Prints markdown tables (no assertions; each target says met or missed) to stdout, progress to
//! stderr. Never touches the root namespace's firewall; the namespaces are deleted on exit (also
//! on panic, SIGINT or SIGTERM).
//!
//! Run as root: `benches/table-ownership.sh` (builds the release binary, then
//! `cargo bench --bench table_ownership -- [--rounds 1000] [--iterations 1000] [--runs 20]
//! [--foreign 100000] [--probe-gap-us 0] [--skip-flush] [--skip-apply]`). `APISERVER_GUARD_BIN`
//! overrides the binary under test; daemon logs go to `target/bench-logs/`. Under `cargo test`
//! (no `--bench` argument) it does nothing.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/mod.rs"]
mod shared;

mod apply_cost;
mod flush;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::{Netns, Topology, API_PORT, API_V4};
use shared::cli::{args_or_exit, bench_argv, log_dir, release_bin, root, run_as_root};
use shared::listener::Listener;
use shared::machine::machine_facts;
use shared::probe::{connect, Conn, GAP_US};
use shared::R;

/// The policy of every command line here (tunnel mode: the FORWARD hook).
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

pub struct Args {
    pub rounds: usize,
    iterations: usize,
    runs: usize,
    foreign: usize,
    flush: bool,
    apply: bool,
}

fn parse_args() -> R<Option<Args>> {
    let mut a = Args {
        rounds: 1000,
        iterations: 1000,
        runs: 20,
        foreign: 100_000,
        flush: true,
        apply: true,
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
            "--rounds" => a.rounds = num(k)?,
            "--iterations" => a.iterations = num(k)?.max(2),
            "--runs" => a.runs = num(k)?.max(1),
            "--foreign" => a.foreign = num(k)?,
            "--probe-gap-us" => GAP_US.store(num(k)? as u64, Ordering::Relaxed),
            "--skip-flush" => a.flush = false,
            "--skip-apply" => a.apply = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}

pub fn api(ip: &str, port: u16) -> SocketAddr {
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

/// One connect from `pod` to the apiserver.
fn once(pod: &Netns) -> R<Conn> {
    pod.in_thread(|| connect(&api(API_V4, API_PORT)))
        .map_err(|e| format!("enter {}: {e}", pod.name))
}

fn main() {
    let how = "use benches/table-ownership.sh (needs root)";
    if let Some(args) = args_or_exit("table_ownership", how, parse_args()) {
        run_as_root("table_ownership", || bench(&args));
    }
}

fn bench(args: &Args) -> R<()> {
    let root = root();
    let bin = release_bin(&root)?;
    let log_dir = log_dir(&root)?;
    let facts = machine_facts();
    eprintln!("{facts}\nbinary: {}", bin.display());
    let mut out = vec![facts];
    if args.flush {
        out.push(flushes(args, &log_dir)?);
    }
    if args.apply {
        eprintln!("apply cost ({} foreign rules)", args.foreign);
        let c = apply_cost::run(&bin, args.foreign, args.runs, args.iterations)?;
        out.push(report::apply_report(&c));
    }
    println!("{}", out.join("\n\n"));
    Ok(())
}

fn flushes(args: &Args, log_dir: &Path) -> R<String> {
    // The harness panics on setup failures; unwinding drops the topology, deleting the namespaces.
    let mut topo = Topology::new();
    topo.stop_listeners();
    let sock = topo
        .api
        .in_thread(|| TcpListener::bind(api(API_V4, API_PORT)))
        .map_err(|e| format!("enter {}: {e}", topo.api.name))?
        .map_err(|e| format!("bind {API_V4}:{API_PORT}: {e}"))?;
    let _listener = Listener::serve(vec![sock])?;
    eprintln!("namespaces: {}", topo.netns_names().join(", "));
    let deadline = Instant::now() + Duration::from_secs(10);
    while once(&topo.pod)? != Conn::Served {
        if Instant::now() > deadline {
            return Err("the pod cannot reach the bench's listener after 10 s".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("foreign flush and delete against the daemon's owned table");
    let rows = flush::run(&topo.pod, &topo.node, args.rounds, log_dir.join("ownership-flush.log"))?;
    Ok(report::flush_report(&rows, args))
}
