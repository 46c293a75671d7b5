//! Drift-to-repair latency of `apiserver-guard run`, and time to block on first start.
//!
//! Builds its own network namespaces `pod (10.0.1.2/24) <-veth-> node (forwarding) <-veth-> api
//! (192.168.50.10, TCP listener on 5443)`, starts the daemon inside `node` (tunnel mode), then:
//! 1. repeatedly removes the block with a foreign command in `node` (`nft flush ruleset`,
//!    `iptables-nft -F`, ...) and measures the time from the command's return (t0) to the first
//!    TCP connect from the pod that is refused again (RST from our `tcp reset` rule), per backend,
//!    with 0 and N foreign kube-proxy-like iptables-nft rules (the nftables rows with
//!    `--table-ownership off`: the daemon's default owns its table, which a foreign flush cannot
//!    reach; `benches/table_ownership` measures that);
//! 2. measures the time from spawning `apiserver-guard run` to the first refused pod connect.
//!
//! Prints markdown tables (medians/percentiles, no assertions) to stdout, progress to stderr,
//! and writes the tables into its section of `docs/benchmarks-daemon.md`.
//! Never touches the root namespace's firewall; all traffic stays between its own namespaces,
//! which are deleted on exit (also on panic, SIGINT or SIGTERM).
//!
//! Run as root: `benches/repair-latency.sh` (builds `target/release/apiserver-guard`, then runs
//! `cargo bench --bench repair_latency -- [--iterations 100] [--slow-iterations 20]
//! [--foreign 100000] [--start-runs 10] [--no-doc] [--only nftables:0,iptables-nft:100000]
//! [--probe-gap-us 0]`); ~7 minutes on 2 idle cores, most of it the iptables-nft row with foreign
//! rules. `APISERVER_GUARD_BIN` overrides the binary; daemon logs go to `target/bench-logs/`.
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../shared/mod.rs"]
mod shared;

mod args;
mod daemon;
mod flush;
mod measure;
mod netns;
mod probe;
mod report;
mod topology;

use shared::cli::{args_or_exit, log_dir, release_bin, root, run_as_root};
use shared::machine::machine_facts;
use shared::R;

use args::{parse_args, Args};
use flush::Flush;
use measure::{run_first_start, run_row, Row};
use report::{report, write_doc, DOC};
use topology::Topology;

fn main() {
    let how = "use benches/repair-latency.sh (needs root)";
    if let Some(args) = args_or_exit("repair_latency", how, parse_args()) {
        run_as_root("repair_latency", || bench(&args));
    }
}

fn bench(args: &Args) -> R<()> {
    let root = root();
    let bin = release_bin(&root)?;
    let log_dir = log_dir(&root)?;
    let facts = machine_facts();
    eprintln!("{facts}\nbinary: {}", bin.display());

    let topo = Topology::new()?;
    eprintln!("namespaces: {}", topo.names());

    eprintln!("time to block on first start ({} runs)", args.start_runs);
    let start = run_first_start(&topo, &bin, args.start_runs, &log_dir)?;

    let (n, slow, big) = (args.iterations, args.slow_iterations, args.foreign);
    let rows = vec![
        Row {
            backend: "nftables",
            foreign: 0,
            flush: Flush::NftRuleset,
            iterations: n,
            note: "",
        },
        Row {
            backend: "nftables",
            foreign: 0,
            flush: Flush::NftDeleteTable,
            iterations: n,
            note: "",
        },
        Row {
            backend: "nftables",
            foreign: big,
            flush: Flush::NftDeleteTable,
            iterations: n,
            note: "",
        },
        Row {
            backend: "iptables-nft",
            foreign: 0,
            flush: Flush::IptFlushAll,
            iterations: n,
            note: "",
        },
        Row {
            backend: "iptables-nft",
            foreign: 0,
            flush: Flush::IptChainAndJump,
            iterations: n,
            note: "",
        },
        Row {
            backend: "iptables-nft",
            foreign: big,
            flush: Flush::IptChainAndJump,
            iterations: slow,
            note: " (fewer: the foreign command alone takes a second)",
        },
    ];
    let mut results = Vec::new();
    let wanted = |r: &Row| args.only.is_empty() || args.only.contains(&format!("{}:{}", r.backend, r.foreign));
    for row in rows.into_iter().filter(wanted) {
        eprintln!(
            "{} with {} foreign rules, flush {}: {} iterations",
            row.backend,
            row.foreign,
            row.flush.label(),
            row.iterations
        );
        let r = run_row(&topo, &bin, &row, &log_dir)?;
        results.push((row, r));
    }
    // SYNs dropped by a full accept queue would show up as probe timeouts; say whether any were.
    if let Ok(out) = topo
        .api
        .run("nstat", &["-asz", "TcpExtListenOverflows", "TcpExtListenDrops"])
    {
        eprintln!("api namespace listen queue counters:\n{}", out.trim_end());
    }
    drop(topo);

    let body = format!("{facts}\n\n{}", report(&results, &start, args.start_runs, args));
    println!("{body}");
    if args.doc {
        write_doc(&root, &body)?;
        eprintln!("written to {DOC} (daemon logs in {})", log_dir.display());
    }
    Ok(())
}
