//! `--backend iptables` picks the variant the way the `iptables-wrappers`
//! project does (kubernetes-sigs/iptables-wrappers; the order is in
//! `src/backend/detect.rs`), on a real kernel: each host state below is built
//! with the iptables-legacy / iptables-nft / ip6tables-* tools in a fresh node
//! namespace, then `apply --backend iptables` and `status` must put and find
//! our chain APISERVER-GUARD in the variant iptables-wrappers would pick (and
//! only there; `status` detects again, after our rules went in, and must
//! agree), name the signal that decided, create no legacy table but
//! our own, and the pod must be refused (curl, IPv4 and IPv6) while other
//! destinations are still served.
//!
//! The states are iptables-wrappers' own tests (`test/test.sh`, v3 and v2:
//! a hint chain in the chosen variant's mangle table, junk BAD-1/BAD-2
//! chains in the other's filter; v2's "old" rules: kubelet-like rules and no
//! hint) and the corners of its order (`internal/iptables/detect.go`
//! `DetectMode`: nft mangle IPv4, nft mangle IPv6, legacy all tables IPv4,
//! legacy IPv6; no hint: v2's rule count, legacy only with strictly more).

mod common;

use common::guard_cases::*;
use common::*;

/// One iptables command: the tool (`iptables-legacy`, `ip6tables-nft`, ...) and its arguments.
type Step = (&'static str, Vec<&'static str>);

/// kubelet's hint (or canary) chain `chain` in `table`, made with `tool`.
fn hint(tool: &'static str, table: &'static str, chain: &'static str) -> Vec<Step> {
    vec![(tool, vec!["-t", table, "-N", chain])]
}

/// test.sh's "junk in the other iptables system": two chains, one rule each, in filter.
fn junk(tool: &'static str) -> Vec<Step> {
    vec![
        (tool, vec!["-t", "filter", "-N", "BAD-1"]),
        (tool, vec!["-t", "filter", "-A", "BAD-1", "-j", "ACCEPT"]),
        (tool, vec!["-t", "filter", "-N", "BAD-2"]),
        (tool, vec!["-t", "filter", "-A", "BAD-2", "-j", "DROP"]),
    ]
}

/// v2 test.sh's "old" rules (kubelet before 1.17, no hint chain): 4 rules in nat and filter.
fn old_kubelet_rules(tool: &'static str) -> Vec<Step> {
    vec![
        (tool, vec!["-t", "nat", "-N", "KUBE-MARK-DROP"]),
        (
            tool,
            vec![
                "-t",
                "nat",
                "-A",
                "KUBE-MARK-DROP",
                "-j",
                "MARK",
                "--set-xmark",
                "0x8000/0x8000",
            ],
        ),
        (tool, vec!["-t", "filter", "-N", "KUBE-FIREWALL"]),
        (
            tool,
            vec![
                "-t",
                "filter",
                "-A",
                "KUBE-FIREWALL",
                "-m",
                "comment",
                "--comment",
                "kubernetes firewall for dropping marked packets",
                "-m",
                "mark",
                "--mark",
                "0x8000/0x8000",
                "-j",
                "DROP",
            ],
        ),
        (tool, vec!["-t", "filter", "-I", "OUTPUT", "-j", "KUBE-FIREWALL"]),
        (tool, vec!["-t", "filter", "-I", "INPUT", "-j", "KUBE-FIREWALL"]),
    ]
}

/// Docker-like rules (nat masquerade, DOCKER-USER in FORWARD): 3 rules.
fn docker_rules(tool: &'static str) -> Vec<Step> {
    vec![
        (tool, vec!["-t", "nat", "-N", "DOCKER"]),
        (
            tool,
            vec![
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "172.17.0.0/16",
                "!",
                "-o",
                "docker0",
                "-j",
                "MASQUERADE",
            ],
        ),
        (tool, vec!["-t", "filter", "-N", "DOCKER-USER"]),
        (tool, vec!["-t", "filter", "-A", "DOCKER-USER", "-j", "RETURN"]),
        (tool, vec!["-t", "filter", "-A", "FORWARD", "-j", "DOCKER-USER"]),
    ]
}

/// One host state and what iptables-wrappers picks there.
struct HostState {
    steps: Vec<Step>,
    /// `legacy` or `nft`.
    want: &'static str,
    /// Part of the reason `status` must give.
    reason: &'static str,
}

fn state(parts: Vec<Vec<Step>>, want: &'static str, reason: &'static str) -> HostState {
    HostState {
        steps: parts.into_iter().flatten().collect(),
        want,
        reason,
    }
}

