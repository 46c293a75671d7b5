//! Addresses and networks that parse but cannot work in a policy: an
//! apiserver nobody reaches (multicast, broadcast, loopback, unspecified,
//! IPv4-mapped or IPv4-compatible IPv6) and source ranges no pod sends from
//! (multicast, reserved, loopback, IPv4-mapped, IPv4-compatible). Each refusal says why and what to write
//! instead. Pure; the same text whether a flag, a variable, a config key or
//! discovery gave the value (the caller names that in `what`).

use super::address::Endpoint;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A range no container CIDR or exempt range may overlap, and why.
struct Special {
    net: &'static str,
    why: &'static str,
}

/// Source ranges that can never be a pod network.
const SOURCE_SPECIALS: [Special; 8] = [
    Special {
        net: "0.0.0.0/8",
        why: "\"this network\", never a pod's source address",
    },
    Special {
        net: "127.0.0.0/8",
        why: "loopback: it never leaves a pod's own network namespace",
    },
    Special {
        net: "224.0.0.0/4",
        why: "multicast: never a source address",
    },
    Special {
        net: "240.0.0.0/4",
        why: "reserved (and the broadcast address 255.255.255.255)",
    },
    Special {
        net: "::/128",
        why: "the unspecified address",
    },
    Special {
        net: "::1/128",
        why: "loopback: it never leaves a pod's own network namespace",
    },
    Special {
        net: "::ffff:0:0/96",
        why: "IPv4-mapped IPv6: such packets travel as IPv4, an IPv6 rule never sees them",
    },
    Special {
        net: "ff00::/8",
        why: "multicast: never a source address",
    },
];

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The IPv4 network an IPv4-mapped IPv6 network stands for (`::ffff:10.0.0.0/104` -> `10.0.0.0/8`).
fn mapped_v4(net: &Ipv6Net) -> Option<Ipv4Net> {
    let v4 = net.network().to_ipv4_mapped()?;
    let len = net.prefix_len().checked_sub(96)?;
    Ipv4Net::new(v4, len).ok()
}

/// The IPv4 address an IPv4-compatible IPv6 address (`::a.b.c.d`, RFC 4291
/// 2.5.5.1, deprecated) stands for; `::` and `::1` are not counted as such
/// (they are the unspecified and the loopback address).
fn compatible_v4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    let [0, 0, 0, 0, 0, 0, hi, lo] = ip.segments() else {
        return None;
    };
    (hi != 0 || lo > 1).then(|| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
}

/// The IPv4 network an IPv4-compatible IPv6 network stands for
/// (`::10.0.0.0/104` -> `10.0.0.0/8`), when it holds neither `::` nor `::1`.
fn compatible_net_v4(net: &Ipv6Net) -> Option<Ipv4Net> {
    let len = net.prefix_len().checked_sub(96)?;
    let v4 = compatible_v4(&net.network()).filter(|_| !net.contains(&Ipv6Addr::LOCALHOST))?;
    Ipv4Net::new(v4, len).ok()
}

/// How an operator writes an IPv4-compatible address: `::192.168.0.10`
/// (Rust would print `::c0a8:a`, which nobody recognises).
fn compatible_text(v4: Ipv4Addr, port: Option<u16>) -> String {
    match port {
        None => format!("::{v4}"),
        Some(p) => format!("[::{v4}]:{p}"),
    }
}

