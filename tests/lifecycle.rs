//! Real-kernel tests of the block's life cycle, for each backend (nftables,
//! iptables-nft, iptables-legacy): `apply` is idempotent, survives (or
//! repairs) another agent's ACCEPT above it, follows policy changes without
//! stale rules, switches backends without leftovers, and `remove` restores
//! the firewall byte for byte, foreign state included. Every firewall change
//! happens in the test's own node namespace.

mod common;

use common::guard_cases::*;
use common::*;

per_backend!(
    apply_is_idempotent,
    foreign_accept_above_us,
    remove_restores_foreign_state_exactly,
    remove_dual_stack_both_hooks_restores_foreign_state_exactly,
    policy_change_leaves_no_stale_block,
);

/// Dual stack, both hooks: every object a backend can create.
fn full_policy(b: Backend) -> GuardPolicy {
    GuardPolicy::new(
        b,
        "both",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    )
}

fn tunnel_v4_policy(b: Backend) -> GuardPolicy {
    GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))])
}

/// Exactly one copy of our objects, all in backend `b`; for iptables, our
/// chain and one jump per `hooked` chain in each family of `families` (v6 flags).
fn assert_one_copy(node: &Netns, b: Backend, families: &[bool], hooked: &[&str], what: &str) {
    assert_eq!(holders(node), vec![b], "{what}: backends holding our objects");
    match b.iptables_variant() {
        None => {
            let ruleset = node.run_ok(&["nft", "list", "ruleset"]);
            assert_eq!(
                count_lines(&ruleset, NFT_TABLE_LINE),
                1,
                "{what}: copies of our table:\n{ruleset}"
            );
        }
        Some(v) => {
            for &v6 in families {
                let save = ipt_save_family(node, v6, v);
                assert_eq!(
                    count_lines(&save, &format!(":{IPT_CHAIN} - [0:0]")),
                    1,
                    "{what}: copies of our chain (v6={v6}):\n{save}"
                );
                for chain in hooked {
                    assert_eq!(
                        count_lines(&save, &jump_line(chain)),
                        1,
                        "{what}: copies of our jump in {chain} (v6={v6}):\n{save}"
                    );
                }
            }
        }
    }
}

fn apply_is_idempotent(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    let policy = full_policy(b);
    let mut snapshots = Vec::new();
    for run in 1..=3 {
        policy.apply(node).expect_code(0, &format!("apply #{run}"));
        snapshots.push(firewall_snapshot(node));
    }
    assert_same_snapshot(&snapshots[0], &snapshots[1], "apply #2 changed the firewall");
    assert_same_snapshot(&snapshots[1], &snapshots[2], "apply #3 changed the firewall");
    assert_one_copy(node, b, &[false, true], &["OUTPUT", "FORWARD"], "after 3 applies");
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod -> API_V4");
    assert_refused_fast(&topo.pod, None, API_V6, API_PORT, "pod -> API_V6");
    assert_refused(
        &curl_from(node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V4) -> API_V4",
    );
    policy.assert_in_sync(node, "status after 3 applies");
}

