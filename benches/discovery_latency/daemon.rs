//! The daemon under test: started directly inside a namespace (setns before exec), its stderr lines
//! collected with the time they were read, waits for a log line or for idleness, its memory from
//! /proc, and the figures it reports (the `applied` and `block installed` lines, /metrics).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::common::daemon_cases::LISTEN;
use crate::common::Netns;
use crate::stop::check_stop;
use crate::R;

/// Pause after each change before waiting for the daemon to be idle (no tool running).
pub const SETTLE: Duration = Duration::from_millis(200);
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// Environment variables that could change the daemon's behaviour behind the bench's back.
fn ours(var: &str) -> bool {
    var.starts_with("APISERVER_GUARD_")
        || [
            "NODE_NAME",
            "KUBERNETES_SERVICE_HOST",
            "KUBECONFIG",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ]
        .contains(&var)
}

/// `bin args...` started directly inside `ns` (setns in the child before exec: no `ip netns exec`
/// in the start-up figures), stderr lines collected with the time they were read.
pub struct BenchDaemon {
    child: Child,
    log: Arc<Mutex<Vec<(u64, String)>>>,
    reader: Option<JoinHandle<()>>,
    log_file: PathBuf,
}

impl BenchDaemon {
    pub fn start(bin: &Path, ns: &Netns, args: &[String], log_file: PathBuf) -> R<BenchDaemon> {
        let nsfile = File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path()))?;
        let fd = nsfile.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if ours(&k.to_string_lossy()) {
                cmd.env_remove(k);
            }
        }
        // SAFETY: between fork and exec only setns(2), a plain syscall on an fd that stays open
        // in the child (`nsfile` lives until after spawn).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        drop(nsfile);
        let log: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let sink = log.clone();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push((now_ns(), line));
            }
        });
        Ok(BenchDaemon {
            child,
            log,
            reader: Some(reader),
            log_file,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<(u64, String)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits (bounded) for a line containing `pat` at index `from` or later; returns when it was
    /// read and the line.
    pub fn wait_line(&mut self, pat: &str, from: usize, limit: Duration) -> R<(u64, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((t, l)) = self.lines().into_iter().skip(from).find(|(_, l)| l.contains(pat)) {
                return Ok((t, l));
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "daemon exited ({st}) before logging '{pat}':\n{}",
                    self.tail(20)
                ));
            }
            check_stop()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "no '{pat}' from the daemon within {limit:?}:\n{}",
                    self.tail(20)
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn tail(&self, n: usize) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(n)..]
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the daemon runs a tool (nft, iptables-nft-restore, ...) right now.
    fn busy(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while quiet < 5 {
            check_stop()?;
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("daemon exited ({st}):\n{}", self.tail(20)));
            }
            if Instant::now() > deadline {
                return Err(format!("daemon not idle within 30 s:\n{}", self.tail(20)));
            }
            quiet = if self.busy() { 0 } else { quiet + 1 };
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
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

    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text: String = self.lines().iter().map(|(_, l)| format!("{l}\n")).collect();
        let _ = std::fs::write(&self.log_file, text);
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.stop();
        }
    }
}

/// "discovery: applied ... (12.3 ms after the change arrived)" -> 12.3
pub fn applied_ms(line: &str) -> Option<f64> {
    let head = line.split(" ms after the change arrived").next()?;
    head.rsplit('(').next()?.trim().parse().ok()
}

/// "block installed in 21.2 ms" or "block installed (21.2 ms)" -> 21.2
pub fn installed_ms(line: &str) -> Option<f64> {
    line.split("block installed")
        .nth(1)?
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
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
