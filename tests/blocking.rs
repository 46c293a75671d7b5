//! Real-kernel tests of what the block does to packets, for each backend
//! (nftables, iptables-nft, iptables-legacy): tunnel mode (FORWARD) and vpc
//! mode (OUTPUT) for IPv4, IPv6 and dual stack, port-specific and port-less
//! apiservers, a DNAT'd ClusterIP, an established connection being cut, and
//! `--action drop`, and a control-plane node (an apiserver on the node's own
//! address, refused on its port at every address of the node). Every firewall change happens in the test's own node
//! namespace; traffic flows only between the test's own namespaces.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::guard_cases::*;
use common::*;

/// ClusterIP of the `kubernetes` Service, DNAT'd to the apiserver in the node namespace.
const CLUSTER_IP: &str = "10.96.0.1";
const CLUSTER_PORT: u16 = 443;

per_backend!(
    tunnel_v4_blocks_pod_port_specific,
    tunnel_v4_portless_blocks_every_port,
    vpc_v4_blocks_node_local_container_source,
    tunnel_blocks_dnat_cluster_ip,
    tunnel_cuts_established_connection,
    tunnel_v6_blocks_pod_port_specific,
    vpc_v6_blocks_node_local_container_source,
    dual_stack_both_modes_blocks_everything,
    drop_action_times_out,
    control_plane_node_refuses_pods_at_every_node_address,
);

fn tunnel_v4_blocks_pod_port_specific(b: Backend) {
    let topo = Topology::new();
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "before apply: pod -> API_V4",
    );

    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    policy.apply_ok(&topo.node);

    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "after apply: pod -> API_V4:API_PORT");
    assert_served(
        &curl(&topo.node, API_V4, API_PORT, MAX_TIME),
        "after apply: node -> API_V4:API_PORT",
    );
    assert_served(
        &curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME),
        "after apply: pod -> OTHER_V4:API_PORT (other destination)",
    );
    assert_served(
        &curl(&topo.pod, API_V4, OTHER_PORT, MAX_TIME),
        "after apply: pod -> API_V4:OTHER_PORT (port-specific block)",
    );
    // The v6 family is not part of the policy: untouched.
    assert_served(
        &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
        "after apply: pod -> API_V6 (IPv4-only policy)",
    );
    policy.assert_in_sync(&topo.node, "status after apply");
}

fn tunnel_v4_portless_blocks_every_port(b: Backend) {
    let topo = Topology::new();
    assert_served(
        &curl(&topo.pod, API_V4, OTHER_PORT, MAX_TIME),
        "before apply: pod -> API_V4:OTHER_PORT",
    );
    assert_eq!(
        udp_probe(&topo.pod, API_V4, UDP_CLOSED_PORT, Duration::from_secs(2)),
        UdpOutcome::PortUnreachable,
        "before apply: UDP pod -> API_V4 reaches the apiserver namespace"
    );

    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[API_V4]);
    policy.apply_ok(&topo.node);

    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod -> API_V4:API_PORT (port-less)");
    assert_refused_fast(
        &topo.pod,
        None,
        API_V4,
        OTHER_PORT,
        "pod -> API_V4:OTHER_PORT (port-less)",
    );
    // Non-TCP traffic gets an ICMP "administratively prohibited" from the node.
    assert_eq!(
        udp_probe(&topo.pod, API_V4, UDP_CLOSED_PORT, Duration::from_secs(2)),
        UdpOutcome::Prohibited,
        "after apply: UDP pod -> API_V4 must be rejected with ICMP admin-prohibited"
    );
    assert_eq!(
        udp_probe(&topo.pod, OTHER_V4, UDP_CLOSED_PORT, Duration::from_secs(2)),
        UdpOutcome::PortUnreachable,
        "after apply: UDP pod -> OTHER_V4 is untouched"
    );
    for port in [API_PORT, OTHER_PORT] {
        assert_served(
            &curl(&topo.node, API_V4, port, MAX_TIME),
            &format!("node -> API_V4:{port}"),
        );
        assert_served(
            &curl(&topo.pod, OTHER_V4, port, MAX_TIME),
            &format!("pod -> OTHER_V4:{port}"),
        );
    }
    policy.assert_in_sync(&topo.node, "status after apply");
}

fn vpc_v4_blocks_node_local_container_source(b: Backend) {
    let topo = Topology::new();
    assert_served(
        &curl_from(&topo.node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME),
        "before apply: node (src NODE_LOCAL_POD_V4) -> API_V4",
    );

    let policy = GuardPolicy::new(b, "vpc", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    policy.apply_ok(&topo.node);

    assert_refused_fast(
        &topo.node,
        Some(NODE_LOCAL_POD_V4),
        API_V4,
        API_PORT,
        "node (src NODE_LOCAL_POD_V4) -> API_V4",
    );
    assert_served(
        &curl(&topo.node, API_V4, API_PORT, MAX_TIME),
        "node (own address) -> API_V4",
    );
    assert_served(
        &curl_from(&topo.node, NODE_LOCAL_POD_V4, OTHER_V4, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V4) -> OTHER_V4",
    );
    // vpc mode hooks OUTPUT only: routed pod traffic (FORWARD) is not blocked.
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 through FORWARD in vpc mode",
    );
    policy.assert_in_sync(&topo.node, "status after apply");
}

