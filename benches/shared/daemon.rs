//! The daemon under test as a child process: spawned with stdin and stdout on /dev/null, its
//! stderr lines collected with the time they were read, waits for a log line or for quiet, stopped
//! with SIGTERM (then SIGKILL) and its log written to a file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::clock::now_ns;
use super::stop::check_stop;
use super::R;

/// A spawned daemon and its stderr lines, (time read, line); stopped on drop.
pub struct DaemonProc {
    child: Child,
    log: Arc<Mutex<Vec<(u64, String)>>>,
    reader: Option<JoinHandle<()>>,
    log_file: PathBuf,
}

impl DaemonProc {
    /// Spawns `cmd` (stdin and stdout to /dev/null, stderr read line by line); `stop` writes the
    /// lines to `log_file`.
    pub fn spawn(mut cmd: Command, log_file: PathBuf) -> R<DaemonProc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", cmd.get_program().to_string_lossy()))?;
        let log: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let sink = log.clone();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push((now_ns(), line));
            }
        });
        Ok(DaemonProc {
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
            if let Some(st) = self.exited() {
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

    /// Polls `quiet` every 10 ms (bounded by `limit`) until it held 5 times in a row (50 ms);
    /// `what` completes the timeout's "daemon not ..." message.
    pub fn wait_quiet(&mut self, limit: Duration, what: &str, mut quiet: impl FnMut() -> bool) -> R<()> {
        let deadline = Instant::now() + limit;
        let mut n = 0;
        while n < 5 {
            check_stop()?;
            if let Some(st) = self.exited() {
                return Err(format!("daemon exited ({st}):\n{}", self.tail(20)));
            }
            if Instant::now() > deadline {
                return Err(format!("daemon not {what}:\n{}", self.tail(20)));
            }
            n = if quiet() { n + 1 } else { 0 };
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn tail(&self, n: usize) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(n)..]
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited().is_some() {
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

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.stop();
        }
    }
}
