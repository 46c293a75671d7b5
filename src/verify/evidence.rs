//! The evidence a "blocked" verdict needs besides the failed probe, as pure
//! data and pure judging (no I/O): the positive control from the probe's own
//! side (does the vantage point's network work at all?), whether the failure
//! is the one our rule produces (a TCP reset for `reject`, silence for
//! `drop`), and whether our block rules' packet counters moved during the
//! probe. `outcome::judge_block` combines them.

use serde::Serialize;

use super::outcome::Outcome;
use crate::core::policy::Action;

/// The positive control: a probe from the same namespace (or source address) to an address
/// the policy does not block, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum ControlVerdict {
    /// The control got an answer (connected, or refused/reset: something answered): the
    /// vantage point's network works.
    Works,
    /// The control got no answer (why, in plain words).
    Failed(String),
    /// No control could run (why, and what the operator can do).
    Missing(String),
}

/// Judges the control probe: any answer (connected, TCP reset, refused) shows that packets
/// leave the vantage point and answers come back; silence or an ICMP error does not.
pub fn control_verdict(target: &str, outcome: &Outcome) -> ControlVerdict {
    match outcome {
        o if o.reached() => ControlVerdict::Works,
        Outcome::Refused | Outcome::Reset => ControlVerdict::Works,
        Outcome::Error(why) => ControlVerdict::Failed(format!("the control probe to {target} could not run: {why}")),
        o => ControlVerdict::Failed(format!(
            "the control {target}, which the policy does not block, got no answer either ({}): the network of the probe's side does not work",
            o.describe()
        )),
    }
}

/// What our block rules' packet counters (one address family) say about the probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CounterEvidence {
    /// Our rules counted at least one packet per probe that failed the way our rule does.
    Moved { packets: u64, probes: usize },
    /// Our rules counted fewer packets than there were such probes: something else stopped
    /// some of them.
    Short { packets: u64, probes: usize },
    /// No block rule of ours is installed for this address family.
    NoRules,
    /// The counters could not be read (why): the verdict rests on the control and the kind of
    /// failure alone.
    Unknown { detail: String },
}

impl CounterEvidence {
    /// Plain words for the report.
    pub fn describe(&self) -> String {
        match self {
            CounterEvidence::Moved { packets, probes } => {
                format!("our block rules counted {packets} packet(s) during {probes} blocked probe(s)")
            }
            CounterEvidence::Short { packets, probes } => format!(
                "our block rules counted {packets} packet(s) during {probes} failed probe(s): \
                 something other than our rule stopped the probe"
            ),
            CounterEvidence::NoRules => "no block rule of ours is installed for this address family".into(),
            CounterEvidence::Unknown { detail } => format!("rule counters not checked: {detail}"),
        }
    }
}

/// Packets counted by our block rules of one family in one reading: `Ok(None)` when none of
/// our block rules exists, `Err` when the firewall could not be read.
pub type CounterReading = Result<Option<u64>, String>;

/// Compares the readings before and after the probes; `probes` is how many probes of this
/// family failed the way our rule makes them fail.
pub fn counter_evidence(before: &CounterReading, after: &CounterReading, probes: usize) -> CounterEvidence {
    match (before, after) {
        (Err(e), _) | (_, Err(e)) => CounterEvidence::Unknown { detail: e.clone() },
        (Ok(None), Ok(None)) => CounterEvidence::NoRules,
        (Ok(Some(b)), Ok(Some(a))) if a >= b => {
            let packets = a - b;
            if probes > 0 && packets >= probes as u64 {
                CounterEvidence::Moved { packets, probes }
            } else {
                CounterEvidence::Short { packets, probes }
            }
        }
        _ => CounterEvidence::Unknown {
            detail: "our rules were installed, removed or replaced during the probe".into(),
        },
    }
}

/// Whether `outcome` is what our block rule does to a TCP connection attempt: `reject`
/// answers the SYN with a TCP reset (connect: refused), `drop` stays silent (timed out).
/// Nothing else (no route, an ICMP error, a reset after the handshake) comes from our rule.
pub fn produced_by_our_rule(outcome: &Outcome, action: Action) -> bool {
    matches!(
        (outcome, action),
        (Outcome::Refused, Action::Reject) | (Outcome::TimedOut, Action::Drop)
    )
}

