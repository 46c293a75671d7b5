//! The evidence a "blocked" verdict needs besides the failed probe, as pure
//! data and pure judging (no I/O): the positive control from the probe's own
//! side (does the vantage point's network work at all?), whether the failure
//! is the one our rule produces (a TCP reset for `reject`, silence for
//! `drop`), and whether the packet counters of our rule(s) matching that
//! endpoint moved during that probe alone. `outcome::judge_block` and
//! `outcome::judge_node` combine them.

use serde::Serialize;

use super::probe_result::Outcome;
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

/// What the packet counters of our rule(s) matching one endpoint say about one probe of it:
/// they are read right before and right after that probe, while no other probe of ours runs
/// in its address family (the positive controls run before every such window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CounterEvidence {
    /// Our rule(s) counted at least one packet during the probe.
    Moved { packets: u64, rules: Vec<String> },
    /// Our rule(s) matching this endpoint counted nothing during the probe: something else
    /// stopped it.
    Short { packets: u64, rules: Vec<String> },
    /// No block rule of ours that matches this endpoint is installed.
    NoRules,
    /// The counters could not be read (why): the verdict rests on the control and the kind of
    /// failure alone.
    Unknown { detail: String },
}

impl CounterEvidence {
    /// Plain words for the report.
    pub fn describe(&self) -> String {
        match self {
            CounterEvidence::Moved { packets, rules } => format!(
                "our {} counted {packets} packet(s) during this probe alone",
                named(rules, "rule", "rules")
            ),
            CounterEvidence::Short { rules, .. } => format!(
                "{} did not move during this probe alone",
                named(rules, "its counter", "their counters")
            ),
            CounterEvidence::NoRules => "no block rule of ours that matches this endpoint is installed".into(),
            CounterEvidence::Unknown { detail } => format!("rule counters not checked: {detail}"),
        }
    }

    /// Our rule counted the probe, or its counters are out of sight (nothing contradicts).
    pub fn supports_our_rule(&self) -> bool {
        matches!(self, CounterEvidence::Moved { .. } | CounterEvidence::Unknown { .. })
    }
}

/// `one (a)` or `many (a, b)`.
fn named(rules: &[String], one: &str, many: &str) -> String {
    let word = if rules.len() > 1 { many } else { one };
    format!("{word} ({})", rules.join(", "))
}

/// Packets counted by the rule(s) of ours that match one endpoint in one reading: `Ok(None)`
/// when none of them exists, `Err` when the firewall could not be read.
pub type CounterReading = Result<Option<u64>, String>;

/// Compares the readings right before and after one probe; `rules` names the rules read.
pub fn counter_evidence(before: &CounterReading, after: &CounterReading, rules: Vec<String>) -> CounterEvidence {
    match (before, after) {
        (Err(e), _) | (_, Err(e)) => CounterEvidence::Unknown { detail: e.clone() },
        (Ok(None), Ok(None)) => CounterEvidence::NoRules,
        (Ok(Some(b)), Ok(Some(a))) if a >= b => {
            let packets = a - b;
            if packets > 0 {
                CounterEvidence::Moved { packets, rules }
            } else {
                CounterEvidence::Short { packets, rules }
            }
        }
        _ => CounterEvidence::Unknown {
            detail: "our rules were installed, removed or replaced during the probe".into(),
        },
    }
}

/// Why a failure like our rule's was not our rule's doing, given counters that say so.
pub fn not_ours(outcome: &Outcome, action: Action, counter: &CounterEvidence) -> String {
    let who = match action {
        Action::Reject => "a foreign rule or the apiserver itself refused",
        Action::Drop => "a foreign rule or the network dropped it",
        Action::Audit => "action audit blocks nothing, so a foreign rule or the network did",
    };
    format!(
        "{}, but not by our rule: {}; {who}",
        outcome.describe(),
        counter.describe()
    )
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
        Action::Audit => "action audit lets it through and only counts and logs it",
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

    fn rules() -> Vec<String> {
        vec!["block-tcp-port-v4".to_string()]
    }

    #[test]
    fn the_counter_must_move_during_the_probe() {
        let r = |v: Option<u64>| -> CounterReading { Ok(v) };
        assert_eq!(
            counter_evidence(&r(Some(5)), &r(Some(6)), rules()),
            CounterEvidence::Moved {
                packets: 1,
                rules: rules()
            }
        );
        // drop: the SYN is sent again within the timeout.
        assert_eq!(
            counter_evidence(&r(Some(0)), &r(Some(3)), rules()),
            CounterEvidence::Moved {
                packets: 3,
                rules: rules()
            }
        );
        assert_eq!(
            counter_evidence(&r(Some(5)), &r(Some(5)), rules()),
            CounterEvidence::Short {
                packets: 0,
                rules: rules()
            }
        );
        assert_eq!(counter_evidence(&r(None), &r(None), vec![]), CounterEvidence::NoRules);
    }

    #[test]
    fn unreadable_or_changing_counters_are_unknown() {
        let e: CounterReading = Err("nft: permission denied".into());
        assert!(matches!(
            counter_evidence(&e, &Ok(Some(1)), rules()),
            CounterEvidence::Unknown { detail } if detail.contains("permission")
        ));
        assert!(matches!(
            counter_evidence(&Ok(Some(1)), &e, rules()),
            CounterEvidence::Unknown { .. }
        ));
        for (b, a) in [(Some(1), None), (None, Some(1)), (Some(9), Some(1))] {
            assert!(
                matches!(counter_evidence(&Ok(b), &Ok(a), rules()), CounterEvidence::Unknown { detail } if detail.contains("during the probe")),
                "{b:?} -> {a:?}"
            );
        }
    }

    #[test]
    fn a_failure_our_counter_did_not_see_is_named() {
        let still = CounterEvidence::Short {
            packets: 0,
            rules: rules(),
        };
        assert_eq!(
            not_ours(&Outcome::Refused, Action::Reject, &still),
            "refused, but not by our rule: its counter (block-tcp-port-v4) did not move during this probe alone; \
             a foreign rule or the apiserver itself refused"
        );
        assert!(not_ours(&Outcome::TimedOut, Action::Drop, &still).contains("network dropped it"));
        assert!(!still.supports_our_rule() && !CounterEvidence::NoRules.supports_our_rule());
    }

    #[test]
    fn evidence_is_described_in_plain_words() {
        assert!(CounterEvidence::Moved {
            packets: 1,
            rules: rules()
        }
        .describe()
        .contains("(block-tcp-port-v4) counted 1 packet"));
        assert!(CounterEvidence::NoRules.describe().contains("no block rule of ours"));
        assert!(our_answer(Action::Drop).contains("timed out"));
    }
}
