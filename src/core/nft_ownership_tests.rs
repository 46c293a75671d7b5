//! Ownership decided and planned for every state the table can be read
//! back in: absent, ours, an orphan, unowned, held by another socket,
//! unreadable, with foreign table attributes; checked on the replay model
//! so a plan is also proven to end in exactly the wanted table.

use super::*;
use crate::core::model::tests::policy;
use crate::core::model::Blocklist;
use crate::core::nft_desired::desired;
use crate::core::nft_model::{comment_udata, TABLE_F_DORMANT};
use crate::core::nft_replay::replay;
use crate::core::policy::{Action, Mode};

const ME: u32 = 4242;
const OTHER: u32 = 777;
const BOTH: u32 = TABLE_F_OWNER | TABLE_F_PERSIST;

fn table() -> TableModel {
    desired(&Blocklist::from_policy(&policy(
        &["10.0.0.0/16", "fd00::/48"],
        &["10.0.9.0/24"],
        &["192.168.0.10:5443"],
        Mode::Both,
        Action::Reject,
    )))
}

fn with_flags(flags: u32) -> TableModel {
    let mut t = table();
    t.flags = flags;
    t
}

fn batch(s: Steps) -> Plan {
    match s {
        Steps::Batch(p) => p,
        other => panic!("expected one batch, got {other:?}"),
    }
}

/// The table after the steps ran on `got` (the twin checked on its own).
fn after(got: Option<TableModel>, s: &Steps) -> TableModel {
    match s {
        Steps::Batch(p) => replay(got, &p.ops).unwrap().unwrap(),
        Steps::Handover { twin, ours } => {
            let t = replay(None, twin).unwrap().unwrap();
            let mut want = table();
            want.flags = t.flags;
            assert_eq!(t, want, "the twin holds the whole block");
            replay(got, &ours.ops).unwrap().unwrap()
        }
        Steps::Held { by } => panic!("held by {by}"),
    }
}

#[test]
fn the_setting_reads_and_prints_its_two_values() {
    for v in TableOwnership::VALUES {
        assert_eq!(v.parse::<TableOwnership>().unwrap().to_string(), v);
    }
    let e = "on".parse::<TableOwnership>().unwrap_err();
    assert!(e.contains("'on'") && e.contains("auto or off"), "{e}");
    assert_eq!(TableOwnership::default(), TableOwnership::Auto);
}

#[test]
fn ownership_needs_persist_so_a_crash_never_unblocks() {
    let k = |owner, persist| KernelSupport { owner, persist };
    let (keeper, why) = decide(TableOwnership::Auto, k(true, true));
    assert_eq!(keeper, Keeper::Owner);
    assert!(why.contains("owner, persist"), "{why}");
    let (keeper, why) = decide(TableOwnership::Auto, k(true, false));
    assert_eq!(keeper, Keeper::Visitor, "owner without persist is fail-open on SIGKILL");
    assert!(why.contains("6.9") && why.contains("not owned"), "{why}");
    let (keeper, why) = decide(TableOwnership::Auto, k(false, false));
    assert_eq!(keeper, Keeper::Visitor);
    assert!(why.contains("5.12"), "{why}");
    for s in [k(true, true), k(true, false), k(false, false)] {
        let (keeper, why) = decide(TableOwnership::Off, s);
        assert_eq!(keeper, Keeper::Visitor);
        assert!(why.contains("--table-ownership off"), "{why}");
    }
}

#[test]
fn a_visitor_accepts_the_ownership_bits_it_finds_and_nothing_else() {
    let want = table();
    for flags in [0, TABLE_F_PERSIST, BOTH] {
        assert_eq!(wanted(&want, Some(flags), Keeper::Visitor).flags, flags);
        assert_eq!(wanted(&want, Some(flags), Keeper::Owner).flags, BOTH);
    }
    // Dormant is not an ownership bit: it stays a difference.
    assert_eq!(wanted(&want, Some(TABLE_F_DORMANT | BOTH), Keeper::Visitor).flags, BOTH);
    assert_eq!(wanted(&want, None, Keeper::Visitor).flags, 0);
}

