//! The self-lockout guard, on a real kernel: with the node reaching the
//! apiserver from an address inside the container CIDRs, OUTPUT-hook
//! policies (vpc and both modes) that would cut the node off are refused
//! (exit 2, nothing changed, an installed block kept); tunnel mode, or
//! exempting the node's own address, is accepted.
//!
//! Everything runs inside the test's own network namespaces.

mod common;

use common::bad_input_cases::*;
use common::bad_input_checks::*;
use common::*;

/// Address inside the container CIDR that the node uses to reach the apiserver.
const LOCKOUT_SRC_V4: &str = "10.0.250.7";
const LOCKOUT_SRC_V6: &str = "fd00:10:0:250::7";

/// Make the node reach `API_V4`/`API_V6` from an address inside the container CIDRs.
fn route_node_from_container_cidr(topo: &Topology) {
    let node = &topo.node;
    node.ip_ok(&["addr", "add", &format!("{LOCKOUT_SRC_V4}/32"), "dev", NODE_API_IF]);
    node.ip_ok(&[
        "addr",
        "add",
        &format!("{LOCKOUT_SRC_V6}/128"),
        "dev",
        NODE_API_IF,
        "nodad",
    ]);
    node.ip_ok(&[
        "-4",
        "route",
        "replace",
        &format!("{API_V4}/32"),
        "dev",
        NODE_API_IF,
        "src",
        LOCKOUT_SRC_V4,
    ]);
    node.ip_ok(&[
        "-6",
        "route",
        "replace",
        &format!("{API_V6}/128"),
        "dev",
        NODE_API_IF,
        "src",
        LOCKOUT_SRC_V6,
    ]);
    // Preconditions: the kernel picks that source, and the node is served from it.
    for (api, src) in [(API_V4, LOCKOUT_SRC_V4), (API_V6, LOCKOUT_SRC_V6)] {
        let got = node.run_ok(&["ip", "route", "get", api]);
        assert!(
            got.contains(&format!("src {src} ")),
            "route to {api} should use src {src}: {got}"
        );
    }
    let held = HeldConnection::open(node, API_V4, API_PORT).expect("node -> API_V4");
    assert_eq!(held.stream().local_addr().unwrap().ip().to_string(), LOCKOUT_SRC_V4);
    let held6 = HeldConnection::open(node, API_V6, API_PORT).expect("node -> API_V6");
    assert_eq!(held6.stream().local_addr().unwrap().ip().to_string(), LOCKOUT_SRC_V6);
    assert!(
        curl(node, API_V4, API_PORT, MAX_TIME).served(),
        "node -> API_V4 before apply"
    );
}

