//! The node's addresses coming and going: an rtnetlink socket joined to the
//! IPv4 and IPv6 address groups wakes the daemon whenever an address is added
//! or removed (a keepalived VIP moving to this node, an interface coming up),
//! so the "is this apiserver on this node?" decision (the INPUT hook and the
//! every-local-address rule) follows at once instead of at the next resync,
//! which stays the safety net. Only the fact of a change is used: the daemon
//! reads the addresses again itself.

use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// rtnetlink multicast groups (group numbers, linux/rtnetlink.h).
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

fn socket() -> std::io::Result<OwnedFd> {
    super::netlink::subscribe(libc::NETLINK_ROUTE, &[RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR])
}

/// Sends on `wake` after every burst of address changes; returns (logging
/// why) if the socket cannot be had, leaving the periodic resync in charge.
pub async fn run(wake: mpsc::Sender<()>) {
    // SAFETY: the OwnedFd keeps its descriptor open until the AsyncFd drops it.
    let registered = socket().and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1));
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("cannot watch the node's addresses ({e}); a local apiserver is noticed at the next resync");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(mut guard) = fd.readable().await else { return };
        let mut changed = false;
        loop {
            // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
            let n = unsafe { libc::recv(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                changed = true;
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => {
                    guard.clear_ready();
                    break;
                }
                Some(libc::EINTR) => continue,
                // Dropped notifications are changes too.
                Some(libc::ENOBUFS) => changed = true,
                _ => {
                    log::warn!("address watch failed; a local apiserver is noticed at the next resync");
                    return;
                }
            }
        }
        if changed {
            let _ = wake.try_send(());
        }
    }
}
