//! Every rule that refuses a policy before the firewall is touched. Pure:
//! the one input that needs the kernel (the source address the node would
//! use towards each apiserver) is passed in by the caller.

use super::address::Endpoint;
use super::policy::{Hook, Policy};
use super::special::{apiserver_problem, source_problem};
use ipnet::IpNet;
use std::net::IpAddr;

/// Checks the policy on its own; returns every problem found, one message
/// per problem, each naming where the value came from (`policy.origins`).
pub fn validate(policy: &Policy) -> Result<(), Vec<String>> {
    let o = &policy.origins;
    let mut problems = Vec::new();
    if policy.sources.is_empty() {
        problems.push(
            "no container CIDR given: set --container-cidr, APISERVER_GUARD_CONTAINER_CIDR or container_cidr in the config file".to_string(),
        );
    }
    if policy.apiservers.is_empty() {
        problems.push(
            "no apiserver given: set --apiserver, APISERVER_GUARD_APISERVER or apiserver in the config file (IP, IP:PORT or [IPv6]:PORT)".to_string(),
        );
    }
    for src in &policy.sources {
        if src.prefix_len() == 0 {
            problems.push(format!(
                "{}: container CIDR {src} would block every source address, the node's own included: give the cluster's container CIDR (e.g. 10.0.0.0/16)",
                o.sources
            ));
        }
        problems.extend(source_problem(&o.sources, src));
    }
    for ex in &policy.exempt {
        if let Some(p) = source_problem(&o.exempt, ex) {
            problems.push(p);
            continue;
        }
        let covered: Vec<IpNet> = policy.sources.iter().filter(|s| ex.contains(*s)).copied().collect();
        if !covered.is_empty() {
            problems.push(format!(
                "{}: exempt {ex} covers the whole container CIDR {} ({}): nothing of it would be blocked; exempt only part of it, or drop the exemption",
                o.exempt,
                list(&covered),
                o.sources
            ));
        } else if !policy.sources.iter().any(|s| s.contains(ex)) {
            problems.push(format!(
                "{}: exempt {ex} is not inside any container CIDR ({}): it would have no effect; exempt only addresses inside a container CIDR",
                o.exempt,
                list(&policy.sources)
            ));
        }
    }
    problems.extend(covered_together(policy));
    for api in &policy.apiservers {
        if let Some(p) = apiserver_problem(&o.apiservers, api) {
            problems.push(p);
            continue;
        }
        if let Some(src) = policy.sources.iter().find(|s| s.contains(&api.ip)) {
            problems.push(format!(
                "{}: apiserver {api} lies inside the blocked container CIDR {src} ({}): a container CIDR must not contain the apiserver; check both values",
                o.apiservers, o.sources
            ));
        }
    }
    if !policy.sources.is_empty() && !policy.apiservers.is_empty() && !any_family_blocks(policy) {
        problems.push(format!(
            "nothing to block: the container CIDRs ({}, from {}) and the apiservers ({}, from {}) share no address family; give an apiserver of the same IP version as a container CIDR",
            list(&policy.sources),
            o.sources,
            policy.apiservers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            o.apiservers
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Exempt ranges that, none alone but all together, cover a whole container
/// CIDR (`10.0.0.0/17` + `10.0.128.0/17` = `10.0.0.0/16`): nothing of it
/// would be blocked. Two prefixes are nested or disjoint, so an exempt range
/// that does not hold a CIDR alone counts only when it lies inside it; the
/// aggregate of those equals the CIDR when they cover all of it. One
/// message per CIDR; a CIDR one range covers alone has its own message.
fn covered_together(policy: &Policy) -> Vec<String> {
    let o = &policy.origins;
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    for src in &policy.sources {
        if seen.contains(src) || policy.exempt.iter().any(|e| e.contains(src)) {
            continue;
        }
        seen.push(*src);
        let mut inside: Vec<IpNet> = policy.exempt.iter().filter(|e| src.contains(*e)).copied().collect();
        inside.sort();
        inside.dedup();
        if inside.len() > 1 && IpNet::aggregate(&inside) == [*src] {
            problems.push(format!(
                "{}: the exempt ranges {} together cover the whole container CIDR {src} ({}): nothing of it would be blocked; exempt only part of it, or drop the exemptions",
                o.exempt,
                list(&inside),
                o.sources
            ));
        }
    }
    problems
}

fn any_family_blocks(policy: &Policy) -> bool {
    policy.sources.iter().any(|s| {
        policy
            .apiservers
            .iter()
            .any(|a| matches!((s, a.ip), (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))))
    })
}

fn list(nets: &[IpNet]) -> String {
    nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

/// The self-lockout guard. `routes` holds, for each apiserver, the source
/// address the kernel would pick to reach it (None when there is no route).
/// Only the OUTPUT hook sees the node's own traffic, so only then can the
/// block cut the node (and its kubelet) off.
pub fn check_lockout(policy: &Policy, routes: &[(Endpoint, Option<IpAddr>)]) -> Result<(), Vec<String>> {
    // INPUT sees the node's traffic to its own addresses (a local apiserver).
    if !policy.mode.hooks().contains(&Hook::Output) && policy.local_apiservers.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    for (api, local) in routes {
        let Some(local) = local else { continue };
        let exempt = policy.exempt.iter().any(|e| e.contains(local));
        if let Some(src) = policy.sources.iter().find(|s| s.contains(local)) {
            if !exempt {
                problems.push(format!(
                    "self-lockout: this node reaches apiserver {api} from {local}, which is inside the blocked container CIDR {src}; \
                     with the OUTPUT hook (mode vpc or both) the block would cut the node and its kubelet off. \
                     Use --mode tunnel if pods are routed through FORWARD, exempt {} if that address is the node's own, or correct the CIDR",
                    IpNet::from(*local)
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::address::{parse_cidr, parse_endpoint};
    use crate::core::policy::{Action, BackendChoice, Mode};

    fn policy(sources: &[&str], exempt: &[&str], apis: &[&str]) -> Policy {
        Policy {
            sources: sources.iter().map(|s| parse_cidr("s", s).unwrap()).collect(),
            exempt: exempt.iter().map(|s| parse_cidr("e", s).unwrap()).collect(),
            apiservers: apis.iter().map(|s| parse_endpoint(s).unwrap()).collect(),
            mode: Mode::Both,
            action: Action::Reject,
            backend: BackendChoice::Auto,
            local_apiservers: Vec::new(),
            dynamic_exempt: false,
            log_group: None,
            origins: Default::default(),
        }
    }

    fn err(p: &Policy) -> String {
        validate(p).unwrap_err().join("\n")
    }

    #[test]
    fn a_sound_policy_passes() {
        validate(&policy(
            &["10.0.0.0/16", "fd00::/48"],
            &["10.0.5.0/24"],
            &["192.168.0.10:5443", "[fd01::1]:443"],
        ))
        .unwrap();
    }

    #[test]
    fn empty_lists_are_refused_naming_where_to_set_them() {
        let e = err(&policy(&[], &[], &["1.2.3.4"]));
        assert!(e.contains("no container CIDR") && e.contains("--container-cidr"), "{e}");
        let e = err(&policy(&["10.0.0.0/16"], &[], &[]));
        assert!(e.contains("no apiserver") && e.contains("--apiserver"), "{e}");
    }

    #[test]
    fn default_routes_as_sources_are_refused() {
        assert!(err(&policy(&["0.0.0.0/0"], &[], &["1.2.3.4"])).contains("every source"));
        assert!(err(&policy(&["::/0"], &[], &["fd00::1"])).contains("every source"));
    }

    #[test]
    fn apiserver_inside_a_blocked_cidr_is_refused() {
        let e = err(&policy(&["10.0.0.0/16"], &[], &["10.0.3.4:443"]));
        assert!(e.contains("inside the blocked container CIDR 10.0.0.0/16"), "{e}");
        let e = err(&policy(&["fd00::/48"], &[], &["[fd00::1]:443"]));
        assert!(e.contains("fd00::/48"), "{e}");
    }

    #[test]
    fn unspecified_apiserver_is_refused() {
        assert!(err(&policy(&["10.0.0.0/16"], &[], &["0.0.0.0:443"])).contains("unspecified"));
    }

    #[test]
    fn apiservers_and_ranges_that_block_nothing_are_refused_once_each() {
        for api in [
            "224.0.0.1:443",
            "255.255.255.255",
            "127.0.0.1:6443",
            "[::ffff:192.168.0.10]:5443",
        ] {
            let p = validate(&policy(&["10.0.0.0/16", "fd00::/48"], &[], &[api])).unwrap_err();
            assert_eq!(p.len(), 1, "{api}: {p:?}");
            assert!(p[0].starts_with("--apiserver: "), "{api}: {}", p[0]);
        }
        let p = validate(&policy(&["224.0.0.0/4"], &[], &["1.2.3.4"])).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("multicast"), "{}", p[0]);
        let p = validate(&policy(&["::ffff:10.0.0.0/104"], &[], &["[::ffff:192.168.0.10]:5443"])).unwrap_err();
        assert!(p.iter().any(|m| m.contains("IPv4 form 10.0.0.0/8")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("IPv4 form 192.168.0.10:5443")), "{p:?}");
        let p = validate(&policy(&["10.0.0.0/16"], &["::ffff:10.0.0.0/112"], &["1.2.3.4"])).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("--exempt: ") && p[0].contains("IPv4-mapped"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn messages_name_the_origin_of_each_list() {
        let mut p = policy(&["10.0.0.0/16"], &["10.9.0.0/24"], &["10.0.3.4"]);
        p.origins = crate::core::policy::Origins {
            sources: "container_cidr in /etc/g.toml".into(),
            exempt: "APISERVER_GUARD_EXEMPT".into(),
            apiservers: "--apiserver".into(),
        };
        let e = err(&p);
        assert!(e.contains("APISERVER_GUARD_EXEMPT: exempt 10.9.0.0/24"), "{e}");
        assert!(e.contains("--apiserver: apiserver 10.0.3.4"), "{e}");
        assert!(e.contains("(container_cidr in /etc/g.toml)"), "{e}");
    }

    #[test]
    fn exempt_must_lie_inside_a_source_and_not_swallow_it() {
        let e = err(&policy(&["10.0.0.0/16"], &["10.9.0.0/24"], &["1.2.3.4"]));
        assert!(e.contains("not inside any container CIDR"), "{e}");
        // One message for one problem: the exempt covers the CIDR (it is not also "outside" it).
        let p = validate(&policy(&["10.0.0.0/16"], &["10.0.0.0/8"], &["1.2.3.4"])).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("exempt 10.0.0.0/8 covers the whole container CIDR 10.0.0.0/16"),
            "{}",
            p[0]
        );
        let p = validate(&policy(&["10.0.0.0/16", "10.1.0.0/16"], &["10.0.0.0/8"], &["1.2.3.4"])).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("10.0.0.0/16, 10.1.0.0/16"), "{}", p[0]);
        let e = err(&policy(&["10.0.0.0/16"], &["fd00::/64"], &["1.2.3.4"]));
        assert!(e.contains("not inside any container CIDR"), "{e}");
    }

    #[test]
    fn exempt_ranges_that_together_cover_a_cidr_are_refused_once() {
        let p = validate(&policy(
            &["10.0.0.0/16"],
            &["10.0.0.0/17", "10.0.128.0/17"],
            &["192.168.50.10:5443"],
        ))
        .unwrap_err();
        assert_eq!(
            p,
            ["--exempt: the exempt ranges 10.0.0.0/17, 10.0.128.0/17 together cover the whole container CIDR 10.0.0.0/16 (--container-cidr): nothing of it would be blocked; exempt only part of it, or drop the exemptions"]
        );
        // Four pieces, listed in order, duplicates once; IPv6 too.
        let p = validate(&policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[
                "10.0.192.0/18",
                "10.0.0.0/18",
                "10.0.64.0/18",
                "10.0.128.0/18",
                "10.0.0.0/18",
                "fd00::/49",
                "fd00:0:0:8000::/49",
            ],
            &["192.168.50.10:5443"],
        ))
        .unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("10.0.0.0/18, 10.0.64.0/18, 10.0.128.0/18, 10.0.192.0/18 together cover the whole container CIDR 10.0.0.0/16"),
            "{}",
            p[0]
        );
        assert!(
            p[1].contains("together cover the whole container CIDR fd00::/48"),
            "{}",
            p[1]
        );
        // A CIDR named twice is one message.
        let p = validate(&policy(
            &["10.0.0.0/16", "10.0.0.0/16"],
            &["10.0.0.0/17", "10.0.128.0/17"],
            &["192.168.50.10:5443"],
        ))
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        // Pieces leaving part of the CIDR blocked pass.
        validate(&policy(
            &["10.0.0.0/16"],
            &["10.0.0.0/17", "10.0.128.0/18", "10.0.192.0/19", "10.0.224.0/20"],
            &["192.168.50.10:5443"],
        ))
        .unwrap();
        validate(&policy(
            &["10.0.0.0/16", "10.1.0.0/16"],
            &["10.0.0.0/17", "10.1.128.0/17"],
            &["1.2.3.4"],
        ))
        .unwrap();
        // One of several CIDRs covered is enough to refuse.
        let p = validate(&policy(
            &["10.0.0.0/17", "10.0.128.0/17"],
            &["10.0.0.0/18", "10.0.64.0/18"],
            &["192.168.50.10:5443"],
        ))
        .unwrap_err();
        assert!(p[0].contains("container CIDR 10.0.0.0/17 "), "{p:?}");
        // One range covering it alone keeps its own message, not this one too.
        let p = validate(&policy(
            &["10.0.0.0/16"],
            &["10.0.0.0/16", "10.0.0.0/17", "10.0.128.0/17"],
            &["1.2.3.4"],
        ))
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("exempt 10.0.0.0/16 covers the whole"), "{}", p[0]);
    }

    #[test]
    fn families_without_overlap_have_nothing_to_block() {
        let e = err(&policy(&["10.0.0.0/16"], &[], &["[fd00::1]:443"]));
        assert!(e.contains("nothing to block"), "{e}");
        // One family in common is enough.
        validate(&policy(&["10.0.0.0/16", "fd00::/48"], &[], &["1.2.3.4"])).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = validate(&policy(&["0.0.0.0/0"], &["fd00::/64"], &["0.0.0.0"])).unwrap_err();
        assert!(problems.len() >= 3, "{problems:?}");
    }

    fn route(api: &str, local: Option<&str>) -> (Endpoint, Option<IpAddr>) {
        (parse_endpoint(api).unwrap(), local.map(|l| l.parse().unwrap()))
    }

    #[test]
    fn lockout_refused_when_node_source_is_blocked() {
        let p = policy(&["10.0.0.0/16"], &[], &["192.168.0.10:443"]);
        let e = check_lockout(&p, &[route("192.168.0.10:443", Some("10.0.0.5"))])
            .unwrap_err()
            .join("");
        assert!(
            e.contains("self-lockout") && e.contains("10.0.0.5") && e.contains("10.0.0.0/16"),
            "{e}"
        );
    }

    #[test]
    fn lockout_allows_node_outside_cidr_exempt_source_or_no_route() {
        let p = policy(&["10.0.0.0/16"], &["10.0.0.5/32"], &["192.168.0.10:443"]);
        check_lockout(&p, &[route("192.168.0.10:443", Some("10.0.0.5"))]).unwrap();
        check_lockout(&p, &[route("192.168.0.10:443", Some("192.168.0.2"))]).unwrap();
        check_lockout(&p, &[route("192.168.0.10:443", None)]).unwrap();
    }

    #[test]
    fn lockout_ignored_when_only_forward_is_hooked() {
        let mut p = policy(&["10.0.0.0/16"], &[], &["192.168.0.10:443"]);
        p.mode = Mode::Tunnel;
        check_lockout(&p, &[route("192.168.0.10:443", Some("10.0.0.5"))]).unwrap();
        p.mode = Mode::Vpc;
        assert!(check_lockout(&p, &[route("192.168.0.10:443", Some("10.0.0.5"))]).is_err());
    }
}
