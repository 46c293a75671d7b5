//! Real-kernel tests of the daemon's life, `apiserver-guard run`, always
//! inside the test's own node namespace: bad input exits 2 at once without
//! touching anything; SIGKILL/restart loops never leave a moment where the
//! pod gets through, nor duplicate objects; SIGTERM and SIGINT end
//! fail-closed (the block stays), `--cleanup-on-exit` restores the firewall.
//!
//! Restart times are measured and printed with `eprintln!` (`cargo test
//! --test daemon_lifecycle -- --nocapture` shows them); the assertions are on
//! outcomes, with generous liveness deadlines.

mod common;

use std::thread;
use std::time::Duration;

use common::daemon_cases::*;
use common::daemon_checks::*;
use common::guard_cases::*;
use common::*;

// Bad input: exit 2 at once, nothing touched.

/// Starts `run` with `args`, waits (<= 10 s) for it to exit; returns code and log.
fn run_to_exit(node: &Netns, args: &[String]) -> (Option<i32>, String, Duration) {
    let d = Daemon::spawn(node, args);
    let status = d.wait_exit(Duration::from_secs(10));
    let elapsed = d.started.elapsed();
    let log = d.log();
    match status {
        Some(s) => (s.code(), log, elapsed),
        None => {
            d.signal_and_wait(libc::SIGKILL);
            panic!("`run {args:?}` still running after 10 s; log:\n{log}");
        }
    }
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    load_foreign_state(node);
    let before = firewall_snapshot(node);
    let dir = TempDir::new("badinput");
    let unknown_key = dir.join("unknown.toml");
    write_atomic(&unknown_key, "resync = \"10s\"\n");
    let bad_interval = dir.join("interval.toml");
    write_atomic(&bad_interval, "resync_interval = \"10 parsecs\"\n");
    let good = tunnel_v4_policy(Backend::Nftables);

    let with = |flag: &str, value: &str| -> Vec<String> {
        let mut a = daemon_args(&good, &[]);
        match a.iter().position(|x| x == flag) {
            Some(i) => a[i + 1] = value.to_owned(),
            None => a.extend([flag.to_owned(), value.to_owned()]),
        }
        a
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("--container-cidr banana", with("--container-cidr", "banana")),
        ("--container-cidr 0.0.0.0/0", with("--container-cidr", "0.0.0.0/0")),
        (
            "--container-cidr with host bits",
            with("--container-cidr", "10.0.0.1/16"),
        ),
        (
            "--mode both --container-cidr holding the node's own source address (lockout)",
            {
                let mut a = with("--container-cidr", "192.168.50.0/31");
                let i = a.iter().position(|x| x == "--mode").expect("--mode in args");
                a[i + 1] = "both".to_owned();
                a
            },
        ),
        ("--apiserver banana", with("--apiserver", "banana")),
        (
            "--apiserver inside the container CIDR",
            with("--apiserver", "10.0.0.7:443"),
        ),
        ("--resync-interval 1ms", with("--resync-interval", "1ms")),
        ("--resync-interval 2h", with("--resync-interval", "2h")),
        ("--resync-interval ten", with("--resync-interval", "ten")),
        ("--listen nowhere", with("--listen", "nowhere")),
        ("--mode overlay", with("--mode", "overlay")),
        ("--log-format xml", with("--log-format", "xml")),
        (
            "--config missing file",
            with("--config", "/nonexistent/apiserver-guard.toml"),
        ),
        (
            "config file with an unknown key",
            with("--config", unknown_key.to_str().unwrap()),
        ),
        (
            "config file with a bad resync_interval",
            with("--config", bad_interval.to_str().unwrap()),
        ),
    ];
    for (what, args) in cases {
        let (code, log, took) = run_to_exit(node, &args);
        eprintln!(
            "bad input `{what}`: exit {code:?} after {took:?}: {}",
            log.trim().lines().next().unwrap_or("")
        );
        assert_eq!(code, Some(2), "`{what}`: exit code (args {args:?})\nlog:\n{log}");
        assert!(!log.contains(READY_LINE), "`{what}` got ready:\n{log}");
        assert!(!log.trim().is_empty(), "`{what}`: no explanation printed");
        wait_no_processes(node, Duration::from_secs(5));
        assert_same_snapshot(&before, &firewall_snapshot(node), &format!("after `run` with {what}"));
    }
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API after every bad input",
    );
}

// SIGKILL + restart loops: never a moment where the pod gets through.

#[test]
fn sigkill_restart_loop_nftables() {
    if !common::can_run() {
        return;
    }
    sigkill_restart_loop(Backend::Nftables, 20);
}

#[test]
fn sigkill_restart_loop_iptables_nft() {
    if !common::can_run() {
        return;
    }
    sigkill_restart_loop(Backend::IptablesNft, 5);
}

#[test]
fn sigkill_restart_loop_iptables_legacy() {
    if !common::can_run() {
        return;
    }
    sigkill_restart_loop(Backend::IptablesLegacy, 5);
}