/// The legacy tables of the node namespace, IPv4 and IPv6 (read from /proc: creates nothing).
fn legacy_tables(ns: &Netns) -> Vec<String> {
    ["ip_tables_names", "ip6_tables_names"]
        .iter()
        .flat_map(|f| {
            let out = ns.run(&["cat", &format!("/proc/self/net/{f}")]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut t: Vec<String> = text.lines().map(|l| format!("{f}:{}", l.trim())).collect();
            t.sort();
            t
        })
        .collect()
}

/// `args` with the policy's `--backend <variant>` replaced by `--backend iptables` (detected).
fn detected(mut args: Vec<String>) -> Vec<String> {
    let at = args
        .iter()
        .position(|a| a == "--backend")
        .expect("--backend in the policy's args");
    args[at + 1] = "iptables".into();
    args
}

fn check(name: &str, s: HostState) {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    for (tool, args) in &s.steps {
        let mut argv = vec![*tool, "-w", "10"];
        argv.extend(args.iter().copied());
        node.run_ok(&argv);
    }
    let tables_before = legacy_tables(node);
    let want = match s.want {
        "legacy" => Backend::IptablesLegacy,
        _ => Backend::IptablesNft,
    };
    let policy = GuardPolicy::new(
        want,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    );

    let applied = run_guard(node, &detected(policy.args("apply")));
    applied.expect_code(0, &format!("{name}: apply --backend iptables"));
    // apply names the variant and the signal that decided (detected before our rules went in).
    let said = applied.stdout.trim();
    assert!(
        said.contains(&format!("[{}: chosen with --backend iptables; ", want.flag())) && said.contains(s.reason),
        "{name}: apply should name {} and say {:?}: {said}",
        want.flag(),
        s.reason
    );

    let mut status_args = detected(policy.args("status"));
    status_args.extend(["--output".to_owned(), "json".to_owned()]);
    let status = run_guard(node, &status_args);
    status.expect_code(0, &format!("{name}: status --backend iptables"));
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(json["backend"], want.flag(), "{name}: {json}");
    assert_eq!(json["in_sync"], true, "{name}: {json}");
    eprintln!("{name}: {said}");

    // Our chain is in the chosen variant, both families, and nowhere else.
    assert_eq!(holders(node), vec![want], "{name}: who holds our objects");
    for v6 in [false, true] {
        let save = ipt_save_family(node, v6, s.want);
        assert_eq!(
            count_lines(&save, &format!(":{IPT_CHAIN} - [0:0]")),
            1,
            "{name}: our chain in {} (v6: {v6}):\n{save}",
            s.want
        );
    }

    // Detection created no legacy table; only our own apply in legacy adds filter.
    let mut expected = tables_before.clone();
    if s.want == "legacy" {
        for f in ["ip_tables_names:filter", "ip6_tables_names:filter"] {
            if !expected.iter().any(|t| t == f) {
                expected.push(f.into());
            }
        }
    }
    let mut after = legacy_tables(node);
    after.sort();
    expected.sort();
    assert_eq!(after, expected, "{name}: legacy tables before {tables_before:?}");

    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, &format!("{name}: IPv4"));
    assert_refused_fast(&topo.pod, None, API_V6, API_PORT, &format!("{name}: IPv6"));
    assert_served(
        &curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME),
        &format!("{name}: other destination"),
    );
}

// iptables-wrappers test/test.sh (v3 HEAD; v2 with rulestype "new").

#[test]
fn wrappers_test_sh_legacy() {
    check(
        "test.sh legacy",
        state(
            vec![
                hint("iptables-legacy", "mangle", "KUBE-IPTABLES-HINT"),
                junk("iptables-nft"),
            ],
            "legacy",
            "KUBE-IPTABLES-HINT chain (mangle table, IPv4) is in iptables-legacy",
        ),
    );
}

#[test]
fn wrappers_test_sh_nft() {
    check(
        "test.sh nft",
        state(
            vec![
                hint("iptables-nft", "mangle", "KUBE-IPTABLES-HINT"),
                junk("iptables-legacy"),
            ],
            "nft",
            "KUBE-IPTABLES-HINT chain (mangle table, IPv4) is in iptables-nft",
        ),
    );
}

// v2 test/test.sh with rulestype "old" (70d7897): no hint, kubelet-like rules, junk in the other.

