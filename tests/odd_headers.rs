//! Attempts whose packets carry more headers than the log rules copy: an
//! IPv6 pod that puts a 128-byte destination-options header before TCP
//! pushes the TCP header past the 96 bytes the log rules copy (break-it find
//! of issue 13). The attempt is still reported as TCP to the apiserver (the
//! rule that matched it only takes TCP), from the right source, with its
//! ports unknown; each refused connect is one attempt.

mod common;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

/// Liveness deadline for an attempt to show in `/attempts`.
const SHOW_DEADLINE: Duration = Duration::from_secs(10);
/// `IPV6_DSTOPTS` (linux/in6.h): sticky destination options for the socket's packets.
const IPV6_DSTOPTS: libc::c_int = 59;
/// Bytes of the destination-options header: more than the 56 left after the IPv6 header.
const DSTOPTS_LEN: usize = 128;

/// A destination-options header of DSTOPTS_LEN bytes: one PadN option filling it.
fn dest_options() -> Vec<u8> {
    let mut h = vec![0u8; DSTOPTS_LEN];
    h[1] = (DSTOPTS_LEN / 8 - 1) as u8; // length in 8-byte units past the first 8
    h[2] = 1; // PadN
    h[3] = (DSTOPTS_LEN - 4) as u8;
    h
}

/// One TCP connect from the pod to [API_V6]:API_PORT with the long header; true if refused.
fn connect_with_long_header(pod: &Netns) -> bool {
    pod.in_thread(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).expect("socket");
        let opts = dest_options();
        // SAFETY: `opts` outlives the call; the length is its own.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                IPV6_DSTOPTS,
                opts.as_ptr().cast(),
                opts.len() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
        let api: Ipv6Addr = API_V6.parse().unwrap();
        let to = SocketAddr::V6(SocketAddrV6::new(api, API_PORT, 0, 0));
        let r = s.connect_timeout(&to.into(), Duration::from_secs(3));
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .expect("enter the pod's namespace")
}

#[test]
fn a_tcp_header_past_the_copied_bytes_is_still_a_tcp_attempt_counted_once_per_connect() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let policy = GuardPolicy::new(
        Backend::Nftables,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    );
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &[]));
    daemon.wait_ready();
    wait_attempt_log_bound(node);

    const CONNECTS: u64 = 3;
    for i in 0..CONNECTS {
        assert!(
            connect_with_long_header(&topo.pod),
            "connect {i} with a 128-byte header refused"
        );
    }
    wait_attempt_row(
        node,
        &daemon,
        &format!("a row of {CONNECTS} attempts from {POD_V6}"),
        SHOW_DEADLINE,
        |r| r["source"] == POD_V6 && r["apiserver"] == API_V6 && r["count"].as_u64() >= Some(CONNECTS),
    );
    std::thread::sleep(Duration::from_millis(300));
    // Once settled, one row only: no stray row (a `proto-60` one) beside it.
    let page = attempts_page(node);
    let rows: Vec<&serde_json::Value> = page["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == POD_V6 && r["apiserver"] == API_V6)
        .collect();
    assert_eq!(rows.len(), 1, "one row for the connects: {page}");
    let row = rows[0];
    assert_eq!(row["protocol"], "tcp", "the TCP rule's attempt is TCP: {row}");
    assert_eq!(row["rule"], "block-tcp-port-v6", "{row}");
    assert_eq!(row["count"], CONNECTS, "one attempt per refused connect: {row}");
    assert!(row["port"].is_null() || row["port"] == API_PORT, "{row}");
}
