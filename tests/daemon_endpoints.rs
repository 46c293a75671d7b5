//! Real-kernel tests of what the daemon reports, always inside the test's
//! own node namespace: /healthz, /readyz following the first install, drift
//! and repair (naming the drifted object), /metrics parsing and counting
//! repairs, and the periodic `verify` probe exported and gating readiness.
//!
//! Durations are printed with `eprintln!` (`cargo test --test
//! daemon_endpoints -- --nocapture` shows them); the assertions are on
//! outcomes, with generous liveness deadlines.

mod common;

use std::thread;
use std::time::Duration;

use common::daemon_cases::*;
use common::daemon_checks::*;
use common::guard_cases::*;
use common::*;

#[test]
fn readyz_follows_install_and_drift() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let b = Backend::IptablesLegacy;
    let policy = tunnel_v4_policy(b);
    let switch = FailSwitch::new("iptables-legacy-restore");
    switch.fail();
    let bin = switch.bin_dir();
    let daemon = Daemon::spawn_with_path(node, &daemon_args(&policy, &resync_flags(b)), Some(&bin));

    // Before the first apply: up, not ready, retrying.
    let (r, _) = wait_http(node, "/readyz", 503, |_| true, READY_TIMEOUT);
    assert!(r.body.starts_with("not ready"), "/readyz before the first apply: {r:?}");
    daemon.wait_log("check/repair failed", 2, Duration::from_secs(10));
    let (r, _) = wait_http(node, "/readyz", 503, |_| true, REPAIR_DEADLINE);
    eprintln!("/readyz while the first apply fails: {} {:?}", r.code, r.body.trim());
    assert!(
        !daemon.log().contains(READY_LINE),
        "ready although apply fails:\n{}",
        daemon.log()
    );
    let h = http_get(node, "/healthz").expect("/healthz answers");
    assert_eq!(h.code, 200, "/healthz while retrying: {h:?}");
    let s = scrape(node);
    assert_eq!(sample(&s, "apiserver_guard_ready", &[]), Some(0.0));
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API while the first apply fails (the shim really fails)",
    );

    // The tool works again: the retry (with backoff) installs the block.
    switch.pass();
    let (_, took) = wait_http(node, "/readyz", 200, |_| true, Duration::from_secs(15));
    eprintln!("/readyz 200 {took:?} after the tool works again");
    daemon.wait_log(READY_LINE, 1, REPAIR_DEADLINE);
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API once ready");
    policy.assert_in_sync(node, "status once ready");

    // Drift that cannot be repaired yet: not ready, and the reason names our chain.
    let repairs_before = total(&scrape(node), REPAIRS);
    switch.fail();
    ipt_ok(node, false, "legacy", &["-F", IPT_CHAIN]);
    let failed_before = daemon.log().matches("check/repair failed").count();
    let (_, took) = wait_http(node, "/readyz", 503, |_| true, REPAIR_DEADLINE);
    // Past the first failed repair (not the instant between check and repair):
    // what an operator or a probe sees while the drift lasts.
    daemon.wait_log("check/repair failed", failed_before + 2, REPAIR_DEADLINE);
    let mut reasons = Vec::new();
    for _ in 0..5 {
        let r = http_get(node, "/readyz").expect("/readyz answers");
        assert_eq!(r.code, 503, "/readyz while drifted and unrepairable: {r:?}");
        reasons.push(r.body.trim().to_owned());
        thread::sleep(Duration::from_millis(100));
    }
    reasons.dedup();
    eprintln!("/readyz while drifted (503 {took:?} after the flush), reasons seen: {reasons:?}");
    let s = scrape(node);
    assert_eq!(sample(&s, "apiserver_guard_in_sync", &[]), Some(0.0));
    assert_eq!(sample(&s, "apiserver_guard_ready", &[]), Some(0.0));
    assert!(
        total(&s, "apiserver_guard_reconcile_errors_total") >= 1.0,
        "failed repair not counted"
    );

    // Repairable again: ready, repaired, counted.
    switch.pass();
    let (_, took) = wait_http(node, "/readyz", 200, |_| true, REPAIR_DEADLINE);
    eprintln!("/readyz 200 again {took:?} after the tool works again");
    let s = scrape(node);
    assert!(
        total(&s, REPAIRS) > repairs_before,
        "repair not counted: {}",
        show_family(&s, REPAIRS)
    );
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API after the repair",
    );
    policy.assert_in_sync(node, "status after the repair");

    // Last, so that every other check above has run even when this fails.
    assert!(
        reasons.iter().all(|r| r.contains(IPT_CHAIN)),
        "/readyz while our chain is flushed and cannot be repaired should name the drifted object \
         ({IPT_CHAIN}), not only the failing tool; got: {reasons:?}"
    );
}

