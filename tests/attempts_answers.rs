//! A pod's answers to packets forged "from the apiserver" are not its
//! attempts (break-it find of issue 13): one pod sent SYNs from the
//! apiserver's address and port to another; that pod's kernel answered each
//! with a reset (closed port) or a SYN+ACK (listening port), sent to the
//! apiserver's port from its own interface, and every answer was logged and
//! counted as its attempt, spent its per-source log allowance and took its
//! log line. Echo replies to forged pings do the same through a rule that
//! takes every protocol (a review's find).
//!
//! On nftables the answer rules (`core::nft_answers`) give answers their
//! verdict ahead of the log rules: a flood of reflected answers adds no row
//! and leaves the victim's whole allowance for its own connects, through a
//! port-scoped rule (refused: 15 connects right after, each counted) and
//! through a port-less one that drops (resets and echo replies; 15
//! connects at once right after, each counted). On iptables the kernel logs answers and the
//! daemon ignores them (reason `answer`): no row, its own connect counts
//! once. Each checks from the node's counters that the answers were sent and
//! hit our rule, so none can pass because the forging failed.
//!
//! Answers the answer rules cannot recognise (the later fragments of an echo
//! reply; a bare ACK of a half-open socket: a second round's finds) reach the
//! log rules, but a pod's connects (SYN without ACK) have a meter of their
//! own (`nft_desired::connect_rules`): after 200 forged big pings drew
//! fragmented replies, the pod's 15 connects at once are each counted.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::daemon_cases::*;
use common::guard_cases::*;
use common::spoof::{send_pings_from, send_syns_from, send_tcp_later_fragments, send_tcp_tiny_first_fragments};
use common::*;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

const SHOW_DEADLINE: Duration = Duration::from_secs(5);
/// Closed ports of the victim pod the forged SYNs go to (each answered by a reset).
const CLOSED_PORTS: std::ops::Range<u16> = 30_000..30_400;
/// A port the victim listens on (each forged SYN answered by a SYN+ACK).
const LISTENING_PORT: u16 = 7000;
/// The victim's own connects after the flood: fewer than its meter's burst (20).
const OWN_CONNECTS: u64 = 15;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The block of the pods' traffic to the apiserver's `port` (None: every port), on nftables.
fn policy(port: Option<u16>) -> GuardPolicy {
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, port)],
    )
}

/// The daemon enforcing `policy` in `node`, ready and reading its log
/// group, on a node that forwards forged sources.
fn ready_daemon<'a>(node: &'a Netns, policy: &GuardPolicy) -> Daemon<'a> {
    allow_forged_sources(node);
    let daemon = Daemon::spawn(node, &daemon_args(policy, &[]));
    daemon.wait_ready();
    wait_attempt_log_bound(node);
    daemon
}

/// Rows of `/attempts` from the victim pod.
fn victim_rows(node: &Netns) -> Vec<serde_json::Value> {
    attempt_rows_from(node, OTHER_POD_V4)
}

