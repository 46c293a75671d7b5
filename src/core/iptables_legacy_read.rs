//! The iptables-legacy read-back by bytes: our objects as they are in the
//! kernel's table (`iptables_legacy_blob`), folded into what the text
//! read-back (`iptables_state`, from `iptables-legacy-save`) saw, so that a
//! change `iptables-legacy-save` cannot print is drift too.
//!
//! - Our jump is compared with the bytes iptables writes for it
//!   (`our_jump`): nothing to learn. A jump to our chain that carries our
//!   mark but is not those bytes is *stray*: `iptables -D` by spec cannot
//!   find it (a helper's raw write of one interface-mask byte wedged every
//!   repair and `remove` that way), so it is taken out by its bytes.
//! - Our chain's rules are compared with the bytes learnt right after our
//!   own write (`Reference`, as for iptables-nft); without one, the text
//!   decides and the next write is a full one, to learn them.
//!
//! Pure.

use std::collections::BTreeMap;

use super::iptables_legacy_blob::{chain_end, our_jump, LegacyTable, Target};
use super::iptables_nft_read::{key, Reference};
use super::iptables_state::{IptObserved, JumpState};
use super::policy::Hook;
use super::render_iptables::{IptDesired, CHAIN};

/// One rule of a built-in chain that jumps to our chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpAt {
    /// Its index in the table's entries.
    pub index: usize,
    /// Its position in its chain (0: rule 1).
    pub position: usize,
    /// Byte for byte our jump.
    pub exact: bool,
    /// It carries our comment (whatever else changed).
    pub marked: bool,
}

/// Our objects in one family's legacy table, by bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyRead {
    /// Our chain's rules, normalised; None when it does not exist.
    pub chain: Option<Vec<Vec<u8>>>,
    /// The jumps to our chain in each built-in chain, in order.
    pub jumps: BTreeMap<Hook, Vec<JumpAt>>,
    /// The first rule of our chain (0-based) whose interface match is not
    /// as iptables writes it (`canonical_header`): a change its save cannot
    /// print, found without any reference.
    pub noncanonical: Option<usize>,
    /// The end of our chain (the RETURN iptables puts there) is not as
    /// iptables writes it: an ACCEPT there skips every later rule of the
    /// hook chain, an interface byte there drops all traffic; its save
    /// prints neither.
    pub end_changed: bool,
}

/// Reads our objects out of `t`.
pub fn read(t: &LegacyTable) -> LegacyRead {
    let Some((start, rules)) = t.user_chain(CHAIN) else {
        return LegacyRead::default();
    };
    let want = our_jump(t.family);
    let mut jumps = BTreeMap::new();
    for hook in Hook::ALL {
        let Some(range) = t.builtin_rules(hook) else { continue };
        let found: Vec<JumpAt> = range
            .clone()
            .filter(|i| t.target(&t.entries[*i]) == Target::Standard(start as i32))
            .map(|i| JumpAt {
                index: i,
                position: i - range.start,
                exact: t.normalised(&t.entries[i]) == want,
                marked: t.marked_ours(&t.entries[i]),
            })
            .collect();
        jumps.insert(hook, found);
    }
    let end = t.entries.get(rules.end);
    LegacyRead {
        noncanonical: rules.clone().position(|i| !t.canonical_header(&t.entries[i])),
        end_changed: end.is_none_or(|e| t.normalised(e) != chain_end(t.family)),
        chain: Some(rules.map(|i| t.normalised(&t.entries[i])).collect()),
        jumps,
    }
}

/// The entries to take out by their bytes: jumps to our chain that carry
/// our mark but are not our jump byte for byte.
pub fn stray(read: &LegacyRead) -> Vec<usize> {
    read.jumps
        .values()
        .flatten()
        .filter(|j| j.marked && !j.exact)
        .map(|j| j.index)
        .collect()
}

/// The reference learnt from `read`, taken right after our own write of
/// all of `want`. None unless our chain holds as many rules as `want` and
/// every wanted hook chain starts with our jump, exactly.
pub fn learn(want: &IptDesired, read: &LegacyRead) -> Option<Reference> {
    let rules = read.chain.as_ref()?;
    let jumps_in_place = want.hooks.iter().all(|h| {
        read.jumps
            .get(h)
            .and_then(|j| j.first())
            .is_some_and(|j| j.position == 0 && j.exact)
    });
    let as_written = read.noncanonical.is_none() && !read.end_changed;
    (rules.len() == want.rules.len() && jumps_in_place && as_written).then(|| Reference {
        key: key(want),
        rules: rules.clone(),
        jump: Vec::new(),
    })
}

