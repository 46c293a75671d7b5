//! iptables rendering: the model becomes the rule lines of our own chain
//! (spelled exactly as `iptables -S` prints them, so read-back is a string
//! compare) and `iptables-restore --noflush` payloads that install, move or
//! remove our jumps in one transaction per address family.

use super::attempt_log::LOG_SNAPLEN;
use super::meter_keys::{family_keys, FamilyKeys, LINK_LOCAL_METER_NAME, METER_NAME};
use super::model::{Blocklist, Family, Rule, Target, Verdict, METER};
use super::policy::Hook;
use ipnet::IpNet;
use std::net::IpAddr;

pub const CHAIN: &str = "APISERVER-GUARD";
pub const COMMENT: &str = "apiserver-guard";
/// IPv6 link-local sources (`Target::LocalPortLinkLocal`).
pub const LINK_LOCAL_V6: &str = "fe80::/10";

/// The jump rule as `iptables -S <HOOK> 1` prints it.
pub fn jump_line(hook: Hook) -> String {
    format!("-A {} {}", hook.iptables_chain(), jump_spec())
}

/// The match and target of our jump rule, as iptables-save prints it.
pub fn jump_spec() -> String {
    format!("-m comment --comment {COMMENT} -j {CHAIN}")
}

fn host(ip: &IpAddr) -> String {
    IpNet::from(*ip).to_string()
}

/// The per-source limit of a log rule whose table is keyed by `keys`, as
/// `iptables -S` prints it (`--hashlimit-srcmask` only when keys are blocks
/// of addresses: `meter_keys`).
fn meter_spec(keys: &FamilyKeys) -> String {
    let mask = if keys.masked() {
        format!(" --hashlimit-srcmask {}", keys.key_prefix)
    } else {
        String::new()
    };
    format!(
        "-m hashlimit --hashlimit-upto {}/sec --hashlimit-burst {} --hashlimit-mode srcip --hashlimit-name {} \
         --hashlimit-htable-max {} --hashlimit-htable-expire {}{mask} ",
        METER.rate,
        METER.burst,
        keys.table_name(),
        keys.table_max,
        METER.timeout_secs * 1000
    )
}

/// What follows the match of a rule from `src`, as `iptables -S` prints it:
/// the log rules' per-source limit, the comment, the target (none for an
/// audit rule: it only counts).
fn action_spec(r: &Rule, keys: &FamilyKeys) -> String {
    let target = match (r.verdict, r.family) {
        (Verdict::Return, _) => " -j RETURN".to_string(),
        (Verdict::TcpReset, _) => " -j REJECT --reject-with tcp-reset".into(),
        (Verdict::IcmpProhibited, Family::V4) => " -j REJECT --reject-with icmp-admin-prohibited".into(),
        (Verdict::IcmpProhibited, Family::V6) => " -j REJECT --reject-with icmp6-adm-prohibited".into(),
        (Verdict::Drop, _) => " -j DROP".into(),
        (Verdict::Count, _) => String::new(),
        (Verdict::Log { group, .. }, _) => {
            // iptables-save leaves out group 0.
            let group = if group != 0 {
                format!(" --nflog-group {group}")
            } else {
                String::new()
            };
            format!(
                " -j NFLOG --nflog-prefix \"{}\"{group} --nflog-size {LOG_SNAPLEN}",
                r.log_prefix().expect("a log rule has a prefix")
            )
        }
    };
    let meter = match r.verdict {
        Verdict::Log { .. } => meter_spec(keys),
        _ => String::new(),
    };
    format!("{meter}-m comment --comment {COMMENT}{target}")
}

fn link_local_v6() -> IpNet {
    LINK_LOCAL_V6.parse().expect("a valid constant")
}

/// How the log rules of `fam` key their tables: the container CIDRs' table
/// and the link-local rule's (`meter_keys`).
struct Meters {
    containers: FamilyKeys,
    link_local: FamilyKeys,
}

impl Meters {
    /// The keys of `r`'s table: the link-local rule's own, else the container CIDRs'.
    fn of(&self, r: &Rule) -> &FamilyKeys {
        if r.target == Target::LocalPortLinkLocal {
            &self.link_local
        } else {
            &self.containers
        }
    }
}

