//! Running firewall tools: argument vectors only (never a shell string),
//! optional stdin, and errors that name the missing package or privilege.
//! The `Runner` trait lets unit tests put a fake in place of the system.

use crate::error::{Error, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Runs a program; `Err` only when it could not be started at all.
pub trait Runner: Send + Sync {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<CmdOutput>;

    /// As `run`, with `env` set for the program (a fake may ignore it).
    fn run_with_env(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> std::io::Result<CmdOutput> {
        let _ = env;
        self.run(program, args, stdin)
    }
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

/// A process-wide instance, so backends built on it live as long as needed.
pub static SYSTEM: SystemRunner = SystemRunner;

/// PIDs of the tools we ran lately, so change events we caused ourselves
/// are not blamed on somebody else.
static OWN_PIDS: std::sync::Mutex<std::collections::VecDeque<u32>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
const OWN_PIDS_KEPT: usize = 256;

fn remember_own_pid(pid: u32) {
    let mut pids = OWN_PIDS.lock().unwrap_or_else(|p| p.into_inner());
    if pids.len() == OWN_PIDS_KEPT {
        pids.pop_front();
    }
    pids.push_back(pid);
}

/// Whether `pid` is this process, one of its threads (the kernel names the
/// thread that sent an nf_tables batch) or one of the tools it ran lately.
pub fn is_own_pid(pid: u32) -> bool {
    pid == std::process::id()
        || std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
        || OWN_PIDS.lock().unwrap_or_else(|p| p.into_inner()).contains(&pid)
}

/// Longest a firewall tool may run (iptables waits up to 5 s for the xtables
/// lock with `-w 5`): past it the tool is killed and the call fails, so a
/// tool that hangs can never wedge the daemon's checks and repairs.
pub const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<CmdOutput> {
        run_bounded(program, args, stdin, TOOL_TIMEOUT, &[])
    }

    fn run_with_env(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> std::io::Result<CmdOutput> {
        run_bounded(program, args, stdin, TOOL_TIMEOUT, env)
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `program` with `env` set and its output captured; kills it after `timeout`.
pub fn run_bounded(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: std::time::Duration,
    env: &[(&str, &str)],
) -> std::io::Result<CmdOutput> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Stable, parseable output whatever the operator's locale.
        .env("LC_ALL", "C");
    let mut child = cmd.spawn()?;
    let pid = child.id();
    remember_own_pid(pid);
    // Every pipe on its own thread: a tool that neither reads its input nor
    // finishes cannot block us on a full pipe.
    let feeder = match (stdin.map(str::to_owned), child.stdin.take()) {
        (Some(text), Some(mut pipe)) => Some(std::thread::spawn(move || {
            // A tool that exits without reading its input says why in its exit status.
            match pipe.write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                _ => Ok(()),
            }
        })),
        _ => None,
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(status) => status?,
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped
            // (the waiting thread reaps it once it dies).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish within {} s and was killed", timeout.as_secs()),
            ));
        }
    };
    if let Some(f) = feeder {
        f.join().unwrap_or(Ok(()))?;
    }
    Ok(CmdOutput {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    })
}

/// The distribution package that ships a tool, for "not found" errors.
pub fn package_of(program: &str) -> &'static str {
    if program.starts_with("nft") {
        "nftables"
    } else {
        "iptables"
    }
}

/// Why a finished tool run failed, decided once here from what it said
/// (tools report these only as text; `LC_ALL=C` keeps the text stable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFailure {
    /// The kernel (or the lock file) refused us: root or CAP_NET_ADMIN needed; waiting does not help.
    Permission,
    /// Another process holds the xtables lock or the object is busy: a later try may work.
    Busy,
    /// The object asked about does not exist (chain, table): an answer, not a fault.
    Missing,
    /// Anything else.
    Other,
}

/// What each tool prints for each kind of failure (nft 1.0, iptables 1.8 legacy and nft).
const PERMISSION: [&str; 3] = ["operation not permitted", "permission denied", "must be root"];
const BUSY: [&str; 3] = [
    "holding the xtables lock",
    "resource temporarily unavailable",
    "device or resource busy",
];
const MISSING: [&str; 4] = [
    "no such file or directory",
    "no chain/target/match by that name",
    "does not exist",
    // iptables-nft asked for a chain in a table that does not exist.
    "is incompatible, use 'nft' tool",
];

impl CmdOutput {
    /// None when the command succeeded; otherwise why it failed. Permission
    /// wins over the rest (a refused tool may say more than that).
    pub fn failure(&self) -> Option<ToolFailure> {
        if self.ok() {
            return None;
        }
        let said = self.stderr.to_ascii_lowercase();
        let says = |words: &[&str]| words.iter().any(|w| said.contains(w));
        Some(if says(&PERMISSION) {
            ToolFailure::Permission
        } else if says(&BUSY) {
            ToolFailure::Busy
        } else if says(&MISSING) {
            ToolFailure::Missing
        } else {
            ToolFailure::Other
        })
    }