fn tunnel_blocks_dnat_cluster_ip(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    // A kube-proxy-like DNAT of the ClusterIP to the real apiserver, in the node namespace.
    fw_ok(node, &["nft", "add", "table", "ip", "natt"]);
    fw_ok(
        node,
        &[
            "nft",
            "add",
            "chain",
            "ip",
            "natt",
            "pre",
            "{ type nat hook prerouting priority dstnat; }",
        ],
    );
    let target = format!("{API_V4}:{API_PORT}");
    let port = CLUSTER_PORT.to_string();
    fw_ok(
        node,
        &[
            "nft", "add", "rule", "ip", "natt", "pre", "ip", "daddr", CLUSTER_IP, "tcp", "dport", &port, "dnat", "to",
            &target,
        ],
    );
    assert_served(
        &curl(&topo.pod, CLUSTER_IP, CLUSTER_PORT, MAX_TIME),
        "before apply: pod -> ClusterIP (DNAT to API_V4)",
    );

    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    policy.apply_ok(node);

    assert_refused_fast(
        &topo.pod,
        None,
        CLUSTER_IP,
        CLUSTER_PORT,
        "after apply: pod -> ClusterIP (matched after DNAT)",
    );
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "after apply: pod -> API_V4 directly",
    );
    assert_served(
        &curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME),
        "after apply: pod -> OTHER_V4",
    );
}

fn tunnel_cuts_established_connection(b: Backend) {
    let topo = Topology::new();
    let mut held = HeldConnection::open(&topo.pod, API_V4, API_PORT).expect("open pod -> API_V4");
    held.roundtrip(b"before", Duration::from_secs(2))
        .expect("roundtrip before apply");

    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    policy.apply_ok(&topo.node);

    let start = Instant::now();
    let err = held
        .roundtrip(b"after", Duration::from_secs(2))
        .expect_err("the established pod -> API_V4 connection must be cut after apply");
    // A reset, not a silent drop: the failure comes before the 2 s timeout.
    assert_ne!(
        err.kind(),
        ErrorKind::TimedOut,
        "established connection was not reset, it timed out ({err}) after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "reset took {:?}",
        start.elapsed()
    );
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "after apply: new pod -> API_V4",
    );
}

fn tunnel_v6_blocks_pod_port_specific(b: Backend) {
    let topo = Topology::new();
    assert_served(
        &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
        "before apply: pod -> API_V6",
    );

    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V6], &[&endpoint(API_V6, Some(API_PORT))]);
    policy.apply_ok(&topo.node);

    assert_refused_fast(&topo.pod, None, API_V6, API_PORT, "after apply: pod -> API_V6:API_PORT");
    assert_served(
        &curl(&topo.node, API_V6, API_PORT, MAX_TIME),
        "after apply: node -> API_V6:API_PORT",
    );
    assert_served(
        &curl(&topo.pod, OTHER_V6, API_PORT, MAX_TIME),
        "after apply: pod -> OTHER_V6:API_PORT",
    );
    assert_served(
        &curl(&topo.pod, API_V6, OTHER_PORT, MAX_TIME),
        "after apply: pod -> API_V6:OTHER_PORT (port-specific block)",
    );
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "after apply: pod -> API_V4 (IPv6-only policy)",
    );
    policy.assert_in_sync(&topo.node, "status after apply");
}

fn vpc_v6_blocks_node_local_container_source(b: Backend) {
    let topo = Topology::new();
    assert_served(
        &curl_from(&topo.node, NODE_LOCAL_POD_V6, API_V6, API_PORT, MAX_TIME),
        "before apply: node (src NODE_LOCAL_POD_V6) -> API_V6",
    );

    let policy = GuardPolicy::new(b, "vpc", &[CONTAINER_CIDR_V6], &[&endpoint(API_V6, Some(API_PORT))]);
    policy.apply_ok(&topo.node);

    assert_refused_fast(
        &topo.node,
        Some(NODE_LOCAL_POD_V6),
        API_V6,
        API_PORT,
        "node (src NODE_LOCAL_POD_V6) -> API_V6",
    );
    assert_served(
        &curl(&topo.node, API_V6, API_PORT, MAX_TIME),
        "node (own address) -> API_V6",
    );
    assert_served(
        &curl_from(&topo.node, NODE_LOCAL_POD_V6, OTHER_V6, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V6) -> OTHER_V6",
    );
    assert_served(
        &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
        "pod -> API_V6 through FORWARD in vpc mode",
    );
    policy.assert_in_sync(&topo.node, "status after apply");
}

