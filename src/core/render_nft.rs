//! nftables rendering: the model becomes one `nft -f` script that replaces
//! our table atomically, and the `NftState` that a correct table reads back as.
//! Both come from the same per-rule translation below.

use super::model::{Blocklist, Family, FamilyAddrs, Rule, Target, Verdict};
use super::nft_state::{BaseChain, NftChain, NftSet, NftState, RuleSig};
use super::policy::Hook;
use std::collections::BTreeSet;

/// The table we own. Nothing else is ever written.
pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "apiserver_guard";
/// Regular chain holding the rules; base chains jump to it.
pub const GUARD_CHAIN: &str = "guard";
/// Comment of the one rule in each base chain.
pub const ENTER_COMMENT: &str = "enter-guard";
/// Filter priority: after DNAT, so a ClusterIP is matched on the real apiserver address.
pub const PRIORITY: i64 = 0;

fn set_name(kind: &str, fam: Family) -> String {
    format!("{kind}_{}", fam.suffix())
}

/// The kinds of set we may own, per family.
const SET_KINDS: [&str; 4] = ["sources", "exempt", "api_port", "api_any"];
/// The one set of both families: TCP ports of the apiservers on this node.
const LOCAL_PORTS_SET: &str = "local_ports";
const LOCAL_PORTS_TYPE: &str = "inet_service";
/// IPv6 link-local sources, for `Target::LocalPortLinkLocal`.
const LINK_LOCAL_SET: &str = "link_local_v6";

/// Whether `name` is one of the sets we may own.
fn is_our_set(name: &str) -> bool {
    name == LOCAL_PORTS_SET
        || name == LINK_LOCAL_SET
        || Family::ALL
            .iter()
            .any(|f| SET_KINDS.iter().any(|k| set_name(k, *f) == name))
}

/// The family-less sets the blocklist needs.
fn shared_sets(b: &Blocklist) -> Vec<(String, NftSet)> {
    if b.local_ports.is_empty() {
        return Vec::new();
    }
    vec![
        (
            LOCAL_PORTS_SET.to_string(),
            NftSet {
                key_type: LOCAL_PORTS_TYPE.to_string(),
                interval: false,
                elements: b.local_ports.iter().map(u16::to_string).collect(),
            },
        ),
        (
            LINK_LOCAL_SET.to_string(),
            NftSet {
                key_type: "ipv6_addr".to_string(),
                interval: true,
                elements: [crate::core::render_iptables::LINK_LOCAL_V6.to_string()].into(),
            },
        ),
    ]
}

