//! What `iptables-restore --noflush` must do to one family: the payload
//! that brings our chain and jumps from what was read back
//! (`iptables_state`) to what the blocklist wants (`render_iptables`).
//! Pure.

use super::iptables_state::IptObserved;
use super::policy::Hook;
use super::render_iptables::{jump_spec, IptDesired, CHAIN};

/// The `iptables-restore --noflush` payload that brings one family from
/// `seen` to `want` (or removes everything of ours when `want` is None).
/// Returns None when nothing needs to change (`seen.rewrite_all`: our chain
/// and jumps are written again even where they read as in place). Jumps are deleted by their
/// full spec (never by number, which another agent could shift under us).
/// With `drop_emptied_builtins` (iptables-nft, where a built-in chain is an
/// nft base chain that exists only once something created it), a built-in
/// chain that held nothing but our jumps and accepts by policy is deleted
/// with them, so `remove` leaves the ruleset as it found it.
pub fn plan(want: Option<&IptDesired>, seen: &IptObserved, drop_emptied_builtins: bool) -> Option<String> {
    let mut lines = vec!["*filter".to_string()];
    let mut changed = false;
    if let Some(w) = want {
        if seen.rewrite_all || seen.chain.as_ref() != Some(&w.rules) {
            lines.push(format!(":{CHAIN} - [0:0]"));
            lines.extend(w.rules.iter().cloned());
            changed = true;
        }
    }
    for hook in Hook::ALL {
        let strays = seen.stray_lines.get(&hook).map(Vec::as_slice).unwrap_or_default();
        for line in strays {
            // The changed copy by its own spec, as the save printed it.
            lines.push(format!("-D {}", line.strip_prefix("-A ").unwrap_or(line)));
            changed = true;
        }
        let j = seen.jumps.get(&hook).copied().unwrap_or_default();
        let used = want.is_some_and(|w| w.hooks.contains(&hook));
        if used && j.at_top && j.count == 1 && !seen.rewrite_all {
            continue;
        }
        for _ in 0..j.count {
            lines.push(format!("-D {} {}", hook.iptables_chain(), jump_spec()));
            changed = true;
        }
        if used {
            lines.push(format!("-I {} 1 {}", hook.iptables_chain(), jump_spec()));
            changed = true;
        } else if drop_emptied_builtins
            && j.count + strays.len() > 0
            && seen.rules_in.get(&hook) == Some(&(j.count + strays.len()))
            && seen.accept_policy.contains(&hook)
        {
            lines.push(format!("-X {}", hook.iptables_chain()));
        }
    }
    if want.is_none() && seen.chain.is_some() {
        lines.push(format!("-F {CHAIN}"));
        lines.push(format!("-X {CHAIN}"));
        changed = true;
    }
    lines.push("COMMIT".to_string());
    changed.then(|| lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::iptables_state::JumpState;
    use std::collections::BTreeMap;

    fn want() -> IptDesired {
        IptDesired {
            rules: vec!["-A APISERVER-GUARD -s 10.0.0.0/16 -j DROP".into()],
            hooks: vec![Hook::Forward],
        }
    }

    fn observed(chain: Option<Vec<String>>, out: JumpState, fwd: JumpState) -> IptObserved {
        IptObserved {
            chain,
            jumps: [(Hook::Output, out), (Hook::Forward, fwd)].into(),
            top_rule: BTreeMap::new(),
            ..Default::default()
        }
    }

    const NONE: JumpState = JumpState {
        at_top: false,
        count: 0,
    };
    const TOP: JumpState = JumpState { at_top: true, count: 1 };

    #[test]
    fn fresh_install_creates_chain_and_inserts_jump_at_1() {
        let p = plan(Some(&want()), &observed(None, NONE, NONE), false).unwrap();
        assert_eq!(
            p,
            "*filter\n:APISERVER-GUARD - [0:0]\n-A APISERVER-GUARD -s 10.0.0.0/16 -j DROP\n\
             -I FORWARD 1 -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n"
        );
    }

    #[test]
    fn rewrite_all_writes_the_chain_and_moves_a_good_jump_again() {
        let mut seen = observed(Some(want().rules), NONE, TOP);
        seen.rewrite_all = true;
        let p = plan(Some(&want()), &seen, false).unwrap();
        assert_eq!(
            p,
            "*filter\n:APISERVER-GUARD - [0:0]\n-A APISERVER-GUARD -s 10.0.0.0/16 -j DROP\n\
             -D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD\n\
             -I FORWARD 1 -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n"
        );
        // Removal is not concerned.
        assert_eq!(plan(None, &observed(None, NONE, NONE), false), None);
    }

    #[test]
    fn changed_copies_of_our_jump_are_deleted_by_their_own_spec() {
        let mut seen = observed(Some(want().rules), NONE, TOP);
        let line = "-A FORWARD -s 1.2.3.4/32 -m comment --comment apiserver-guard -j APISERVER-GUARD".to_string();
        seen.stray_lines.insert(Hook::Forward, vec![line]);
        let p = plan(Some(&want()), &seen, false).unwrap();
        assert_eq!(
            p,
            "*filter\n-D FORWARD -s 1.2.3.4/32 -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n"
        );
        // Removal deletes it before our chain (which it refers to).
        let p = plan(None, &seen, false).unwrap();
        assert!(
            p.find("-D FORWARD -s 1.2.3.4").unwrap() < p.find("-X APISERVER-GUARD").unwrap(),
            "{p}"
        );
    }

    #[test]
    fn in_sync_needs_nothing() {
        assert_eq!(
            plan(Some(&want()), &observed(Some(want().rules), NONE, TOP), false),
            None
        );
    }

    #[test]
    fn flushed_chain_is_refilled_without_touching_a_good_jump() {
        let p = plan(Some(&want()), &observed(Some(vec![]), NONE, TOP), false).unwrap();
        assert!(p.contains(":APISERVER-GUARD - [0:0]"));
        assert!(!p.contains("-D ") && !p.contains("-I "), "{p}");
    }

    #[test]
    fn displaced_jumps_are_all_deleted_by_spec_and_one_inserted_at_top() {
        let fwd = JumpState {
            at_top: false,
            count: 2,
        };
        let p = plan(Some(&want()), &observed(Some(want().rules), NONE, fwd), false).unwrap();
        assert_eq!(
            p.matches("-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD")
                .count(),
            2
        );
        assert_eq!(p.matches("-I FORWARD 1 ").count(), 1);
        assert!(p.find("-D FORWARD").unwrap() < p.find("-I FORWARD").unwrap());
    }

    #[test]
    fn duplicate_at_top_is_reduced_to_one() {
        let fwd = JumpState { at_top: true, count: 3 };
        let p = plan(Some(&want()), &observed(Some(want().rules), NONE, fwd), false).unwrap();
        assert_eq!(p.matches("-D FORWARD").count(), 3);
        assert_eq!(p.matches("-I FORWARD 1").count(), 1);
    }

    #[test]
    fn jumps_of_unused_hooks_are_removed() {
        let out = JumpState { at_top: true, count: 1 };
        let p = plan(Some(&want()), &observed(Some(want().rules), out, TOP), false).unwrap();
        assert!(p.contains("-D OUTPUT -m comment --comment apiserver-guard -j APISERVER-GUARD"));
        assert!(!p.contains("-I OUTPUT"));
    }

    #[test]
    fn removal_deletes_jumps_then_flushes_and_deletes_chain() {
        let p = plan(
            None,
            &observed(Some(want().rules), JumpState { at_top: true, count: 1 }, NONE),
            false,
        )
        .unwrap();
        assert_eq!(
            p,
            "*filter\n-D OUTPUT -m comment --comment apiserver-guard -j APISERVER-GUARD\n-F APISERVER-GUARD\n-X APISERVER-GUARD\nCOMMIT\n"
        );
        assert_eq!(plan(None, &observed(None, NONE, NONE), false), None);
    }

    #[test]
    fn builtin_chains_emptied_by_removal_are_dropped_for_iptables_nft_only() {
        let mut seen = observed(Some(want().rules), JumpState { at_top: true, count: 1 }, NONE);
        seen.rules_in.insert(Hook::Output, 1);
        seen.accept_policy.insert(Hook::Output);
        let p = plan(None, &seen, true).unwrap();
        assert!(
            p.contains("-D OUTPUT -m comment --comment apiserver-guard -j APISERVER-GUARD\n-X OUTPUT\n"),
            "{p}"
        );
        assert!(!plan(None, &seen, false).unwrap().contains("-X OUTPUT"));
        // A chain with a foreign rule stays.
        seen.rules_in.insert(Hook::Output, 2);
        assert!(!plan(None, &seen, true).unwrap().contains("-X OUTPUT"));
        // So does one with a DROP policy.
        seen.rules_in.insert(Hook::Output, 1);
        seen.accept_policy.clear();
        assert!(!plan(None, &seen, true).unwrap().contains("-X OUTPUT"));
    }
}
