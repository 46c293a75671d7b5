//! Our iptables objects as read back from one `iptables-save -t filter`
//! (a single read per family: on a node with 100,000 rules one save costs
//! what one `iptables -S` does, and it answers every question at once).

use super::policy::Hook;
use super::render_iptables::{jump_line, CHAIN, COMMENT};
use std::collections::{BTreeMap, BTreeSet};

/// Where our jump stands in one built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JumpState {
    /// Rule 1 of the chain is our jump.
    pub at_top: bool,
    /// How many of our jumps the chain holds.
    pub count: usize,
}

/// Our objects in one family, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IptObserved {
    /// Our chain's rule lines (`-A ...`), None when the chain does not exist.
    pub chain: Option<Vec<String>>,
    pub jumps: BTreeMap<Hook, JumpState>,
    /// Rule 1 of each built-in chain when it is not ours (for drift reports).
    pub top_rule: BTreeMap<Hook, String>,
    /// Number of rules (ours included) in each built-in chain.
    pub rules_in: BTreeMap<Hook, usize>,
    /// Built-in chains whose policy is ACCEPT.
    pub accept_policy: BTreeSet<Hook>,
    /// Hook chains that are not the built-in chain: a regular chain of that
    /// name (iptables-nft-save declares it `:FORWARD - [0:0]`), or, read over
    /// netlink, a base chain at another hook. A jump in it filters nothing.
    pub unhooked: BTreeSet<Hook>,
    /// The whole table is switched off (nft `flags dormant`; read over
    /// netlink, iptables-nft-save does not show it): nothing in it filters.
    pub dormant: bool,
    /// Our objects read like ours as text, but their netlink bytes are not
    /// what iptables-nft wrote for them (a match or statement iptables
    /// cannot print, added with nft): what differs, in plain words.
    pub hidden_change: Option<String>,
    /// iptables-legacy, read by bytes: per built-in chain, the jumps to our
    /// chain that carry our mark but are not the bytes iptables writes for
    /// our jump (not counted in `jumps`; `iptables -D` by spec cannot find
    /// them, so they are taken out by their bytes).
    pub stray_jumps: BTreeMap<Hook, usize>,
    /// Changed copies of our jump as the text shows them (a rule in a
    /// built-in chain that carries our comment and jumps to our chain but is
    /// not our jump line), deleted by that spec; iptables-legacy takes them
    /// out by bytes instead.
    pub stray_lines: BTreeMap<Hook, Vec<String>>,
    /// Rules of other people's chains that jump (or go) to our chain: ours
    /// cannot be deleted while they do, and they are not ours to delete.
    pub foreign_jumps: Vec<String>,
    /// Rewrite our chain and jumps even where they read as in place: what
    /// was read cannot prove their bytes (the text read-back), so the next
    /// write makes them ours again and the bytes can be learnt from it.
    pub rewrite_all: bool,
}

impl IptObserved {
    /// Nothing of ours is present.
    pub fn is_empty(&self) -> bool {
        self.chain.is_none() && self.jumps.values().all(|j| j.count == 0)
    }
}

/// Whether a rule line carries our comment and jumps (or goes) to our chain.
fn marked_jump(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let ours = words
        .windows(2)
        .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == COMMENT);
    ours && targets_our_chain(line)
}

/// Whether a rule line jumps (or goes) to our chain.
fn targets_our_chain(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == CHAIN)
}

/// What iptables-nft-save prints instead of a table that holds rules
/// iptables cannot express (written with nft), skipping the whole table.
const INCOMPATIBLE: &str = "# Table `filter' is incompatible";

/// The save could not show the filter table: it holds rules written with nft
/// that iptables cannot express, so iptables-nft-save skipped all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incompatible;

