//! Tests of the iptables-legacy read-back by bytes, on the kernel-made
//! fixture tables and their `-save` text.

use super::*;
use crate::core::drift::diff_iptables;
use crate::core::iptables_legacy_blob::fixture::{reparse, table};
use crate::core::iptables_legacy_blob::LegacyTable;
use crate::core::iptables_plan::plan;
use crate::core::iptables_state::parse_save;
use crate::core::model::Family;

fn save(fam: Family) -> &'static str {
    match fam {
        Family::V4 => include_str!("../../tests/fixtures/legacy/filter-v4.save"),
        Family::V6 => include_str!("../../tests/fixtures/legacy/filter-v6.save"),
    }
}

/// What the fixture holds of ours, as wanted.
fn want(fam: Family) -> IptDesired {
    IptDesired {
        rules: save(fam)
            .lines()
            .filter(|l| l.starts_with("-A APISERVER-GUARD "))
            .map(str::to_string)
            .collect(),
        hooks: vec![Hook::Output, Hook::Forward],
    }
}

/// Offset of `iniface_mask` in the entry header.
fn iniface_mask(fam: Family) -> usize {
    match fam {
        Family::V4 => 48,
        Family::V6 => 96,
    }
}

/// Sets one interface-mask byte (no interface named: the text is unchanged,
/// the kernel never matches) on entry `i`.
fn hide(t: &mut LegacyTable, i: usize) {
    let at = iniface_mask(t.family) + 1;
    let at = t.entries[i].offset as usize + at;
    t.blob[at] = 0xff;
}

fn folded(fam: Family, t: &LegacyTable, reference: Option<&Reference>) -> IptObserved {
    let mut seen = parse_save(save(fam)).unwrap();
    fold(Some(&want(fam)), reference, &read(t), &mut seen);
    seen
}

#[test]
fn the_untouched_table_reads_in_sync_and_teaches_its_chain() {
    for fam in Family::ALL {
        let t = table(fam);
        let r = read(&t);
        assert_eq!(r.chain.as_ref().unwrap().len(), 1);
        assert_eq!(r.jumps[&Hook::Forward].len(), 1);
        assert!(r.jumps[&Hook::Forward][0].exact && r.jumps[&Hook::Output][0].exact);
        assert!(r.jumps[&Hook::Input].is_empty());
        assert!(stray(&r).is_empty());
        let reference = learn(&want(fam), &r).unwrap();
        let seen = folded(fam, &t, Some(&reference));
        assert!(diff_iptables(Some(&want(fam)), &seen, "").is_empty(), "{seen:?}");
        assert!(!seen.rewrite_all);
        assert_eq!(plan(Some(&want(fam)), &seen, false), None, "nothing to write");
    }
}

#[test]
fn without_a_reference_the_text_decides_and_the_next_write_is_full() {
    for fam in Family::ALL {
        let seen = folded(fam, &table(fam), None);
        assert!(diff_iptables(Some(&want(fam)), &seen, "").is_empty());
        assert!(seen.rewrite_all);
        let p = plan(Some(&want(fam)), &seen, false).unwrap();
        assert!(
            p.contains(":APISERVER-GUARD - [0:0]") && p.contains("-I FORWARD 1 "),
            "{p}"
        );
    }
}

