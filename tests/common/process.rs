//! Tracking of long-running processes started inside a network namespace, so
//! that a test can stop them explicitly and read their output, and so that
//! whatever is still running is killed (by pid) when the namespace is dropped.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct Tracked {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    /// Reader threads still draining a pipe (0: everything written has been read).
    open_pipes: Arc<AtomicUsize>,
}

/// The set of processes started through one `Netns`.
#[derive(Default)]
pub struct ProcessSet {
    procs: Mutex<Vec<Tracked>>,
}

impl ProcessSet {
    /// Spawn `cmd` with stdin closed and stdout+stderr collected (interleaved)
    /// into an in-memory buffer. Returns the child's pid.
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let open_pipes = Arc::new(AtomicUsize::new(0));
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for mut pipe in [stdout, stderr].into_iter().flatten() {
            let sink = Arc::clone(&output);
            let open = Arc::clone(&open_pipes);
            open.fetch_add(1, Ordering::SeqCst);
            // Detached on purpose: it ends when every holder of the pipe exits.
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let pid = child.id();
        self.lock().push(Tracked {
            child,
            output,
            open_pipes,
        });
        pid
    }

    /// Output (stdout and stderr, interleaved) collected so far from `pid`.
    pub fn output(&self, pid: u32) -> Option<String> {
        let (output, open_pipes, exited) = {
            let mut procs = self.lock();
            let t = procs.iter_mut().find(|t| t.child.id() == pid)?;
            let exited = t.child.try_wait().ok().flatten().is_some();
            (Arc::clone(&t.output), Arc::clone(&t.open_pipes), exited)
        };
        // Once the process has exited, its last lines may still be in the pipe:
        // wait (briefly; a grandchild may hold the pipe) for the readers to drain it.
        if exited {
            let deadline = Instant::now() + Duration::from_secs(2);
            while open_pipes.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let bytes = output.lock().unwrap_or_else(|p| p.into_inner());
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Exit status of `pid` if it has exited (None while running or unknown).
    pub fn try_wait(&self, pid: u32) -> Option<ExitStatus> {
        let mut procs = self.lock();
        let t = procs.iter_mut().find(|t| t.child.id() == pid)?;
        t.child.try_wait().ok().flatten()
    }

    /// SIGTERM `pid`, wait up to `grace` for it to exit, then SIGKILL it.
    /// Returns its exit status, or None if `pid` is not tracked here.
    pub fn stop(&self, pid: u32, grace: Duration) -> Option<ExitStatus> {
        let mut procs = self.lock();
        let t = procs.iter_mut().find(|t| t.child.id() == pid)?;
        if let Ok(Some(status)) = t.child.try_wait() {
            return Some(status);
        }
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = t.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = t.child.kill();
        t.child.wait().ok()
    }

    /// SIGKILL and reap every tracked process that is still running.
    pub fn kill_all(&self) {
        for t in self.lock().iter_mut() {
            if let Ok(None) = t.child.try_wait() {
                let _ = t.child.kill();
                let _ = t.child.wait();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tracked>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Send `sig` to one process by pid (errors such as ESRCH are ignored).
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}
