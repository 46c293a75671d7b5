//! A full flow meter must not hide a connection opened before audit began
//! (a review's find of issue 13). In audit mode every connect a pod makes
//! adds an element to `flows_v4` (its handshake's ACK is a packet other than
//! a connect), so pods need no privilege to keep its 65,535 elements taken:
//! six pods making 200 connects a second each. The kernel then adds no
//! element for a new flow, and the flow rules skip every packet of one, so
//! the first data of a connection opened before audit began went unlogged.
//! Fixed by the flowless rules (`nft_desired::flowless_rules`): a packet of a
//! flow the meter holds no element for is logged against its source's own
//! allowance.
//!
//! Here the meter is filled with nft (the daemon's table not owned, so
//! another process may add elements): the same state the pods' connects make.

mod common;

use std::time::Duration;

use common::daemon_cases::*;
use common::*;

const SHOW_DEADLINE: Duration = Duration::from_secs(5);
/// The flow meter's size (`model::METER`).
const METER_SIZE: u32 = 65_535;

/// Fills our table's `flows_v4` in `node` until the kernel refuses more:
/// keys on `lo` from sources outside every pod's address. Returns how many
/// were added.
fn fill_flows_v4(node: &Netns) -> u32 {
    let key = |i: u32| format!("\"lo\" . 10.99.{}.{} . 40000", i >> 8, i & 0xff);
    let add = |from: u32, to: u32| -> bool {
        let keys: Vec<String> = (from..to).map(key).collect();
        let script = format!("add element inet apiserver_guard flows_v4 {{ {} }}\n", keys.join(", "));
        node.run_stdin(&["nft", "-f", "-"], &script).status.success()
    };
    let mut added = 0;
    for step in [5000, 100, 1] {
        while added + step <= METER_SIZE && add(added, added + step) {
            added += step;
        }
    }
    added
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
    let added = fill_flows_v4(node);
    assert!(added > METER_SIZE - 100, "flows_v4 not filled: {added} added");
    // The meter is full: a new flow gets no element.
    let one_more = node.run_stdin(
        &["nft", "-f", "-"],
        "add element inet apiserver_guard flows_v4 { \"lo\" . 10.98.0.1 . 40000 }\n",
    );
    assert!(!one_more.status.success(), "flows_v4 took one more element: not full");

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
