//! The markdown of the table-ownership bench: the foreign flush/delete table, the apply-cost
//! table, and each target of issue 12 with the figure and whether it was met.

use crate::apply_cost::ApplyCost;
use crate::flush::FlushRow;
use crate::shared::stats::{f, pct, sorted};
use crate::Args;

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub fn flush_report(rows: &[FlushRow], a: &Args) -> String {
    let mut o = format!(
        "### Foreign flush and delete against the daemon's table\n\n\
         `apiserver-guard run --mode tunnel --backend nftables` with its defaults (table ownership auto: on this \
         kernel the table carries flags owner|persist on the daemon's netlink socket) in the node namespace; \
         a thread in the pod namespace connects to 192.168.50.10:5443 back to back (each connect closed at once \
         with RST) from before the first foreign command to after the last; another process in the node \
         namespace (exec'd there directly) runs each command {} times in a row. Served = a connect that \
         completed its handshake, i.e. the block was not there. Target: 0 served.\n\n\
         | foreign command | commands | exit 0 / failed | the command said | all commands took (s) | one command p50 / max (ms) | pod connects | refused | **served** | other (no answer in 100 ms) | daemon repairs logged / errors | table afterwards |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        a.rounds
    );
    for r in rows {
        let p = sorted(r.per_command_ms.clone());
        let said = if r.failure.is_empty() {
            "(nothing)".to_string()
        } else {
            format!("`{}`", r.failure.replace('|', "\\|").replace('`', "'"))
        };
        let after = match (r.unchanged, r.owned_after) {
            (true, true) => "unchanged, owned".to_string(),
            (u, o) => format!(
                "{}, {}",
                if u { "unchanged" } else { "**changed**" },
                if o { "owned" } else { "**not owned**" }
            ),
        };
        o.push_str(&format!(
            "| {} | {} | {} / {} | {said} | {:.1} | {} / {} | {} | {} | **{}** | {} | {} / {} | {after} |\n",
            r.label,
            r.commands,
            r.exit_ok,
            r.exit_failed,
            r.total_s,
            f(pct(&p, 50.0)),
            f(pct(&p, 100.0)),
            r.probe.attempts,
            r.probe.refused,
            r.probe.served,
            r.probe.other,
            r.repairs_logged,
            r.errors_logged
        ));
    }
    o.push_str(
        "\n\"Table afterwards\": `nft -s -a list table inet apiserver_guard` (handles included; the sources the log rules' meter learns are state, left out) before and after the \
         commands, and whether it still names the daemon as owner. `nft flush ruleset` exits 0 because it \
         flushes everything it may (here: nothing else) and skips an owned table.\n",
    );
    o
}

fn row(o: &mut String, what: &str, v: &[f64], target: &str) {
    let s = sorted(v.to_vec());
    o.push_str(&format!(
        "| {what} | {} | {} | {} | {} | {} | {target} |\n",
        s.len(),
        f(pct(&s, 50.0)),
        f(pct(&s, 99.0)),
        f(pct(&s, 0.0)),
        f(pct(&s, 100.0))
    ));
}

fn p50(v: &[f64]) -> f64 {
    pct(&sorted(v.to_vec()), 50.0)
}

pub fn apply_report(c: &ApplyCost) -> String {
    let mut o = format!(
        "### Apply cost: in process and as a process\n\n\
         One network namespace of the bench holding {} foreign kube-proxy-like iptables-nft rules (half in \
         FORWARD, half in a KUBE-SERVICES chain). In process: the library's `Nftables` backend \
         (`Backend::apply`) on a thread inside the namespace; the policy is the one `apiserver-guard apply {}` \
         installs (checked: the in-process `status` finds it in sync). As a process: spawn to exit, from a thread \
         inside the namespace (no `ip netns exec`); cold = our table removed before each run (untimed). The \
         element update keeps the exempt (allow-list) set as the daemon does for a changing allow-list and \
         adds or removes 10.0.1.2 alternately; each was checked to be an element-only plan, and the handles of \
         the table, its sets, chains and rules were the same after the last update as before the first. \
         Milliseconds.\n\n\
         | measure | runs | p50 | p99 | min | max | target |\n|---|---:|---:|---:|---:|---:|---|\n",
        c.foreign,
        crate::POLICY.join(" ")
    );
    let el99 = pct(&sorted(c.element.clone()), 99.0);
    row(
        &mut o,
        "allow-list element update, in process (one exempt element added or removed)",
        &c.element,
        &format!("<= 2 ms: {} (p99 {} ms)", met(el99 <= 2.0), f(el99)),
    );
    row(&mut o, "apply, nothing to change, in process", &c.noop_in_process, "");
    row(
        &mut o,
        "apply cold, in process (new netlink socket, read, one batch)",
        &c.cold_in_process,
        "",
    );
    row(&mut o, "`apiserver-guard apply` cold, process", &c.cold_process, "");
    row(&mut o, "`apiserver-guard status`, process", &c.status_process, "");
    row(&mut o, "`apiserver-guard --version`, process", &c.version_process, "");
    let (cold, status, version) = (p50(&c.cold_process), p50(&c.status_process), p50(&c.version_process));
    let beyond = cold - version;
    let ratio = status / version;
    o.push_str(&format!(
        "\n| derived (p50s above) | figure | target |\n|---|---:|---|\n\
         | `apply` cold beyond process start (`apply` cold - `--version`) | {} ms | <= 5 ms: {} |\n\
         | `status` / `--version` at {} foreign rules | {:.1} x | <= 3 x: {} |\n",
        f(beyond),
        met(beyond <= 5.0),
        c.foreign,
        ratio,
        met(ratio <= 3.0)
    ));
    o
}
