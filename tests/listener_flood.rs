//! A pod that reaches the health listener must not starve the daemon of
//! file descriptors (break-it round 4 of issue 13). The README has the
//! listener on an address Prometheus reaches, which pods reach too. A pod
//! holding a thousand connections open used up the daemon's open files
//! (systemd's soft limit is 1024), and on the iptables backends every
//! check and repair then failed to start its tool: after a foreign flush the
//! pod's connects were served until the flood stopped. Fixed: the listener
//! serves at most `http::MAX_CONNECTIONS` at once (the rest wait in the
//! kernel's accept queue, holding no descriptor of ours) and the daemon
//! raises its soft limit on open files to the hard one at start.
//! `apiserver-guard attempts` then says the listener may be busy, not that
//! the daemon may not be running (break-it round 5).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::daemon_cases::*;
use common::daemon_checks::*;
use common::guard_cases::*;
use common::*;

/// Connections the pod holds open to the listener.
const HELD: usize = 400;
/// The daemon's limit on open files for the test (soft and hard).
const NOFILE: usize = 128;

/// The daemon's open descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_pod_holding_connections_to_the_listener_never_stops_a_repair() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let b = Backend::IptablesNft;
    let policy = tunnel_v4_policy(b);
    let listen = format!("{NODE_POD_V4}:9440");
    let mut extra = editable_flags(b);
    extra.extend(["--listen", listen.as_str()]);
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &extra));
    daemon.wait_ready();
    // The limit the daemon was raised to is the hard one: make both small.
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &daemon.pid.to_string(), &limit])
        .output()
        .expect("prlimit");
    assert!(out.status.success(), "prlimit: {out:?}");

    let to: SocketAddr = listen.parse().unwrap();
    let (stop, held) = std::sync::mpsc::channel::<()>();
    let (opened_tx, opened) = std::sync::mpsc::channel::<usize>();
    let pod = &topo.pod;
    std::thread::scope(|s| {
        s.spawn(move || {
            pod.in_thread(move || {
                let conns: Vec<TcpStream> = (0..HELD)
                    .filter_map(|_| TcpStream::connect_timeout(&to, Duration::from_millis(50)).ok())
                    .collect();
                opened_tx.send(conns.len()).unwrap();
                let _ = held.recv();
                drop(conns);
            })
            .unwrap()
        });
        let opened = opened.recv().unwrap();
        eprintln!("the pod holds {opened} connections to {listen}");
        assert!(opened > NOFILE, "the pod could not open enough connections: {opened}");
        let fds = open_fds(daemon.pid);
        // A foreign flush while the pod holds them: repaired, the pod refused.
        node.run_ok(&["iptables-nft", "-w", "10", "-F", IPT_CHAIN]);
        let refused_in = poll_refused(&topo, &daemon, "after a foreign flush, under the connection flood");
        eprintln!("daemon: {fds} open descriptors (limit {NOFILE}); pod refused again {refused_in:?} after the flush");
        // `attempts` while every slot is held: the listener is busy, and
        // the hint says so (it said the daemon might not be running).
        let out = guard(node, &["attempts", "--listen", &listen]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        stop.send(()).unwrap();
        assert_eq!(out.status.code(), Some(1), "attempts: {out:?}");
        assert!(
            stderr.contains("may be busy") && !stderr.contains("is `apiserver-guard run` running"),
            "attempts' hint with the listener's slots held: {stderr}"
        );
        assert!(
            fds < NOFILE,
            "the listener used up the daemon's descriptors: {fds} of {NOFILE}"
        );
    });
    let log = daemon.log();
    assert!(!log.contains("Too many open files"), "log:\n{log}");
}