#[test]
fn self_lockout_is_refused_in_vpc_and_both_modes() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    route_node_from_container_cidr(&topo);
    let dir = TempDir::new("lockout");
    let empty = dir.empty_config();
    let api_v6 = format!("[{API_V6}]:{API_PORT}");
    let api_v4 = format!("{API_V4}:{API_PORT}");

    // (description, extra args, extra env, phrases)
    let v4 = |mode: &'static str, backend: &'static str| {
        (
            format!("v4 --mode {mode} --backend {backend}"),
            owned(&[
                "--container-cidr",
                CONTAINER_CIDR_V4,
                "--apiserver",
                &api_v4,
                "--mode",
                mode,
                "--backend",
                backend,
                "--config",
                &empty,
            ]),
            Vec::<(&str, &str)>::new(),
            owned(&["self-lockout", LOCKOUT_SRC_V4, &api_v4, CONTAINER_CIDR_V4]),
        )
    };
    let mut cases = Vec::new();
    for backend in BACKENDS {
        cases.push(v4("vpc", backend));
        cases.push(v4("both", backend));
    }
    cases.push((
        "v4, default mode (both), apiserver without port".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--apiserver",
            API_V4,
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![],
        owned(&["self-lockout", LOCKOUT_SRC_V4, CONTAINER_CIDR_V4]),
    ));
    cases.push((
        "v4, mode vpc from APISERVER_GUARD_MODE".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--apiserver",
            &api_v4,
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![("APISERVER_GUARD_MODE", "vpc")],
        owned(&["self-lockout", LOCKOUT_SRC_V4]),
    ));
    cases.push((
        "v6 --mode vpc".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V6,
            "--apiserver",
            &api_v6,
            "--mode",
            "vpc",
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![],
        owned(&["self-lockout", LOCKOUT_SRC_V6, &api_v6, CONTAINER_CIDR_V6]),
    ));
    cases.push((
        "exempt covers another address only".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--apiserver",
            &api_v4,
            "--mode",
            "vpc",
            "--exempt",
            "10.0.251.0/24",
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![],
        owned(&["self-lockout", LOCKOUT_SRC_V4]),
    ));

    let check_all = |stage: &str| {
        let before = firewall_snapshot(&topo.node);
        for (what, args, env, phrases) in &cases {
            let r = guard_run(&topo.node, &[], env, &with_cmd("apply", args));
            assert_code(&r, 2, &format!("{stage}: apply {what}"));
            for p in phrases {
                assert!(
                    r.stderr.contains(p.as_str()),
                    "{stage}: apply {what}: stderr lacks {p:?}: {}",
                    r.stderr
                );
            }
            assert_same_snapshot(
                &before,
                &firewall_snapshot(&topo.node),
                &format!("{stage}: apply {what}"),
            );
        }
        assert!(
            curl(&topo.node, API_V4, API_PORT, MAX_TIME).served(),
            "{stage}: node cut off"
        );
    };

    // Nothing installed yet: refusing must not install anything.
    check_all("fresh node");

    // FORWARD cannot cut the node: tunnel mode is accepted and blocks the pod.
    let tunnel = owned(&[
        "--container-cidr",
        &format!("{CONTAINER_CIDR_V4},{CONTAINER_CIDR_V6}"),
        "--apiserver",
        &format!("{api_v4},{api_v6}"),
        "--mode",
        "tunnel",
        "--backend",
        "nftables",
        "--config",
        &empty,
    ]);
    let r = run(&topo.node, &with_cmd("apply", &tunnel));
    assert_code(&r, 0, "apply --mode tunnel with the node's source in the CIDR");
    assert!(
        curl(&topo.node, API_V4, API_PORT, MAX_TIME).served(),
        "tunnel: node must still be served"
    );
    assert!(
        curl(&topo.node, API_V6, API_PORT, MAX_TIME).served(),
        "tunnel: node v6 must still be served"
    );
    let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(c.refused(), "tunnel: pod must be blocked, got {c:?}");

    // With a block in place, a refused lockout policy leaves it as it is.
    check_all("after tunnel apply");
    assert_code(
        &run(&topo.node, &with_cmd("status", &tunnel)),
        0,
        "tunnel block still in sync",
    );

    // Exempting the node's own address makes vpc and both acceptable.
    for mode in ["vpc", "both"] {
        let args = owned(&[
            "--container-cidr",
            &format!("{CONTAINER_CIDR_V4},{CONTAINER_CIDR_V6}"),
            "--apiserver",
            &format!("{api_v4},{api_v6}"),
            "--mode",
            mode,
            "--exempt",
            &format!("{LOCKOUT_SRC_V4}/32,{LOCKOUT_SRC_V6}/128"),
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]);
        let r = run(&topo.node, &with_cmd("apply", &args));
        assert_code(&r, 0, &format!("apply --mode {mode} --exempt <node address>"));
        assert!(
            curl(&topo.node, API_V4, API_PORT, MAX_TIME).served(),
            "{mode} + exempt: node must be served"
        );
        assert!(
            curl(&topo.node, API_V6, API_PORT, MAX_TIME).served(),
            "{mode} + exempt: node v6 must be served"
        );
        // Another container-CIDR address of the node (on lo) is still blocked in OUTPUT.
        let c = curl_from(&topo.node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME);
        assert!(
            c.refused(),
            "{mode}: node-local container source must be blocked, got {c:?}"
        );
    }
    let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(c.refused(), "both + exempt: pod must be blocked, got {c:?}");
}
