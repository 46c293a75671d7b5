//! The markdown tables of the attempt-log bench: the floods (reported vs made, connect -> log
//! line, the daemon's CPU and memory, each target met or missed) and the data-path cost of the log
//! statement (connect rates with and without the log rules: medians, min-max, ratio).

use crate::datapath::RateRow;
use crate::flood::FloodRow;
use crate::shared::stats::{f, pct, sorted};
use crate::Args;

const P99_TARGET_MS: f64 = 100.0;
const CPU_TARGET_PCT: f64 = 5.0;
const RSS_TARGET_MIB: f64 = 20.0;

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub fn flood_report(rows: &[FloodRow], args: &Args) -> String {
    let mut o = format!(
        "Flood: one pod thread connects to the blocked apiserver back to back for {} s (refused by our rule), from 1 \
         source address, then round robin from 250; meanwhile another tries once from a fresh source address every \
         {} ms (starting 1.5 s in). Each flood runs against a fresh daemon with its defaults. \"Reported\" is the \
         sum of the `count` of the flooding sources' rows in `apiserver-guard attempts`; the kernel's budget is \
         sources x (burst 20 + 10/s x seconds) (the meter of connects: a connect over its allowance is refused unlogged and reaches no other meter), capped by what the flooding pod's interface may log (new sources: \
         burst 400 + 200/s; known sources: burst 2000 + 1000/s). Connect -> log line: from just before the single attempt's \
         connect to the moment the bench read the daemon's `blocked attempt: SRC:...` line on its stderr.\n\n",
        args.flood_seconds, args.single_every_ms
    );
    o.push_str(
        "| flooding sources | flood connects made | reported (kernel budget) | single attempts: made / in the table / own log line | connect -> log line p50 / p99 (max), ms | daemon CPU, % of a core | RSS / peak, MiB | socket overflows |\n",
    );
    o.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let l = &r.latency_ms;
        o.push_str(&format!(
            "| {} | {} ({:.0}/s) | {} ({}) | {} / {} / {} | {} / {} ({}) | {:.2} | {:.1} / {:.1} | {} |\n",
            r.sources,
            r.made,
            r.made as f64 / r.seconds,
            r.reported,
            r.budget,
            r.singles_made,
            r.singles_in_table,
            r.singles_logged,
            f(pct(l, 50.0)),
            f(pct(l, 99.0)),
            f(l.last().copied().unwrap_or(f64::NAN)),
            r.cpu_pct,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.overflows
        ));
    }
    let worst_p99 = rows.iter().map(|r| pct(&r.latency_ms, 99.0)).fold(0.0, f64::max);
    let worst_cpu = rows.iter().map(|r| r.cpu_pct).fold(0.0, f64::max);
    let one_cpu = rows.iter().find(|r| r.sources == 1).map_or(f64::NAN, |r| r.cpu_pct);
    let worst_rss = rows.iter().map(|r| r.hwm_kib as f64 / 1024.0).fold(0.0, f64::max);
    let all_single = rows.iter().all(|r| r.singles_in_table == r.singles_made);
    o.push_str(&format!(
        "\nTargets: connect -> log line p99 <= {P99_TARGET_MS} ms: {} (worst {} ms); daemon CPU <= {CPU_TARGET_PCT} % \
         of a core at the kernel rate limit: {} (one flooding pod: {:.2} %; 250 sources, each at its limit: {:.2} %); \
         RSS <= {RSS_TARGET_MIB} MiB: {} (peak {:.1} MiB). Every single attempt in the table during the flood: {}.",
        met(worst_p99 <= P99_TARGET_MS),
        f(worst_p99),
        met(one_cpu <= CPU_TARGET_PCT),
        one_cpu,
        worst_cpu,
        met(worst_rss <= RSS_TARGET_MIB),
        worst_rss,
        if all_single { "yes" } else { "**no**" }
    ));
    for r in rows.iter().filter(|r| !r.suppressed_lines.is_empty()) {
        o.push_str(&format!(" {} sources: {}.", r.sources, r.suppressed_lines));
    }
    o
}

fn median(v: &[f64]) -> f64 {
    pct(&sorted(v.to_vec()), 50.0)
}

fn range(v: &[f64]) -> String {
    let s = sorted(v.to_vec());
    match (s.first(), s.last()) {
        (Some(a), Some(b)) => format!("{a:.0}-{b:.0}"),
        _ => "n/a".into(),
    }
}

pub fn datapath_report(rows: &[RateRow], args: &Args) -> String {
    let mut o = format!(
        "Data-path cost of the log statement on traffic that is not blocked: the pod's served connects per second \
         (one thread, back to back, RST-closed), {} s per measurement, {} rounds interleaved (a fresh daemon per \
         measurement), with the log rules (default) and with `--log-group off`. Median (min-max).\n\n",
        args.rate_seconds, args.rounds
    );
    o.push_str(
        "| traffic | log rules, connects/s | `--log-group off`, connects/s | log / off (medians) | rounds the log rules were faster | not served |\n",
    );
    o.push_str("|---|---|---|---|---|---|\n");
    for r in rows {
        let (on, off) = (median(&r.logged), median(&r.off));
        let faster = r.logged.iter().zip(&r.off).filter(|(a, b)| a > b).count();
        o.push_str(&format!(
            "| {} | {:.0} ({}) | {:.0} ({}) | {:.3} | {faster} of {} | {} |\n",
            r.traffic,
            on,
            range(&r.logged),
            off,
            range(&r.off),
            on / off,
            r.logged.len().min(r.off.len()),
            r.not_served
        ));
    }
    o.push_str(
        "\nRead a ratio within the min-max spread of either column as noise: the machine is shared and both \
         client and forwarding are CPU-bound here. In nftables a logged block's match is paid once (the rule in \
         `guard` jumps to a chain that logs, then decides): unmatched traffic pays what it pays without logging; \
         audited traffic also pays the jump, the per-source meter and the counter of the log rule.",
    );
    o
}
