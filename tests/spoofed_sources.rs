//! A pod that forges its source addresses (CAP_NET_RAW on a CNI without
//! anti-spoofing) against the kernel's per-source log meter, on each
//! backend, in audit and reject mode: SYNs from every address of a /15
//! container CIDR but the pod's own /31, then one real connect from the pod.
//!
//! On the iptables backends a full hashlimit table makes the kernel drop the
//! packet of a new source before any target (break-it find of issue 13: in
//! audit mode the pod was blocked). The keys are sized so the table cannot
//! fill (`core::meter_keys`). The policy has a /24 besides the /15, ahead of
//! it in the chain: the kernel keys the one table of the family with the mask
//! of the rule that created it, so a mask per CIDR (one key per address for
//! the /24, the first) would key the /15 per address too and fill the table
//! (a second review's find). One mask for both (/30: 64 + 32,768 keys) fits.
//! So the audited pod is served, the rejected pod refused (a reset, not a
//! drop), and the table never holds more keys than its size. On nftables a
//! full meter stops only the log rule: audit still serves, reject still
//! refuses.
//!
//! On nftables, also: a pod forging sources on its interface hides nothing
//! of a pod on another interface (the per-interface budgets of
//! `model::METER_IIF_NEW`, the meter keyed on `iif . ip saddr`): the other
//! pod's single attempt is reported while the forged flood runs, a quarter of
//! it with that pod's own address (a second review's find: keyed on the
//! address alone, those packets spent the victim's allowance), the daemon's
//! socket never overflows and the meter learns only a few hundred forged
//! sources.
//!
//! Not asserted for iptables: that the pod's attempt is reported. Every forged source
//! is new and within its own allowance, so the forged flood is logged in full
//! and overflows the daemon's NFLOG socket (ENOBUFS, counted); what the
//! kernel logs in that moment is lost, the pod's packets among them.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::spoof::send_spoofed_syns;
use common::*;

/// A container CIDR twice the size of an iptables key budget of single
/// addresses; the topology's pod (POD_V4, 10.0.1.2) is in it.
const WIDE_CIDR_V4: &str = "10.0.0.0/15";
/// A small container CIDR that sorts before WIDE_CIDR_V4 (its rules come first).
const SMALL_CIDR_V4: &str = "9.9.9.0/24";
/// Keys the hashlimit table holds (`core::meter_keys::KEY_BUDGET`).
const TABLE_MAX: usize = 65_536;
/// Keys of WIDE_CIDR_V4 at the family's mask (/30, for both CIDRs together).
const WIDE_KEYS: usize = 1 << (30 - 15);

fn policy(backend: Backend, action: &'static str) -> GuardPolicy {
    GuardPolicy::new(backend, "tunnel", &[WIDE_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))]).with_action(action)
}

/// `policy` with SMALL_CIDR_V4 too.
fn two_cidr_policy(backend: Backend, action: &'static str) -> GuardPolicy {
    GuardPolicy::new(
        backend,
        "tunnel",
        &[SMALL_CIDR_V4, WIDE_CIDR_V4],
        &[&endpoint(API_V4, Some(API_PORT))],
    )
    .with_action(action)
}

/// Every address of WIDE_CIDR_V4 except the pod's /31 (10.0.1.2 and 10.0.1.3).
fn forged_sources() -> Vec<Ipv4Addr> {
    let pod: Ipv4Addr = POD_V4.parse().unwrap();
    let pod_block = u32::from(pod) >> 1;
    (0..1u32 << 17)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .filter(|a| u32::from(*a) >> 1 != pod_block)
        .collect()
}

/// Keys in our IPv4 hashlimit tables of the node (each line of their /proc files is one).
fn hashlimit_keys(node: &Netns) -> usize {
    node.run_ok(&["sh", "-c", "cat /proc/net/ipt_hashlimit/apiserver-guard*"])
        .lines()
        .count()
}

/// The forged flood, then the pod's one connect, on `backend` with `action`.
fn forged_flood_then_one_connect(backend: Backend, action: &'static str) {
    let topo = Topology::new();
    let node = &topo.node;
    // The node must forward what the forged pod sends (no reverse-path filter).
    node.sysctl(&[
        ("net.ipv4.conf.all.rp_filter", "0"),
        (&format!("net.ipv4.conf.{NODE_POD_IF}.rp_filter"), "0"),
    ]);
    let p = two_cidr_policy(backend, action);
    let daemon = Daemon::spawn(node, &daemon_args(&p, &[]));
    daemon.wait_ready();
    wait_attempt_log_bound(node);

    let forged = forged_sources();
    let iptables = backend.iptables_variant().is_some();
    // Sent again if the kernel lost some (the keys are the same: nothing grows).
    for _ in 0..3 {
        let sent = send_spoofed_syns(&topo.pod, &forged, API_V4.parse().unwrap(), API_PORT)
            .expect("forged SYNs sent from the pod (raw socket)");
        assert_eq!(sent, forged.len(), "every forged SYN taken by the kernel");
        if !iptables || hashlimit_keys(node) >= WIDE_KEYS {
            break;
        }
    }
    if iptables {
        let keys = hashlimit_keys(node);
        assert_eq!(
            keys, WIDE_KEYS,
            "{backend:?}: the forged sources take every key of the /15"
        );
    }

    let c = curl(&topo.pod, API_V4, API_PORT, 5);
    match action {
        "audit" => assert_served(
            &c,
            &format!("{backend:?} audit, table of forged sources: pod -> API_V4 served"),
        ),
        _ => assert_refused(
            &c,
            &format!("{backend:?} reject, table of forged sources: pod -> API_V4 refused"),
        ),
    }
    if iptables {
        let keys = hashlimit_keys(node);
        assert!(keys <= TABLE_MAX, "{backend:?}: {keys} keys in a table of {TABLE_MAX}");
    }
    assert!(
        daemon.exited().is_none(),
        "the daemon survives the flood:\n{}",
        daemon.log()
    );
}

