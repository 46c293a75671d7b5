//! The iptables read-back catches every change to our objects, on a real
//! kernel, for iptables-nft and iptables-legacy: after `apply`, each tamper of
//! the matrix below (done from outside with the iptables tools; a rule of
//! ours moved within our chain included) must make
//! `status` exit 3 with a plain-language finding naming what changed (no Rust
//! debug text), `apply` must repair it (status 0 after), and the pod must be
//! refused again (curl). The same matrix for the nftables backend lives with
//! the netlink read-back.

mod common;

use common::guard_cases::*;
use common::*;

/// One way to tamper: what it is, and the iptables commands (IPv4 arguments, run in order) that do it.
struct Tamper {
    what: &'static str,
    args: Vec<Vec<String>>,
}

/// One iptables command.
fn rule(spec: &str) -> Vec<Vec<String>> {
    vec![spec.split_whitespace().map(str::to_string).collect()]
}

/// Our chain's IPv4 log rule (rule 1, before the block rule), with this NFLOG group and limit.
fn log_rule(group: u16, rate: u32) -> String {
    format!(
        "-s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {API_PORT} -m hashlimit --hashlimit-upto {rate}/sec \
         --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name apiserver-guard-m32 --hashlimit-htable-max 65536 \
         --hashlimit-htable-expire 60000 -m comment --comment apiserver-guard -j NFLOG \
         --nflog-prefix apiserver-guard:block-tcp-port-v4 --nflog-group {group} --nflog-size 96"
    )
}

/// Our chain's one IPv4 block rule (rule 2), as rendered for the tunnel policy below.
fn our_rule() -> String {
    format!(
        "-s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {API_PORT} -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
    )
}

fn matrix() -> Vec<Tamper> {
    let ours = our_rule();
    vec![
        Tamper {
            what: "negated source match",
            args: rule(&format!(
                "-R APISERVER-GUARD 2 ! -s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {API_PORT} -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
            )),
        },
        Tamper {
            what: "source and destination swapped",
            args: rule(&format!(
                "-R APISERVER-GUARD 2 -d {CONTAINER_CIDR_V4} -s {API_V4}/32 -p tcp -m tcp --dport {API_PORT} -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
            )),
        },
        Tamper {
            what: "verdict changed to ACCEPT",
            args: rule(&format!(
                "-R APISERVER-GUARD 2 -s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {API_PORT} -m comment --comment apiserver-guard -j ACCEPT"
            )),
        },
        Tamper {
            what: "port changed",
            args: rule(&format!(
                "-R APISERVER-GUARD 2 -s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {OTHER_PORT} -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
            )),
        },
        Tamper {
            what: "log rule's NFLOG group changed",
            args: rule(&format!("-R APISERVER-GUARD 1 {}", log_rule(5, 10))),
        },
        Tamper {
            what: "log rule's per-source limit raised",
            args: rule(&format!("-R APISERVER-GUARD 1 {}", log_rule(1443, 10000))),
        },
        Tamper {
            what: "log rule deleted",
            args: rule(&format!("-D APISERVER-GUARD {}", log_rule(1443, 10))),
        },
        Tamper {
            what: "a foreign ACCEPT inserted first in our chain",
            args: rule(&format!("-I APISERVER-GUARD 1 -s {CONTAINER_CIDR_V4} -j ACCEPT")),
        },
        Tamper {
            what: "our log rule moved below our block rule",
            args: [
                rule("-D APISERVER-GUARD 1"),
                rule(&format!("-A APISERVER-GUARD {}", log_rule(1443, 10))),
            ]
            .concat(),
        },
        Tamper {
            what: "an extra rule with our comment",
            args: rule("-A APISERVER-GUARD -s 10.9.0.0/16 -m comment --comment apiserver-guard -j RETURN"),
        },
        Tamper {
            what: "our rule deleted",
            args: rule(&format!("-D APISERVER-GUARD {ours}")),
        },
        Tamper {
            what: "our chain flushed",
            args: rule("-F APISERVER-GUARD"),
        },
        Tamper {
            what: "a foreign ACCEPT above our jump",
            args: rule(&format!("-I FORWARD 1 -s {CONTAINER_CIDR_V4} -j ACCEPT")),
        },
        Tamper {
            what: "our jump deleted",
            args: rule("-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD"),
        },
        Tamper {
            what: "a second jump appended",
            args: rule("-A FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD"),
        },
        Tamper {
            what: "a goto copy of our jump below rule 1 (skips the rest of FORWARD)",
            args: rule("-I FORWARD 2 -m comment --comment apiserver-guard -g APISERVER-GUARD"),
        },
        Tamper {
            what: "a changed copy of our jump (a source match added)",
            args: rule("-A FORWARD -s 10.9.0.0/16 -m comment --comment apiserver-guard -j APISERVER-GUARD"),
        },
    ]
}

