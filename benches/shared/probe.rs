//! The pod probe's single connect: a TCP connect closed at once with RST (SO_LINGER 0), classified
//! as served, refused (RST from the block) or other, and the probe-gap knob of the probe loops.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// A connect that neither completes nor is refused within this counts as "other" and is retried
/// (a lost SYN would otherwise stall the probe for the 1 s SYN retransmit).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Pause between probes in the tight phase (`--probe-gap-us`, default 0 = back to back).
pub static GAP_US: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Served,
    Refused,
    Other,
}

/// SO_LINGER 0: closing sends RST and leaves no TIME_WAIT or FIN_WAIT state behind.
pub fn set_linger0(s: &TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// One TCP connect, closed at once with RST (see `set_linger0`), so that thousands of probes
/// never exhaust the pod's ephemeral ports.
pub fn connect(addr: &SocketAddr) -> Conn {
    match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
        Ok(s) => {
            set_linger0(&s);
            Conn::Served
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Conn::Refused,
        // Reset after the handshake completed (only a SYN answered by RST is "refused").
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Conn::Served,
        Err(_) => Conn::Other,
    }
}
