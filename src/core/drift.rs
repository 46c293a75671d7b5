//! Drift comparison: desired vs observed state of our own objects, for each
//! backend, as a list of findings an operator can read ("what is missing or
//! different, and who likely did it"). Empty list = in sync.

use super::iptables_state::IptObserved;
use super::nft_diff::{differences, Difference};
use super::nft_model::{ChainModel, TableModel, GUARD_CHAIN, TABLE_FAMILY, TABLE_NAME};
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
    NotOwned,
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
            DriftKind::NotOwned => "not_owned",
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
            DriftKind::NotOwned => "the daemon just started, or a one-shot apply or an earlier daemon left the table",
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

/// Compares our nftables table as read back (`got`; None when it is absent)
/// with the one wanted: every difference `nft_diff` finds, in its plain
/// words, classed. A chain emptied is one finding, not one per rule.
pub fn diff_nft(want: &TableModel, got: Option<&TableModel>) -> Vec<Drift> {
    let Some(got) = got else {
        return vec![drift(
            DriftKind::TableMissing,
            format!("table {TABLE_FAMILY} {TABLE_NAME}"),
            "missing (deleted, or the ruleset was flushed)",
        )];
    };
    let flushed: BTreeSet<&str> = want
        .chains
        .iter()
        .filter(|(n, w)| !w.rules.is_empty() && got.chains.get(*n).is_some_and(|g| g.rules.is_empty()))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut said: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for d in differences(want, got) {
        let chain = rule_chain(&d.object).and_then(|c| flushed.get(c).copied());
        if let Some(chain) = chain {
            if said.insert(chain) {
                out.push(flushed_chain(chain, &want.chains[chain]));
            }
            continue;
        }
        let kind = nft_kind(&d, want);
        out.push(drift(kind, d.object, d.what));
    }
    out
}

/// An unreadable table of ours (a dump that does not decode), as drift.
pub fn nft_unreadable(why: &str) -> Drift {
    drift(
        DriftKind::RulesChanged,
        format!("table {TABLE_FAMILY} {TABLE_NAME}"),
        format!("cannot be read as ours: {why}"),
    )
}

fn flushed_chain(name: &str, want: &ChainModel) -> Drift {
    if want.base.is_some() {
        drift(
            DriftKind::JumpMissing,
            format!("chain {name}"),
            format!("empty: our jump to chain {GUARD_CHAIN} is gone (flushed, e.g. by nft flush chain)"),
        )
    } else {
        drift(
            DriftKind::ChainFlushed,
            format!("chain {name}"),
            format!(
                "empty: our {} rule(s) are gone (flushed, e.g. by nft flush chain)",
                want.rules.len()
            ),
        )
    }
}

/// The chain a rule finding is about: `rule 2 of chain guard (...)`, `chain guard, position 3`.
fn rule_chain(object: &str) -> Option<&str> {
    let rest = match object.strip_prefix("rule ") {
        Some(r) => r.split_once(" of chain ")?.1,
        None => object.strip_prefix("chain ")?.split_once(", position ")?.0,
    };
    rest.split(' ').next()
}

fn nft_kind(d: &Difference, want: &TableModel) -> DriftKind {
    let o = d.object.as_str();
    if o.starts_with("set ") {
        return match d.what.as_str() {
            "missing" => DriftKind::SetMissing,
            w if w.starts_with("not ours") => DriftKind::StaleObjects,
            _ => DriftKind::ElementsChanged,
        };
    }
    if let Some(chain) = rule_chain(o) {
        let base = want.chains.get(chain).is_some_and(|c| c.base.is_some());
        return match (base, d.what.as_str()) {
            (true, w) if w.starts_with("missing") => DriftKind::JumpMissing,
            (true, w) if w.starts_with("moved") => DriftKind::JumpDisplaced,
            (true, w) if w.starts_with("an extra rule with our comment") => DriftKind::JumpDuplicated,
            _ => DriftKind::RulesChanged,
        };
    }
    if o.starts_with("chain ") {
        return match d.what.as_str() {
            "missing" => DriftKind::ChainMissing,
            w if w.starts_with("not ours") => DriftKind::StaleObjects,
            _ => DriftKind::ChainChanged,
        };
    }
    DriftKind::RulesChanged
}

