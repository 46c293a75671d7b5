//! Table ownership on a real kernel (nftables backend, the daemon in the
//! test's node namespace, a pod connecting back to back all along):
//! - while the daemon runs, its table carries owner|persist: another
//!   process's `nft flush ruleset` leaves it whole and `nft delete table`,
//!   `nft add rule` into it, one-shot `apply` and `remove` are refused (the
//!   last two exit 1 naming the daemon's pid; the ruleset is unchanged);
//! - SIGKILL leaves the table in place (orphaned) and the next daemon adopts
//!   it; an unowned table left by `apply` is handed over to an owned one;
//!   not one connection of the pod is served throughout;
//! - SIGTERM leaves the table, unowned, and `remove` then removes it;
//! - `--table-ownership off` (flag, variable, config key) keeps an ordinary
//!   table that foreign changes reach and the daemon repairs;
//! - another process owning the twin's name does not keep the daemon from
//!   taking an unowned table over; one owning our table is named, without
//!   advice meant for a daemon; our unowned table deleted between the twin
//!   and its replacement leaves the twin blocking (strace widens the race).

mod common;

use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

use apiserver_guard::backend::nfnl::{dump_table, transact, BatchMsg, NfnlSocket, NFPROTO_INET, NFT_TABLE_F_OWNER};
use netlink_packet_netfilter::nftables::{NfTablesMessage, TableAttribute, TableFlags, TableMessage};

const OWNED: &str = "apiserver_guard_table_owned";
/// How many foreign flushes and deletes each test throws at the table.
const ROUNDS: usize = 100;

/// A variable set for the daemon: name, value.
type EnvVar = (&'static str, &'static str);

fn policy() -> GuardPolicy {
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
}

/// nft 1.0.6 lists an owned table with `flags owner` and its owner process.
fn owned_by_a_process(node: &Netns) -> bool {
    let out = node.run(&["nft", "list", "table", "inet", "apiserver_guard"]);
    let t = String::from_utf8_lossy(&out.stdout);
    t.contains("flags owner") && t.contains("# progname apiserver-guard")
}

