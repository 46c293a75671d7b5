//! The backend-neutral rule model: one validated policy becomes, per address
//! family, the sets of addresses and the ordered list of abstract rules every
//! backend installs. This is the only place that decides *which* rules exist;
//! the renderers only translate them into nft or iptables syntax.

use super::address::Endpoint;
use super::policy::{Action, Hook, Policy};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of_ip(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of_ip(&net.addr())
    }

    /// "v4" / "v6", used in object names.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// Which destinations a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Source in the exempt set: leave our chain, untouched.
    Exempt,
    /// Destination address and TCP port in the `address:port` endpoints.
    ApiPort,
    /// Destination address in the port-less endpoints (every protocol and port).
    ApiAny,
    /// Destination any address of this node (`fib daddr type local`,
    /// `-m addrtype --dst-type LOCAL`) on a TCP port of an apiserver that
    /// runs here: kube-apiserver listens on every address, so blocking only
    /// the address it was named by would leave the node's others open.
    /// Sources that are the node's own addresses are left alone: the node's
    /// bridge address (e.g. `cni0`) lies in the container CIDR, and the node
    /// talking to itself through it is not a pod.
    LocalPort,
    /// The same, from an IPv6 link-local source (`fe80::/10`, always IPv6):
    /// every pod has such an address on its interface, outside any container
    /// CIDR, and the node answers it through that interface, so without this
    /// rule a pod reaches a local apiserver at the node's link-local address.
    LocalPortLinkLocal,
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stop evaluating our rules (exempt sources).
    Return,
    /// Answer with a TCP reset (TCP only).
    TcpReset,
    /// Answer with ICMP "administratively prohibited".
    IcmpProhibited,
    Drop,
    /// No verdict: count the packet and let it go on (`--action audit`).
    Count,
    /// No verdict: copy the packet's headers to NFLOG `group`, at most
    /// `METER` per source address; the rule after it (same match) decides.
    /// `audit`: that rule only counts.
    Log {
        group: u16,
        audit: bool,
    },
}

/// The per-source limit of the log rules, kept by the kernel: dynamic sets
/// per family (nft `update @connects_v4 { iif . ip saddr limit ... }` for
/// connects, `@flows_v4` keyed on the source port too for TCP's other
/// packets, `@attempts_v4` for the rest: `nft_desired`; iptables `-m
/// hashlimit --hashlimit-mode srcip`), so one flooding pod uses up its own
/// allowance and never another pod's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    /// Logged packets per second per source.
    pub rate: u64,
    pub burst: u32,
    /// A source not seen this long is forgotten.
    pub timeout_secs: u64,
    /// Sources remembered at most (beyond it, new sources are not logged; the block is unaffected).
    pub size: u32,
}

pub const METER: Meter = Meter {
    rate: 10,
    burst: 20,
    timeout_secs: 60,
    size: 65535,
};

/// The per-interface limits of the nftables log rules, on top of `METER`:
/// every logged packet also counts against the interface it came in on
/// (`meta iif`; 0 for the node's own packets), which a pod cannot forge. A
/// source not yet in the per-source meter is logged (and added to it) only
/// within `METER_IIF_NEW` of its interface; a known source within
/// `METER_IIF_KNOWN`. So a pod forging source addresses gets at most
/// `METER_IIF_NEW` new sources a second into the meter (it cannot fill it)
/// and at most both limits of log messages a second (it cannot flood the
/// daemon), while a pod on another interface keeps all of its own; and a
/// flooding pod, over its own per-source limit, never uses any of the
/// budget for new sources. Pods that share an interface (a bridge CNI)
/// share these budgets. The connect and push log rules have a second pair
/// of these allowances of their own (`nft_desired::IIF_NEW_INITIATED_SET`),
/// which the answers forged packets draw from a pod cannot spend: an
/// interface logs at most twice both limits a second.
pub const METER_IIF_NEW: Meter = Meter {
    rate: 200,
    burst: 400,
    timeout_secs: 60,
    size: 65535,
};
pub const METER_IIF_KNOWN: Meter = Meter {
    rate: 1000,
    burst: 2000,
    timeout_secs: 60,
    size: 65535,
};

/// One abstract rule, before any backend syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub target: Target,
    /// Match TCP only.
    pub tcp_only: bool,
    pub verdict: Verdict,
}

/// Every log rule's prefix starts with this, followed by the comment of the
/// rule whose match it shares (`apiserver-guard:block-tcp-port-v4`).
pub const LOG_PREFIX: &str = "apiserver-guard:";