    /// Whether it failed because the object asked about does not exist.
    pub fn missing(&self) -> bool {
        self.failure() == Some(ToolFailure::Missing)
    }
}

/// Runs a command that must start; maps "not found" to the package to install.
pub fn start(runner: &dyn Runner, program: &str, args: &[&str], stdin: Option<&str>) -> Result<CmdOutput> {
    started(program, runner.run(program, args, stdin))
}

/// A command's launch as an operator-facing error when it did not start.
fn started(program: &str, launched: std::io::Result<CmdOutput>) -> Result<CmdOutput> {
    launched.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingTool(format!(
                "`{program}` not found: install the {} package (apt-get install {0} / dnf install {0})",
                package_of(program)
            ))
        } else {
            Error::runtime(format!("cannot run `{program}`: {e}"))
        }
    })
}

/// Turns a failed command into an operator-facing error.
pub fn failure(program: &str, args: &[&str], out: &CmdOutput) -> Error {
    let stderr = out.stderr.trim();
    match out.failure() {
        Some(ToolFailure::Permission) => Error::Privilege(format!(
            "`{program}` was refused by the kernel: apiserver-guard needs root or CAP_NET_ADMIN (and CAP_NET_RAW for iptables) ({stderr})"
        )),
        Some(ToolFailure::Busy) if !stderr.to_ascii_lowercase().contains("resource busy") => Error::Busy(format!(
            "`{program}` could not get the firewall: another process holds it (the xtables lock; kube-proxy, \
             firewalld or another agent writing at the same time); a later try may work ({stderr})"
        )),
        Some(ToolFailure::Busy) => Error::Busy(format!(
            "`{program}` was refused by the kernel: an object it changes is in use (EBUSY: for instance a chain that \
             another rule, map or set still refers to); a later try works only once that reference is gone ({stderr})"
        )),
        _ => Error::runtime(format!(
            "`{program} {}` failed (exit {}): {}",
            args.join(" "),
            out.code,
            if stderr.is_empty() { "no message" } else { stderr }
        )),
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(runner: &dyn Runner, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    succeeded(program, args, start(runner, program, args, stdin)?)
}

/// As `run_ok`, with `env` set for the program.
pub fn run_ok_with_env(
    runner: &dyn Runner,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<String> {
    let out = started(program, runner.run_with_env(program, args, stdin, env))?;
    succeeded(program, args, out)
}

/// A finished command's stdout, or the error its failure means.
fn succeeded(program: &str, args: &[&str], out: CmdOutput) -> Result<String> {
    if out.ok() {
        Ok(out.stdout)
    } else {
        Err(failure(program, args, &out))
    }
}

#[cfg(test)]
pub mod fake {
    //! A scripted `Runner` for unit tests: answers by program+args prefix and records every call.
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct FakeRunner {
        pub answers: Mutex<Vec<(String, std::io::Result<CmdOutput>)>>,
        pub calls: Mutex<Vec<(String, Option<String>)>>,
    }

    impl FakeRunner {
        /// Answer calls whose "program args..." line starts with `prefix`.
        /// Several answers for the same prefix are given in turn, the last one for good.
        pub fn on(self, prefix: &str, code: i32, stdout: &str, stderr: &str) -> Self {
            let out = CmdOutput {
                code,
                stdout: stdout.into(),
                stderr: stderr.into(),
            };
            self.answers.lock().unwrap().push((prefix.into(), Ok(out)));
            self
        }

        pub fn missing(self, prefix: &str) -> Self {
            let err = std::io::Error::from(std::io::ErrorKind::NotFound);
            self.answers.lock().unwrap().push((prefix.into(), Err(err)));
            self
        }

        pub fn calls(&self) -> Vec<(String, Option<String>)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Runner for FakeRunner {
        fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<CmdOutput> {
            let line = std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            self.calls
                .lock()
                .unwrap()
                .push((line.clone(), stdin.map(str::to_string)));
            let mut answers = self.answers.lock().unwrap();
            let Some(i) = answers.iter().position(|(p, _)| line.starts_with(p.as_str())) else {
                panic!("FakeRunner: unexpected call `{line}`");
            };
            let answer = match &answers[i].1 {
                Ok(out) => Ok(out.clone()),
                Err(e) => Err(std::io::Error::from(e.kind())),
            };
            // An answer given again later for the same prefix takes over after one use.
            let prefix = answers[i].0.clone();
            if answers[i + 1..].iter().any(|(p, _)| *p == prefix) {
                let _ = answers.remove(i);
            }
            answer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeRunner;
    use super::*;

    #[test]
    fn missing_binary_names_the_package() {
        let r = FakeRunner::default().missing("nft");
        let e = start(&r, "nft", &["list", "tables"], None).unwrap_err().to_string();
        assert!(e.contains("install the nftables package"), "{e}");
        let r = FakeRunner::default().missing("iptables-legacy");
        let e = start(&r, "iptables-legacy", &[], None).unwrap_err().to_string();
        assert!(e.contains("iptables package"), "{e}");
    }

    #[test]
    fn permission_errors_say_what_is_needed() {
        let out = CmdOutput {
            code: 1,
            stdout: String::new(),
            stderr: "Error: Operation not permitted".into(),
        };
        let e = failure("nft", &["-f", "-"], &out).to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn other_failures_carry_command_and_stderr() {
        let out = CmdOutput {
            code: 1,
            stdout: String::new(),
            stderr: "Error: Could not process rule: No such file".into(),
        };
        let e = failure("nft", &["-f", "-"], &out).to_string();
        assert!(
            e.contains("nft -f -") && e.contains("exit 1") && e.contains("Could not process rule"),
            "{e}"
        );
    }

    #[test]
    fn a_tool_that_hangs_is_killed_at_the_timeout() {
        let started = std::time::Instant::now();
        let e = run_bounded("sleep", &["30"], None, std::time::Duration::from_millis(300), &[]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // One that ignores its input and finishes is fine, whatever the input's size.
        let big = "x".repeat(1 << 20);
        let out = run_bounded("true", &[], Some(&big), std::time::Duration::from_secs(5), &[]).unwrap();
        assert!(out.ok());
    }

    #[test]
    fn own_tools_are_remembered() {
        let out = SystemRunner.run("sh", &["-c", "echo $$"], None).unwrap();
        let pid: u32 = out.stdout.trim().parse().unwrap();
        assert!(is_own_pid(pid));
        assert!(!is_own_pid(u32::MAX));
    }

    #[test]
    fn system_runner_passes_argv_untouched_and_stdin() {
        let out = SystemRunner
            .run("cat", &[], Some("10.0.0.0/16; nft flush ruleset"))
            .unwrap();
        assert_eq!(out.stdout, "10.0.0.0/16; nft flush ruleset");
        let out = SystemRunner.run("printf", &["%s|", "a b", "$(x)"], None).unwrap();
        assert_eq!(out.stdout, "a b|$(x)|");
    }

    /// What the tools really print (nft 1.0.6, iptables 1.8.9; captured in a
    /// scratch namespace, as root and as nobody), and the kind each is.
    #[test]
    fn each_tool_message_is_one_kind_of_failure() {
        let failed = |code: i32, stderr: &str| CmdOutput {
            code,
            stdout: String::new(),
            stderr: stderr.into(),
        };
        let cases = [
            (1, "Error: No such file or directory\nlist chain ip filter NOPE\n", ToolFailure::Missing),
            (1, "iptables: No chain/target/match by that name.\n", ToolFailure::Missing),
            (
                1,
                "iptables v1.8.9 (nf_tables): chain `NOPE' in table `filter' is incompatible, use 'nft' tool.\n",
                ToolFailure::Missing,
            ),
            (2, "iptables-nft-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\n", ToolFailure::Missing),
            (
                1,
                "Operation not permitted (you must be root)\nnetlink: Error: cache initialization failed: Operation not permitted\n",
                ToolFailure::Permission,
            ),
            (
                4,
                "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n",
                ToolFailure::Permission,
            ),
            (4, "Fatal: can't open lock file /run/xtables.lock: Permission denied\n", ToolFailure::Permission),
            (
                4,
                "Another app is currently holding the xtables lock. Stopped waiting after 5s.\n",
                ToolFailure::Busy,
            ),
            (1, "Error: Could not process rule: Device or resource busy\n", ToolFailure::Busy),
            (1, "Error: syntax error, unexpected junk\n", ToolFailure::Other),
            (1, "", ToolFailure::Other),
        ];
        for (code, stderr, kind) in cases {
            assert_eq!(failed(code, stderr).failure(), Some(kind), "{stderr:?}");
        }
        assert_eq!(
            failed(0, "Error: No such file or directory").failure(),
            None,
            "success is no failure"
        );
        assert!(failed(1, "Error: No such file or directory").missing());
        assert!(!failed(0, "").missing());
    }

    #[test]
    fn failures_become_the_error_of_their_kind() {
        let out = |stderr: &str| CmdOutput {
            code: 4,
            stdout: String::new(),
            stderr: stderr.into(),
        };
        let e = failure(
            "iptables-restore",
            &[],
            &out("Another app is currently holding the xtables lock."),
        );
        assert!(matches!(e, Error::Busy(_)), "{e}");
        assert!(
            e.to_string().contains("another process holds it (the xtables lock"),
            "{e}"
        );
        let e = failure(
            "iptables-nft-restore",
            &[],
            &out("iptables-nft-restore v1.8.9 (nf_tables): CHAIN_USER_DEL failed (Device or resource busy): chain APISERVER-GUARD"),
        );
        assert!(matches!(e, Error::Busy(_)), "{e}");
        assert!(
            e.to_string().contains("in use") && !e.to_string().contains("xtables lock"),
            "{e}"
        );
        let e = failure("nft", &[], &out("Operation not permitted"));
        assert!(matches!(e, Error::Privilege(_)), "{e}");
        let e = failure("nft", &["list", "ruleset"], &out("Error: junk"));
        assert!(
            matches!(e, Error::Runtime(_)) && e.to_string().contains("`nft list ruleset` failed (exit 4)"),
            "{e}"
        );
    }
}
