//! Packet counters of our block rules, read from this (the node's) namespace
//! around each probe: did the rule of ours that matches THAT endpoint see
//! THAT probe? One `Snapshot` reads every backend once, whichever installed
//! the block: our nftables table (a netlink dump of `inet apiserver_guard`,
//! through the backend's own read-back: counters per rule comment, the hooks
//! of its base chains and the elements of its sets), and our `APISERVER-GUARD` chain in iptables-nft
//! and iptables-legacy (`iptables -L APISERVER-GUARD -v -x -n`; a legacy table
//! that is not loaded is not created by looking). `Snapshot::packets` then
//! sums only the rules that match one endpoint: by comment in nftables
//! (`block-tcp-port-*` for `address:port`, `block-tcp-*`/`block-all-*` for a
//! port-less address, `block-local-port-*` for an apiserver on this node; the
//! `audit-...` rules of the same names in audit mode), by destination and port
//! in iptables (REJECT, DROP, or no target: an audit rule). Parsing and
//! matching are pure.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::evidence::CounterReading;
use crate::backend::exec::{failure, start, Runner};
use crate::backend::iptables::{legacy_table_loaded, tool, Variant};
use crate::backend::nftables::{rule_counters, Nftables, Seen};
use crate::core::model::Family;
use crate::core::nft_model::TableModel;
use crate::core::nft_text::{element_texts, hook_name};

/// Packets and bytes per rule comment.
pub type Counters = std::collections::BTreeMap<String, (u64, u64)>;
use crate::core::render_iptables::CHAIN;
use crate::error::Error;

/// One probed endpoint, as our rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleKey {
    pub ip: IpAddr,
    /// The probed port.
    pub port: u16,
    /// The policy names the endpoint without a port (every port is blocked).
    pub portless: bool,
    /// The endpoint is an apiserver on this node (the local-port rule also matches it).
    pub local: bool,
}

impl RuleKey {
    fn family(&self) -> Family {
        Family::of_ip(&self.ip)
    }
}

/// The comments of our nftables rules that can stop a probe to `key`, and of the audit rules
/// that count it instead (`--action audit`; only one kind is ever installed).
pub fn nft_rule_names(key: &RuleKey) -> Vec<String> {
    let fam = key.family().suffix();
    let mut what: Vec<String> = if key.portless {
        vec![format!("tcp-{fam}"), format!("all-{fam}")]
    } else {
        vec![format!("tcp-port-{fam}")]
    };
    if key.local {
        what.push(format!("local-port-{fam}"));
    }
    ["block", "audit"]
        .iter()
        .flat_map(|verb| what.iter().map(move |w| format!("{verb}-{w}")))
        .collect()
}

/// One REJECT or DROP rule of our iptables chain, as `-L -v -x -n` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptRule {
    pub packets: u64,
    /// The destination address (None: any).
    pub destination: Option<IpAddr>,
    /// `dpt:N` (None: every port).
    pub dport: Option<u16>,
    /// `ADDRTYPE match ... dst-type LOCAL`: every address of this node.
    pub dst_local: bool,
    /// Its number in the chain (1 = first rule; as `iptables -L --line-numbers` counts).
    pub position: usize,
}

impl IptRule {
    /// Whether a probe to `key` can match this rule.
    pub fn matches(&self, key: &RuleKey) -> bool {
        let port_ok = self.dport.is_none_or(|p| p == key.port);
        let dst_ok = if self.dst_local {
            key.local
        } else {
            self.destination == Some(key.ip)
        };
        port_ok && dst_ok
    }
}

/// An address column of the listing: `Some(Some(ip))` for one host, `Some(None)` for a
/// network (`0.0.0.0/0`: any), None when the token is no address.
fn address(token: &str) -> Option<Option<IpAddr>> {
    if let Ok(ip) = token.parse::<IpAddr>() {
        return Some(Some(ip));
    }
    let net: ipnet::IpNet = token.parse().ok()?;
    Some((net.prefix_len() == net.max_prefix_len()).then(|| net.addr()))
}

/// Whether a `target` column token is really the next column (`prot`): an audit rule has no
/// target, and `-L` leaves its column blank (`tcp`, `all`, or a number with some versions).
fn no_target(token: &str) -> bool {
    !token.is_empty() && (token.chars().all(|c| c.is_ascii_lowercase()) || token.parse::<u8>().is_ok())
}

