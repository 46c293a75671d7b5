//! A netlink socket joined to multicast groups: the nf_tables change
//! notifications (`NFNLGRP_NFTABLES`, read by the daemon's event loop and
//! by the iptables-nft write that proves what it wrote), the rtnetlink
//! address groups, the NFLOG group.

use std::os::fd::{FromRawFd, OwnedFd};

/// `NETLINK_NETFILTER`.
pub const NETLINK_NETFILTER: libc::c_int = 12;
/// The nf_tables change notifications.
pub const NFNLGRP_NFTABLES: u32 = 7;

/// A non-blocking netlink socket of `protocol` joined to the multicast
/// `groups` (group numbers, as for `NETLINK_ADD_MEMBERSHIP`), with a large
/// receive buffer for bursts (an overflow is reported as ENOBUFS anyway).
/// Shared by the nf_tables event watch and the address watch.
pub fn subscribe(protocol: libc::c_int, groups: &[u32]) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscalls on a socket we create; every pointer passed points
    // to a live, correctly sized local.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let addr_ptr = &addr as *const libc::sockaddr_nl as *const libc::sockaddr;
        if libc::bind(
            fd,
            addr_ptr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        for group in groups {
            let gptr = group as *const u32 as *const libc::c_void;
            if libc::setsockopt(fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, gptr, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let size: libc::c_int = 4 << 20;
        let sptr = &size as *const libc::c_int as *const libc::c_void;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, sptr, 4) < 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, sptr, 4);
        }
        Ok(owned)
    }
}