/// Key type and interval flag of a set kind.
fn set_def(kind: &str, fam: Family) -> (String, bool) {
    let addr = match fam {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    match kind {
        "api_port" => (format!("{addr} . inet_service"), false),
        "api_any" => (addr.to_string(), false),
        _ => (addr.to_string(), true),
    }
}

/// The sets of one family the blocklist needs (only non-empty ones, except
/// sources, and exempt when it is dynamic).
fn family_sets(fam: Family, a: &FamilyAddrs, dynamic_exempt: bool) -> Vec<(String, NftSet)> {
    let nets = |v: &[ipnet::IpNet]| v.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let contents: [(&str, BTreeSet<String>); 4] = [
        ("sources", nets(&a.sources)),
        ("exempt", nets(&a.exempt)),
        (
            "api_port",
            a.api_ports.iter().map(|(ip, p)| format!("{ip} . {p}")).collect(),
        ),
        ("api_any", a.api_any.iter().map(|ip| ip.to_string()).collect()),
    ];
    contents
        .into_iter()
        .filter(|(kind, elems)| *kind == "sources" || (*kind == "exempt" && dynamic_exempt) || !elems.is_empty())
        .map(|(kind, elements)| {
            let (key_type, interval) = set_def(kind, fam);
            (
                set_name(kind, fam),
                NftSet {
                    key_type,
                    interval,
                    elements,
                },
            )
        })
        .collect()
}

/// The nft statement text of a rule and the sets it references.
fn rule_text(r: &Rule) -> (String, Vec<String>) {
    let proto = match r.family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let sources = set_name("sources", r.family);
    let (matches, sets) = match r.target {
        Target::Exempt => {
            let ex = set_name("exempt", r.family);
            (format!("{proto} saddr @{ex}"), vec![ex])
        }
        Target::ApiPort => {
            let api = set_name("api_port", r.family);
            (
                format!("{proto} saddr @{sources} {proto} daddr . tcp dport @{api}"),
                vec![sources, api],
            )
        }
        Target::ApiAny => {
            let api = set_name("api_any", r.family);
            let tcp = if r.tcp_only { " meta l4proto tcp" } else { "" };
            (
                format!("{proto} saddr @{sources} {proto} daddr @{api}{tcp}"),
                vec![sources, api],
            )
        }
        Target::LocalPortLinkLocal => (
            format!(
                "ip6 saddr @{LINK_LOCAL_SET} fib saddr type != local fib daddr type local tcp dport @{LOCAL_PORTS_SET}"
            ),
            vec![LINK_LOCAL_SET.to_string(), LOCAL_PORTS_SET.to_string()],
        ),
        Target::LocalPort => (
            format!(
                "{proto} saddr @{sources} fib saddr type != local fib daddr type local tcp dport @{LOCAL_PORTS_SET}"
            ),
            vec![sources, LOCAL_PORTS_SET.to_string()],
        ),
    };
    let counter = if r.blocks() { "counter " } else { "" };
    let text = format!(
        "{matches} {counter}{} comment \"{}\"",
        verdict_text(r.verdict),
        r.name()
    );
    (text, sets)
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Return => "return",
        Verdict::TcpReset => "reject with tcp reset",
        Verdict::IcmpProhibited => "reject with icmpx type admin-prohibited",
        Verdict::Drop => "drop",
    }
}

/// How nft reads a verdict back in JSON (see `nft_state::parse_rule`).
fn verdict_sig(v: Verdict) -> &'static str {
    match v {
        Verdict::Return => "return",
        Verdict::TcpReset => "reject tcp reset",
        Verdict::IcmpProhibited => "reject icmpx admin-prohibited",
        Verdict::Drop => "drop",
    }
}

/// The only shape each of our chain names ever has.
fn canonical_base(name: &str) -> Option<BaseChain> {
    Hook::ALL.iter().find(|h| h.name() == name).map(|h| BaseChain {
        chain_type: "filter".into(),
        hook: h.name().into(),
        priority: PRIORITY,
        policy: "accept".into(),
    })
}

fn set_decl(name: &str, key_type: &str, interval: bool) -> String {
    let flags = if interval { " flags interval;" } else { "" };
    format!("set {TABLE_FAMILY} {TABLE_NAME} {name} {{ type {key_type};{flags} }}")
}

fn base_decl(hook: &str) -> String {
    format!("{{ type filter hook {hook} priority filter; policy accept; }}")
}

