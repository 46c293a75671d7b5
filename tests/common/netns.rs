//! `Netns`: a uniquely named network namespace owned by one test, with
//! helpers to run commands inside it (`ip netns exec`, never a shell), to run
//! closures on a thread that has entered it, and deletion on `Drop`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use apiserver_guard::verify::netns;

use super::process::{self, ProcessSet};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A network namespace created for (and deleted after) one test.
pub struct Netns {
    pub name: String,
    processes: ProcessSet,
}

impl Netns {
    /// Create `agt-<role>-<pid>-<counter>` and bring its `lo` up. Panics on failure.
    pub fn new(role: &str) -> Netns {
        Self::try_new(role).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Non-panicking `new`, used by the preflight check.
    pub(crate) fn try_new(role: &str) -> Result<Netns, String> {
        assert!(
            !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "netns role must be non-empty [A-Za-z0-9-]: {role:?}"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("agt-{role}-{}-{n}", std::process::id());
        let mut last_err = String::new();
        // Concurrent `ip netns add` can race on the /run/netns mount setup; retry briefly.
        for attempt in 0..3 {
            if attempt > 0 {
                thread::sleep(Duration::from_millis(50));
            }
            match Command::new("ip").args(["netns", "add", &name]).output() {
                Ok(out) if out.status.success() => {
                    let ns = Netns {
                        name,
                        processes: ProcessSet::default(),
                    };
                    // From here on, Drop deletes the namespace.
                    let lo = ns.ip(&["link", "set", "lo", "up"]);
                    if !lo.status.success() {
                        return Err(format!(
                            "`ip -n {} link set lo up` failed: {}",
                            ns.name,
                            String::from_utf8_lossy(&lo.stderr).trim()
                        ));
                    }
                    return Ok(ns);
                }
                Ok(out) => {
                    last_err = format!(
                        "`ip netns add {name}` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                }
                Err(e) => return Err(format!("cannot run `ip netns add {name}`: {e}")),
            }
        }
        Err(last_err)
    }

    /// Bind-mount path of the namespace: `/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn exec_command(&self, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "empty argv for netns {}", self.name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// `ip netns exec <name> argv...`; panics only if `ip` cannot be spawned.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.exec_command(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot spawn `{}` in netns {}: {e}", argv.join(" "), self.name))
    }

    /// Like `run`, but panics (with argv, status, stderr and stdout) unless
    /// the command succeeds. Returns stdout.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        check_ok(&self.name, argv, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `run`, feeding `stdin` to the command.
    pub fn run_stdin(&self, argv: &[&str], stdin: &str) -> Output {
        let mut child = self
            .exec_command(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{}` in netns {}: {e}", argv.join(" "), self.name));
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = stdin.to_owned();
        // Write from another thread so a large input cannot deadlock against
        // a child that fills its stdout pipe first.
        let writer = thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for `{}` in netns {}: {e}", argv.join(" "), self.name));
        let _ = writer.join();
        out
    }

    /// `ip -n <name> args...` (cheaper than `run(["ip", ...])`), panicking on failure.
    pub fn ip_ok(&self, args: &[&str]) {
        let out = self.ip(args);
        let mut argv = vec!["ip"];
        argv.extend_from_slice(args);
        check_ok(&self.name, &argv, &out);
    }

    fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot spawn `ip -n {} {}`: {e}", self.name, args.join(" ")))
    }

    /// `sysctl -w key=value...` inside the namespace (one process for all
    /// settings), panicking on failure.
    pub fn sysctl(&self, settings: &[(&str, &str)]) {
        let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut argv = vec!["sysctl", "-q", "-w"];
        argv.extend(pairs.iter().map(String::as_str));
        self.run_ok(&argv);
    }

    /// Run `f` on a fresh thread that has joined this namespace (setns only
    /// affects that thread). Sockets created there stay in this namespace and
    /// can be used from any thread afterwards. Panics in `f` propagate.
    pub fn in_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = self.path();
        thread::scope(|s| {
            let handle = s.spawn(move || {
                enter_netns(&path)?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Start a long-running `argv` inside the namespace; stdout+stderr are
    /// collected (see `output_of`). It is killed when the `Netns` is dropped.
    pub fn spawn(&self, argv: &[&str]) -> u32 {
        self.processes.spawn(self.exec_command(argv))
    }

    /// Output collected so far from a process started with `spawn`.
    pub fn output_of(&self, pid: u32) -> String {
        self.processes
            .output(pid)
            .unwrap_or_else(|| panic!("pid {pid} was not spawned in netns {}", self.name))
    }

    /// Exit status of a `spawn`ed process if it has exited.
    pub fn try_wait(&self, pid: u32) -> Option<ExitStatus> {
        self.processes.try_wait(pid)
    }

    /// SIGTERM a `spawn`ed process, SIGKILL after `grace`; returns its status.
    pub fn stop(&self, pid: u32, grace: Duration) -> Option<ExitStatus> {
        self.processes.stop(pid, grace)
    }

    /// Pids of the processes currently living in this namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stdin(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.processes.kill_all();
        // Anything else still inside (e.g. a daemon that forked away from a
        // tracked process) can only have been started by this test, since the
        // namespace name is unique to it. Never ourselves.
        let me = std::process::id();
        for pid in self.pids().into_iter().filter(|&p| p != me) {
            process::signal(pid, libc::SIGKILL);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Make the calling thread join the network namespace at `path`
/// (`apiserver_guard::verify::netns::enter`: only the calling thread moves). Only call this on
/// a thread created for the purpose, never on a test's own thread.
pub(crate) fn enter_netns(path: &str) -> io::Result<()> {
    let file = File::open(path)?;
    netns::enter(file.as_raw_fd()).map_err(|err| io::Error::new(err.kind(), format!("setns({path}): {err}")))
}

fn check_ok(ns: &str, argv: &[&str], out: &Output) {
    if !out.status.success() {
        panic!(
            "`{}` in netns {ns} failed ({})\nstderr: {}\nstdout: {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}
