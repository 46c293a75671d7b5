//! Real-kernel tests of the daemon, `apiserver-guard run`, repairing what
//! foreign actors do to the block, always inside the test's own node
//! namespace: event-driven for nftables and iptables-nft, periodic resync for
//! iptables-legacy; every repair is counted, logged as a WARN line naming
//! the cause and the process that changed our objects, and leaves exactly
//! one copy of them (our jump back at rule 1 of FORWARD).
//!
//! Repair times are measured and printed with `eprintln!` (`cargo test
//! --test daemon_repair -- --nocapture` shows them); the assertions are on
//! outcomes, with generous liveness deadlines.

mod common;

use common::daemon_cases::*;
use common::daemon_checks::*;
use common::guard_cases::*;
use common::*;

/// `-A FORWARD -s 10.0.0.0/16 -j ACCEPT`, as `iptables -S` prints the foreign rule.
fn foreign_accept_line() -> String {
    format!("-A FORWARD -s {CONTAINER_CIDR_V4} -j ACCEPT")
}

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
