//! Pure classification for `verify`: what one probe saw (an `Outcome`,
//! decoded from the socket error in `probe_result`), and the verdicts drawn from the probe from
//! the container network, the positive control from the same side, our rules'
//! counters and the probe from the node. No I/O.
//!
//! Soundness rules (DESIGN.md, issues #4 and #11):
//! - "blocked" is a claim about our rule, so it needs proof: the probe's own
//!   network works (the control from the same namespace or source got an
//!   answer), the probe failed the way our rule makes it fail (refused for
//!   `reject`, timed out for `drop`), the apiserver answers the node (when
//!   the node is checked), and our block rules counted the probe (when their
//!   counters can be read: the counter of the rule matching THAT endpoint,
//!   read right before and after its probe alone). Anything else (no route,
//!   a link down, the control failing, a failure our rule does not produce,
//!   a counter that did not move) is "inconclusive", never "blocked";
//! - the node is "cut off" only when the policy can stop the node's own
//!   traffic (its source address towards the apiserver is inside a blocked
//!   container CIDR and the policy hooks OUTPUT or INPUT: the self-lockout
//!   case) AND our rule did it: the node's probe failed our rule's way and
//!   our rule's counter moved during it (where counters can be read). A node
//!   that cannot reach the apiserver otherwise meets an outage or someone
//!   else's rule: "inconclusive".

use super::evidence::{not_ours, our_answer, produced_by_our_rule, ControlVerdict, CounterEvidence};
use crate::core::policy::Action;
use crate::error::exit;
use serde::Serialize;
use std::net::IpAddr;

/// What the probe is expected to see (a command-line choice: defined with the flags).
pub use crate::cli::Expect;

pub use super::probe_result::Outcome;

/// The verdict on the container-network side of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum BlockVerdict {
    /// Proven: the pod did not get through, the way our rule stops it, while its own network
    /// works (the control answered), the node did (or was not checked) and our rules counted
    /// the probe (where their counters can be read).
    Blocked,
    /// The pod got through.
    Reachable,
    /// The pod did not get through, but nothing proves it was our block (why).
    Inconclusive(String),
    /// The probe source is not blocked by the policy (exempt, or outside every container
    /// CIDR): this probe cannot show the block.
    NotCovered(String),
    /// The endpoint's address family has no container CIDR in the policy: nothing to verify.
    Skipped(String),
    /// The probe could not run.
    Error(String),
    /// `--action audit`: the pod got through, as audit mode lets it, but our audit rule did not
    /// count it (why): the audit does not see this path, and `reject` would not block it either.
    Unaudited(String),
}

/// The verdict on the node side (positive control) of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum NodeVerdict {
    /// The node connects.
    Unaffected,
    /// The node cannot reach the apiserver, and the policy can stop its traffic (why).
    CutOff(String),
    /// The node cannot reach the apiserver, and the policy cannot stop its traffic: an outage
    /// (the apiserver down or on another port, its link down, no route), not the block.
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

/// What a "node cut off" verdict rests on besides the node's probe: the policy's action and
/// the counters of our rule(s) matching the endpoint, read right before and after the node's
/// probe alone.
#[derive(Debug, Clone, Copy)]
pub struct NodeEvidence<'a> {
    pub action: Action,
    pub counter: &'a CounterEvidence,
}

