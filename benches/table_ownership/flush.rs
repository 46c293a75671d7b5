//! Foreign flushes against the daemon's owned table: `apiserver-guard run` (its default, the table
//! held by its netlink socket with flags owner|persist) in the node namespace, a pod connecting to
//! the apiserver back to back all along, and another process in the node namespace running
//! `nft flush ruleset`, then `nft delete table inet apiserver_guard`, N times each. Counts the
//! pod's connects (served = the block was not there), the commands' exit statuses and time, and
//! whether the table is unchanged and still owned afterwards.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::{our_table_listing, Netns, API_PORT, API_V4};
use crate::shared::daemon::DaemonProc;
use crate::shared::netns::{enter, exec_in};
use crate::shared::probe::{connect, Conn, GAP_US};
use crate::shared::stop::{check_stop, STOP};
use crate::shared::R;
use crate::{api, daemon_cmd, READY};

/// One kind of foreign command, run `commands` times.
pub struct FlushRow {
    pub label: &'static str,
    pub commands: usize,
    pub exit_ok: usize,
    pub exit_failed: usize,
    /// The first failing command's stderr (e.g. "Operation not permitted").
    pub failure: String,
    pub total_s: f64,
    pub per_command_ms: Vec<f64>,
    pub probe: Counts,
    pub repairs_logged: usize,
    pub errors_logged: usize,
    pub unchanged: bool,
    pub owned_after: bool,
}

/// The pod's connects while the commands ran.
#[derive(Default, Clone, Copy)]
pub struct Counts {
    pub attempts: u64,
    pub refused: u64,
    pub served: u64,
    pub other: u64,
}

/// The foreign commands, as argv.
pub const COMMANDS: [(&str, &[&str]); 2] = [
    ("`nft flush ruleset`", &["nft", "flush", "ruleset"]),
    (
        "`nft delete table inet apiserver_guard`",
        &["nft", "delete", "table", "inet", "apiserver_guard"],
    ),
];

/// nft lists a table held by a socket with `flags owner` and the owning process.
fn owned(listing: &str) -> bool {
    listing.contains("flags owner") && listing.contains("progname apiserver-guard")
}

/// Starts the daemon with its defaults, waits for `ready` and an owned table; runs every command
/// of `COMMANDS` `rounds` times while the pod probes.
pub fn run(pod: &Netns, node: &Netns, rounds: usize, log: std::path::PathBuf) -> R<Vec<FlushRow>> {
    let mut d = DaemonProc::spawn(daemon_cmd(node, &[])?, log)?;
    d.wait_line(READY, 0, Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !owned(&our_table_listing(node)) {
        check_stop()?;
        if Instant::now() > deadline {
            return Err(format!(
                "the daemon's table is not owned (kernel before 6.9, or ownership off?):\n{}\nlog:\n{}",
                our_table_listing(node),
                d.tail(10)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let before = our_table_listing(node);
    let node_ns = File::open(node.path()).map_err(|e| format!("open {}: {e}", node.path()))?;
    let mut rows = Vec::new();
    for (label, argv) in COMMANDS {
        eprintln!("  {rounds} x {label} while the pod connects back to back");
        let from = d.len();
        let probe = Prober::start(pod)?;
        let mut row = FlushRow {
            label,
            commands: 0,
            exit_ok: 0,
            exit_failed: 0,
            failure: String::new(),
            total_s: 0.0,
            per_command_ms: Vec::with_capacity(rounds),
            probe: Counts::default(),
            repairs_logged: 0,
            errors_logged: 0,
            unchanged: false,
            owned_after: false,
        };
        let started = Instant::now();
        for _ in 0..rounds {
            if STOP.load(Ordering::Relaxed) {
                break;
            }
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]).stdin(Stdio::null());
            exec_in(&mut cmd, node_ns.as_raw_fd());
            let t = Instant::now();
            let out = cmd.output().map_err(|e| format!("spawn {}: {e}", argv.join(" ")))?;
            row.per_command_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            row.commands += 1;
            if out.status.success() {
                row.exit_ok += 1;
            } else {
                row.exit_failed += 1;
                if row.failure.is_empty() {
                    row.failure = String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim()
                        .to_string();
                }
            }
        }
        row.total_s = started.elapsed().as_secs_f64();
        row.probe = probe.finish()?;
        check_stop()?;
        let after = our_table_listing(node);
        row.unchanged = after == before;
        row.owned_after = owned(&after);
        let new = d.lines();
        row.repairs_logged = new[from..].iter().filter(|(_, l)| l.contains("repaired drift")).count();
        row.errors_logged = new[from..]
            .iter()
            .filter(|(_, l)| l.contains("check/repair failed"))
            .count();
        eprintln!(
            "    {:.1} s; pod: {} connects, {} refused, {} served",
            row.total_s, row.probe.attempts, row.probe.refused, row.probe.served
        );
        rows.push(row);
    }
    d.stop();
    Ok(rows)
}

/// A thread in the pod namespace connecting to the apiserver back to back until `finish`.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<R<Counts>>>,
}

impl Prober {
    fn start(pod: &Netns) -> R<Prober> {
        let ns = File::open(pod.path()).map_err(|e| format!("open {}: {e}", pod.path()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let addr = api(API_V4, API_PORT);
        let thread = thread::Builder::new()
            .name("pod-prober".into())
            .spawn(move || -> R<Counts> {
                enter(ns.as_raw_fd()).map_err(|e| format!("setns into the pod namespace: {e}"))?;
                Ok(probe_until(&addr, &flag))
            })
            .map_err(|e| format!("spawn prober: {e}"))?;
        // The first connect happens before the first command: the thread is in the namespace and
        // connecting by the time it reports one attempt; a short wait is enough here.
        thread::sleep(Duration::from_millis(20));
        Ok(Prober {
            stop,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> R<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .ok_or("prober already finished")?
            .join()
            .map_err(|_| "the prober panicked".to_string())?
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_until(addr: &SocketAddr, stop: &AtomicBool) -> Counts {
    let mut c = Counts::default();
    while !stop.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
        c.attempts += 1;
        match connect(addr) {
            Conn::Refused => c.refused += 1,
            Conn::Served => c.served += 1,
            Conn::Other => c.other += 1,
        }
        let gap = GAP_US.load(Ordering::Relaxed);
        if gap > 0 {
            thread::sleep(Duration::from_micros(gap));
        }
    }
    c
}
