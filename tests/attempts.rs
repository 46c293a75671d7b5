//! Who tried, on a real kernel: the daemon reads its NFLOG group in the
//! test's node namespace and reports each attempt in its log, `/attempts`,
//! `apiserver-guard attempts` (text and JSON) and `/metrics`.
//!
//! The daemon's own log rules (group 1443, metered per source) report the
//! TCP attempts; where a test needs what our rules do not log (UDP to every
//! port, to fill the table; somebody else's prefix in our group) it adds a
//! rule in a table of its own (`inet test_log`, forward hook before ours),
//! once the daemon is ready. Also: a flood
//! from one source (10 s, a foreign `nft flush ruleset` halfway: nothing
//! served) hides neither a single attempt from another address behind its
//! interface nor one from a second pod on its own, and the table
//! stays within its cap; a packet with a foreign prefix is ignored and
//! counted; a group held by another process is reported (log, metric,
//! `/attempts`) while the block is enforced, and taken once it is free;
//! `attempts` without a daemon exits 1 with a clear message.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const GROUP: u16 = 1443;
const ATTEMPTS: &str = "apiserver_guard_attempts_total";
const BOUND: &str = "apiserver_guard_attempt_log_bound";
/// Second pod address, inside the container CIDR, routed back through the node.
const POD_ALT_V4: &str = "10.0.0.5";
/// Liveness deadline for an attempt to show.
const SHOW_DEADLINE: Duration = Duration::from_secs(5);
/// Logged packets per second and source: the daemon's own log rules.
const PER_SOURCE_RATE: u64 = apiserver_guard::core::model::METER.rate;
/// Their burst.
const PER_SOURCE_BURST: u64 = apiserver_guard::core::model::METER.burst as u64;

fn policy() -> GuardPolicy {
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    )
}

/// The row of `/attempts` from `src` to `api`:`port`/`proto`, polled until it shows.
#[track_caller]
fn wait_row(node: &Netns, daemon: &Daemon, src: &str, api: &str, port: u16, proto: &str) -> serde_json::Value {
    wait_attempt_row(
        node,
        daemon,
        &format!("{src} -> {api}:{port}/{proto}"),
        SHOW_DEADLINE,
        |r| r["source"] == src && r["apiserver"] == api && r["port"] == port && r["protocol"] == proto,
    )
}

fn ready_daemon<'a>(node: &'a Netns) -> Daemon<'a> {
    let daemon = Daemon::spawn(node, &daemon_args(&policy(), &[]));
    daemon.wait_ready();
    wait_metrics(
        node,
        "the NFLOG group bound",
        |s| sample(s, BOUND, &[]) == Some(1.0),
        READY_TIMEOUT,
    );
    daemon
}

