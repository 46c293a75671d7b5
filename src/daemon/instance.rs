//! One daemon per network namespace. Two daemons with different policies in
//! one namespace (a systemd unit left enabled under the DaemonSet) would undo
//! each other's block forever, letting pods through in between. The daemon
//! therefore binds an *abstract* unix socket, whose name is scoped to the
//! network namespace and vanishes with the process (nothing stale to clean
//! up after a crash or SIGKILL). A second daemon finds the name taken, asks
//! the first who it is (its pid from the kernel's SO_PEERCRED, and how it was
//! started from its answer) and refuses to start, naming it.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// The abstract socket name (`@apiserver-guard/daemon` in `ss -xl`).
pub const NAME: &[u8] = b"apiserver-guard/daemon";
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_ANSWER: u64 = 4096;

/// Held for the daemon's lifetime: while it exists, the name is ours.
pub struct InstanceLock {
    listener: UnixListener,
    /// What we answer a second daemon: how this one was started.
    pub started_as: String,
}

/// How this process was started, for a second daemon's error message.
pub fn started_as() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let how = if let (Some(ns), Some(name)) = (env("POD_NAMESPACE"), env("POD_NAME")) {
        format!("Kubernetes pod {ns}/{name}")
    } else if env("KUBERNETES_SERVICE_HOST").is_some() {
        "a Kubernetes pod (DaemonSet)".to_string()
    } else if let Some(unit) = systemd_unit() {
        format!("systemd unit {unit}")
    } else {
        "by hand".to_string()
    };
    let argv: Vec<String> = std::env::args().collect();
    format!("{how}: {}", argv.join(" "))
}

/// The systemd unit this process runs in, from its cgroup path.
fn systemd_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .find(|last| last.ends_with(".service"))
        .map(str::to_string)
}

/// Takes the namespace's daemon name, or explains who holds it (exit 1).
pub fn acquire() -> Result<InstanceLock> {
    let addr = SocketAddr::from_abstract_name(NAME)
        .map_err(|e| Error::runtime(format!("cannot name the instance socket: {e}")))?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => Ok(InstanceLock {
            listener,
            started_as: started_as(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::runtime(format!(
            "another apiserver-guard daemon already runs in this network namespace ({}); \
             two daemons would undo each other's block. Run one per node: stop the other \
             (systemd: systemctl disable --now apiserver-guard; Kubernetes: keep this node out of \
             the DaemonSet, see the README) and start again",
            who_holds(&addr)
        ))),
        Err(e) => Err(Error::runtime(format!(
            "cannot take the daemon's instance socket @{}: {e}",
            String::from_utf8_lossy(NAME)
        ))),
    }
}

/// "pid N, started as ..." of the daemon listening on `addr`, best effort.
fn who_holds(addr: &SocketAddr) -> String {
    let Ok(mut stream) = UnixStream::connect_addr(addr) else {
        return "it did not answer".to_string();
    };
    let pid = peer_pid(&stream).map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
    let _ = stream.set_read_timeout(Some(ASK_TIMEOUT));
    let mut answer = String::new();
    let _ = (&mut stream).take(MAX_ANSWER).read_to_string(&mut answer);
    let answer = answer.trim();
    if answer.is_empty() {
        pid
    } else {
        format!("{pid}, started as {answer}")
    }
}

/// The peer's pid as the kernel saw it connect (translated to our pid namespace).
fn peer_pid(stream: &UnixStream) -> Option<i32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}

impl InstanceLock {
    /// Answers every second daemon that asks, for as long as we run.
    pub fn serve(self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(self.listener)?;
        let answer = format!("{}\n", self.started_as);
        Ok(tokio::spawn(async move {
            loop {
                if let Ok((mut conn, _)) = listener.accept().await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tokio::time::timeout(ASK_TIMEOUT, conn.write_all(answer.as_bytes())).await;
                }
            }
        }))
    }
}

/// Answers one asker synchronously (before the runtime runs; tests).
pub fn answer_once(lock: &InstanceLock) -> std::io::Result<()> {
    let (mut conn, _) = lock.listener.accept()?;
    conn.write_all(format!("{}\n", lock.started_as).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_as_names_the_command_line() {
        assert!(started_as().contains(": "), "{}", started_as());
    }
}
