//! The table a Blocklist wants, as the kernel will hold it: each abstract
//! rule of `model::Blocklist::rules()` becomes exactly the expressions `nft`
//! itself sends for the rule text `nft_text` prints (pinned below against
//! `nft --debug=netlink`), the sets are those the rules reference, and every
//! hook gets its base chain with one `jump guard`. Which rules exist is
//! decided in `model.rs` only; this file translates.
//!
//! A log rule and the rule after it share one match (`model::Blocklist::rules`).
//! In nftables every match is a set lookup each packet pays for, so the pair
//! is laid out to pay it once: chain `guard` holds the match, counts the
//! packet and jumps to a chain named after the deciding rule
//! (`block-tcp-port-v4`), which holds the metered log rule and then the
//! verdict (none for an audit rule: the packet returns to `guard`). Traffic
//! the match does not take costs what it cost without logging. Ahead of the
//! log rules, the answer rules (`nft_answers`) give a packet that answers one
//! sent to the pod the verdict at once, unlogged.

use super::attempt_log::LOG_SNAPLEN;
use super::model::{
    self, Blocklist, Family, Rule, Target, Verdict as RuleVerdict, METER, METER_IIF_KNOWN, METER_IIF_NEW,
};
use super::nft_answers::answer_rules;
use super::nft_exprs::{cmp, l4_tcp, masked_payload, meta, payload, tcp_flags, verdict_or_return};
use super::nft_model::*;
use super::policy::Hook;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The table comment.
pub const TABLE_COMMENT: &str = "managed by apiserver-guard; edits are reverted";
/// The set of TCP ports of apiservers on this node.
pub const LOCAL_PORTS_SET: &str = "local_ports";
/// IPv6 link-local sources (`fe80::/10`), for the link-local rule of a local apiserver.
pub const LINK_LOCAL_SET: &str = "link_local_v6";
/// The per-source meter (`attempts_v4` / `attempts_v6`, keyed `iif . ip
/// saddr`) of what no finer meter takes: IPv4 fragments
/// (`fragment_rules`), TCP the flow meter holds no element for
/// (`flowless_rules`) and, in a chain taking every protocol, the other
/// protocols (`log_rules`).
pub const ATTEMPTS_SET: &str = "attempts";
/// The per-interface meters of the log rules (both families): new sources
/// and known sources logged, per input interface (`model::METER_IIF_NEW`).
pub const IIF_NEW_SET: &str = "iif_new";
pub const IIF_KNOWN_SET: &str = "iif_known";
/// The same two allowances again, for the connect and push log rules
/// alone: packets a pod sends only of its own accord (a SYN, a segment
/// with PSH, FIN or URG), which nothing forged to it can draw. The bare
/// ACKs forged packets draw from a pod spend `iif_new`, and with the flow
/// and per-source meters kept full they spent it before a full meter
/// refused them, hiding some of that pod's new connects (a fifth break-it
/// round's find); they cannot spend these.
pub const IIF_NEW_INITIATED_SET: &str = "iif_new_initiated";
pub const IIF_KNOWN_INITIATED_SET: &str = "iif_known_initiated";