#[test]
fn forged_sources_never_block_an_audited_pod_nor_turn_a_reject_into_a_drop() {
    if !can_run() {
        return;
    }
    for backend in Backend::ALL {
        for action in ["audit", "reject"] {
            forged_flood_then_one_connect(backend, action);
        }
    }
}

/// Liveness deadline for an attempt to show in `/attempts`.
const SHOW_DEADLINE: Duration = Duration::from_secs(10);

/// Whether `/attempts` has a row from `src` to the apiserver with `action`, polled until SHOW_DEADLINE.
/// Whether a row from `src` that came in on `interface` shows `action`
/// (the forged packets carrying `src` come in on the forger's interface: rows of their own).
fn row_shows(node: &Netns, src: &str, interface: &str, action: &str) -> bool {
    find_attempt_row(node, SHOW_DEADLINE, |row| {
        row["source"] == src && row["apiserver"] == API_V4 && row["action"] == action && row["interface"] == interface
    })
    .is_ok()
}

/// Elements the kernel's meters hold, of connects (per source) and of
/// TCP's other packets (per source port) (`nft list set`: one `expires` per
/// element). Both learn new elements within the one per-interface
/// allowance (`iif_new`).
fn meter_sources(node: &Netns) -> usize {
    ["connects_v4", "flows_v4"]
        .iter()
        .map(|set| {
            node.run_ok(&["nft", "list", "set", "inet", "apiserver_guard", set])
                .matches("expires")
                .count()
        })
        .sum()
}

fn forged_flood_beside_one_connect(action: &'static str) {
    let topo = Topology::new();
    let other_pod = topo.add_other_pod();
    let node = &topo.node;
    node.sysctl(&[
        ("net.ipv4.conf.all.rp_filter", "0"),
        (&format!("net.ipv4.conf.{NODE_POD_IF}.rp_filter"), "0"),
    ]);
    let daemon = Daemon::spawn(node, &daemon_args(&policy(Backend::Nftables, action), &[]));
    daemon.wait_ready();
    wait_attempt_log_bound(node);

    // 20,000 forged sources, every fourth packet with the other pod's own
    // address: forging it from this interface must not spend that pod's allowance.
    let victim: Ipv4Addr = OTHER_POD_V4.parse().unwrap();
    let forged: Vec<Ipv4Addr> = forged_sources()[..20_000]
        .chunks(3)
        .flat_map(|c| c.iter().copied().chain([victim]))
        .collect();
    let api: Ipv4Addr = API_V4.parse().unwrap();
    let flood_started = Instant::now();
    let (c, flood) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let mut sent = 0;
            while flood_started.elapsed() < Duration::from_secs(2) {
                sent += send_spoofed_syns(&topo.pod, &forged, api, API_PORT).expect("forged SYNs sent");
            }
            sent
        });
        std::thread::sleep(Duration::from_millis(300));
        let c = curl(&other_pod, API_V4, API_PORT, 5);
        (c, flood.join().expect("the flood thread"))
    });
    let flood_secs = flood_started.elapsed().as_secs_f64();
    match action {
        "audit" => assert_served(&c, "audit, beside a forged flood: other pod -> API_V4 served"),
        _ => assert_refused(&c, "reject, beside a forged flood: other pod -> API_V4 refused"),
    }
    let shown = if action == "audit" { "audited" } else { "blocked" };
    let reported = row_shows(node, OTHER_POD_V4, NODE_OTHER_POD_IF, shown);
    let s = scrape(node);
    let overflows = sample(&s, "apiserver_guard_attempt_log_overflows_total", &[]);
    let learnt = meter_sources(node);
    eprintln!(
        "{action}: {flood} forged SYNs in {flood_secs:.1} s; forged sources learnt by the meter: {learnt}; \
         daemon socket overflows: {overflows:?}; other pod reported: {reported}"
    );
    assert!(
        reported,
        "{action}: the other pod's attempt reported beside the forged flood\nlog:\n{}",
        daemon.log()
    );
    assert_eq!(
        overflows,
        Some(0.0),
        "{action}: the daemon's NFLOG socket never overflowed"
    );
    // 400 at once, then 200 a second, for the length of the flood (and the other pod's one).
    let bound = 400 + (200.0 * (flood_secs + 1.0)) as usize + 1;
    assert!(
        learnt <= bound,
        "{action}: the meter learnt {learnt} sources (at most {bound})"
    );
    assert!(
        learnt >= 100,
        "{action}: the forged flood reached the meter ({learnt} sources)"
    );
}

#[test]
fn forged_sources_on_one_interface_hide_nothing_on_another() {
    if !can_run() {
        return;
    }
    for action in ["reject", "audit"] {
        forged_flood_beside_one_connect(action);
    }
}
