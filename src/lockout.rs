//! The one piece of I/O the self-lockout guard needs: which source address
//! the kernel would pick to reach each apiserver. A connected UDP socket
//! shows it without sending a packet.

use crate::core::address::Endpoint;
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
