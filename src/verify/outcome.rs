//! Pure classification for `verify`: what one probe saw (an `Outcome`,
//! decoded from the socket error), and the verdicts drawn from the probe from
//! the container network and the positive control from the node. No I/O.
//!
//! Soundness rules (DESIGN.md, issue #4):
//! - our block answers the SYN with a TCP reset, which connect() reports as
//!   ECONNREFUSED, exactly like an apiserver that is down; so a refused (or
//!   dropped, unreachable) pod probe only counts as "blocked" when the node
//!   itself connects to the same endpoint;
//! - when the node does not connect either, the verdict is "inconclusive",
//!   never "blocked";
//! - the node is "cut off" when it cannot connect and either the policy
//!   itself covers the node's own source address (the self-lockout case,
//!   answered with our reset) or its probe failed below TCP (timed out,
//!   unreachable, reset). A node that is merely refused, with a policy that
//!   does not cover it, most likely meets an apiserver that is not listening.

use crate::error::exit;
use serde::Serialize;
use std::io;
use std::net::IpAddr;

/// What the probe from the container network is expected to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The block holds: the pod is refused, reset, unreachable or dropped.
    Blocked,
    /// The pod reaches the apiserver (e.g. an exempt pod, or before `apply`).
    Reachable,
}

/// How one TCP (and optionally TLS) probe ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    /// The TCP handshake completed.
    Connected,
    /// TCP and a TLS handshake completed (any certificate accepted, as `curl -k`); the detail
    /// names the protocol version.
    TlsOk(String),
    /// TCP connected but the TLS handshake failed (not TLS, alert, timeout): the endpoint was
    /// reached all the same.
    TlsFailed(String),
    /// ECONNREFUSED: a TCP reset answered the SYN (our reject, or nothing listening).
    Refused,
    /// ECONNRESET / EPIPE during or right after the connect.
    Reset,
    /// An ICMP error or no route (EHOSTUNREACH, ENETUNREACH, EACCES, EPERM); the detail says which.
    Unreachable(String),
    /// No answer before the timeout (a drop).
    TimedOut,
    /// The probe itself could not run (bind failed, no socket...).
    Error(String),
}

impl Outcome {
    /// Decodes a connect (or handshake) error.
    pub fn from_io(e: &io::Error) -> Outcome {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Outcome::Refused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ECONNABORTED) => Outcome::Reset,
            Some(libc::EHOSTUNREACH) => Outcome::Unreachable("host unreachable".into()),
            Some(libc::ENETUNREACH) => Outcome::Unreachable("network unreachable (no route)".into()),
            Some(libc::EACCES) | Some(libc::EPERM) => {
                Outcome::Unreachable("administratively prohibited (a firewall on the path)".into())
            }
            Some(libc::ETIMEDOUT) => Outcome::TimedOut,
            _ => match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::TimedOut,
                io::ErrorKind::ConnectionRefused => Outcome::Refused,
                io::ErrorKind::ConnectionReset => Outcome::Reset,
                _ => Outcome::Error(e.to_string()),
            },
        }
    }

    /// The TCP connection was established: the endpoint was reached from where we probed.
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Connected | Outcome::TlsOk(_) | Outcome::TlsFailed(_))
    }

    /// The probe ran and ended without reaching the endpoint.
    pub fn stopped(&self) -> bool {
        matches!(
            self,
            Outcome::Refused | Outcome::Reset | Outcome::Unreachable(_) | Outcome::TimedOut
        )
    }

    /// Short name, as in the table and the metrics' `outcome` label.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::TlsOk(_) => "tls-ok",
            Outcome::TlsFailed(_) => "tls-failed",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::TimedOut => "timed-out",
            Outcome::Error(_) => "error",
        }
    }

    /// Every `name()`, for one-hot metrics.
    pub const NAMES: [&'static str; 8] = [
        "connected",
        "tls-ok",
        "tls-failed",
        "refused",
        "reset",
        "unreachable",
        "timed-out",
        "error",
    ];

    /// Human wording for the table.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Connected => "connected".into(),
            Outcome::TlsOk(v) => format!("TLS ok ({v})"),
            Outcome::TlsFailed(why) => format!("connected, TLS failed: {why}"),
            Outcome::Refused => "refused".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Unreachable(why) => format!("unreachable: {why}"),
            Outcome::TimedOut => "timed out".into(),
            Outcome::Error(why) => format!("could not probe: {why}"),
        }
    }
}

