//! Attempts count connections, on a real kernel (break-it finds of issue
//! 13): refused connects from one fixed source port each count (they were
//! one: a port seen within 3 minutes was taken for a retransmit; now the
//! SYN's sequence number tells), and a pod holding more long-lived audited
//! connections than a row used to remember ports for (16), written to in
//! turn, counts each once (it counted every write).
//!
//! Paced below the per-source log meter (10 a second, burst 20) so that the
//! kernel logs every packet the count depends on. The block is on the
//! apiserver's other port (`OTHER_PORT`): the topology's own readiness
//! connects (to `API_PORT`, before the daemon starts) can end late, and a
//! last packet of theirs would rightly count as a connection of its own.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;
use socket2::{Domain, Protocol, Socket, Type};

const SHOW_DEADLINE: Duration = Duration::from_secs(5);

fn policy(action: &'static str) -> GuardPolicy {
    GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(API_V4, Some(OTHER_PORT))],
    )
    .with_action(action)
}

fn ready_daemon<'a>(node: &'a Netns, action: &'static str) -> Daemon<'a> {
    let daemon = Daemon::spawn(node, &daemon_args(&policy(action), &[]));
    daemon.wait_ready();
    wait_attempt_log_bound(node);
    daemon
}

/// The pod's row to the apiserver once its count is `want`; panics with
/// the last page if it is not within the deadline, or goes past it.
#[track_caller]
fn wait_count(node: &Netns, daemon: &Daemon, want: u64) -> serde_json::Value {
    let row = wait_attempt_row(
        node,
        daemon,
        &format!("{POD_V4} -> {API_V4}:{OTHER_PORT}/tcp counting {want}"),
        SHOW_DEADLINE,
        |r| r["source"] == POD_V4 && r["port"] == OTHER_PORT && r["count"].as_u64() >= Some(want),
    );
    // Whatever is still in flight is read by now.
    std::thread::sleep(Duration::from_millis(500));
    let page = attempts_page(node);
    let now = page["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == POD_V4 && r["port"] == OTHER_PORT)
        .cloned()
        .unwrap();
    assert_eq!(
        now["count"],
        want,
        "counted more than made: {now}\nfirst seen at the count: {row}\nlog:\n{}",
        daemon.log()
    );
    now
}

#[test]
fn refused_connects_from_one_fixed_source_port_count_each() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let daemon = ready_daemon(node, "reject");
    const CONNECTS: u64 = 30;
    let refused = topo
        .pod
        .in_thread(|| {
            let local = SocketAddr::new(POD_V4.parse::<IpAddr>().unwrap(), 40_444);
            let api = SocketAddr::new(API_V4.parse::<IpAddr>().unwrap(), OTHER_PORT);
            let mut refused = 0;
            for _ in 0..CONNECTS {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
                s.set_reuse_address(true).unwrap();
                s.bind(&local.into()).unwrap();
                match s.connect_timeout(&api.into(), Duration::from_secs(2)) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                    other => panic!("connect from {local}: {other:?}"),
                }
                // 6.7 a second: under the log meter's 10.
                std::thread::sleep(Duration::from_millis(150));
            }
            refused
        })
        .unwrap();
    assert_eq!(refused, CONNECTS);
    let row = wait_count(node, &daemon, CONNECTS);
    assert_eq!(row["source_port"], 40_444, "{row}");
}

#[test]
fn many_long_lived_audited_connections_count_once_each() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let daemon = ready_daemon(node, "audit");
    // More than the 16 source ports a row used to remember.
    const HELD: u64 = 20;
    let mut held = Vec::new();
    for _ in 0..HELD {
        held.push(HeldConnection::open(&topo.pod, API_V4, OTHER_PORT).expect("audit serves the pod"));
        // SYN and ACK at 5 a second each: under the log meter's 10 (its burst absorbs the rest).
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each written to in turn, twice over: the echo's ACKs too.
    for round in 0..2 {
        for (i, c) in held.iter_mut().enumerate() {
            c.roundtrip(format!("r{round}c{i}").as_bytes(), Duration::from_secs(2))
                .expect("echo over a held audited connection");
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let row = wait_count(node, &daemon, HELD);
    assert_eq!(row["action"], "audited", "{row}");
}