/// The helper's find: one interface-mask byte on our jump, invisible to
/// `iptables-legacy-save`; it read as in sync and every `-D` by spec failed.
#[test]
fn a_jump_changed_where_the_text_cannot_show_it_is_drift_and_never_deleted_by_spec() {
    for fam in Family::ALL {
        let mut t = table(fam);
        let i = t.builtin_rules(Hook::Forward).unwrap().start;
        let reference = learn(&want(fam), &read(&table(fam))).unwrap();
        hide(&mut t, i);
        let r = read(&t);
        assert_eq!(stray(&r), vec![i]);
        assert!(learn(&want(fam), &r).is_none(), "never learnt from");
        let seen = folded(fam, &t, Some(&reference));
        let drift: Vec<String> = diff_iptables(Some(&want(fam)), &seen, "iptables-legacy")
            .iter()
            .map(|d| format!("{}: {}", d.object, d.problem))
            .collect();
        let text = drift.join("\n");
        assert!(text.contains("chain FORWARD: 1 changed copy of our jump"), "{text}");
        assert!(text.contains("is not the bytes iptables writes"), "{text}");
        assert!(text.contains("our jump is not rule 1"), "{text}");
        assert!(!text.contains("OUTPUT"), "{text}");
        let p = plan(Some(&want(fam)), &seen, false).unwrap();
        assert!(p.contains("-I FORWARD 1 "), "{p}");
        assert!(
            !p.contains("-D FORWARD"),
            "a -D by spec would fail and abort the restore: {p}"
        );
        // Removal: only the good jump in OUTPUT by spec; FORWARD's by bytes.
        let mut gone = parse_save(save(fam)).unwrap();
        fold(None, None, &r, &mut gone);
        let p = plan(None, &gone, false).unwrap();
        assert!(p.contains("-D OUTPUT ") && !p.contains("-D FORWARD"), "{p}");
    }
}

#[test]
fn a_rule_of_our_chain_changed_where_the_text_cannot_show_it_is_rewritten() {
    for fam in Family::ALL {
        let mut t = table(fam);
        let reference = learn(&want(fam), &read(&t)).unwrap();
        let (_, rules) = t.user_chain(CHAIN).unwrap();
        hide(&mut t, rules.start);
        let seen = folded(fam, &t, Some(&reference));
        assert_eq!(seen.hidden_change.as_deref(), Some("rule 1 of our chain"));
        let text: Vec<String> = diff_iptables(Some(&want(fam)), &seen, "")
            .iter()
            .map(|d| format!("{}: {}", d.object, d.problem))
            .collect();
        assert!(
            text.join("\n").contains("rule 1 of our chain: it reads like ours"),
            "{text:?}"
        );
        let p = plan(Some(&want(fam)), &seen, false).unwrap();
        assert!(p.contains(":APISERVER-GUARD - [0:0]"), "{p}");
        // A byte only the reference can tell (after the end of the rule's
        // comment text); a reference learnt for another wanted state says nothing.
        let mut c = table(fam);
        let e = c.entries[rules.start];
        let comment_end = c.bytes(&e).windows(15).position(|w| w == b"apiserver-guard").unwrap() + 16;
        c.blob[e.offset as usize + comment_end] = b'x';
        assert_eq!(read(&c).noncanonical, None);
        assert_eq!(
            folded(fam, &c, Some(&reference)).hidden_change.as_deref(),
            Some("rule 1 of our chain")
        );
        let mut other = reference.clone();
        other.key.push('x');
        assert_eq!(folded(fam, &c, Some(&other)).hidden_change, None);
    }
}

#[test]
fn a_table_without_our_chain_has_nothing_of_ours() {
    for fam in Family::ALL {
        let t = table(fam);
        let (_, ours) = t.user_chain(CHAIN).unwrap();
        // Our chain's head renamed: no chain of ours, no jumps to it read.
        let mut renamed = t.clone();
        let head = renamed.entries[ours.start - 1];
        renamed.blob[(head.offset + head.len) as usize - 32] = b'X';
        assert_eq!(read(&renamed), LegacyRead::default());
    }
}

