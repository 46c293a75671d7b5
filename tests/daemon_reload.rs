//! Real-kernel tests of the daemon following its config file, always inside
//! the test's own node namespace: a valid change is applied in one
//! transaction (also between overlapping CIDRs, never opening the block),
//! an invalid one keeps the old policy and is reported (log, metrics,
//! /readyz), SIGHUP reloads, and a reload is never counted as a repair.
//!
//! Reload times are measured and printed with `eprintln!` (`cargo test
//! --test daemon_reload -- --nocapture` shows them); the assertions are on
//! outcomes, with generous liveness deadlines.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::daemon_checks::*;
use common::guard_cases::*;
use common::*;

/// Second pod address, inside 10.0.0.0/24 (the pod's main address 10.0.1.2 is not).
const POD_ALT_V4: &str = "10.0.0.5";

fn config_text(cidr: &str) -> String {
    format!(
        "container_cidr = [\"{cidr}\"]\napiserver = [\"{API_V4}:{API_PORT}\"]\nmode = \"tunnel\"\nbackend = \"nftables\"\naction = \"reject\"\n"
    )
}

fn config_daemon_args(path: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--config".into(),
        path.display().to_string(),
        "--log-format".into(),
        "text".into(),
    ]
}

/// `status --config path --output json`.
fn config_status(node: &Netns, path: &Path) -> GuardRun {
    run_guard(
        node,
        &[
            "status".into(),
            "--config".into(),
            path.display().to_string(),
            "--output".into(),
            "json".into(),
        ],
    )
}

/// Polls `status --config path` until it exits 0; returns how long it took.
#[track_caller]
fn wait_status_ok(node: &Netns, path: &Path, daemon: &Daemon, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = config_status(node, path);
        if r.code == 0 {
            return start.elapsed();
        }
        if start.elapsed() > REPAIR_DEADLINE {
            panic!(
                "{what}: status of {} not 0 within {REPAIR_DEADLINE:?}: {r:?}\ndaemon log:\n{}",
                path.display(),
                daemon.log()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Gives the pod a second address, POD_ALT_V4 (inside 10.0.0.0/24), routed
/// back through the node; checks it reaches an unblocked destination.
fn add_pod_alt_address(topo: &Topology) {
    topo.pod
        .ip_ok(&["addr", "add", &format!("{POD_ALT_V4}/32"), "dev", POD_IF]);
    topo.node
        .ip_ok(&["route", "add", &format!("{POD_ALT_V4}/32"), "dev", NODE_POD_IF]);
    assert_served(
        &curl_from(&topo.pod, POD_ALT_V4, OTHER_V4, API_PORT, MAX_TIME),
        "pod (src POD_ALT_V4) -> OTHER_V4: the second address routes",
    );
}

#[test]
fn config_change_is_followed() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    add_pod_alt_address(&topo);
    let dir = TempDir::new("reload");
    let path = dir.join("config.toml");
    write_atomic(&path, &config_text("10.0.0.0/16"));
    let daemon = Daemon::spawn(node, &config_daemon_args(&path));
    daemon.wait_ready();
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod (10.0.1.2) -> API, /16",
    );
    assert_refused(
        &curl_from(&topo.pod, POD_ALT_V4, API_V4, API_PORT, MAX_TIME),
        "pod (src POD_ALT_V4) -> API, /16",
    );

    // Narrow to 10.0.0.0/24: 10.0.1.2 is outside now, 10.0.0.5 still inside.
    write_atomic(&path, &config_text("10.0.0.0/24"));
    let served_in = poll_served(&topo, None, &daemon, "after narrowing to /24");
    assert_refused(
        &curl_from(&topo.pod, POD_ALT_V4, API_V4, API_PORT, MAX_TIME),
        "pod (src POD_ALT_V4, inside /24) -> API after narrowing",
    );
    wait_status_ok(node, &path, &daemon, "after narrowing");
    assert!(
        daemon.log().contains("config reloaded: applying the new policy"),
        "no reload line in the log:\n{}",
        daemon.log()
    );

    // Widen back to /16: the pod is refused again.
    write_atomic(&path, &config_text("10.0.0.0/16"));
    let refused_in = poll_refused(&topo, &daemon, "after widening back to /16");
    wait_status_ok(node, &path, &daemon, "after widening");
    eprintln!("config reload: narrowed -> pod served after {served_in:?}; widened -> refused after {refused_in:?}");
    let s = scrape(node);
    assert_eq!(sample(&s, CONFIG_OK, &[]), Some(1.0), "{}", show_family(&s, CONFIG_OK));
    assert_eq!(sample(&s, CONFIG_ERRORS, &[]), Some(0.0));
    assert_eq!(daemon.exited(), None, "daemon exited:\n{}", daemon.log());
}

#[test]
fn config_swap_between_overlapping_cidrs_never_opens() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let dir = TempDir::new("overlap");
    let path = dir.join("config.toml");
    write_atomic(&path, &config_text("10.0.0.0/16"));
    let daemon = Daemon::spawn(node, &config_daemon_args(&path));
    daemon.wait_ready();
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API, /16");

    let prober = Prober::start(&topo.pod, API_V4, API_PORT);
    let mut took = Vec::new();
    let swaps = ["10.0.0.0/8", "10.0.0.0/16"].repeat(4);
    for (i, cidr) in swaps.iter().enumerate() {
        write_atomic(&path, &config_text(cidr));
        took.push(wait_status_ok(
            node,
            &path,
            &daemon,
            &format!("swap #{} to {cidr}", i + 1),
        ));
        daemon.wait_log("config reloaded: applying the new policy", i + 1, REPAIR_DEADLINE);
    }
    thread::sleep(Duration::from_millis(200));
    let stats = prober.stop();
    eprintln!(
        "{} overlapping swaps (/16 <-> /8): in sync after {took:?}; prober {}",
        swaps.len(),
        stats.summary()
    );
    assert!(stats.refused > 0, "prober saw no refused attempt: {}", stats.summary());
    assert_one_copy(node, Backend::Nftables, "after the swaps");
    assert_eq!(
        stats.got_through(),
        0,
        "the pod (inside both CIDRs) got through during {} config swaps: {}\ndaemon log:\n{}",
        swaps.len(),
        stats.summary(),
        daemon.log()
    );
}