/// The verdict on the container-network side of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum BlockVerdict {
    /// The pod did not get through and the node did (or the node check was skipped).
    Blocked,
    /// The pod got through.
    Reachable,
    /// The pod did not get through, but neither did the node: nothing proves it was the block.
    Inconclusive(String),
    /// The probe source is not blocked by the policy (exempt, or outside every container
    /// CIDR): this probe cannot show the block.
    NotCovered(String),
    /// The endpoint's address family has no container CIDR in the policy: nothing to verify.
    Skipped(String),
    /// The probe could not run.
    Error(String),
}

/// The verdict on the node side (positive control) of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum NodeVerdict {
    /// The node connects.
    Unaffected,
    /// The node cannot reach the apiserver (why).
    CutOff(String),
    /// The node is refused, and the policy does not cover its source: the apiserver does not
    /// answer on this port (down, or the wrong port).
    NoAnswer(String),
    /// No node probe (why).
    NotChecked(String),
    /// The node probe could not run.
    Error(String),
}

pub const INCONCLUSIVE: &str = "inconclusive: the apiserver does not answer the node either";

/// What the policy says about a source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Inside this container CIDR and not exempt: the block applies to it.
    Blocked(String),
    /// Inside a container CIDR but exempt (this range).
    Exempt(String),
    /// Outside every container CIDR.
    Outside,
}

/// Where a source address stands in the policy.
pub fn coverage(sources: &[ipnet::IpNet], exempt: &[ipnet::IpNet], ip: IpAddr) -> Coverage {
    match sources.iter().find(|s| s.contains(&ip)) {
        None => Coverage::Outside,
        Some(s) => match exempt.iter().find(|e| e.contains(&ip)) {
            Some(e) => Coverage::Exempt(e.to_string()),
            None => Coverage::Blocked(s.to_string()),
        },
    }
}

/// Judges the node-side probe. `node_source` is the address the node uses
/// towards the endpoint, `node_blocked_by_policy` is `Some(cidr)` when the
/// policy (with the OUTPUT hook) covers that address: the self-lockout case.
pub fn judge_node(node: Option<&Outcome>, node_blocked_by_policy: Option<&str>, skip_reason: &str) -> NodeVerdict {
    let Some(node) = node else {
        return NodeVerdict::NotChecked(skip_reason.to_string());
    };
    if node.reached() {
        return NodeVerdict::Unaffected;
    }
    match (node, node_blocked_by_policy) {
        (Outcome::Error(why), _) => NodeVerdict::Error(why.clone()),
        (o, Some(cidr)) => NodeVerdict::CutOff(format!(
            "node cut off: {} from the node, whose source address is inside the blocked container CIDR {cidr} \
             (the OUTPUT hook blocks the node itself: self-lockout)",
            o.describe()
        )),
        (Outcome::Refused, None) => NodeVerdict::NoAnswer(format!(
            "{INCONCLUSIVE} (refused from the node too: is it listening on this port?)"
        )),
        (o, None) => NodeVerdict::CutOff(format!("node cut off: {} from the node", o.describe())),
    }
}

/// Judges the container-network probe, with the node verdict as the positive control.
/// `source` is the probe's source address and where it stands in the policy (None: unknown,
/// e.g. no route). When the block is expected, an exempt source cannot show it at all, and a
/// source outside every container CIDR cannot show it when it does not get through (when it
/// does, that is reported: the pod reaches the apiserver whatever the policy says).
pub fn judge_block(
    container: &Outcome,
    node: &NodeVerdict,
    expect: Expect,
    source: Option<(IpAddr, &Coverage)>,
) -> BlockVerdict {
    if let Outcome::Error(why) = container {
        return BlockVerdict::Error(why.clone());
    }
    if let (Expect::Blocked, Some((ip, Coverage::Exempt(range)))) = (expect, source) {
        return BlockVerdict::NotCovered(format!(
            "the probe source {ip} is exempt ({range}); use --expect reachable to check an exempt pod"
        ));
    }
    if container.reached() {
        return BlockVerdict::Reachable;
    }
    if let (Expect::Blocked, Some((ip, Coverage::Outside))) = (expect, source) {
        return BlockVerdict::NotCovered(format!(
            "the probe source {ip} is outside every container CIDR: this is not the container network"
        ));
    }
    match node {
        NodeVerdict::Unaffected | NodeVerdict::NotChecked(_) => BlockVerdict::Blocked,
        NodeVerdict::CutOff(_) | NodeVerdict::NoAnswer(_) | NodeVerdict::Error(_) => {
            BlockVerdict::Inconclusive(INCONCLUSIVE.to_string())
        }
    }
}

