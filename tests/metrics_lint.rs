//! `/metrics` as Prometheus's own linter sees it: `promtool check metrics`
//! (HELP on every family, counters ending in `_total`, base units, no
//! reserved or camelCase names) on the text a real daemon serves, after a
//! repair, a blocked attempt and a periodic probe made the families that
//! appear only then show, and on a rendering with every family filled in
//! (discovery, probe, attempts), which needs no kernel. Both also hold the
//! alerting rules (`packaging/prometheus/apiserver-guard-rules.yml`) to the
//! metrics they read: each one is exported.
//!
//! promtool ships in Debian's `prometheus` package (`scripts/install-deps.sh`).
//! Without it the tests say so and pass, except under `CI=true`, where they
//! fail: CI must run the check.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use apiserver_guard::daemon::discovery_status::DiscoveryStatus;
use apiserver_guard::daemon::metrics::{render, Metrics};
use apiserver_guard::discovery::SourceHealth;
use apiserver_guard::verify::outcome::Expect;
use apiserver_guard::verify::report::Report;
use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const RULES: &str = "packaging/prometheus/apiserver-guard-rules.yml";

/// promtool on the PATH; None (said on stderr) where it is missing, a
/// failure under `CI=true`.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "promtool is not installed, and CI must run `promtool check metrics`: scripts/install-deps.sh installs it (Debian package prometheus)"
        );
        eprintln!("promtool not installed (scripts/install-deps.sh installs it): `promtool check metrics` skipped");
    }
    found
}

/// `promtool check metrics` on `text`: passed, and what it said.
fn check_metrics(promtool: &Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the metrics");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[track_caller]
fn assert_lint_clean(promtool: &Path, text: &str, what: &str) {
    let (ok, said) = check_metrics(promtool, text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics on {what}:\n{said}\n--- the metrics:\n{text}"
    );
}

/// The `apiserver_guard_*` metrics the alerting rules read.
fn metrics_the_rules_read() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RULES);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    for expr in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = expr;
        while let Some(i) = rest.find("apiserver_guard_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    // Annotations name metrics too (probe_outcome, probe_reachable): all must exist.
    assert!(names.len() >= 8, "{RULES}: found only {names:?}");
    names
}

/// Names of the samples in `text`.
fn samples(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Names of the families in `text` (their HELP lines), with or without samples.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// Every family the daemon can export, filled in: discovery with a healthy
/// and a failing source and the taint, a failed probe, attempts of two
/// namespaces and actions, repairs, the reader's counters.
fn every_family() -> String {
    let mut m = Metrics::new("0.1.0");
    m.backend = "nftables".into();
    m.started = true;
    m.in_sync = true;
    m.table_owned = true;
    m.accepts_source_routes = Some(true);
    m.repairs.insert("table_missing".into(), 2);
    m.repair_conflicts = 4;
    m.reconciles.insert("event".into(), 5);
    m.reconciles.insert("deferred".into(), 4);
    m.reconciles.insert("timer".into(), 9);
    m.reconcile_errors = 1;
    m.observe_duration(Duration::from_millis(3));
    m.last_success_unix = 1_795_880_400.5;
    m.blocked_packets = 12;
    m.blocked_bytes = 720;
    m.config_errors = 1;
    m.listener_bind_failures = 1;
    let mut r = Report::failed(Expect::Blocked, false, 2.0, true, "no pod namespace".into());
    r.summarise();
    m.probe = Some(r);
    m.probe_runs.insert("pass", 3);
    m.probe_runs.insert("error", 1);
    m.probe_last_unix = 1_795_880_401.25;
    let mut d = DiscoveryStatus {
        apiserver_endpoints: 2,
        allowed_pod_ips: 3,
        pod_cidrs: 1,
        changes_applied: 4,
        changes_refused: 1,
        last_apply_seconds: 0.012,
        node_taint: Some(("apiserver-guard.io/not-ready".into(), true)),
        ..Default::default()
    };
    d.sources.insert(
        "pods",
        SourceHealth {
            synced: true,
            up: true,
            ..Default::default()
        },
    );
    d.sources.insert(
        "endpointslices",
        SourceHealth {
            synced: true,
            up: false,
            errors: 3,
            last_error: "connection refused".into(),
        },
    );
    m.discovery = Some(d);
    m.attempts.group = Some(1443);
    m.attempts.bound = true;
    m.attempts.totals.insert(("team-a".into(), "blocked"), 2);
    m.attempts.totals.insert((String::new(), "audited"), 1);
    m.attempts.overflows = 1;
    m.attempts.lines_suppressed = 4;
    m.attempts.ignore("foreign_prefix");
    m.attempts.ignore("truncated");
    render(&m)
}

#[test]
fn every_family_the_daemon_can_export_passes_promtool_check_metrics() {
    let text = every_family();
    // A failed probe has no endpoints: its per-endpoint families have no samples.
    let have: BTreeSet<String> = samples(&text).union(&families(&text)).cloned().collect();
    let missing: Vec<_> = metrics_the_rules_read()
        .into_iter()
        .filter(|n| !have.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the alerting rules read {missing:?}, which the daemon does not export:\n{text}"
    );
    let Some(promtool) = promtool() else { return };
    assert_lint_clean(&promtool, &text, "every family, filled in");
    // The check can fail: a counter without `_total` and a family without HELP.
    let bad = format!("{text}# TYPE apiserver_guard_bad_repairs counter\napiserver_guard_bad_repairs 1\n");
    let (ok, said) = check_metrics(&promtool, &bad);
    assert!(
        !ok && said.contains("apiserver_guard_bad_repairs"),
        "promtool let a counter without _total or HELP through: {said}"
    );
}

#[test]
fn a_running_daemons_metrics_pass_promtool_check_metrics() {
    if !can_run() {
        return;
    }
    let Some(promtool) = promtool() else { return };
    let topo = Topology::new();
    let node = &topo.node;
    let policy = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    );
    let pod_ns = topo.pod.path();
    let mut extra = editable_flags(Backend::Nftables);
    extra.extend(["--probe-interval", "1s", "--probe-netns", pod_ns.as_str()]);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &extra));
    daemon.wait_ready();
    // The listener is a task of its own: it may come up just after the block.
    wait_http(node, "/metrics", 200, |_| true, READY_TIMEOUT);

    // What makes the families that start empty show: a repair, an attempt, a probe.
    node.run_ok(&["nft", "delete", "table", "inet", "apiserver_guard"]);
    daemon.wait_log(REPAIR_LINE, 1, REPAIR_DEADLINE);
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, 5), "pod -> API_V4 (blocked)");
    let (_, took) = wait_metrics(
        node,
        "a repair, an attempt and a passing probe",
        |s| {
            total(s, "apiserver_guard_repairs_total") >= 1.0
                && total(s, "apiserver_guard_attempts_total") >= 1.0
                && sample(s, "apiserver_guard_probe_ok", &[]) == Some(1.0)
        },
        Duration::from_secs(10),
    );
    eprintln!("every family filled after {took:?}");

    let r = http_get(node, "/metrics").expect("/metrics answers");
    assert_eq!(r.code, 200, "/metrics: {r:?}");
    assert_lint_clean(&promtool, &r.body, "a running daemon's /metrics");
    let have = samples(&r.body);
    // Discovery is off here: its family is checked by the test above.
    let missing: Vec<_> = metrics_the_rules_read()
        .into_iter()
        .filter(|n| !n.starts_with("apiserver_guard_discovery_") && !have.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the alerting rules read {missing:?}, which the running daemon does not export:\n{}",
        r.body
    );
}