/// Judges the node-side probe. `node_blocked_by_policy` is `Some(cidr)` when the policy can
/// stop the node's own traffic to this endpoint: the node's source address lies in the blocked
/// container CIDR `cidr` and the policy hooks OUTPUT (or INPUT): the self-lockout case. Only
/// then, and only when the node's probe failed the way our rule makes it fail and our rule
/// counted it (where its counter can be read), is a node that does not get through "cut
/// off"; otherwise it meets an outage, or something other than our rule: "inconclusive".
pub fn judge_node(
    node: Option<&Outcome>,
    node_blocked_by_policy: Option<&str>,
    skip_reason: &str,
    evidence: &NodeEvidence<'_>,
) -> NodeVerdict {
    let Some(node) = node else {
        return NodeVerdict::NotChecked(skip_reason.to_string());
    };
    if node.reached() {
        return NodeVerdict::Unaffected;
    }
    match (node, node_blocked_by_policy) {
        (Outcome::Error(why), _) => NodeVerdict::Error(why.clone()),
        (o, Some(cidr)) => {
            let whose = format!(
                "{} from the node, whose source address is inside the blocked container CIDR {cidr}",
                o.describe()
            );
            if !produced_by_our_rule(o, evidence.action) {
                NodeVerdict::NoAnswer(format!(
                    "{INCONCLUSIVE} ({whose}, but that is not our rule's doing: {}): \
                     the apiserver, its link or the route to it is down",
                    our_answer(evidence.action)
                ))
            } else if evidence.counter.supports_our_rule() {
                NodeVerdict::CutOff(format!(
                    "node cut off: {whose} (the policy's OUTPUT or INPUT hook blocks the node itself: \
                     self-lockout); {}",
                    evidence.counter.describe()
                ))
            } else {
                NodeVerdict::NoAnswer(format!(
                    "{INCONCLUSIVE} ({whose}, but not by our rule: {}; the apiserver itself or a foreign rule \
                     stopped it)",
                    evidence.counter.describe()
                ))
            }
        }
        (Outcome::Refused, None) => NodeVerdict::NoAnswer(format!(
            "{INCONCLUSIVE} (refused from the node too: is it listening on this port?)"
        )),
        (o, None) => NodeVerdict::NoAnswer(format!(
            "{INCONCLUSIVE} ({} from the node, whose traffic this policy cannot block: \
             the apiserver, its link or the route to it is down)",
            o.describe()
        )),
    }
}

/// What else a "blocked" verdict rests on: the policy's action, the positive control from the
/// probe's side and our block rules' counters.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub action: Action,
    pub control: &'a ControlVerdict,
    pub counter: &'a CounterEvidence,
}

/// Judges the container-network probe. `source` is the probe's source address and where it
/// stands in the policy (None: unknown, e.g. no route). When the block is expected, an exempt
/// source cannot show it at all, and a source outside every container CIDR cannot show it when
/// it does not get through (when it does, that is reported: the pod reaches the apiserver
/// whatever the policy says). A probe that did not get through is "blocked" only with the
/// whole `evidence` (see the module notes); the first missing piece is named otherwise.
pub fn judge_block(
    container: &Outcome,
    node: &NodeVerdict,
    expect: Expect,
    source: Option<(IpAddr, &Coverage)>,
    evidence: &Evidence<'_>,
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
    let inconclusive = |why: String| BlockVerdict::Inconclusive(format!("inconclusive: {why}"));
    match evidence.control {
        ControlVerdict::Works => {}
        ControlVerdict::Failed(why) => return inconclusive(why.clone()),
        ControlVerdict::Missing(why) => {
            return inconclusive(format!("no positive control from the probe's side: {why}"))
        }
    }
    match node {
        NodeVerdict::Unaffected | NodeVerdict::NotChecked(_) => {}
        // The node's own words say which outage (they start with INCONCLUSIVE).
        NodeVerdict::NoAnswer(why) => return BlockVerdict::Inconclusive(why.clone()),
        NodeVerdict::CutOff(_) | NodeVerdict::Error(_) => return BlockVerdict::Inconclusive(INCONCLUSIVE.to_string()),
    }
    if !produced_by_our_rule(container, evidence.action) {
        return inconclusive(format!(
            "the probe was {}, which is not our rule's doing ({})",
            container.describe(),
            our_answer(evidence.action)
        ));
    }
    match evidence.counter {
        CounterEvidence::Moved { .. } | CounterEvidence::Unknown { .. } => BlockVerdict::Blocked,
        short @ CounterEvidence::Short { .. } => inconclusive(not_ours(container, evidence.action, short)),
        CounterEvidence::NoRules => inconclusive(CounterEvidence::NoRules.describe()),
    }
}

