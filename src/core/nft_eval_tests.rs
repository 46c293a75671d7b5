//! The blocking matrix without root: for each shape of policy (IPv4, IPv6,
//! with and without ports, exempt and allow-listed sources, the hooks of
//! each mode, an apiserver on the node, drop, audit, logging on and off),
//! what the table `desired` builds does to each packet. The same table as
//! the kernel holds it is held to real packets in tests/evaluator_crosscheck.rs.

use super::*;
use crate::core::attempt_packet::{ICMPV6_ANSWERS, ICMP_ANSWERS};
use crate::core::model::tests::policy;
use crate::core::model::Blocklist;
use crate::core::nft_desired::desired;
use crate::core::policy::{Action, Mode, Policy};

const TCP: u8 = 6;
const UDP: u8 = 17;
const RST: Fate = Fate::Reject {
    kind: REJECT_TCP_RST,
    icmp_code: 0,
};
const ICMP_PROHIBITED: Fate = Fate::Reject {
    kind: REJECT_ICMPX_UNREACH,
    icmp_code: ICMPX_ADMIN_PROHIBITED,
};

fn pkt(src: &str, dst: &str, proto: u8, dport: u16, hook: u32) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        dport,
        tcp_flags: TCP_FLAG_SYN,
        icmp_type: 8,
        hook,
    }
}

/// (what, packet, expected fate) rows against the table of `p`, with and without log rules.
#[track_caller]
fn matrix(p: &Policy, node: &[&str], rows: &[(&str, Packet, Fate)]) {
    let node: Vec<IpAddr> = node.iter().map(|a| a.parse().unwrap()).collect();
    for group in [None, Some(1443)] {
        let mut p = p.clone();
        p.log_group = group;
        let t = desired(&Blocklist::from_policy(&p));
        for (what, packet, want) in rows {
            let e = evaluate(&t, packet, &node);
            assert!(e.unknown.is_empty(), "{what}: {:?}", e.unknown);
            assert_eq!(&e.fate, want, "{what} (log group {group:?}): {e:?}");
            // A blocked (or audited) packet is logged once under its rule; nothing else is.
            let blocked = *want != Fate::Accept || p.action == Action::Audit && !e.logged.is_empty();
            match (group, blocked) {
                (Some(_), true) => assert_eq!(e.logged.len(), 1, "{what}: {e:?}"),
                _ => assert!(e.logged.is_empty(), "{what}: logged {e:?}"),
            }
        }
    }
}

const FWD: u32 = HOOK_FORWARD;
const OUT: u32 = HOOK_LOCAL_OUT;
const IN: u32 = HOOK_LOCAL_IN;