/// Exit code contribution of one endpoint: 0 as expected, 3 an expectation failed (the block
/// is ineffective, the node is cut off, or a pod expected to get through is blocked), 1 could
/// not tell.
pub fn endpoint_exit(block: &BlockVerdict, node: &NodeVerdict, expect: Expect) -> i32 {
    let block_code = match (block, expect) {
        (BlockVerdict::Skipped(_), _) => exit::OK,
        (BlockVerdict::Blocked, Expect::Blocked) | (BlockVerdict::Reachable, Expect::Reachable) => exit::OK,
        (BlockVerdict::Reachable, Expect::Blocked) | (BlockVerdict::Blocked, Expect::Reachable) => exit::NOT_IN_SYNC,
        (BlockVerdict::Inconclusive(_) | BlockVerdict::NotCovered(_) | BlockVerdict::Error(_), _) => exit::RUNTIME,
    };
    let node_code = match node {
        NodeVerdict::Unaffected | NodeVerdict::NotChecked(_) => exit::OK,
        NodeVerdict::CutOff(_) => exit::NOT_IN_SYNC,
        NodeVerdict::NoAnswer(_) | NodeVerdict::Error(_) => exit::RUNTIME,
    };
    worst([block_code, node_code])
}

/// Combines exit codes: 3 (an expectation failed) beats 1 (could not tell) beats 0.
pub fn worst(codes: impl IntoIterator<Item = i32>) -> i32 {
    codes.into_iter().fold(exit::OK, |acc, c| match (acc, c) {
        (exit::NOT_IN_SYNC, _) | (_, exit::NOT_IN_SYNC) => exit::NOT_IN_SYNC,
        (exit::RUNTIME, _) | (_, exit::RUNTIME) => exit::RUNTIME,
        _ => exit::OK,
    })
}

