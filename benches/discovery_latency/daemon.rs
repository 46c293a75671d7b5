//! The daemon under test: started directly inside a namespace (setns before exec) without our
//! environment variables, waits for idleness, its memory from /proc, and the figures it reports
//! (the `applied` line, /metrics); the process and its log lines are `shared::daemon`'s.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::common::daemon_cases::{DAEMON_ENV, LISTEN};
use crate::common::Netns;
use crate::shared::daemon::DaemonProc;
use crate::shared::netns::exec_in;
use crate::R;

/// Pause after each change before waiting for the daemon to be idle (no tool running).
pub const SETTLE: Duration = Duration::from_millis(200);
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// Environment variables that could change the daemon's behaviour behind the bench's back.
fn ours(var: &str) -> bool {
    var.starts_with("APISERVER_GUARD_") || DAEMON_ENV.contains(&var)
}

/// `bin args...` started directly inside `ns` (setns in the child before exec: no `ip netns exec`
/// in the start-up figures), stderr lines collected with the time they were read (`DaemonProc`).
pub struct BenchDaemon(DaemonProc);

impl Deref for BenchDaemon {
    type Target = DaemonProc;
    fn deref(&self) -> &DaemonProc {
        &self.0
    }
}

impl DerefMut for BenchDaemon {
    fn deref_mut(&mut self) -> &mut DaemonProc {
        &mut self.0
    }
}

impl BenchDaemon {
    pub fn start(bin: &Path, ns: &Netns, args: &[String], log_file: PathBuf) -> R<BenchDaemon> {
        let nsfile = File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path()))?;
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for (k, _) in std::env::vars_os() {
            if ours(&k.to_string_lossy()) {
                cmd.env_remove(k);
            }
        }
        // `nsfile` stays open until after spawn.
        exec_in(&mut cmd, nsfile.as_raw_fd());
        let d = DaemonProc::spawn(cmd, log_file)?;
        drop(nsfile);
        Ok(BenchDaemon(d))
    }

    /// Whether the daemon runs a tool (nft, iptables-nft-restore, ...) right now.
    fn busy(pid: u32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|t| {
            !std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .trim()
                .is_empty()
        })
    }

    /// After `SETTLE`, waits (bounded) until no tool has run for 5 polls in a row (50 ms).
    pub fn wait_idle(&mut self) -> R<()> {
        thread::sleep(SETTLE);
        let pid = self.pid();
        self.0
            .wait_quiet(Duration::from_secs(30), "idle within 30 s", || !Self::busy(pid))
    }

    /// (VmRSS, VmHWM) in KiB and the thread count, from /proc/PID/status.
    pub fn memory(&self) -> Option<(u64, u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?, field("Threads:")?))
    }
}

/// "discovery: applied ... (12.3 ms after the change arrived)" -> 12.3
pub fn applied_ms(line: &str) -> Option<f64> {
    let head = line.split(" ms after the change arrived").next()?;
    head.rsplit('(').next()?.trim().parse().ok()
}

/// One metric's value from the daemon's /metrics (read from inside the node namespace).
pub fn scrape(node: &Netns, names: &[&str]) -> Vec<Option<f64>> {
    let body = node
        .in_thread(|| {
            let mut s =
                TcpStream::connect_timeout(&LISTEN.parse().expect("valid constant"), Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).ok()?;
            Some(buf)
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    names
        .iter()
        .map(|n| {
            body.lines()
                .find(|l| l.starts_with(n) && !l.starts_with('#'))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        })
        .collect()
}