#[test]
fn invalid_config_keeps_the_old_block() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let dir = TempDir::new("invalid");
    let path = dir.join("config.toml");
    let old = dir.join("old.toml");
    write_atomic(&path, &config_text("10.0.0.0/16"));
    write_atomic(&old, &config_text("10.0.0.0/16"));
    let daemon = Daemon::spawn(node, &config_daemon_args(&path));
    daemon.wait_ready();
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API, valid config");
    let s = scrape(node);
    assert_eq!(
        sample(&s, CONFIG_ERRORS, &[]),
        Some(0.0),
        "{}",
        show_family(&s, CONFIG_ERRORS)
    );
    assert_eq!(sample(&s, CONFIG_OK, &[]), Some(1.0));

    let invalid = [
        (
            "container_cidr = [\"banana\"]",
            config_text("10.0.0.0/16").replace("10.0.0.0/16", "banana"),
        ),
        (
            "an unknown key",
            format!("{}colour = \"blue\"\n", config_text("10.0.0.0/16")),
        ),
    ];
    for (n, (what, text)) in invalid.iter().enumerate() {
        let mark = daemon.log().len();
        write_atomic(&path, text);
        let want = (n + 1) as f64;
        let (s, took) = wait_metrics(
            node,
            &format!("{CONFIG_ERRORS} >= {want} after writing {what}"),
            |s| sample(s, CONFIG_ERRORS, &[]).is_some_and(|v| v >= want),
            REPAIR_DEADLINE,
        );
        eprintln!("invalid config ({what}) reported after {took:?}");
        assert_eq!(
            sample(&s, CONFIG_OK, &[]),
            Some(0.0),
            "{what}: {CONFIG_OK} must be 0 while the file is invalid"
        );
        assert_refused(
            &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
            &format!("pod -> API with {what} in the file (old block must stay)"),
        );
        config_status(node, &old).expect_code(0, &format!("status of the old policy with {what} in the file"));
        let (r, _) = wait_http(node, "/readyz", 200, |_| true, REPAIR_DEADLINE);
        assert!(r.body.contains("ready"), "{r:?}");
        let log = daemon.log_since(mark);
        assert!(
            log.contains("config reload refused"),
            "{what}: no `config reload refused` line:\n{log}"
        );
    }

    // Fixed: the flag comes back to 1; the counter keeps its count (one per invalid version).
    write_atomic(&path, &config_text("10.0.0.0/16"));
    let (s, took) = wait_metrics(
        node,
        &format!("{CONFIG_OK} == 1 after fixing the file"),
        |s| sample(s, CONFIG_OK, &[]) == Some(1.0),
        REPAIR_DEADLINE,
    );
    eprintln!("fixed config accepted after {took:?}");
    assert_eq!(
        sample(&s, CONFIG_ERRORS, &[]),
        Some(2.0),
        "{}",
        show_family(&s, CONFIG_ERRORS)
    );
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API after the fix");
    config_status(node, &path).expect_code(0, "status after the fix");
    assert_eq!(daemon.exited(), None, "daemon exited:\n{}", daemon.log());
}

