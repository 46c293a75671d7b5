//! Real-kernel tests of the daemon, `apiserver-guard run`, always inside the
//! test's own node namespace: it repairs what foreign actors do to the block
//! (event-driven for nftables and iptables-nft, periodic resync for
//! iptables-legacy), survives SIGKILL/restart loops without a single moment
//! where the pod gets through and without duplicate objects, follows its
//! config file (valid -> new policy in one transaction, invalid -> old policy
//! kept and reported), ends fail-closed on SIGTERM (or cleans up with
//! `--cleanup-on-exit`), reports /healthz, /readyz and /metrics truthfully,
//! and refuses bad input before touching anything.
//!
//! Durations (repair times, restart times) are measured and printed with
//! `eprintln!` (`cargo test --test daemon -- --nocapture` shows them); the
//! assertions are on outcomes, with generous liveness deadlines.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const REPAIRS: &str = "apiserver_guard_repairs_total";
const CONFIG_ERRORS: &str = "apiserver_guard_config_errors_total";
const CONFIG_OK: &str = "apiserver_guard_config_last_reload_successful";
/// Second pod address, inside 10.0.0.0/24 (the pod's main address 10.0.1.2 is not).
const POD_ALT_V4: &str = "10.0.0.5";

fn tunnel_v4_policy(b: Backend) -> GuardPolicy {
    GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))])
}

