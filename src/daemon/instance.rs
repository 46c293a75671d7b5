//! One daemon per network namespace. Two daemons with different policies in
//! one namespace (a systemd unit left enabled under the DaemonSet) would undo
//! each other's block forever, letting pods through in between. The daemon
//! therefore binds an *abstract* unix socket, whose name is scoped to the
//! network namespace and vanishes with the process (nothing stale to clean
//! up after a crash or SIGKILL). A second daemon finds the name taken, asks
//! the first who it is (its pid and uid from the kernel's SO_PEERCRED, and how
//! it was started from its answer) and refuses to start, naming it.
//!
//! Abstract names have no permissions: any local process could squat ours to
//! keep the daemon from starting. A daemon always runs as root (it programs
//! the firewall), so a holder that is not uid 0 is not one of ours: the
//! daemon says so loudly and enforces anyway, without the guard against a
//! second daemon (which a squatter defeats, but cannot turn into a hole).

use crate::error::{Error, Result};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// The abstract socket name (`@apiserver-guard/daemon` in `ss -xl`).
pub const NAME: &[u8] = b"apiserver-guard/daemon";
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_ANSWER: u64 = 4096;

/// Held for the daemon's lifetime: while it exists, the name is ours (None
/// when an unprivileged squatter holds it).
pub struct InstanceLock {
    listener: Option<UnixListener>,
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
            listener: Some(listener),
            started_as: started_as(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let holder = who_holds(&addr);
            if let Some(what) = holder.not_a_daemon() {
                log::error!(
                    "the daemon's instance socket @{} is held by {what} ({}): it is not an \
                     apiserver-guard daemon. Enforcing anyway, without the guard against a second daemon; \
                     find and stop that process",
                    String::from_utf8_lossy(NAME),
                    holder.describe()
                );
                return Ok(InstanceLock {
                    listener: None,
                    started_as: started_as(),
                });
            }
            Err(Error::runtime(format!(
                "another apiserver-guard daemon already runs in this network namespace ({}); \
                 two daemons would undo each other's block. Run one per node: stop the other \
                 (systemd: systemctl disable --now apiserver-guard; Kubernetes: keep this node out of \
                 the DaemonSet, see the README) and start again",
                holder.describe()
            )))
        }
        Err(e) => Err(Error::runtime(format!(
            "cannot take the daemon's instance socket @{}: {e}",
            String::from_utf8_lossy(NAME)
        ))),
    }
}

/// Who holds the name, as far as we can tell.
struct Holder {
    pid: Option<i32>,
    uid: Option<u32>,
    /// `/proc/PID/comm`, where visible.
    comm: Option<String>,
    answer: String,
}

/// The command name of our daemon (`/proc/PID/comm`, 15 characters at most).
const DAEMON_COMM: &str = "apiserver-guard";

impl Holder {
    /// Why the holder cannot be an apiserver-guard daemon (which always runs
    /// as root under its own name), or None when it may be one.
    fn not_a_daemon(&self) -> Option<String> {
        if self.uid.is_some_and(|uid| uid != 0) {
            return Some("an unprivileged process".to_string());
        }
        match &self.comm {
            Some(c) if c != DAEMON_COMM => Some(format!("process {c}")),
            _ => None,
        }
    }

    /// "pid N (comm), uid U, started as ..." for messages.
    fn describe(&self) -> String {
        let pid = match (self.pid, &self.comm) {
            (Some(p), Some(c)) => format!("pid {p}, {c}"),
            (Some(p), None) => format!("pid {p}"),
            (None, _) => "pid unknown".to_string(),
        };
        let mut parts = vec![pid];
        if let Some(uid) = self.uid.filter(|u| *u != 0) {
            parts.push(format!("uid {uid}"));
        }
        if !self.answer.is_empty() {
            parts.push(format!("started as {}", self.answer));
        }
        parts.join(", ")
    }
}

/// The holder of `addr`: credentials from the kernel, and what it says of itself.
fn who_holds(addr: &SocketAddr) -> Holder {
    let Ok(mut stream) = UnixStream::connect_addr(addr) else {
        return Holder {
            pid: None,
            uid: None,
            comm: None,
            answer: "it did not answer".to_string(),
        };
    };
    let cred = peer_cred(&stream);
    let _ = stream.set_read_timeout(Some(ASK_TIMEOUT));
    let mut answer = String::new();
    let _ = (&mut stream).take(MAX_ANSWER).read_to_string(&mut answer);
    // Only the first line, printable: the holder may not be one of ours.
    let answer: String = answer
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect();
    let pid = cred.map(|c| c.pid).filter(|p| *p > 0);
    let comm = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    Holder {
        pid,
        uid: cred.map(|c| c.uid),
        comm,
        answer: answer.trim().to_string(),
    }
}

/// The peer's credentials as the kernel saw it connect (pid translated to our pid namespace).
fn peer_cred(stream: &UnixStream) -> Option<libc::ucred> {
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
    (rc == 0).then_some(cred)
}

impl InstanceLock {
    /// Answers every second daemon that asks, for as long as we run.
    pub fn serve(self) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(listener) = self.listener else { return Ok(None) };
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let answer = format!("{}\n", self.started_as);
        Ok(Some(tokio::spawn(async move {
            loop {
                if let Ok((mut conn, _)) = listener.accept().await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tokio::time::timeout(ASK_TIMEOUT, conn.write_all(answer.as_bytes())).await;
                }
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(uid: Option<u32>, comm: Option<&str>) -> Holder {
        Holder {
            pid: Some(42),
            uid,
            comm: comm.map(str::to_string),
            answer: String::new(),
        }
    }

    #[test]
    fn only_a_root_process_under_our_name_may_be_a_daemon() {
        assert_eq!(holder(Some(0), Some("apiserver-guard")).not_a_daemon(), None);
        assert_eq!(
            holder(Some(0), None).not_a_daemon(),
            None,
            "cannot tell: assume a daemon"
        );
        let n = holder(Some(65534), Some("apiserver-guard")).not_a_daemon().unwrap();
        assert!(n.contains("unprivileged"), "{n}");
        let n = holder(Some(0), Some("perl")).not_a_daemon().unwrap();
        assert_eq!(n, "process perl");
        assert_eq!(holder(Some(0), Some("perl")).describe(), "pid 42, perl");
    }

    #[test]
    fn started_as_names_the_command_line() {
        assert!(started_as().contains(": "), "{}", started_as());
    }
}