#[test]
fn tunnel_v4_with_a_port_refuses_pods_on_that_port_only() {
    let p = policy(
        &["10.0.0.0/16"],
        &["10.0.9.0/24"],
        &["192.168.50.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    matrix(
        &p,
        &["192.168.50.1"],
        &[
            (
                "pod -> apiserver:port",
                pkt("10.0.1.2", "192.168.50.10", TCP, 5443, FWD),
                RST,
            ),
            (
                "pod -> apiserver:other port",
                pkt("10.0.1.2", "192.168.50.10", TCP, 8080, FWD),
                Fate::Accept,
            ),
            (
                "pod -> apiserver:port over UDP",
                pkt("10.0.1.2", "192.168.50.10", UDP, 5443, FWD),
                Fate::Accept,
            ),
            (
                "pod -> other host:port",
                pkt("10.0.1.2", "192.168.50.20", TCP, 5443, FWD),
                Fate::Accept,
            ),
            (
                "exempt pod -> apiserver:port",
                pkt("10.0.9.7", "192.168.50.10", TCP, 5443, FWD),
                Fate::Accept,
            ),
            (
                "outside the CIDR -> apiserver:port",
                pkt("10.1.0.1", "192.168.50.10", TCP, 5443, FWD),
                Fate::Accept,
            ),
            (
                "first address of the CIDR",
                pkt("10.0.0.0", "192.168.50.10", TCP, 5443, FWD),
                RST,
            ),
            (
                "last address of the CIDR",
                pkt("10.0.255.255", "192.168.50.10", TCP, 5443, FWD),
                RST,
            ),
            (
                "tunnel hooks no OUTPUT",
                pkt("10.0.1.2", "192.168.50.10", TCP, 5443, OUT),
                Fate::Accept,
            ),
        ],
    );
}

#[test]
fn a_portless_apiserver_is_refused_every_port_tcp_reset_then_icmp() {
    let p = policy(&["10.0.0.0/16"], &[], &["192.168.50.10"], Mode::Tunnel, Action::Reject);
    matrix(
        &p,
        &[],
        &[
            (
                "pod -> apiserver, any TCP port",
                pkt("10.0.1.2", "192.168.50.10", TCP, 22, FWD),
                RST,
            ),
            (
                "pod -> apiserver, UDP",
                pkt("10.0.1.2", "192.168.50.10", UDP, 53, FWD),
                ICMP_PROHIBITED,
            ),
            (
                "pod -> apiserver, ICMP",
                pkt("10.0.1.2", "192.168.50.10", 1, 0, FWD),
                ICMP_PROHIBITED,
            ),
            (
                "pod -> another host",
                pkt("10.0.1.2", "192.168.50.11", TCP, 22, FWD),
                Fate::Accept,
            ),
        ],
    );
}

#[test]
fn ipv6_and_dual_stack_in_both_hooks() {
    let p = policy(
        &["10.0.0.0/16", "fd00::/48"],
        &["fd00:0:0:9::/64"],
        &["192.168.50.10:5443", "[fd01::10]:5443"],
        Mode::Both,
        Action::Reject,
    );
    matrix(
        &p,
        &[],
        &[
            (
                "v6 pod -> v6 apiserver (forward)",
                pkt("fd00::2", "fd01::10", TCP, 5443, FWD),
                RST,
            ),
            (
                "v6 pod -> v6 apiserver (output)",
                pkt("fd00::2", "fd01::10", TCP, 5443, OUT),
                RST,
            ),
            (
                "v4 pod -> v4 apiserver (output)",
                pkt("10.0.1.2", "192.168.50.10", TCP, 5443, OUT),
                RST,
            ),
            (
                "exempt v6 pod",
                pkt("fd00:0:0:9::5", "fd01::10", TCP, 5443, FWD),
                Fate::Accept,
            ),
            (
                "v6 outside the CIDR",
                pkt("fd02::1", "fd01::10", TCP, 5443, FWD),
                Fate::Accept,
            ),
            (
                "v6 pod -> other port",
                pkt("fd00::2", "fd01::10", TCP, 443, FWD),
                Fate::Accept,
            ),
            (
                "no INPUT chain without a local apiserver",
                pkt("10.0.1.2", "192.168.50.10", TCP, 5443, IN),
                Fate::Accept,
            ),
        ],
    );
}

#[test]
fn vpc_hooks_output_only_and_drop_drops() {
    let p = policy(&["10.0.0.0/16"], &[], &["192.168.50.10:5443"], Mode::Vpc, Action::Drop);
    matrix(
        &p,
        &[],
        &[
            (
                "pod -> apiserver (output)",
                pkt("10.0.1.2", "192.168.50.10", TCP, 5443, OUT),
                Fate::Drop,
            ),
            (
                "vpc hooks no FORWARD",
                pkt("10.0.1.2", "192.168.50.10", TCP, 5443, FWD),
                Fate::Accept,
            ),
        ],
    );
}

#[test]
fn audit_lets_everything_through_and_logs_what_it_would_block() {
    let p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.50.10:5443"],
        Mode::Tunnel,
        Action::Audit,
    );
    let rows = [
        (
            "pod -> apiserver:port",
            pkt("10.0.1.2", "192.168.50.10", TCP, 5443, FWD),
        ),
        ("pod -> other port", pkt("10.0.1.2", "192.168.50.10", TCP, 80, FWD)),
    ];
    let mut logged = p.clone();
    logged.log_group = Some(7);
    let t = desired(&Blocklist::from_policy(&logged));
    let e = evaluate(&t, &rows[0].1, &[]);
    assert_eq!(
        (e.fate, e.logged),
        (Fate::Accept, vec!["apiserver-guard:audit-tcp-port-v4".to_string()])
    );
    let e = evaluate(&t, &rows[1].1, &[]);
    assert_eq!((e.fate, e.logged.len()), (Fate::Accept, 0));
}

