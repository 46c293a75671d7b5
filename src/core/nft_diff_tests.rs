//! Tamper matrix: each change to a correct table is reported once, in words
//! naming the object; counters are not changes.

use super::*;
use crate::core::model::tests::policy;
use crate::core::model::Blocklist;
use crate::core::nft_desired::desired;
use crate::core::policy::{Action, Mode};

fn want() -> TableModel {
    let mut p = policy(
        &["10.0.0.0/16"],
        &["10.0.9.0/24"],
        &["192.168.0.10:5443", "192.168.0.11"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.local_apiservers = p.apiservers[..1].to_vec();
    let mut t = desired(&Blocklist::from_policy(&p));
    t.flags = TABLE_F_OWNER | TABLE_F_PERSIST;
    t
}

fn diff(tamper: impl FnOnce(&mut TableModel)) -> Vec<String> {
    let w = want();
    let mut g = w.clone();
    tamper(&mut g);
    differences(&w, &g).iter().map(ToString::to_string).collect()
}

fn guard(t: &mut TableModel) -> &mut Vec<RuleModel> {
    &mut t.chains.get_mut("guard").unwrap().rules
}

#[test]
fn an_equal_table_and_counters_are_no_difference() {
    assert!(diff(|_| {}).is_empty());
    assert!(diff(|t| {
        for r in guard(t) {
            for e in &mut r.exprs {
                if let Expr::Counter(c) = e {
                    c.packets = 99;
                    c.bytes = 9999;
                }
            }
        }
    })
    .is_empty());
}

#[test]
fn a_negated_match_is_named() {
    let d = diff(|t| {
        if let Expr::Lookup { flags, .. } = &mut guard(t)[1].exprs[3] {
            *flags = LOOKUP_F_INV;
        }
    });
    assert_eq!(
        d,
        ["rule 2 of chain guard (block-tcp-port-v4): match on ip saddr is negated (!=) instead of ="]
    );
}

#[test]
fn a_changed_left_hand_side_is_named() {
    let d = diff(|t| {
        if let Expr::Payload { offset, .. } = &mut guard(t)[1].exprs[2] {
            *offset = 16;
        }
    });
    assert_eq!(
        d,
        ["rule 2 of chain guard (block-tcp-port-v4): match on ip daddr instead of ip saddr (against @sources_v4)"]
    );
}

#[test]
fn a_changed_verdict_is_named() {
    let d = diff(|t| {
        let r = &mut guard(t)[1];
        *r.exprs.last_mut().unwrap() = Expr::Immediate {
            dreg: REG_VERDICT,
            verdict: Verdict::Accept,
        };
    });
    assert_eq!(
        d,
        ["rule 2 of chain guard (block-tcp-port-v4): \"accept\" instead of \"reject with tcp reset\""]
    );
}

#[test]
fn an_extra_rule_with_our_comment_and_a_foreign_rule_are_told_apart() {
    let d = diff(|t| {
        let copy = guard(t)[1].clone();
        guard(t).insert(0, copy);
        let foreign = RuleModel::new(
            vec![Expr::Immediate {
                dreg: REG_VERDICT,
                verdict: Verdict::Accept,
            }],
            "hole",
        );
        guard(t).insert(3, foreign);
    });
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(
        d[0].starts_with("chain guard, position 1: an extra rule with our comment \"block-tcp-port-v4\""),
        "{d:#?}"
    );
    assert_eq!(d[1], "chain guard, position 4: a foreign rule: accept comment \"hole\"");
}

#[test]
fn a_moved_rule_is_named() {
    let d = diff(|t| guard(t).swap(0, 1));
    assert_eq!(d, ["rule 1 of chain guard (exempt-v4): moved to position 2"]);
}

#[test]
fn a_missing_rule_and_a_removed_comment() {
    let d = diff(|t| {
        guard(t).remove(2);
        guard(t)[0].userdata.clear();
    });
    assert_eq!(
        d,
        [
            "rule 1 of chain guard: comment none instead of \"exempt-v4\"",
            "rule 3 of chain guard (block-tcp-v4): missing (ip saddr @sources_v4 ip daddr @api_any_v4 meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset comment \"block-tcp-v4\")",
        ]
    );
}

#[test]
fn chain_priority_policy_and_hook_changes_are_named() {
    let d = diff(|t| {
        let b = t.chains.get_mut("forward").unwrap().base.as_mut().unwrap();
        b.priority = 10;
        b.policy = NF_DROP;
        t.chains.get_mut("input").unwrap().base.as_mut().unwrap().hook = HOOK_FORWARD;
    });
    assert_eq!(
        d,
        [
            "chain forward: priority 10 instead of 0",
            "chain forward: policy drop instead of accept",
            "chain input: hook forward instead of input"
        ]
    );
}

#[test]
fn set_flags_key_and_elements_changes_are_named() {
    let d = diff(|t| {
        let s = t.sets.get_mut("exempt_v4").unwrap();
        s.flags = 0;
        let k = t.sets.get_mut("api_any_v4").unwrap();
        k.key = KeyType::Ipv6Addr;
    });
    assert!(
        d.contains(&"set exempt_v4: flags: interval missing".to_string()),
        "{d:#?}"
    );
    assert!(
        d.contains(&"set api_any_v4: key type ipv6_addr instead of ipv4_addr".to_string()),
        "{d:#?}"
    );
    let d = diff(|t| {
        let nets: Vec<ipnet::IpNet> = vec!["10.1.0.0/16".parse().unwrap()];
        t.sets.get_mut("sources_v4").unwrap().elements = crate::core::nft_desired::interval_elements(&nets);
    });
    assert_eq!(d, ["set sources_v4: elements 10.1.0.0/16 added, 10.0.0.0/16 missing"]);
}

#[test]
fn foreign_and_missing_objects_and_table_flags_are_named() {
    let d = diff(|t| {
        t.flags = TABLE_F_PERSIST;
        t.sets.remove("api_any_v4");
        let foo = t.sets["exempt_v4"].clone();
        t.sets.insert("foo".into(), foo);
        t.chains.insert("weird".into(), ChainModel::default());
        t.chains.remove("input");
        t.userdata = comment_udata("hello");
    });
    assert_eq!(
        d,
        [
            "table flags: owner missing",
            "table comment: \"hello\" instead of \"managed by apiserver-guard; edits are reverted\"",
            "set api_any_v4: missing",
            "set foo: not ours (unexpected set)",
            "chain input: missing",
            "chain weird: not ours (unexpected chain, 0 rules)",
        ]
    );
}

#[test]
fn unknown_attributes_and_raw_expressions_are_differences() {
    let d = diff(|t| {
        t.sets.get_mut("sources_v4").unwrap().unknown.push(RawAttr {
            kind: 11,
            value: vec![0, 0, 0, 1],
        });
        guard(t)[0].exprs.insert(
            4,
            Expr::Raw {
                name: "log".into(),
                attrs: vec![],
            },
        );
    });
    assert!(
        d.iter()
            .any(|s| s.starts_with("set sources_v4: unexpected attributes [attribute 11 = 0x00000001]")),
        "{d:#?}"
    );
    assert!(
        d.iter().any(|s| s.starts_with("rule 1 of chain guard (exempt-v4): \"")),
        "{d:#?}"
    );
}

fn logged() -> TableModel {
    let mut p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.log_group = Some(1443);
    desired(&Blocklist::from_policy(&p))
}

fn logged_diff(tamper: impl FnOnce(&mut TableModel)) -> Vec<String> {
    let w = logged();
    let mut g = w.clone();
    tamper(&mut g);
    differences(&w, &g).iter().map(ToString::to_string).collect()
}

#[test]
fn sources_the_kernel_adds_to_the_meter_are_no_difference() {
    let d = logged_diff(|t| {
        let m = t.sets.get_mut("flows_v4").unwrap();
        m.learned.0.insert(Element {
            key: vec![3, 0, 0, 0, 10, 0, 1, 2, 0x9c, 0x40, 0, 0],
            flags: 0,
            unknown: vec![RawAttr {
                kind: 4,
                value: vec![0; 8],
            }],
        });
    });
    assert!(d.is_empty(), "{d:?}");
    let w = logged();
    let mut g = w.clone();
    g.sets.get_mut("flows_v4").unwrap().learned.0.insert(Element {
        key: vec![3, 0, 0, 0, 10, 0, 1, 3, 0x9c, 0x41, 0, 0],
        flags: 0,
        unknown: vec![],
    });
    assert_eq!(
        crate::core::nft_plan::plan(&w, Some(&g)).kind,
        crate::core::nft_plan::PlanKind::Nothing
    );
}

/// The rule of chain block-tcp-port-v4 named `comment`.
fn log_rule<'a>(t: &'a mut TableModel, comment: &str) -> &'a mut RuleModel {
    let chain = t.chains.get_mut("block-tcp-port-v4").unwrap();
    chain
        .rules
        .iter_mut()
        .find(|r| r.comment().as_deref() == Some(comment))
        .unwrap()
}