#[test]
fn an_absent_table_is_created_with_the_keepers_flags() {
    let p = batch(steps(&table(), Got::Absent, Keeper::Owner, ME, || TABLE_F_OWNER));
    assert_eq!(p.kind, PlanKind::Create);
    assert_eq!(after(None, &Steps::Batch(p)), with_flags(BOTH));
    let p = batch(steps(&table(), Got::Absent, Keeper::Visitor, ME, || TABLE_F_OWNER));
    assert_eq!(after(None, &Steps::Batch(p)), with_flags(0));
}

#[test]
fn a_table_another_live_socket_owns_is_left_alone_by_everyone() {
    let got = with_flags(BOTH);
    for keeper in [Keeper::Visitor, Keeper::Owner] {
        assert_eq!(
            steps(&table(), Got::Table(&got, Some(OTHER)), keeper, ME, || 0),
            Steps::Held { by: OTHER }
        );
    }
}

#[test]
fn an_orphan_is_adopted_in_one_batch_that_starts_with_the_claim() {
    let got = with_flags(TABLE_F_PERSIST);
    let p = batch(steps(&table(), Got::Table(&got, None), Keeper::Owner, ME, || 0));
    assert_eq!(p.kind, PlanKind::Adopt);
    assert_eq!(
        p.ops,
        vec![Op::Table {
            flags: BOTH,
            userdata: table().userdata
        }],
        "same contents: only the claim, rules keep their handles and counters"
    );
    // Tampered contents too: one claim, first, then the repair.
    let mut tampered = got.clone();
    tampered.chains.get_mut("guard").unwrap().rules.pop();
    let p = batch(steps(&table(), Got::Table(&tampered, None), Keeper::Owner, ME, || 0));
    assert_eq!(p.kind, PlanKind::Adopt);
    assert!(matches!(p.ops[0], Op::Table { flags: BOTH, .. }));
    assert_eq!(p.ops.iter().filter(|o| matches!(o, Op::Table { .. })).count(), 1);
    assert_eq!(after(Some(tampered), &Steps::Batch(p)), with_flags(BOTH));
}

#[test]
fn a_table_that_cannot_gain_the_owner_flag_is_handed_over_through_a_twin() {
    let got = with_flags(0);
    let s = steps(&table(), Got::Table(&got, None), Keeper::Owner, ME, || TABLE_F_OWNER);
    let Steps::Handover { twin, ours } = &s else {
        panic!("{s:?}")
    };
    assert!(
        matches!(
            twin[0],
            Op::Table {
                flags: TABLE_F_OWNER,
                ..
            }
        ),
        "the twin dies with us"
    );
    assert_eq!(ours.kind, PlanKind::Recreate);
    assert_eq!(ours.ops[0], Op::DeleteTable);
    assert_eq!(after(Some(got), &s), with_flags(BOTH));
}

#[test]
fn unreadable_or_foreign_tables_are_handed_over_for_every_keeper() {
    for keeper in [Keeper::Visitor, Keeper::Owner] {
        let s = steps(&table(), Got::Unreadable, keeper, ME, || 0);
        assert!(matches!(s, Steps::Handover { .. }), "{s:?}");
        let mut foreign = with_flags(if keeper == Keeper::Owner { BOTH } else { 0 });
        foreign.userdata = comment_udata("someone else's");
        let owner = (keeper == Keeper::Owner).then_some(ME);
        let s = steps(&table(), Got::Table(&foreign, owner), keeper, ME, || 0);
        assert!(matches!(s, Steps::Handover { .. }), "{keeper:?}: {s:?}");
        assert_eq!(after(Some(foreign), &s), wanted(&table(), None, keeper));
    }
}

