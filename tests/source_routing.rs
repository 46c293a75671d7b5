//! A node that honours IPv4 source routes lets a pod past the block (break-it
//! find of issue 13): a SYN addressed to the node with a loose source route
//! through the apiserver passes the forward hook with the node as its
//! destination and is re-addressed to the apiserver after it. The kernel
//! does that only with `net.ipv4.conf.all.accept_source_route=1` (0 by
//! default), so the daemon reads it at start and at each resync: a warning
//! and `apiserver_guard_node_accepts_source_routes 1` while it is on, a line
//! and 0 when it is off again; nothing while it was never on.

mod common;

use std::time::Duration;

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const GAUGE: &str = "apiserver_guard_node_accepts_source_routes";
const WARNING: &str = "this node accepts IPv4 source-routed packets";
const OFF_AGAIN: &str = "no longer accepts IPv4 source-routed packets";

fn set(node: &Netns, on: bool) {
    node.sysctl(&[("net.ipv4.conf.all.accept_source_route", if on { "1" } else { "0" })]);
}

#[test]
fn the_daemon_warns_while_the_node_accepts_source_routes() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    // A new namespace copies the host's IPv4 `all` settings: start from the kernel's default.
    set(node, false);
    let policy = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    );
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &["--resync-interval", "300ms"]));
    daemon.wait_ready();
    let gauge_is = |v: f64| move |s: &prometheus_parse::Scrape| sample(s, GAUGE, &[]) == Some(v);
    wait_metrics(node, "source routes off (the default)", gauge_is(0.0), READY_TIMEOUT);
    assert!(!daemon.log().contains(WARNING), "{}", daemon.log());

    set(node, true);
    wait_metrics(node, "source routes on", gauge_is(1.0), READY_TIMEOUT);
    daemon.wait_log(WARNING, 1, READY_TIMEOUT);
    assert!(
        daemon
            .log()
            .contains("sysctl -w net.ipv4.conf.all.accept_source_route=0"),
        "the warning says what to do:\n{}",
        daemon.log()
    );
    // Said once while it stays on.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(daemon.log().matches(WARNING).count(), 1, "{}", daemon.log());

    set(node, false);
    wait_metrics(node, "source routes off again", gauge_is(0.0), READY_TIMEOUT);
    daemon.wait_log(OFF_AGAIN, 1, READY_TIMEOUT);
    assert!(daemon.exited().is_none());
}