/// What a kind of block rule matches, as its name says it (`tcp-port` in
/// `block-tcp-port-v4`), and whether that match takes TCP only.
fn match_name(target: Target, tcp_only: bool) -> (&'static str, bool) {
    match (target, tcp_only) {
        (Target::Exempt, _) => ("exempt", false),
        (Target::ApiPort, _) => ("tcp-port", true),
        (Target::ApiAny, true) => ("tcp", true),
        (Target::ApiAny, false) => ("all", false),
        (Target::LocalPort, _) => ("local-port", true),
        (Target::LocalPortLinkLocal, _) => ("local-port-link-local", true),
    }
}

/// Whether the rule named `name` (as [`Rule::name`] builds it, with or
/// without its `log-` prefix) matches TCP only; false for any other name.
pub fn named_rule_takes_only_tcp(name: &str) -> bool {
    let name = name.strip_prefix("log-").unwrap_or(name);
    let Some(what) = name.strip_prefix("block-").or_else(|| name.strip_prefix("audit-")) else {
        return false;
    };
    let kinds = [
        Target::ApiPort,
        Target::ApiAny,
        Target::LocalPort,
        Target::LocalPortLinkLocal,
    ];
    kinds.iter().flat_map(|t| [(*t, true), (*t, false)]).any(|(t, tcp)| {
        let (m, only_tcp) = match_name(t, tcp);
        let named = match t {
            Target::LocalPortLinkLocal => what == m,
            _ => what.strip_prefix(m).is_some_and(|f| f == "-v4" || f == "-v6"),
        };
        named && only_tcp
    })
}

impl Rule {
    /// Stable name, used as the nftables rule comment and in drift reports:
    /// `exempt-v4`, `block-tcp-port-v4`, `audit-tcp-port-v4` (`--action
    /// audit`), `log-block-tcp-port-v4` (the log rule before it: on
    /// nftables the stem of its log rules' names, `...-connect`, `...-flow`).
    pub fn name(&self) -> String {
        if self.target == Target::Exempt {
            return format!("exempt-{}", self.family.suffix());
        }
        let (what, _) = match_name(self.target, self.tcp_only);
        let what = match self.target {
            Target::LocalPortLinkLocal => what.to_string(),
            _ => format!("{what}-{}", self.family.suffix()),
        };
        match self.verdict {
            Verdict::Count => format!("audit-{what}"),
            Verdict::Log { audit: true, .. } => format!("log-audit-{what}"),
            Verdict::Log { audit: false, .. } => format!("log-block-{what}"),
            _ => format!("block-{what}"),
        }
    }

    /// Whether the rule's match takes TCP only (`tcp-port`, `tcp`, `local-port` rules).
    pub fn takes_only_tcp(&self) -> bool {
        self.target != Target::Exempt && match_name(self.target, self.tcp_only).1
    }

    /// Whether the rule counts the packets it matches (blocked or audited; metrics).
    pub fn blocks(&self) -> bool {
        !matches!(self.verdict, Verdict::Return | Verdict::Log { .. })
    }

    /// The NFLOG prefix of a log rule: [`LOG_PREFIX`] and the name of the
    /// rule it precedes (`apiserver-guard:block-tcp-port-v4`).
    pub fn log_prefix(&self) -> Option<String> {
        match self.verdict {
            Verdict::Log { .. } => Some(format!("{LOG_PREFIX}{}", &self.name()["log-".len()..])),
            _ => None,
        }
    }
}

/// The addresses of one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FamilyAddrs {
    /// Blocked container CIDRs, aggregated (no overlaps: nft interval sets refuse them).
    pub sources: Vec<IpNet>,
    /// Exempt sources, aggregated.
    pub exempt: Vec<IpNet>,
    /// Endpoints with a port (TCP to that port is blocked).
    pub api_ports: Vec<(IpAddr, u16)>,
    /// Endpoints without a port (everything to that address is blocked).
    pub api_any: Vec<IpAddr>,
}

/// Everything a backend needs to install: hooks, and per family the sets and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocklist {
    pub hooks: Vec<Hook>,
    pub action: Action,
    /// TCP ports of the apiservers on this node, blocked at every local
    /// address (both families: an apiserver bound to `[::]` answers on all).
    pub local_ports: Vec<u16>,
    /// Keep the exempt set and rule even when empty (see `Policy::dynamic_exempt`).
    pub dynamic_exempt: bool,
    /// NFLOG group of the log rules; None: no log rules.
    pub log_group: Option<u16>,
    pub families: Vec<(Family, FamilyAddrs)>,
}

