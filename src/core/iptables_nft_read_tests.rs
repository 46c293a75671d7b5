//! Unit tests of `iptables_nft_read`: what the netlink bytes decide alone,
//! and where they hand over to the text read-back.

use super::*;
use crate::core::drift::{diff_iptables, DriftKind};
use netlink_packet_netfilter::nftables::{ChainAttribute, ChainMessage, HookNumber, RuleAttribute};

fn expr(name: &str, attrs: Vec<(u16, Vec<u8>)>) -> ListAttribute<ExpressionAttribute> {
    ListAttribute::Element(vec![
        ExpressionAttribute::Name(name.into()),
        ExpressionAttribute::Data(Expressions::Other {
            expression_type: name.into(),
            attributes: attrs.into_iter().map(|(k, v)| DefaultNla::new(k, v)).collect(),
        }),
    ])
}

/// A rule of chain `chain` with handle `handle`, matching `value`, counting `packets`.
fn rule(chain: &str, handle: u64, value: u8, packets: u64) -> RuleMessage {
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table("filter".into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Handle(handle),
            RuleAttribute::Expressions(vec![
                expr("cmp", vec![(1, vec![value])]),
                expr(
                    "counter",
                    vec![
                        (1, (packets * 60).to_be_bytes().to_vec()),
                        (2, packets.to_be_bytes().to_vec()),
                    ],
                ),
            ]),
            RuleAttribute::UserData(vec![1, 2, 3]),
        ],
    }
}

/// Hook chain FORWARD as the kernel reports it: a base chain at `hook_number` (None: a regular chain).
fn forward_chain(hook_number: Option<u32>) -> ChainMessage {
    let mut attributes = vec![
        ChainAttribute::Table("filter".into()),
        ChainAttribute::Name("FORWARD".into()),
    ];
    if let Some(n) = hook_number {
        attributes.push(ChainAttribute::Hook(vec![
            ChainHook::Number(HookNumber::Other(n)),
            ChainHook::Priority(0),
        ]));
    }
    ChainMessage { attributes }
}

/// FORWARD, the built-in chain, with `first` as its rule 1.
fn forward(first: Option<RuleMessage>) -> Head {
    Head {
        chain: Some(forward_chain(Some(2))),
        first,
    }
}

/// Our jump rule in hook chain `chain`.
fn jump(chain: &str, handle: u64) -> RuleMessage {
    rule(chain, handle, 0xee, 7)
}

fn want() -> IptDesired {
    IptDesired {
        rules: vec![
            "-A APISERVER-GUARD -s 10.0.0.0/16 -j DROP".into(),
            "-A APISERVER-GUARD -j RETURN".into(),
        ],
        hooks: vec![Hook::Forward],
    }
}

/// The kernel holding exactly what we wrote (rule values 1 and 2, our jump at rule 1 of FORWARD).
fn in_sync() -> ChainRead {
    ChainRead {
        generation: 9,
        table_flags: Some(0),
        table_handle: Some(1),
        // Use count: our two rules and the jump.
        chain: Some((
            3,
            vec![rule("APISERVER-GUARD", 4, 1, 0), rule("APISERVER-GUARD", 5, 2, 0)],
        )),
        heads: vec![forward(Some(jump("FORWARD", 6)))],
    }
}

fn reference() -> Reference {
    learn(&want(), &in_sync()).expect("learnt")
}

#[test]
fn rule_bytes_ignore_counter_values_handles_and_chain_but_nothing_else() {
    let a = rule_bytes(&rule("APISERVER-GUARD", 4, 1, 0));
    assert_eq!(a, rule_bytes(&rule("APISERVER-GUARD", 4, 1, 123_456)), "counter values");
    assert_eq!(a, rule_bytes(&rule("FORWARD", 99, 1, 0)), "handle and chain");
    assert_ne!(
        a,
        rule_bytes(&rule("APISERVER-GUARD", 4, 2, 0)),
        "a changed match value"
    );
    let mut no_userdata = rule("APISERVER-GUARD", 4, 1, 0);
    no_userdata
        .attributes
        .retain(|a| !matches!(a, RuleAttribute::UserData(_)));
    assert_ne!(a, rule_bytes(&no_userdata), "userdata");
    let mut extra = rule("APISERVER-GUARD", 4, 1, 0);
    if let RuleAttribute::Expressions(list) = &mut extra.attributes[3] {
        list.push(expr("immediate", vec![(1, vec![0])]));
    }
    assert_ne!(a, rule_bytes(&extra), "an extra expression");
}

