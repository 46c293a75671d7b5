//! The daemon under test, started in the node namespace: when it is ready, idle and in sync, its
//! CPU ticks, and the repair time it logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::shared::daemon::DaemonProc;
use crate::shared::probe::CONNECT_TIMEOUT;
use crate::shared::R;

use crate::netns::Netns;
use crate::topology::API;

pub const POLICY: [&str; 10] = [
    "--container-cidr",
    "10.0.0.0/16",
    "--apiserver",
    API,
    "--mode",
    "tunnel",
    "--config",
    "/dev/null",
    "--log-format",
    "text",
];
/// Minimum pause between iterations, before waiting for the daemon to be idle and in sync: one
/// interval of the daemon's repair budget (a burst of 5, then one repair per second), so every
/// flush is repaired at once; a faster series would measure the budget's deferral instead.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The daemon (`DaemonProc`: its stderr lines with the time read, stopped on drop) and what
/// tells when it is quiet.
pub struct Daemon {
    pub proc: DaemonProc,
    /// CPU ticks of the `nft monitor` child at the last `busy` call.
    pub monitor_ticks: Option<u64>,
}

impl Deref for Daemon {
    type Target = DaemonProc;
    fn deref(&self) -> &DaemonProc {
        &self.proc
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut DaemonProc {
        &mut self.proc
    }
}

impl Daemon {
    /// `extra`: more arguments, e.g. `--table-ownership off`.
    pub fn start(bin: &Path, node: &Netns, backend: &str, extra: &[&str], log_file: PathBuf) -> R<Daemon> {
        let bin = bin.to_str().ok_or("binary path is not UTF-8")?;
        let mut args = vec!["run"];
        args.extend(POLICY);
        args.extend(["--backend", backend]);
        args.extend(extra);
        Ok(Daemon {
            proc: DaemonProc::spawn(node.cmd(bin, &args), log_file)?,
            monitor_ticks: None,
        })
    }

    /// After `SETTLE`, waits (bounded) until /readyz says in sync and no check/repair has been
    /// running for 5 polls in a row (50 ms).
    pub fn wait_in_sync(&mut self, node: &Netns, limit: Duration) -> R<()> {
        thread::sleep(SETTLE);
        let pid = self.proc.pid();
        let ticks = &mut self.monitor_ticks;
        self.proc
            .wait_quiet(limit, &format!("idle and in sync within {limit:?}"), || {
                !busy(pid, ticks) && ready(node)
            })
    }
}

/// Whether the daemon runs a tool right now (any child but its `nft monitor`), or its
/// `nft monitor` used CPU since the last call (it reads the whole ruleset into its cache when
/// it starts: seconds with 100,000 foreign rules, during which it reports no events).
pub fn busy(pid: u32, monitor_ticks: &mut Option<u64>) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut busy = false;
    let mut monitor = None;
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.trim_end().ends_with("nft monitor") {
                monitor = cpu_ticks(c);
            } else {
                busy = true;
            }
        }
    }
    let last = std::mem::replace(monitor_ticks, monitor);
    busy || last != monitor
}

/// Whether the daemon's /readyz (in `node`) answers 200.
pub fn ready(node: &Netns) -> bool {
    node.thread("readyz", || {
        let Ok(mut s) = TcpStream::connect_timeout(&"127.0.0.1:9440".parse().expect("addr"), CONNECT_TIMEOUT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200")
    })
    .ok()
    .and_then(|h| h.join().ok().flatten())
    .unwrap_or(false)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn repair_ms(line: &str) -> Option<f64> {
    let v = line.split("repair_ms=").nth(1)?;
    v.trim_start_matches('"')
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}