impl Blocklist {
    /// Builds the model from a validated policy. Families with no source or
    /// no apiserver are left out: there is nothing to block for them.
    pub fn from_policy(policy: &Policy) -> Blocklist {
        let local_ports: Vec<u16> = policy
            .local_apiservers
            .iter()
            .filter_map(|e| e.port)
            .collect::<BTreeSet<u16>>()
            .into_iter()
            .collect();
        let families = Family::ALL
            .iter()
            .filter_map(|&fam| {
                let addrs = family_addrs(policy, fam);
                let blocks_something = !addrs.sources.is_empty()
                    && (!addrs.api_ports.is_empty() || !addrs.api_any.is_empty() || !local_ports.is_empty());
                blocks_something.then_some((fam, addrs))
            })
            .collect();
        let mut hooks = policy.mode.hooks();
        if !policy.local_apiservers.is_empty() {
            hooks.push(Hook::Input);
        }
        hooks.sort();
        Blocklist {
            hooks,
            action: policy.action,
            local_ports,
            dynamic_exempt: policy.dynamic_exempt,
            log_group: policy.log_group,
            families,
        }
    }

    /// The ordered rules of every family: exemptions first, then blocks;
    /// last, with an apiserver on this node, the link-local rule (IPv6
    /// whatever families the policy has). With a log group, every block
    /// (or audit) rule follows a log rule of the same match: the block is
    /// its own rule and never depends on the log path.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .families
            .iter()
            .flat_map(|(fam, addrs)| family_rules(*fam, addrs, self))
            .collect();
        if !self.local_ports.is_empty() {
            rules.push(Rule {
                family: Family::V6,
                target: Target::LocalPortLinkLocal,
                tcp_only: true,
                verdict: verdicts(self.action).0,
            });
        }
        let Some(group) = self.log_group else { return rules };
        let audit = self.action == Action::Audit;
        rules
            .into_iter()
            .flat_map(|r| {
                let log = r.blocks().then_some(Rule {
                    verdict: Verdict::Log { group, audit },
                    ..r
                });
                log.into_iter().chain(std::iter::once(r))
            })
            .collect()
    }

    /// The families with log rules (each has its meter).
    pub fn logged_families(&self) -> Vec<Family> {
        self.rules()
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Log { .. }))
            .map(|r| r.family)
            .collect::<BTreeSet<Family>>()
            .into_iter()
            .collect()
    }

    pub fn addrs(&self, fam: Family) -> Option<&FamilyAddrs> {
        self.families.iter().find(|(f, _)| *f == fam).map(|(_, a)| a)
    }
}

fn family_addrs(policy: &Policy, fam: Family) -> FamilyAddrs {
    let nets = |list: &[IpNet]| {
        let of_fam: Vec<IpNet> = list.iter().filter(|n| Family::of_net(n) == fam).copied().collect();
        IpNet::aggregate(&of_fam)
    };
    let endpoints: Vec<&Endpoint> = policy
        .apiservers
        .iter()
        .filter(|e| Family::of_ip(&e.ip) == fam)
        .collect();
    let api_any: BTreeSet<IpAddr> = endpoints.iter().filter(|e| e.port.is_none()).map(|e| e.ip).collect();
    let api_ports: BTreeSet<(IpAddr, u16)> = endpoints
        .iter()
        .filter_map(|e| e.port.map(|p| (e.ip, p)))
        // An address blocked on every port needs no per-port entry.
        .filter(|(ip, _)| !api_any.contains(ip))
        .collect();
    FamilyAddrs {
        sources: nets(&policy.sources),
        exempt: nets(&policy.exempt),
        api_ports: api_ports.into_iter().collect(),
        api_any: api_any.into_iter().collect(),
    }
}

/// The apiservers whose address is one of `local` (this node's own
/// addresses): pods reach them through INPUT, and that hook is needed.
pub fn local_apiservers(apiservers: &[Endpoint], local: &[IpAddr]) -> Vec<Endpoint> {
    apiservers
        .iter()
        .filter(|e| local.contains(&e.ip) && !e.ip.is_loopback())
        .copied()
        .collect()
}

