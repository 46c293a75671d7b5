//! Tests of the iptables-legacy table blob, on tables the kernel handed
//! out (tests/fixtures/legacy: made with iptables-legacy 1.8.9, with the
//! `-save` text of each next to it).

use super::*;

use super::fixture::{reparse, table as fixture};
use crate::core::render_iptables::CHAIN;

fn jump_target(t: &LegacyTable, i: usize) -> i32 {
    match t.target(&t.entries[i]) {
        Target::Standard(v) => v,
        other => panic!("entry {i} is {other:?}"),
    }
}

#[test]
fn both_families_parse_into_chains() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let fwd = t.builtin_rules(Hook::Forward).unwrap();
        assert_eq!(fwd.len(), 3, "{fam:?}");
        assert_eq!(t.builtin_rules(Hook::Output).unwrap().len(), 1);
        assert_eq!(t.builtin_rules(Hook::Input).unwrap().len(), 0);
        let (start, rules) = t.user_chain(CHAIN).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(t.entries[rules.start].offset, start);
        assert!(matches!(t.target(&t.entries[rules.start]), Target::Other(n) if n == "REJECT"));
        assert_eq!(
            jump_target(&t, fwd.start),
            start as i32,
            "rule 1 of FORWARD jumps to our chain"
        );
        assert_eq!(t.user_chain("FOO").unwrap().1.len(), 1);
        assert!(t.user_chain("NOPE").is_none());
    }
}

#[test]
fn our_jump_is_byte_for_byte_what_iptables_legacy_wrote() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let first = &t.entries[t.builtin_rules(Hook::Forward).unwrap().start];
        assert_eq!(t.normalised(first), our_jump(fam), "{fam:?}");
        let out = &t.entries[t.builtin_rules(Hook::Output).unwrap().start];
        assert_eq!(t.normalised(out), our_jump(fam), "the same bytes in every hook chain");
        // A foreign rule is not.
        let second = &t.entries[t.builtin_rules(Hook::Forward).unwrap().start + 1];
        assert_ne!(t.normalised(second), our_jump(fam));
    }
}

#[test]
fn our_mark_is_the_comment_match_text() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let fwd = t.builtin_rules(Hook::Forward).unwrap();
        assert!(t.marked_ours(&t.entries[fwd.start]));
        assert!(!t.marked_ours(&t.entries[fwd.start + 1]));
        assert!(!t.marked_ours(&t.entries[fwd.start + 2]));
        let (_, ours) = t.user_chain(CHAIN).unwrap();
        assert!(t.marked_ours(&t.entries[ours.start]));
    }
}

/// Bytes `iptables-legacy-save` cannot print (found by a helper trying to
/// break the read-back): an interface mask byte set with no interface
/// named, so the kernel never takes the jump while the text is unchanged;
/// and a byte after the comment's end (no effect on packets, but
/// `iptables -D` by spec no longer finds the rule).
#[test]
fn hidden_bytes_change_the_normalised_entry_but_not_the_mark() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let e = t.entries[t.builtin_rules(Hook::Forward).unwrap().start];
        let iniface_mask = match fam {
            Family::V4 => 48,
            Family::V6 => 96,
        };
        let mut m = t.clone();
        m.blob[e.offset as usize + iniface_mask + 1] = 0xff;
        assert_ne!(m.normalised(&e), our_jump(fam), "{fam:?} mask");
        assert!(m.marked_ours(&e));
        let mut c = t.clone();
        let comment_end = layout(fam).header + XT_HEADER + COMMENT.len() + 1;
        c.blob[e.offset as usize + comment_end] = b'x';
        assert_ne!(c.normalised(&e), our_jump(fam), "{fam:?} comment tail");
        assert!(c.marked_ours(&e));
    }
}

#[test]
fn counters_comefrom_and_jump_offsets_do_not_count() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let l = layout(fam);
        let e = t.entries[t.builtin_rules(Hook::Forward).unwrap().start];
        let mut m = t.clone();
        let at = e.offset as usize;
        m.blob[at + l.counters] = 7;
        m.blob[at + l.comefrom] = 4;
        let verdict = u16_at(t.bytes(&e), l.target_offset).unwrap() as usize + XT_HEADER;
        m.blob[at + verdict] ^= 0x08;
        assert_eq!(m.normalised(&e), our_jump(fam));
    }
}

