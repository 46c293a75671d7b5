//! Discovery latency of `apiserver-guard run --apiserver auto`, and the cost of the Kubernetes client.
//!
//! Reuses the integration-test harness (`tests/common`): the three-namespace topology
//! `pod (10.0.1.2) <-veth-> node (forwarding) <-veth-> api (192.168.50.10, 192.168.50.20)` and the
//! fake Kubernetes apiserver (real protocol: HTTPS + token, list/watch) on the node namespace's
//! loopback, with a kubeconfig for it (`Cluster`). The harness's listeners in the api namespace are
//! replaced by the benches' leaner one (`shared::listener`: poll + accept, deep backlog, every
//! connection reset after 20 ms), which keeps up with a probe that connects back to back.
//!
//! 1. Discovery latency, per backend: the daemon (release binary) runs in the node namespace with
//!    `--apiserver auto --container-cidr 10.0.0.0/16 --mode tunnel`; the bench alternates the
//!    `kubernetes` EndpointSlice between [192.168.50.10] and [192.168.50.20] (port 5443). For each
//!    change: t0 is taken right before `set_endpoint_slice` is called; t1 = end of the first TCP
//!    connect from the pod to the NEW address that is refused (RST from our reject rule); t2 = end
//!    of the first connect to the OLD address that is served again. The daemon's own figure
//!    ("discovery: applied ... (X ms after the change arrived)", the same number as the
//!    `apiserver_guard_discovery_last_apply_seconds` gauge) splits it into delivery and apply.
//! 2. Cost of the Kubernetes client: binary size, `--version` wall time, spawn -> first refused pod
//!    connect (static policy, and with discovery), and idle RSS, for this tree's binary and,
//!    when given (`--baseline-bin`), a binary built from the commit before discovery.
//! 3. The end of an allowed pod's exemption (`deletion.rs`): deletionTimestamp set in the fake
//!    apiserver -> first refused connect from that pod's IP (`--deletion-runs`, default 20;
//!    `--deletion-only` runs this part alone).
//!
//! Prints markdown tables (no assertions) to stdout, progress to stderr. Never touches the root
//! namespace's firewall; the namespaces are deleted on exit (also on panic, SIGINT or SIGTERM).
//!
//! Run as root: `benches/discovery-latency.sh` (builds the release binary and the baseline, then
//! `cargo bench --bench discovery_latency -- [--iterations 20] [--start-runs 10] [--version-runs 50]
//! [--rss-runs 3] [--rss-wait 5] [--backends nftables,iptables-nft] [--baseline-bin PATH]
//! [--baseline-label REV] [--label REV] [--probe-gap-us 0] [--deletion-runs 20] [--deletion-only]`). `APISERVER_GUARD_BIN` overrides the
//! binary under test (default `target/release/apiserver-guard`); daemon logs go to
//! `target/bench-logs/`. Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/mod.rs"]
mod shared;

mod cost;
mod daemon;
mod deletion;
mod latency;
mod probe;
mod report;
mod setup;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::discovery_cases::Cluster;
use common::guard_cases::Backend;
use common::{API_V4, OTHER_V4};

use cost::{run_rss, run_start, run_version, Cost, Variant};
use deletion::{deletion_report, run_deletion};
use latency::run_latency;
use probe::once;
use report::report;
use setup::{bind_in, sock, Bench};
use shared::cli::{args_or_exit, bench_argv, log_dir, release_bin, root, run_as_root};
use shared::listener::Listener;
use shared::machine::machine_facts;
use shared::probe::{Conn, GAP_US};
use shared::R;

struct Args {
    iterations: usize,
    start_runs: usize,
    version_runs: usize,
    rss_runs: usize,
    rss_wait: u64,
    backends: Vec<Backend>,
    baseline_bin: Option<PathBuf>,
    baseline_label: String,
    label: String,
    deletion_runs: usize,
    deletion_only: bool,
}

