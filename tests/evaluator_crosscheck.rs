//! The pure evaluator (`core::nft_eval`) held to real packets: for several
//! shapes of policy installed by `apply` (nftables backend), each probe is a
//! real connect with curl from the test's pod or node namespace, and the
//! table the kernel holds (read back over netlink, as `status` reads it) is
//! run through the evaluator for the same packet at the same hook. Refused
//! must be a TCP reset, served must be accepted, timed out must be a drop.
//! If the evaluator or the model drifted from the kernel, a row disagrees.

mod common;

use std::net::IpAddr;

use apiserver_guard::backend::nftables::{Nftables, Seen};
use apiserver_guard::core::nft_eval::{evaluate, Fate, Packet};
use apiserver_guard::core::nft_model::{
    TableModel, HOOK_FORWARD, HOOK_LOCAL_OUT, REJECT_ICMPX_UNREACH, REJECT_TCP_RST,
};
use common::guard_cases::*;
use common::*;

const TCP: u8 = 6;

/// The table and the node's addresses, read inside the node namespace.
fn kernel_view(node: &Netns) -> (TableModel, Vec<IpAddr>) {
    node.in_thread(|| {
        let Seen::Table(t) = Nftables::new().observe().expect("read our table") else {
            panic!("our table is not there")
        };
        (t, apiserver_guard::node_facts::local_addresses().unwrap())
    })
    .unwrap()
}

/// One probe: where curl runs (and from which source), and the packet the evaluator sees.
struct Probe<'a> {
    what: &'a str,
    from: &'a Netns,
    src_flag: Option<&'a str>,
    src: &'a str,
    dst: &'a str,
    port: u16,
    hook: u32,
}

#[track_caller]
fn crosscheck(node: &Netns, probes: &[Probe], max_time: u32) -> usize {
    let (table, addrs) = kernel_view(node);
    for p in probes {
        let real = match p.src_flag {
            Some(s) => curl_from(p.from, s, p.dst, p.port, max_time),
            None => curl(p.from, p.dst, p.port, max_time),
        };
        let packet = Packet {
            src: p.src.parse().unwrap(),
            dst: p.dst.parse().unwrap(),
            proto: TCP,
            dport: p.port,
            tcp_flags: apiserver_guard::core::nft_model::TCP_FLAG_SYN,
            icmp_type: 8,
            hook: p.hook,
        };
        let e = evaluate(&table, &packet, &addrs);
        assert!(e.unknown.is_empty(), "{}: the evaluator met {:?}", p.what, e.unknown);
        let agrees = match e.fate {
            Fate::Accept => real.served(),
            Fate::Drop => real.timed_out(),
            Fate::Reject { kind, .. } if kind == REJECT_TCP_RST => real.refused(),
            Fate::Reject { kind, .. } if kind == REJECT_ICMPX_UNREACH => real.refused() || real.exit_code == 7,
            Fate::Reject { .. } => false,
        };
        assert!(
            agrees,
            "{}: the evaluator says {:?} (rule {:?}), the kernel did: curl exit {} http {:?} {}",
            p.what, e.fate, e.decided_by, real.exit_code, real.http_code, real.stderr
        );
    }
    probes.len()
}

#[test]
fn the_evaluator_agrees_with_the_kernel_on_every_probe() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let (pod, node) = (&topo.pod, &topo.node);
    let fwd = |what, dst, port| Probe {
        what,
        from: pod,
        src_flag: None,
        src: if dst == API_V6 || dst == OTHER_V6 {
            POD_V6
        } else {
            POD_V4
        },
        dst,
        port,
        hook: HOOK_FORWARD,
    };
    let out = |what, src_flag, src| Probe {
        what,
        from: node,
        src_flag,
        src,
        dst: API_V4,
        port: API_PORT,
        hook: HOOK_LOCAL_OUT,
    };
    let mut checked = 0;

    // Dual stack, tunnel, ports.
    let p = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    );
    p.apply_ok(node);
    checked += crosscheck(
        node,
        &[
            fwd("pod -> apiserver v4:port", API_V4, API_PORT),
            fwd("pod -> apiserver v4:other port", API_V4, OTHER_PORT),
            fwd("pod -> other v4 host:port", OTHER_V4, API_PORT),
            fwd("pod -> apiserver v6:port", API_V6, API_PORT),
            fwd("pod -> apiserver v6:other port", API_V6, OTHER_PORT),
            out(
                "node -> apiserver v4:port (OUTPUT, not hooked in tunnel mode)",
                None,
                NODE_API_V4,
            ),
        ],
        MAX_TIME,
    );

    // Port-less apiserver, vpc + tunnel (both), logging off.
    let p = GuardPolicy::new(Backend::Nftables, "both", &[CONTAINER_CIDR_V4], &[API_V4]);
    let mut args = p.args("apply");
    args.extend(["--log-group".into(), "off".into()]);
    run_guard(node, &args).expect_code(0, "apply port-less, both hooks");
    checked += crosscheck(
        node,
        &[
            fwd("pod -> port-less apiserver, any port", API_V4, OTHER_PORT),
            fwd("pod -> other host", OTHER_V4, OTHER_PORT),
            out(
                "node from its container-CIDR address (OUTPUT)",
                Some(NODE_LOCAL_POD_V4),
                NODE_LOCAL_POD_V4,
            ),
            out("node from its own address (OUTPUT)", None, NODE_API_V4),
        ],
        MAX_TIME,
    );

    // Drop: the pod times out, as the evaluator's drop says.
    let p = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
    .with_action("drop");
    p.apply_ok(node);
    checked += crosscheck(
        node,
        &[
            fwd("pod -> apiserver:port, drop", API_V4, API_PORT),
            fwd("pod -> apiserver:other port, drop policy", API_V4, OTHER_PORT),
        ],
        2,
    );

    // Audit: everything served, as the evaluator's accept says.
    let p = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
    .with_action("audit");
    p.apply_ok(node);
    checked += crosscheck(node, &[fwd("pod -> apiserver:port, audit", API_V4, API_PORT)], MAX_TIME);
    eprintln!("{checked} probes: the evaluator and the kernel agree on each");
}
