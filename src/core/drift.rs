//! Drift comparison: desired vs observed state of our own objects, for each
//! backend, as a list of findings an operator can read ("what is missing or
//! different, and who likely did it"). Empty list = in sync.

use super::iptables_state::IptObserved;
use super::nft_state::{BaseChain, NftState, RuleSig};
use super::policy::Hook;
use super::render_iptables::{jump_line, IptDesired, CHAIN};
use serde::Serialize;
use std::collections::BTreeSet;

/// One difference between what should be installed and what is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The object concerned, e.g. `table inet apiserver_guard`, `ip6tables chain APISERVER-GUARD`.
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
    /// The class of the difference (metrics label, likely cause).
    pub kind: DriftKind,
}

/// Classes of drift, each with the likely reason an operator should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    TableMissing,
    ChainMissing,
    ChainFlushed,
    ChainChanged,
    RulesChanged,
    SetMissing,
    ElementsChanged,
    JumpMissing,
    JumpDisplaced,
    JumpDuplicated,
    StaleObjects,
}

impl DriftKind {
    /// Label value for metrics, e.g. `table_missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::TableMissing => "table_missing",
            DriftKind::ChainMissing => "chain_missing",
            DriftKind::ChainFlushed => "chain_flushed",
            DriftKind::ChainChanged => "chain_changed",
            DriftKind::RulesChanged => "rules_changed",
            DriftKind::SetMissing => "set_missing",
            DriftKind::ElementsChanged => "elements_changed",
            DriftKind::JumpMissing => "jump_missing",
            DriftKind::JumpDisplaced => "jump_displaced",
            DriftKind::JumpDuplicated => "jump_duplicated",
            DriftKind::StaleObjects => "stale_objects",
        }
    }

    /// Who or what usually causes this.
    pub fn likely_cause(self) -> &'static str {
        match self {
            DriftKind::TableMissing => {
                "the table was deleted or the whole ruleset flushed (nft flush ruleset, a firewall reload)"
            }
            DriftKind::ChainMissing => "a chain was deleted (iptables -X, nft delete chain, a firewall reload)",
            DriftKind::ChainFlushed => "a chain was flushed (iptables -F, nft flush chain)",
            DriftKind::ChainChanged | DriftKind::RulesChanged | DriftKind::SetMissing | DriftKind::ElementsChanged => {
                "someone edited our objects by hand or with another tool"
            }
            DriftKind::JumpMissing => "our jump was deleted (iptables -F on a built-in chain, a firewall reload)",
            DriftKind::JumpDisplaced => {
                "another agent inserted a rule above our jump (CNI, kube-proxy, a firewall manager)"
            }
            DriftKind::JumpDuplicated => "our jump was copied or inserted twice",
            DriftKind::StaleObjects => "objects of an older policy or another backend are still there",
        }
    }
}