#[test]
fn learning_needs_our_chain_and_our_jump_at_rule_1_of_every_wanted_hook() {
    let r = reference();
    assert_eq!(r.key, key(&want()));
    assert_eq!(r.rules.len(), 2);
    let mut no_jump = in_sync();
    no_jump.heads = vec![forward(None)];
    assert_eq!(learn(&want(), &no_jump), None);
    let mut no_chain = in_sync();
    no_chain.chain = None;
    assert_eq!(learn(&want(), &no_chain), None);
    let mut two = want();
    two.hooks.push(Hook::Output);
    let mut unlike = in_sync();
    unlike.heads.push(Head {
        chain: Some(forward_chain(Some(3))),
        first: Some(rule("OUTPUT", 8, 3, 0)),
    });
    assert_eq!(learn(&two, &unlike), None, "two hooks whose rule 1 differ");
}

#[test]
fn bytes_equal_to_the_reference_are_in_sync_whatever_the_counters() {
    let mut read = in_sync();
    read.chain = Some((
        3,
        vec![rule("APISERVER-GUARD", 4, 1, 50), rule("APISERVER-GUARD", 5, 2, 9)],
    ));
    let seen = derive(Some(&want()), Some(&reference()), &read).expect("decided");
    assert_eq!(seen.chain, Some(want().rules));
    assert_eq!(seen.jumps[&Hook::Forward], JumpState { at_top: true, count: 1 });
    assert!(diff_iptables(Some(&want()), &seen, "iptables-nft").is_empty());
}

#[test]
fn a_changed_extra_missing_or_moved_rule_of_ours_goes_to_the_text_read_back() {
    let r = reference();
    let ours = |rules: Vec<RuleMessage>| ChainRead {
        chain: Some((rules.len() as u32 + 1, rules)),
        ..in_sync()
    };
    let a = rule("APISERVER-GUARD", 4, 1, 0);
    let b = rule("APISERVER-GUARD", 5, 2, 0);
    for (what, read) in [
        ("changed", ours(vec![a.clone(), rule("APISERVER-GUARD", 5, 3, 0)])),
        (
            "extra",
            ours(vec![a.clone(), b.clone(), rule("APISERVER-GUARD", 7, 3, 0)]),
        ),
        ("missing", ours(vec![a.clone()])),
        ("moved", ours(vec![b.clone(), a.clone()])),
    ] {
        assert_eq!(derive(Some(&want()), Some(&r), &read), None, "{what}");
    }
    // Without a reference, or with one learnt for another wanted state, the bytes decide nothing about rules.
    assert_eq!(derive(Some(&want()), None, &in_sync()), None);
    let mut other = want();
    other.rules.pop();
    assert_eq!(derive(Some(&other), Some(&r), &in_sync()), None);
}

#[test]
fn a_flush_of_everything_is_decided_without_text() {
    // `iptables-nft -F`: our chain empty, FORWARD empty, nothing jumps to us.
    let read = ChainRead {
        generation: 10,
        table_flags: Some(0),
        table_handle: Some(1),
        chain: Some((0, vec![])),
        heads: vec![forward(None)],
    };
    for reference in [Some(reference()), None] {
        let seen = derive(Some(&want()), reference.as_ref(), &read).expect("decided");
        let kinds: Vec<DriftKind> = diff_iptables(Some(&want()), &seen, "iptables-nft")
            .into_iter()
            .map(|d| d.kind)
            .collect();
        assert_eq!(kinds, vec![DriftKind::ChainFlushed, DriftKind::JumpMissing]);
    }
}

#[test]
fn our_chain_flushed_under_a_good_jump_keeps_the_jump() {
    let read = ChainRead {
        chain: Some((1, vec![])),
        ..in_sync()
    };
    let seen = derive(Some(&want()), Some(&reference()), &read).expect("decided");
    assert_eq!(seen.chain, Some(vec![]));
    assert_eq!(seen.jumps[&Hook::Forward], JumpState { at_top: true, count: 1 });
}

#[test]
fn a_missing_chain_and_a_foreign_rule_1_are_named_without_text() {
    let read = ChainRead {
        generation: 3,
        table_flags: Some(0),
        table_handle: Some(1),
        chain: None,
        heads: vec![forward(Some(rule("FORWARD", 77, 9, 0)))],
    };
    let seen = derive(Some(&want()), None, &read).expect("decided");
    assert_eq!(seen.chain, None);
    assert_eq!(seen.jumps[&Hook::Forward], JumpState::default());
    let drift = diff_iptables(Some(&want()), &seen, "iptables-nft");
    assert_eq!(drift[0].kind, DriftKind::ChainMissing);
    assert_eq!(drift[1].kind, DriftKind::JumpMissing);
    assert!(
        drift[1]
            .problem
            .contains("rule 1 is a rule apiserver-guard did not write, nf_tables handle 77"),
        "{}",
        drift[1].problem
    );
}