#[test]
fn sighup_reloads_the_config() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let dir = TempDir::new("sighup");
    let path = dir.join("config.toml");
    write_atomic(&path, &config_text("10.0.0.0/16"));
    let daemon = Daemon::spawn(node, &config_daemon_args(&path));
    daemon.wait_ready();
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API, /16");

    // An invalid file, seen once by the file watch...
    write_atomic(&path, &config_text("banana"));
    wait_metrics(
        node,
        "first refused reload",
        |s| sample(s, CONFIG_ERRORS, &[]) == Some(1.0),
        REPAIR_DEADLINE,
    );
    // ...then SIGHUP with the file unchanged: only the signal can cause a second attempt.
    thread::sleep(Duration::from_millis(1500));
    let s = scrape(node);
    assert_eq!(
        sample(&s, CONFIG_ERRORS, &[]),
        Some(1.0),
        "an unchanged file was reloaded again without a signal"
    );
    let mark = daemon.log().len();
    daemon.signal(libc::SIGHUP);
    let (_, took) = wait_metrics(
        node,
        "a second refused reload after SIGHUP (file unchanged)",
        |s| sample(s, CONFIG_ERRORS, &[]) == Some(2.0),
        REPAIR_DEADLINE,
    );
    eprintln!("SIGHUP with an unchanged invalid file: refused reload counted after {took:?}");
    let log = daemon.log_since(mark);
    assert!(
        log.lines()
            .any(|l| l.contains("config reload refused") && l.contains("reason=\"SIGHUP\"")),
        "no refused reload with reason SIGHUP:\n{log}"
    );
    assert_eq!(daemon.exited(), None, "SIGHUP ended the daemon:\n{}", daemon.log());

    // Edit + SIGHUP: the new policy is applied and the signal's reload is logged.
    let mark = daemon.log().len();
    write_atomic(&path, &config_text("10.0.0.0/24"));
    daemon.signal(libc::SIGHUP);
    let served_in = poll_served(&topo, None, &daemon, "edit to /24 + SIGHUP");
    wait_status_ok(node, &path, &daemon, "edit to /24 + SIGHUP");
    daemon.wait_log("reason=\"SIGHUP\"", 2, REPAIR_DEADLINE);
    let log = daemon.log_since(mark);
    eprintln!("edit + SIGHUP: pod served after {served_in:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("config reloaded") && l.contains("reason=\"SIGHUP\"")),
        "no successful reload with reason SIGHUP:\n{log}"
    );
    let s = scrape(node);
    assert_eq!(sample(&s, CONFIG_OK, &[]), Some(1.0));
    assert_eq!(daemon.exited(), None, "daemon exited:\n{}", daemon.log());
}