/// The REJECT and DROP rules of `iptables -L APISERVER-GUARD -v -x -n`, and the audit rules
/// (no target: they only count); exempt RETURNs, NFLOG log rules and anything else are not the block.
pub fn iptables_rules(listing: &str) -> Vec<IptRule> {
    let mut out = Vec::new();
    let mut position = 0;
    for line in listing.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let (Some(packets), Some(target)) = (tokens.first(), tokens.get(2)) else {
            continue;
        };
        let Ok(packets) = packets.parse::<u64>() else { continue };
        position += 1;
        if !matches!(*target, "REJECT" | "DROP") && !no_target(target) {
            continue;
        }
        // Source then destination: the first two address tokens (`opt` may be blank in
        // ip6tables listings, so columns are not counted).
        let destination = tokens[3..].iter().filter_map(|t| address(t)).nth(1).flatten();
        let dport = tokens
            .iter()
            .find_map(|t| t.strip_prefix("dpt:"))
            .and_then(|p| p.parse().ok());
        let dst_local = tokens.windows(2).any(|w| w == ["dst-type", "LOCAL"]);
        out.push(IptRule {
            packets,
            destination,
            dport,
            dst_local,
            position,
        });
    }
    out
}

/// Our nftables table as read: the hooks of its base chains, the elements of its sets and
/// the counters per rule comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftReading {
    pub state: TableModel,
    pub counters: Counters,
}

impl NftReading {
    /// The hooks our base chains are on (`forward`, `input`, `output`).
    pub fn hooks(&self) -> BTreeSet<String> {
        self.state
            .chains
            .values()
            .filter_map(|c| c.base.as_ref().map(|b| hook_name(b.hook)))
            .collect()
    }

    /// Whether our sets hold `key` (its address and port, or its address; or its port among
    /// the local apiservers' for one on this node).
    pub fn holds(&self, key: &RuleKey) -> bool {
        let fam = key.family().suffix();
        let (set, element) = if key.portless {
            (format!("api_any_{fam}"), key.ip.to_string())
        } else {
            (format!("api_port_{fam}"), format!("{} . {}", key.ip, key.port))
        };
        let has = |set: &str, element: &str| {
            self.state
                .sets
                .get(set)
                .is_some_and(|s| element_texts(s).iter().any(|e| e == element))
        };
        let listed = has(&set, &element);
        let local = key.local && has("local_ports", &key.port.to_string());
        listed || local
    }
}

/// Our iptables chain of one family as read by one tool: its block rules (None: absent).
pub type IptReading = Result<Option<Vec<IptRule>>, String>;

/// One reading of every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Our nftables table (None: absent).
    pub nft: Result<Option<NftReading>, String>,
    /// Our iptables chain per (tool, family): its block rules (None: absent).
    pub iptables: Vec<(String, Family, IptReading)>,
}

/// Adds one backend's reading into the total: errors win, absent rules add nothing.
fn add(total: &mut CounterReading, part: CounterReading) {
    *total = match (std::mem::replace(total, Ok(None)), part) {
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(a), Ok(b)) => Ok(match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }),
    };
}

impl Snapshot {
    /// Packets counted by the rules of ours that can stop a probe to `key`, and the names of
    /// those rules (nft comments; `TOOL APISERVER-GUARD rule N` for iptables).
    pub fn packets(&self, key: &RuleKey) -> (CounterReading, Vec<String>) {
        let mut total: CounterReading = Ok(None);
        let mut names = Vec::new();
        match &self.nft {
            Err(e) => add(&mut total, Err(e.clone())),
            Ok(None) => {}
            Ok(Some(t)) => {
                for name in nft_rule_names(key) {
                    if let Some((packets, _)) = t.counters.get(&name) {
                        add(&mut total, Ok(Some(*packets)));
                        names.push(name);
                    }
                }
            }
        }
        for (prog, fam, reading) in &self.iptables {
            if *fam != key.family() {
                continue;
            }
            match reading {
                Err(e) => add(&mut total, Err(e.clone())),
                Ok(None) => {}
                Ok(Some(rules)) => {
                    for r in rules.iter().filter(|r| r.matches(key)) {
                        add(&mut total, Ok(Some(r.packets)));
                        names.push(format!("{prog} {CHAIN} rule {}", r.position));
                    }
                }
            }
        }
        (total, names)
    }