/// Parses `iptables-save -t filter` output (no counters). A table
/// iptables-nft-save declares incompatible is an error, never "nothing of
/// ours" (which made every read-back report our chain missing and every
/// apply insert one more jump).
pub fn parse_save(text: &str) -> Result<IptObserved, Incompatible> {
    if text.lines().any(|l| l.trim_start().starts_with(INCOMPATIBLE)) {
        return Err(Incompatible);
    }
    let mut seen = IptObserved::default();
    let declared = format!(":{CHAIN} ");
    let ours = format!("-A {CHAIN} ");
    let mut in_filter = false;
    for line in text.lines().map(str::trim_end) {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        for hook in Hook::ALL {
            if line.starts_with(&format!(":{} ACCEPT ", hook.iptables_chain())) {
                seen.accept_policy.insert(hook);
            }
            if line.starts_with(&format!(":{} - ", hook.iptables_chain())) {
                seen.unhooked.insert(hook);
            }
        }
        let in_hook_chain = Hook::ALL
            .iter()
            .any(|h| line.starts_with(&format!("-A {} ", h.iptables_chain())));
        if line.starts_with("-A ") && !line.starts_with(&ours) && !in_hook_chain && targets_our_chain(line) {
            seen.foreign_jumps.push(line.to_string());
        }
        if line.starts_with(&declared) {
            seen.chain.get_or_insert_with(Vec::new);
        } else if line.starts_with(&ours) {
            seen.chain.get_or_insert_with(Vec::new).push(line.to_string());
        } else {
            for hook in Hook::ALL {
                let prefix = format!("-A {} ", hook.iptables_chain());
                if !line.starts_with(&prefix) {
                    continue;
                }
                let first = !seen.rules_in.contains_key(&hook);
                *seen.rules_in.entry(hook).or_default() += 1;
                let is_jump = line == jump_line(hook);
                if !is_jump && marked_jump(line) {
                    seen.stray_lines.entry(hook).or_default().push(line.to_string());
                    *seen.stray_jumps.entry(hook).or_default() += 1;
                }
                let j = seen.jumps.entry(hook).or_default();
                if is_jump {
                    j.count += 1;
                }
                if first {
                    if is_jump {
                        j.at_top = true;
                    } else {
                        seen.top_rule.insert(hook, line.to_string());
                    }
                }
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-nft-save v1.8.9 on Sat Nov 28 15:00:00 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:APISERVER-GUARD - [0:0]
-A FORWARD -s 10.0.0.0/16 -j ACCEPT
-A FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD
-A FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD
-A OUTPUT -m comment --comment apiserver-guard -j APISERVER-GUARD
-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.10/32 -j DROP
COMMIT
# Completed on Sat Nov 28 15:00:00 2026
";

    #[test]
    fn chain_rules_jumps_and_top_rules_are_read() {
        let s = parse_save(SAVE).unwrap();
        assert_eq!(
            s.chain,
            Some(vec![
                "-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.10/32 -j DROP".to_string()
            ])
        );
        assert_eq!(
            s.jumps[&Hook::Forward],
            JumpState {
                at_top: false,
                count: 2
            }
        );
        assert_eq!(s.top_rule[&Hook::Forward], "-A FORWARD -s 10.0.0.0/16 -j ACCEPT");
        assert_eq!(s.jumps[&Hook::Output], JumpState { at_top: true, count: 1 });
        assert!(!s.top_rule.contains_key(&Hook::Output));
        assert_eq!(s.rules_in[&Hook::Forward], 3);
        assert_eq!(s.rules_in[&Hook::Output], 1);
        assert!(s.accept_policy.contains(&Hook::Forward) && s.accept_policy.contains(&Hook::Output));
        assert!(!s.is_empty());
    }

    #[test]
    fn a_regular_chain_named_like_a_hook_chain_is_unhooked() {
        // What iptables-nft-save prints when FORWARD was replaced by a regular chain (nft).
        let s = parse_save("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:FORWARD - [0:0]\nCOMMIT\n").unwrap();
        assert_eq!(s.unhooked, [Hook::Forward].into());
        assert!(parse_save(SAVE).unwrap().unhooked.is_empty());
    }

    #[test]
    fn a_table_iptables_nft_save_calls_incompatible_is_an_error_not_an_empty_table() {
        // iptables-nft-save v1.8.9 with an nft-only rule (`ct state established accept`) in ip filter: exit 0, this, nothing else.
        let text = "# Table `filter' is incompatible, use 'nft' tool.\n";
        assert_eq!(parse_save(text), Err(Incompatible));
    }

    /// A rule that carries our comment and jumps to our chain but is not our
    /// jump line: a changed copy of our jump (it kept `remove` from deleting
    /// our chain, and read as in sync). Foreign jumps without our comment
    /// and our own jump are not.
    #[test]
    fn changed_copies_of_our_jump_are_read_as_such() {
        let s = parse_save(
            "*filter\n:FORWARD ACCEPT [0:0]\n:APISERVER-GUARD - [0:0]\n\
             -A FORWARD -s 1.2.3.4/32 -m comment --comment apiserver-guard -j APISERVER-GUARD\n\
             -A FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD\n\
             -A FORWARD -m comment --comment \"apiserver-guard\" -g APISERVER-GUARD\n\
             -A FORWARD -s 1.2.3.5/32 -j APISERVER-GUARD\n\
             -A FORWARD -m comment --comment apiserver-guardx -j APISERVER-GUARD\n\
             COMMIT\n",
        )
        .unwrap();
        assert_eq!(
            s.stray_lines[&Hook::Forward],
            vec![
                "-A FORWARD -s 1.2.3.4/32 -m comment --comment apiserver-guard -j APISERVER-GUARD",
                "-A FORWARD -m comment --comment \"apiserver-guard\" -g APISERVER-GUARD",
            ]
        );
        assert_eq!(s.stray_jumps[&Hook::Forward], 2);
        assert_eq!(
            s.jumps[&Hook::Forward],
            JumpState {
                at_top: false,
                count: 1
            }
        );
        assert_eq!(s.rules_in[&Hook::Forward], 5);
        assert!(s.foreign_jumps.is_empty());
    }

    #[test]
    fn jumps_to_our_chain_from_other_chains_are_named() {
        let s = parse_save(
            "*filter\n:FOO - [0:0]\n:APISERVER-GUARD - [0:0]\n-A FOO -s 1.2.3.4/32 -j APISERVER-GUARD\n\
             -A FOO -j ACCEPT\nCOMMIT\n",
        )
        .unwrap();
        assert_eq!(s.foreign_jumps, vec!["-A FOO -s 1.2.3.4/32 -j APISERVER-GUARD"]);
    }

    #[test]
    fn declared_empty_chain_is_present_but_empty() {
        let s = parse_save("*filter\n:APISERVER-GUARD - [0:0]\nCOMMIT\n").unwrap();
        assert_eq!(s.chain, Some(vec![]));
    }

    #[test]
    fn nothing_of_ours() {
        let s = parse_save("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT\n").unwrap();
        assert!(s.is_empty());
        assert_eq!(s.top_rule[&Hook::Forward], "-A FORWARD -j ACCEPT");
        assert!(parse_save("").unwrap().is_empty());
    }

    #[test]
    fn other_tables_are_ignored() {
        let s = parse_save("*nat\n:APISERVER-GUARD - [0:0]\n-A OUTPUT -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n").unwrap();
        assert!(s.is_empty());
    }
}