fn wait_owned(node: &Netns, daemon: &Daemon) {
    let t = Instant::now();
    while !owned_by_a_process(node) {
        assert!(
            t.elapsed() < READY_TIMEOUT,
            "the table never became owned:\n{}\nlog:\n{}",
            our_table_listing(node),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every table in the namespace, one per line.
fn tables(node: &Netns) -> String {
    node.run_ok(&["nft", "list", "tables"])
}

/// The prober saw no served connection, and did see refusals.
#[track_caller]
fn assert_never_served(stats: &ProbeStats, what: &str) {
    assert!(
        stats.refused > 0,
        "{what}: the prober saw no refusal: {}",
        stats.summary()
    );
    assert_eq!(
        stats.got_through(),
        0,
        "{what}: the pod got through: {}",
        stats.summary()
    );
}

/// The prober does see the pod served when nothing blocks it.
fn prober_sanity(topo: &Topology) {
    let p = Prober::start(&topo.pod, API_V4, API_PORT);
    std::thread::sleep(Duration::from_millis(100));
    let s = p.stop();
    assert!(s.connected > 0, "prober sanity check (no block yet): {}", s.summary());
}

#[test]
fn foreign_flush_and_delete_cannot_touch_the_daemons_table() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    prober_sanity(&topo);
    let daemon = Daemon::spawn(node, &daemon_args(&p, &[]));
    daemon.wait_ready();
    wait_owned(node, &daemon);
    assert!(
        daemon.log().contains("owned by this daemon's netlink socket"),
        "{}",
        daemon.log()
    );
    wait_metrics(
        node,
        "table owned",
        |s| sample(s, OWNED, &[]) == Some(1.0),
        REPAIR_DEADLINE,
    );
    let before = our_table_listing(node);

    let prober = Prober::start(&topo.pod, API_V4, API_PORT);
    for i in 0..ROUNDS {
        let flush = node.run(&["nft", "flush", "ruleset"]);
        assert!(
            flush.status.success(),
            "round {i}: nft flush ruleset should succeed (skipping us)"
        );
        let delete = node.run(&["nft", "delete", "table", "inet", "apiserver_guard"]);
        assert!(!delete.status.success(), "round {i}: nft delete table must be refused");
        assert!(
            String::from_utf8_lossy(&delete.stderr).contains("Operation not permitted"),
            "round {i}: {}",
            String::from_utf8_lossy(&delete.stderr)
        );
    }
    let add = node.run(&["nft", "add", "rule", "inet", "apiserver_guard", "guard", "accept"]);
    assert!(!add.status.success(), "adding a rule to our chain must be refused");
    let stats = prober.stop();
    eprintln!(
        "{ROUNDS} flushes and {ROUNDS} deletes while running: {}",
        stats.summary()
    );
    assert_eq!(our_table_listing(node), before, "the table is exactly as before");
    assert_eq!(
        daemon.log().matches(REPAIR_LINE).count(),
        0,
        "nothing needed a repair:\n{}",
        daemon.log()
    );
    assert_never_served(&stats, "flush and delete while owned");

    // One-shot apply and remove: exit 1 naming the daemon, nothing changed.
    let snapshot = firewall_snapshot(node);
    for (args, verb) in [(p.args("apply"), "change"), (vec!["remove".to_owned()], "remove")] {
        let r = run_guard(node, &args);
        r.expect_code(1, &format!("{verb} against the daemon's table"));
        let want = format!(
            "the running apiserver-guard daemon (pid {}) owns table inet apiserver_guard",
            daemon.pid
        );
        assert!(r.stderr.contains(&want), "{verb}: {}", r.stderr);
        assert!(r.stderr.contains("stop it first"), "{verb}: {}", r.stderr);
        assert_same_snapshot(&snapshot, &firewall_snapshot(node), &format!("refused {verb}"));
    }
    // Reading is for everyone: status is in sync and names the owner.
    p.assert_in_sync(node, "status while the daemon owns the table");
    let r = run_guard(node, &p.args("status"));
    let owner = format!("owned by: the running apiserver-guard daemon (pid {})", daemon.pid);
    assert!(r.stdout.contains(&owner), "{}", r.stdout);
    assert!(daemon.exited().is_none(), "daemon died:\n{}", daemon.log());
}

#[test]
fn sigkill_then_restart_adopts_the_orphan_and_the_pod_is_never_served() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    prober_sanity(&topo);
    let args = daemon_args(&p, &[]);
    let first = Daemon::spawn(node, &args);
    first.wait_ready();
    wait_owned(node, &first);
    let prober = Prober::start(&topo.pod, API_V4, API_PORT);
    let mut adopt_times = Vec::new();
    for cycle in 0..5 {
        let d = if cycle == 0 {
            None
        } else {
            Some(Daemon::spawn(node, &args))
        };
        if let Some(d) = &d {
            d.wait_ready();
            let t = Instant::now();
            wait_owned(node, d);
            adopt_times.push(t.elapsed());
            assert!(!d.log().contains(REPAIR_LINE), "adoption is no repair:\n{}", d.log());
        }
        match &d {
            Some(d) => d.kill(),
            None => first.kill(),
        }
        wait_no_processes(node, Duration::from_secs(5));
        // The orphan stays, unowned, whole.
        let t = our_table_listing(node);
        assert!(
            t.contains("chain guard"),
            "cycle {cycle}: the table must outlive the daemon:\n{t}"
        );
        assert!(!owned_by_a_process(node), "cycle {cycle}: nobody owns it now:\n{t}");
    }
    let last = Daemon::spawn(node, &args);
    last.wait_ready();
    wait_owned(node, &last);
    std::thread::sleep(Duration::from_millis(100));
    let stats = prober.stop();
    eprintln!(
        "5 SIGKILL/restart cycles: prober {}; ready-to-owned {adopt_times:?}",
        stats.summary()
    );
    assert_eq!(count_lines(&tables(node), "table inet apiserver_guard"), 1);
    p.assert_in_sync(node, "status after the restarts");
    assert_never_served(&stats, "SIGKILL and restart");
}

#[test]
fn an_unowned_table_is_handed_over_to_an_owned_one_without_a_moment_open() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    prober_sanity(&topo);
    let mut times = Vec::new();
    for cycle in 0..5 {
        // A one-shot apply leaves an ordinary table (it cannot gain the flag).
        p.apply_ok(node);
        assert!(!owned_by_a_process(node), "cycle {cycle}: {}", our_table_listing(node));
        let prober = Prober::start(&topo.pod, API_V4, API_PORT);
        let d = Daemon::spawn(node, &daemon_args(&p, &[]));
        times.push(d.wait_ready());
        wait_owned(node, &d);
        let stats = prober.stop();
        assert_never_served(&stats, &format!("cycle {cycle}: handover from an unowned table"));
        assert!(
            !tables(node).contains("apiserver_guard_handover"),
            "cycle {cycle}: the twin is gone:\n{}",
            tables(node)
        );
        p.assert_in_sync(node, &format!("cycle {cycle}: status after the handover"));
        let status = d.signal_and_wait(libc::SIGTERM);
        assert_eq!(status.code(), Some(0), "{}", d.log());
        wait_no_processes(node, Duration::from_secs(5));
        // Left in place, unowned: `remove` removes it and nothing of ours is left.
        assert!(
            our_table_listing(node).contains("chain guard"),
            "cycle {cycle}: kept after SIGTERM"
        );
        remove(node).expect_code(0, "remove after the daemon stopped");
        assert_eq!(tables(node).trim(), "", "cycle {cycle}: nothing of ours is left");
    }
    eprintln!("5 handovers, start-to-ready {times:?}, the pod never served");
}

