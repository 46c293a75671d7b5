//! The markdown report on stdout: the latency tables per backend, the probe details, and the
//! client-cost tables (this binary vs the pre-discovery baseline), with their cell formats.

use std::thread;

use crate::common::guard_cases::Backend;
use crate::common::{API_PORT, API_V4, CONTAINER_CIDR_V4, OTHER_V4};
use crate::cost::Cost;
use crate::daemon::SETTLE;
use crate::latency::{LatencyResult, CHANGE_LIMIT};
use crate::probe::{PROBE_GAP, TIGHT_FOR};
use crate::shared::start::StartResult;
use crate::shared::stats::{f, pct, sorted};
use crate::Args;

fn size_cell(bytes: Option<u64>) -> String {
    match bytes {
        Some(n) => {
            let digits = n.to_string();
            let mut grouped = String::new();
            for (i, ch) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(ch);
            }
            format!("{grouped} B ({:.2} MiB)", n as f64 / 1_048_576.0)
        }
        None => "n/a".into(),
    }
}

fn ratio(old: f64, new: f64, unit: &str) -> String {
    if old.is_nan() || new.is_nan() || old == 0.0 {
        "n/a".into()
    } else {
        let sep = if unit.is_empty() { "" } else { " " };
        format!("{:+.2}{sep}{unit} (x{:.2})", new - old, new / old)
    }
}

