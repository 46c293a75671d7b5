//! Polling and assertions shared by the daemon test files
//! (`tests/daemon_*.rs`): metric names, the tunnel-mode v4 policy every
//! daemon test starts from, "curl until refused/served" loops that report
//! how long the daemon took, and the check that exactly one copy of our
//! objects exists.

use std::thread;
use std::time::{Duration, Instant};

use super::daemon_cases::*;
use super::guard_cases::*;
use super::*;

/// Metric names the daemon tests read.
pub const REPAIRS: &str = "apiserver_guard_repairs_total";
pub const CONFIG_ERRORS: &str = "apiserver_guard_config_errors_total";
pub const CONFIG_OK: &str = "apiserver_guard_config_last_reload_successful";

pub fn tunnel_v4_policy(b: Backend) -> GuardPolicy {
    GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))])
}

/// Curls pod -> API_V4 until refused; returns how long that took, or panics
/// after `REPAIR_DEADLINE` with the last result and the daemon's log.
#[track_caller]
pub fn poll_refused(topo: &Topology, daemon: &Daemon, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = curl(&topo.pod, API_V4, API_PORT, 2);
        if r.refused() {
            return start.elapsed();
        }
        if start.elapsed() > REPAIR_DEADLINE {
            panic!(
                "{what}: pod -> API_V4 not refused within {REPAIR_DEADLINE:?}; last: {r:?}\ndaemon log:\n{}",
                daemon.log()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Curls pod (from `src` when given) -> API_V4 until served; returns how long it took.
#[track_caller]
pub fn poll_served(topo: &Topology, src: Option<&str>, daemon: &Daemon, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let r = match src {
            Some(s) => curl_from(&topo.pod, s, API_V4, API_PORT, 2),
            None => curl(&topo.pod, API_V4, API_PORT, 2),
        };
        if r.served() {
            return start.elapsed();
        }
        if start.elapsed() > REPAIR_DEADLINE {
            panic!(
                "{what}: pod -> API_V4 not served within {REPAIR_DEADLINE:?}; last: {r:?}\ndaemon log:\n{}",
                daemon.log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Exactly one copy of our objects, all in backend `b`: one `table inet
/// apiserver_guard`, or one chain and exactly one jump, at rule 1 of FORWARD.
#[track_caller]
pub fn assert_one_copy(node: &Netns, b: Backend, what: &str) {
    assert_eq!(holders(node), vec![b], "{what}: backends holding our objects");
    match b.iptables_variant() {
        None => {
            let tables = node.run_ok(&["nft", "list", "tables"]);
            assert_eq!(
                count_lines(&tables, "table inet apiserver_guard"),
                1,
                "{what}: copies of our table in `nft list tables`:\n{tables}"
            );
        }
        Some(v) => {
            let save = ipt_save_family(node, false, v);
            assert_eq!(
                count_lines(&save, &format!(":{IPT_CHAIN} - [0:0]")),
                1,
                "{what}: copies of our chain:\n{save}"
            );
            assert_eq!(
                count_lines(&save, &jump_line("FORWARD")),
                1,
                "{what}: copies of our jump in FORWARD:\n{save}"
            );
            let first = ipt_ok(node, false, v, &["-S", "FORWARD", "1"]);
            assert_eq!(
                first.trim(),
                jump_line("FORWARD"),
                "{what}: rule 1 of FORWARD must be our jump:\n{save}"
            );
        }
    }
}