/// The one `nft -f` transaction that brings our table to `b`, whatever it
/// holds now (`seen`; None when it is absent or unknown). The table is
/// updated in place, never deleted: every chain is flushed and refilled and
/// every set flushed and refilled inside the transaction, so packets see the
/// old rules or the new ones and nothing in between. (Deleting and
/// re-creating the table in one transaction is not: measured on kernel 6.18,
/// pods got through during the swap of an interval set.) Objects the policy
/// no longer has are removed idempotently (`add` then `delete`), and objects
/// read back that are foreign or of another shape are deleted before they are
/// declared again.
pub fn script(b: &Blocklist, seen: Option<&NftState>) -> String {
    let want = desired_state(b);
    let t = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!(
        "# apiserver-guard: updates table {t} in one atomic transaction"
    ));
    line(format!(
        "add table {t} {{ comment \"managed by apiserver-guard; edits are reverted\"; }}"
    ));

    // 1. Empty every chain that may exist, so no rule references a set we change.
    let known_chains: Vec<(String, Option<String>)> = std::iter::once((GUARD_CHAIN.to_string(), None))
        .chain(
            Hook::ALL
                .iter()
                .map(|h| (h.name().to_string(), Some(base_decl(h.name())))),
        )
        .collect();
    for (name, decl) in &known_chains {
        let reshaped = seen
            .and_then(|st| st.chains.get(name))
            .is_some_and(|got| got.base != canonical_base(name));
        // A chain of another shape cannot be declared over: flush and delete it first.
        if reshaped {
            line(format!("flush chain {t} {name}"));
            line(format!("delete chain {t} {name}"));
            continue;
        }
        line(
            format!("add chain {t} {name} {}", decl.clone().unwrap_or_default())
                .trim_end()
                .to_string(),
        );
        line(format!("flush chain {t} {name}"));
    }
    let foreign_chains: Vec<&String> = seen
        .map(|st| {
            st.chains
                .keys()
                .filter(|n| !known_chains.iter().any(|(k, _)| k == *n))
                .collect()
        })
        .unwrap_or_default();
    for name in &foreign_chains {
        line(format!("flush chain {t} {name}"));
    }
    // 2. Remove what the policy does not have.
    for (name, _) in known_chains.iter().filter(|(n, _)| !want.chains.contains_key(n)) {
        line(format!("delete chain {t} {name}"));
    }
    for name in foreign_chains {
        line(format!("delete chain {t} {name}"));
    }
    for fam in Family::ALL {
        for kind in SET_KINDS {
            let name = set_name(kind, fam);
            let (key_type, interval) = set_def(kind, fam);
            let got = seen.and_then(|st| st.sets.get(&name));
            let reshaped = got.is_some_and(|g| g.key_type != key_type || g.interval != interval);
            if reshaped {
                line(format!("delete set {t} {name}"));
            } else if !want.sets.contains_key(&name) {
                line(set_decl(&name, &key_type, interval));
                line(format!("delete set {t} {name}"));
            }
        }
    }
    for (name, key_type, interval) in [
        (LOCAL_PORTS_SET, LOCAL_PORTS_TYPE, false),
        (LINK_LOCAL_SET, "ipv6_addr", true),
    ] {
        let got = seen.and_then(|st| st.sets.get(name));
        if got.is_some_and(|g| g.key_type != key_type || g.interval != interval) {
            line(format!("delete set {t} {name}"));
        } else if !want.sets.contains_key(name) {
            line(set_decl(name, key_type, interval));
            line(format!("delete set {t} {name}"));
        }
    }
    if let Some(st) = seen {
        for name in st.sets.keys().filter(|n| !is_our_set(n)) {
            line(format!("delete set {t} {name}"));
        }
    }
    // 3. Declare and fill what the policy has.
    for (name, set) in &want.sets {
        line(set_decl(name, &set.key_type, set.interval));
        line(format!("flush set {t} {name}"));
        if !set.elements.is_empty() {
            let elems: Vec<&str> = set.elements.iter().map(String::as_str).collect();
            line(format!("add element {t} {name} {{ {} }}", elems.join(", ")));
        }
    }
    line(format!("add chain {t} {GUARD_CHAIN}"));
    for r in b.rules() {
        line(format!("add rule {t} {GUARD_CHAIN} {}", rule_text(&r).0));
    }
    for hook in &b.hooks {
        line(format!("add chain {t} {} {}", hook.name(), base_decl(hook.name())));
        line(format!(
            "add rule {t} {} jump {GUARD_CHAIN} comment \"{ENTER_COMMENT}\"",
            hook.name()
        ));
    }
    s
}