/// Why `net` cannot be a container CIDR or an exempt range, if it cannot.
/// `/0` is left to the "every source" rule, so it gets one message.
pub fn source_problem(what: &str, net: &IpNet) -> Option<String> {
    if net.prefix_len() == 0 {
        return None;
    }
    if let IpNet::V6(v6) = net {
        if let Some(v4) = mapped_v4(v6) {
            return Some(format!(
                "{what}: '{net}' is IPv4-mapped IPv6 (inside ::ffff:0:0/96): such packets travel as IPv4 and an IPv6 rule never matches them; write the IPv4 form {v4}"
            ));
        }
        if let Some(v4) = compatible_net_v4(v6) {
            return Some(format!(
                "{what}: '::{}/{}' is IPv4-compatible IPv6 (inside ::/96, deprecated by RFC 4291): no pod sends from it, the pods' traffic travels as IPv4 and an IPv6 rule never matches it; write the IPv4 form {v4}",
                v4.network(),
                net.prefix_len()
            ));
        }
    }
    let hits: Vec<String> = SOURCE_SPECIALS
        .iter()
        .map(|s| (s.net.parse::<IpNet>().expect("valid constant"), s))
        .filter(|(n, _)| overlaps(n, net))
        .map(|(n, s)| {
            let verb = if n.contains(net) { "lies in" } else { "overlaps" };
            format!("{verb} {} ({})", s.net, s.why)
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    Some(format!(
        "{what}: '{net}' {}: no pod sends from there, so a block on it blocks nothing (or blocks the wrong thing); give the cluster's pod network",
        hits.join(" and ")
    ))
}

/// Why no pod traffic to `ep` could ever be an apiserver connection, if so.
pub fn apiserver_problem(what: &str, ep: &Endpoint) -> Option<String> {
    let fix = "give the address kube-apiserver is reached at (the node's, the load balancer's or the endpoint's)";
    let reason = match ep.ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                let v4 = Endpoint {
                    ip: IpAddr::V4(v4),
                    port: ep.port,
                };
                return Some(format!(
                    "{what}: '{ep}' is an IPv4-mapped IPv6 address: connections to it travel as IPv4 and an IPv6 rule never matches them; write the IPv4 form {v4}"
                ));
            }
            if let Some(v4) = compatible_v4(&v6) {
                return Some(format!(
                    "{what}: '{}' is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291): pods reach {v4} over IPv4, and an IPv6 rule for this address never matches them; write the IPv4 form {}",
                    compatible_text(v4, ep.port),
                    Endpoint {
                        ip: IpAddr::V4(v4),
                        port: ep.port,
                    }
                ));
            }
            let seg0 = v6.segments()[0];
            if v6.is_unspecified() {
                "is the unspecified address"
            } else if v6.is_loopback() {
                "is loopback: a pod's packets to it stay in the pod's own network namespace and never reach the node"
            } else if seg0 & 0xff0f == 0xff02 {
                "is a link-local multicast address: nobody serves TCP there"
            } else if v6.is_multicast() {
                "is a multicast address: nobody serves TCP there"
            } else {
                return None;
            }
        }
        IpAddr::V4(v4) => {
            if v4.is_unspecified() || v4.octets()[0] == 0 {
                "is the unspecified address (0.0.0.0/8, \"this network\")"
            } else if v4.is_loopback() {
                "is loopback: a pod's packets to it stay in the pod's own network namespace and never reach the node"
            } else if v4.is_broadcast() {
                "is the broadcast address: nobody serves TCP there"
            } else if Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 24).is_ok_and(|n| n.contains(&v4)) {
                "is a link-local multicast address: nobody serves TCP there"
            } else if v4.is_multicast() {
                "is a multicast address: nobody serves TCP there"
            } else if v4.octets()[0] >= 240 {
                "is in the reserved range 240.0.0.0/4: nobody serves TCP there"
            } else {
                return None;
            }
        }
    };
    Some(format!("{what}: '{ep}' {reason}; {fix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::address::{parse_cidr, parse_endpoint};

    fn src(s: &str) -> Option<String> {
        source_problem("--container-cidr", &parse_cidr("x", s).unwrap())
    }

    fn api(s: &str) -> Option<String> {
        apiserver_problem("--apiserver", &parse_endpoint(s).unwrap())
    }

    #[test]
    fn pod_networks_pass() {
        for ok in [
            "10.0.0.0/16",
            "100.64.0.0/10",
            "172.16.0.0/12",
            "fd00:10::/48",
            "2001:db8::/32",
            "1.0.0.0/8",
        ] {
            assert_eq!(src(ok), None, "{ok}");
        }
        // /0 has its own message elsewhere.
        assert_eq!(src("0.0.0.0/0"), None);
        assert_eq!(src("::/0"), None);
    }

    #[test]
    fn mapped_sources_name_the_ipv4_form() {
        let e = src("::ffff:10.0.0.0/104").unwrap();
        assert!(
            e.contains("--container-cidr") && e.contains("IPv4-mapped") && e.contains("10.0.0.0/8"),
            "{e}"
        );
        let e = src("::ffff:0:0/96").unwrap();
        assert!(e.contains("0.0.0.0/0"), "{e}");
    }

    #[test]
    fn multicast_reserved_loopback_and_overlaps_are_refused() {
        for (bad, names) in [
            ("224.0.0.0/4", "multicast"),
            ("239.1.0.0/16", "multicast"),
            ("240.0.0.0/4", "reserved"),
            ("255.255.255.255/32", "broadcast"),
            ("192.0.0.0/2", "224.0.0.0/4"),
            ("127.0.0.0/8", "loopback"),
            ("0.0.0.0/8", "this network"),
            ("ff00::/8", "multicast"),
            ("ff02::/16", "multicast"),
            ("::1/128", "loopback"),
            ("::/80", "::ffff:0:0/96"),
            ("8000::/1", "ff00::/8"),
        ] {
            let e = src(bad).unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(e.contains(names) && e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        // Several overlaps, one message.
        let e = src("::/1").unwrap();
        assert!(e.contains("::1/128") && e.contains("::ffff:0:0/96"), "{e}");
    }

    #[test]
    fn apiservers_nobody_reaches_are_refused() {
        for (bad, why) in [
            ("0.0.0.0:443", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("[::]:443", "unspecified"),
            ("127.0.0.1:6443", "loopback"),
            ("127.3.4.5", "loopback"),
            ("[::1]:6443", "loopback"),
            ("224.0.0.1:443", "link-local multicast"),
            ("239.1.2.3", "a multicast"),
            ("[ff02::1]:443", "link-local multicast"),
            ("[ff05::2]:443", "a multicast"),
            ("255.255.255.255", "broadcast"),
            ("250.1.2.3:443", "reserved"),
        ] {
            let e = api(bad).unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(e.contains(why) && e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn mapped_apiserver_names_the_ipv4_form_with_its_port() {
        let e = api("[::ffff:192.168.0.10]:5443").unwrap();
        assert!(e.contains("IPv4-mapped") && e.contains("192.168.0.10:5443"), "{e}");
        let e = api("::ffff:192.168.0.10").unwrap();
        assert!(
            e.contains("IPv4 form 192.168.0.10;") || e.ends_with("IPv4 form 192.168.0.10"),
            "{e}"
        );
    }

    #[test]
    fn compatible_apiservers_and_ranges_name_the_ipv4_form() {
        let e = api("[::192.168.50.10]:5443").unwrap();
        assert!(
            e.starts_with("--apiserver: '[::192.168.50.10]:5443' is an IPv4-compatible IPv6 address")
                && e.contains("RFC 4291")
                && e.ends_with("write the IPv4 form 192.168.50.10:5443"),
            "{e}"
        );
        assert!(!e.contains("c0a8"), "{e}");
        let e = api("::10.1.2.3").unwrap();
        assert!(e.contains("'::10.1.2.3'") && e.ends_with("IPv4 form 10.1.2.3"), "{e}");
        // :: and ::1 keep their own words; ::2 is compatible (0.0.0.2).
        assert!(api("[::]:443").unwrap().contains("unspecified"));
        assert!(api("[::1]:443").unwrap().contains("loopback"));
        assert!(api("::2").unwrap().contains("IPv4-compatible"));
        let e = src("::10.0.0.0/104").unwrap();
        assert!(
            e.starts_with("--container-cidr: '::10.0.0.0/104' is IPv4-compatible")
                && e.ends_with("IPv4 form 10.0.0.0/8"),
            "{e}"
        );
        // A range holding :: or ::1 is named by what it overlaps.
        assert!(src("::/100").unwrap().contains("::1/128"));
        assert_eq!(src("::1:0:0/96"), None, "not inside ::/96");
    }

    #[test]
    fn ordinary_apiservers_pass() {
        for ok in [
            "192.168.0.10:5443",
            "10.96.0.1",
            "[fd00::10]:6443",
            "2001:db8::1",
            "169.254.1.1:443",
        ] {
            assert_eq!(api(ok), None, "{ok}");
        }
    }
}
