//! The node facts the policy depends on: which source address the kernel
//! would pick to reach each apiserver (the self-lockout guard; a connected
//! UDP socket shows it without sending a packet), and whether an apiserver
//! address is this node's own (the INPUT hook).

use crate::core::address::Endpoint;
use crate::core::model;
use crate::core::policy::Policy;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

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
    let local = crate::verify::netns::local_addresses().unwrap_or_default();
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

/// Source addresses for every endpoint, for `validate::check_lockout`.
pub fn routes(endpoints: &[Endpoint]) -> Vec<(Endpoint, Option<IpAddr>)> {
    endpoints.iter().map(|ep| (*ep, source_address(ep))).collect()
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
}
