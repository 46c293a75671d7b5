//! The markdown report (method, one table per measurement) and its section of
//! `docs/benchmarks-daemon.md`.

use std::path::Path;

use crate::shared::start::StartResult;
use crate::shared::stats::{f, pct, sorted};
use crate::shared::R;

use crate::args::Args;
use crate::measure::{Row, RowResult};

pub const DOC: &str = "docs/benchmarks-daemon.md";
pub const SECTION: &str = "repair_latency";

pub const METHOD: &str = "How it is measured:\n\n\
- Probe: a thread in the pod namespace connects to 192.168.50.10:5443 (a listener of the bench in the api \
namespace) back to back from before the flush until the first refused connect that started after t0 (every \
connect closed at once with RST); 50 ms after t0 it slows to one connect per ms (or per connect duration, if \
longer). Refused = ECONNREFUSED, i.e. the RST of our `tcp reset` rule; served = handshake completed.\n\
- t0 is taken when the flush command (exec'd directly in the node namespace) has returned. The kernel commits, \
and sends the daemon its change event, before that: the daemon usually starts repairing while the command is still exiting, \
so its logged check+repair time (details below) exceeds the latency from t0, and the pod is already served \
before t0 in nearly every iteration. \"Hole seen by the pod\" is the better measure of exposure.\n\
- Between iterations: 1 s (the daemon's repair budget allows 5 repairs at once, then one per second: a faster \
series would measure its deferral, README \"Daemon\"), then until /readyz is 200 and the daemon has run no tool (iptables rows) \
for 50 ms.\n\
- The nftables rows run the daemon with `--table-ownership off`, i.e. an ordinary table that a foreign flush \
reaches. With its default (the table owned by the daemon's netlink socket) `nft flush ruleset` skips the table \
and `nft delete table` is refused: nothing to repair, see \"Table ownership\" for that measurement.\n\
- With foreign rules, `nft flush ruleset` / `iptables-nft -F` would delete them too, so those rows remove only \
our objects: `nft delete table inet apiserver_guard`, and `-F APISERVER-GUARD` plus \
`-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD` in one `iptables-nft-restore --noflush` \
transaction (as two commands the daemon may repair after the first and race the second). The 0-rule rows \
with the same flush are their baseline. iptables-nft with foreign rules runs fewer iterations: the foreign \
`iptables-nft-restore` that removes the block reads the whole table (about a second per command), where the \
daemon's check reads only our chain and rule 1 of FORWARD over netlink (section 10).\n\n";

pub const TIMER_CELL: &str = "avg 30 / 15 / 90 s, worst 60 / 30 / 180 s; manual: never";