#[test]
fn valid_reload_is_not_counted_as_a_repair() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let dir = TempDir::new("notrepair");
    let path = dir.join("config.toml");
    write_atomic(&path, &config_text("10.0.0.0/16"));
    let daemon = Daemon::spawn(node, &config_daemon_args(&path));
    daemon.wait_ready();
    let before = scrape(node);
    assert_eq!(total(&before, REPAIRS), 0.0, "{}", show_family(&before, REPAIRS));

    write_atomic(&path, &config_text("10.0.0.0/24"));
    wait_status_ok(node, &path, &daemon, "after the reload");
    let (s, _) = wait_metrics(
        node,
        "a reconcile with trigger=reload",
        |s| sample(s, "apiserver_guard_reconciles_total", &[("trigger", "reload")]).is_some_and(|v| v >= 1.0),
        REPAIR_DEADLINE,
    );
    let log = daemon.log();
    let warn: Vec<&str> = log.lines().filter(|l| l.contains(REPAIR_LINE)).collect();
    assert!(
        total(&s, REPAIRS) == 0.0 && warn.is_empty(),
        "an operator's config change was reported as drift repair: {}; WARN lines: {warn:#?}",
        show_family(&s, REPAIRS)
    );
}

/// Polls `/attempts` until it has a row from `src` (panics after REPAIR_DEADLINE).
#[track_caller]
fn wait_attempt_from(node: &Netns, daemon: &Daemon, src: &str, what: &str) {
    wait_attempt_row(
        node,
        daemon,
        &format!("{what}: an attempt from {src}"),
        REPAIR_DEADLINE,
        |r| r["source"] == src,
    );
}

#[test]
fn a_log_group_change_moves_the_attempts_reader_with_the_rules() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    add_pod_alt_address(&topo);
    let dir = TempDir::new("reload-log-group");
    let path = dir.join("config.toml");
    write_atomic(&path, &format!("{}log_group = 1443\n", config_text("10.0.0.0/16")));
    let daemon = Daemon::spawn(node, &config_daemon_args(&path));
    daemon.wait_ready();
    wait_attempt_log_bound(node);
    assert_eq!(attempts_page(node)["group"], 1443);

    // Another group: the rules log there and the reader reads there.
    write_atomic(&path, &format!("{}log_group = 1500\n", config_text("10.0.0.0/16")));
    daemon.wait_log("log_group changed (1443 -> 1500)", 1, REPAIR_DEADLINE);
    wait_attempt_log_bound(node);
    assert_eq!(attempts_page(node)["group"], 1500);
    assert!(
        node.run_ok(&["nft", "list", "table", "inet", "apiserver_guard"])
            .contains("group 1500"),
        "the rules log to the new group"
    );
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API, group 1500");
    wait_attempt_from(node, &daemon, POD_V4, "after the change to group 1500");

    // Off: no log rules, no reader, nothing claims to be bound.
    write_atomic(&path, &format!("{}log_group = \"off\"\n", config_text("10.0.0.0/16")));
    daemon.wait_log("log_group changed (1500 -> off)", 1, REPAIR_DEADLINE);
    let s = scrape(node);
    assert_ne!(
        sample(&s, "apiserver_guard_attempt_log_bound", &[]),
        Some(1.0),
        "no reader claims to be bound with logging off"
    );
    assert_eq!(attempts_page(node)["group"], serde_json::Value::Null);

    // And back on: a reader again, and the next attempt is reported.
    write_atomic(&path, &format!("{}log_group = 1443\n", config_text("10.0.0.0/16")));
    daemon.wait_log("log_group changed (off -> 1443)", 1, REPAIR_DEADLINE);
    wait_attempt_log_bound(node);
    assert_refused(
        &curl_from(&topo.pod, POD_ALT_V4, API_V4, API_PORT, MAX_TIME),
        "pod (alt address) -> API, group 1443 again",
    );
    wait_attempt_from(node, &daemon, POD_ALT_V4, "after logging was turned back on");
}
