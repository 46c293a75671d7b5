//! Full meters must not hide an attempt (issue 13). The kernel's per-source
//! and per-flow meters hold 65,535 elements each; a full one takes no new
//! element, and the log rule that adds one then skips the packet.
//!
//! - A full flow meter (a review's find). In audit mode every connect a pod
//!   makes adds an element to `flows_v4` (its handshake's ACK is a packet
//!   other than a connect), so pods need no privilege to keep it full: six
//!   pods making 200 connects a second. The first data of a connection
//!   opened before audit began then went unlogged. Fixed by the flowless
//!   rules (`nft_desired::flowless_rules`): a packet of a flow the meter
//!   holds no element for is logged against its source's own allowance.
//! - A full connects meter (break-it round 4): six pods forging sources keep
//!   `connects_v4` full, and a pod's first connect in a minute went
//!   unlogged. Fixed by the meter-full rules (`nft_desired::METER_FULL_SUFFIX`):
//!   a new source the meter could not take is logged within its interface's
//!   allowance for new sources alone.
//!
//! - Full flow and per-source meters in audit mode (break-it round 5): the
//!   bare ACKs forged SYNs draw from a pod's listening port then found no
//!   element to add anywhere, and each spent its interface's allowance for
//!   new sources on the way (up to three tokens), which the pod's own new
//!   connects needed: 5 of 20 went unreported. Fixed by the connect and
//!   push rules' own interface allowances (`nft_desired::IIF_NEW_INITIATED_SET`).
//! - Full push and flow meters in audit mode (break-it round 6): pods making
//!   plain connects fill `pushes_v4` as they fill `flows_v4`; a pod's data
//!   on a connection opened before audit began then fell to the flowless
//!   rules and its source's allowance there, which the bare ACKs forged
//!   SYNs drew from its listening port kept spent: the connection went
//!   unreported. Fixed by a meter-full rule for pushes too: a push the full
//!   meter cannot take is logged within its interface's allowance for new
//!   connections and pushes alone.
//!
//! Here the meters are filled with nft (the daemon's table not owned, so
//! another process may add elements): the state the pods make.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::daemon_checks::tunnel_v4_policy;
use common::guard_cases::*;
use common::meter_fill::{fill, source_key};
use common::spoof::send_syn_flood_from;
use common::victim_acks::{answer_every_forged_syn, counted_acks};
use common::*;

const SHOW_DEADLINE: Duration = Duration::from_secs(5);
#[test]
fn a_full_flow_meter_does_not_hide_a_connection_opened_before_audit() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let mut held = HeldConnection::open(&topo.pod, API_V4, API_PORT).expect("the pod's connection");
    let held_port = held.stream().local_addr().unwrap().port();

    let daemon = audit_daemon_v4(node, &["--table-ownership", "off"]);
    fill(node, "flows_v4", |i| format!("{} . 40000", source_key(i)));

    held.roundtrip(b"still watching", Duration::from_secs(2))
        .expect("audit blocks nothing");
    assert_held_connection_reported_once(node, &daemon, POD_V4, held_port, SHOW_DEADLINE);
    assert!(
        rule_counter(node, "audit-tcp-port-v4", "log-audit-tcp-port-v4-flowless-new-source") >= 1,
        "logged by the flowless rules"
    );
}

#[test]
fn a_full_connects_meter_does_not_hide_a_new_sources_connect() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(Backend::Nftables);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &["--table-ownership", "off"]));
    daemon.wait_ready();
    wait_attempt_log_bound(node);
    fill(node, "connects_v4", source_key);

    // The pod's connects, the first of them its first in the meter's
    // minute: refused, and each reported, by the meter-full rule.
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "the pod's connects");
    let row = wait_attempt_row(node, &daemon, &format!("{POD_V4}'s connects"), SHOW_DEADLINE, |r| {
        r["source"] == POD_V4 && r["port"] == API_PORT
    });
    assert_eq!(row["action"], "blocked", "{row}");
    std::thread::sleep(Duration::from_millis(300));
    let rows = attempt_rows_from(node, POD_V4);
    let logged = rule_counter(node, "block-tcp-port-v4", "log-block-tcp-port-v4-connect-meter-full");
    assert!(logged >= 1, "logged by the meter-full rule: {logged}");
    assert_eq!(
        rows[0]["count"].as_u64(),
        Some(logged),
        "each connect reported: {rows:?}"
    );
}

/// The port the victim pod listens on, where the forged SYNs go.
const LISTENING_PORT: u16 = 8080;
/// How many connects the victim makes during the forged flood.
const CONNECTS: u64 = 10;