#[test]
fn dropping_entries_keeps_every_jump_and_hook_pointing_where_it_did() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let fwd = t.builtin_rules(Hook::Forward).unwrap();
        let out = t.builtin_rules(Hook::Output).unwrap();
        // Our jumps in FORWARD (rule 1, the hook's entry) and OUTPUT.
        let e = t.without(&[fwd.start, out.start]).unwrap();
        assert_eq!(e.kept.len(), t.entries.len() - 2);
        let n = reparse(&t, &e);
        let nfwd = n.builtin_rules(Hook::Forward).unwrap();
        assert_eq!(nfwd.len(), 2);
        assert_eq!(n.builtin_rules(Hook::Output).unwrap().len(), 0);
        assert_eq!(n.bytes(&n.entries[nfwd.start]), t.bytes(&t.entries[fwd.start + 1]));
        // `-j FOO` still lands on FOO's first rule.
        let (foo, _) = n.user_chain("FOO").unwrap();
        assert_eq!(jump_target(&n, nfwd.start + 1), foo as i32);
        // Policies untouched.
        for h in [Hook::Input, Hook::Forward, Hook::Output] {
            let hn = h.number() as usize;
            let old = t.index_at(t.underflow[hn]).unwrap();
            let new = n.index_at(n.underflow[hn]).unwrap();
            assert_eq!(n.bytes(&n.entries[new]), t.bytes(&t.entries[old]));
        }
        // Nothing dropped: the same blob.
        let same = t.without(&[]).unwrap();
        assert_eq!(reparse(&t, &same), t);
    }
}

#[test]
fn a_policy_entry_cannot_be_dropped() {
    for fam in Family::ALL {
        let t = fixture(fam);
        let policy = t.index_at(t.underflow[Hook::Forward.number() as usize]).unwrap();
        assert!(t.without(&[policy]).is_none());
    }
}

#[test]
fn blobs_that_do_not_add_up_are_refused() {
    let t = fixture(Family::V4);
    let blob = t.blob.clone();
    let info = (
        t.valid_hooks,
        t.hook_entry,
        t.underflow,
        t.entries.len() as u32,
        blob.len() as u32,
    );
    assert!(parse(Family::V4, &info, &blob).is_ok());
    assert!(parse(Family::V4, &info, &blob[..blob.len() - 8]).is_err());
    let fewer = (info.0, info.1, info.2, info.3 - 1, info.4);
    assert!(parse(Family::V4, &fewer, &blob).is_err());
    let mut bad = blob.clone();
    bad[90..92].copy_from_slice(&4u16.to_ne_bytes());
    assert!(parse(Family::V4, &info, &bad).is_err(), "next_offset inside the header");
    assert!(parse_info(&[0; 40]).is_none());
}

#[test]
fn the_end_of_a_chain_is_byte_for_byte_what_iptables_legacy_wrote() {
    for fam in Family::ALL {
        let t = fixture(fam);
        for chain in [CHAIN, "FOO"] {
            let (_, rules) = t.user_chain(chain).unwrap();
            assert_eq!(t.normalised(&t.entries[rules.end]), chain_end(fam), "{fam:?} {chain}");
        }
    }
}

/// Sets entry `e`'s in-interface name, mask and inversion.
fn with_iface(t: &LegacyTable, e: &Entry, name: &[u8], mask: &[u8], inverted: bool) -> LegacyTable {
    let l = layout(t.family);
    let mut m = t.clone();
    let at = e.offset as usize;
    m.blob[at + l.iface..at + l.iface + name.len()].copy_from_slice(name);
    m.blob[at + l.iface + 2 * IFNAME..at + l.iface + 2 * IFNAME + mask.len()].copy_from_slice(mask);
    if inverted {
        m.blob[at + l.invflags] |= INV_VIA[0];
    }
    m
}

#[test]
fn interface_matches_are_canonical_only_as_iptables_writes_them() {
    for fam in Family::ALL {
        let t = fixture(fam);
        assert!(
            t.entries.iter().all(|e| t.canonical_header(e)),
            "{fam:?}: all as written"
        );
        let e = t.entries[t.user_chain(CHAIN).unwrap().1.start];
        let ok = |m: LegacyTable| m.canonical_header(&e);
        // What iptables writes: `-i eth0`, `-i eth+`, `! -i eth0`, `-i +`.
        assert!(ok(with_iface(&t, &e, b"eth0\0", &[0xff; 5], false)));
        assert!(ok(with_iface(&t, &e, b"eth+", &[0xff; 3], false)));
        assert!(ok(with_iface(&t, &e, b"eth0\0", &[0xff; 5], true)));
        assert!(ok(with_iface(&t, &e, b"+", &[], false)));
        // What it prints as nothing, or as less than the kernel matches.
        assert!(!ok(with_iface(&t, &e, b"+", &[], true)), "! -i +: never matches");
        assert!(
            !ok(with_iface(&t, &e, b"", &[0, 0xff], false)),
            "mask byte after a zero one"
        );
        assert!(
            !ok(with_iface(&t, &e, b"eth0\0x", &[0xff; 5], false)),
            "name beyond the mask"
        );
        assert!(
            !ok(with_iface(&t, &e, b"eth0\0", &[0xff, 0xff, 0x0f], false)),
            "partial mask byte"
        );
    }
}