#[test]
fn ownership_off_keeps_an_ordinary_table_that_the_daemon_repairs() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    let dir = TempDir::new("ownership-off");
    let config = dir.join("config.toml");
    write_atomic(
        &config,
        &format!(
            "container_cidr = \"{CONTAINER_CIDR_V4}\"\napiserver = \"{}\"\nmode = \"tunnel\"\n\
             backend = \"nftables\"\ntable_ownership = \"off\"\n",
            endpoint(API_V4, Some(API_PORT))
        ),
    );
    let from_file: Vec<String> = ["run", "--config", config.to_str().unwrap(), "--log-format", "text"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let how: [(&str, Vec<String>, Option<EnvVar>); 3] = [
        ("flag", daemon_args(&p, &["--table-ownership", "off"]), None),
        (
            "variable",
            daemon_args(&p, &[]),
            Some(("APISERVER_GUARD_TABLE_OWNERSHIP", "off")),
        ),
        ("config key", from_file, None),
    ];
    for (name, args, env) in how {
        let d = match env {
            None => Daemon::spawn(node, &args),
            Some((k, v)) => Daemon::spawn_with_env(node, &args, &[(k, v)]),
        };
        d.wait_ready();
        assert!(
            d.log().contains("table ownership: off (--table-ownership off)"),
            "{name}: {}",
            d.log()
        );
        assert!(!owned_by_a_process(node), "{name}: {}", our_table_listing(node));
        let (s, _) = wait_metrics(node, "metrics up", |s| sample(s, OWNED, &[]).is_some(), REPAIR_DEADLINE);
        assert_eq!(sample(&s, OWNED, &[]), Some(0.0), "{name}");
        node.run_ok(&["nft", "flush", "ruleset"]);
        d.wait_log(REPAIR_LINE, 1, REPAIR_DEADLINE);
        p.assert_in_sync(node, &format!("{name}: status after the repair"));
        assert_refused_fast(
            &topo.pod,
            None,
            API_V4,
            API_PORT,
            &format!("{name}: pod after the repair"),
        );
        d.signal_and_wait(libc::SIGTERM);
        wait_no_processes(node, Duration::from_secs(5));
        remove(node).expect_code(0, "remove");
    }
}

#[test]
fn remove_right_after_a_sigkill_removes_the_orphan() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    for round in 0..5 {
        let d = Daemon::spawn(node, &daemon_args(&p, &[]));
        d.wait_ready();
        wait_owned(node, &d);
        d.kill();
        // No wait: the kernel may still name the dead socket as owner for a moment.
        remove(node).expect_code(0, &format!("round {round}: remove right after SIGKILL"));
        assert_eq!(tables(node).trim(), "", "round {round}: nothing of ours is left");
        wait_no_processes(node, Duration::from_secs(5));
    }
}