fn foreign_accept_above_us(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    let policy = tunnel_v4_policy(b);
    policy.apply_ok(node);
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 after apply",
    );

    let accept = ["-I", "FORWARD", "1", "-s", CONTAINER_CIDR_V4, "-j", "ACCEPT"];
    match b.iptables_variant() {
        None => {
            // Our own base chain's reject is final whatever other tables accept.
            ipt_ok(node, false, "nft", &accept);
            add_foreign_nft_accept(node, "foreign_cni", CONTAINER_CIDR_V4);
            assert_refused_fast(
                &topo.pod,
                None,
                API_V4,
                API_PORT,
                "pod -> API_V4 with foreign ACCEPTs (iptables-nft FORWARD 1, nft priority -200)",
            );
            policy.assert_in_sync(node, "status with foreign ACCEPTs");
        }
        Some(v) => {
            ipt_ok(node, false, v, &accept);
            // The bypass is real: iptables evaluates the ACCEPT before our jump.
            assert_served(
                &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
                "pod -> API_V4 with a foreign ACCEPT at FORWARD 1 (bypass)",
            );
            let (r, json) = policy.status(node);
            r.expect_code(3, "status with our jump displaced");
            assert_eq!(json["in_sync"], serde_json::Value::Bool(false), "{json}");
            let drift = json["drift"].as_array().expect("drift is an array");
            assert!(
                drift.iter().any(|d| d.to_string().contains("FORWARD")),
                "drift must name FORWARD: {json}"
            );

            policy.apply_ok(node);
            let first = ipt_ok(node, false, v, &["-S", "FORWARD", "1"]);
            assert_eq!(
                first.trim(),
                jump_line("FORWARD"),
                "after re-apply our jump must be rule 1 of FORWARD"
            );
            let save = ipt_save_family(node, false, v);
            assert_eq!(
                count_lines(&save, &jump_line("FORWARD")),
                1,
                "jumps in FORWARD:\n{save}"
            );
            assert_eq!(
                count_lines(&save, &format!("-A FORWARD -s {CONTAINER_CIDR_V4} -j ACCEPT")),
                1,
                "the foreign ACCEPT must be left in place:\n{save}"
            );
            assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod -> API_V4 after re-apply");
            policy.assert_in_sync(node, "status after re-apply");
        }
    }
}

/// Another agent's state in every firewall: an nft table with a rule, and a
/// FORWARD rule in iptables-nft and iptables-legacy (and in ip6tables when `v6`).
fn load_foreign_state(node: &Netns, v6: bool) {
    add_foreign_nft_accept(node, "foreign_cni", "10.98.0.0/16");
    for variant in ["nft", "legacy"] {
        ipt_ok(
            node,
            false,
            variant,
            &["-A", "FORWARD", "-s", "10.99.0.0/16", "-j", "ACCEPT"],
        );
        if v6 {
            ipt_ok(
                node,
                true,
                variant,
                &["-A", "FORWARD", "-s", "fd00:99::/48", "-j", "ACCEPT"],
            );
        }
    }
}

fn remove_round_trip(topo: &Topology, policy: &GuardPolicy) {
    let node = &topo.node;
    let before = firewall_snapshot(node);
    assert!(!before.contains("!! exit"), "snapshot failed:\n{before}");

    policy.apply_ok(node);
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 after apply",
    );
    assert_ne!(firewall_snapshot(node), before, "apply changed nothing in the firewall");

    remove(node).expect_code(0, "remove");
    assert_same_snapshot(
        &before,
        &firewall_snapshot(node),
        &format!(
            "remove ({}) must restore the firewall byte for byte",
            policy.backend.flag()
        ),
    );
    assert!(holders(node).is_empty(), "objects of ours left: {:?}", holders(node));
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 after remove",
    );
    assert_served(
        &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
        "pod -> API_V6 after remove",
    );

    remove(node).expect_code(0, "second remove");
    assert_same_snapshot(
        &before,
        &firewall_snapshot(node),
        "a second remove changed the firewall",
    );
}

fn remove_restores_foreign_state_exactly(b: Backend) {
    let topo = Topology::new();
    load_foreign_state(&topo.node, false);
    remove_round_trip(&topo, &tunnel_v4_policy(b));
}

fn remove_dual_stack_both_hooks_restores_foreign_state_exactly(b: Backend) {
    let topo = Topology::new();
    // Foreign state in both families of both iptables variants, so every
    // table apply needs already exists (iptables-legacy tables cannot be deleted).
    load_foreign_state(&topo.node, true);
    let policy = full_policy(b);
    remove_round_trip(&topo, &policy);
}

