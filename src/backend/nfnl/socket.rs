//! `NfnlSocket`: our own NETLINK_NETFILTER socket for nf_tables requests
//! (batches and dumps; no multicast groups: events are the daemon's
//! `netlink.rs`). Bound with a kernel-assigned port id, which is also the
//! identity the kernel records as the owner of a table created with the
//! `owner` flag from this socket, so the socket must live as long as the
//! ownership should. Blocking, with a receive timeout so a kernel that never
//! answers cannot hang us; close-on-exec so a spawned child cannot keep it
//! (and the table ownership) alive.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const NETLINK_NETFILTER: libc::c_int = 12;
/// Acks carry only the header of the refused message, not its payload.
const NETLINK_CAP_ACK: libc::c_int = 10;
/// Room for a large dump burst and one ack per message of a big batch.
const RCVBUF: libc::c_int = 4 << 20;
/// `netlink_sendmsg` refuses a datagram longer than the send buffer minus this.
const SNDBUF_SLACK: usize = 32;

/// One nf_tables request socket. Requests on it are serialised: concurrent
/// `transact`/`dump_table` calls from several threads wait for each other.
pub struct NfnlSocket {
    fd: OwnedFd,
    port_id: u32,
    timeout: Duration,
    seq: AtomicU32,
    sndbuf: AtomicUsize,
    /// Held for one request/reply exchange; the receive buffer lives in it.
    exchange: Mutex<Vec<u8>>,
}

impl NfnlSocket {
    /// How long to wait for each reply datagram by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Opens a socket in the calling thread's network namespace with the default timeout.
    pub fn open() -> io::Result<NfnlSocket> {
        Self::with_timeout(Self::DEFAULT_TIMEOUT)
    }

    /// Opens a socket whose every receive gives up after `timeout`.
    pub fn with_timeout(timeout: Duration) -> io::Result<NfnlSocket> {
        // SAFETY: plain syscalls on a socket we create; every pointer passed
        // points to a live, correctly sized local.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let owned = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // nl_pid 0: the kernel assigns a unique port id.
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            if libc::bind(fd, &addr as *const libc::sockaddr_nl as *const libc::sockaddr, len) < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut bound: libc::sockaddr_nl = std::mem::zeroed();
            let mut blen = len;
            if libc::getsockname(
                fd,
                &mut bound as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                &mut blen,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            if setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
                // Without CAP_NET_ADMIN only up to rmem_max; the kernel would refuse us anyway.
                let _ = setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
            }
            // Best effort: without it, error acks echo the whole refused message.
            let _ = setopt(fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1);
            let tv = libc::timeval {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_usec: timeout.subsec_micros() as libc::suseconds_t,
            };
            let tptr = &tv as *const libc::timeval as *const libc::c_void;
            let tlen = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tptr, tlen) < 0 {
                return Err(io::Error::last_os_error());
            }
            let sndbuf = getopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0) as usize;
            Ok(NfnlSocket {
                fd: owned,
                port_id: bound.nl_pid,
                timeout,
                seq: AtomicU32::new(1),
                sndbuf: AtomicUsize::new(sndbuf),
                exchange: Mutex::new(Vec::new()),
            })
        }
    }

    /// The netlink port id the kernel assigned to this socket: the owner id
    /// (`NFTA_TABLE_OWNER`) of tables created with the `owner` flag from it.
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// The receive timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    pub(crate) fn reserve_seq(&self, n: u32) -> u32 {
        self.seq.fetch_add(n, Ordering::Relaxed)
    }

    /// Holds the socket for one request/reply exchange; derefs to the
    /// receive buffer, allocated once per socket with `vec![0; n]` (fresh
    /// zero pages from the kernel: only what datagrams fill becomes
    /// resident). A buffer allocated per request was worse: once glibc's
    /// mmap threshold has grown past it, each new one comes from the heap and
    /// is zeroed there, and freed it stays resident (+0.4 MiB idle, measured).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        let mut held = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_empty() {
            *held = vec![0u8; super::RECV_BUF];
        }
        held
    }

    /// Sends one datagram to the kernel, growing the send buffer first when
    /// the datagram would not fit (a batch must travel in one datagram).
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        if buf.len() + SNDBUF_SLACK > self.sndbuf.load(Ordering::Relaxed) {
            let want = (buf.len() + 4096).min(i32::MAX as usize) as libc::c_int;
            if setopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want).is_err() {
                let _ = setopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, want);
            }
            self.sndbuf.store(
                getopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0) as usize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: zeroed sockaddr_nl is valid; `buf` is a live slice.
        unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            loop {
                let n = libc::sendto(
                    fd,
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    0,
                    &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                );
                if n >= 0 {
                    return Ok(());
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }

    /// Receives one datagram into `buf`; waits at most the timeout
    /// (`WouldBlock` then). A datagram larger than `buf` is an error, never
    /// silently cut.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_flags(buf, 0)
    }

    /// Throws away whatever is queued (late replies to an exchange that was
    /// abandoned), without waiting.
    pub(crate) fn drain(&self, buf: &mut [u8]) {
        while self.recv_flags(buf, libc::MSG_DONTWAIT).is_ok() {}
    }

    fn recv_flags(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        loop {
            // SAFETY: the iovec points into `buf`, live for the call; msghdr zeroed then filled.
            let (n, msg_flags) = unsafe {
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                    iov_len: buf.len(),
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, flags);
                (n, msg.msg_flags)
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if msg_flags & libc::MSG_TRUNC != 0 {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            }
            return Ok(n as usize);
        }
    }
}

impl AsRawFd for NfnlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn setopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let ptr = &value as *const libc::c_int as *const libc::c_void;
    // SAFETY: `value` is a live c_int of the size passed.
    let rc = unsafe { libc::setsockopt(fd, level, name, ptr, 4) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len: libc::socklen_t = 4;
    // SAFETY: `value`/`len` are live locals of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nfnl::{NfnlError, NfnlErrorKind};
    use std::time::Instant;

    // Opening and reading a netlink socket needs no privilege and sends
    // nothing to the kernel: safe in the test process's own namespace.

    #[test]
    fn a_silent_kernel_times_out_as_busy() {
        let sock = NfnlSocket::with_timeout(Duration::from_millis(50)).unwrap();
        let mut buf = [0u8; 64];
        let t = Instant::now();
        let err = sock.recv(&mut buf).unwrap_err();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(40) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        let e = NfnlError::io(&err, "waiting");
        assert_eq!((e.kind, e.errno), (NfnlErrorKind::Busy, libc::ETIMEDOUT));
        assert_eq!(NfnlSocket::open().unwrap().timeout(), Duration::from_secs(2));
    }

    #[test]
    fn kernel_assigned_port_ids_are_distinct_and_close_on_exec() {
        let a = NfnlSocket::open().unwrap();
        let b = NfnlSocket::open().unwrap();
        assert_ne!(a.port_id(), 0);
        assert_ne!(a.port_id(), b.port_id());
        // SAFETY: fcntl on a descriptor we own.
        let fd_flags = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFD) };
        assert!(fd_flags & libc::FD_CLOEXEC != 0);
        assert!(getopt(a.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap() >= RCVBUF);
    }

    #[test]
    fn sequence_numbers_are_reserved_in_blocks() {
        let s = NfnlSocket::open().unwrap();
        let first = s.reserve_seq(5);
        assert_eq!(s.reserve_seq(1), first + 5);
    }
}