/// Waits until the rule of `guard` named `rule` counted `want` packets
/// more than `before`; returns how many (panics after SHOW_DEADLINE).
#[track_caller]
fn wait_answers(node: &Netns, rule: &str, before: u64, want: u64) -> u64 {
    let started = std::time::Instant::now();
    loop {
        let answered = guard_counter(node, rule) - before;
        if answered >= want {
            return answered;
        }
        assert!(
            started.elapsed() < SHOW_DEADLINE,
            "the victim's answers did not reach {rule}: {answered} of {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No row of the victim pod, half a second after its answers reached the block.
#[track_caller]
fn assert_no_victim_rows(node: &Netns, daemon: &Daemon) {
    std::thread::sleep(Duration::from_millis(500));
    let rows = victim_rows(node);
    assert!(
        rows.is_empty(),
        "answers to forged packets were counted as the victim's attempts: {rows:?}\nlog:\n{}",
        daemon.log()
    );
}

/// The victim's one row once it counts `want`, and still exactly `want`
/// half a second later (panics otherwise).
#[track_caller]
fn wait_victim_count(node: &Netns, daemon: &Daemon, want: u64) -> serde_json::Value {
    wait_attempt_row(
        node,
        daemon,
        &format!("{OTHER_POD_V4} counting {want}"),
        SHOW_DEADLINE,
        |r| r["source"] == OTHER_POD_V4 && r["count"].as_u64() >= Some(want),
    );
    std::thread::sleep(Duration::from_millis(500));
    let rows = victim_rows(node);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["count"], want, "{rows:?}");
    rows[0].clone()
}

#[test]
fn reflected_answers_neither_count_nor_spend_the_victims_allowance() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    let daemon = ready_daemon(node, &policy(Some(OTHER_PORT)));
    let _listening = Listener::start(&victim, OTHER_POD_V4, LISTENING_PORT);
    let before = guard_counter(node, "block-tcp-port-v4");

    let mut ports: Vec<u16> = CLOSED_PORTS.collect();
    ports.extend(std::iter::repeat_n(LISTENING_PORT, 100));
    let sent = send_syns_from(&topo.pod, ip(API_V4), OTHER_PORT, ip(OTHER_POD_V4), &ports).unwrap();
    assert_eq!(sent, ports.len());
    // The resets and at least half the SYN+ACKs reached our block: the reflection happened.
    let answered = wait_answers(node, "block-tcp-port-v4", before, CLOSED_PORTS.len() as u64 + 50);
    eprintln!("answers that reached the block: {answered}");
    assert_no_victim_rows(node, &daemon);

    // Its own connects, right after: its allowance is whole, each is counted.
    for _ in 0..OWN_CONNECTS {
        let r = curl(&victim, API_V4, OTHER_PORT, 2);
        assert!(r.refused(), "{r:?}");
    }
    let row = wait_victim_count(node, &daemon, OWN_CONNECTS);
    assert_eq!(row["interface"], NODE_OTHER_POD_IF, "{row}");
    daemon.wait_log(&format!("via {NODE_OTHER_POD_IF}"), 1, SHOW_DEADLINE);
}

#[test]
fn answers_through_a_rule_for_every_protocol_spend_nothing_either() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    // Dropped and port-less: one rule takes every protocol, TCP included.
    let daemon = ready_daemon(node, &policy(None).with_action("drop"));
    let before = guard_counter(node, "block-all-v4");

    let ports: Vec<u16> = CLOSED_PORTS.take(300).collect();
    let ids: Vec<u16> = (1..=300).collect();
    send_syns_from(&topo.pod, ip(API_V4), API_PORT, ip(OTHER_POD_V4), &ports).unwrap();
    send_pings_from(&topo.pod, ip(API_V4), ip(OTHER_POD_V4), &ids, 28).unwrap();
    // Resets and echo replies both reached the rule.
    wait_answers(node, "block-all-v4", before, 600);
    assert_no_victim_rows(node, &daemon);

    // Its own connects right after, all at once: its allowance is whole, each is counted.
    connect_at_once_and_be_counted(&victim, node, &daemon);
}

#[test]
fn answers_that_reach_the_log_rules_spend_nothing_of_a_pods_connects() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    let daemon = ready_daemon(node, &policy(None).with_action("drop"));
    // The victim's path to the apiserver is narrow: its echo replies leave in
    // fragments, and only the first says it is an echo reply (a break-it
    // find: the later ones reach the log rules).
    victim.ip_ok(&[
        "route",
        "add",
        &format!("{API_V4}/32"),
        "via",
        NODE_OTHER_POD_V4,
        "mtu",
        "576",
    ]);
    let ids: Vec<u16> = (1..=200).collect();
    let before = guard_counter(node, "block-all-v4");
    send_pings_from(&topo.pod, ip(API_V4), ip(OTHER_POD_V4), &ids, 1400).unwrap();
    // Three fragments each.
    wait_answers(node, "block-all-v4", before, 3 * ids.len() as u64);
    // The later fragments were logged (the victim's allowance for other
    // packets spent) and ignored by the reader.
    wait_metrics(
        node,
        "the victim's later fragments logged and ignored",
        |s| {
            sample(
                s,
                "apiserver_guard_attempt_log_ignored_total",
                &[("reason", "fragment")],
            ) >= Some(20.0)
        },
        SHOW_DEADLINE,
    );
    assert_no_victim_rows(node, &daemon);

    // Its connects have an allowance of their own: each of them is counted.
    connect_at_once_and_be_counted(&victim, node, &daemon);
}

