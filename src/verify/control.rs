//! Where the positive control of one endpoint goes (pure): a probe from the
//! same side as the container-network probe to an address the policy does
//! not block, so that a failed probe is only blamed on the block when that
//! side's network demonstrably works. In order: the operator's `--control
//! ADDR[:PORT]`; with `--source`, the node's own probe (same namespace, a
//! source the policy does not block); else the gateway of the route towards
//! the apiserver (the pod's next hop: the node), on the probed port (nothing
//! listening there answers with a reset, which counts).

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use super::route::{LookupError, Route};
use crate::core::address::Endpoint;

/// Where the control of one endpoint goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlan {
    /// Probe this address from the probe's side; `kind` is `given` or `gateway`.
    Probe { addr: SocketAddr, kind: &'static str },
    /// The node's own probe is the control (`--source`: same namespace).
    Node,
    /// No control (why, and what to do).
    Missing(String),
}

/// Whether the policy blocks traffic to `addr` (an apiserver endpoint with that address and
/// port, or without a port).
pub fn blocked_by_policy(apiservers: &[Endpoint], addr: SocketAddr) -> bool {
    apiservers
        .iter()
        .any(|e| e.ip == addr.ip() && e.port.is_none_or(|p| p == addr.port()))
}

const GIVE_CONTROL: &str =
    "give --control ADDR[:PORT], an address the probe's side reaches and the policy does not block";

/// Ports tried for the gateway control when the probed port is one our local-port rule
/// blocks at every address of the node (an apiserver runs there): a closed port answers with
/// a reset all the same.
const GATEWAY_PORTS: [u16; 4] = [443, 80, 22, 1];

/// The port of the gateway control: the probed port, unless the policy blocks it at every
/// address of this node (`local_ports`, the ports of the apiservers running here), since the
/// pod's gateway is usually the node: our own rule would answer (reject) or swallow (drop)
/// the control.
pub fn gateway_port(port: u16, local_ports: &[u16]) -> u16 {
    std::iter::once(port)
        .chain(GATEWAY_PORTS)
        .find(|p| !local_ports.contains(p))
        .unwrap_or(port)
}

