//! The bench's own network namespaces (`agbench-<role>-<pid>`, deleted on drop after killing
//! whatever still runs inside) and commands run in them (setns in the child, no `ip netns exec`).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use crate::shared::netns::{enter, exec_in};
use crate::shared::R;

/// A network namespace owned by this process: `agbench-<role>-<pid>`, deleted on drop
/// (after killing whatever still runs inside, which can only be ours).
pub struct Netns {
    pub name: String,
    pub file: File,
}

impl Netns {
    pub fn new(role: &str) -> R<Netns> {
        let name = format!("agbench-{role}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip netns add: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(f) => f,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                return Err(format!("open /run/netns/{name}: {e}"));
            }
        };
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn ip(&self, args: &[&str]) -> R<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        output_ok(&mut cmd).map(|_| ())
    }

    /// `prog args` inside this namespace: setns() in the child before exec (no shell, no
    /// `ip netns exec` overhead).
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(Stdio::null());
        // `self.file` stays open as long as the namespace.
        exec_in(&mut cmd, self.file.as_raw_fd());
        cmd
    }

    pub fn run(&self, prog: &str, args: &[&str]) -> R<String> {
        output_ok(&mut self.cmd(prog, args))
    }

    pub fn run_stdin(&self, prog: &str, args: &[&str], input: String) -> R<()> {
        let mut child = self
            .cmd(prog, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {prog}: {e}"))?;
        let mut pipe = child.stdin.take().ok_or("no stdin")?;
        let writer = thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(|e| format!("wait {prog}: {e}"))?;
        let _ = writer.join();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{prog} {} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Run `f` on a new thread that has joined this namespace (`None` from the handle only if
    /// joining failed, which this function already reported).
    pub fn thread<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> R<JoinHandle<Option<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = mpsc::channel::<R<()>>();
        let h = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let entered = File::open(&path)
                    .and_then(|f| enter(f.as_raw_fd()))
                    .map_err(|e| e.to_string());
                let ok = entered.is_ok();
                let _ = tx.send(entered);
                // Never run `f` in the wrong namespace.
                ok.then(f)
            })
            .map_err(|e| format!("spawn thread: {e}"))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => Err(format!("setns({path}) failed: {e}", path = self.name)),
            Err(_) => Err("namespace thread died".into()),
        }
    }

    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        for pid in self.pids().into_iter().filter(|&p| p != me) {
            // SAFETY: kill(2) on a pid living in our uniquely named namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

pub fn output_ok(cmd: &mut Command) -> R<String> {
    let out: Output = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