    /// Our nftables table, when it was read and exists.
    pub fn nft_table(&self) -> Option<&NftReading> {
        self.nft.as_ref().ok().and_then(Option::as_ref)
    }
}

/// Whether our chain exists in iptables-nft, asked of `nft` (one chain, milliseconds; and
/// `iptables-nft -L` of a missing chain calls it "incompatible" in some versions). None: `nft`
/// cannot tell.
fn nft_chain_exists(runner: &dyn Runner, fam: Family) -> Option<bool> {
    let family = match fam {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let out = runner
        .run(
            crate::backend::nftables::NFT,
            &["list", "chain", family, "filter", CHAIN],
            None,
        )
        .ok()?;
    if out.ok() {
        Some(true)
    } else if out.missing() {
        Some(false)
    } else {
        None
    }
}

fn iptables_reading(runner: &dyn Runner, variant: Variant, fam: Family) -> IptReading {
    let present = match variant {
        Variant::Legacy => legacy_table_loaded(fam, "filter").map_err(|e| e.to_string())?,
        Variant::Nft => nft_chain_exists(runner, fam).unwrap_or(true),
    };
    if !present {
        return Ok(None);
    }
    let prog = tool(variant, fam, false);
    let args = ["-w", "5", "-L", CHAIN, "-v", "-x", "-n"];
    match start(runner, &prog, &args, None) {
        Err(Error::MissingTool(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
        Ok(out) if out.ok() => Ok(Some(iptables_rules(&out.stdout))),
        Ok(out) if out.missing() => Ok(None),
        Ok(out) => Err(failure(&prog, &args, &out).to_string()),
    }
}

/// Reads every backend once.
pub fn read(runner: &dyn Runner) -> Snapshot {
    let nft = match Nftables::new().observe() {
        Ok(Seen::Absent) | Err(Error::MissingTool(_)) => Ok(None),
        Ok(Seen::Unreadable(why)) => Err(format!("our nftables table cannot be read: {why}")),
        Ok(Seen::Table(state)) => Ok(Some(NftReading {
            counters: rule_counters(&state),
            state,
        })),
        Err(e) => Err(e.to_string()),
    };
    let mut iptables = Vec::new();
    for fam in Family::ALL {
        for variant in [Variant::Nft, Variant::Legacy] {
            iptables.push((tool(variant, fam, false), fam, iptables_reading(runner, variant, fam)));
        }
    }
    Snapshot { nft, iptables }
}

/// A snapshot standing for counters that were not read (why).
pub fn unread(why: &str) -> Snapshot {
    Snapshot {
        nft: Err(why.to_string()),
        iptables: Vec::new(),
    }
}

/// What one reading of our nftables table says about the policy verified: the hooks it
/// lacks or has in excess, in plain words (None: they agree, or there is no table).
pub fn hooks_disagree(installed: &BTreeSet<String>, wanted: &BTreeSet<String>, mode: &str) -> Option<String> {
    if installed == wanted {
        return None;
    }
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(" and ");
    let missing: BTreeSet<String> = wanted.difference(installed).cloned().collect();
    let extra: BTreeSet<String> = installed.difference(wanted).cloned().collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} not hooked (this policy, mode {mode}, needs it; apply it to install it)",
            list(&missing)
        ));
    }
    if !extra.is_empty() {
        parts.push(format!("{} hooked, which this policy does not need", list(&extra)));
    }
    Some(format!(
        "our nftables table hooks {} while the policy verified hooks {}: {}",
        if installed.is_empty() {
            "nothing".to_string()
        } else {
            list(installed)
        },
        list(wanted),
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::fake::FakeRunner;

    fn key(ip: &str, port: u16, portless: bool, local: bool) -> RuleKey {
        RuleKey {
            ip: ip.parse().unwrap(),
            port,
            portless,
            local,
        }
    }

    fn nft(counters: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            nft: Ok(Some(NftReading {
                state: TableModel::default(),
                counters: counters.iter().map(|(n, p)| (n.to_string(), (*p, 0))).collect(),
            })),
            iptables: Vec::new(),
        }
    }

    #[test]
    fn each_endpoint_reads_only_the_rules_that_match_it() {
        let s = nft(&[
            ("exempt-v4", 50),
            ("block-tcp-port-v4", 3),
            ("block-tcp-v4", 4),
            ("block-all-v4", 2),
            ("block-local-port-v4", 20),
            ("block-tcp-port-v6", 7),
        ]);
        let (r, names) = s.packets(&key("192.168.50.10", 6443, false, false));
        assert_eq!((r, names), (Ok(Some(3)), vec!["block-tcp-port-v4".to_string()]));
        // An apiserver on this node: the local-port rule matches it too.
        assert_eq!(s.packets(&key("192.168.50.1", 6443, false, true)).0, Ok(Some(23)));
        // A port-less endpoint: the TCP and catch-all rules.
        assert_eq!(s.packets(&key("192.168.50.11", 443, true, false)).0, Ok(Some(6)));
        assert_eq!(s.packets(&key("fd00:50::10", 5443, false, false)).0, Ok(Some(7)));
        // Nothing of ours matches: absent, not zero.
        assert_eq!(
            nft(&[("exempt-v4", 1)])
                .packets(&key("192.168.50.10", 1, false, false))
                .0,
            Ok(None)
        );
    }

    #[test]
    fn audit_rules_count_a_probe_and_log_rules_do_not() {
        let s = nft(&[
            ("log-audit-tcp-port-v4", 9),
            ("audit-tcp-port-v4", 6),
            ("log-audit-local-port-v4", 9),
            ("audit-local-port-v4", 1),
        ]);
        let (r, names) = s.packets(&key("192.168.50.10", 5443, false, false));
        assert_eq!((r, names), (Ok(Some(6)), vec!["audit-tcp-port-v4".to_string()]));
        assert_eq!(s.packets(&key("192.168.50.1", 5443, false, true)).0, Ok(Some(7)));
        // iptables: an audit rule has no target (blank column); NFLOG rules are not counted.
        let v4 = "Chain APISERVER-GUARD (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       9      540 NFLOG      tcp  --  *      *       10.0.0.0/16          192.168.0.10         tcp dpt:5443 limit: up to 10/sec burst 20 mode srcip /* apiserver-guard */ nflog-prefix \"apiserver-guard:audit-tcp-port-v4\" nflog-group 1443 nflog-size 96
       6      360            tcp  --  *      *       10.0.0.0/16          192.168.0.10         tcp dpt:5443 /* apiserver-guard */
       2      120            6    --  *      *       10.0.0.0/16          192.168.0.11         /* apiserver-guard */
";
        let rules = iptables_rules(v4);
        assert_eq!(
            rules
                .iter()
                .map(|r| (r.packets, r.dport, r.position))
                .collect::<Vec<_>>(),
            [(6, Some(5443), 2), (2, None, 3)]
        );
        assert_eq!(rules[1].destination, Some("192.168.0.11".parse().unwrap()));
    }

    #[test]
    fn iptables_rules_are_matched_by_destination_and_port() {
        let v4 = "Chain APISERVER-GUARD (1 references)
    pkts      bytes target     prot opt in     out     source               destination
      40     2400 RETURN     all  --  *      *       10.0.9.0/24          0.0.0.0/0            /* apiserver-guard */
       3      180 REJECT     tcp  --  *      *       10.0.0.0/16          192.168.0.10         tcp dpt:5443 /* apiserver-guard */ reject-with tcp-reset
       1       60 DROP       all  --  *      *       10.0.0.0/16          192.168.0.11         /* apiserver-guard */
       5      300 REJECT     tcp  --  *      *       10.0.0.0/16          0.0.0.0/0            ADDRTYPE match src-type !LOCAL dst-type LOCAL tcp dpt:6443 /* apiserver-guard */ reject-with tcp-reset
";
        let rules = iptables_rules(v4);
        assert_eq!(rules.len(), 3);
        let s = Snapshot {
            nft: Ok(None),
            iptables: vec![("iptables-legacy".into(), Family::V4, Ok(Some(rules)))],
        };
        let (r, names) = s.packets(&key("192.168.0.10", 5443, false, false));
        assert_eq!(
            (r, names),
            (Ok(Some(3)), vec!["iptables-legacy APISERVER-GUARD rule 2".to_string()]),
            "numbered as in the chain: the RETURN before it is rule 1"
        );
        assert_eq!(s.packets(&key("192.168.0.10", 443, false, false)).0, Ok(None));
        assert_eq!(s.packets(&key("192.168.0.11", 443, true, false)).0, Ok(Some(1)));
        assert_eq!(s.packets(&key("192.168.0.1", 6443, false, true)).0, Ok(Some(5)));
        assert_eq!(s.packets(&key("fd00::1", 6443, false, true)).0, Ok(None));
        let v6 = "Chain APISERVER-GUARD (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       2      160 REJECT     tcp      *      *       fd00::/48            fd01::1              tcp dpt:5443 /* apiserver-guard */ reject-with tcp-reset
";
        assert_eq!(
            iptables_rules(v6),
            vec![IptRule {
                packets: 2,
                destination: Some("fd01::1".parse().unwrap()),
                dport: Some(5443),
                dst_local: false,
                position: 1
            }]
        );
        let empty = "Chain APISERVER-GUARD (1 references)\n    pkts      bytes target     prot opt in     out     source               destination\n";
        assert!(iptables_rules(empty).is_empty());
    }

    #[test]
    fn readings_add_up_and_errors_win() {
        let mut t: CounterReading = Ok(None);
        add(&mut t, Ok(None));
        assert_eq!(t, Ok(None));
        add(&mut t, Ok(Some(2)));
        add(&mut t, Ok(None));
        add(&mut t, Ok(Some(3)));
        assert_eq!(t, Ok(Some(5)));
        add(&mut t, Err("nft: permission denied".into()));
        add(&mut t, Ok(Some(1)));
        assert_eq!(t, Err("nft: permission denied".into()));
        let s = unread("--from-here");
        assert_eq!(
            s.packets(&key("192.168.0.10", 1, false, false)).0,
            Err("--from-here".into())
        );
    }

    #[test]
    fn hooks_that_differ_from_the_policy_are_named() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(hooks_disagree(&set(&["forward"]), &set(&["forward"]), "tunnel"), None);
        let m = hooks_disagree(&set(&["forward"]), &set(&["forward", "output"]), "both").unwrap();
        assert!(
            m.contains("hooks forward while") && m.contains("output not hooked"),
            "{m}"
        );
        let m = hooks_disagree(&set(&["forward", "output"]), &set(&["forward"]), "tunnel").unwrap();
        assert!(m.contains("output hooked, which this policy does not need"), "{m}");
    }

    #[test]
    fn missing_tools_and_chains_hold_nothing() {
        // (Our nftables table is read over netlink, not through the runner.)
        let r = FakeRunner::default()
            .on("nft list chain ip filter", 1, "", "Error: No such file or directory\n")
            // nft cannot tell: iptables-nft is asked, and a missing chain holds nothing.
            .on("nft list chain ip6 filter", 1, "", "Error: Could not process rule\n")
            .on(
                "ip6tables-nft -w 5 -L",
                1,
                "",
                "ip6tables: No chain/target/match by that name.\n",
            )
            .missing("iptables-legacy")
            .missing("ip6tables-legacy");
        let got = read(&r);
        assert_eq!(got.packets(&key("192.168.0.10", 5443, false, false)).0, Ok(None));
        assert_eq!(got.packets(&key("fd01::1", 5443, false, false)).0, Ok(None));
        // The chain exists: its counters are read with iptables.
        let listing = "Chain APISERVER-GUARD (1 references)\n pkts bytes target prot opt in out source destination\n    4  240 REJECT tcp -- * * 10.0.0.0/16 192.168.0.10 reject-with tcp-reset\n";
        let r = FakeRunner::default()
            .on(
                "nft list chain ip filter",
                0,
                "table ip filter { chain APISERVER-GUARD { } }",
                "",
            )
            .on("nft list chain ip6 filter", 1, "", "Error: No such file or directory\n")
            .on("iptables-nft -w 5 -L APISERVER-GUARD -v -x -n", 0, listing, "")
            .missing("iptables-legacy")
            .missing("ip6tables-legacy");
        let got = read(&r);
        assert_eq!(got.packets(&key("192.168.0.10", 5443, false, false)).0, Ok(Some(4)));
        assert_eq!(got.packets(&key("192.168.0.11", 5443, false, false)).0, Ok(None));
    }
}
