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
//! Here the meters are filled with nft (the daemon's table not owned, so
//! another process may add elements): the state the pods make.

mod common;

use std::time::Duration;

use common::daemon_cases::*;
use common::daemon_checks::tunnel_v4_policy;
use common::guard_cases::*;
use common::*;

const SHOW_DEADLINE: Duration = Duration::from_secs(5);
/// A meter's size (`model::METER`).
const METER_SIZE: u32 = 65_535;

/// Fills our table's set `set` in `node` until the kernel refuses more,
/// with the keys `key(i)` (on `lo`, from sources outside every pod's
/// address); checks that it is full. Returns how many were added.
fn fill(node: &Netns, set: &str, key: impl Fn(u32) -> String) -> u32 {
    let add = |from: u32, to: u32| -> bool {
        let keys: Vec<String> = (from..to).map(&key).collect();
        let script = format!("add element inet apiserver_guard {set} {{ {} }}\n", keys.join(", "));
        node.run_stdin(&["nft", "-f", "-"], &script).status.success()
    };
    let mut added = 0;
    for step in [5000, 100, 1] {
        while added + step <= METER_SIZE && add(added, added + step) {
            added += step;
        }
    }
    assert!(added > METER_SIZE - 100, "{set} not filled: {added} added");
    // Full: a new key gets no element.
    assert!(
        !add(METER_SIZE + 1, METER_SIZE + 2),
        "{set} took one more element: not full"
    );
    added
}

/// `"lo" . 10.99.x.y`, the `i`th (from 65,536 on: 10.98.x.y).
fn source_key(i: u32) -> String {
    format!("\"lo\" . 10.{}.{}.{}", 99 - (i >> 16), (i >> 8) & 0xff, i & 0xff)
}

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
    let row = wait_attempt_row(
        node,
        &daemon,
        &format!("{POD_V4}:{held_port}, the connection opened before audit began"),
        SHOW_DEADLINE,
        |r| r["source"] == POD_V4 && r["source_port"] == held_port,
    );
    assert_eq!(
        (row["action"].as_str(), row["count"].as_u64()),
        (Some("audited"), Some(1)),
        "{row}"
    );
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
