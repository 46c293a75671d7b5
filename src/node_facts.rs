//! Facts of this node's (the calling thread's) network namespace that the
//! policy and `verify` depend on: which source address the kernel would
//! pick to reach each apiserver (the self-lockout guard and verify's route
//! check; a connected UDP socket shows it without sending a packet), the
//! addresses of its interfaces, and from them whether an apiserver address
//! is this node's own (the INPUT hook); and whether it honours IPv4 source
//! routes, which would carry a pod's packet past the block.

use crate::core::address::Endpoint;
use crate::core::model;
use crate::core::policy::Policy;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// The kernel honours IPv4 source-route options (LSRR, SSRR) on an
/// interface only where both this and the interface's own setting are 1.
const ACCEPT_SOURCE_ROUTE_ALL: &str = "/proc/sys/net/ipv4/conf/all/accept_source_route";

/// Port used for the route look-up when the endpoint has none (any port gives the same route).
const ROUTE_PORT: u16 = 443;

/// The local address used towards `ep`, or None when there is no route.
pub fn source_address(ep: &Endpoint) -> Option<IpAddr> {
    let any: IpAddr = match ep.ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    sock.connect(SocketAddr::new(ep.ip, ep.port.unwrap_or(ROUTE_PORT)))
        .ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The policy with `local_apiservers` set to the apiservers whose address is
/// one of this node's own (a control-plane node: pods reach them through
/// INPUT, at every local address).
pub fn localized(mut policy: Policy) -> Policy {
    let local = local_addresses().unwrap_or_default();
    policy.local_apiservers = model::local_apiservers(&policy.apiservers, &local);
    for ep in policy.local_apiservers.iter().filter(|e| e.port.is_none()) {
        let msg = format!(
            "apiserver {ep} is this node's own address and has no port: pods are refused at that address only; \
             give its port (e.g. {ep}:6443) to refuse them on that port at every address of the node"
        );
        if log::max_level() >= log::LevelFilter::Warn {
            log::warn!("{msg}");
        } else {
            eprintln!("apiserver-guard: warning: {msg}");
        }
    }
    policy
}

/// Whether this node honours IPv4 source routes (None: unreadable). A pod
/// can then send a packet to the node itself with a loose source route
/// through an apiserver: the firewall's forward hook sees the node as its
/// destination, and the kernel re-addresses it to the apiserver only after
/// that hook, past the block. Interfaces default to 1, so `all` decides
/// (the kernel's default is 0).
pub fn accepts_source_routes() -> Option<bool> {
    let text = std::fs::read_to_string(ACCEPT_SOURCE_ROUTE_ALL).ok()?;
    Some(text.trim() != "0")
}

/// What to tell operators when this node honours source routes.
pub const SOURCE_ROUTES_WARNING: &str = "this node accepts IPv4 source-routed packets \
    (net.ipv4.conf.all.accept_source_route=1): a pod can send a packet to the node with a loose source \
    route through an apiserver, which the kernel re-addresses after the firewall's forward hook, past \
    the block; set it to 0 (the kernel's default): sysctl -w net.ipv4.conf.all.accept_source_route=0";

/// Source addresses for every endpoint, for `validate::check_lockout`.
pub fn routes(endpoints: &[Endpoint]) -> Vec<(Endpoint, Option<IpAddr>)> {
    endpoints.iter().map(|ep| (*ep, source_address(ep))).collect()
}

/// Addresses of every interface of the calling thread's network namespace (getifaddrs).
pub fn local_addresses() -> std::io::Result<Vec<std::net::IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into());
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 addresses are sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into());
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_reached_from_loopback() {
        let ep = Endpoint {
            ip: "127.0.0.1".parse().unwrap(),
            port: Some(6443),
        };
        assert_eq!(source_address(&ep), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn loopback_is_listed() {
        let addrs = local_addresses().unwrap();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }
}