/// Our objects as the bytes alone tell them, without reading the text:
/// in sync, our chain flushed or missing. None where the text must be read
/// (it names what changed, and removal needs the whole picture): nothing
/// wanted while our chain exists, no reference for `want`, a rule of ours
/// that is not the reference's bytes, a jump that is not ours byte for byte,
/// a rule 1 that is not our jump, a jump in a chain we do not hook.
pub fn derive(want: Option<&IptDesired>, reference: Option<&Reference>, read: &LegacyRead) -> Option<IptObserved> {
    let Some(want) = want else {
        return read.chain.is_none().then(IptObserved::default);
    };
    let reference = reference.filter(|r| r.key == key(want))?;
    if read.noncanonical.is_some() || read.end_changed {
        return None;
    }
    let mut seen = IptObserved::default();
    match &read.chain {
        // No chain, so nothing can jump to it.
        None => return Some(seen),
        Some(rules) if rules.is_empty() => seen.chain = Some(Vec::new()),
        Some(rules) if *rules == reference.rules => seen.chain = Some(want.rules.clone()),
        Some(_) => return None,
    }
    for (hook, found) in &read.jumps {
        if found.iter().any(|j| !j.exact) {
            return None;
        }
        let wanted = want.hooks.contains(hook);
        if !wanted && !found.is_empty() || wanted && found.first().is_none_or(|j| j.position != 0) {
            return None;
        }
        if wanted {
            seen.jumps.insert(
                *hook,
                JumpState {
                    at_top: true,
                    count: found.len(),
                },
            );
        }
    }
    Some(seen)
}

/// Folds the bytes into `seen`, the text read-back of the same table:
/// jumps count only where they are our jump byte for byte (the others are
/// `stray_jumps`, named and taken out by bytes); our chain's rules, where
/// the text matches `want`, must be the reference's bytes. Without a
/// reference for `want`, the next write is a full one (`rewrite_all`).
pub fn fold(want: Option<&IptDesired>, reference: Option<&Reference>, read: &LegacyRead, seen: &mut IptObserved) {
    // The bytes name every changed copy of our jump, the text only some.
    seen.stray_lines.clear();
    seen.stray_jumps.clear();
    for (hook, found) in &read.jumps {
        let exact = found.iter().filter(|j| j.exact).count();
        let at_top = found.first().is_some_and(|j| j.position == 0 && j.exact);
        let text = seen.jumps.get(hook).copied().unwrap_or_default();
        if text.at_top && !at_top {
            seen.top_rule.insert(
                *hook,
                "a jump to our chain that reads like ours but is not the bytes iptables writes for it \
                 (a change iptables-legacy-save cannot print)"
                    .to_string(),
            );
        }
        seen.jumps.insert(*hook, JumpState { at_top, count: exact });
        let stray = found.iter().filter(|j| j.marked && !j.exact).count();
        if stray > 0 {
            seen.stray_jumps.insert(*hook, stray);
        }
    }
    let Some(want) = want else { return };
    if seen.chain.as_ref() == Some(&want.rules) {
        if let Some(i) = read.noncanonical {
            seen.hidden_change = Some(format!("rule {} of our chain", i + 1));
        } else if read.end_changed {
            seen.hidden_change = Some("the end of our chain (the RETURN iptables puts there)".to_string());
        }
        if seen.hidden_change.is_some() {
            seen.rewrite_all = true;
            return;
        }
    }
    let reference = reference.filter(|r| r.key == key(want));
    match (reference, &read.chain) {
        (None, _) => seen.rewrite_all = true,
        (Some(r), Some(rules)) if seen.chain.as_ref() == Some(&want.rules) => {
            if rules.len() != r.rules.len() {
                seen.hidden_change = Some(format!(
                    "our chain holds {} rules where we wrote {}",
                    rules.len(),
                    r.rules.len()
                ));
            } else if let Some(i) = rules.iter().zip(&r.rules).position(|(a, b)| a != b) {
                seen.hidden_change = Some(format!("rule {} of our chain", i + 1));
            }
            if seen.hidden_change.is_some() {
                seen.rewrite_all = true;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "iptables_legacy_read_tests.rs"]
mod tests;