/// Under `--action audit` a pod the policy covers must get through (audit blocks nothing) AND
/// be counted by our audit rule matching the endpoint, where its counters can be read: a pod
/// that gets through unseen shows that the audit does not cover this path, so switching to
/// `reject` would not block it either. Any other verdict, source or action is left as it is.
pub fn judge_audit(
    block: BlockVerdict,
    action: Action,
    source: Option<&Coverage>,
    counter: &CounterEvidence,
) -> BlockVerdict {
    if action != Action::Audit || block != BlockVerdict::Reachable || !matches!(source, Some(Coverage::Blocked(_))) {
        return block;
    }
    let unseen = match counter {
        CounterEvidence::Moved { .. } | CounterEvidence::Unknown { .. } => return block,
        short @ CounterEvidence::Short { .. } => short.describe(),
        CounterEvidence::NoRules => "no audit rule of ours that matches this endpoint is installed".into(),
    };
    BlockVerdict::Unaudited(format!(
        "the pod got through, as audit mode lets it, but our audit rule did not see it: {unseen}; \
         --action reject would not block this path either (is the mode right? apiserver-guard status)"
    ))
}

/// Exit code contribution of one endpoint: 0 as expected, 3 an expectation failed (the block
/// is ineffective, the node is cut off, or a pod expected to get through is blocked), 1 could
/// not tell.
pub fn endpoint_exit(block: &BlockVerdict, node: &NodeVerdict, expect: Expect) -> i32 {
    let block_code = match (block, expect) {
        (BlockVerdict::Skipped(_), _) => exit::OK,
        (BlockVerdict::Blocked, Expect::Blocked) | (BlockVerdict::Reachable, Expect::Reachable) => exit::OK,
        (BlockVerdict::Reachable, Expect::Blocked)
        | (BlockVerdict::Blocked, Expect::Reachable)
        | (BlockVerdict::Unaudited(_), _) => exit::NOT_IN_SYNC,
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
    use crate::verify::evidence::{ControlVerdict, CounterEvidence};
    use std::io;

    const WORKS: ControlVerdict = ControlVerdict::Works;
    static MOVED: CounterEvidence = CounterEvidence::Moved {
        packets: 1,
        rules: Vec::new(),
    };

    /// `judge_node` where our rule counted the node's probe, with the action whose failure
    /// `o` is (drop for a timeout, reject otherwise).
    fn judge_node(o: Option<&Outcome>, blocked: Option<&str>, skip: &str) -> NodeVerdict {
        let action = if o == Some(&Outcome::TimedOut) {
            Action::Drop
        } else {
            Action::Reject
        };
        super::judge_node(
            o,
            blocked,
            skip,
            &NodeEvidence {
                action,
                counter: &MOVED,
            },
        )
    }

    /// Everything a "blocked" verdict needs, for `action`.
    fn proven(action: Action) -> Evidence<'static> {
        Evidence {
            action,
            control: &WORKS,
            counter: &MOVED,
        }
    }

    /// `judge_block` with full evidence for the action that produces `c` (reject for anything
    /// but a timeout).
    fn judge(c: &Outcome, node: &NodeVerdict, expect: Expect, source: Option<(IpAddr, &Coverage)>) -> BlockVerdict {
        let action = if *c == Outcome::TimedOut {
            Action::Drop
        } else {
            Action::Reject
        };
        judge_block(c, node, expect, source, &proven(action))
    }

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
    fn the_failure_of_our_action_with_full_evidence_is_blocked() {
        for (c, action) in [(Outcome::Refused, Action::Reject), (Outcome::TimedOut, Action::Drop)] {
            let b = judge_block(&c, &node_ok(), Expect::Blocked, None, &proven(action));
            assert_eq!(b, BlockVerdict::Blocked, "{c:?}");
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 0);
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Reachable), 3);
        }
    }

    #[test]
    fn a_failure_our_rule_does_not_produce_is_inconclusive() {
        // After `remove`, from a namespace with no route: the first hole.
        let no_route = Outcome::Unreachable("network unreachable (no route)".into());
        for (c, action) in [
            (no_route, Action::Reject),
            (Outcome::Unreachable("host unreachable".into()), Action::Reject),
            (Outcome::Reset, Action::Reject),
            (Outcome::TimedOut, Action::Reject),
            (Outcome::Refused, Action::Drop),
            (Outcome::Unreachable("administratively prohibited".into()), Action::Drop),
        ] {
            for expect in [Expect::Blocked, Expect::Reachable] {
                let b = judge_block(&c, &node_ok(), expect, None, &proven(action));
                assert!(
                    matches!(&b, BlockVerdict::Inconclusive(m) if m.contains("not our rule's doing") && m.contains(&c.describe())),
                    "{c:?} with {action:?}: {b:?}"
                );
                assert_eq!(endpoint_exit(&b, &node_ok(), expect), 1);
            }
        }
    }

    #[test]
    fn a_control_that_fails_or_is_missing_is_inconclusive() {
        let failed = ControlVerdict::Failed("the control 10.0.1.1:5443 got no answer".into());
        let missing = ControlVerdict::Missing("no route towards 192.168.50.10".into());
        for control in [&failed, &missing] {
            let e = Evidence {
                action: Action::Reject,
                control,
                counter: &MOVED,
            };
            let b = judge_block(&Outcome::Refused, &node_ok(), Expect::Blocked, None, &e);
            assert!(
                matches!(&b, BlockVerdict::Inconclusive(m) if m.starts_with("inconclusive:")),
                "{b:?}"
            );
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 1);
            // A pod that gets through needs no control: the leak is reported all the same.
            assert_eq!(
                judge_block(&Outcome::Connected, &node_ok(), Expect::Blocked, None, &e),
                BlockVerdict::Reachable
            );
        }
        let b = judge_block(
            &Outcome::Refused,
            &node_ok(),
            Expect::Blocked,
            None,
            &Evidence {
                action: Action::Reject,
                control: &missing,
                counter: &MOVED,
            },
        );
        assert!(
            matches!(&b, BlockVerdict::Inconclusive(m) if m.contains("no positive control") && m.contains("no route"))
        );
    }

    #[test]
    fn counters_that_did_not_move_are_inconclusive_unreadable_ones_are_not_required() {
        let short = CounterEvidence::Short {
            packets: 0,
            rules: vec!["block-tcp-port-v4".into()],
        };
        let none = CounterEvidence::NoRules;
        for counter in [&short, &none] {
            let e = Evidence {
                action: Action::Reject,
                control: &WORKS,
                counter,
            };
            let b = judge_block(&Outcome::Refused, &node_ok(), Expect::Blocked, None, &e);
            assert!(
                matches!(&b, BlockVerdict::Inconclusive(m) if m.contains(&counter.describe())),
                "{b:?}"
            );
            assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 1);
        }
        // --from-here: the node's counters are out of sight; the control and the kind of
        // failure carry the verdict.
        let unknown = CounterEvidence::Unknown {
            detail: "--from-here".into(),
        };
        let e = Evidence {
            action: Action::Reject,
            control: &WORKS,
            counter: &unknown,
        };
        assert_eq!(
            judge_block(&Outcome::Refused, &node_ok(), Expect::Blocked, None, &e),
            BlockVerdict::Blocked
        );
    }

    #[test]
    fn a_pod_that_connects_makes_the_block_ineffective() {
        for c in [
            Outcome::Connected,
            Outcome::TlsOk("TLSv1.3".into()),
            Outcome::TlsFailed("not TLS".into()),
        ] {
            let b = judge(&c, &node_ok(), Expect::Blocked, None);
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
            let b = judge(&Outcome::Refused, &node, expect, None);
            assert!(
                matches!(&b, BlockVerdict::Inconclusive(m) if m.starts_with(INCONCLUSIVE) && m.contains("listening"))
            );
            assert_eq!(endpoint_exit(&b, &node, expect), 1);
        }
    }

    #[test]
    fn a_node_blocked_by_the_policy_is_cut_off() {
        let node = judge_node(Some(&Outcome::Refused), Some("10.0.0.0/16"), "");
        assert!(matches!(&node, NodeVerdict::CutOff(d) if d.starts_with("node cut off") && d.contains("10.0.0.0/16")));
        let b = judge(&Outcome::Refused, &node, Expect::Blocked, None);
        assert!(matches!(b, BlockVerdict::Inconclusive(_)));
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 3);
    }

    #[test]
    fn a_node_the_policy_cannot_block_meets_an_outage_not_a_cut_off() {
        // The second hole: the apiserver's link down in mode tunnel.
        for o in [
            Outcome::TimedOut,
            Outcome::Reset,
            Outcome::Unreachable("network unreachable (no route)".into()),
            Outcome::Unreachable("host unreachable".into()),
        ] {
            let node = judge_node(Some(&o), None, "");
            assert!(
                matches!(&node, NodeVerdict::NoAnswer(d) if d.starts_with(INCONCLUSIVE) && d.contains(&o.describe())),
                "{o:?}: {node:?}"
            );
            let b = judge(
                &Outcome::Unreachable("host unreachable".into()),
                &node,
                Expect::Blocked,
                None,
            );
            assert!(matches!(b, BlockVerdict::Inconclusive(_)), "{b:?}");
            assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 1, "{o:?}");
        }
    }

    #[test]
    fn a_node_the_policy_can_block_is_cut_off_only_by_our_rule() {
        for o in [Outcome::Refused, Outcome::TimedOut] {
            let node = judge_node(Some(&o), Some("10.0.0.0/16"), "");
            assert!(
                matches!(&node, NodeVerdict::CutOff(d) if d.starts_with("node cut off")),
                "{o:?}"
            );
            let b = judge(&Outcome::TimedOut, &node, Expect::Blocked, None);
            assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 3);
        }
        // Failures our rule does not produce are an outage, whatever the policy covers.
        for o in [Outcome::Reset, Outcome::Unreachable("host unreachable".into())] {
            let node = judge_node(Some(&o), Some("10.0.0.0/16"), "");
            assert!(
                matches!(&node, NodeVerdict::NoAnswer(d) if d.starts_with(INCONCLUSIVE) && d.contains("not our rule's doing")),
                "{o:?}: {node:?}"
            );
            assert_eq!(
                endpoint_exit(&judge(&o, &node, Expect::Blocked, None), &node, Expect::Blocked),
                1
            );
        }
        // A node that connects is unaffected whatever the policy covers.
        assert_eq!(
            judge_node(Some(&Outcome::Connected), Some("10.0.0.0/16"), ""),
            NodeVerdict::Unaffected
        );
    }

    #[test]
    fn a_node_refused_while_our_counter_stays_still_is_not_cut_off() {
        // The second review's hole 2: the apiserver down, the node's source in the CIDR.
        let still = CounterEvidence::Short {
            packets: 0,
            rules: vec!["block-tcp-port-v4".into()],
        };
        for counter in [&still, &CounterEvidence::NoRules] {
            let node = super::judge_node(
                Some(&Outcome::Refused),
                Some("10.0.0.0/16"),
                "",
                &NodeEvidence {
                    action: Action::Reject,
                    counter,
                },
            );
            assert!(
                matches!(&node, NodeVerdict::NoAnswer(d) if d.starts_with(INCONCLUSIVE) && d.contains("not by our rule") && d.contains(&counter.describe())),
                "{node:?}"
            );
            assert_eq!(endpoint_exit(&BlockVerdict::Blocked, &node, Expect::Blocked), 1);
        }
        // Counters out of sight: the policy and the failure's kind carry the verdict.
        let unknown = CounterEvidence::Unknown { detail: "x".into() };
        let node = super::judge_node(
            Some(&Outcome::Refused),
            Some("10.0.0.0/16"),
            "",
            &NodeEvidence {
                action: Action::Reject,
                counter: &unknown,
            },
        );
        assert!(matches!(node, NodeVerdict::CutOff(_)), "{node:?}");
    }

    #[test]
    fn a_foreign_refusal_our_counter_did_not_see_is_inconclusive() {
        let still = CounterEvidence::Short {
            packets: 0,
            rules: vec!["block-tcp-port-v4".into()],
        };
        let e = Evidence {
            action: Action::Reject,
            control: &WORKS,
            counter: &still,
        };
        let b = judge_block(&Outcome::Refused, &node_ok(), Expect::Blocked, None, &e);
        assert!(
            matches!(&b, BlockVerdict::Inconclusive(m) if m.contains("refused, but not by our rule") && m.contains("did not move")),
            "{b:?}"
        );
    }

    #[test]
    fn a_pod_that_gets_through_while_the_node_is_cut_off_is_both_failures() {
        let node = judge_node(Some(&Outcome::TimedOut), Some("10.0.0.0/16"), "");
        let b = judge(&Outcome::Connected, &node, Expect::Blocked, None);
        assert_eq!(b, BlockVerdict::Reachable);
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 3);
    }

    #[test]
    fn without_the_node_check_a_stopped_pod_counts_as_blocked() {
        let node = judge_node(None, None, "--no-host-check");
        assert_eq!(node, NodeVerdict::NotChecked("--no-host-check".into()));
        let b = judge(&Outcome::Refused, &node, Expect::Blocked, None);
        assert_eq!(b, BlockVerdict::Blocked);
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 0);
    }

    #[test]
    fn probe_errors_are_exit_1() {
        let b = judge(&Outcome::Error("bind".into()), &node_ok(), Expect::Blocked, None);
        assert_eq!(endpoint_exit(&b, &node_ok(), Expect::Blocked), 1);
        let node = judge_node(Some(&Outcome::Error("socket".into())), None, "");
        assert!(matches!(node, NodeVerdict::Error(_)));
        let b = judge(&Outcome::Refused, &node, Expect::Blocked, None);
        assert_eq!(endpoint_exit(&b, &node, Expect::Blocked), 1);
    }

    #[test]
    fn a_source_the_policy_does_not_block_cannot_show_the_block() {
        let ip: IpAddr = "10.0.250.9".parse().unwrap();
        let exempt = Coverage::Exempt("10.0.250.0/24".into());
        let outside = Coverage::Outside;
        let blocked = Coverage::Blocked("10.0.0.0/16".into());
        let judge = |o: &Outcome, e, c| judge(o, &node_ok(), e, Some((ip, c)));
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

    #[test]
    fn audit_needs_the_pod_through_and_counted_by_our_audit_rule() {
        let covered = Coverage::Blocked("10.0.0.0/16".into());
        let rules = vec!["audit-tcp-port-v4".to_string()];
        let moved = CounterEvidence::Moved {
            packets: 6,
            rules: rules.clone(),
        };
        let short = CounterEvidence::Short { packets: 0, rules };
        let audit =
            |b: BlockVerdict, src: Option<&Coverage>, c: &CounterEvidence| judge_audit(b, Action::Audit, src, c);
        assert_eq!(
            audit(BlockVerdict::Reachable, Some(&covered), &moved),
            BlockVerdict::Reachable
        );
        let unknown = CounterEvidence::Unknown { detail: "x".into() };
        assert_eq!(
            audit(BlockVerdict::Reachable, Some(&covered), &unknown),
            BlockVerdict::Reachable
        );
        let unseen = audit(BlockVerdict::Reachable, Some(&covered), &short);
        assert!(
            matches!(&unseen, BlockVerdict::Unaudited(m) if m.contains("(audit-tcp-port-v4) did not move") && m.contains("--action reject would not block")),
            "{unseen:?}"
        );
        assert!(matches!(
            audit(BlockVerdict::Reachable, Some(&covered), &CounterEvidence::NoRules),
            BlockVerdict::Unaudited(m) if m.contains("no audit rule of ours")
        ));
        let unaffected = NodeVerdict::Unaffected;
        assert_eq!(
            endpoint_exit(&unseen, &unaffected, Expect::Reachable),
            exit::NOT_IN_SYNC
        );
        assert_eq!(
            endpoint_exit(&BlockVerdict::Reachable, &unaffected, Expect::Reachable),
            exit::OK
        );
        // An exempt or outside source is not audited; other verdicts and actions are untouched.
        let exempt = Coverage::Exempt("10.0.9.0/24".into());
        assert_eq!(
            audit(BlockVerdict::Reachable, Some(&exempt), &short),
            BlockVerdict::Reachable
        );
        assert_eq!(audit(BlockVerdict::Reachable, None, &short), BlockVerdict::Reachable);
        assert_eq!(
            audit(BlockVerdict::Blocked, Some(&covered), &short),
            BlockVerdict::Blocked
        );
        assert_eq!(
            judge_audit(BlockVerdict::Reachable, Action::Reject, Some(&covered), &short),
            BlockVerdict::Reachable
        );
    }
}