/// When our table differs from `b` only in set elements (same chains and
/// rules, same sets of the same shape), the transaction that deletes and adds
/// just those elements: an allow-list or endpoint change touches no rule and
/// leaves every other element (and the counters) alone. None when anything
/// else differs (then `script` is the way) or nothing does.
pub fn element_update(b: &Blocklist, seen: &NftState) -> Option<String> {
    let want = desired_state(b);
    let same_shape = want.chains == seen.chains
        && want.sets.len() == seen.sets.len()
        && want.sets.iter().all(|(name, w)| {
            seen.sets
                .get(name)
                .is_some_and(|g| g.key_type == w.key_type && g.interval == w.interval)
        });
    if !same_shape || want == *seen {
        return None;
    }
    let t = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let mut s = format!("# apiserver-guard: element update of table {t}, one atomic transaction\n");
    // Deletions first: an aggregated element may replace the ones it covers.
    for (verb, from, to) in [("delete", seen, &want), ("add", &want, seen)] {
        for (name, set) in &from.sets {
            let other = &to.sets[name].elements;
            let elems: Vec<&str> = set.elements.difference(other).map(String::as_str).collect();
            if !elems.is_empty() {
                s.push_str(&format!("{verb} element {t} {name} {{ {} }}\n", elems.join(", ")));
            }
        }
    }
    Some(s)
}

/// The script `remove` sends: gone if present, no error if absent.
pub fn delete_script() -> String {
    format!("table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n")
}