#[test]
fn a_jump_anywhere_but_rule_1_goes_to_the_text_read_back() {
    let r = reference();
    // Displaced: a foreign rule 1, and our chain still referenced once.
    let displaced = ChainRead {
        heads: vec![forward(Some(rule("FORWARD", 77, 9, 0)))],
        ..in_sync()
    };
    assert_eq!(derive(Some(&want()), Some(&r), &displaced), None);
    // Duplicated: our jump at rule 1 and another one further down (use count 2 + 2 rules).
    let mut twice = in_sync();
    twice.chain.as_mut().unwrap().0 = 4;
    assert_eq!(derive(Some(&want()), Some(&r), &twice), None);
    // Without a reference, a rule 1 could be our jump as long as anything jumps to us.
    let unknown = ChainRead {
        chain: Some((1, vec![])),
        ..in_sync()
    };
    assert_eq!(derive(Some(&want()), None, &unknown), None);
    // A use count below the chain's own rules is not a state the kernel reports: not decided.
    let mut odd = in_sync();
    odd.chain.as_mut().unwrap().0 = 1;
    assert_eq!(derive(Some(&want()), Some(&r), &odd), None);
}

#[test]
fn nothing_wanted_is_decided_only_when_nothing_of_ours_exists() {
    let none = ChainRead::default();
    assert_eq!(derive(None, None, &none), Some(IptObserved::default()));
    assert_eq!(derive(None, Some(&reference()), &in_sync()), None);
    // A read that does not match the wanted hooks is not used.
    let short = ChainRead {
        heads: vec![],
        ..in_sync()
    };
    assert_eq!(derive(Some(&want()), Some(&reference()), &short), None);
}

#[test]
fn a_hook_chain_that_is_not_hooked_there_is_reported_whatever_its_rules() {
    for (what, chain) in [
        ("a regular chain named FORWARD", forward_chain(None)),
        ("a base chain named FORWARD at the input hook", forward_chain(Some(1))),
    ] {
        let read = ChainRead {
            heads: vec![Head {
                chain: Some(chain),
                first: Some(jump("FORWARD", 6)),
            }],
            ..in_sync()
        };
        assert_eq!(unhooked(&want().hooks, &read), [Hook::Forward].into(), "{what}");
        assert_eq!(learn(&want(), &read), None, "{what}: nothing learnt from it");
        let seen = derive(Some(&want()), Some(&reference()), &read).expect("decided");
        let drift = diff_iptables(Some(&want()), &seen, "iptables-nft");
        assert_eq!(drift.len(), 1, "{what}: {drift:?}");
        assert_eq!(drift[0].kind, DriftKind::ChainChanged);
        assert!(
            drift[0].problem.contains("not the built-in chain"),
            "{}",
            drift[0].problem
        );
    }
    // An absent FORWARD is not "unhooked": the jump is missing, and apply creates the chain.
    let absent = ChainRead {
        heads: vec![Head::default()],
        ..in_sync()
    };
    assert!(unhooked(&want().hooks, &absent).is_empty());
}

#[test]
fn a_reference_survives_its_text_form_and_nothing_else_reads_as_one() {
    let r = reference();
    assert_eq!(Reference::from_text(&r.to_text()), Some(r.clone()));
    let text = r.to_text();
    assert_eq!(Reference::from_text(&text.replace("jump ", "jump x")), None, "not hex");
    assert_eq!(
        Reference::from_text(&text.replacen("reference 1", "reference 2", 1)),
        None,
        "another format"
    );
    assert_eq!(Reference::from_text(&format!("{text}garbage\n")), None, "a stray line");
    assert_eq!(Reference::from_text(""), None);
}

#[test]
fn a_dormant_table_is_reported_and_teaches_nothing() {
    let read = ChainRead {
        table_flags: Some(1),
        table_handle: Some(1),
        ..in_sync()
    };
    assert!(dormant(&read));
    assert_eq!(learn(&want(), &read), None);
    let seen = derive(Some(&want()), Some(&reference()), &read).expect("decided");
    let drift = diff_iptables(Some(&want()), &seen, "iptables-nft");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].object, "iptables-nft table filter");
    assert!(drift[0].problem.contains("dormant"), "{}", drift[0].problem);
    assert!(!dormant(&ChainRead {
        table_flags: Some(0),
        table_handle: Some(1),
        ..in_sync()
    }));
}

/// A hook chain whose use count says it holds rules while no rule 1 came
/// back (one too large for the dump): never "no rule there".
#[test]
fn a_hook_chain_with_rules_but_no_rule_read_is_not_empty() {
    let mut read = in_sync();
    let mut chain = forward_chain(Some(2));
    chain.attributes.push(ChainAttribute::Use(1));
    read.heads = vec![Head {
        chain: Some(chain.clone()),
        first: None,
    }];
    assert_eq!(derive(Some(&want()), Some(&reference()), &read), None);
    assert_eq!(
        hidden_change(&want(), &reference(), &read).as_deref(),
        Some("our jump in FORWARD")
    );
    // Truly empty (use 0): nothing there, as before.
    chain.attributes.pop();
    chain.attributes.push(ChainAttribute::Use(0));
    read.heads = vec![Head {
        chain: Some(chain),
        first: None,
    }];
    assert_eq!(hidden_change(&want(), &reference(), &read), None);
}