fn dual_stack_both_modes_blocks_everything(b: Backend) {
    let topo = Topology::new();
    let policy = GuardPolicy::new(
        b,
        "both",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    );
    policy.apply_ok(&topo.node);

    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod -> API_V4");
    assert_refused_fast(&topo.pod, None, API_V6, API_PORT, "pod -> API_V6");
    assert_refused(
        &curl_from(&topo.node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V4) -> API_V4",
    );
    assert_refused(
        &curl_from(&topo.node, NODE_LOCAL_POD_V6, API_V6, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V6) -> API_V6",
    );
    for ip in [API_V4, API_V6] {
        assert_served(
            &curl(&topo.node, ip, API_PORT, MAX_TIME),
            &format!("node (own address) -> {ip}"),
        );
    }
    for ip in [OTHER_V4, OTHER_V6] {
        assert_served(&curl(&topo.pod, ip, API_PORT, MAX_TIME), &format!("pod -> {ip}"));
    }
    policy.assert_in_sync(&topo.node, "status after apply");
}

fn drop_action_times_out(b: Backend) {
    let topo = Topology::new();
    let policy =
        GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]).with_action("drop");
    policy.apply_ok(&topo.node);

    let r = curl(&topo.pod, API_V4, API_PORT, 2);
    assert!(
        r.timed_out(),
        "--action drop: pod -> API_V4 must time out (curl exit 28), got {r:?}"
    );
    assert_served(&curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME), "pod -> OTHER_V4");
    assert_served(&curl(&topo.node, API_V4, API_PORT, MAX_TIME), "node -> API_V4");
    policy.assert_in_sync(&topo.node, "status after apply");
}

/// Port of the apiserver running on the node itself (control-plane node).
const LOCAL_API_PORT: u16 = 6443;

fn control_plane_node_refuses_pods_at_every_node_address(b: Backend) {
    let topo = Topology::new();
    // kube-apiserver binds every address of the node: [::] serves IPv4 and IPv6.
    let _apiserver = Listener::start(&topo.node, "::", LOCAL_API_PORT);
    let _other = Listener::start(&topo.node, "::", OTHER_PORT);
    // Every pod also has an IPv6 link-local address (outside any container
    // CIDR), and reaches the node's link-local address on its interface.
    let ll = node_link_local(&topo.node);
    let node_addrs = [NODE_API_V4, NODE_POD_V4, NODE_API_V6, NODE_POD_V6, ll.as_str()];
    for ip in node_addrs {
        assert_served(
            &curl(&topo.pod, ip, LOCAL_API_PORT, MAX_TIME),
            &format!("before apply: pod -> node {ip}"),
        );
    }

    // Named by one address only, as the kubeconfig or the EndpointSlice would.
    let policy = GuardPolicy::new(
        b,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(NODE_API_V4, Some(LOCAL_API_PORT))],
    );
    policy.apply_ok(&topo.node);

    for ip in node_addrs {
        assert_refused_fast(&topo.pod, None, ip, LOCAL_API_PORT, &format!("pod -> node {ip}"));
        assert_served(
            &curl(&topo.pod, ip, OTHER_PORT, MAX_TIME),
            &format!("pod -> node {ip}, another port"),
        );
        if ip != ll {
            // (The zone in `ll` names the pod's interface: the node reaches it as its own.)
            assert_served(
                &curl(&topo.node, ip, LOCAL_API_PORT, MAX_TIME),
                &format!("node itself -> {ip}"),
            );
        }
    }
    for ip in [NODE_API_V4, NODE_API_V6] {
        assert_served(
            &curl(&topo.api, ip, LOCAL_API_PORT, MAX_TIME),
            &format!("another host -> node {ip}"),
        );
    }
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> a remote destination on another port",
    );
    policy.assert_in_sync(&topo.node, "status after apply");

    // An IPv4-only policy still refuses the pod's link-local way in.
    let v4_only = GuardPolicy::new(
        b,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(NODE_API_V4, Some(LOCAL_API_PORT))],
    );
    v4_only.apply_ok(&topo.node);
    assert_refused_fast(
        &topo.pod,
        None,
        &ll,
        LOCAL_API_PORT,
        "IPv4-only policy: pod -> node link-local",
    );
    v4_only.assert_in_sync(&topo.node, "status of the IPv4-only policy");
}

/// The node's link-local address on the pod's side, with the zone curl needs
/// from the pod (`fe80::...%25eth0`, URL-encoded).
fn node_link_local(node: &Netns) -> String {
    let out = node.run_ok(&["ip", "-6", "-o", "addr", "show", "dev", NODE_POD_IF, "scope", "link"]);
    let addr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on {NODE_POD_IF}: {out}"));
    format!("{addr}%25{POD_IF}")
}