fn meters(b: &Blocklist, fam: Family) -> Meters {
    let bits = match fam {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let sources = b.addrs(fam).map(|a| a.sources.clone()).unwrap_or_default();
    Meters {
        containers: family_keys(&sources, bits, METER_NAME),
        link_local: family_keys(&[link_local_v6()], 128, LINK_LOCAL_METER_NAME),
    }
}

/// Expands one abstract rule over the addresses (iptables has no sets here:
/// one line per source and destination).
fn rule_lines(r: &Rule, b: &Blocklist, meters: &Meters) -> Vec<String> {
    let keys = meters.of(r);
    // Every local address on a local apiserver's port, from the given sources.
    let local_port_lines = |sources: &[IpNet], keys: &FamilyKeys| -> Vec<String> {
        let tail = action_spec(r, keys);
        sources
            .iter()
            .flat_map(|src| {
                let tail = tail.clone();
                b.local_ports.iter().map(move |port| {
                    format!(
                        "-A {CHAIN} -s {src} -p tcp -m addrtype ! --src-type LOCAL --dst-type LOCAL -m tcp --dport {port} {tail}"
                    )
                })
            })
            .collect()
    };
    if r.target == Target::LocalPortLinkLocal {
        return local_port_lines(&[link_local_v6()], keys);
    }
    let Some(a) = b.addrs(r.family) else { return Vec::new() };
    let mut out = Vec::new();
    match r.target {
        Target::Exempt => {
            for ex in &a.exempt {
                out.push(format!("-A {CHAIN} -s {ex} {}", action_spec(r, keys)));
            }
        }
        Target::ApiPort => {
            for src in &a.sources {
                let tail = action_spec(r, keys);
                for (ip, port) in &a.api_ports {
                    out.push(format!(
                        "-A {CHAIN} -s {src} -d {} -p tcp -m tcp --dport {port} {tail}",
                        host(ip)
                    ));
                }
            }
        }
        // Needs no addresses of the family: handled above.
        Target::LocalPortLinkLocal => {}
        Target::LocalPort => out.extend(local_port_lines(&a.sources, keys)),
        Target::ApiAny => {
            let proto = if r.tcp_only { "-p tcp " } else { "" };
            for src in &a.sources {
                let tail = action_spec(r, keys);
                for ip in &a.api_any {
                    out.push(format!("-A {CHAIN} -s {src} -d {} {proto}{tail}", host(ip)));
                }
            }
        }
    }
    out
}

/// What one address family should hold: our chain's rules and the hooks that jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptDesired {
    pub rules: Vec<String>,
    pub hooks: Vec<Hook>,
}