/// Which port to report for an endpoint probed on several candidate ports (a port-less
/// endpoint: 5443 then 443): the first the pod reached (a leak anywhere matters most), else
/// the first the node reached (the positive control holds there), else the first candidate.
pub fn pick_port(results: &[(u16, &Outcome, Option<&Outcome>)]) -> usize {
    results
        .iter()
        .position(|(_, c, _)| c.reached())
        .or_else(|| results.iter().position(|(_, _, n)| n.is_some_and(Outcome::reached)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn errors_are_classified_precisely() {
        assert_eq!(Outcome::from_io(&os(libc::ECONNREFUSED)), Outcome::Refused);
        assert_eq!(Outcome::from_io(&os(libc::ECONNRESET)), Outcome::Reset);
        assert_eq!(Outcome::from_io(&os(libc::EPIPE)), Outcome::Reset);
        assert!(matches!(Outcome::from_io(&os(libc::EHOSTUNREACH)), Outcome::Unreachable(d) if d.contains("host")));
        assert!(matches!(Outcome::from_io(&os(libc::ENETUNREACH)), Outcome::Unreachable(d) if d.contains("route")));
        assert!(matches!(Outcome::from_io(&os(libc::EACCES)), Outcome::Unreachable(d) if d.contains("prohibited")));
        assert_eq!(Outcome::from_io(&os(libc::ETIMEDOUT)), Outcome::TimedOut);
        assert_eq!(
            Outcome::from_io(&io::Error::from(io::ErrorKind::TimedOut)),
            Outcome::TimedOut
        );
        assert_eq!(
            Outcome::from_io(&io::Error::from(io::ErrorKind::WouldBlock)),
            Outcome::TimedOut
        );
        assert!(matches!(Outcome::from_io(&os(libc::EADDRNOTAVAIL)), Outcome::Error(_)));
    }

    #[test]
    fn reached_and_stopped_partition_the_outcomes() {
        let all = [
            Outcome::Connected,
            Outcome::TlsOk("TLSv1.3".into()),
            Outcome::TlsFailed("x".into()),
            Outcome::Refused,
            Outcome::Reset,
            Outcome::Unreachable("x".into()),
            Outcome::TimedOut,
            Outcome::Error("x".into()),
        ];
        for o in &all {
            assert!(!(o.reached() && o.stopped()), "{o:?}");
            assert!(Outcome::NAMES.contains(&o.name()));
        }
        assert_eq!(all.iter().filter(|o| o.reached()).count(), 3);
        assert_eq!(all.iter().filter(|o| o.stopped()).count(), 4);
    }

    fn node_ok() -> NodeVerdict {
        judge_node(Some(&Outcome::Connected), None, "")
    }

    #[test]
    fn every_stopped_outcome_with_a_reachable_node_is_blocked() {
        for c in [
            Outcome::Refused,
            Outcome::Reset,
            Outcome::TimedOut,
            Outcome::Unreachable("host unreachable".into()),
        ] {
            let b = judge_block(&c, &node_ok(), Expect::Blocked, None);
            assert_eq!(b, BlockVerdict::Blocked, "{c:?}");
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 0);
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Reachable), 3);
        }
    }

    #[test]
    fn a_pod_that_connects_makes_the_block_ineffective() {
        for c in [
            Outcome::Connected,
            Outcome::TlsOk("TLSv1.3".into()),
            Outcome::TlsFailed("not TLS".into()),
        ] {
            let b = judge_block(&c, &node_ok(), Expect::Blocked, None);
            assert_eq!(b, BlockVerdict::Reachable);
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 3);
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Reachable), 0);
        }
    }

    #[test]
    fn refused_everywhere_is_inconclusive_never_blocked() {
        let node = judge_node(Some(&Outcome::Refused), None, "");
        assert!(matches!(&node, NodeVerdict::NoAnswer(d) if d.contains(INCONCLUSIVE)));
        for expect in [Expect::Blocked, Expect::Reachable] {
            let b = judge_block(&Outcome::Refused, &node, expect, None);
            assert_eq!(b, BlockVerdict::Inconclusive(INCONCLUSIVE.into()));
            assert_eq!(endpoint_exit(&b, &node, expect), 1);
        }
    }

    #[test]
    fn a_node_blocked_by_the_policy_is_cut_off() {
        let node = judge_node(Some(&Outcome::Refused), Some("10.0.0.0/16"), "");
        assert!(matches!(&node, NodeVerdict::CutOff(d) if d.starts_with("node cut off") && d.contains("10.0.0.0/16")));
        let b = judge_block(&Outcome::Refused, &node, Expect::Blocked, None);
        assert!(matches!(b, BlockVerdict::Inconclusive(_)));
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 3);
    }

    #[test]
    fn a_node_that_times_out_or_is_unreachable_is_cut_off() {
        for o in [
            Outcome::TimedOut,
            Outcome::Reset,
            Outcome::Unreachable("host unreachable".into()),
        ] {
            let node = judge_node(Some(&o), None, "");
            assert!(
                matches!(&node, NodeVerdict::CutOff(d) if d.starts_with("node cut off")),
                "{o:?}"
            );
            let b = judge_block(&Outcome::TimedOut, &node, Expect::Blocked, None);
            assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 3);
        }
    }

    #[test]
    fn a_pod_that_gets_through_while_the_node_is_cut_off_is_both_failures() {
        let node = judge_node(Some(&Outcome::TimedOut), None, "");
        let b = judge_block(&Outcome::Connected, &node, Expect::Blocked, None);
        assert_eq!(b, BlockVerdict::Reachable);
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 3);
    }

    #[test]
    fn without_the_node_check_a_stopped_pod_counts_as_blocked() {
        let node = judge_node(None, None, "--no-host-check");
        assert_eq!(node, NodeVerdict::NotChecked("--no-host-check".into()));
        let b = judge_block(&Outcome::Refused, &node, Expect::Blocked, None);
        assert_eq!(b, BlockVerdict::Blocked);
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 0);
    }

    #[test]
    fn probe_errors_are_exit_1() {
        let b = judge_block(&Outcome::Error("bind".into()), &node_ok(), Expect::Blocked, None);
        assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 1);
        let node = judge_node(Some(&Outcome::Error("socket".into())), None, "");
        assert!(matches!(node, NodeVerdict::Error(_)));
        let b = judge_block(&Outcome::Refused, &node, Expect::Blocked, None);
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 1);
    }

    #[test]
    fn a_source_the_policy_does_not_block_cannot_show_the_block() {
        let ip: IpAddr = "10.0.250.9".parse().unwrap();
        let exempt = Coverage::Exempt("10.0.250.0/24".into());
        let outside = Coverage::Outside;
        let blocked = Coverage::Blocked("10.0.0.0/16".into());
        let judge = |o: &Outcome, e, c| judge_block(o, &node_ok(), e, Some((ip, c)));
        assert_eq!(
            judge(&Outcome::Refused, Expect::Blocked, &blocked),
            BlockVerdict::Blocked
        );
        for c in [&exempt, &outside] {
            let b = judge(&Outcome::Refused, Expect::Blocked, c);
            assert!(
                matches!(&b, BlockVerdict::NotCovered(m) if m.contains("10.0.250.9")),
                "{b:?}"
            );
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 1);
        }
        // An exempt pod that gets through is doing what the policy says...
        assert!(matches!(
            judge(&Outcome::Connected, Expect::Blocked, &exempt),
            BlockVerdict::NotCovered(_)
        ));
        // ...while a pod outside the configured CIDRs that gets through is a leak all the same.
        assert_eq!(
            judge(&Outcome::Connected, Expect::Blocked, &outside),
            BlockVerdict::Reachable
        );
        // Checking that an exempt source gets through is what --expect reachable is for.
        assert_eq!(
            judge(&Outcome::Connected, Expect::Reachable, &exempt),
            BlockVerdict::Reachable
        );
        assert_eq!(
            judge(&Outcome::Refused, Expect::Reachable, &exempt),
            BlockVerdict::Blocked
        );
    }

    #[test]
    fn exit_codes_combine_worst_first() {
        assert_eq!(worst([]), 0);
        assert_eq!(worst([0, 1, 0]), 1);
        assert_eq!(worst([1, 3, 0]), 3);
        assert_eq!(worst([3, 1]), 3);
        let skipped = BlockVerdict::Skipped("no IPv6 container CIDR".into());
        assert_eq!(endpoint_exit(&skipped, &node_ok(), Expect::Blocked), 0);
    }

    #[test]
    fn coverage_names_the_cidr() {
        let sources = vec!["10.0.0.0/16".parse().unwrap()];
        let exempt = vec!["10.0.250.0/24".parse().unwrap()];
        let c = |ip: &str| coverage(&sources, &exempt, ip.parse().unwrap());
        assert_eq!(c("10.0.1.2"), Coverage::Blocked("10.0.0.0/16".into()));
        assert_eq!(c("10.0.250.9"), Coverage::Exempt("10.0.250.0/24".into()));
        assert_eq!(c("192.168.0.1"), Coverage::Outside);
    }

    #[test]
    fn the_reported_port_prefers_a_leak_then_the_control() {
        let (r, c, t) = (Outcome::Refused, Outcome::Connected, Outcome::TimedOut);
        assert_eq!(pick_port(&[(5443, &r, Some(&r)), (443, &r, Some(&c))]), 1);
        assert_eq!(pick_port(&[(5443, &r, Some(&c)), (443, &r, Some(&c))]), 0);
        assert_eq!(pick_port(&[(5443, &r, Some(&c)), (443, &c, Some(&c))]), 1);
        assert_eq!(pick_port(&[(5443, &t, None), (443, &t, None)]), 0);
        assert_eq!(pick_port(&[(5443, &r, Some(&r)), (443, &r, Some(&r))]), 0);
    }
}