#[test]
fn bare_acks_drawn_from_a_pod_with_the_meters_full_do_not_hide_its_new_connects() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    allow_forged_sources(node);
    let _listening = answer_every_forged_syn(&topo, &victim, LISTENING_PORT);
    let daemon = audit_daemon_v4(node, &["--table-ownership", "off"]);
    fill(node, "flows_v4", |i| format!("{} . 40000", source_key(i)));
    fill(node, "attempts_v4", source_key);

    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
    let until = Instant::now() + Duration::from_secs(4);
    let forged = std::thread::scope(|s| {
        let flood =
            s.spawn(|| send_syn_flood_from(&topo.pod, ip(API_V4), API_PORT, ip(OTHER_POD_V4), LISTENING_PORT, until));
        // Mid-flood, the victim's own new connects (its first in the minute).
        std::thread::sleep(Duration::from_secs(1));
        for _ in 0..CONNECTS {
            HeldConnection::open(&victim, API_V4, API_PORT).expect("audit blocks nothing");
            std::thread::sleep(Duration::from_millis(100));
        }
        flood.join().unwrap().expect("the forged flood")
    });
    let acks = counted_acks(&victim);
    let spent_by_acks = rule_counter(node, "audit-tcp-port-v4", "log-audit-tcp-port-v4-flowless-meter-full");
    eprintln!("forged SYNs: {forged}; the victim's bare ACKs: {acks}; logged within its allowance for new sources: {spent_by_acks}");
    assert!(acks >= 10_000, "the forged SYNs drew too few ACKs: {acks} for {forged}");
    assert!(
        spent_by_acks >= 1,
        "the ACKs did not reach the meter-full rules: the meters were not full"
    );

    // Every connect reported, and nothing else of the victim.
    let reported = || -> u64 {
        attempt_rows_from(node, OTHER_POD_V4)
            .iter()
            .filter(|r| r["port"] == API_PORT)
            .filter_map(|r| r["count"].as_u64())
            .sum()
    };
    let deadline = Instant::now() + SHOW_DEADLINE;
    while reported() < CONNECTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        reported(),
        CONNECTS,
        "the victim's connects reported: {:?}\nlog:\n{}",
        attempt_rows_from(node, OTHER_POD_V4),
        daemon.log()
    );
}

#[test]
fn a_full_push_meter_does_not_hide_a_held_connections_data_under_forged_syns() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let victim = topo.add_other_pod();
    allow_forged_sources(node);
    let _listening = answer_every_forged_syn(&topo, &victim, LISTENING_PORT);
    // A connection the victim opened before audit began (a watch).
    let mut held = HeldConnection::open(&victim, API_V4, API_PORT).expect("the victim's connection");
    let held_port = held.stream().local_addr().unwrap().port();
    let daemon = audit_daemon_v4(node, &["--table-ownership", "off"]);
    fill(node, "pushes_v4", |i| format!("{} . 40000", source_key(i)));
    fill(node, "flows_v4", |i| format!("{} . 40000", source_key(i)));

    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
    let until = Instant::now() + Duration::from_secs(4);
    let forged = std::thread::scope(|s| {
        let flood =
            s.spawn(|| send_syn_flood_from(&topo.pod, ip(API_V4), API_PORT, ip(OTHER_POD_V4), LISTENING_PORT, until));
        // Mid-flood, the victim uses its connection.
        std::thread::sleep(Duration::from_secs(1));
        for _ in 0..5 {
            held.roundtrip(b"still watching", Duration::from_secs(2))
                .expect("audit blocks nothing");
            std::thread::sleep(Duration::from_millis(200));
        }
        flood.join().unwrap().expect("the forged flood")
    });
    let acks = counted_acks(&victim);
    let spent_by_acks = rule_counter(node, "audit-tcp-port-v4", "log-audit-tcp-port-v4-flowless");
    eprintln!(
        "forged SYNs: {forged}; the victim's bare ACKs: {acks}; logged on its source's allowance: {spent_by_acks}"
    );
    assert!(acks >= 10_000, "the forged SYNs drew too few ACKs: {acks} for {forged}");
    assert!(
        spent_by_acks >= 1,
        "the ACKs did not reach the flowless rules: the flow meter was not full"
    );

    assert_held_connection_reported_once(node, &daemon, OTHER_POD_V4, held_port, SHOW_DEADLINE);
    assert!(
        rule_counter(node, "audit-tcp-port-v4", "log-audit-tcp-port-v4-push-meter-full") >= 1,
        "logged by the push meter-full rule"
    );
}