/// The pair of per-interface allowances a log rule spends: new sources
/// (`model::METER_IIF_NEW`) and known ones (`model::METER_IIF_KNOWN`).
#[derive(Clone, Copy)]
pub struct IifAllowances {
    pub new: &'static str,
    pub known: &'static str,
}
/// What every log rule but the connect and push rules spends.
pub const IIF_SHARED: IifAllowances = IifAllowances {
    new: IIF_NEW_SET,
    known: IIF_KNOWN_SET,
};
/// What the connect and push rules spend.
pub const IIF_INITIATED: IifAllowances = IifAllowances {
    new: IIF_NEW_INITIATED_SET,
    known: IIF_KNOWN_INITIATED_SET,
};
/// The name of a log rule's rule for new sources: its own name and this.
pub const NEW_SOURCE_SUFFIX: &str = "-new-source";
/// The name of a log rule's rule for a new source its full meter could not
/// take (a break-it find: six pods forging sources keep a meter's 65,535
/// elements taken, and a pod's first connect in a minute then went
/// unlogged): logged within its interface's allowance for new sources alone,
/// which a pod on another interface cannot spend.
pub const METER_FULL_SUFFIX: &str = "-meter-full";
/// The meter of the connect log rules (`connect_rules`): `connects_v4` /
/// `connects_v6`, shaped as `attempts_v4`.
pub const CONNECTS_SET: &str = "connects";
/// The name of a connect log rule: the log rule's name and this.
pub const CONNECT_SUFFIX: &str = "-connect";
/// The meter of the flow log rules (`flow_rules`): `flows_v4` / `flows_v6`,
/// one element per interface, source and source port.
pub const FLOWS_SET: &str = "flows";
/// The name of a flow log rule: the log rule's name and this.
pub const FLOW_SUFFIX: &str = "-flow";
/// The meter of the push log rules (`push_rules`): `pushes_v4` /
/// `pushes_v6`, shaped as `flows_v4`.
pub const PUSHES_SET: &str = "pushes";
/// The name of a push log rule: the log rule's name and this.
pub const PUSH_SUFFIX: &str = "-push";
/// The name of the rule of a chain taking every protocol that gives TCP
/// past the connect and flow log rules its verdict: the chain's name and this.
pub const TCP_PAST_METERS_SUFFIX: &str = "-tcp-unlogged";
const LINK_LOCAL_V6: &str = super::render_iptables::LINK_LOCAL_V6;

/// What a correctly installed table holds for `b` (table flags 0: the
/// caller adds `TABLE_F_OWNER | TABLE_F_PERSIST` when it owns the table).
pub fn desired(b: &Blocklist) -> TableModel {
    let mut t = TableModel {
        userdata: comment_udata(TABLE_COMMENT),
        ..Default::default()
    };
    let mut guard = ChainModel::default();
    let want_set = |t: &mut TableModel, name: &String, fam: Family| {
        t.sets.entry(name.clone()).or_insert_with(|| set_for(name, fam, b));
    };
    let mut rules = b.rules().into_iter();
    while let Some(r) = rules.next() {
        if !matches!(r.verdict, RuleVerdict::Log { .. }) {
            let (exprs, sets) = rule_exprs(&r);
            sets.iter().for_each(|name| want_set(&mut t, name, r.family));
            guard.rules.push(RuleModel::new(exprs, &r.name()));
            continue;
        }
        let decider = rules
            .next()
            .expect("model::Blocklist::rules puts the deciding rule after each log rule");
        let (mut exprs, sets) = match_exprs(&decider);
        sets.iter().for_each(|name| want_set(&mut t, name, r.family));
        let chain = decider.name();
        exprs.push(Expr::Counter(Tally::default()));
        exprs.push(Expr::Immediate {
            dreg: REG_VERDICT,
            verdict: Verdict::Jump(chain.clone()),
        });
        guard.rules.push(RuleModel::new(exprs, &chain));
        let verdict = verdict_exprs(&decider);
        let mut decide = ChainModel::default();
        let push_logs = |t: &mut TableModel, decide: &mut ChainModel, log: LogRules| {
            for set in [&log.meter, log.iif.known, log.iif.new] {
                want_set(t, &set.to_string(), r.family);
            }
            decide.rules.push(RuleModel::new(log.known, &log.name));
            decide.rules.push(RuleModel::new(log.new, &log.new_name));
            if let Some((full, name)) = log.full {
                decide.rules.push(RuleModel::new(full, &name));
            }
        };
        if r.family == Family::V4 {
            push_logs(&mut t, &mut decide, fragment_rules(&r, verdict.clone()));
        }
        decide.rules.extend(answer_rules(&decider, verdict.clone()));
        push_logs(&mut t, &mut decide, connect_rules(&r, verdict.clone()));
        push_logs(&mut t, &mut decide, push_rules(&r, verdict.clone()));
        push_logs(&mut t, &mut decide, flow_rules(&r));
        push_logs(&mut t, &mut decide, flowless_rules(&r));
        if !decider.takes_only_tcp() {
            // TCP past the log rules above gets the verdict unlogged:
            // `log_rules` are the other protocols' allowance.
            let mut e = l4_tcp().to_vec();
            e.extend(verdict_or_return(verdict.clone()));
            decide
                .rules
                .push(RuleModel::new(e, &format!("{chain}{TCP_PAST_METERS_SUFFIX}")));
            push_logs(&mut t, &mut decide, log_rules(&r));
        }
        if let Some(verdict) = verdict {
            // Here no match says TCP: nft adds `meta l4proto tcp` to a tcp reset.
            let mut e = Vec::new();
            if decider.verdict == RuleVerdict::TcpReset {
                e.extend(l4_tcp());
            }
            e.extend(verdict);
            decide.rules.push(RuleModel::new(e, &chain));
        }
        t.chains.insert(chain, decide);
    }
    t.chains.insert(GUARD_CHAIN.to_string(), guard);
    for hook in &b.hooks {
        t.chains.insert(hook.name().to_string(), base_chain(*hook));
    }
    t
}