/// `table inet NAME` with flags owner, created from a socket of this test
/// process in `ns`: another process's table, alive as long as the socket.
fn squat(ns: &Netns, name: &str) -> NfnlSocket {
    let sock = ns
        .in_thread(NfnlSocket::open)
        .expect("enter netns")
        .expect("open NETLINK_NETFILTER socket");
    let msg = NfTablesMessage::NewTable(TableMessage {
        attributes: vec![
            TableAttribute::Name(name.into()),
            TableAttribute::Flags(TableFlags::from_bits_retain(NFT_TABLE_F_OWNER)),
        ],
    });
    transact(&sock, vec![BatchMsg::new(NFPROTO_INET, msg).exclusive()]).expect("create the squatting table");
    sock
}

#[test]
fn a_squatted_handover_twin_does_not_keep_the_daemon_from_taking_over() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    prober_sanity(&topo);
    // An unowned table (a one-shot apply), and another process owning the
    // twin's name: nobody but that process can delete the twin.
    p.apply_ok(node);
    let squatter = squat(node, "apiserver_guard_handover");
    let prober = Prober::start(&topo.pod, API_V4, API_PORT);
    let d = Daemon::spawn(node, &daemon_args(&p, &[]));
    d.wait_ready();
    wait_owned(node, &d);
    let stats = prober.stop();
    assert_never_served(&stats, "handover beside a squatted twin");
    let t = tables(node);
    assert_eq!(
        count_lines(&t, "table inet apiserver_guard_handover"),
        1,
        "only the squatter's twin:\n{t}"
    );
    assert!(!t.contains("apiserver_guard_handover_"), "our own twin is gone:\n{t}");
    p.assert_in_sync(node, "status after the handover");
    drop(squatter);
    let status = d.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", d.log());
}

#[test]
fn a_table_owned_by_another_process_is_named_without_daemon_advice() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    let squatter = squat(node, "apiserver_guard");
    let snapshot = firewall_snapshot(node);
    for (args, verb) in [(p.args("apply"), "change"), (vec!["remove".to_owned()], "remove")] {
        let r = run_guard(node, &args);
        r.expect_code(1, &format!("{verb} against a squatted table"));
        assert!(
            r.stderr.contains("owns table inet apiserver_guard"),
            "{verb}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("is not an apiserver-guard daemon"),
            "{verb}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("systemctl"), "{verb}: {}", r.stderr);
        assert_same_snapshot(&snapshot, &firewall_snapshot(node), &format!("refused {verb}"));
    }
    drop(squatter);
}

#[test]
fn our_table_deleted_during_the_handover_leaves_the_twin_blocking() {
    if !can_run() {
        return;
    }
    let strace = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("strace"))
        .find(|p| p.is_file());
    let Some(strace) = strace else {
        eprintln!("skipped: needs strace to widen the race");
        return;
    };
    let topo = Topology::new();
    let node = &topo.node;
    let p = policy();
    prober_sanity(&topo);
    p.apply_ok(node);
    let sock = node
        .in_thread(NfnlSocket::open)
        .expect("enter netns")
        .expect("open NETLINK_NETFILTER socket");
    let prober = Prober::start(&topo.pod, API_V4, API_PORT);
    // Every send of the daemon returns 100 ms after the kernel took it, so
    // our unowned table can be deleted between the twin's batch and the
    // replacing one, as another process could do by chance.
    let mut argv: Vec<String> = [
        strace.to_str().expect("path"),
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=sendto",
        "-e",
        "inject=sendto:delay_exit=100000",
        guard_bin(),
    ]
    .map(str::to_owned)
    .to_vec();
    argv.extend(daemon_args(&p, &[]));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pid = node.spawn(&refs);
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no twin:\n{}",
            node.output_of(pid)
        );
        let twin = dump_table(&sock, NFPROTO_INET, "apiserver_guard_handover").expect("dump");
        if twin.table.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ours = NfTablesMessage::DeleteTable(TableMessage {
        attributes: vec![TableAttribute::Name("apiserver_guard".into())],
    });
    transact(&sock, vec![BatchMsg::new(NFPROTO_INET, ours)]).expect("delete our unowned table after the twin came");
    let t = Instant::now();
    while !owned_by_a_process(node) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never owned:\n{}",
            node.output_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = prober.stop();
    assert_never_served(&stats, "our table deleted between the twin and the replacement");
    let t = Instant::now();
    while tables(node).contains("apiserver_guard_handover") {
        assert!(t.elapsed() < Duration::from_secs(30), "twin left:\n{}", tables(node));
        std::thread::sleep(Duration::from_millis(20));
    }
}