#[test]
fn an_apiserver_on_the_node_is_refused_at_every_node_address_but_not_from_the_node() {
    let mut p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.50.1:6443"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.local_apiservers = p.apiservers.clone();
    let node = ["192.168.50.1", "10.0.1.1", "fe80::1"];
    matrix(
        &p,
        &node,
        &[
            (
                "pod -> node's apiserver address",
                pkt("10.0.1.2", "192.168.50.1", TCP, 6443, IN),
                RST,
            ),
            (
                "pod -> node's pod-side address, same port",
                pkt("10.0.1.2", "10.0.1.1", TCP, 6443, IN),
                RST,
            ),
            (
                "pod -> node, another port",
                pkt("10.0.1.2", "10.0.1.1", TCP, 22, IN),
                Fate::Accept,
            ),
            (
                "link-local pod address -> node",
                pkt("fe80::2", "fe80::1", TCP, 6443, IN),
                RST,
            ),
            (
                "the node to itself",
                pkt("192.168.50.1", "10.0.1.1", TCP, 6443, IN),
                Fate::Accept,
            ),
            (
                "the node from its address in the CIDR to it (fib saddr local)",
                pkt("10.0.1.1", "10.0.1.1", TCP, 6443, IN),
                Fate::Accept,
            ),
        ],
    );
}

#[test]
fn an_allow_listed_pod_gets_through_and_the_empty_allow_list_exempts_nobody() {
    let mut p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.50.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.dynamic_exempt = true;
    let to_api = |src: &str| pkt(src, "192.168.50.10", TCP, 5443, FWD);
    matrix(&p, &[], &[("no pod allowed yet", to_api("10.0.1.2"), RST)]);
    p.exempt = vec!["10.0.1.2/32".parse().unwrap(), "10.0.1.3/32".parse().unwrap()];
    matrix(
        &p,
        &[],
        &[
            ("allowed pod", to_api("10.0.1.2"), Fate::Accept),
            (
                "the next allowed pod (adjacent ranges)",
                to_api("10.0.1.3"),
                Fate::Accept,
            ),
            ("its neighbour", to_api("10.0.1.4"), RST),
            ("the one before", to_api("10.0.1.1"), RST),
        ],
    );
}

#[test]
fn a_tampered_table_is_judged_as_the_kernel_would_run_it() {
    let p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.50.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    let mut t = desired(&Blocklist::from_policy(&p));
    let to_api = pkt("10.0.1.2", "192.168.50.10", TCP, 5443, FWD);
    let other = pkt("10.1.0.1", "192.168.50.10", TCP, 5443, FWD);
    assert_eq!(evaluate(&t, &to_api, &[]).fate, RST);
    // The lookup negated: pods through, everyone else refused.
    for e in &mut t.chains.get_mut(GUARD_CHAIN).unwrap().rules[0].exprs {
        if let Expr::Lookup { flags, set, .. } = e {
            if set == "sources_v4" {
                *flags |= LOOKUP_F_INV;
            }
        }
    }
    assert_eq!(evaluate(&t, &to_api, &[]).fate, Fate::Accept);
    assert_eq!(evaluate(&t, &other, &[]).fate, RST);
    // The chain's policy drop: everything else at that hook dropped.
    let mut t = desired(&Blocklist::from_policy(&p));
    t.chains.get_mut("forward").unwrap().base.as_mut().unwrap().policy = NF_DROP;
    assert_eq!(evaluate(&t, &other, &[]).fate, Fate::Drop);
    // A jump to a chain that is not there ends the rule; a jump loop stops.
    let mut t = desired(&Blocklist::from_policy(&p));
    t.chains.get_mut("forward").unwrap().rules[0].exprs = vec![Expr::Immediate {
        dreg: REG_VERDICT,
        verdict: Verdict::Jump("forward".into()),
    }];
    let e = evaluate(&t, &to_api, &[]);
    assert_eq!(e.fate, Fate::Accept);
    assert!(e.unknown.iter().any(|u| u.contains("deeper")), "{e:?}");
}

