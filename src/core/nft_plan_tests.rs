//! Plans checked on the replay model: order, idempotence (the plan applied
//! to what was read back gives exactly the desired table, and planning again
//! finds nothing to do), element-only plans chosen exactly when only
//! elements differ, and the messages they become.

use super::*;
use crate::core::model::tests::policy;
use crate::core::model::Blocklist;
use crate::core::nft_desired::desired;
use crate::core::nft_diff::differences;
use crate::core::nft_replay::replay;
use crate::core::policy::{Action, Mode};

fn blocklist(src: &[&str], ex: &[&str], api: &[&str], mode: Mode, action: Action) -> Blocklist {
    Blocklist::from_policy(&policy(src, ex, api, mode, action))
}

fn tunnel() -> TableModel {
    desired(&blocklist(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    ))
}

fn both_dual() -> TableModel {
    desired(&blocklist(
        &["10.0.0.0/16", "fd00::/48"],
        &["10.0.9.0/24"],
        &["192.168.0.10:5443", "fd01::1"],
        Mode::Both,
        Action::Reject,
    ))
}

fn with_exempt(ex: &[&str], dynamic: bool) -> TableModel {
    let mut p = policy(
        &["10.0.0.0/16"],
        ex,
        &["192.168.0.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.dynamic_exempt = dynamic;
    desired(&Blocklist::from_policy(&p))
}

fn local_apiserver() -> TableModel {
    let mut p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.10:6443"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.local_apiservers = p.apiservers.clone();
    desired(&Blocklist::from_policy(&p))
}

/// The plan from `got` to `want` works on the replay model, gives `want`
/// exactly, and planning again finds nothing.
#[track_caller]
fn converges(want: &TableModel, got: Option<&TableModel>) -> Plan {
    let p = plan(want, got);
    let after = replay(got.cloned(), &p.ops)
        .unwrap_or_else(|e| panic!("plan refused: {e}\n{:#?}", p.ops))
        .expect("the table exists after the plan");
    assert!(
        differences(want, &after).is_empty(),
        "after the plan: {:?}",
        differences(want, &after)
    );
    assert_eq!(&after, want);
    assert_eq!(plan(want, Some(&after)).kind, PlanKind::Nothing);
    p
}

fn pos(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
    ops.iter()
        .position(f)
        .unwrap_or_else(|| panic!("op missing in {ops:#?}"))
}

fn rule_with(t: &TableModel, chain: &str, comment: &str) -> RuleModel {
    t.chains[chain]
        .rules
        .iter()
        .find(|r| r.comment().as_deref() == Some(comment))
        .unwrap()
        .clone()
}

#[test]
fn an_absent_table_is_created_whole_table_first_jumps_last() {
    let want = both_dual();
    let p = converges(&want, None);
    assert_eq!(p.kind, PlanKind::Create);
    assert!(matches!(p.ops[0], Op::Table { flags: 0, .. }));
    assert!(!p.ops.iter().any(|o| matches!(o, Op::DeleteTable | Op::FlushChain(_))));
    let last_guard_rule = p
        .ops
        .iter()
        .rposition(|o| matches!(o, Op::AddRule(c, _) if c == GUARD_CHAIN))
        .unwrap();
    let first_jump = pos(&p.ops, |o| matches!(o, Op::AddRule(c, _) if c != GUARD_CHAIN));
    assert!(
        last_guard_rule < first_jump,
        "guard is filled before anything jumps to it"
    );
}

#[test]
fn nothing_to_do_is_an_empty_plan_and_counters_do_not_count() {
    let want = tunnel();
    let mut got = want.clone();
    for r in &mut got.chains.get_mut(GUARD_CHAIN).unwrap().rules {
        for e in &mut r.exprs {
            if let Expr::Counter(t) = e {
                t.packets = 99;
            }
        }
    }
    let p = plan(&want, Some(&got));
    assert_eq!((p.kind, p.ops.len()), (PlanKind::Nothing, 0));
}

#[test]
fn a_drifted_table_is_updated_in_place_chains_emptied_before_sets_change() {
    let want = tunnel();
    let mut got = want.clone();
    got.chains.get_mut(GUARD_CHAIN).unwrap().rules.clear();
    got.sets.get_mut("sources_v4").unwrap().elements.clear();
    let p = converges(&want, Some(&got));
    assert_eq!(p.kind, PlanKind::InPlace);
    assert!(
        !p.ops.contains(&Op::DeleteTable),
        "never delete the table: {:#?}",
        p.ops
    );
    let flush_guard = pos(&p.ops, |o| *o == Op::FlushChain(GUARD_CHAIN.into()));
    let fill_set = pos(&p.ops, |o| matches!(o, Op::AddElements(s, _) if s == "sources_v4"));
    let rule = pos(&p.ops, |o| matches!(o, Op::AddRule(c, _) if c == GUARD_CHAIN));
    let jump = pos(&p.ops, |o| matches!(o, Op::AddRule(c, _) if c == "forward"));
    assert!(flush_guard < fill_set && fill_set < rule && rule < jump, "{:#?}", p.ops);
    // Every existing chain is emptied and refilled, so no rule or jump is doubled.
    assert!(p.ops.contains(&Op::FlushChain("forward".into())));
}

#[test]
fn a_kept_set_with_elements_is_flushed_and_refilled() {
    let want = tunnel();
    let mut got = want.clone();
    got.chains.get_mut("forward").unwrap().rules.clear();
    let p = converges(&want, Some(&got));
    let flush = pos(&p.ops, |o| *o == Op::FlushSet("sources_v4".into()));
    let fill = pos(&p.ops, |o| matches!(o, Op::AddElements(s, _) if s == "sources_v4"));
    assert!(flush < fill);
    assert!(!p.ops.contains(&Op::DeleteSet("sources_v4".into())));
}

#[test]
fn what_the_policy_no_longer_has_is_deleted() {
    // From both modes, v6, exempt to tunnel v4: the output chain and the other sets go.
    let want = tunnel();
    let got = both_dual();
    let p = converges(&want, Some(&got));
    assert!(p.ops.contains(&Op::DeleteChain("output".into())));
    for set in ["exempt_v4", "sources_v6", "api_any_v6"] {
        assert!(p.ops.contains(&Op::DeleteSet(set.into())), "{set}: {:#?}", p.ops);
    }
    assert!(!p.ops.contains(&Op::DeleteSet("sources_v4".into())));
    // Deletions come after the flushes that release them, before anything is declared.
    let last_flush = p.ops.iter().rposition(|o| matches!(o, Op::FlushChain(_))).unwrap();
    let first_delete = pos(&p.ops, |o| matches!(o, Op::DeleteSet(_) | Op::DeleteChain(_)));
    let first_add = pos(&p.ops, |o| matches!(o, Op::AddSet(..)));
    assert!(last_flush < first_delete && first_delete < first_add);
    // And the way back.
    converges(&got, Some(&want));
}

#[test]
fn foreign_and_reshaped_objects_are_deleted_and_ours_declared_again() {
    let want = tunnel();
    let mut got = want.clone();
    // A foreign chain holding a rule, a foreign set, a chain of another priority, a set of other flags.
    let foreign_rule = RuleModel::new(
        vec![Expr::Immediate {
            dreg: REG_VERDICT,
            verdict: Verdict::Accept,
        }],
        "theirs",
    );
    got.chains.insert(
        "weird".into(),
        ChainModel {
            rules: vec![foreign_rule.clone()],
            ..Default::default()
        },
    );
    got.sets.insert(
        "foo".into(),
        SetModel {
            flags: 0,
            ..want.sets["api_port_v4"].clone()
        },
    );
    got.chains.get_mut("forward").unwrap().base.as_mut().unwrap().priority = 10;
    got.sets.get_mut("sources_v4").unwrap().flags = 0;
    got.chains.get_mut(GUARD_CHAIN).unwrap().rules.push(foreign_rule);
    let p = converges(&want, Some(&got));
    assert_eq!(p.kind, PlanKind::InPlace);
    assert!(
        pos(&p.ops, |o| *o == Op::FlushChain("weird".into())) < pos(&p.ops, |o| *o == Op::DeleteChain("weird".into()))
    );
    assert!(p.ops.contains(&Op::DeleteSet("foo".into())));
    let del = pos(&p.ops, |o| *o == Op::DeleteChain("forward".into()));
    let add = pos(&p.ops, |o| matches!(o, Op::AddChain(c, _) if c == "forward"));
    assert!(del < add);
    let del_set = pos(&p.ops, |o| *o == Op::DeleteSet("sources_v4".into()));
    let add_set = pos(&p.ops, |o| matches!(o, Op::AddSet(s, _) if s == "sources_v4"));
    assert!(del_set < add_set);
}

#[test]
fn a_chain_policy_is_set_in_place_without_deleting_the_chain() {
    let want = tunnel();
    let mut got = want.clone();
    got.chains.get_mut("forward").unwrap().base.as_mut().unwrap().policy = NF_DROP;
    let p = converges(&want, Some(&got));
    assert!(!p.ops.contains(&Op::DeleteChain("forward".into())), "{:#?}", p.ops);
}

#[test]
fn tampered_rules_are_replaced_in_place() {
    let want = both_dual();
    assert!(want.chains[GUARD_CHAIN].rules.len() > 2);
    let ours = rule_with(&want, GUARD_CHAIN, "block-tcp-port-v4");
    let negate = |r: &RuleModel| {
        let mut r = r.clone();
        for e in &mut r.exprs {
            if let Expr::Lookup { set, flags, .. } = e {
                if set == "sources_v4" {
                    *flags = LOOKUP_F_INV;
                }
            }
        }
        r
    };
    let mut cases: Vec<TableModel> = Vec::new();
    // Negated match.
    let mut got = want.clone();
    *got.chains.get_mut(GUARD_CHAIN).unwrap().rules.last_mut().unwrap() = negate(&ours);
    cases.push(got);
    // An extra copy with our comment, and the rule moved (deleted and added at the end).
    let mut got = want.clone();
    got.chains.get_mut(GUARD_CHAIN).unwrap().rules.push(ours.clone());
    cases.push(got);
    let mut got = want.clone();
    got.chains.get_mut(GUARD_CHAIN).unwrap().rules.rotate_left(1);
    cases.push(got);
    // The jump gone, the table made dormant.
    let mut got = want.clone();
    got.chains.get_mut("forward").unwrap().rules.clear();
    cases.push(got);
    let mut got = want.clone();
    got.flags = TABLE_F_DORMANT;
    cases.push(got);
    for got in cases {
        let p = converges(&want, Some(&got));
        assert_eq!(p.kind, PlanKind::InPlace, "{:#?}", p.ops);
    }
}

#[test]
fn a_foreign_table_comment_needs_the_table_recreated_in_one_transaction() {
    let want = tunnel();
    let mut got = want.clone();
    got.userdata = comment_udata("someone else's");
    let p = converges(&want, Some(&got));
    assert_eq!(p.kind, PlanKind::Recreate);
    assert_eq!(p.ops[0], Op::DeleteTable);
    assert!(matches!(p.ops[1], Op::Table { .. }));
}

#[test]
fn element_changes_touch_only_the_changed_elements() {
    let before = with_exempt(&["10.0.1.5/32", "10.0.9.9/32"], true);
    let after = with_exempt(&["10.0.9.9/32", "10.0.1.7/32"], true);
    let p = converges(&after, Some(&before));
    assert_eq!(p.kind, PlanKind::Elements);
    let key = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec();
    let start = |s: &str| Element {
        key: key(s),
        flags: 0,
        unknown: Vec::new(),
    };
    let end = |s: &str| Element {
        flags: ELEM_F_INTERVAL_END,
        ..start(s)
    };
    assert_eq!(
        p.ops,
        vec![
            Op::DeleteElements("exempt_v4".into(), [start("10.0.1.5"), end("10.0.1.6")].into()),
            Op::AddElements("exempt_v4".into(), [start("10.0.1.7"), end("10.0.1.8")].into()),
        ]
    );
    // To empty and back: still only elements, because the set stays.
    let empty = with_exempt(&[], true);
    let p = converges(&empty, Some(&before));
    assert_eq!(p.kind, PlanKind::Elements);
    assert!(
        p.ops.iter().all(|o| matches!(o, Op::DeleteElements(..))),
        "{:#?}",
        p.ops
    );
    assert_eq!(converges(&before, Some(&empty)).kind, PlanKind::Elements);
    // Aggregation: two neighbours become one element, deletions first.
    let one = with_exempt(&["10.0.1.5/32"], true);
    let pair = with_exempt(&["10.0.1.4/32", "10.0.1.5/32"], true);
    let p = converges(&pair, Some(&one));
    assert!(matches!(p.ops[0], Op::DeleteElements(..)), "{:#?}", p.ops);
    // Endpoint changes are element updates too.
    let moved = desired(&blocklist(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.11:5443"],
        Mode::Tunnel,
        Action::Reject,
    ));
    assert_eq!(converges(&moved, Some(&tunnel())).kind, PlanKind::Elements);
}

#[test]
fn element_plans_are_chosen_exactly_when_only_elements_differ() {
    let want = with_exempt(&["10.0.1.6/32"], true);
    let seen = with_exempt(&["10.0.1.5/32"], true);
    assert!(element_plan(&want, &seen).is_some());
    assert!(element_plan(&want, &want).is_none(), "nothing to change");
    // A rule change (a static exempt going empty drops its rule).
    let (a, b) = (with_exempt(&[], false), with_exempt(&["10.0.1.5/32"], false));
    assert!(element_plan(&a, &b).is_none());
    assert_eq!(converges(&a, Some(&b)).kind, PlanKind::InPlace);
    // A missing set, a set of another shape, a flushed chain, a changed policy, table flags.
    let mut gone = seen.clone();
    gone.sets.remove("exempt_v4");
    let mut reshaped = seen.clone();
    reshaped.sets.get_mut("exempt_v4").unwrap().flags = 0;
    let mut flushed = seen.clone();
    flushed.chains.get_mut(GUARD_CHAIN).unwrap().rules.clear();
    let mut policy = seen.clone();
    policy.chains.get_mut("forward").unwrap().base.as_mut().unwrap().policy = NF_DROP;
    let mut dormant = seen.clone();
    dormant.flags = TABLE_F_DORMANT;
    let mut extra_set = seen.clone();
    extra_set.sets.insert("foo".into(), seen.sets["exempt_v4"].clone());
    for got in [gone, reshaped, flushed, policy, dormant, extra_set] {
        assert!(element_plan(&want, &got).is_none());
        assert_eq!(converges(&want, Some(&got)).kind, PlanKind::InPlace);
    }
}

#[test]
fn hooks_and_the_local_ports_set_come_and_go() {
    let local = local_apiserver();
    assert!(local.chains.contains_key("input") && local.sets.contains_key(crate::core::nft_desired::LOCAL_PORTS_SET));
    let p = converges(&tunnel(), Some(&local));
    assert!(p.ops.contains(&Op::DeleteChain("input".into())));
    assert!(p
        .ops
        .contains(&Op::DeleteSet(crate::core::nft_desired::LOCAL_PORTS_SET.into())));
    converges(&local, Some(&tunnel()));
    converges(&local, None);
}

#[test]
fn every_shape_converges_from_every_other() {
    let shapes = [
        tunnel(),
        both_dual(),
        with_exempt(&["10.0.1.5/32"], true),
        with_exempt(&[], false),
        local_apiserver(),
        desired(&blocklist(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10"],
            Mode::Both,
            Action::Drop,
        )),
    ];
    for want in &shapes {
        converges(want, None);
        for got in &shapes {
            converges(want, Some(got));
        }
    }
}

#[test]
fn anonymous_sets_go_with_their_rules() {
    let want = tunnel();
    let mut got = want.clone();
    got.sets.insert(
        "__set0".into(),
        SetModel {
            flags: SET_F_ANONYMOUS | SET_F_CONSTANT,
            ..want.sets["sources_v4"].clone()
        },
    );
    let p = plan(&want, Some(&got));
    assert!(!p.ops.contains(&Op::DeleteSet("__set0".into())), "{:#?}", p.ops);
}

#[test]
fn ops_become_the_nf_tables_messages_nft_would_send() {
    use netlink_packet_netfilter::nftables::NfTablesMessage as M;
    let want = tunnel();
    let mut got = want.clone();
    got.chains.get_mut(GUARD_CHAIN).unwrap().rules.clear();
    let p = plan(&want, Some(&got));
    let msgs = messages(&p.ops);
    assert_eq!(msgs.len(), p.ops.len());
    assert!(matches!(&msgs[0], M::NewTable(_)));
    // A flush names the chain and no rule handle; a set flush names no element.
    let flush = msgs.iter().find_map(|m| match m {
        M::DeleteRule(r) => Some(r),
        _ => None,
    });
    assert_eq!(
        flush.unwrap().attributes,
        vec![
            RuleAttribute::Table(TABLE_NAME.into()),
            RuleAttribute::Chain("forward".into())
        ]
    );
    let set_flush = msgs.iter().find_map(|m| match m {
        M::DeleteSetElement(s) => Some(s),
        _ => None,
    });
    assert_eq!(set_flush.unwrap().attributes.len(), 2);
    // Elements deleted carry their interval-end flags like the ones added.
    let before = with_exempt(&["10.0.1.5/32"], true);
    let after = with_exempt(&[], true);
    let msgs = messages(&plan(&after, Some(&before)).ops);
    match &msgs[..] {
        [M::DeleteSetElement(m)] => {
            let add = crate::core::nft_wire::elements_message("exempt_v4", &before.sets["exempt_v4"]);
            let M::NewSetElement(a) = add else { panic!() };
            assert_eq!(m.attributes, a.attributes);
        }
        other => panic!("{other:?}"),
    }
}