/// Plans the control of the endpoint at `ip`, probed on `port`. `given` is `--control`;
/// `node_is_control` holds for `--source` with the node check on; `route` is the probe's
/// side's route towards `ip`; `local_ports` are the ports of the apiservers on this node.
/// Also returns a note when `given` could not be used.
pub fn plan(
    given: Option<&Endpoint>,
    node_is_control: bool,
    route: &Result<Route, LookupError>,
    ip: IpAddr,
    port: u16,
    apiservers: &[Endpoint],
    local_ports: &[u16],
) -> (ControlPlan, Option<String>) {
    let mut note = None;
    if let Some(g) = given {
        let addr = SocketAddr::new(g.ip, g.port.unwrap_or(port));
        if g.ip.is_ipv4() != ip.is_ipv4() {
            note = Some(format!(
                "--control {g} is of another IP version than {ip}: not used for it"
            ));
        } else if blocked_by_policy(apiservers, addr) {
            note = Some(format!(
                "--control {addr} is an apiserver endpoint the policy blocks: not usable as a control"
            ));
        } else {
            return (ControlPlan::Probe { addr, kind: "given" }, None);
        }
    }
    if node_is_control {
        return (ControlPlan::Node, note);
    }
    let plan = match route {
        Err(LookupError::Unusable(u)) => ControlPlan::Missing(format!("the probe's side has {}", u.towards(ip))),
        Err(LookupError::Failed(e)) => {
            ControlPlan::Missing(format!("the route towards {ip} could not be looked up: {e}"))
        }
        Ok(r) => match r.gateway {
            None if r.local => ControlPlan::Missing(format!(
                "{ip} is an address of the probe's own namespace, there is no gateway to use as the control; {GIVE_CONTROL}"
            )),
            None => ControlPlan::Missing(format!(
                "the route towards {ip} has no gateway (on-link) to use as the control; {GIVE_CONTROL}"
            )),
            Some(gw) => {
                let port = gateway_port(port, local_ports);
                let addr = match gw {
                    IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
                        SocketAddr::V6(SocketAddrV6::new(v6, port, 0, r.oif.unwrap_or(0)))
                    }
                    _ => SocketAddr::new(gw, port),
                };
                if blocked_by_policy(apiservers, addr) {
                    ControlPlan::Missing(format!(
                        "the gateway towards {ip}, {gw}, is an apiserver the policy blocks; {GIVE_CONTROL}"
                    ))
                } else {
                    ControlPlan::Probe { addr, kind: "gateway" }
                }
            }
        },
    };
    (plan, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::address::parse_endpoint;
    use crate::verify::route::Unusable;

    fn ep(s: &str) -> Endpoint {
        parse_endpoint(s).unwrap()
    }

    fn via(gw: &str) -> Result<Route, LookupError> {
        Ok(Route {
            gateway: Some(gw.parse().unwrap()),
            source: None,
            local: false,
            oif: Some(7),
        })
    }

    const API: &str = "192.168.50.10";

    fn api() -> Vec<Endpoint> {
        vec![ep("192.168.50.10:5443"), ep("192.168.50.20")]
    }

    #[test]
    fn the_gateway_on_the_probed_port_is_the_default() {
        let (p, note) = plan(None, false, &via("10.0.1.1"), API.parse().unwrap(), 5443, &api(), &[]);
        assert_eq!(
            p,
            ControlPlan::Probe {
                addr: "10.0.1.1:5443".parse().unwrap(),
                kind: "gateway"
            }
        );
        assert_eq!(note, None);
        // An IPv6 link-local gateway keeps the interface as its scope.
        let (p, _) = plan(None, false, &via("fe80::1"), "fd01::1".parse().unwrap(), 443, &[], &[]);
        let ControlPlan::Probe {
            addr: SocketAddr::V6(a),
            ..
        } = p
        else {
            panic!("{p:?}")
        };
        assert_eq!((a.scope_id(), a.port()), (7, 443));
    }

    #[test]
    fn the_gateway_control_avoids_the_ports_of_an_apiserver_on_the_node() {
        // Our local-port rule blocks 6443 at every address of the node, the gateway included.
        let (p, _) = plan(
            None,
            false,
            &via("10.0.1.1"),
            API.parse().unwrap(),
            6443,
            &api(),
            &[6443],
        );
        assert_eq!(
            p,
            ControlPlan::Probe {
                addr: "10.0.1.1:443".parse().unwrap(),
                kind: "gateway"
            }
        );
        assert_eq!(gateway_port(443, &[443, 6443]), 80);
        assert_eq!(gateway_port(5443, &[6443]), 5443);
    }

    #[test]
    fn a_given_control_comes_first_unless_the_policy_blocks_it() {
        let given = ep("192.168.50.1");
        let (p, _) = plan(
            Some(&given),
            true,
            &via("10.0.1.1"),
            API.parse().unwrap(),
            5443,
            &api(),
            &[],
        );
        assert_eq!(
            p,
            ControlPlan::Probe {
                addr: "192.168.50.1:5443".parse().unwrap(),
                kind: "given"
            }
        );
        // A given control, planned for the pod's gateway 10.0.1.1 and API:5443.
        let with = |given: &str| {
            plan(
                Some(&ep(given)),
                false,
                &via("10.0.1.1"),
                API.parse().unwrap(),
                5443,
                &api(),
                &[],
            )
        };
        let (p, _) = with("192.168.50.1:22");
        assert!(matches!(p, ControlPlan::Probe { addr, .. } if addr.port() == 22));
        // An apiserver endpoint cannot be the control: fall back, and say why.
        for blocked in ["192.168.50.10:5443", "192.168.50.20:22"] {
            let (p, note) = with(blocked);
            assert!(matches!(p, ControlPlan::Probe { kind: "gateway", .. }), "{p:?}");
            assert!(note.unwrap().contains("policy blocks"));
        }
        // 192.168.50.10 on another port is not blocked.
        assert!(matches!(
            with("192.168.50.10:22").0,
            ControlPlan::Probe { kind: "given", .. }
        ));
        // Another IP version proves nothing about this endpoint's family.
        let (p, note) = with("[fd00::1]:22");
        assert!(matches!(p, ControlPlan::Probe { kind: "gateway", .. }));
        assert!(note.unwrap().contains("IP version"));
    }

    #[test]
    fn with_source_the_node_probe_is_the_control() {
        let (p, _) = plan(
            None,
            true,
            &Err(LookupError::Unusable(Unusable::NoRoute)),
            API.parse().unwrap(),
            5443,
            &api(),
            &[],
        );
        assert_eq!(p, ControlPlan::Node);
    }

    #[test]
    fn no_route_no_gateway_or_a_blocked_gateway_means_no_control() {
        let ip: IpAddr = API.parse().unwrap();
        let cases = [
            (
                Err(LookupError::Unusable(Unusable::NoRoute)),
                "has no route towards 192.168.50.10",
            ),
            (
                Err(LookupError::Unusable(Unusable::Blackhole)),
                "has a blackhole route towards 192.168.50.10",
            ),
            (
                Err(LookupError::Failed("No buffer space available".to_string())),
                "could not be looked up: No buffer space available",
            ),
            (
                Ok(Route {
                    gateway: None,
                    source: None,
                    local: false,
                    oif: None,
                }),
                "no gateway",
            ),
            (
                Ok(Route {
                    gateway: None,
                    source: None,
                    local: true,
                    oif: None,
                }),
                "own namespace",
            ),
            (via("192.168.50.20"), "apiserver the policy blocks"),
        ];
        for (route, says) in cases {
            let (p, _) = plan(None, false, &route, ip, 5443, &api(), &[]);
            assert!(
                matches!(&p, ControlPlan::Missing(m) if m.contains(says)),
                "{says}: {p:?}"
            );
        }
    }
}