/// Curls pod -> API_V4 until refused; returns how long that took, or panics
/// after `REPAIR_DEADLINE` with the last result and the daemon's log.
#[track_caller]
fn poll_refused(topo: &Topology, daemon: &Daemon, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = curl(&topo.pod, API_V4, API_PORT, 2);
        if r.refused() {
            return start.elapsed();
        }
        if start.elapsed() > REPAIR_DEADLINE {
            panic!(
                "{what}: pod -> API_V4 not refused within {REPAIR_DEADLINE:?}; last: {r:?}\ndaemon log:\n{}",
                daemon.log()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Curls pod (from `src` when given) -> API_V4 until served; returns how long it took.
#[track_caller]
fn poll_served(topo: &Topology, src: Option<&str>, daemon: &Daemon, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = match src {
            Some(s) => curl_from(&topo.pod, s, API_V4, API_PORT, 2),
            None => curl(&topo.pod, API_V4, API_PORT, 2),
        };
        if r.served() {
            return start.elapsed();
        }
        if start.elapsed() > REPAIR_DEADLINE {
            panic!(
                "{what}: pod -> API_V4 not served within {REPAIR_DEADLINE:?}; last: {r:?}\ndaemon log:\n{}",
                daemon.log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `-A FORWARD -s 10.0.0.0/16 -j ACCEPT`, as `iptables -S` prints the foreign rule.
fn foreign_accept_line() -> String {
    format!("-A FORWARD -s {CONTAINER_CIDR_V4} -j ACCEPT")
}

/// Exactly one copy of our objects, all in backend `b`: one `table inet
/// apiserver_guard`, or one chain and exactly one jump, at rule 1 of FORWARD.
#[track_caller]
fn assert_one_copy(node: &Netns, b: Backend, what: &str) {
    assert_eq!(holders(node), vec![b], "{what}: backends holding our objects");
    match b.iptables_variant() {
        None => {
            let tables = node.run_ok(&["nft", "list", "tables"]);
            assert_eq!(
                count_lines(&tables, "table inet apiserver_guard"),
                1,
                "{what}: copies of our table in `nft list tables`:\n{tables}"
            );
        }
        Some(v) => {
            let save = ipt_save_family(node, false, v);
            assert_eq!(
                count_lines(&save, &format!(":{IPT_CHAIN} - [0:0]")),
                1,
                "{what}: copies of our chain:\n{save}"
            );
            assert_eq!(
                count_lines(&save, &jump_line("FORWARD")),
                1,
                "{what}: copies of our jump in FORWARD:\n{save}"
            );
            let first = ipt_ok(node, false, v, &["-S", "FORWARD", "1"]);
            assert_eq!(
                first.trim(),
                jump_line("FORWARD"),
                "{what}: rule 1 of FORWARD must be our jump:\n{save}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Foreign actors against a running daemon.
// ---------------------------------------------------------------------------

struct Actor {
    argv: Vec<String>,
    /// Inserts an ACCEPT above our jump (iptables): check the jump is rule 1 again.
    accept_above: bool,
}

fn actor(argv: &[&str]) -> Actor {
    Actor {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        accept_above: false,
    }
}

fn accept_above_actor(variant: &str) -> Actor {
    let tool = format!("iptables-{variant}");
    let mut a = actor(&[
        &tool,
        "-w",
        "10",
        "-I",
        "FORWARD",
        "1",
        "-s",
        CONTAINER_CIDR_V4,
        "-j",
        "ACCEPT",
    ]);
    a.accept_above = true;
    a
}

fn actors(b: Backend) -> Vec<Actor> {
    match b {
        Backend::Nftables => vec![
            actor(&["nft", "flush", "ruleset"]),
            actor(&["nft", "delete", "table", "inet", "apiserver_guard"]),
            actor(&["nft", "flush", "table", "inet", "apiserver_guard"]),
        ],
        Backend::IptablesNft => vec![
            actor(&["iptables-nft", "-w", "10", "-F"]),
            actor(&["nft", "flush", "ruleset"]),
            accept_above_actor("nft"),
        ],
        Backend::IptablesLegacy => vec![
            actor(&["iptables-legacy", "-w", "10", "-F"]),
            accept_above_actor("legacy"),
        ],
    }
}

per_backend!(foreign_actors_are_repaired);

fn foreign_actors_are_repaired(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(b);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &editable_flags(b)));
    let up = daemon.wait_ready();
    eprintln!("[{}] daemon ready in {up:?}", b.flag());
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 with the daemon ready",
    );
    policy.assert_in_sync(node, "status with the daemon ready");

    for a in actors(b) {
        let name = a.argv.join(" ");
        let repairs_before = total(&scrape(node), REPAIRS);
        let mark = daemon.log().len();
        let argv: Vec<&str> = a.argv.iter().map(String::as_str).collect();
        node.run_ok(&argv);
        let refused_in = poll_refused(&topo, &daemon, &format!("after `{name}`"));
        let (s, counted_in) = wait_metrics(
            node,
            &format!("{REPAIRS} above {repairs_before} after `{name}`"),
            |s| total(s, REPAIRS) > repairs_before,
            REPAIR_DEADLINE,
        );
        policy.assert_in_sync(node, &format!("status after `{name}` was repaired"));
        let log = daemon.log_since(mark);
        let warn: Vec<&str> = log.lines().filter(|l| l.contains(REPAIR_LINE)).collect();
        eprintln!(
            "[{}] `{name}`: pod refused again {refused_in:?} after the command returned \
             (repair counted {counted_in:?} after that); {}; daemon said: {warn:#?}",
            b.flag(),
            show_family(&s, REPAIRS)
        );
        assert!(
            warn.iter()
                .any(|l| l.contains("WARN") && l.contains("cause=") && l.contains("last_writer=")),
            "after `{name}`: no WARN `{REPAIR_LINE}...` line with cause and last_writer; new log:\n{log}"
        );
        if a.accept_above {
            let v = b.iptables_variant().expect("iptables backend");
            let first = ipt_ok(node, false, v, &["-S", "FORWARD", "1"]);
            assert_eq!(
                first.trim(),
                jump_line("FORWARD"),
                "after `{name}`: our jump must be rule 1 of FORWARD again"
            );
            let rules = ipt_ok(node, false, v, &["-S", "FORWARD"]);
            assert_eq!(
                count_lines(&rules, &jump_line("FORWARD")),
                1,
                "after `{name}`: one jump in FORWARD:\n{rules}"
            );
            assert_eq!(
                count_lines(&rules, &foreign_accept_line()),
                1,
                "after `{name}`: the foreign ACCEPT must be left in place (below us):\n{rules}"
            );
        }
    }
    assert_one_copy(node, b, "after every foreign actor");
    let status = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM exit status\nlog:\n{}", daemon.log());
}

/// Runs `argv` inside `ns` and returns its pid (`ip netns exec` execs the
/// tool, so the pid is the tool's own, the one `nft monitor` names), asserting success.
fn run_with_pid(ns: &Netns, argv: &[&str]) -> u32 {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the actor");
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pid
}

#[test]
fn repair_log_names_the_foreign_writer_nftables() {
    if !common::can_run() {
        return;
    }
    repair_log_names_the_foreign_writer(
        Backend::Nftables,
        &["nft", "delete", "table", "inet", "apiserver_guard"],
    );
}

#[test]
fn repair_log_names_the_foreign_writer_iptables_nft() {
    if !common::can_run() {
        return;
    }
    repair_log_names_the_foreign_writer(Backend::IptablesNft, &["iptables-nft", "-w", "10", "-F"]);
}

/// With change events (nftables, iptables-nft), the WARN line of a repair
/// names the process that broke the block (`nft monitor`'s "new generation
/// N by process PID (NAME)"), not the daemon's own repair.
fn repair_log_names_the_foreign_writer(b: Backend, argv: &[&str]) {
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(b);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &editable_flags(b)));
    daemon.wait_ready();
    daemon.wait_log("watching ruleset changes", 1, REPAIR_DEADLINE);
    let mut seen = Vec::new();
    for round in 1..=3 {
        let mark = daemon.log().len();
        let pid = run_with_pid(node, argv);
        daemon.wait_log(REPAIR_LINE, round, REPAIR_DEADLINE);
        let log = daemon.log_since(mark);
        let line = log
            .lines()
            .find(|l| l.contains(REPAIR_LINE))
            .expect("repair line")
            .to_owned();
        let writer = line
            .split("last_writer=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("(none)")
            .to_owned();
        eprintln!(
            "[{}] `{}` (pid {pid}): last_writer={writer:?}",
            b.flag(),
            argv.join(" ")
        );
        seen.push((pid, writer));
    }
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(pid, writer)| !writer.contains(&format!("(pid {pid})")))
        .collect();
    assert!(
        wrong.is_empty(),
        "[{}] the repair WARN line must name the process that changed our objects (`{}`, pid as below), \
         not the daemon's own repair; (actor pid, last_writer) pairs: {seen:?}\nlog:\n{}",
        b.flag(),
        argv.join(" "),
        daemon.log()
    );
}

// ---------------------------------------------------------------------------
// 2. SIGKILL + restart loops: never a moment where the pod gets through.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 3. Config file reload.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 4. Shutdown: fail-closed by default, clean with --cleanup-on-exit.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 5. /healthz, /readyz, /metrics.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 6. Bad input: exit 2 at once, nothing touched.
// ---------------------------------------------------------------------------

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