/// What a correctly installed table reads back as.
pub fn desired_state(b: &Blocklist) -> NftState {
    let mut state = NftState::default();
    for (fam, addrs) in &b.families {
        state.sets.extend(family_sets(*fam, addrs, b.dynamic_exempt));
    }
    state.sets.extend(shared_sets(b));
    let guard_rules = b
        .rules()
        .iter()
        .map(|r| RuleSig {
            comment: r.name(),
            sets: rule_text(r).1.into_iter().collect(),
            verdict: verdict_sig(r.verdict).to_string(),
            counter: r.blocks(),
        })
        .collect();
    state.chains.insert(
        GUARD_CHAIN.to_string(),
        NftChain {
            base: None,
            rules: guard_rules,
        },
    );
    for hook in &b.hooks {
        let enter = RuleSig {
            comment: ENTER_COMMENT.to_string(),
            sets: BTreeSet::new(),
            verdict: format!("jump {GUARD_CHAIN}"),
            counter: false,
        };
        let base = BaseChain {
            chain_type: "filter".into(),
            hook: hook.name().into(),
            priority: PRIORITY,
            policy: "accept".into(),
        };
        state.chains.insert(
            hook.name().to_string(),
            NftChain {
                base: Some(base),
                rules: vec![enter],
            },
        );
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::tests::policy;
    use crate::core::policy::{Action, Mode};

    fn blocklist(src: &[&str], ex: &[&str], api: &[&str], mode: Mode, action: Action) -> Blocklist {
        Blocklist::from_policy(&policy(src, ex, api, mode, action))
    }

    fn tunnel() -> Blocklist {
        blocklist(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        )
    }

    fn pos(s: &str, needle: &str) -> usize {
        s.find(needle).unwrap_or_else(|| panic!("missing {needle:?} in\n{s}"))
    }

    #[test]
    fn script_updates_the_table_in_place_never_deletes_it() {
        let s = script(&tunnel(), None);
        assert!(s.lines().nth(1).unwrap().starts_with("add table inet apiserver_guard"));
        assert!(!s.contains("delete table"), "{s}");
        assert!(s.contains("add element inet apiserver_guard sources_v4 { 10.0.0.0/16 }"));
        assert!(s.contains("set inet apiserver_guard api_port_v4 { type ipv4_addr . inet_service; }"));
        assert!(s.contains("add element inet apiserver_guard api_port_v4 { 192.168.0.10 . 5443 }"));
        assert!(s.contains(
            "add rule inet apiserver_guard guard ip saddr @sources_v4 ip daddr . tcp dport @api_port_v4 counter reject with tcp reset comment \"block-tcp-port-v4\""
        ));
        assert!(s.contains(
            "add chain inet apiserver_guard forward { type filter hook forward priority filter; policy accept; }"
        ));
    }

    #[test]
    fn chains_are_emptied_before_sets_change_and_refilled_after() {
        let s = script(&tunnel(), None);
        let flush_guard = pos(&s, "flush chain inet apiserver_guard guard");
        let flush_set = pos(&s, "flush set inet apiserver_guard sources_v4");
        let fill_set = pos(&s, "add element inet apiserver_guard sources_v4");
        let rule = pos(&s, "add rule inet apiserver_guard guard");
        let jump = pos(&s, "add rule inet apiserver_guard forward jump guard");
        assert!(flush_guard < flush_set && flush_set < fill_set && fill_set < rule && rule < jump);
    }

    #[test]
    fn what_the_policy_lacks_is_removed_idempotently() {
        let s = script(&tunnel(), None);
        // Mode tunnel: the output chain goes (declared first, so the delete works either way).
        let add = pos(&s, "add chain inet apiserver_guard output {");
        let del = pos(&s, "delete chain inet apiserver_guard output");
        assert!(add < del);
        // No exempt and no v6: those sets go the same way.
        assert!(s.contains("set inet apiserver_guard exempt_v4 { type ipv4_addr; flags interval; }\ndelete set inet apiserver_guard exempt_v4"));
        assert!(s.contains("delete set inet apiserver_guard sources_v6"));
        assert!(!s.contains("delete set inet apiserver_guard sources_v4"));
    }

    #[test]
    fn foreign_and_reshaped_objects_seen_are_deleted_first() {
        let b = tunnel();
        let mut seen = desired_state(&b);
        seen.chains.insert("weird".into(), NftChain::default());
        seen.sets.insert("foo".into(), NftSet::default());
        seen.chains.get_mut("forward").unwrap().base.as_mut().unwrap().priority = 10;
        seen.sets.get_mut("sources_v4").unwrap().interval = false;
        let s = script(&b, Some(&seen));
        assert!(pos(&s, "flush chain inet apiserver_guard weird") < pos(&s, "delete chain inet apiserver_guard weird"));
        assert!(s.contains("delete set inet apiserver_guard foo"));
        // The reshaped base chain is deleted, then declared again with our shape.
        let del = pos(&s, "delete chain inet apiserver_guard forward");
        let add = s.rfind("add chain inet apiserver_guard forward {").unwrap();
        assert!(del < add);
        let del_set = pos(&s, "delete set inet apiserver_guard sources_v4");
        assert!(
            del_set
                < pos(
                    &s,
                    "set inet apiserver_guard sources_v4 { type ipv4_addr; flags interval; }"
                )
        );
    }

    #[test]
    fn one_rule_however_many_cidrs() {
        // Every other /16, so aggregation cannot merge them.
        let many: Vec<String> = (0..120).map(|i| format!("10.{}.0.0/16", 2 * i)).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let b = blocklist(&refs, &[], &["192.168.0.10:443"], Mode::Both, Action::Reject);
        let s = script(&b, None);
        assert_eq!(s.matches("@sources_v4").count(), 1);
        assert_eq!(desired_state(&b).sets["sources_v4"].elements.len(), 120);
    }

    #[test]
    fn ipv6_exempt_portless_and_icmp_reject() {
        let s = script(
            &blocklist(
                &["fd00::/48"],
                &["fd00:0:0:9::/64"],
                &["fd01::1"],
                Mode::Vpc,
                Action::Reject,
            ),
            None,
        );
        assert!(s.contains("ip6 saddr @exempt_v6 return comment \"exempt-v6\""), "{s}");
        assert!(
            s.contains("ip6 saddr @sources_v6 ip6 daddr @api_any_v6 meta l4proto tcp counter reject with tcp reset")
        );
        assert!(
            s.contains("ip6 saddr @sources_v6 ip6 daddr @api_any_v6 counter reject with icmpx type admin-prohibited")
        );
        assert!(s.contains("add rule inet apiserver_guard output jump guard"));
        assert!(
            pos(&s, "exempt-v6") < pos(&s, "block-tcp-v6"),
            "the exempt rule comes first"
        );
    }

    #[test]
    fn drop_action_renders_drop() {
        let s = script(
            &blocklist(&["10.0.0.0/16"], &[], &["192.168.0.10"], Mode::Both, Action::Drop),
            None,
        );
        assert!(s.contains("counter drop comment \"block-all-v4\""));
        assert!(!s.contains("reject"));
    }

    #[test]
    fn desired_state_matches_what_the_script_declares() {
        let b = blocklist(
            &["10.0.0.0/16", "fd00::/48"],
            &["10.0.9.0/24"],
            &["192.168.0.10:5443", "fd01::1"],
            Mode::Both,
            Action::Reject,
        );
        let st = desired_state(&b);
        let s = script(&b, None);
        for name in st.sets.keys() {
            assert!(
                s.contains(&format!("add element inet apiserver_guard {name} {{")),
                "{name}"
            );
        }
        for (name, chain) in &st.chains {
            assert!(s.contains(&format!("add chain inet apiserver_guard {name}")), "{name}");
            for r in &chain.rules {
                assert!(s.contains(&format!("comment \"{}\"", r.comment)));
                for set in &r.sets {
                    assert!(
                        st.sets.contains_key(set),
                        "rule {} uses undeclared set {set}",
                        r.comment
                    );
                }
            }
        }
        assert_eq!(st.chains["output"].base.as_ref().unwrap().priority, 0);
    }

    #[test]
    fn delete_script_is_idempotent_form() {
        assert_eq!(
            delete_script(),
            "table inet apiserver_guard\ndelete table inet apiserver_guard\n"
        );
    }

    fn with_exempt(ex: &[&str], dynamic: bool) -> Blocklist {
        let mut p = policy(
            &["10.0.0.0/16"],
            ex,
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.dynamic_exempt = dynamic;
        Blocklist::from_policy(&p)
    }

    #[test]
    fn dynamic_exempt_declares_an_empty_set_and_its_rule() {
        let b = with_exempt(&[], true);
        let s = script(&b, None);
        assert!(s.contains("set inet apiserver_guard exempt_v4 { type ipv4_addr; flags interval; }\nflush set inet apiserver_guard exempt_v4\n"), "{s}");
        assert!(
            !s.contains("add element inet apiserver_guard exempt_v4"),
            "an empty element list is a syntax error: {s}"
        );
        assert!(s.contains("ip saddr @exempt_v4 return comment \"exempt-v4\""));
        assert!(desired_state(&b).sets["exempt_v4"].elements.is_empty());
    }

    #[test]
    fn element_update_touches_only_the_changed_elements() {
        let before = desired_state(&with_exempt(&["10.0.1.5/32", "10.0.9.9/32"], true));
        let s = element_update(&with_exempt(&["10.0.9.9/32", "10.0.1.7/32"], true), &before).unwrap();
        assert_eq!(
            s.lines().skip(1).collect::<Vec<_>>(),
            vec![
                "delete element inet apiserver_guard exempt_v4 { 10.0.1.5/32 }",
                "add element inet apiserver_guard exempt_v4 { 10.0.1.7/32 }",
            ]
        );
        // To empty and back: still only elements, because the set stays.
        let empty = with_exempt(&[], true);
        let s = element_update(&empty, &before).unwrap();
        assert!(
            s.contains("delete element inet apiserver_guard exempt_v4 { 10.0.1.5/32, 10.0.9.9/32 }"),
            "{s}"
        );
        assert!(!s.contains("add "), "{s}");
        // Aggregation: two neighbours become one element, deleted before the wider one is added.
        let pair = with_exempt(&["10.0.1.4/32", "10.0.1.5/32"], true);
        let s = element_update(&pair, &desired_state(&with_exempt(&["10.0.1.5/32"], true))).unwrap();
        assert!(
            pos(&s, "delete element inet apiserver_guard exempt_v4 { 10.0.1.5/32 }")
                < pos(&s, "add element inet apiserver_guard exempt_v4 { 10.0.1.4/31 }")
        );
    }

    #[test]
    fn element_update_declines_anything_but_elements() {
        let b = with_exempt(&["10.0.1.5/32"], true);
        let seen = desired_state(&b);
        assert_eq!(element_update(&b, &seen), None, "nothing to change");
        // A rule change (static exempt going empty drops its rule): full script.
        assert_eq!(
            element_update(
                &with_exempt(&[], false),
                &desired_state(&with_exempt(&["10.0.1.5/32"], false))
            ),
            None
        );
        // A missing set, a reshaped set, a changed chain: full script.
        let mut gone = seen.clone();
        gone.sets.remove("exempt_v4");
        assert_eq!(element_update(&with_exempt(&["10.0.1.6/32"], true), &gone), None);
        let mut reshaped = seen.clone();
        reshaped.sets.get_mut("exempt_v4").unwrap().interval = false;
        assert_eq!(element_update(&with_exempt(&["10.0.1.6/32"], true), &reshaped), None);
        let mut flushed = seen.clone();
        flushed.chains.get_mut("guard").unwrap().rules.clear();
        assert_eq!(element_update(&with_exempt(&["10.0.1.6/32"], true), &flushed), None);
        // Endpoint changes are element updates too.
        let mut p = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.11:5443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.dynamic_exempt = true;
        let s = element_update(&Blocklist::from_policy(&p), &desired_state(&with_exempt(&[], true))).unwrap();
        assert!(s.contains("delete element inet apiserver_guard api_port_v4 { 192.168.0.10 . 5443 }"));
        assert!(s.contains("add element inet apiserver_guard api_port_v4 { 192.168.0.11 . 5443 }"));
    }

    #[test]
    fn input_hook_gets_its_base_chain_and_is_removed_when_unused() {
        let mut p = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.local_apiservers = p.apiservers.clone();
        let s = script(&Blocklist::from_policy(&p), None);
        assert!(s.contains(
            "add chain inet apiserver_guard input { type filter hook input priority filter; policy accept; }"
        ));
        assert!(s.contains("add rule inet apiserver_guard input jump guard comment \"enter-guard\""));
        let s = script(&tunnel(), None);
        assert!(pos(&s, "add chain inet apiserver_guard input {") < pos(&s, "delete chain inet apiserver_guard input"));
    }

    #[test]
    fn a_local_apiserver_is_refused_at_every_local_address_on_its_port() {
        let mut p = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:6443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.local_apiservers = p.apiservers.clone();
        let b = Blocklist::from_policy(&p);
        let s = script(&b, None);
        assert!(s.contains("set inet apiserver_guard local_ports { type inet_service; }"));
        assert!(s.contains("add element inet apiserver_guard local_ports { 6443 }"));
        assert!(s.contains(
            "add rule inet apiserver_guard guard ip saddr @sources_v4 fib saddr type != local fib daddr type local tcp dport @local_ports counter reject with tcp reset comment \"block-local-port-v4\""
        ));
        assert!(!s.contains("delete set inet apiserver_guard local_ports"), "{s}");
        let state = desired_state(&b);
        assert_eq!(state.sets["local_ports"].elements, BTreeSet::from(["6443".to_string()]));
        // Without a local apiserver the set goes, idempotently.
        let s = script(&tunnel(), Some(&state));
        assert!(
            pos(&s, "set inet apiserver_guard local_ports { type inet_service; }")
                < pos(&s, "delete set inet apiserver_guard local_ports")
        );
    }
}