#[test]
fn the_meter_shape_and_the_log_statement_are_differences() {
    let d = logged_diff(|t| t.sets.get_mut("flows_v4").unwrap().timeout_ms = 3_600_000);
    assert_eq!(d, ["set flows_v4: timeout 1h instead of 1m"]);
    let d = logged_diff(|t| t.sets.get_mut("flows_v4").unwrap().size = 10);
    assert_eq!(d, ["set flows_v4: size 10 instead of 65535"]);
    let d = logged_diff(|t| t.sets.get_mut("flows_v4").unwrap().flags = SET_F_TIMEOUT);
    assert_eq!(d, ["set flows_v4: flags: dynamic missing"]);
    let d = logged_diff(|t| {
        for e in &mut log_rule(t, "log-block-tcp-port-v4-flow").exprs {
            if let Expr::Log { group, .. } = e {
                *group = 5;
            }
        }
    });
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].contains("log-block-tcp-port-v4-flow") && d[0].contains("group 5") && d[0].contains("group 1443"),
        "{d:?}"
    );
    let d = logged_diff(|t| {
        for e in &mut log_rule(t, "log-block-tcp-port-v4-flow-new-source").exprs {
            if let Expr::Dynset { exprs, set, .. } = e {
                if set != "flows_v4" {
                    continue;
                }
                exprs[0] = Expr::Limit {
                    rate: 1000,
                    unit_secs: 1,
                    burst: 20,
                    kind: LIMIT_PKTS,
                    flags: 0,
                };
            }
        }
    });
    assert!(d.len() == 1 && d[0].contains("limit rate 1000/second"), "{d:?}");
}