/// A pod that crafts TCP fragments after the first (no TCP stack sends
/// them) is reported for them (a review's find: the reader ignored them as
/// fragments, while in the kernel they could spend the pod's own allowance,
/// hiding its connects).
#[test]
fn crafted_tcp_fragments_are_the_pods_own_attempts() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let _other = topo.add_other_pod();
    let daemon = ready_daemon(node, &policy(Some(OTHER_PORT)));
    let before = guard_counter(node, "block-tcp-port-v4");
    send_tcp_later_fragments(&topo.pod, ip(POD_V4), ip(API_V4), OTHER_PORT, 50).unwrap();
    wait_answers(node, "block-tcp-port-v4", before, 50);
    let row = wait_attempt_row(node, &daemon, "the crafted fragments", SHOW_DEADLINE, |r| {
        r["source"] == POD_V4 && r["protocol"] == "tcp" && r["port"].is_null() && r["count"].as_u64() >= Some(10)
    });
    assert_eq!(row["action"], "blocked", "{row}");
}

/// First fragments cut before the TCP flags (8 bytes of TCP header: ports
/// and sequence number) pass every rule that reads the flags; on a node that
/// does not reassemble before the filter (no conntrack here), a pod could
/// carry a whole conversation that way. A review's find: they reached the
/// verdict unlogged. Every IPv4 fragment is now logged first, per source.
#[test]
fn tcp_first_fragments_without_flags_are_the_pods_own_attempts() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let _other = topo.add_other_pod();
    let daemon = ready_daemon(node, &policy(Some(API_PORT)));
    let before = guard_counter(node, "block-tcp-port-v4");
    send_tcp_tiny_first_fragments(&topo.pod, ip(POD_V4), ip(API_V4), API_PORT, 5).unwrap();
    wait_answers(node, "block-tcp-port-v4", before, 5);
    let row = wait_attempt_row(node, &daemon, "the cut fragments", SHOW_DEADLINE, |r| {
        r["source"] == POD_V4 && r["protocol"] == "tcp" && r["port"] == API_PORT
    });
    assert_eq!(row["action"], "blocked", "{row}");
    assert_eq!(
        rule_counter(node, "block-tcp-port-v4", "log-block-tcp-port-v4-fragment-new-source")
            + rule_counter(node, "block-tcp-port-v4", "log-block-tcp-port-v4-fragment"),
        5,
        "each fragment logged by the fragment rules"
    );
}

/// OWN_CONNECTS connects from the victim at once, each counted.
#[track_caller]
fn connect_at_once_and_be_counted(victim: &Netns, node: &Netns, daemon: &Daemon) {
    let sent = syn_burst(victim, OWN_CONNECTS as usize);
    assert_eq!(sent, OWN_CONNECTS as usize);
    wait_victim_count(node, daemon, OWN_CONNECTS);
}

/// `n` connects from `pod` to the apiserver started at once (non-blocking:
/// one SYN each within a millisecond or so), then closed. Returns how many were started.
fn syn_burst(pod: &Netns, n: usize) -> usize {
    pod.in_thread(|| {
        let api = std::net::SocketAddr::new(API_V4.parse().unwrap(), API_PORT);
        let sockets: Vec<Socket> = (0..n)
            .filter_map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::TCP)).unwrap();
                s.set_nonblocking(true).unwrap();
                match s.connect(&api.into()) {
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Some(s),
                    _ => None,
                }
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        sockets.len()
    })
    .unwrap()
}

#[test]
fn answers_an_iptables_rule_logs_are_ignored_by_the_daemon() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    let policy = GuardPolicy::new(
        Backend::IptablesNft,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
    .with_action("audit");
    let daemon = ready_daemon(node, &policy);

    // Ten: within the victim's per-source burst, so the kernel logs each
    // and leaves room for its own connect below.
    let ports: Vec<u16> = CLOSED_PORTS.take(10).collect();
    send_syns_from(&topo.pod, ip(API_V4), API_PORT, ip(OTHER_POD_V4), &ports).unwrap();
    wait_metrics(
        node,
        "the victim's ten resets ignored as answers",
        |s| sample(s, "apiserver_guard_attempt_log_ignored_total", &[("reason", "answer")]) >= Some(10.0),
        SHOW_DEADLINE,
    );
    assert_no_victim_rows(node, &daemon);

    let r = curl(&victim, API_V4, API_PORT, 5);
    assert!(r.served(), "audit serves the pod: {r:?}");
    let row = wait_victim_count(node, &daemon, 1);
    assert_eq!(row["action"], "audited", "{row}");
}