fn sigkill_restart_loop(b: Backend, cycles: usize) {
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(b);
    let args = daemon_args(&policy, &resync_flags(b));

    // The prober does see the pod getting through when nothing blocks it.
    let sanity = Prober::start(&topo.pod, API_V4, API_PORT);
    thread::sleep(Duration::from_millis(100));
    let seen = sanity.stop();
    assert!(
        seen.connected > 0,
        "prober sanity check (no block yet): {}",
        seen.summary()
    );

    let first = Daemon::spawn(node, &args);
    first.wait_ready();
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 (first daemon)",
    );

    let prober = Prober::start(&topo.pod, API_V4, API_PORT);
    first.kill();
    wait_no_processes(node, Duration::from_secs(5));
    // Kill at different points: right away, during the first apply, well after ready.
    let mut ready_times = Vec::new();
    for i in 0..cycles {
        let d = Daemon::spawn(node, &args);
        match i % 4 {
            0 => {}
            1 => thread::sleep(Duration::from_millis(30)),
            2 => thread::sleep(Duration::from_millis(100)),
            _ => ready_times.push(d.wait_ready()),
        }
        d.kill();
        // Nothing of the daemon survives it (no orphaned `nft monitor`), and
        // no killed writer races the next daemon.
        let gone = wait_no_processes(node, Duration::from_secs(5));
        if gone > Duration::from_millis(500) {
            eprintln!("[{}] cycle {i}: processes lingered {gone:?} after SIGKILL", b.flag());
        }
        assert_one_copy(node, b, &format!("after SIGKILL #{}", i + 1));
    }
    let last = Daemon::spawn(node, &args);
    ready_times.push(last.wait_ready());
    thread::sleep(Duration::from_millis(200));
    let stats = prober.stop();
    eprintln!(
        "[{}] {cycles} SIGKILL/restart cycles: prober {}; restart-to-ready times {ready_times:?}",
        b.flag(),
        stats.summary()
    );
    assert!(
        stats.refused > 0,
        "the prober saw no refused attempt: {}",
        stats.summary()
    );
    assert_one_copy(node, b, "after the restarts");
    policy.assert_in_sync(node, "status after the restarts");
    wait_http(node, "/readyz", 200, |_| true, REPAIR_DEADLINE);

    let status = last.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exit status\nlog:\n{}", last.log());
    wait_no_processes(node, Duration::from_secs(5));
    assert_one_copy(node, b, "after the final SIGTERM");
    policy.assert_in_sync(node, "status after the final SIGTERM");

    // Last, so that every other check above has run even when this fails.
    assert_eq!(
        stats.got_through(),
        0,
        "[{}] the pod got through during {cycles} SIGKILL/restart cycles (each start re-installs the block): {}",
        b.flag(),
        stats.summary()
    );
}

// Shutdown: fail-closed by default, clean with --cleanup-on-exit.

per_backend!(sigterm_keeps_the_block, sigterm_with_cleanup_restores_the_firewall);

fn sigterm_keeps_the_block(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(b);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &resync_flags(b)));
    daemon.wait_ready();
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API, daemon running",
    );

    let status = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exit status\nlog:\n{}", daemon.log());
    assert!(
        daemon.log().contains("the block stays in place"),
        "no fail-closed line:\n{}",
        daemon.log()
    );
    wait_no_processes(node, Duration::from_secs(5));
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod -> API after SIGTERM");
    policy.assert_in_sync(node, "status after SIGTERM");
    assert_one_copy(node, b, "after SIGTERM");
}

/// Another agent's state in every firewall (v4), so the tables our block
/// needs exist before the daemon starts.
fn load_foreign_state(node: &Netns) {
    add_foreign_nft_accept(node, "foreign_cni", "10.98.0.0/16");
    for variant in ["nft", "legacy"] {
        ipt_ok(
            node,
            false,
            variant,
            &["-A", "FORWARD", "-s", "10.99.0.0/16", "-j", "ACCEPT"],
        );
    }
}

fn sigterm_with_cleanup_restores_the_firewall(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    load_foreign_state(node);
    let before = firewall_snapshot(node);
    assert!(!before.contains("!! exit"), "snapshot failed:\n{before}");
    let policy = tunnel_v4_policy(b);
    let mut extra = resync_flags(b);
    extra.push("--cleanup-on-exit");
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &extra));
    daemon.wait_ready();
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API, daemon running",
    );
    assert_ne!(firewall_snapshot(node), before, "the daemon changed nothing");

    let status = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exit status\nlog:\n{}", daemon.log());
    wait_no_processes(node, Duration::from_secs(5));
    assert_same_snapshot(
        &before,
        &firewall_snapshot(node),
        &format!("--cleanup-on-exit ({}) must restore the firewall", b.flag()),
    );
    assert!(holders(node).is_empty(), "objects of ours left: {:?}", holders(node));
    assert_served(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API after cleanup");
}

#[test]
fn sigint_exits_0_and_keeps_the_block() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(Backend::Nftables);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &[]));
    daemon.wait_ready();
    let status = daemon.signal_and_wait(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "SIGINT exit status\nlog:\n{}", daemon.log());
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API after SIGINT");
    policy.assert_in_sync(node, "status after SIGINT");
}