/// `remove` with a changed copy of our jump in FORWARD: it was refused
/// (iptables-nft: `CHAIN_DEL failed (Device or resource busy)`; our chain
/// cannot go while a rule jumps to it) and left everything; now the copy
/// goes first, and nothing of ours is left, in both variants.
fn remove_with_a_changed_copy_of_our_jump(b: Backend) {
    let variant = b.iptables_variant().expect("an iptables backend");
    let topo = Topology::new();
    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    policy.apply_ok(&topo.node);
    let spec = "-A FORWARD -s 10.9.0.0/16 -m comment --comment apiserver-guard -j APISERVER-GUARD";
    let args: Vec<&str> = spec.split_whitespace().collect();
    ipt_ok(&topo.node, false, variant, &args);
    let r = remove(&topo.node);
    assert_eq!(r.code, 0, "{variant}: remove: {r:?}");
    let left = ipt_save(&topo.node, variant);
    assert!(!left.contains(IPT_CHAIN), "{variant}: nothing of ours left: {left}");
}

fn tamper_matrix(b: Backend) {
    let variant = b.iptables_variant().expect("an iptables backend");
    let topo = Topology::new();
    let policy = GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]);
    for t in matrix() {
        policy.apply_ok(&topo.node);
        for step in &t.args {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            ipt_ok(&topo.node, false, variant, &args);
        }
        let (r, json) = policy.status(&topo.node);
        r.expect_code(3, &format!("{variant}: status after {}", t.what));
        let drift = json["drift"].to_string();
        assert!(
            !json["drift"].as_array().is_none_or(Vec::is_empty),
            "{variant}: {}: no finding: {json}",
            t.what
        );
        for debug in ["Some(", "None", "{ ", "\\\"{"] {
            assert!(!drift.contains(debug), "{variant}: {}: debug text in {drift}", t.what);
        }
        let text = run_guard(&topo.node, &policy.args("status"));
        assert_eq!(text.code, 3, "{variant}: {}: text status {text:?}", t.what);
        eprintln!("{variant}: {}: {}", t.what, text.stdout.trim().replace('\n', " | "));
        assert!(
            !text.stdout.contains("[]"),
            "{variant}: {}: an empty list in {}",
            t.what,
            text.stdout
        );
        policy.apply_ok(&topo.node);
        policy.assert_in_sync(&topo.node, &format!("{variant}: after repairing {}", t.what));
        assert_refused_fast(
            &topo.pod,
            None,
            API_V4,
            API_PORT,
            &format!("{variant}: after {}", t.what),
        );
        // Leave nothing foreign behind for the next case.
        let _ = topo.node.run(&[
            &format!("iptables-{variant}"),
            "-w",
            "10",
            "-D",
            "FORWARD",
            "-s",
            CONTAINER_CIDR_V4,
            "-j",
            "ACCEPT",
        ]);
    }
}

per_iptables_variant!(
    tamper_matrix,
    remove_with_a_changed_copy_of_our_jump,
    remove_refused_while_another_chain_jumps_to_ours
);

/// A rule of someone else's chain that jumps to ours (IPv6 only): `remove`
/// cannot delete our chain while it does and must not delete their rule, so
/// it refuses with a message naming the rule, before changing anything in
/// either family (it was `iptables-restore: line 4 failed`, or a busy
/// chain, with IPv4 already removed).
fn remove_refused_while_another_chain_jumps_to_ours(b: Backend) {
    let variant = b.iptables_variant().expect("an iptables backend");
    let topo = Topology::new();
    let node = &topo.node;
    let policy = GuardPolicy::new(
        b,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    );
    policy.apply_ok(node);
    ipt_ok(node, true, variant, &["-N", "FOO"]);
    ipt_ok(node, true, variant, &["-A", "FOO", "-s", "fd09::/48", "-j", IPT_CHAIN]);
    let before = firewall_snapshot(node);
    let r = remove(node);
    assert_eq!(r.code, 1, "{variant}: {r:?}");
    assert!(
        r.stderr.contains("a rule of another chain jumps to it") && r.stderr.contains("-A FOO -s fd09::/48"),
        "{variant}: {}",
        r.stderr
    );
    assert_same_snapshot(&before, &firewall_snapshot(node), &format!("{variant}: refused remove"));
    policy.assert_in_sync(node, &format!("{variant}: the block stays"));
}