/// `status` finds our chain left in a backend not in use (the iptables-nft
/// presence check asks nf_tables for that one chain over netlink), and
/// stops finding it once it is gone.
#[test]
fn status_reports_our_objects_left_in_another_backend() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let nft = full_policy(Backend::Nftables);
    for other in [Backend::IptablesNft, Backend::IptablesLegacy] {
        nft.clone().with_backend(other).apply_ok(node);
        nft.apply_ok(node);
        // Put a copy back behind apply's back: our chain alone, in `other`.
        let v = other.iptables_variant().expect("an iptables backend");
        ipt_ok(node, false, v, &["-N", IPT_CHAIN]);
        let r = run_guard(node, &nft.args("status"));
        r.expect_code(3, &format!("status with our chain left in {}", other.flag()));
        assert!(
            r.stdout.contains(&format!("{}: stale objects of ours", other.flag())),
            "{}",
            r.stdout
        );
        nft.apply_ok(node);
        nft.assert_in_sync(node, &format!("after apply removed the copy in {}", other.flag()));
    }
    remove(node).expect_code(0, "remove");
}

#[test]
fn backend_switch_leaves_one_backend() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let policy = full_policy(Backend::Nftables);
    for b in [
        Backend::Nftables,
        Backend::IptablesLegacy,
        Backend::IptablesNft,
        Backend::Nftables,
    ] {
        let p = policy.clone().with_backend(b);
        p.apply_ok(node);
        let what = format!("after apply --backend {}", b.flag());
        assert_eq!(holders(node), vec![b], "{what}: backends holding our objects");
        assert_one_copy(node, b, &[false, true], &["OUTPUT", "FORWARD"], &what);
        assert_refused_fast(&topo.pod, None, API_V4, API_PORT, &format!("{what}: pod -> API_V4"));
        assert_refused(
            &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
            &format!("{what}: pod -> API_V6"),
        );
        // status also reports stale objects of ours in other backends.
        p.assert_in_sync(node, &what);
    }
    remove(node).expect_code(0, "remove");
    assert!(holders(node).is_empty(), "objects of ours left: {:?}", holders(node));
    let snap = firewall_snapshot(node);
    assert!(
        !snap.contains(IPT_CHAIN) && !snap.contains("apiserver_guard") && !snap.contains("apiserver-guard"),
        "objects of ours left after remove:\n{snap}"
    );
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 after remove",
    );
    assert_served(
        &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
        "pod -> API_V6 after remove",
    );
}

fn policy_change_leaves_no_stale_block(b: Backend) {
    let topo = Topology::new();
    let node = &topo.node;
    let old = tunnel_v4_policy(b);
    old.apply_ok(node);
    assert_refused(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 (old policy)",
    );
    assert_served(
        &curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME),
        "pod -> OTHER_V4 (old policy)",
    );

    // New apiserver address: the old block must go.
    let moved = GuardPolicy::new(
        b,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(OTHER_V4, Some(API_PORT))],
    );
    moved.apply_ok(node);
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 (apiserver moved)",
    );
    assert_refused_fast(&topo.pod, None, OTHER_V4, API_PORT, "pod -> OTHER_V4 (apiserver moved)");
    moved.assert_in_sync(node, "status of the new policy");
    let (r, _) = old.status(node);
    r.expect_code(3, "status of the old policy after the change");

    // New container CIDR that no longer contains the pod: nothing blocks it.
    let recidr = GuardPolicy::new(b, "tunnel", &["10.5.0.0/16"], &[&endpoint(OTHER_V4, Some(API_PORT))]);
    recidr.apply_ok(node);
    assert_served(
        &curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME),
        "pod -> OTHER_V4 (CIDR changed)",
    );
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "pod -> API_V4 (CIDR changed)",
    );
    recidr.assert_in_sync(node, "status after the CIDR change");

    // Mode change: tunnel -> vpc drops the FORWARD hook.
    let vpc = GuardPolicy::new(b, "vpc", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    vpc.apply_ok(node);
    assert_served(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "pod -> API_V4 (vpc mode)");
    assert_refused(
        &curl_from(node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME),
        "node (src NODE_LOCAL_POD_V4) -> API_V4 (vpc mode)",
    );
    assert_one_copy(node, b, &[false], &["OUTPUT"], "after switching to vpc mode");
    if let Some(v) = b.iptables_variant() {
        let save = ipt_save_family(node, false, v);
        assert_eq!(
            count_lines(&save, &jump_line("FORWARD")),
            0,
            "stale FORWARD jump after switching to vpc mode:\n{save}"
        );
    }
    vpc.assert_in_sync(node, "status after the mode change");
}
