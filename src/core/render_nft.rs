//! nftables rendering: the model becomes one `nft -f` script that replaces
//! our table atomically, and the `NftState` that a correct table reads back as.
//! Both come from the same per-rule translation below.

use super::model::{Blocklist, Family, FamilyAddrs, Rule, Target, Verdict};
use super::nft_state::{BaseChain, NftChain, NftSet, NftState, RuleSig};
use std::collections::BTreeSet;
use std::fmt::Write;

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

/// The sets of one family, as (name, key type, interval, elements).
fn family_sets(fam: Family, a: &FamilyAddrs) -> Vec<(String, NftSet)> {
    let addr_type = match fam {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    let mk = |key_type: String, interval: bool, elements: BTreeSet<String>| NftSet {
        key_type,
        interval,
        elements,
    };
    let nets = |v: &[ipnet::IpNet]| v.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let mut sets = vec![(set_name("sources", fam), mk(addr_type.into(), true, nets(&a.sources)))];
    if !a.exempt.is_empty() {
        sets.push((set_name("exempt", fam), mk(addr_type.into(), true, nets(&a.exempt))));
    }
    if !a.api_ports.is_empty() {
        let elems = a.api_ports.iter().map(|(ip, p)| format!("{ip} . {p}")).collect();
        sets.push((
            set_name("api_port", fam),
            mk(format!("{addr_type} . inet_service"), false, elems),
        ));
    }
    if !a.api_any.is_empty() {
        let elems = a.api_any.iter().map(|ip| ip.to_string()).collect();
        sets.push((set_name("api_any", fam), mk(addr_type.into(), false, elems)));
    }
    sets
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

/// The script `apply` sends: declare, delete and re-create our table in one
/// transaction (the kernel swaps it whole, so there is no moment without it).
pub fn script(b: &Blocklist) -> String {
    let mut s = String::new();
    let t = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let _ = writeln!(s, "# apiserver-guard: replaces table {t} in one atomic transaction");
    let _ = writeln!(s, "table {t}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "table {t} {{");
    let _ = writeln!(s, "\tcomment \"managed by apiserver-guard; edits are reverted\"");
    for (fam, addrs) in &b.families {
        for (name, set) in family_sets(*fam, addrs) {
            let _ = writeln!(s, "\tset {name} {{");
            let _ = writeln!(s, "\t\ttype {}", set.key_type);
            if set.interval {
                let _ = writeln!(s, "\t\tflags interval");
            }
            let elems: Vec<&str> = set.elements.iter().map(String::as_str).collect();
            let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
            let _ = writeln!(s, "\t}}");
        }
    }
    let _ = writeln!(s, "\tchain {GUARD_CHAIN} {{");
    for r in b.rules() {
        let _ = writeln!(s, "\t\t{}", rule_text(&r).0);
    }
    let _ = writeln!(s, "\t}}");
    for hook in &b.hooks {
        let _ = writeln!(s, "\tchain {} {{", hook.name());
        let _ = writeln!(
            s,
            "\t\ttype filter hook {} priority filter; policy accept;",
            hook.name()
        );
        let _ = writeln!(s, "\t\tjump {GUARD_CHAIN} comment \"{ENTER_COMMENT}\"");
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// The script `remove` sends: gone if present, no error if absent.
pub fn delete_script() -> String {
    format!("table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n")
}

/// What a correctly installed table reads back as.
pub fn desired_state(b: &Blocklist) -> NftState {
    let mut state = NftState::default();
    for (fam, addrs) in &b.families {
        state.sets.extend(family_sets(*fam, addrs));
    }
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

    #[test]
    fn script_replaces_the_table_in_one_transaction() {
        let s = script(&blocklist(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        ));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], "table inet apiserver_guard");
        assert_eq!(lines[2], "delete table inet apiserver_guard");
        assert_eq!(lines[3], "table inet apiserver_guard {");
        assert!(s.contains("elements = { 10.0.0.0/16 }"));
        assert!(s.contains("type ipv4_addr . inet_service"));
        assert!(s.contains("elements = { 192.168.0.10 . 5443 }"));
        assert!(s.contains(
            "ip saddr @sources_v4 ip daddr . tcp dport @api_port_v4 counter reject with tcp reset comment \"block-tcp-port-v4\""
        ));
        assert!(s.contains("type filter hook forward priority filter; policy accept;"));
        assert!(!s.contains("hook output"), "tunnel mode hooks forward only");
    }

    #[test]
    fn one_rule_however_many_cidrs() {
        // Every other /16, so aggregation cannot merge them.
        let many: Vec<String> = (0..120).map(|i| format!("10.{}.0.0/16", 2 * i)).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let b = blocklist(&refs, &[], &["192.168.0.10:443"], Mode::Both, Action::Reject);
        let s = script(&b);
        assert_eq!(s.matches("@sources_v4").count(), 1);
        assert_eq!(desired_state(&b).sets["sources_v4"].elements.len(), 120);
    }

    #[test]
    fn ipv6_exempt_portless_and_icmp_reject() {
        let s = script(&blocklist(
            &["fd00::/48"],
            &["fd00:0:0:9::/64"],
            &["fd01::1"],
            Mode::Vpc,
            Action::Reject,
        ));
        assert!(s.contains("ip6 saddr @exempt_v6 return comment \"exempt-v6\""), "{s}");
        assert!(
            s.contains("ip6 saddr @sources_v6 ip6 daddr @api_any_v6 meta l4proto tcp counter reject with tcp reset")
        );
        assert!(
            s.contains("ip6 saddr @sources_v6 ip6 daddr @api_any_v6 counter reject with icmpx type admin-prohibited")
        );
        assert!(s.contains("hook output"));
        // The exempt rule comes before every block rule.
        assert!(s.find("exempt-v6").unwrap() < s.find("block-tcp-v6").unwrap());
    }

    #[test]
    fn drop_action_renders_drop() {
        let s = script(&blocklist(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10"],
            Mode::Both,
            Action::Drop,
        ));
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
        let s = script(&b);
        for name in st.sets.keys() {
            assert!(s.contains(&format!("set {name} {{")), "{name}");
        }
        for (name, chain) in &st.chains {
            assert!(s.contains(&format!("chain {name} {{")), "{name}");
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
}