/// The hashlimit tables (`--hashlimit-name`) the log rules of `fam` name, each once.
pub fn meter_names(b: &Blocklist, fam: Family) -> Vec<String> {
    let meters = meters(b, fam);
    let mut names: Vec<String> = b
        .rules()
        .iter()
        .filter(|r| {
            r.family == fam && matches!(r.verdict, Verdict::Log { .. }) && !rule_lines(r, b, &meters).is_empty()
        })
        .map(|r| meters.of(r).table_name())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The desired state of a family; None when the policy blocks nothing there.
pub fn desired(b: &Blocklist, fam: Family) -> Option<IptDesired> {
    let meters = meters(b, fam);
    let rules: Vec<String> = b
        .rules()
        .iter()
        .filter(|r| r.family == fam)
        .flat_map(|r| rule_lines(r, b, &meters))
        .collect();
    if b.addrs(fam).is_none() && rules.is_empty() {
        return None;
    }
    Some(IptDesired {
        rules,
        hooks: b.hooks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::tests::policy;
    use crate::core::policy::{Action, Mode};

    fn bl(src: &[&str], ex: &[&str], api: &[&str], mode: Mode, action: Action) -> Blocklist {
        Blocklist::from_policy(&policy(src, ex, api, mode, action))
    }

    #[test]
    fn rules_are_spelled_as_iptables_prints_them() {
        let b = bl(
            &["10.0.0.0/16"],
            &["10.0.9.0/24"],
            &["192.168.0.10:5443", "192.168.0.11"],
            Mode::Both,
            Action::Reject,
        );
        let d = desired(&b, Family::V4).unwrap();
        assert_eq!(
            d.rules,
            vec![
                "-A APISERVER-GUARD -s 10.0.9.0/24 -m comment --comment apiserver-guard -j RETURN",
                "-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.10/32 -p tcp -m tcp --dport 5443 -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset",
                "-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.11/32 -p tcp -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset",
                "-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.11/32 -m comment --comment apiserver-guard -j REJECT --reject-with icmp-admin-prohibited",
            ]
        );
        assert!(desired(&b, Family::V6).is_none());
    }

    #[test]
    fn ipv6_and_drop() {
        let b = bl(
            &["fd00::/48"],
            &[],
            &["fd01::1", "[fd01::2]:443"],
            Mode::Tunnel,
            Action::Drop,
        );
        let d = desired(&b, Family::V6).unwrap();
        assert_eq!(
            d.rules,
            vec![
                "-A APISERVER-GUARD -s fd00::/48 -d fd01::2/128 -p tcp -m tcp --dport 443 -m comment --comment apiserver-guard -j DROP",
                "-A APISERVER-GUARD -s fd00::/48 -d fd01::1/128 -m comment --comment apiserver-guard -j DROP",
            ]
        );
        assert_eq!(d.hooks, vec![Hook::Forward]);
        let r = bl(&["fd00::/48"], &[], &["fd01::1"], Mode::Tunnel, Action::Reject);
        assert!(desired(&r, Family::V6).unwrap().rules[1].ends_with("--reject-with icmp6-adm-prohibited"));
    }

    #[test]
    fn rules_multiply_sources_by_apiservers() {
        let b = bl(
            &["10.0.0.0/16", "10.2.0.0/16"],
            &[],
            &["1.1.1.1:443", "1.1.1.2:443"],
            Mode::Both,
            Action::Reject,
        );
        assert_eq!(desired(&b, Family::V4).unwrap().rules.len(), 4);
    }

    #[test]
    fn a_local_apiserver_is_refused_at_every_local_address_but_not_from_the_node_itself() {
        let mut p = policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[],
            &["192.168.0.1:6443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.local_apiservers = p.apiservers.clone();
        let b = Blocklist::from_policy(&p);
        let v6 = desired(&b, Family::V6).unwrap();
        assert_eq!(
            v6.rules,
            vec![
                "-A APISERVER-GUARD -s fd00::/48 -p tcp -m addrtype ! --src-type LOCAL --dst-type LOCAL -m tcp --dport 6443 -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset",
                "-A APISERVER-GUARD -s fe80::/10 -p tcp -m addrtype ! --src-type LOCAL --dst-type LOCAL -m tcp --dport 6443 -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
            ]
        );
        // An IPv4-only policy still gets the IPv6 link-local rule: every pod has such an address.
        let mut p4 = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.1:6443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p4.local_apiservers = p4.apiservers.clone();
        let ll = desired(&Blocklist::from_policy(&p4), Family::V6).unwrap();
        assert_eq!(ll.rules.len(), 1);
        assert!(ll.rules[0].contains("-s fe80::/10"), "{:?}", ll.rules);
        assert_eq!(v6.hooks, vec![Hook::Forward, Hook::Input]);
        assert_eq!(desired(&b, Family::V4).unwrap().rules.len(), 2);
    }

    #[test]
    fn meter_names_are_the_tables_the_rendered_log_rules_name() {
        let mut local = policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[],
            &["192.168.0.1:6443"],
            Mode::Tunnel,
            Action::Reject,
        );
        local.local_apiservers = local.apiservers.clone();
        let wide = policy(
            &["10.0.0.0/15", "10.9.0.0/24"],
            &[],
            &["192.168.0.10"],
            Mode::Both,
            Action::Audit,
        );
        let plain = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        );
        for mut p in [local, wide, plain] {
            for group in [Some(1443), None] {
                p.log_group = group;
                let b = Blocklist::from_policy(&p);
                for fam in [Family::V4, Family::V6] {
                    let rendered = desired(&b, fam).map(|d| d.rules).unwrap_or_default();
                    let mut named: Vec<String> = rendered
                        .iter()
                        .flat_map(|r| crate::core::meter_holders::hashlimit_names(r))
                        .collect();
                    named.sort();
                    named.dedup();
                    assert_eq!(meter_names(&b, fam), named, "{fam:?} {group:?} {rendered:#?}");
                }
            }
        }
    }

    #[test]
    fn jump_line_matches_listing() {
        assert_eq!(
            jump_line(Hook::Output),
            "-A OUTPUT -m comment --comment apiserver-guard -j APISERVER-GUARD"
        );
    }

    #[test]
    fn log_rules_meter_per_source_then_nflog_and_audit_rules_have_no_target() {
        let mut p = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.log_group = Some(1443);
        let d = desired(&Blocklist::from_policy(&p), Family::V4).unwrap();
        assert_eq!(
            d.rules,
            [
                "-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.10/32 -p tcp -m tcp --dport 5443 -m hashlimit \
                 --hashlimit-upto 10/sec --hashlimit-burst 20 --hashlimit-mode srcip --hashlimit-name apiserver-guard-m32 \
                 --hashlimit-htable-max 65536 --hashlimit-htable-expire 60000 -m comment --comment apiserver-guard \
                 -j NFLOG --nflog-prefix \"apiserver-guard:block-tcp-port-v4\" --nflog-group 1443 --nflog-size 96",
                "-A APISERVER-GUARD -s 10.0.0.0/16 -d 192.168.0.10/32 -p tcp -m tcp --dport 5443 -m comment \
                 --comment apiserver-guard -j REJECT --reject-with tcp-reset",
            ]
        );
        p.action = Action::Audit;
        p.log_group = Some(0);
        let d = desired(&Blocklist::from_policy(&p), Family::V4).unwrap();
        // iptables-save leaves out group 0.
        assert!(d.rules[0].ends_with("-j NFLOG --nflog-prefix \"apiserver-guard:audit-tcp-port-v4\" --nflog-size 96"));
        assert!(
            d.rules[1].ends_with("--dport 5443 -m comment --comment apiserver-guard"),
            "{}",
            d.rules[1]
        );
        p.log_group = None;
        assert_eq!(desired(&Blocklist::from_policy(&p), Family::V4).unwrap().rules.len(), 1);
    }

    #[test]
    fn log_rules_key_wide_sources_by_block_so_the_meter_cannot_fill() {
        let mut p = policy(
            &["10.0.0.0/8", "fd00::/48"],
            &[],
            &["192.168.0.10:5443", "[fd01::1]:5443"],
            Mode::Tunnel,
            Action::Audit,
        );
        p.log_group = Some(1443);
        let b = Blocklist::from_policy(&p);
        let v4 = &desired(&b, Family::V4).unwrap().rules[0];
        assert!(
            v4.contains(
                "--hashlimit-htable-max 65536 --hashlimit-htable-expire 60000 --hashlimit-srcmask 24 -m comment"
            ),
            "{v4}"
        );
        let v6 = &desired(&b, Family::V6).unwrap().rules[0];
        assert!(
            v6.contains("--hashlimit-htable-expire 60000 --hashlimit-srcmask 64 -m comment"),
            "{v6}"
        );
    }

    #[test]
    fn every_log_rule_of_a_family_keys_the_shared_table_alike() {
        // The kernel keys a hashlimit table with its creator's mask: the /24 must not
        // set the mask of the /15 (one key per address would be 131,072 keys).
        let mut p = policy(
            &["10.9.0.0/24", "10.0.0.0/15"],
            &[],
            &["192.168.0.10:5443", "192.168.0.11"],
            Mode::Both,
            Action::Audit,
        );
        p.log_group = Some(1443);
        p.local_apiservers = Vec::new();
        let d = desired(&Blocklist::from_policy(&p), Family::V4).unwrap();
        let specs: std::collections::BTreeSet<&str> = d
            .rules
            .iter()
            .filter_map(|l| {
                l.split_once("-m hashlimit ")
                    .map(|(_, rest)| rest.split(" -m comment").next().unwrap())
            })
            .collect();
        assert_eq!(specs.len(), 1, "{specs:?}");
        let spec = specs.into_iter().next().unwrap();
        assert!(
            spec.contains("--hashlimit-name apiserver-guard-m30 ") && spec.ends_with("--hashlimit-srcmask 30"),
            "{spec}"
        );
        assert!(d.rules.iter().filter(|l| l.contains("-m hashlimit")).count() >= 4);
    }
}