#[test]
fn a_blocked_attempt_shows_in_the_log_the_page_the_command_and_the_metric() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let daemon = ready_daemon(node);
    add_log_rules(
        node,
        &[
            // Same group, somebody else's prefix: not ours, never an attempt.
            log_rule(&format!("ip daddr {OTHER_V4}"), "other-agent:drop"),
        ],
    );

    let t0 = Instant::now();
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, 5), "pod -> API_V4 (blocked)");
    daemon.wait_log(&format!("blocked attempt: {POD_V4}:"), 1, SHOW_DEADLINE);
    let to_log = t0.elapsed();
    assert_refused(&curl(&topo.pod, API_V6, API_PORT, 5), "pod -> API_V6 (blocked)");
    assert_served(&curl(&topo.pod, OTHER_V4, API_PORT, 5), "pod -> OTHER_V4 (not blocked)");

    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("blocked attempt: {POD_V4}:")))
        .unwrap();
    for field in [
        format!("src=\"{POD_V4}\""),
        format!("dst=\"{API_V4}\""),
        format!("dport=\"{API_PORT}\""),
        "proto=\"tcp\"".to_string(),
        "action=\"blocked\"".to_string(),
        format!("-> {API_V4}:{API_PORT} tcp (rule block-tcp-port-v4)"),
    ] {
        assert!(line.contains(&field), "log line lacks {field}: {line}");
    }

    let v4 = wait_row(node, &daemon, POD_V4, API_V4, API_PORT, "tcp");
    assert_eq!(v4["action"], "blocked");
    assert_eq!(v4["rule"], "block-tcp-port-v4");
    assert!(v4["count"].as_u64().unwrap() >= 1, "{v4}");
    assert!(v4["first_seen"].as_str().unwrap().ends_with('Z'), "{v4}");
    assert!(v4["pod"].is_null(), "no discovery, no pod: {v4}");
    let v6 = wait_row(node, &daemon, POD_V6, API_V6, API_PORT, "tcp");
    assert_eq!(v6["rule"], "block-tcp-port-v6");
    daemon.wait_log(&format!("blocked attempt: [{POD_V6}]:"), 1, SHOW_DEADLINE);
    // The foreign prefix: counted as ignored, never a row.
    let (s, _) = wait_metrics(
        node,
        "the foreign prefix counted",
        |s| {
            sample(
                s,
                "apiserver_guard_attempt_log_ignored_total",
                &[("reason", "foreign_prefix")],
            ) >= Some(1.0)
        },
        SHOW_DEADLINE,
    );
    let p = attempts_page(node);
    assert!(!p.to_string().contains(OTHER_V4), "a foreign prefix made a row: {p}");
    assert_eq!(p["attempts"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(
        (p["group"].as_u64(), p["bound"].as_bool()),
        (Some(u64::from(GROUP)), Some(true))
    );
    assert!(!log.contains("other-agent"), "a foreign prefix was logged:\n{log}");

    // The metric: namespace "" until attribution.
    let blocked = sample(&s, ATTEMPTS, &[("namespace", ""), ("action", "blocked")]).unwrap_or(0.0);
    assert!(blocked >= 2.0, "{}", show_family(&s, ATTEMPTS));
    assert_eq!(sample(&s, "apiserver_guard_attempts_table_rows", &[]), Some(2.0));

    // The command, text and JSON.
    let out = guard(node, &["attempts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "attempts: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("NFLOG group {GROUP}: read; 2 row(s)")),
        "{text}"
    );
    assert!(text.contains("SOURCE") && text.contains("LAST SEEN"), "{text}");
    // Without discovery: addresses only, no pod column, and no error said about it.
    assert!(text.lines().nth(1).is_some_and(|h| h.starts_with("SOURCE")), "{text}");
    assert!(!text.contains("POD"), "{text}");
    let log = daemon.log();
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "an error logged without discovery:\n{log}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with(POD_V4))
        .unwrap_or_else(|| panic!("no row for the pod: {text}"));
    for cell in [format!("{API_V4}:{API_PORT}"), "tcp".into(), "blocked".into()] {
        assert!(row.contains(&cell), "row lacks {cell}: {row}");
    }
    assert!(text.contains(&format!("[{API_V6}]:{API_PORT}")), "{text}");
    let out = guard(node, &["attempts", "--output", "json", "--listen", LISTEN]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("attempts --output json is JSON");
    assert_eq!(json["attempts"].as_array().unwrap().len(), 2, "{json}");
    assert!(json["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["source"] == POD_V4));
    eprintln!(
        "attempt -> log line: {:.0} ms (curl included)",
        to_log.as_secs_f64() * 1000.0
    );
}

/// Gives the pod a second address, POD_ALT_V4, routed back through the node.
fn add_pod_alt_address(topo: &Topology) {
    topo.pod
        .ip_ok(&["addr", "add", &format!("{POD_ALT_V4}/32"), "dev", POD_IF]);
    topo.node
        .ip_ok(&["route", "add", &format!("{POD_ALT_V4}/32"), "dev", NODE_POD_IF]);
}

#[test]
fn a_flood_from_one_source_does_not_hide_another_and_the_table_stays_capped() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    add_pod_alt_address(&topo);
    let other_pod = topo.add_other_pod();
    let daemon = ready_daemon(node);
    add_log_rules(
        node,
        &[
            // Every UDP port of the apiserver: one row per port, to fill the table.
            log_rule(
                &format!("ip saddr {CONTAINER_CIDR_V4} ip daddr {API_V4} meta l4proto udp"),
                "apiserver-guard:block-udp-v4",
            ),
        ],
    );

    let rss_ready = rss_kib(daemon.pid);
    // More distinct (source, apiserver, port) keys than the table holds.
    const PORTS: u16 = 5000;
    topo.pod
        .in_thread(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for port in 1..=PORTS {
                let _ = s.send_to(b"x", (API_V4, port));
                if port % 500 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
        .unwrap();
    let (s, _) = wait_metrics(
        node,
        "rows evicted",
        |s| sample(s, "apiserver_guard_attempts_evicted_total", &[]) >= Some(1.0),
        SHOW_DEADLINE,
    );
    let rows = sample(&s, "apiserver_guard_attempts_table_rows", &[]).unwrap();
    assert_eq!(rows, 4096.0, "the table is full, not more");

    // A pod floods connects from POD_V4 while POD_ALT_V4 (another address
    // behind the same interface) and a second pod (on its own) try once each.
    let api: SocketAddr = SocketAddr::new(API_V4.parse::<IpAddr>().unwrap(), API_PORT);
    // As fast as it can for 10 s; halfway, another process flushes the
    // ruleset: the daemon's owned table is skipped, nothing is served.
    let flood = Duration::from_secs(10);
    let cpu_before = cpu_ticks(daemon.pid);
    let (made, served) = std::thread::scope(|sc| {
        let flooder = sc.spawn(|| {
            topo.pod
                .in_thread(|| {
                    let start = Instant::now();
                    let (mut n, mut served) = (0u64, 0u64);
                    while start.elapsed() < flood {
                        if TcpStream::connect_timeout(&api, Duration::from_millis(200)).is_ok() {
                            served += 1;
                        }
                        n += 1;
                    }
                    (n, served)
                })
                .unwrap()
        });
        std::thread::sleep(flood / 2);
        assert_refused(
            &curl_from(&topo.pod, POD_ALT_V4, API_V4, API_PORT, 5),
            "pod (src POD_ALT_V4) -> API_V4",
        );
        assert_refused(&curl(&other_pod, API_V4, API_PORT, 5), "second pod -> API_V4");
        node.run_ok(&["nft", "flush", "ruleset"]);
        flooder.join().unwrap()
    });
    assert_eq!(served, 0, "a connect of the flood was served (flush during the flood)");
    policy().assert_in_sync(node, "status after the flush during the flood");
    let cpu = (cpu_ticks(daemon.pid) - cpu_before) as f64 / ticks_per_second() / flood.as_secs_f64();
    let single = wait_row(node, &daemon, POD_ALT_V4, API_V4, API_PORT, "tcp");
    assert_eq!(single["count"], 1, "{single}");
    let flooded = wait_row(node, &daemon, POD_V4, API_V4, API_PORT, "tcp");
    daemon.wait_log(&format!("blocked attempt: {POD_ALT_V4}:"), 1, SHOW_DEADLINE);
    let second = wait_row(node, &daemon, OTHER_POD_V4, API_V4, API_PORT, "tcp");
    assert_eq!(second["count"], 1, "{second}");
    daemon.wait_log(&format!("blocked attempt: {OTHER_POD_V4}:"), 1, SHOW_DEADLINE);

    let s = scrape(node);
    let rows = sample(&s, "apiserver_guard_attempts_table_rows", &[]).unwrap();
    let evicted = sample(&s, "apiserver_guard_attempts_evicted_total", &[]).unwrap();
    let overflows = sample(&s, "apiserver_guard_attempt_log_overflows_total", &[]).unwrap();
    let suppressed = sample(&s, "apiserver_guard_attempt_log_lines_suppressed_total", &[]).unwrap();
    assert!(rows <= 4096.0, "rows {rows}");
    let p = attempts_page(node);
    assert_eq!(p["attempts"].as_array().unwrap().len() as f64, rows);
    assert_eq!(p["capacity"], 4096);
    let reported = flooded["count"].as_u64().unwrap();
    eprintln!(
        "flood: {made} connects in {flood:?}, {reported} reported; table {rows} rows, {evicted} evicted, {overflows} overflows, {suppressed} log lines suppressed; daemon CPU {:.1} % of a core, RSS {} KiB (ready: {rss_ready} KiB)",
        cpu * 100.0,
        rss_kib(daemon.pid)
    );
    assert!(made > 1000, "the flood made only {made} connects");
    // Memory stays bounded: a full table (4,096 rows) and the flood cost a few MiB at most.
    let grown = rss_kib(daemon.pid).saturating_sub(rss_ready);
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB under the flood");
    // The kernel let through the budget of the meter of connects
    // (`nft_desired::connect_rules`: a connect over it is logged by no other
    // rule); all of it was read.
    let budget = PER_SOURCE_BURST + PER_SOURCE_RATE * (flood.as_secs() + 2);
    assert!(
        reported <= budget,
        "{reported} reported, over the kernel's budget {budget}"
    );
    assert!(reported >= PER_SOURCE_BURST, "only {reported} of the flood reported");
    assert_eq!(overflows, 0.0, "a rate-limited flood overflowed the socket");
    let lines = daemon.log().matches("blocked attempt: ").count();
    assert!(lines < 4096, "new-key log lines are rate limited: {lines}");
}

/// User + system CPU ticks of `pid` (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A netlink socket of ours in `ns` holding NFLOG `group` (as ulogd would).
fn hold_group(ns: &Netns, group: u16) -> OwnedFd {
    ns.in_thread(|| {
        // SAFETY: plain syscalls on a socket we create; pointers are to live locals.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 12);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let owned = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len), 0);
            let req = apiserver_guard::core::nflog_wire::bind_request(group, 9);
            assert_eq!(
                libc::send(fd, req.as_ptr() as *const _, req.len(), 0),
                req.len() as isize
            );
            let mut buf = [0u8; 4096];
            let n = libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), 0);
            assert!(n > 0, "recv: {}", std::io::Error::last_os_error());
            let events = apiserver_guard::core::nflog_wire::parse_datagram(&buf[..n as usize]);
            assert!(
                events.contains(&apiserver_guard::core::nflog_wire::Event::Ack { seq: 9, errno: 0 }),
                "binding group {group} in the test: {events:?}"
            );
            owned
        }
    })
    .unwrap()
}

#[test]
fn a_group_held_by_another_process_is_reported_and_taken_once_free() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let holder = hold_group(node, GROUP);
    let daemon = Daemon::spawn(node, &daemon_args(&policy(), &[]));
    daemon.wait_ready();
    daemon.wait_log(
        &format!("NFLOG group {GROUP} is already bound by another process"),
        1,
        READY_TIMEOUT,
    );
    let (s, _) = wait_metrics(
        node,
        "a bind failure counted",
        |s| sample(s, "apiserver_guard_attempt_log_bind_failures_total", &[]) >= Some(1.0),
        READY_TIMEOUT,
    );
    assert_eq!(sample(&s, BOUND, &[]), Some(0.0));
    assert_eq!(sample(&s, "apiserver_guard_ready", &[]), Some(1.0), "ready regardless");
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, 5),
        "the block does not depend on the log path",
    );
    let p = attempts_page(node);
    assert_eq!(p["bound"], false, "{p}");
    assert!(p["problem"].as_str().unwrap().contains("already bound"), "{p}");
    let out = guard(node, &["attempts"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("NFLOG group {GROUP}: NOT read (")), "{text}");
    assert_eq!(
        daemon.log().matches("is already bound by another process").count(),
        1,
        "the same problem is logged once, not at every retry"
    );

    drop(holder);
    let (_, took) = wait_metrics(
        node,
        "the group taken once free",
        |s| sample(s, BOUND, &[]) == Some(1.0),
        Duration::from_secs(40),
    );
    daemon.wait_log(
        &format!("reading blocked attempts from NFLOG group {GROUP}"),
        1,
        SHOW_DEADLINE,
    );
    eprintln!("group taken {:.1} s after it was freed", took.as_secs_f64());
    assert_refused(&curl(&topo.pod, API_V4, API_PORT, 5), "pod -> API_V4");
    wait_row(node, &daemon, POD_V4, API_V4, API_PORT, "tcp");
}

#[test]
fn attempts_without_a_daemon_exits_1_saying_so() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("nodaemon");
    ns.ip_ok(&["link", "set", "lo", "up"]);
    let out = guard(&ns, &["attempts"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("cannot reach the daemon at 127.0.0.1:9440") && err.contains("apiserver-guard run"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