#[test]
fn the_bytes_alone_decide_in_sync_flushed_and_missing() {
    for fam in Family::ALL {
        let t = table(fam);
        let reference = learn(&want(fam), &read(&t)).unwrap();
        let seen = derive(Some(&want(fam)), Some(&reference), &read(&t)).expect("in sync, from bytes");
        assert!(diff_iptables(Some(&want(fam)), &seen, "").is_empty(), "{seen:?}");
        assert_eq!(plan(Some(&want(fam)), &seen, false), None);
        // Our chain flushed: its rule taken out.
        let (_, ours) = t.user_chain(CHAIN).unwrap();
        let f = reparse(&t, &t.without(&[ours.start]).unwrap());
        let seen = derive(Some(&want(fam)), Some(&reference), &read(&f)).expect("flushed, from bytes");
        assert_eq!(seen.chain, Some(vec![]));
        let p = plan(Some(&want(fam)), &seen, false).unwrap();
        assert!(
            p.contains(":APISERVER-GUARD - [0:0]") && !p.contains("-D ") && !p.contains("-I "),
            "{p}"
        );
        // No chain: missing, nothing jumps to it.
        let seen = derive(Some(&want(fam)), Some(&reference), &LegacyRead::default()).unwrap();
        assert!(seen.is_empty());
    }
}

#[test]
fn the_text_is_read_wherever_the_bytes_do_not_settle_it() {
    for fam in Family::ALL {
        let t = table(fam);
        let reference = learn(&want(fam), &read(&t)).unwrap();
        let w = want(fam);
        assert!(derive(Some(&w), None, &read(&t)).is_none(), "no reference");
        assert!(derive(None, None, &read(&t)).is_none(), "removal with our chain there");
        assert!(
            derive(None, None, &LegacyRead::default()).is_some(),
            "nothing of ours, nothing wanted"
        );
        let (_, ours) = t.user_chain(CHAIN).unwrap();
        for i in [t.builtin_rules(Hook::Forward).unwrap().start, ours.start] {
            let mut m = t.clone();
            hide(&mut m, i);
            assert!(
                derive(Some(&w), Some(&reference), &read(&m)).is_none(),
                "entry {i} changed"
            );
        }
        // A jump in a chain we do not hook (OUTPUT, in the fixture).
        let forward_only = IptDesired {
            hooks: vec![Hook::Forward],
            ..w.clone()
        };
        let r = learn(&forward_only, &read(&t)).unwrap();
        assert!(derive(Some(&forward_only), Some(&r), &read(&t)).is_none());
        // Rule 1 of FORWARD not ours: the text names it.
        let fwd = t.builtin_rules(Hook::Forward).unwrap();
        let m = reparse(&t, &t.without(&[fwd.start]).unwrap());
        assert!(derive(Some(&w), Some(&reference), &read(&m)).is_none());
    }
}

/// `! -i +` (written with the iptables tool itself: it masks nothing and
/// prints nothing, yet never matches) and a changed end of our chain are
/// found without any reference, and never learnt.
#[test]
fn changes_found_without_a_reference() {
    for fam in Family::ALL {
        let t = table(fam);
        let (_, ours) = t.user_chain(CHAIN).unwrap();
        let e = t.entries[ours.start];
        let (iface, invflags) = match fam {
            Family::V4 => (16, 83),
            Family::V6 => (64, 132),
        };
        let mut m = t.clone();
        m.blob[e.offset as usize + iface] = b'+';
        m.blob[e.offset as usize + invflags] |= 1;
        let r = read(&m);
        assert_eq!(r.noncanonical, Some(0));
        assert!(learn(&want(fam), &r).is_none());
        let reference = learn(&want(fam), &read(&t)).unwrap();
        assert!(derive(Some(&want(fam)), Some(&reference), &r).is_none());
        let seen = folded(fam, &m, None);
        assert_eq!(seen.hidden_change.as_deref(), Some("rule 1 of our chain"));
        assert!(seen.rewrite_all);

        // The end of our chain accepting.
        let end = t.entries[ours.end];
        let verdict = end.offset as usize + end.len as usize - 8;
        let mut m = t.clone();
        m.blob[verdict..verdict + 4].copy_from_slice(&(-2i32).to_ne_bytes());
        let r = read(&m);
        assert!(r.end_changed);
        assert!(learn(&want(fam), &r).is_none());
        assert!(derive(Some(&want(fam)), Some(&reference), &r).is_none());
        let seen = folded(fam, &m, Some(&reference));
        assert_eq!(
            seen.hidden_change.as_deref(),
            Some("the end of our chain (the RETURN iptables puts there)")
        );
    }
}