/// Compares one iptables family. `label` names the tool, e.g. `iptables-nft` or `ip6tables-legacy`.
/// Rule 1 of a hook chain as a finding shows it: a rule line (as
/// iptables-save prints it) in quotes, a description (read over netlink,
/// without the text) as it is.
fn quoted_rule(top: &str) -> String {
    if top.starts_with("-A ") {
        format!("'{top}'")
    } else {
        top.to_string()
    }
}

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
        (Some(_), Some(_)) if seen.hidden_change.is_some() => out.push(drift(
            DriftKind::RulesChanged,
            chain_obj.clone(),
            format!(
                "{}: it reads like ours as iptables rules, but its bytes in the kernel are not the ones \
                 iptables wrote for it (a change iptables cannot print: a match or statement added with nft, or \
                 a raw write)",
                seen.hidden_change.as_deref().unwrap_or_default()
            ),
        )),
        (None, Some(_)) => out.push(drift(
            DriftKind::StaleObjects,
            chain_obj.clone(),
            "stale: the policy blocks nothing in this family",
        )),
        _ => {}
    }
    if want.is_some() && seen.dormant {
        out.push(drift(
            DriftKind::ChainChanged,
            format!("{label} table filter"),
            "is dormant (switched off with nft `flags dormant`): none of its rules run, ours included; \
             apiserver-guard does not switch other people's tables back on: if that was not meant, \
             `nft add table ip filter` (ip6 for IPv6) does",
        ));
    }
    for hook in Hook::ALL {
        let j = seen.jumps.get(&hook).copied().unwrap_or_default();
        let used = want.is_some_and(|w| w.hooks.contains(&hook));
        let obj = format!("{label} chain {}", hook.iptables_chain());
        if used && seen.unhooked.contains(&hook) {
            out.push(drift(
                DriftKind::ChainChanged,
                obj.clone(),
                format!(
                    "is not the built-in chain: a chain named {0} that is not hooked at {1} stands in its place, so a \
                     jump in it filters nothing; apiserver-guard does not delete other people's chains: move out what \
                     is needed, delete it with nft, then run apply",
                    hook.iptables_chain(),
                    hook.iptables_chain().to_lowercase()
                ),
            ));
        }
        if let Some(n) = seen.stray_jumps.get(&hook) {
            out.push(drift(
                DriftKind::JumpDuplicated,
                obj.clone(),
                format!(
                    "{n} changed {} of our jump: {} our comment and jumps to our chain, but {} not the bytes \
                     iptables writes for '{}' (a match added, or a change iptables cannot print); \
                     repairs take {} out by {} bytes",
                    if *n == 1 { "copy" } else { "copies" },
                    if *n == 1 { "it carries" } else { "they carry" },
                    if *n == 1 { "is" } else { "are" },
                    jump_line(hook),
                    if *n == 1 { "it" } else { "them" },
                    if *n == 1 { "its" } else { "their" },
                ),
            ));
        }
        if used && !j.at_top {
            let (kind, problem) = match seen.top_rule.get(&hook) {
                Some(top) => (
                    if j.count > 0 {
                        DriftKind::JumpDisplaced
                    } else {
                        DriftKind::JumpMissing
                    },
                    format!(
                        "our jump is not rule 1 (rule 1 is {}): a rule above it can bypass the block; expected '{}'",
                        quoted_rule(top),
                        jump_line(hook)
                    ),
                ),
                None => (
                    DriftKind::JumpMissing,
                    format!("our jump is missing (expected '{}' as rule 1)", jump_line(hook)),
                ),
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
    use crate::core::nft_desired::desired as nft_desired;
    use crate::core::policy::{Action, Mode};
    use crate::core::render_iptables::desired;
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

    #[test]
    fn nft_identical_state_is_in_sync() {
        let d = nft_desired(&blocklist(Mode::Both));
        assert!(diff_nft(&d, Some(&d.clone())).is_empty());
    }

    #[test]
    fn nft_missing_table_is_one_finding() {
        let d = nft_desired(&blocklist(Mode::Both));
        let f = diff_nft(&d, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].object, "table inet apiserver_guard");
        assert!(f[0].problem.contains("missing"));
        assert_eq!(f[0].kind, DriftKind::TableMissing);
    }

    #[test]
    fn nft_changed_elements_are_named() {
        let d = nft_desired(&blocklist(Mode::Both));
        let mut seen = d.clone();
        let other = nft_desired(&Blocklist::from_policy(&policy(
            &["10.9.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Both,
            Action::Reject,
        )));
        seen.sets.insert("sources_v4".into(), other.sets["sources_v4"].clone());
        let f = diff_nft(&d, Some(&seen));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, DriftKind::ElementsChanged);
        assert_eq!(f[0].object, "set sources_v4");
        assert!(
            f[0].problem.contains("10.9.0.0/16 added") && f[0].problem.contains("10.0.0.0/16 missing"),
            "{}",
            f[0].problem
        );
    }

    #[test]
    fn nft_flushed_chains_are_one_finding_each() {
        let d = nft_desired(&blocklist(Mode::Both));
        let mut seen = d.clone();
        seen.chains.get_mut(GUARD_CHAIN).unwrap().rules.clear();
        seen.chains.get_mut("forward").unwrap().rules.clear();
        let f = diff_nft(&d, Some(&seen));
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            (f[0].kind, f[0].object.as_str()),
            (DriftKind::JumpMissing, "chain forward")
        );
        assert_eq!(
            (f[1].kind, f[1].object.as_str()),
            (DriftKind::ChainFlushed, "chain guard")
        );
    }

    #[test]
    fn nft_rule_changes_foreign_rules_and_stale_chains_are_classed_in_plain_words() {
        let d = nft_desired(&blocklist(Mode::Tunnel));
        let mut seen = d.clone();
        let guard = seen.chains.get_mut(GUARD_CHAIN).unwrap();
        let mut accept = guard.rules[0].clone();
        accept.exprs = vec![crate::core::nft_model::Expr::Immediate {
            dreg: 0,
            verdict: crate::core::nft_model::Verdict::Accept,
        }];
        accept.userdata.clear();
        guard.rules.insert(0, accept);
        let f = diff_nft(&d, Some(&seen));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, DriftKind::RulesChanged);
        assert!(f[0].problem.contains("a foreign rule: accept"), "{}", f[0].problem);

        let both = nft_desired(&blocklist(Mode::Both));
        let f = diff_nft(&d, Some(&both));
        let out = f
            .iter()
            .find(|x| x.object == "chain output")
            .expect("output chain named");
        assert_eq!(out.kind, DriftKind::StaleObjects);
        for x in &f {
            assert!(
                !x.problem.contains('{') && !x.problem.contains("Some("),
                "{}",
                x.problem
            );
        }
    }

    #[test]
    fn nft_base_chain_priority_and_policy_changes_are_found() {
        let d = nft_desired(&blocklist(Mode::Both));
        let mut seen = d.clone();
        let base = seen.chains.get_mut("forward").unwrap().base.as_mut().unwrap();
        base.priority = 10;
        base.policy = crate::core::nft_model::NF_DROP;
        let f = diff_nft(&d, Some(&seen));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f
            .iter()
            .all(|x| x.kind == DriftKind::ChainChanged && x.object == "chain forward"));
        assert_eq!(f[0].problem, "priority 10 instead of 0");
        assert_eq!(f[1].problem, "policy drop instead of accept");
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