#[test]
fn wrappers_test_sh_legacy_old_rules() {
    check(
        "test.sh legacy old",
        state(
            vec![old_kubelet_rules("iptables-legacy"), junk("iptables-nft")],
            "legacy",
            "iptables-legacy holds more rules",
        ),
    );
}

#[test]
fn wrappers_test_sh_nft_old_rules() {
    check(
        "test.sh nft old",
        state(
            vec![old_kubelet_rules("iptables-nft"), junk("iptables-legacy")],
            "nft",
            "no more rules than iptables-nft",
        ),
    );
}

// DetectMode's order, corner by corner.

/// The first finding: kubelet's canary alone in the legacy mangle
/// table (no legacy filter table at all): legacy.
#[test]
fn canary_alone_in_legacy_mangle() {
    check(
        "canary in legacy mangle",
        state(
            vec![hint("iptables-legacy", "mangle", "KUBE-KUBELET-CANARY")],
            "legacy",
            "KUBE-KUBELET-CANARY chain (mangle table, IPv4) is in iptables-legacy",
        ),
    );
}

/// `iptables-legacy-save` dumps every table: a hint in legacy nat counts,
/// even next to more rules (Docker's) in nft.
#[test]
fn legacy_hint_in_nat_next_to_docker_in_nft() {
    check(
        "legacy nat hint, Docker in nft",
        state(
            vec![
                hint("iptables-legacy", "nat", "KUBE-IPTABLES-HINT"),
                docker_rules("iptables-nft"),
                junk("iptables-nft"),
            ],
            "legacy",
            "KUBE-IPTABLES-HINT chain (nat table, IPv4) is in iptables-legacy",
        ),
    );
}

#[test]
fn legacy_canary_in_filter_next_to_rules_in_nft() {
    check(
        "legacy filter canary, rules in nft",
        state(
            vec![
                hint("iptables-legacy", "filter", "KUBE-KUBELET-CANARY"),
                old_kubelet_rules("iptables-nft"),
            ],
            "legacy",
            "KUBE-KUBELET-CANARY chain (filter table, IPv4) is in iptables-legacy",
        ),
    );
}

/// `ip6tables-legacy-save` is read too: an IPv6-only hint decides.
#[test]
fn legacy_ipv6_only_hint() {
    check(
        "legacy IPv6-only hint",
        state(
            vec![
                hint("ip6tables-legacy", "mangle", "KUBE-IPTABLES-HINT"),
                docker_rules("iptables-nft"),
            ],
            "legacy",
            "KUBE-IPTABLES-HINT chain (mangle table, IPv6) is in iptables-legacy",
        ),
    );
}

/// `ip6tables-nft-save -t mangle` is read second: an IPv6-only hint in nft
/// wins over more rules in legacy.
#[test]
fn nft_ipv6_only_hint() {
    check(
        "nft IPv6-only hint",
        state(
            vec![
                hint("ip6tables-nft", "mangle", "KUBE-IPTABLES-HINT"),
                old_kubelet_rules("iptables-legacy"),
            ],
            "nft",
            "KUBE-IPTABLES-HINT chain (mangle table, IPv6) is in iptables-nft",
        ),
    );
}

/// nft is looked at first: a hint in both variants means nft.
#[test]
fn hints_in_both_variants() {
    check(
        "hints in both",
        state(
            vec![
                hint("iptables-legacy", "mangle", "KUBE-IPTABLES-HINT"),
                old_kubelet_rules("iptables-legacy"),
                hint("iptables-nft", "mangle", "KUBE-KUBELET-CANARY"),
            ],
            "nft",
            "iptables-legacy has one too",
        ),
    );
}

/// In nft only the mangle table is read (`-t mangle`): a canary in nft's
/// nat table is no hint, and the rule count decides.
#[test]
fn nft_canary_outside_mangle_is_no_hint() {
    check(
        "nft nat canary",
        state(
            vec![
                hint("iptables-nft", "nat", "KUBE-KUBELET-CANARY"),
                old_kubelet_rules("iptables-legacy"),
            ],
            "legacy",
            "no kubelet hint chain in either variant, and iptables-legacy holds more rules",
        ),
    );
}

/// No hint, as many rules in each: `-gt`, so nft (2a9e1a1).
#[test]
fn no_hint_equal_counts_go_to_nft() {
    check(
        "equal counts",
        state(vec![junk("iptables-legacy"), junk("iptables-nft")], "nft", "(2 vs 2)"),
    );
}

#[test]
fn nothing_anywhere_goes_to_nft() {
    check("empty host", state(vec![], "nft", "(0 vs 0)"));
}
