//! Smoke tests of the integration-test harness itself (`tests/common`):
//! the pod/node/apiserver topology routes IPv4 and IPv6, listeners serve and
//! really stop, held connections echo, fresh namespaces have no firewall
//! state, topologies can coexist, and namespaces are removed on drop/panic.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const MAX_TIME: u32 = 5;

/// Names listed by `ip netns list` (read-only query of /run/netns).
fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    assert!(
        out.status.success(),
        "ip netns list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn assert_served(r: &CurlResult, what: &str) {
    assert!(r.served(), "{what}: expected HTTP 200, got {r:?}");
}

#[test]
fn pod_reaches_apiserver_v4_and_v6() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    assert_served(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API_V4");
    assert_served(&curl(&topo.pod, API_V6, API_PORT, MAX_TIME), "pod -> API_V6");
    assert_served(
        &curl(&topo.pod, OTHER_V4, OTHER_PORT, MAX_TIME),
        "pod -> OTHER_V4:OTHER_PORT",
    );
    assert_served(
        &curl(&topo.pod, OTHER_V6, OTHER_PORT, MAX_TIME),
        "pod -> OTHER_V6:OTHER_PORT",
    );
}

#[test]
fn node_reaches_apiserver() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    assert_served(&curl(&topo.node, API_V4, API_PORT, MAX_TIME), "node -> API_V4");
    assert_served(&curl(&topo.node, API_V6, API_PORT, MAX_TIME), "node -> API_V6");
}

#[test]
fn node_local_container_source_reaches_apiserver() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    assert_served(
        &curl_from(&topo.node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V4) -> API_V4",
    );
    assert_served(
        &curl_from(&topo.node, NODE_LOCAL_POD_V6, API_V6, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V6) -> API_V6",
    );
}

#[test]
fn held_connection_roundtrips() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    for ip in [API_V4, API_V6] {
        let mut conn =
            HeldConnection::open(&topo.pod, ip, API_PORT).unwrap_or_else(|e| panic!("open pod -> {ip}: {e}"));
        let local = conn.stream().local_addr().expect("local addr");
        let expected_src = if ip == API_V4 { POD_V4 } else { POD_V6 };
        assert_eq!(local.ip().to_string(), expected_src, "source of pod -> {ip}");
        for msg in [&b"hello"[..], b"GE", b"second message\n"] {
            conn.roundtrip(msg, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("roundtrip {msg:?} pod -> {ip}: {e}"));
        }
    }
}

#[test]
fn stopped_listeners_refuse_and_cut_connections() {
    if !common::can_run() {
        return;
    }
    let mut topo = Topology::new();
    let mut held = HeldConnection::open(&topo.pod, API_V4, API_PORT).expect("open held connection");
    held.roundtrip(b"before", Duration::from_secs(2))
        .expect("roundtrip before stop");

    topo.stop_listeners();

    let r = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(
        r.refused(),
        "pod -> API_V4 after stop_listeners: expected refused (exit 7), got {r:?}"
    );
    assert!(
        r.elapsed < Duration::from_secs(3),
        "refusal should be immediate, took {:?}",
        r.elapsed
    );
    let r6 = curl(&topo.pod, API_V6, API_PORT, MAX_TIME);
    assert!(
        r6.refused(),
        "pod -> API_V6 after stop_listeners: expected refused, got {r6:?}"
    );
    assert!(
        held.roundtrip(b"after", Duration::from_secs(2)).is_err(),
        "held connection must be closed when listeners stop"
    );

    topo.start_listeners();
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 after restart",
    );
}

#[test]
fn fresh_node_has_no_firewall_tables() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let snap = firewall_snapshot(&topo.node);
    for header in [
        "nft --stateless list ruleset",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        assert!(
            snap.contains(&format!("==> {header} <==")),
            "missing section {header}:\n{snap}"
        );
    }
    let tables: Vec<&str> = snap
        .lines()
        .filter(|l| l.starts_with("table ") || l.starts_with('*'))
        .collect();
    assert!(
        tables.is_empty(),
        "fresh node netns has firewall tables {tables:?}:\n{snap}"
    );
    assert!(!snap.contains("!! exit"), "a snapshot command failed:\n{snap}");
    // Traffic and time must not change the snapshot.
    assert_served(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API_V4");
    assert_eq!(snap, firewall_snapshot(&topo.node), "snapshot is not stable");
}

#[test]
fn two_topologies_coexist() {
    if !common::can_run() {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Topology::new);
        let b = s.spawn(Topology::new);
        (a.join().expect("topology a"), b.join().expect("topology b"))
    });
    let mut names: Vec<&str> = a.netns_names().into_iter().chain(b.netns_names()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        6,
        "namespace names collide: {:?} vs {:?}",
        a.netns_names(),
        b.netns_names()
    );
    for (label, topo) in [("a", &a), ("b", &b)] {
        assert_served(
            &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
            &format!("{label}: pod -> API_V4"),
        );
        assert_served(
            &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
            &format!("{label}: pod -> API_V6"),
        );
    }
}

#[test]
fn dropped_topology_removes_namespaces() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let names: Vec<String> = topo.netns_names().iter().map(|s| s.to_string()).collect();
    let listed = netns_list();
    for n in &names {
        assert!(
            listed.contains(n),
            "{n} should exist while the topology lives: {listed:?}"
        );
    }
    drop(topo);
    let listed = netns_list();
    let left: Vec<&String> = names.iter().filter(|n| listed.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
}

#[test]
fn namespaces_removed_when_test_panics() {
    if !common::can_run() {
        return;
    }
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::new();
        names.extend(topo.netns_names().iter().map(|s| s.to_string()));
        let extra = Netns::new("extra");
        names.push(extra.name.clone());
        panic!("deliberate panic with a live topology");
    }));
    assert!(result.is_err(), "the closure must have panicked");
    assert_eq!(names.len(), 4);
    let listed = netns_list();
    let left: Vec<&String> = names.iter().filter(|n| listed.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left after panic: {left:?}");
}