#[test]
fn ours_or_a_visitors_table_in_sync_needs_nothing() {
    let got = with_flags(BOTH);
    let p = batch(steps(&table(), Got::Table(&got, Some(ME)), Keeper::Owner, ME, || 0));
    assert_eq!(p.kind, PlanKind::Nothing);
    for flags in [0, TABLE_F_PERSIST] {
        let got = with_flags(flags);
        let p = batch(steps(&table(), Got::Table(&got, None), Keeper::Visitor, ME, || 0));
        assert_eq!(
            p.kind,
            PlanKind::Nothing,
            "flags {flags}: a persist bit cannot be cleared anyway"
        );
    }
}

#[test]
fn a_visitor_repairs_an_orphan_without_touching_its_flags() {
    let mut got = with_flags(TABLE_F_PERSIST);
    got.chains.get_mut("guard").unwrap().rules.pop();
    let p = batch(steps(&table(), Got::Table(&got, None), Keeper::Visitor, ME, || 0));
    assert!(p
        .ops
        .iter()
        .all(|o| !matches!(o, Op::Table { flags, .. } if *flags != TABLE_F_PERSIST)));
    assert_eq!(after(Some(got), &Steps::Batch(p)), with_flags(TABLE_F_PERSIST));
}

#[test]
fn only_the_owning_daemon_sees_a_table_it_does_not_hold_as_drift() {
    let owned = with_flags(BOTH);
    let orphan = with_flags(TABLE_F_PERSIST);
    let plain = with_flags(0);
    assert_eq!(ownership_drift(Keeper::Owner, &Got::Table(&owned, Some(ME)), ME), None);
    assert_eq!(ownership_drift(Keeper::Owner, &Got::Absent, ME), None);
    assert_eq!(ownership_drift(Keeper::Visitor, &Got::Table(&plain, None), ME), None);
    let cases = [
        (Got::Table(&owned, Some(OTHER)), "port id 777"),
        (Got::Table(&orphan, None), "daemon that stopped"),
        (Got::Table(&plain, None), "one-shot apply"),
    ];
    for (got, says) in cases {
        let d = ownership_drift(Keeper::Owner, &got, ME).expect("drift");
        assert_eq!(d.kind, DriftKind::NotOwned);
        assert!(d.problem.contains(says), "{}", d.problem);
        assert!(!d.problem.contains('{'), "{}", d.problem);
    }
}

#[test]
fn retargeted_messages_name_only_the_twin() {
    use crate::core::nft_plan::messages;
    use crate::core::nft_wire::retarget;
    let Steps::Handover { twin, ours } = steps(&table(), Got::Unreadable, Keeper::Owner, ME, || 0) else {
        panic!()
    };
    let before = format!("{:?}", messages(&twin));
    assert!(before.contains(&format!("{TABLE_NAME:?}")));
    let moved = format!("{:?}", retarget(messages(&twin), TWIN_NAME));
    assert!(!moved.contains(&format!("{TABLE_NAME:?}")), "{moved}");
    assert_eq!(
        moved.matches(&format!("{TWIN_NAME:?}")).count(),
        before.matches(&format!("{TABLE_NAME:?}")).count()
    );
    let deleted = format!("{:?}", retarget(messages(&[Op::DeleteTable]), TWIN_NAME));
    assert!(deleted.contains(TWIN_NAME));
    assert_eq!(messages(&ours.ops).len(), ours.ops.len());
}

#[test]
fn the_twin_flags_are_asked_only_for_a_handover() {
    // Finding them out costs a kernel probe (15 ms measured): never on the common paths.
    let asked = || -> u32 { panic!("twin flags asked without a handover") };
    let owned = with_flags(BOTH);
    let orphan = with_flags(TABLE_F_PERSIST);
    let plain = with_flags(0);
    steps(&table(), Got::Absent, Keeper::Owner, ME, asked);
    steps(&table(), Got::Table(&owned, Some(ME)), Keeper::Owner, ME, asked);
    steps(&table(), Got::Table(&orphan, None), Keeper::Owner, ME, asked);
    steps(&table(), Got::Table(&plain, None), Keeper::Visitor, ME, asked);
    let mut called = false;
    steps(&table(), Got::Table(&plain, None), Keeper::Owner, ME, || {
        called = true;
        0
    });
    assert!(called, "a handover asks");
}