/// The verdicts of the TCP rules and of the others for an action.
fn verdicts(action: Action) -> (Verdict, Verdict) {
    match action {
        Action::Reject => (Verdict::TcpReset, Verdict::IcmpProhibited),
        Action::Drop => (Verdict::Drop, Verdict::Drop),
        Action::Audit => (Verdict::Count, Verdict::Count),
    }
}

fn family_rules(family: Family, addrs: &FamilyAddrs, b: &Blocklist) -> Vec<Rule> {
    let (action, dynamic_exempt) = (b.action, b.dynamic_exempt);
    let rule = |target, tcp_only, verdict| Rule {
        family,
        target,
        tcp_only,
        verdict,
    };
    let mut rules = Vec::new();
    if !addrs.exempt.is_empty() || dynamic_exempt {
        rules.push(rule(Target::Exempt, false, Verdict::Return));
    }
    let (tcp_verdict, other_verdict) = verdicts(action);
    if !addrs.api_ports.is_empty() {
        rules.push(rule(Target::ApiPort, true, tcp_verdict));
    }
    if !addrs.api_any.is_empty() {
        if action == Action::Reject {
            // TCP first so it gets a reset; the rest an ICMP error.
            rules.push(rule(Target::ApiAny, true, tcp_verdict));
        }
        rules.push(rule(Target::ApiAny, false, other_verdict));
    }
    if !b.local_ports.is_empty() {
        rules.push(rule(Target::LocalPort, true, tcp_verdict));
    }
    rules
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::address::{parse_cidr, parse_endpoint};
    use crate::core::policy::{BackendChoice, Mode};

    #[test]
    fn every_rule_name_says_whether_its_match_takes_only_tcp() {
        let verdicts = [
            Verdict::Return,
            Verdict::TcpReset,
            Verdict::Drop,
            Verdict::Count,
            Verdict::Log {
                group: 1443,
                audit: true,
            },
            Verdict::Log {
                group: 1443,
                audit: false,
            },
        ];
        let targets = [
            Target::Exempt,
            Target::ApiPort,
            Target::ApiAny,
            Target::LocalPort,
            Target::LocalPortLinkLocal,
        ];
        for family in [Family::V4, Family::V6] {
            for target in targets {
                for tcp_only in [false, true] {
                    for verdict in verdicts {
                        let r = Rule {
                            family,
                            target,
                            tcp_only,
                            verdict,
                        };
                        let tcp = match target {
                            Target::Exempt => false,
                            Target::ApiAny => tcp_only,
                            _ => true,
                        };
                        assert_eq!(named_rule_takes_only_tcp(&r.name()), tcp, "{}", r.name());
                    }
                }
            }
        }
        for other in [
            "",
            "block-",
            "block-tcp-port",
            "block-tcp-port-v5",
            "tcp-port-v4",
            "block-all-v4x",
        ] {
            assert!(!named_rule_takes_only_tcp(other), "{other}");
        }
    }

    pub(crate) fn policy(sources: &[&str], exempt: &[&str], apis: &[&str], mode: Mode, action: Action) -> Policy {
        Policy {
            sources: sources.iter().map(|s| parse_cidr("s", s).unwrap()).collect(),
            exempt: exempt.iter().map(|s| parse_cidr("e", s).unwrap()).collect(),
            apiservers: apis.iter().map(|s| parse_endpoint(s).unwrap()).collect(),
            mode,
            action,
            backend: BackendChoice::Auto,
            local_apiservers: Vec::new(),
            dynamic_exempt: false,
            log_group: None,
            origins: Default::default(),
        }
    }

    #[test]
    fn overlapping_and_adjacent_sources_are_aggregated() {
        let p = policy(
            &["10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/25", "10.0.0.0/24"],
            &[],
            &["192.168.0.1:443"],
            Mode::Both,
            Action::Reject,
        );
        let b = Blocklist::from_policy(&p);
        assert_eq!(
            b.addrs(Family::V4).unwrap().sources,
            vec![parse_cidr("x", "10.0.0.0/23").unwrap()]
        );
    }

    #[test]
    fn families_are_split_and_empty_ones_left_out() {
        let p = policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[],
            &["192.168.0.1:443"],
            Mode::Both,
            Action::Reject,
        );
        let b = Blocklist::from_policy(&p);
        assert!(b.addrs(Family::V4).is_some());
        assert!(b.addrs(Family::V6).is_none(), "no v6 apiserver, nothing to block in v6");
    }

    #[test]
    fn port_entries_subsumed_by_a_portless_endpoint_are_dropped() {
        let p = policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.1:443", "192.168.0.1", "192.168.0.2:443", "192.168.0.2:443"],
            Mode::Both,
            Action::Reject,
        );
        let a = Blocklist::from_policy(&p).addrs(Family::V4).unwrap().clone();
        assert_eq!(a.api_any, vec!["192.168.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.api_ports, vec![("192.168.0.2".parse().unwrap(), 443)]);
    }

    #[test]
    fn reject_rules_in_order_exempt_then_tcp_then_icmp() {
        let p = policy(
            &["10.0.0.0/16"],
            &["10.0.9.0/24"],
            &["192.168.0.1:443", "192.168.0.2"],
            Mode::Both,
            Action::Reject,
        );
        let names: Vec<String> = Blocklist::from_policy(&p).rules().iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            ["exempt-v4", "block-tcp-port-v4", "block-tcp-v4", "block-all-v4"]
        );
        let verdicts: Vec<Verdict> = Blocklist::from_policy(&p).rules().iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Return,
                Verdict::TcpReset,
                Verdict::TcpReset,
                Verdict::IcmpProhibited
            ]
        );
    }

    #[test]
    fn drop_action_needs_no_separate_tcp_rule() {
        let p = policy(
            &["fd00::/48"],
            &[],
            &["[fd01::1]:443", "fd01::2"],
            Mode::Tunnel,
            Action::Drop,
        );
        let rules = Blocklist::from_policy(&p).rules();
        let names: Vec<String> = rules.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["block-tcp-port-v6", "block-all-v6"]);
        assert!(rules.iter().all(|r| r.verdict == Verdict::Drop));
    }

    #[test]
    fn hooks_follow_the_mode() {
        let mk = |m| Blocklist::from_policy(&policy(&["10.0.0.0/16"], &[], &["1.2.3.4"], m, Action::Reject)).hooks;
        assert_eq!(mk(Mode::Vpc), vec![Hook::Output]);
        assert_eq!(mk(Mode::Tunnel), vec![Hook::Forward]);
        assert_eq!(mk(Mode::Both), vec![Hook::Output, Hook::Forward]);
    }

    #[test]
    fn input_hook_joins_the_mode_hooks_in_order() {
        let mut p = policy(&["10.0.0.0/16"], &[], &["1.2.3.4"], Mode::Tunnel, Action::Reject);
        p.local_apiservers = p.apiservers.clone();
        assert_eq!(Blocklist::from_policy(&p).hooks, vec![Hook::Forward, Hook::Input]);
        p.mode = Mode::Both;
        assert_eq!(
            Blocklist::from_policy(&p).hooks,
            vec![Hook::Output, Hook::Forward, Hook::Input]
        );
    }

    #[test]
    fn dynamic_exempt_keeps_the_exempt_rule_while_empty() {
        let mut p = policy(&["10.0.0.0/16"], &[], &["1.2.3.4:443"], Mode::Both, Action::Reject);
        let names = |p: &Policy| -> Vec<String> { Blocklist::from_policy(p).rules().iter().map(Rule::name).collect() };
        assert_eq!(names(&p), vec!["block-tcp-port-v4"]);
        p.dynamic_exempt = true;
        assert_eq!(names(&p), vec!["exempt-v4", "block-tcp-port-v4"]);
    }

    #[test]
    fn every_blocking_rule_follows_its_log_rule_and_off_means_none() {
        let mut p = policy(
            &["10.0.0.0/16"],
            &["10.0.9.0/24"],
            &["192.168.0.1:443", "192.168.0.2"],
            Mode::Both,
            Action::Reject,
        );
        p.log_group = Some(1443);
        let rules = Blocklist::from_policy(&p).rules();
        let names: Vec<String> = rules.iter().map(Rule::name).collect();
        assert_eq!(
            names,
            [
                "exempt-v4",
                "log-block-tcp-port-v4",
                "block-tcp-port-v4",
                "log-block-tcp-v4",
                "block-tcp-v4",
                "log-block-all-v4",
                "block-all-v4"
            ]
        );
        // Same match as the rule it precedes; the blocking rule itself is unchanged.
        for pair in rules[1..].chunks(2) {
            assert_eq!((pair[0].target, pair[0].tcp_only), (pair[1].target, pair[1].tcp_only));
            assert_eq!(
                pair[0].log_prefix().unwrap(),
                format!("apiserver-guard:{}", pair[1].name())
            );
            assert!(pair[1].log_prefix().is_none() && pair[1].blocks() && !pair[0].blocks());
        }
        p.log_group = None;
        assert!(Blocklist::from_policy(&p)
            .rules()
            .iter()
            .all(|r| !matches!(r.verdict, Verdict::Log { .. })));
    }

    #[test]
    fn audit_counts_instead_of_blocking_and_logs_as_audit() {
        let mut p = policy(
            &["10.0.0.0/16", "fd00::/48"],
            &["10.0.9.0/24"],
            &["192.168.0.1:443", "192.168.0.2", "[fd01::1]:6443"],
            Mode::Both,
            Action::Audit,
        );
        p.local_apiservers = p.apiservers[2..].to_vec();
        p.log_group = Some(5);
        let b = Blocklist::from_policy(&p);
        let names: Vec<String> = b.rules().iter().map(Rule::name).collect();
        assert_eq!(
            names,
            [
                "exempt-v4",
                "log-audit-tcp-port-v4",
                "audit-tcp-port-v4",
                "log-audit-all-v4",
                "audit-all-v4",
                "log-audit-local-port-v4",
                "audit-local-port-v4",
                "log-audit-tcp-port-v6",
                "audit-tcp-port-v6",
                "log-audit-local-port-v6",
                "audit-local-port-v6",
                "log-audit-local-port-link-local",
                "audit-local-port-link-local"
            ]
        );
        for r in b.rules() {
            match r.verdict {
                Verdict::Return | Verdict::Count => {}
                Verdict::Log { group, audit } => {
                    assert!(audit && group == 5);
                    let prefix = r.log_prefix().unwrap();
                    let (rule, action) = crate::core::attempt_log::parse_prefix(&prefix).unwrap();
                    assert_eq!(
                        (rule.starts_with("audit-"), action),
                        (true, crate::core::attempt_log::AttemptAction::Audited)
                    );
                }
                v => panic!("audit blocks nothing, got {v:?} in {}", r.name()),
            }
        }
        assert_eq!(b.logged_families(), vec![Family::V4, Family::V6]);
    }

    #[test]
    fn local_apiservers_are_the_own_non_loopback_addresses() {
        let eps: Vec<Endpoint> = ["192.168.0.10:6443", "127.0.0.1:6443"]
            .iter()
            .map(|s| parse_endpoint(s).unwrap())
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(local_apiservers(&eps, &[ip("10.1.1.1"), ip("192.168.0.10")]), eps[..1]);
        assert!(local_apiservers(&eps, &[ip("10.1.1.1")]).is_empty());
        // Loopback is always "local", and pods never reach the node's loopback.
        assert!(local_apiservers(&eps[1..], &[ip("127.0.0.1")]).is_empty());
        assert!(local_apiservers(&[], &[ip("192.168.0.10")]).is_empty());
    }

    #[test]
    fn a_local_apiserver_is_blocked_on_its_port_at_every_local_address_in_both_families() {
        let mut p = policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[],
            &["192.168.0.1:6443", "192.168.0.1:443", "192.168.9.9:5443"],
            Mode::Tunnel,
            Action::Reject,
        );
        p.local_apiservers = p.apiservers[..2].to_vec();
        let b = Blocklist::from_policy(&p);
        assert_eq!(b.local_ports, vec![443, 6443]);
        let names: Vec<String> = b.rules().iter().map(Rule::name).collect();
        // v6 has no apiserver address of its own, but the node's v6 addresses serve the port
        // too, and every pod has a link-local address outside any container CIDR.
        assert_eq!(
            names,
            [
                "block-tcp-port-v4",
                "block-local-port-v4",
                "block-local-port-v6",
                "block-local-port-link-local"
            ]
        );
        assert!(b.rules().iter().all(|r| r.tcp_only && r.verdict == Verdict::TcpReset));
        p.action = Action::Drop;
        assert!(Blocklist::from_policy(&p)
            .rules()
            .iter()
            .all(|r| r.verdict == Verdict::Drop));
    }

    #[test]
    fn a_local_apiserver_without_port_blocks_its_address_only() {
        let mut p = policy(&["10.0.0.0/16"], &[], &["192.168.0.1"], Mode::Tunnel, Action::Reject);
        p.local_apiservers = p.apiservers.clone();
        let b = Blocklist::from_policy(&p);
        assert!(b.local_ports.is_empty());
        assert_eq!(b.hooks, vec![Hook::Forward, Hook::Input]);
        assert!(b.rules().iter().all(|r| r.target != Target::LocalPort));
    }
}