pub fn report(rows: &[(Row, RowResult)], start: &StartResult, start_runs: usize, args: &Args) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "### Drift-to-repair latency\n\nFrom the moment the foreign command that removed the block returned (t0) to the first \
         refused TCP connect from the pod to 192.168.50.10:5443, `apiserver-guard run --mode tunnel` in the node \
         namespace, event-driven (nf_tables netlink events on its own socket), default resync 10 s. Foreign rules: iptables-nft, half in FORWARD \
         (unrelated /32s, ACCEPT), half in a KUBE-SERVICES chain nothing jumps to. Milliseconds. Regenerate with \
         `benches/repair-latency.sh` (`--iterations {} --slow-iterations {} --foreign {}`).\n\n",
        args.iterations, args.slow_iterations, args.foreign
    ));
    o.push_str(
        "| backend | foreign rules | foreign flush (t0 = command returned) | iterations | p50 | p99 | max | \
         hole seen by the pod p50 / p99 / max | timer-based resync (expected exposure) |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---|\n",
    );
    for (row, r) in rows {
        let s = sorted(r.latencies.clone());
        let h = sorted(r.holes.clone());
        let it = if r.timeouts > 0 {
            format!("{} ({} not repaired in time)", r.latencies.len(), r.timeouts)
        } else {
            format!("{}{}", r.latencies.len(), row.note)
        };
        o.push_str(&format!(
            "| {} | {} | {} | {it} | {} | {} | {} | {} / {} / {} | {TIMER_CELL} |\n",
            row.label(),
            row.foreign,
            row.flush.label(),
            f(pct(&s, 50.0)),
            f(pct(&s, 99.0)),
            f(pct(&s, 100.0)),
            f(pct(&h, 50.0)),
            f(pct(&h, 99.0)),
            f(pct(&h, 100.0))
        ));
    }
    o.push_str(
        "\n\"Hole seen by the pod\": from the start of the first served pod connect after the flush began to the \
         first refused one after t0, i.e. the whole window in which pods could reach the apiserver, including the \
         part before the flush command returned.\n\nTimer column (computed, not measured): a tool that only re-applies on a timer leaves the hole open \
         interval/2 on average and a full interval at worst; ip-masq-agent 60 s / kube-proxy 30 s / Calico Felix \
         180 s default intervals; the manual `iptables -I` in rc.local is never repaired.\n\n",
    );
    o.push_str(METHOD);
    o.push_str(
        "Details per row: how long the foreign command itself took (the block is already gone when it returns, \
         so the hole is open for at least part of it, not counted above), what the daemon logged as its own \
         check+repair time (`repair_ms`: from the start of the check the change event triggered to the end of the \
         repair, read-back included), how long one probe connect takes (the measurement's resolution), and \
         sanity counts.\n\n\
         | backend | foreign rules | flush command p50 (ms) | daemon-logged `repair_ms` p50 / p99 / max | probe connect p50 (ms) | \
         repairs logged / iterations | iterations with the pod served before t0 | pod never served | probe timeouts | \
         errors logged | wall time (s) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (row, r) in rows {
        let fl = sorted(r.flush_cmd.clone());
        let rl = sorted(r.repair_logged.clone());
        let pr = sorted(r.probe_ms.clone());
        o.push_str(&format!(
            "| {} | {} | {} | {} / {} / {} | {} | {} / {} | {} | {} | {} | {} | {:.0} |\n",
            row.label(),
            row.foreign,
            f(pct(&fl, 50.0)),
            f(pct(&rl, 50.0)),
            f(pct(&rl, 99.0)),
            f(pct(&rl, 100.0)),
            f(pct(&pr, 50.0)),
            r.repairs,
            r.latencies.len() + r.timeouts,
            r.served_before_t0,
            r.never_served,
            r.other,
            r.errors,
            r.seconds
        ));
    }
    o.push_str(
        "\n### Exposure after a flush, on one scale\n\nMeasured rows: the hole seen by the pod (above); timer rows: \
         computed (interval/2 on average, the interval at worst).\n\n\
         | what repairs the block | expected exposure | p99 | worst |\n|---|---:|---:|---:|\n\
         | `apiserver-guard run`, nftables, table owned (the default on Linux 6.9+) | none: the flush skips the table, \
         the delete is refused | 0 | 0 (see \"Table ownership\") |\n",
    );
    for (row, r) in rows {
        let h = sorted(r.holes.clone());
        o.push_str(&format!(
            "| `apiserver-guard run`, {}, {} foreign rules, {} | {} ms (p50) | {} ms | {} ms (max of {}) |\n",
            row.label(),
            row.foreign,
            row.flush.label(),
            f(pct(&h, 50.0)),
            f(pct(&h, 99.0)),
            f(pct(&h, 100.0)),
            h.len()
        ));
    }
    o.push_str(
        "| `apiserver-guard run`, iptables-legacy (no events: resync timer, default 10 s) | 5 s | | 10 s |\n\
         | kube-proxy-style resync (30 s) | 15 s | | 30 s |\n\
         | ip-masq-agent-style resync (60 s) | 30 s | | 60 s |\n\
         | Calico Felix-style refresh (180 s) | 90 s | | 180 s |\n\
         | the manual rule | never repaired | | never |\n",
    );
    let tb = sorted(start.to_block.clone());
    let tr = sorted(start.to_ready.clone());
    let ti = sorted(start.installed.clone());
    o.push_str(&format!(
        "\n### Time to block on first start\n\nFrom spawning `apiserver-guard run --backend nftables` (default: the \
         table owned by the daemon) in the node namespace (empty firewall) to the first refused pod connect; median of {start_runs} runs (ms).\n\n\
         | backend | runs | spawn -> first refused pod connect p50 | min | max | spawn -> `ready` log line p50 | \
         daemon-logged `block installed` time p50 |\n|---|---:|---:|---:|---:|---:|---:|\n\
         | nftables | {}{} | {} | {} | {} | {} | {} |\n",
        tb.len(),
        if start.failures > 0 { format!(" ({} never blocked)", start.failures) } else { String::new() },
        f(pct(&tb, 50.0)),
        f(pct(&tb, 0.0)),
        f(pct(&tb, 100.0)),
        f(pct(&tr, 50.0)),
        f(pct(&ti, 50.0))
    ));
    o
}

/// Replaces (or appends) this bench's section of the doc, between markers.
pub fn write_doc(root: &Path, body: &str) -> R<()> {
    let path = root.join(DOC);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# apiserver-guard daemon benchmarks\n\nGenerated by `benches/repair-latency.sh` and `benches/footprint.sh`; \
         each script rewrites only its own section.\n"
            .into()
    });
    let (begin, end) = (format!("<!-- {SECTION}:begin -->"), format!("<!-- {SECTION}:end -->"));
    let section = format!("{begin}\n## Repair latency and time to block\n\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(&path, new).map_err(|e| format!("write {}: {e}", path.display()))
}