fn base_chain(hook: Hook) -> ChainModel {
    ChainModel {
        base: Some(BaseChain {
            chain_type: "filter".into(),
            hook: hook.number(),
            priority: PRIORITY,
            policy: NF_ACCEPT,
        }),
        flags: CHAIN_F_BASE,
        userdata: Vec::new(),
        rules: vec![RuleModel::new(
            vec![Expr::Immediate {
                dreg: REG_VERDICT,
                verdict: Verdict::Jump(GUARD_CHAIN.to_string()),
            }],
            ENTER_COMMENT,
        )],
        unknown: Vec::new(),
    }
}

fn set_name(kind: &str, fam: Family) -> String {
    format!("{kind}_{}", fam.suffix())
}

fn addr_key(fam: Family) -> KeyType {
    match fam {
        Family::V4 => KeyType::Ipv4Addr,
        Family::V6 => KeyType::Ipv6Addr,
    }
}

/// The set a rule of family `fam` references by `name`, filled from `b`.
fn set_for(name: &str, fam: Family, b: &Blocklist) -> SetModel {
    let a = b.addrs(fam).cloned().unwrap_or_default();
    let plain = |key: KeyType, elements: BTreeSet<Element>| SetModel::new(key.clone(), 0, set_udata(&key), elements);
    let interval = |nets: &[IpNet]| SetModel {
        flags: SET_F_INTERVAL,
        ..plain(addr_key(fam), interval_elements(nets))
    };
    let kind = name.rsplit_once('_').map_or(name, |(k, _)| k);
    let meter = |key: KeyType, m: &model::Meter| SetModel {
        flags: SET_F_EVAL | SET_F_TIMEOUT,
        timeout_ms: m.timeout_secs * 1000,
        size: m.size,
        ..plain(key, BTreeSet::new())
    };
    match kind {
        _ if [IIF_SHARED.new, IIF_INITIATED.new].contains(&name) => meter(KeyType::IfaceIndex, &METER_IIF_NEW),
        _ if [IIF_SHARED.known, IIF_INITIATED.known].contains(&name) => meter(KeyType::IfaceIndex, &METER_IIF_KNOWN),
        _ if name == LOCAL_PORTS_SET => plain(
            KeyType::InetService,
            b.local_ports
                .iter()
                .map(|p| element(p.to_be_bytes().to_vec()))
                .collect(),
        ),
        "sources" => interval(&a.sources),
        "link_local" => interval(&[LINK_LOCAL_V6.parse().expect("a valid constant")]),
        "exempt" => interval(&a.exempt),
        ATTEMPTS_SET | CONNECTS_SET => meter(KeyType::Concat(vec![KeyType::IfaceIndex, addr_key(fam)]), &METER),
        FLOWS_SET | PUSHES_SET => meter(
            KeyType::Concat(vec![KeyType::IfaceIndex, addr_key(fam), KeyType::InetService]),
            &METER,
        ),
        "api_port" => plain(
            KeyType::Concat(vec![addr_key(fam), KeyType::InetService]),
            a.api_ports
                .iter()
                .map(|(ip, port)| {
                    let mut key = ip_bytes(ip);
                    key.extend(port.to_be_bytes());
                    key.extend([0, 0]);
                    element(key)
                })
                .collect(),
        ),
        _ => plain(
            addr_key(fam),
            a.api_any.iter().map(|ip| element(ip_bytes(ip))).collect(),
        ),
    }
}

