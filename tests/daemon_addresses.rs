//! Real-kernel test that the daemon follows the node's addresses: when an
//! apiserver address (a keepalived VIP) moves onto the node, pods are refused
//! on its port at every local address at once (INPUT hook and the
//! every-local-address rule), long before the next resync; when it leaves,
//! those rules go again.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const VIP: &str = "192.168.50.100";
const VIP_PORT: u16 = 6443;
/// Far less than the default 10 s resync: the address watch, not the timer, must do it.
const FOLLOW_WITHIN: Duration = Duration::from_secs(3);

/// Polls `cond` until true or `FOLLOW_WITHIN` passes; returns how long it took.
#[track_caller]
fn within(what: &str, d: &Daemon, cond: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < FOLLOW_WITHIN,
            "{what}: not within {FOLLOW_WITHIN:?}\n{}",
            d.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

#[test]
fn a_vip_moving_onto_the_node_is_blocked_at_every_local_address_at_once() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let _apiserver = Listener::start(&topo.node, "::", VIP_PORT);
    let policy = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(VIP, Some(VIP_PORT))],
    );
    let d = Daemon::spawn(&topo.node, &daemon_args(&policy, &[]));
    d.wait_ready();
    assert_served(
        &curl(&topo.pod, NODE_POD_V4, VIP_PORT, MAX_TIME),
        "before: the node's own apiserver is not in the policy's addresses",
    );

    topo.node.ip_ok(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    let took = within("VIP added", &d, || {
        curl(&topo.pod, VIP, VIP_PORT, MAX_TIME).refused() && curl(&topo.pod, NODE_POD_V4, VIP_PORT, MAX_TIME).refused()
    });
    eprintln!("VIP added -> pods refused at every node address in {took:?}");
    assert!(d.log().contains("apiservers on this node now"), "{}", d.log());
    assert_served(&curl(&topo.node, VIP, VIP_PORT, MAX_TIME), "the node itself");
    policy.assert_in_sync(&topo.node, "status with the VIP here");

    topo.node.ip_ok(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    let took = within("VIP removed", &d, || {
        !topo
            .node
            .run_ok(&["nft", "list", "table", "inet", "apiserver_guard"])
            .contains("hook input")
    });
    eprintln!("VIP removed -> INPUT hook gone in {took:?}");
    assert_served(
        &curl(&topo.pod, NODE_POD_V4, VIP_PORT, MAX_TIME),
        "after the VIP left: the node's other address is not an apiserver any more",
    );
}