/// What our rule does, in the words of the report.
pub fn our_answer(action: Action) -> &'static str {
    match action {
        Action::Reject => "action reject answers the connection attempt with a TCP reset (refused)",
        Action::Drop => "action drop leaves it unanswered (timed out)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_answer_from_the_control_shows_the_network_works() {
        for o in [
            Outcome::Connected,
            Outcome::TlsOk("TLSv1.3".into()),
            Outcome::TlsFailed("x".into()),
            Outcome::Refused,
            Outcome::Reset,
        ] {
            assert_eq!(control_verdict("10.0.1.1:5443", &o), ControlVerdict::Works, "{o:?}");
        }
        for o in [
            Outcome::TimedOut,
            Outcome::Unreachable("network unreachable (no route)".into()),
            Outcome::Error("socket".into()),
        ] {
            let v = control_verdict("10.0.1.1:5443", &o);
            assert!(
                matches!(&v, ControlVerdict::Failed(m) if m.contains("10.0.1.1:5443")),
                "{o:?}: {v:?}"
            );
        }
    }

    #[test]
    fn only_the_failure_of_our_action_counts() {
        let all = [
            Outcome::Connected,
            Outcome::Refused,
            Outcome::Reset,
            Outcome::Unreachable("host unreachable".into()),
            Outcome::Unreachable("administratively prohibited (a firewall on the path)".into()),
            Outcome::TimedOut,
            Outcome::Error("x".into()),
        ];
        let ours = |a| {
            all.iter()
                .filter(|o| produced_by_our_rule(o, a))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(ours(Action::Reject), vec![Outcome::Refused]);
        assert_eq!(ours(Action::Drop), vec![Outcome::TimedOut]);
    }

    #[test]
    fn counters_must_move_once_per_probe() {
        let r = |v: Option<u64>| -> CounterReading { Ok(v) };
        assert_eq!(
            counter_evidence(&r(Some(5)), &r(Some(6)), 1),
            CounterEvidence::Moved { packets: 1, probes: 1 }
        );
        // drop: the SYN is sent again within the timeout.
        assert_eq!(
            counter_evidence(&r(Some(0)), &r(Some(3)), 2),
            CounterEvidence::Moved { packets: 3, probes: 2 }
        );
        assert_eq!(
            counter_evidence(&r(Some(5)), &r(Some(5)), 1),
            CounterEvidence::Short { packets: 0, probes: 1 }
        );
        assert_eq!(
            counter_evidence(&r(Some(5)), &r(Some(6)), 2),
            CounterEvidence::Short { packets: 1, probes: 2 }
        );
        // No probe to account for: nothing moved on our behalf.
        assert!(matches!(
            counter_evidence(&r(Some(5)), &r(Some(9)), 0),
            CounterEvidence::Short { .. }
        ));
        assert_eq!(counter_evidence(&r(None), &r(None), 1), CounterEvidence::NoRules);
    }

    #[test]
    fn unreadable_or_changing_counters_are_unknown() {
        let e: CounterReading = Err("nft: permission denied".into());
        assert!(matches!(
            counter_evidence(&e, &Ok(Some(1)), 1),
            CounterEvidence::Unknown { detail } if detail.contains("permission")
        ));
        assert!(matches!(
            counter_evidence(&Ok(Some(1)), &e, 1),
            CounterEvidence::Unknown { .. }
        ));
        for (b, a) in [(Some(1), None), (None, Some(1)), (Some(9), Some(1))] {
            assert!(
                matches!(counter_evidence(&Ok(b), &Ok(a), 1), CounterEvidence::Unknown { detail } if detail.contains("during the probe")),
                "{b:?} -> {a:?}"
            );
        }
    }

    #[test]
    fn evidence_is_described_in_plain_words() {
        assert!(CounterEvidence::Moved { packets: 1, probes: 1 }
            .describe()
            .contains("counted 1 packet"));
        assert!(CounterEvidence::NoRules.describe().contains("no block rule of ours"));
        assert!(our_answer(Action::Drop).contains("timed out"));
    }
}