#[test]
fn metrics_parse_and_count_repairs() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let b = Backend::Nftables;
    let policy = tunnel_v4_policy(b);
    let daemon = Daemon::spawn(
        node,
        &daemon_args(&policy, &["--resync-interval", "1s", "--table-ownership", "off"]),
    );
    daemon.wait_ready();
    let h = http_get(node, "/healthz").expect("/healthz answers");
    assert_eq!(h.code, 200, "/healthz: {h:?}");
    let (r, _) = wait_http(node, "/readyz", 200, |_| true, REPAIR_DEADLINE);
    assert!(r.body.contains("ready"), "{r:?}");
    assert_eq!(http_get(node, "/nope").map(|r| r.code), Some(404));

    // Blocked traffic, then a timer resync reads the counters back.
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API");
    let (s, _) = wait_metrics(
        node,
        "blocked packets counted",
        |s| total(s, "apiserver_guard_blocked_packets_total") >= 1.0,
        REPAIR_DEADLINE,
    );
    let all: Vec<String> = s
        .samples
        .iter()
        .map(|x| format!("{}{} {:?}", x.metric, x.labels, x.value))
        .collect();
    eprintln!("/metrics parsed:\n{}", all.join("\n"));
    for (name, want) in [
        ("apiserver_guard_in_sync", 1.0),
        ("apiserver_guard_ready", 1.0),
        (CONFIG_ERRORS, 0.0),
        (CONFIG_OK, 1.0),
    ] {
        assert_eq!(sample(&s, name, &[]), Some(want), "{name}");
    }
    assert_eq!(
        sample(&s, "apiserver_guard_backend_info", &[("backend", "nftables")]),
        Some(1.0)
    );
    assert!(sample(&s, "apiserver_guard_reconciles_total", &[("trigger", "timer")]).is_some_and(|v| v >= 1.0));
    assert!(
        sample(&s, "apiserver_guard_last_successful_reconcile_timestamp_seconds", &[]).is_some_and(|v| v > 1.0e9),
        "last successful reconcile timestamp"
    );
    let hist = s
        .samples
        .iter()
        .find(|x| x.metric == "apiserver_guard_reconcile_duration_seconds")
        .unwrap_or_else(|| panic!("no reconcile duration histogram: {all:?}"));
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
            assert!(inf.count >= 1.0, "histogram: {buckets:?}");
        }
        other => panic!("reconcile duration is not a histogram: {other:?}"),
    }
    assert_eq!(total(&s, REPAIRS), 0.0, "repairs before any drift");

    node.run_ok(&["nft", "flush", "table", "inet", "apiserver_guard"]);
    let (s, took) = wait_metrics(node, "a repair counted", |s| total(s, REPAIRS) >= 1.0, REPAIR_DEADLINE);
    eprintln!("after nft flush table: {} ({took:?})", show_family(&s, REPAIRS));
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API after the repair",
    );
}

/// `--probe-interval`: the daemon runs `verify` from the pod namespace and
/// exports the verdict; with `--ready-requires-probe`, /readyz follows it.
/// The apiserver going silent turns the verdict inconclusive (never "pass"),
/// which /readyz shows as not ready.
#[test]
fn periodic_probe_is_exported_and_gates_readiness() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(Backend::Nftables);
    let pod_ns = topo.pod.path();
    let extra = [
        "--probe-interval",
        "1s",
        "--ready-requires-probe",
        "--probe-netns",
        pod_ns.as_str(),
    ];
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &extra));
    daemon.wait_ready();
    let (s, took) = wait_metrics(
        node,
        "a passing probe",
        |s| sample(s, "apiserver_guard_probe_ok", &[]) == Some(1.0),
        Duration::from_secs(10),
    );
    eprintln!("first passing probe after {took:?}");
    let endpoint = endpoint(API_V4, Some(API_PORT));
    assert_eq!(
        sample(
            &s,
            "apiserver_guard_probe_reachable",
            &[("endpoint", &endpoint), ("from", "container")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &s,
            "apiserver_guard_probe_reachable",
            &[("endpoint", &endpoint), ("from", "node")]
        ),
        Some(1.0)
    );
    assert!(total(&s, "apiserver_guard_probe_runs_total") >= 1.0);
    let (r, _) = wait_http(node, "/readyz", 200, |_| true, REPAIR_DEADLINE);
    assert!(r.body.contains("ready"), "{r:?}");

    // The apiserver refuses everyone (a firewall in the apiserver's own namespace):
    // the probe cannot prove the block any more.
    topo.api.run_ok(&["nft", "add", "table", "inet", "down"]);
    topo.api.run_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "down",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    topo.api.run_ok(&[
        "nft", "add", "rule", "inet", "down", "in", "tcp", "dport", "5443", "reject", "with", "tcp", "reset",
    ]);
    let (r, took) = wait_http(node, "/readyz", 503, |b| b.contains("probe"), Duration::from_secs(10));
    eprintln!("/readyz turned 503 after {took:?}: {}", r.body.trim());
    let s = scrape(node);
    assert_eq!(sample(&s, "apiserver_guard_probe_ok", &[]), Some(0.0));
    assert!(
        daemon.log().contains("probe"),
        "verdict change logged:\n{}",
        daemon.log()
    );
}