pub fn report(rows: &[(Backend, LatencyResult)], cost: &Cost, args: &Args) -> String {
    let mut o = String::new();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    o.push_str(&format!(
        "This machine has {cores} cores and other work may run on it concurrently (load average in the details \
         table): the daemon, its nft/iptables children, the fake apiserver, the listener and the probe share \
         them, so absolute times are noisy; medians and ratios are the claims.\n\n"
    ));
    o.push_str(&format!(
        "### EndpointSlice change to kernel change\n\n`apiserver-guard run --apiserver auto --container-cidr {CONTAINER_CIDR_V4} \
         --mode tunnel` (release binary) in the node namespace, watching a fake apiserver (HTTPS + token, list/watch, \
         on the node's loopback) through a kubeconfig. The `kubernetes` EndpointSlice alternates between \
         [{API_V4}] and [{OTHER_V4}], port {API_PORT}; {} changes per backend. t0: right before the slice is \
         updated in the fake apiserver's store (the watch is woken at once). Blocked: end of the first connect from \
         the pod to the new address refused by our rule; released: end of the first connect to the old address \
         served again. Milliseconds.\n\n\
         | backend | measure | changes | p50 | p90 | max |\n|---|---|---:|---:|---:|---:|\n",
        args.iterations
    ));
    for (backend, r) in rows {
        let lines: [(&str, &Vec<f64>); 6] = [
            ("**change -> new address blocked** (t1 - t0)", &r.blocked),
            ("**change -> old address released** (t2 - t0)", &r.released),
            ("split: change -> event in the daemon (delivery)", &r.delivery),
            ("split: event in the daemon -> new address blocked", &r.agent_to_kernel),
            ("daemon-logged: event -> reconcile done", &r.logged),
            ("daemon-logged: reconcile (check + update + read-back)", &r.reconcile),
        ];
        for (what, v) in lines {
            let s = sorted(v.clone());
            o.push_str(&format!(
                "| {} | {what} | {} | {} | {} | {} |\n",
                backend.flag(),
                s.len(),
                f(pct(&s, 50.0)),
                f(pct(&s, 90.0)),
                f(pct(&s, 100.0))
            ));
        }
    }
    o.push_str(
        "\nDaemon-logged figures: `discovery: applied ... (X ms after the change arrived)` (the same number as the \
         `apiserver_guard_discovery_last_apply_seconds` gauge) runs from the watch event being folded into the \
         daemon's view to the end of its reconcile; `block installed (Y ms)` is that reconcile alone (check of the \
         ruleset, the one transaction, its read-back). The split: the event reached the daemon at (time the bench \
         read the `applied` line) - X; before that is delivery (the fake apiserver waking its watch, TLS, the kube \
         client decoding the event), after it the daemon's work until the pod is refused. The reconcile goes on after \
         the kernel already holds the change (the read-back), which is why X exceeds the second part.\n\n",
    );
    o.push_str(&format!(
        "Probe: a thread in the pod namespace connects to the new and the old address in turn (each connect closed \
         at once with RST) back to back for {} ms after t0, then every {} ms; between changes the bench waits \
         {} ms and until the daemon runs no tool for 50 ms. On a 2-core machine the back-to-back probe takes a core \
         from the daemon and the fake apiserver while it runs (`--probe-gap-us N` spaces its connects).\n\n\
         | backend | probe connect p50 (ms) | changes with the awaited state already before t0 | changes not \
         done within {} s | probe timeouts | changes applied (metric) | last apply (metric, ms) | load average \
         before / after | wall time (s) |\n|---|---:|---:|---:|---:|---:|---:|---|---:|\n",
        TIGHT_FOR.as_millis(),
        PROBE_GAP.as_millis(),
        SETTLE.as_millis(),
        CHANGE_LIMIT.as_secs()
    ));
    for (backend, r) in rows {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {:.0} |\n",
            backend.flag(),
            f(pct(&sorted(r.probe_ms.clone()), 50.0)),
            r.already,
            r.timeouts,
            r.other,
            r.applied_metric.map_or("n/a".into(), |v| format!("{v:.0}")),
            r.changes,
            r.last_apply_metric.map_or("n/a".into(), |v| f(v * 1e3)),
            r.load_before,
            r.load_after,
            r.seconds
        ));
    }

    // Cost of the Kubernetes client.
    let base = cost.base_label.as_deref();
    o.push_str(&format!(
        "\n### Cost of the Kubernetes client\n\nThe binary under test ({}) next to {}. Release builds \
         (LTO, one codegen unit, stripped). Start-up: spawn (directly in the node namespace, no `ip netns exec`) -> \
         first refused pod connect to {API_V4}:{API_PORT}, nftables backend, empty firewall, {} runs per row \
         interleaved; idle memory: /proc/PID/status {} s after `ready`, median of {} daemon(s) per row.\n\n",
        cost.now_label,
        base.map_or(
            "no baseline: none was built yet, and this run was told not to build one (`--baseline-if-cached`)"
                .to_string(),
            |b| format!("a binary built from the last commit before discovery ({b})")
        ),
        cost.start_runs,
        cost.rss_wait.as_secs(),
        cost.rss_runs
    ));
    let find = |label: &str| cost.variants.iter().find(|(v, _, _)| v.label == label);
    let cols = [find("before, static"), find("now, static"), find("now, discovery")];
    o.push_str(&format!(
        "| | before discovery{}, static policy | now, static policy | now, discovery on (`--apiserver auto`) | \
         now vs before (static) |\n|---|---:|---:|---:|---:|\n",
        base.map_or(String::new(), |b| format!(" ({b})"))
    ));
    o.push_str(&format!(
        "| binary size | {} | {} | (same binary) | {} |\n",
        size_cell(cost.size_base),
        size_cell(cost.size_now),
        match (cost.size_base, cost.size_now) {
            (Some(a), Some(b)) => format!(
                "{:+.2} MiB (x{:.2})",
                (b as f64 - a as f64) / 1_048_576.0,
                b as f64 / a as f64
            ),
            _ => "n/a".into(),
        }
    ));
    o.push_str(&format!(
        "| `--version` wall time p50 ({} runs, ms) | {} | {} | (same binary) | {} |\n",
        cost.version_runs,
        f(cost.version_base),
        f(cost.version_now),
        ratio(cost.version_base, cost.version_now, "ms")
    ));
    type Pick = fn(&StartResult, &(f64, f64, f64)) -> f64;
    let rows2: [(&str, &str, Pick); 5] = [
        ("spawn -> first refused pod connect p50 (ms)", "ms", |s, _| {
            pct(&sorted(s.to_block.clone()), 50.0)
        }),
        ("spawn -> `ready` log line p50 (ms)", "ms", |s, _| {
            pct(&sorted(s.to_ready.clone()), 50.0)
        }),
        ("idle VmRSS (MiB)", "MiB", |_, m| m.0),
        ("peak VmHWM (MiB)", "MiB", |_, m| m.1),
        ("threads", "", |_, m| m.2),
    ];
    for (what, unit, pick) in rows2 {
        let v: Vec<f64> = cols
            .iter()
            .map(|c| c.map_or(f64::NAN, |(_, s, m)| pick(s, m)))
            .collect();
        let cell = |x: f64| {
            if unit.is_empty() && !x.is_nan() {
                format!("{x:.0}")
            } else {
                f(x)
            }
        };
        o.push_str(&format!(
            "| {what} | {} | {} | {} | {} |\n",
            cell(v[0]),
            cell(v[1]),
            cell(v[2]),
            ratio(v[0], v[1], unit)
        ));
    }
    o.push_str(
        "\nWith discovery on, the daemon first lists the EndpointSlices over HTTPS from the fake apiserver on the \
         node's loopback before it installs anything (no cache file), so a real apiserver's round trip comes on \
         top of that column. Threads: as read at that moment (a tokio blocking-pool thread comes and goes).\n\n\
         Details per row (all medians):\n\n\
         | binary, policy | runs | spawn -> refused p50 | min | max | never blocked | daemon-logged `block installed` p50 (ms) | \
         idle VmRSS (MiB) | VmHWM (MiB) | threads |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (v, s, m) in &cost.variants {
        let tb = sorted(s.to_block.clone());
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            v.label,
            tb.len() + s.failures,
            f(pct(&tb, 50.0)),
            f(pct(&tb, 0.0)),
            f(pct(&tb, 100.0)),
            s.failures,
            f(pct(&sorted(s.installed.clone()), 50.0)),
            f(m.0),
            f(m.1),
            m.2
        ));
    }
    o
}