fn element(key: Vec<u8>) -> Element {
    Element {
        key,
        flags: 0,
        unknown: Vec::new(),
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The userdata nft 1.0.6 writes on a set declared `type <key>` (read back
/// from the kernel): key byte order big-endian (2) for a single type; byte
/// order 0 and a nested typeof record for a concatenation; host byte order
/// (1) for an interface index. Host-order u32s.
pub fn set_udata(key: &KeyType) -> Vec<u8> {
    let u32_tlv = |t: u8, v: u32| {
        let mut out = vec![t, 4];
        out.extend(v.to_ne_bytes());
        out
    };
    match key {
        KeyType::Concat(_) => {
            let mut out = u32_tlv(0, 0);
            let mut inner = u32_tlv(0, 13);
            inner.extend([1, 0]);
            out.extend([3, inner.len() as u8]);
            out.extend(inner);
            out
        }
        KeyType::IfaceIndex => u32_tlv(0, 1),
        _ => u32_tlv(0, 2),
    }
}

/// How the kernel stores CIDRs in an interval set, as nft sends them: an
/// end element at 0 when the first range does not start there, then each
/// range's start and the element after its end flagged `INTERVAL_END`
/// (omitted past the top of the address space; kept when the next range
/// starts right there, as nft does: the kernel then holds both at that key).
pub fn interval_elements(nets: &[IpNet]) -> BTreeSet<Element> {
    let mut ranges: Vec<(u128, u128, usize)> = nets
        .iter()
        .map(|n| {
            let (lo, hi, width) = match (n.network(), n.broadcast()) {
                (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 4),
                (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 16),
                _ => unreachable!("network and broadcast share a family"),
            };
            (lo, hi, width)
        })
        .collect();
    ranges.sort();
    let bytes = |v: u128, width: usize| v.to_be_bytes()[16 - width..].to_vec();
    let mut out = BTreeSet::new();
    let Some(&(first, _, width)) = ranges.first() else {
        return out;
    };
    let top = if width == 4 { u32::MAX as u128 } else { u128::MAX };
    if first != 0 {
        out.insert(Element {
            flags: ELEM_F_INTERVAL_END,
            ..element(bytes(0, width))
        });
    }
    for &(lo, hi, _) in &ranges {
        out.insert(element(bytes(lo, width)));
        if hi < top {
            out.insert(Element {
                flags: ELEM_F_INTERVAL_END,
                ..element(bytes(hi + 1, width))
            });
        }
    }
    out
}

/// Offsets in the IPv4 / IPv6 header and the address length.
fn addr_layout(fam: Family) -> (u32, u32, u32, u8) {
    match fam {
        Family::V4 => (12, 16, 4, NFPROTO_IPV4),
        Family::V6 => (8, 24, 16, NFPROTO_IPV6),
    }
}

fn lookup(set: &str) -> Expr {
    Expr::Lookup {
        set: set.to_string(),
        sreg: REG_1,
        flags: 0,
    }
}

/// `tcp dport` into `dreg`, after its `meta l4proto tcp` dependency.
fn tcp_dport(dreg: u32) -> Expr {
    payload(PAYLOAD_TRANSPORT, 2, 2, dreg)
}

fn fib_type(flags: u32, op: u32) -> [Expr; 2] {
    [
        Expr::Fib {
            flags,
            result: FIB_RESULT_ADDRTYPE,
            dreg: REG_1,
        },
        cmp(op, RTN_LOCAL.to_ne_bytes().to_vec()),
    ]
}

/// The expressions of one rule without a log rule before it (in `guard`)
/// and the sets they reference, in nft's order: its match, a counter
/// when it blocks or audits, its verdict.
pub fn rule_exprs(r: &Rule) -> (Vec<Expr>, Vec<String>) {
    let (mut e, sets) = match_exprs(r);
    if r.blocks() {
        e.push(Expr::Counter(Tally::default()));
    }
    e.extend(verdict_exprs(r).unwrap_or_default());
    (e, sets)
}

/// The match of a rule and the sets it references.
pub fn match_exprs(r: &Rule) -> (Vec<Expr>, Vec<String>) {
    let (saddr, daddr, alen, nfproto) = addr_layout(r.family);
    let sources = set_name("sources", r.family);
    let mut e = vec![
        meta(META_NFPROTO),
        cmp(CMP_EQ, vec![nfproto]),
        payload(PAYLOAD_NETWORK, saddr, alen, REG_1),
    ];
    let mut sets = Vec::new();
    if r.target == Target::Exempt {
        let ex = set_name("exempt", r.family);
        e.push(lookup(&ex));
        sets.push(ex);
    } else if r.target == Target::LocalPortLinkLocal {
        e.push(lookup(LINK_LOCAL_SET));
        sets.push(LINK_LOCAL_SET.to_string());
    } else {
        e.push(lookup(&sources));
        sets.push(sources);
    }
    match r.target {
        Target::Exempt => {}
        Target::ApiPort => {
            let api = set_name("api_port", r.family);
            // Concatenation: the port goes in the register after the address.
            let port_reg = if alen == 4 { REG32_01 } else { REG_2 };
            e.extend(l4_tcp());
            e.push(payload(PAYLOAD_NETWORK, daddr, alen, REG_1));
            e.push(tcp_dport(port_reg));
            e.push(lookup(&api));
            sets.push(api);
        }
        Target::ApiAny => {
            let api = set_name("api_any", r.family);
            e.push(payload(PAYLOAD_NETWORK, daddr, alen, REG_1));
            e.push(lookup(&api));
            if r.tcp_only {
                e.extend(l4_tcp());
            }
            sets.push(api);
        }
        Target::LocalPort | Target::LocalPortLinkLocal => {
            e.extend(fib_type(FIB_F_SADDR, CMP_NEQ));
            e.extend(fib_type(FIB_F_DADDR, CMP_EQ));
            e.extend(l4_tcp());
            e.push(tcp_dport(REG_1));
            e.push(lookup(LOCAL_PORTS_SET));
            sets.push(LOCAL_PORTS_SET.to_string());
        }
    }
    (e, sets)
}

/// The two log rules of a chain taking every protocol (a port-less
/// apiserver) for packets other than TCP, after the connect and flow log
/// rules (TCP never reaches them: past those, a rule gives it the verdict
/// unlogged), as nft sends them (with the `meta nfproto` dependency of `ip
/// saddr`), and the per-source meter they update, keyed on the input
/// interface and the source (`iif . ip saddr`: a pod forging another pod's
/// address from its own interface spends an allowance of its own, never
/// that pod's):
/// - a source the meter knows: `iif . ip saddr @attempts_v4 update
///   @iif_known { iif limit rate 1000/second burst 2000 packets } counter log
///   prefix ... group G snaplen 96`. The lookup itself applies the source's
///   limit: the kernel evaluates a found element's expressions and stops the
///   rule when its limit is spent (`nft_lookup_eval`,
///   `nft_set_elem_update_expr`, Linux 5.7 and later). An `update` here as
///   well would spend two tokens a packet. The element is not refreshed, so a
///   minute after it was added the source is new again (one more burst a
///   minute at most);
/// - a new source: `iif . ip saddr != @attempts_v4 update @iif_new { iif
///   limit rate 200/second burst 400 packets } update @attempts_v4 { iif . ip
///   saddr limit ... } counter log ...`: the interface's allowance for new
///   sources first, so forged sources cannot fill the meter
///   (`model::METER_IIF_NEW`).
///
/// Over a limit a rule stops at that meter; the verdict rule after them does
/// not depend on either. Answers never reach them (`nft_answers`).
pub fn log_rules(r: &Rule) -> LogRules {
    metered_log_rules(r, Meter::Attempts, Vec::new())
}

/// The two log rules of a connect, first after the answer rules:
/// `tcp flags syn / syn,ack` (a SYN without ACK: how every TCP connect
/// begins), metered per source in a set of their own (`connects_v4`), and
/// ending in the chain's `verdict` (None, an audit rule: `return`) so a
/// logged connect is not logged again by the rules after. Nothing a pod
/// sends to answer another's packet is a SYN without ACK, so however many
/// answers forged packets draw from a pod (bare ACKs, later fragments: a
/// break-it find), they spend nothing of its allowance for connects: not
/// its per-source meter, not its interface's (`IIF_NEW_INITIATED_SET`,
/// shared with `push_rules` only). Over its limit a connect goes past
/// every log rule to the verdict, unlogged.
pub fn connect_rules(r: &Rule, verdict: Option<Vec<Expr>>) -> LogRules {
    metered_log_rules(r, Meter::Connects, verdict_or_return(verdict))
}

/// The two log rules of TCP's other packets, after `connect_rules`: shaped
/// as those, with `tcp flags != syn / syn,ack` (anything but a connect: one
/// over its own allowance goes past them) and a meter keyed per flow on the
/// pod's side (`iif . ip saddr . tcp sport @flows_v4`), no verdict. So the
/// packets of one connection spend only that connection's allowance: the
/// bare ACKs a pod's listening port sends by the million to answer SYN
/// pairs forged "from the apiserver" by several senders at once (a third
/// break-it round's find) no longer keep its allowance spent and hide a
/// connection it opened before audit began. A pod making new flows spends
/// its interface's allowance for new elements (`model::METER_IIF_NEW`),
/// never another pod's.
pub fn flow_rules(r: &Rule) -> LogRules {
    metered_log_rules(r, Meter::Flows, Vec::new())
}

/// The two log rules of a segment that pushes data or ends a connection
/// (`tcp flags & (fin|psh|urg) != 0`), after `connect_rules`: shaped as
/// `flow_rules`, in a meter of their own (`iif . ip saddr . tcp sport
/// @pushes_v4`), ending in the chain's verdict (`return` in audit mode) so
/// a logged one is not logged again. Nothing forged can draw such a segment
/// from a pod (the last segment of each write carries PSH, a close FIN),
/// while data forged "from the apiserver" out of a connection's window
/// draws a bare ACK on that connection's own flow each time, unlimited by
/// Linux (a fifth break-it round's find: those ACKs kept the flow's
/// allowance spent, and a connection opened before audit began went
/// unreported). Its interface's allowances are the connects'
/// (`IIF_NEW_INITIATED_SET`), which those ACKs cannot spend; a push the
/// full meter cannot take is logged on that allowance alone (the meter-full
/// rule). Over its limit a push goes on to the flow rules.
pub fn push_rules(r: &Rule, verdict: Option<Vec<Expr>>) -> LogRules {
    metered_log_rules(r, Meter::Pushes, verdict_or_return(verdict))
}

/// The two log rules of TCP's other packets that `flow_rules` could not
/// meter, after them: a packet of a flow the flow meter holds no element
/// for (`iif . ip saddr . tcp sport != @flows_v4`: the meter is full, or
/// the interface's allowance for new elements is spent), metered per source
/// (`iif . ip saddr @attempts_v4`), no verdict. A pod needs no privilege to
/// fill the flow meter in audit mode, where each of its connects makes an
/// element (a review's find: six pods making 200 connects a second kept it
/// full); this keeps another pod's connection opened before audit began
/// reported then, from its own per-source allowance. A packet over its
/// flow's own limit has an element and never comes here, so the answers
/// forged packets draw from a pod's listening port spend nothing here.
pub fn flowless_rules(r: &Rule) -> LogRules {
    metered_log_rules(r, Meter::Flowless, Vec::new())
}

/// The two log rules of an IPv4 TCP fragment, first in the chain (before
/// the answer rules: `meta l4proto tcp ip frag-off & 0x3fff != 0`, a first
/// fragment or a later one), metered per source (`iif . ip saddr
/// @attempts_v4`) and ending in the chain's verdict (`return` in audit
/// mode). No TCP stack fragments a segment, so a TCP fragment is crafted
/// by the pod that sends it (other protocols' fragments, an echo reply to
/// a forged big ping among them, keep the answer rules); a first
/// fragment cut before the TCP flags would otherwise pass every flags test
/// unlogged (a review's find: a raw-socket pod could hold an audited
/// conversation unlogged where the node does not reassemble before the
/// filter). IPv6 needs none: a receiver drops a first fragment without the
/// whole TCP header (RFC 8200, and Linux drops a fragment other than the
/// last shorter than 1280 bytes), so the first fragment's flags are read.
pub fn fragment_rules(r: &Rule, verdict: Option<Vec<Expr>>) -> LogRules {
    metered_log_rules(r, Meter::Fragments, verdict_or_return(verdict))
}

/// The IPv4 header's flags and fragment offset: more fragments or an
/// offset, `ip frag-off & 0x3fff` (nft lists the mask as 16383).
pub const FRAGMENT_MASK: u16 = 0x3fff;
/// The name of a fragment log rule: the log rule's name and this.
pub const FRAGMENT_SUFFIX: &str = "-fragment";
/// The name of a flowless log rule: the log rule's name and this.
pub const FLOWLESS_SUFFIX: &str = "-flowless";

/// The meter of a pair of log rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meter {
    Connects,
    Pushes,
    Flows,
    Flowless,
    Fragments,
    Attempts,
}

/// `log_rules`, `connect_rules` and `flow_rules`: the `meter` and
/// expressions after the log statement (`ending`).
fn metered_log_rules(r: &Rule, meter: Meter, ending: Vec<Expr>) -> LogRules {
    let RuleVerdict::Log { group, .. } = r.verdict else {
        unreachable!("log rules are built for log rules only")
    };
    let (kind, suffix) = match meter {
        Meter::Connects => (CONNECTS_SET, CONNECT_SUFFIX),
        Meter::Pushes => (PUSHES_SET, PUSH_SUFFIX),
        Meter::Flows => (FLOWS_SET, FLOW_SUFFIX),
        Meter::Flowless => (ATTEMPTS_SET, FLOWLESS_SUFFIX),
        Meter::Fragments => (ATTEMPTS_SET, FRAGMENT_SUFFIX),
        Meter::Attempts => (ATTEMPTS_SET, ""),
    };
    let (saddr, _, alen, nfproto) = addr_layout(r.family);
    let meter_set = set_name(kind, r.family);
    let iif = || Expr::Meta {
        key: META_IIF,
        dreg: REG_1,
    };
    // The meter's key: `iif . ip saddr` (`. tcp sport` for flows), in the
    // 32-bit registers after reg 1's first.
    let sport_reg = REG32_01 + alen / 4;
    let key_of = |per_flow: bool| {
        let mut e = vec![iif(), payload(PAYLOAD_NETWORK, saddr, alen, REG32_01)];
        if per_flow {
            e.push(payload(PAYLOAD_TRANSPORT, 0, 2, sport_reg));
        }
        e
    };
    let per_flow = matches!(meter, Meter::Flows | Meter::Pushes);
    let allowances = match meter {
        Meter::Connects | Meter::Pushes => IIF_INITIATED,
        _ => IIF_SHARED,
    };
    let key = || key_of(per_flow);
    let update = |set: &str, m: &model::Meter| Expr::Dynset {
        op: DYNSET_OP_UPDATE,
        set: set.to_string(),
        sreg_key: REG_1,
        timeout_ms: 0,
        flags: 0,
        exprs: vec![Expr::Limit {
            rate: m.rate,
            unit_secs: 1,
            burst: m.burst,
            kind: LIMIT_PKTS,
            flags: 0,
        }],
    };
    let in_meter = |flags| Expr::Lookup {
        set: meter_set.clone(),
        sreg: REG_1,
        flags,
    };
    let tail = || {
        let mut e = vec![
            Expr::Counter(Tally::default()),
            Expr::Log {
                prefix: r.log_prefix().expect("a log rule has a prefix"),
                group,
                snaplen: LOG_SNAPLEN,
            },
        ];
        e.extend(ending.iter().cloned());
        e
    };
    // nft's order: the flags test (with its `meta l4proto tcp`) first, then
    // `meta nfproto`, then the key.
    let head = || {
        let syn = TCP_FLAG_SYN | TCP_FLAG_ACK;
        let nfproto = [meta(META_NFPROTO), cmp(CMP_EQ, vec![nfproto])];
        let mut e = match meter {
            Meter::Connects => tcp_flags(syn, CMP_EQ, TCP_FLAG_SYN),
            Meter::Flows | Meter::Flowless => tcp_flags(syn, CMP_NEQ, TCP_FLAG_SYN),
            Meter::Pushes => tcp_flags(TCP_FLAG_FIN | TCP_FLAG_PSH | TCP_FLAG_URG, CMP_NEQ, 0),
            // TCP only: other protocols' fragments keep their own rules.
            Meter::Fragments => l4_tcp().to_vec(),
            Meter::Attempts => Vec::new(),
        };
        e.extend(nfproto);
        match meter {
            Meter::Flowless => {
                // No element in the flow meter.
                e.extend(key_of(true));
                e.push(Expr::Lookup {
                    set: set_name(FLOWS_SET, r.family),
                    sreg: REG_1,
                    flags: LOOKUP_F_INV,
                });
            }
            Meter::Fragments => e.extend(masked_payload(
                PAYLOAD_NETWORK,
                6,
                &FRAGMENT_MASK.to_be_bytes(),
                CMP_NEQ,
                &[0, 0],
            )),
            _ => {}
        }
        e.extend(key());
        e
    };
    let mut known = head();
    known.extend([in_meter(0), iif(), update(allowances.known, &METER_IIF_KNOWN)]);
    known.extend(tail());
    let mut new = head();
    new.extend([in_meter(LOOKUP_F_INV), iif(), update(allowances.new, &METER_IIF_NEW)]);
    new.extend(key());
    new.push(update(&meter_set, &METER));
    new.extend(tail());
    // A new source the meter could not take (full): its interface's
    // allowance for new sources alone. Not for flows: the flowless rules
    // after them are theirs. For pushes too (a sixth break-it round's
    // find): pods making plain connects fill `pushes_v4` in audit mode,
    // and a push falling to the flowless rules spent its source's allowance
    // there, which the bare ACKs SYNs forged to the pod's listening port
    // drew keep spent.
    let full = (meter != Meter::Flows).then(|| {
        let mut e = head();
        e.extend([in_meter(LOOKUP_F_INV), iif(), update(allowances.new, &METER_IIF_NEW)]);
        e.extend(tail());
        (e, format!("{}{suffix}{METER_FULL_SUFFIX}", r.name()))
    });
    LogRules {
        known,
        new,
        name: format!("{}{suffix}", r.name()),
        new_name: format!("{}{suffix}{NEW_SOURCE_SUFFIX}", r.name()),
        meter: meter_set,
        iif: allowances,
        full,
    }
}

/// What `log_rules` returns.
pub struct LogRules {
    /// The rule for sources the meter knows (named after the log rule).
    pub known: Vec<Expr>,
    /// The rule for new sources, named `new_name`.
    pub new: Vec<Expr>,
    /// The name of the rule for known sources.
    pub name: String,
    pub new_name: String,
    /// The per-source meter both update.
    pub meter: String,
    /// The interface's allowances they spend: `IIF_SHARED`, or
    /// `IIF_INITIATED` for connects and pushes.
    pub iif: IifAllowances,
    /// The rule for a new source when the meter is full, and its name
    /// (`...-meter-full`; none for the flow rules).
    pub full: Option<(Vec<Expr>, String)>,
}

/// The verdict of a rule (None: it has none, an audit rule only counts).
pub fn verdict_exprs(r: &Rule) -> Option<Vec<Expr>> {
    let immediate = |verdict| Expr::Immediate {
        dreg: REG_VERDICT,
        verdict,
    };
    Some(match r.verdict {
        RuleVerdict::Count | RuleVerdict::Log { .. } => return None,
        RuleVerdict::Return => vec![immediate(Verdict::Return)],
        RuleVerdict::Drop => vec![immediate(Verdict::Drop)],
        RuleVerdict::TcpReset => vec![Expr::Reject {
            kind: REJECT_TCP_RST,
            icmp_code: 0,
        }],
        RuleVerdict::IcmpProhibited => vec![Expr::Reject {
            kind: REJECT_ICMPX_UNREACH,
            icmp_code: ICMPX_ADMIN_PROHIBITED,
        }],
    })
}

/// Sets by name a table references from its rules (for checks and tests).
pub fn referenced_sets(t: &TableModel) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (chain, c) in &t.chains {
        for r in &c.rules {
            for e in &r.exprs {
                if let Expr::Lookup { set, .. } = e {
                    out.entry(set.clone()).or_default().push(chain.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "nft_desired_tests.rs"]
mod tests;