/// Every finding on one line: `object: problem; object: problem`.
pub fn describe(drift: &[Drift]) -> String {
    drift
        .iter()
        .map(|d| format!("{}: {}", d.object, d.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

fn drift(kind: DriftKind, object: impl Into<String>, problem: impl Into<String>) -> Drift {
    Drift {
        object: object.into(),
        problem: problem.into(),
        kind,
    }
}

fn show(set: &BTreeSet<&String>) -> String {
    set.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Compares our nftables table. `observed` is None when the table is absent.
pub fn diff_nft(desired: &NftState, observed: Option<&NftState>, table: &str) -> Vec<Drift> {
    let Some(seen) = observed else {
        return vec![drift(
            DriftKind::TableMissing,
            format!("table {table}"),
            "missing (deleted, or the ruleset was flushed)",
        )];
    };
    let mut out = Vec::new();
    for (name, want) in &desired.sets {
        let obj = format!("set {name}");
        let Some(got) = seen.sets.get(name) else {
            out.push(drift(DriftKind::SetMissing, obj, "missing"));
            continue;
        };
        if got.key_type != want.key_type || got.interval != want.interval {
            out.push(drift(
                DriftKind::ElementsChanged,
                obj.clone(),
                format!(
                    "has type '{}' (interval {}), expected '{}' (interval {})",
                    got.key_type, got.interval, want.key_type, want.interval
                ),
            ));
        }
        let missing: BTreeSet<_> = want.elements.difference(&got.elements).collect();
        let extra: BTreeSet<_> = got.elements.difference(&want.elements).collect();
        if !missing.is_empty() {
            out.push(drift(
                DriftKind::ElementsChanged,
                obj.clone(),
                format!("missing elements: {}", show(&missing)),
            ));
        }
        if !extra.is_empty() {
            out.push(drift(
                DriftKind::ElementsChanged,
                obj,
                format!("unexpected elements: {}", show(&extra)),
            ));
        }
    }
    for name in seen.sets.keys().filter(|n| !desired.sets.contains_key(*n)) {
        out.push(drift(
            DriftKind::StaleObjects,
            format!("set {name}"),
            "not part of the policy (stale or foreign)",
        ));
    }
    for (name, want) in &desired.chains {
        let obj = format!("chain {name}");
        let Some(got) = seen.chains.get(name) else {
            out.push(drift(DriftKind::ChainMissing, obj, "missing"));
            continue;
        };
        if got.base != want.base {
            out.push(drift(
                DriftKind::ChainChanged,
                obj.clone(),
                format!(
                    "hook/type/priority/policy is {}, expected {}",
                    base_text(&got.base),
                    base_text(&want.base)
                ),
            ));
        }
        if got.rules != want.rules {
            let kind = if got.rules.is_empty() {
                DriftKind::ChainFlushed
            } else {
                DriftKind::RulesChanged
            };
            out.push(drift(kind, obj, rules_problem(&want.rules, &got.rules)));
        }
    }
    for name in seen.chains.keys().filter(|n| !desired.chains.contains_key(*n)) {
        out.push(drift(
            DriftKind::StaleObjects,
            format!("chain {name}"),
            "not part of the policy (stale hook or foreign chain)",
        ));
    }
    out
}

/// A base chain as nft writes it (`type filter hook output priority 0; policy accept`), or "not a base chain".
fn base_text(base: &Option<BaseChain>) -> String {
    match base {
        Some(b) => format!(
            "type {} hook {} priority {}; policy {}",
            b.chain_type, b.hook, b.priority, b.policy
        ),
        None => "not a base chain".into(),
    }
}

/// Rules as an operator reads them: `[comment: verdict @set1 @set2 counter, ...]`.
fn rules_text(rules: &[RuleSig]) -> String {
    let one = |r: &RuleSig| {
        let mut t = format!(
            "{}: {}",
            if r.comment.is_empty() {
                "<uncommented>"
            } else {
                &r.comment
            },
            r.verdict
        );
        for set in &r.sets {
            t.push_str(&format!(" @{set}"));
        }
        if r.counter {
            t.push_str(" counter");
        }
        t
    };
    format!("[{}]", rules.iter().map(one).collect::<Vec<_>>().join(", "))
}

fn rules_problem(want: &[RuleSig], got: &[RuleSig]) -> String {
    let names = |rules: &[RuleSig]| {
        rules
            .iter()
            .map(|r| {
                if r.comment.is_empty() {
                    "<uncommented>".to_string()
                } else {
                    r.comment.clone()
                }
            })
            .collect::<Vec<_>>()
    };
    let (w, g) = (names(want), names(got));
    if w == g {
        format!(
            "rules changed in place (expected {}, found {})",
            rules_text(want),
            rules_text(got)
        )
    } else {
        format!("rules are [{}], expected [{}]", g.join(", "), w.join(", "))
    }
}

/// Compares one iptables family. `label` names the tool, e.g. `iptables-nft` or `ip6tables-legacy`.
pub fn diff_iptables(want: Option<&IptDesired>, seen: &IptObserved, label: &str) -> Vec<Drift> {
    let mut out = Vec::new();
    let chain_obj = format!("{label} chain {CHAIN}");
    match (want, &seen.chain) {
        (Some(_), None) => out.push(drift(
            DriftKind::ChainMissing,
            chain_obj.clone(),
            "missing (deleted, or the table was flushed)",
        )),
        (Some(w), Some(rules)) if *rules != w.rules => {
            let have: BTreeSet<&String> = rules.iter().collect();
            let need: BTreeSet<&String> = w.rules.iter().collect();
            let missing: BTreeSet<_> = need.difference(&have).copied().collect();
            let extra: BTreeSet<_> = have.difference(&need).copied().collect();
            let kind = if rules.is_empty() {
                DriftKind::ChainFlushed
            } else {
                DriftKind::RulesChanged
            };
            let problem = if rules.is_empty() {
                "empty (flushed, e.g. by iptables -F)".to_string()
            } else if missing.is_empty() && extra.is_empty() {
                "rules are out of order or duplicated".to_string()
            } else {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing rules: [{}]", show(&missing)));
                }
                if !extra.is_empty() {
                    parts.push(format!("unexpected rules: [{}]", show(&extra)));
                }
                parts.join("; ")
            };
            out.push(drift(kind, chain_obj.clone(), problem));
        }
        (None, Some(_)) => out.push(drift(
            DriftKind::StaleObjects,
            chain_obj.clone(),
            "stale: the policy blocks nothing in this family",
        )),
        _ => {}
    }
    for hook in Hook::ALL {
        let j = seen.jumps.get(&hook).copied().unwrap_or_default();
        let used = want.is_some_and(|w| w.hooks.contains(&hook));
        let obj = format!("{label} chain {}", hook.iptables_chain());
        if used && !j.at_top {
            let (kind, problem) = match seen.top_rule.get(&hook) {
                Some(top) => (
                    if j.count > 0 { DriftKind::JumpDisplaced } else { DriftKind::JumpMissing },
                    format!(
                        "our jump is not rule 1 (rule 1 is '{top}'): a rule above it can bypass the block; expected '{}'",
                        jump_line(hook)
                    ),
                ),
                None => (DriftKind::JumpMissing, format!("our jump is missing (expected '{}' as rule 1)", jump_line(hook))),
            };
            out.push(drift(kind, obj, problem));
        } else if used && j.count > 1 {
            out.push(drift(
                DriftKind::JumpDuplicated,
                obj,
                format!("{} copies of our jump, expected one", j.count),
            ));
        } else if !used && j.count > 0 {
            out.push(drift(
                DriftKind::StaleObjects,
                obj,
                "stale jump to our chain (the mode no longer hooks this chain)",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::iptables_state::JumpState;
    use crate::core::model::tests::policy;
    use crate::core::model::{Blocklist, Family};
    use crate::core::policy::{Action, Mode};
    use crate::core::render_iptables::desired;
    use crate::core::render_nft::desired_state;
    use std::collections::BTreeMap;

    fn blocklist(mode: Mode) -> Blocklist {
        Blocklist::from_policy(&policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            mode,
            Action::Reject,
        ))
    }

    const T: &str = "inet apiserver_guard";

    #[test]
    fn nft_identical_state_is_in_sync() {
        let d = desired_state(&blocklist(Mode::Both));
        assert!(diff_nft(&d, Some(&d.clone()), T).is_empty());
    }

    #[test]
    fn nft_missing_table_is_one_finding() {
        let d = desired_state(&blocklist(Mode::Both));
        let f = diff_nft(&d, None, T);
        assert_eq!(f.len(), 1);
        assert!(f[0].problem.contains("missing"));
        assert_eq!(f[0].kind, DriftKind::TableMissing);
    }

    #[test]
    fn nft_changed_elements_are_named() {
        let d = desired_state(&blocklist(Mode::Both));
        let mut seen = d.clone();
        let src = seen.sets.get_mut("sources_v4").unwrap();
        src.elements.clear();
        src.elements.insert("10.9.0.0/16".into());
        let f = diff_nft(&d, Some(&seen), T);
        assert!(f.iter().any(|x| x.problem == "missing elements: 10.0.0.0/16"), "{f:?}");
        assert!(
            f.iter().any(|x| x.problem == "unexpected elements: 10.9.0.0/16"),
            "{f:?}"
        );
    }

    #[test]
    fn nft_deleted_rule_foreign_rule_and_stale_chain_are_found() {
        let d = desired_state(&blocklist(Mode::Tunnel));
        let mut seen = d.clone();
        seen.chains.get_mut("guard").unwrap().rules.clear();
        let f = diff_nft(&d, Some(&seen), T);
        assert!(f.iter().any(|x| x.object == "chain guard"), "{f:?}");

        let mut seen = d.clone();
        let mut accept = seen.chains["guard"].rules[0].clone();
        accept.verdict = "accept".into();
        accept.comment = String::new();
        seen.chains.get_mut("guard").unwrap().rules.insert(0, accept);
        assert!(diff_nft(&d, Some(&seen), T)
            .iter()
            .any(|x| x.problem.contains("<uncommented>")));

        let both = desired_state(&blocklist(Mode::Both));
        let f = diff_nft(&d, Some(&both), T);
        assert!(
            f.iter()
                .any(|x| x.object == "chain output" && x.problem.contains("not part of the policy")),
            "{f:?}"
        );
    }

    #[test]
    fn nft_rule_changed_in_place_is_found() {
        let d = desired_state(&blocklist(Mode::Both));
        let mut seen = d.clone();
        seen.chains.get_mut("guard").unwrap().rules[0].verdict = "accept".into();
        let f = diff_nft(&d, Some(&seen), T);
        assert!(f.iter().any(|x| x.problem.contains("changed in place")), "{f:?}");
        // Said as an operator reads it, not as Rust debug output.
        let p = &f
            .iter()
            .find(|x| x.problem.contains("changed in place"))
            .unwrap()
            .problem;
        assert!(
            p.contains(": accept") && !p.contains("RuleSig") && !p.contains("verdict:"),
            "{p}"
        );
    }

    #[test]
    fn nft_base_chain_priority_change_is_found() {
        let d = desired_state(&blocklist(Mode::Both));
        let mut seen = d.clone();
        seen.chains.get_mut("forward").unwrap().base.as_mut().unwrap().priority = 10;
        let f = diff_nft(&d, Some(&seen), T);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].problem.contains("priority 10;") && !f[0].problem.contains("Some("),
            "{}",
            f[0].problem
        );
    }

    fn ipt(mode: Mode) -> IptDesired {
        desired(&blocklist(mode), Family::V4).unwrap()
    }

    fn seen(rules: Option<Vec<String>>, out: JumpState, fwd: JumpState, top: &[(Hook, &str)]) -> IptObserved {
        IptObserved {
            chain: rules,
            jumps: [(Hook::Output, out), (Hook::Forward, fwd)].into(),
            top_rule: top.iter().map(|(h, s)| (*h, s.to_string())).collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    const TOP: JumpState = JumpState { at_top: true, count: 1 };
    const NOT: JumpState = JumpState {
        at_top: false,
        count: 0,
    };

    #[test]
    fn iptables_in_sync() {
        let w = ipt(Mode::Both);
        assert!(diff_iptables(Some(&w), &seen(Some(w.rules.clone()), TOP, TOP, &[]), "iptables-nft").is_empty());
    }

    #[test]
    fn iptables_accept_above_our_jump_is_reported_with_the_rule() {
        let w = ipt(Mode::Tunnel);
        let top = "-A FORWARD -s 10.0.0.0/16 -j ACCEPT";
        let f = diff_iptables(
            Some(&w),
            &seen(Some(w.rules.clone()), NOT, NOT, &[(Hook::Forward, top)]),
            "iptables-legacy",
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].problem.contains(top) && f[0].problem.contains("bypass"), "{f:?}");
    }

    #[test]
    fn iptables_flushed_chain_and_missing_chain() {
        let w = ipt(Mode::Tunnel);
        let f = diff_iptables(Some(&w), &seen(Some(vec![]), NOT, TOP, &[]), "iptables-nft");
        assert!(f[0].problem.contains("flushed"), "{f:?}");
        let f = diff_iptables(Some(&w), &seen(None, NOT, NOT, &[]), "iptables-nft");
        assert_eq!(f.len(), 2, "chain and jump: {f:?}");
    }

    #[test]
    fn iptables_changed_rules_and_stale_objects() {
        let w = ipt(Mode::Tunnel);
        let f = diff_iptables(
            Some(&w),
            &seen(Some(vec!["-A APISERVER-GUARD -j ACCEPT".into()]), NOT, TOP, &[]),
            "x",
        );
        assert!(
            f[0].problem
                .contains("unexpected rules: [-A APISERVER-GUARD -j ACCEPT]"),
            "{f:?}"
        );
        let f = diff_iptables(Some(&w), &seen(Some(w.rules.clone()), TOP, TOP, &[]), "x");
        assert!(f[0].problem.contains("stale jump"), "{f:?}");
        let f = diff_iptables(None, &seen(Some(vec![]), NOT, NOT, &[]), "ip6tables-nft");
        assert!(f[0].problem.contains("stale"), "{f:?}");
        assert!(diff_iptables(None, &seen(None, NOT, NOT, &[]), "x").is_empty());
    }

    #[test]
    fn iptables_duplicate_jumps_are_reported() {
        let w = ipt(Mode::Tunnel);
        let dup = JumpState { at_top: true, count: 2 };
        let f = diff_iptables(Some(&w), &seen(Some(w.rules.clone()), NOT, dup, &[]), "x");
        assert!(f[0].problem.contains("2 copies"), "{f:?}");
    }
}