#[test]
fn answers_from_a_pod_are_blocked_but_never_logged() {
    // A reset, a SYN+ACK or an ICMP answer a pod sends back to a packet
    // forged "from the apiserver" is not its attempt: the answer rules give
    // it the verdict ahead of the log rules (nft_answers); an ACK of an open
    // connection, a connect and a ping are logged.
    for action in [Action::Reject, Action::Drop, Action::Audit] {
        let mut p = policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[],
            &["192.168.50.10:5443", "192.168.50.11", "fd01::11"],
            Mode::Tunnel,
            action,
        );
        p.log_group = Some(1443);
        let t = desired(&Blocklist::from_policy(&p));
        let (tcp_blocked, other_blocked) = match action {
            Action::Reject => (RST, ICMP_PROHIBITED),
            Action::Drop => (Fate::Drop, Fate::Drop),
            Action::Audit => (Fate::Accept, Fate::Accept),
        };
        let tcp = |dst: &str, flags: u8| Packet {
            tcp_flags: flags,
            ..pkt("10.0.1.2", dst, TCP, 5443, FWD)
        };
        for dst in ["192.168.50.10", "192.168.50.11"] {
            for (flags, logged) in [
                (TCP_FLAG_SYN, true),
                (TCP_FLAG_ACK, true),
                (TCP_FLAG_ACK | TCP_FLAG_FIN, true),
                (TCP_FLAG_RST, false),
                (TCP_FLAG_RST | TCP_FLAG_ACK, false),
                (TCP_FLAG_SYN | TCP_FLAG_ACK, false),
            ] {
                let e = evaluate(&t, &tcp(dst, flags), &[]);
                assert!(e.unknown.is_empty(), "{:?}", e.unknown);
                let want = if action == Action::Reject || dst.ends_with(".10") || action == Action::Audit {
                    tcp_blocked.clone()
                } else {
                    other_blocked.clone()
                };
                assert_eq!(e.fate, want, "{dst} {flags:#x} {action:?}");
                assert_eq!(
                    e.logged.len(),
                    usize::from(logged),
                    "{dst} {flags:#x} {action:?}: {e:?}"
                );
            }
        }
        // ICMP to the port-less apiservers: a ping is logged, answers are not.
        for (src, dst, proto, types, request) in [
            ("10.0.1.2", "192.168.50.11", 1, &ICMP_ANSWERS[..], 8),
            ("fd00::2", "fd01::11", 58, &ICMPV6_ANSWERS[..], 128),
        ] {
            let icmp = |ty: u8| Packet {
                icmp_type: ty,
                ..pkt(src, dst, proto, 0, FWD)
            };
            let e = evaluate(&t, &icmp(request), &[]);
            assert_eq!((&e.fate, e.logged.len()), (&other_blocked, 1), "{action:?} {e:?}");
            for ty in types {
                let e = evaluate(&t, &icmp(*ty), &[]);
                assert!(e.unknown.is_empty(), "{:?}", e.unknown);
                assert_eq!(
                    (e.fate, e.logged),
                    (other_blocked.clone(), vec![]),
                    "{action:?} type {ty}"
                );
            }
        }
    }
}