fn parse_args() -> R<Option<Args>> {
    let mut a = Args {
        iterations: 20,
        start_runs: 10,
        version_runs: 50,
        rss_runs: 3,
        rss_wait: 5,
        backends: vec![Backend::Nftables, Backend::IptablesNft],
        baseline_bin: None,
        baseline_label: "baseline".into(),
        label: "this tree".into(),
        deletion_runs: 20,
        deletion_only: false,
    };
    let Some(argv) = bench_argv() else {
        return Ok(None);
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut val = |name: &str| -> R<String> { it.next().cloned().ok_or_else(|| format!("{name} needs a value")) };
        let num = |v: String, name: &str| -> R<usize> { v.parse().map_err(|_| format!("{name} needs a number")) };
        match k.as_str() {
            "--bench" => {}
            "--iterations" => a.iterations = num(val(k)?, k)?,
            "--start-runs" => a.start_runs = num(val(k)?, k)?,
            "--version-runs" => a.version_runs = num(val(k)?, k)?.max(1),
            "--rss-runs" => a.rss_runs = num(val(k)?, k)?.max(1),
            "--rss-wait" => a.rss_wait = num(val(k)?, k)? as u64,
            "--probe-gap-us" => GAP_US.store(num(val(k)?, k)? as u64, Ordering::Relaxed),
            "--baseline-bin" => a.baseline_bin = Some(PathBuf::from(val(k)?)),
            "--baseline-label" => a.baseline_label = val(k)?,
            "--label" => a.label = val(k)?,
            "--deletion-runs" => a.deletion_runs = num(val(k)?, k)?,
            "--deletion-only" => a.deletion_only = true,
            "--backends" => {
                a.backends = val(k)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| match s {
                        "nftables" => Ok(Backend::Nftables),
                        "iptables-nft" => Ok(Backend::IptablesNft),
                        "iptables-legacy" => Ok(Backend::IptablesLegacy),
                        other => Err(format!("unknown backend {other}")),
                    })
                    .collect::<R<_>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(a))
}

fn main() {
    let how = "use benches/discovery-latency.sh (needs root)";
    if let Some(args) = args_or_exit("discovery_latency", how, parse_args()) {
        run_as_root("discovery_latency", || bench(&args));
    }
}

fn bench(args: &Args) -> R<()> {
    let root = root();
    let bin = release_bin(&root)?;
    if let Some(b) = &args.baseline_bin {
        if !b.exists() {
            return Err(format!("baseline binary {} missing", b.display()));
        }
    }
    let log_dir = log_dir(&root)?;
    let facts = machine_facts();
    eprintln!("{facts}\nbinary: {}", bin.display());

    // The harness panics on setup failures; unwinding drops the cluster, deleting the namespaces.
    let mut cluster = Cluster::new("bench");
    cluster.topo.stop_listeners();
    let _listener = Listener::serve(bind_in(&cluster.topo.api, &[sock(API_V4), sock(OTHER_V4)])?)?;
    let b = Bench { c: &cluster, log_dir };
    eprintln!("namespaces: {}", cluster.topo.netns_names().join(", "));
    b.reset()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while once(b.pod(), sock(API_V4))? != Conn::Served || once(b.pod(), sock(OTHER_V4))? != Conn::Served {
        if Instant::now() > deadline {
            return Err("the pod cannot reach the bench's listeners after 10 s".into());
        }
        thread::sleep(Duration::from_millis(50));
    }

    let deletion = match args.deletion_runs {
        0 => None,
        n => {
            eprintln!("allowed pod deleted -> refused: {n} runs");
            Some(deletion_report(&run_deletion(&b, &bin, n)?, n))
        }
    };
    if args.deletion_only {
        drop(b);
        drop(_listener);
        drop(cluster);
        println!("{facts}\n\n{}", deletion.unwrap_or_default());
        return Ok(());
    }

    let mut rows = Vec::new();
    for &backend in &args.backends {
        eprintln!("discovery latency, {}: {} changes", backend.flag(), args.iterations);
        let r = run_latency(&b, &bin, backend, args.iterations)?;
        rows.push((backend, r));
    }

    let mut variants = Vec::new();
    if let Some(base) = &args.baseline_bin {
        variants.push(Variant {
            label: "before, static".into(),
            bin: base.clone(),
            discovery: false,
        });
    }
    variants.push(Variant {
        label: "now, static".into(),
        bin: bin.clone(),
        discovery: false,
    });
    variants.push(Variant {
        label: "now, discovery".into(),
        bin: bin.clone(),
        discovery: true,
    });
    eprintln!("start-up: {} runs per variant", args.start_runs);
    let starts = run_start(&b, &variants, args.start_runs)?;
    let wait = Duration::from_secs(args.rss_wait);
    let mut mems = Vec::new();
    for v in &variants {
        eprintln!(
            "idle memory, {}: {} daemons, {} s each",
            v.label, args.rss_runs, args.rss_wait
        );
        mems.push(run_rss(&b, v, args.rss_runs, wait)?);
    }
    eprintln!("--version: {} runs per binary", args.version_runs);
    let mut bins: Vec<&Path> = vec![&bin];
    if let Some(base) = &args.baseline_bin {
        bins.push(base);
    }
    let versions = run_version(&bins, args.version_runs)?;
    let size = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
    let cost = Cost {
        now_label: args.label.clone(),
        base_label: args.baseline_bin.as_ref().map(|_| args.baseline_label.clone()),
        size_now: size(&bin),
        size_base: args.baseline_bin.as_deref().and_then(size),
        version_now: versions[0],
        version_base: versions.get(1).copied().unwrap_or(f64::NAN),
        version_runs: args.version_runs,
        start_runs: args.start_runs,
        variants: variants
            .into_iter()
            .zip(starts)
            .zip(mems)
            .map(|((v, s), m)| (v, s, m))
            .collect(),
        rss_runs: args.rss_runs,
        rss_wait: wait,
    };
    drop(b);
    drop(_listener);
    drop(cluster);

    println!(
        "{facts}\n\n{}\n{}",
        report(&rows, &cost, args),
        deletion.unwrap_or_default()
    );
    Ok(())
}
