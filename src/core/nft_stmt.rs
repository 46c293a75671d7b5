//! Kernel expressions back into words: the nft statements an expression list
//! reads as (`ip saddr @sources_v4`, `tcp dport @local_ports`, `counter ...`,
//! `reject with tcp reset`), grouped with the expressions they came from, and
//! the one-line-per-expression form `nft --debug=netlink` prints. Sequences
//! nft would not produce are shown raw; nothing here panics on odd input.

use super::nft_model::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One statement of a rule and the expressions it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    /// What `nft list` prints; empty for a dependency it leaves implicit
    /// (`meta nfproto ipv4` before `ip saddr`).
    pub text: String,
    /// Index of its first and last expression.
    pub exprs: (usize, usize),
    /// For matches: left-hand side, operator (`==`, `!=`...) and right-hand side.
    pub matches: Option<(String, String, String)>,
}

/// How the value loaded into a register is printed.
#[derive(Clone, Copy, PartialEq)]
enum ValueKind {
    NfProto,
    L4Proto,
    AddrType,
    Ipv4,
    Ipv6,
    Port,
    TcpFlags,
    /// Printed in decimal, mask too (`ip frag-off & 16383 != 0`).
    Decimal,
    IcmpType,
    Icmpv6Type,
    Hex,
}

struct Load {
    reg: u32,
    name: String,
    kind: ValueKind,
    at: usize,
    /// The mask a boolean `bitwise` (xor 0) applied to the loaded value in place.
    mask: Option<Vec<u8>>,
}

/// The statements of an expression list, in order.
pub fn statements(exprs: &[Expr]) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut pending: Vec<Load> = Vec::new();
    for (i, e) in exprs.iter().enumerate() {
        if let Some((name, kind, dreg)) = load(e, &exprs[..i]) {
            pending.retain(|l| l.reg != dreg);
            pending.push(Load {
                reg: dreg,
                name,
                kind,
                at: i,
                mask: None,
            });
            continue;
        }
        match e {
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } if sreg == dreg
                && xor.iter().all(|b| *b == 0)
                && mask.len() == *len as usize
                && xor.len() == mask.len()
                && pending.last().is_some_and(|l| l.reg == *sreg && l.mask.is_none()) =>
            {
                if let Some(l) = pending.last_mut() {
                    l.mask = Some(mask.clone());
                }
            }
            Expr::Cmp { sreg, op, data } => match pending.iter().position(|l| l.reg == *sreg) {
                Some(p) if pending[p].mask.is_some() => {
                    let l = pending.remove(p);
                    flush_raw(&mut out, exprs, &mut pending);
                    out.push(masked(&l, *op, data, i));
                }
                Some(p) => {
                    let l = pending.remove(p);
                    flush_raw(&mut out, exprs, &mut pending);
                    let right = value_text(l.kind, data);
                    let implicit = *op == CMP_EQ && is_dependency(&l.name, data, &exprs[i + 1..]);
                    out.push(matched(&l.name, *op, right, (l.at, i), implicit));
                }
                None => {
                    flush_raw(&mut out, exprs, &mut pending);
                    out.push(single(raw_text(e), i));
                }
            },
            Expr::Lookup { set, sreg, flags }
                if pending.first().is_some_and(|l| l.reg == *sreg) && pending.iter().all(|l| l.mask.is_none()) =>
            {
                let left: Vec<&str> = pending.iter().map(|l| l.name.as_str()).collect();
                let op = if flags & LOOKUP_F_INV != 0 { CMP_NEQ } else { CMP_EQ };
                let unknown_flags = flags & !LOOKUP_F_INV != 0;
                let first = pending[0].at;
                let mut s = matched(&left.join(" . "), op, format!("@{set}"), (first, i), false);
                if unknown_flags {
                    s.text = format!("{} {}", s.text, raw_text(e));
                }
                pending.clear();
                out.push(s);
            }
            Expr::Dynset {
                op,
                set,
                sreg_key,
                timeout_ms,
                flags: 0,
                exprs: inner,
            } if pending.first().is_some_and(|l| l.reg == *sreg_key) && pending.iter().all(|l| l.mask.is_none()) => {
                // One load, or a concatenation (`iif . ip saddr`).
                let names: Vec<String> = pending.iter().map(|l| l.name.clone()).collect();
                let l = pending.remove(0);
                pending.clear();
                let verb = match *op {
                    0 => "add".to_string(),
                    DYNSET_OP_UPDATE => "update".to_string(),
                    2 => "delete".to_string(),
                    n => format!("op{n}"),
                };
                let mut parts = vec![names.join(" . ")];
                if *timeout_ms != 0 {
                    parts.push(format!("timeout {}", duration_text(*timeout_ms)));
                }
                parts.extend(inner.iter().map(other_text));
                out.push(Stmt {
                    text: format!("{verb} @{set} {{ {} }}", parts.join(" ")),
                    exprs: (l.at, i),
                    matches: None,
                });
            }
            _ => {
                flush_raw(&mut out, exprs, &mut pending);
                out.push(single(other_text(e), i));
            }
        }
    }
    flush_raw(&mut out, exprs, &mut pending);
    out
}

/// The rule as `nft list` prints it (statements, then the comment).
pub fn rule_text(r: &RuleModel) -> String {
    let mut parts: Vec<String> = statements(&r.exprs)
        .into_iter()
        .map(|s| s.text)
        .filter(|t| !t.is_empty())
        .collect();
    match r.comment() {
        Some(c) => parts.push(format!("comment \"{c}\"")),
        None if !r.userdata.is_empty() => parts.push(format!("userdata 0x{}", hex(&r.userdata))),
        None => {}
    }
    parts.join(" ")
}

fn single(text: String, i: usize) -> Stmt {
    Stmt {
        text,
        exprs: (i, i),
        matches: None,
    }
}

fn matched(left: &str, op: u32, right: String, exprs: (usize, usize), implicit: bool) -> Stmt {
    let op_text = match op {
        CMP_EQ => "==",
        CMP_NEQ => "!=",
        2 => "<",
        3 => "<=",
        4 => ">",
        5 => ">=",
        _ => "?",
    };
    let shown = if op == CMP_EQ {
        String::new()
    } else {
        format!("{op_text} ")
    };
    Stmt {
        text: if implicit {
            String::new()
        } else {
            format!("{left} {shown}{right}")
        },
        exprs,
        matches: Some((left.to_string(), op_text.to_string(), right)),
    }
}

/// A masked value compared, as nft 1.0 prints it: `tcp flags rst` (`&
/// rst != 0`), `tcp flags ! rst` (`& rst == 0`), `tcp flags syn,ack /
/// syn,ack`, `tcp flags != syn,ack / syn,ack`; another load `name & mask
/// == value`.
fn masked(l: &Load, op: u32, data: &[u8], i: usize) -> Stmt {
    let mask = l.mask.as_deref().unwrap_or_default();
    let op_text = match op {
        CMP_EQ => "==",
        CMP_NEQ => "!=",
        _ => "?",
    };
    let right = value_text(l.kind, data);
    let mask_text = value_text(l.kind, mask);
    let zero = data.iter().all(|b| *b == 0);
    let text = match (l.kind, op) {
        (ValueKind::TcpFlags, CMP_EQ) if zero => format!("{} ! {mask_text}", l.name),
        (ValueKind::TcpFlags, CMP_EQ) => format!("{} {right} / {mask_text}", l.name),
        (ValueKind::TcpFlags, CMP_NEQ) if zero => format!("{} {mask_text}", l.name),
        (ValueKind::TcpFlags, CMP_NEQ) => format!("{} != {right} / {mask_text}", l.name),
        _ => format!("{} & {mask_text} {op_text} {right}", l.name),
    };
    Stmt {
        text,
        exprs: (l.at, i),
        matches: Some((format!("{} & {mask_text}", l.name), op_text.to_string(), right)),
    }
}

/// TCP flags by name, in bit order, as nft lists them (`syn,ack`).
fn tcp_flags_text(flags: u8) -> String {
    let names = ["fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"];
    let set: Vec<&str> = (0..8).filter(|b| flags & (1 << b) != 0).map(|b| names[b]).collect();
    if set.is_empty() {
        "0x0".into()
    } else {
        set.join(",")
    }
}

/// Loads nobody consumed are printed raw (with their mask, if any).
fn flush_raw(out: &mut Vec<Stmt>, exprs: &[Expr], pending: &mut Vec<Load>) {
    for l in pending.drain(..) {
        out.push(single(raw_text(&exprs[l.at]), l.at));
        if l.mask.is_some() {
            let at = exprs[l.at..]
                .iter()
                .position(|e| matches!(e, Expr::Bitwise { .. }))
                .map_or(l.at, |p| l.at + p);
            out.push(single(raw_text(&exprs[at]), at));
        }
    }
}

/// `meta nfproto ipv4` before an IPv4 header load or `meta l4proto icmp`,
/// `meta l4proto tcp` (`icmp`, `icmpv6`) before a transport header load:
/// nft prints none of them.
fn is_dependency(name: &str, data: &[u8], rest: &[Expr]) -> bool {
    let loads = |base: u32| {
        rest.iter()
            .any(|e| matches!(e, Expr::Payload { base: b, .. } if *b == base))
    };
    // `icmp type` depends on `meta l4proto icmp`, which depends on `meta nfproto ipv4`.
    let icmp_follows = |p: u8| matched_l4proto(&rest[..rest.len().min(2)]) == Some(p) && loads(PAYLOAD_TRANSPORT);
    match (name, data) {
        ("meta nfproto", [NFPROTO_IPV4]) => loads(PAYLOAD_NETWORK) || icmp_follows(IPPROTO_ICMP),
        ("meta nfproto", [NFPROTO_IPV6]) => loads(PAYLOAD_NETWORK) || icmp_follows(IPPROTO_ICMPV6),
        ("meta l4proto", [p]) if [IPPROTO_TCP, IPPROTO_ICMP, IPPROTO_ICMPV6].contains(p) => loads(PAYLOAD_TRANSPORT),
        _ => false,
    }
}

/// The transport protocol the expressions `before` a load matched last
/// (`meta l4proto icmp`), if any.
fn matched_l4proto(before: &[Expr]) -> Option<u8> {
    matched_meta(before, META_L4PROTO)
}

/// The network protocol the expressions `before` a load matched last.
fn matched_nfproto(before: &[Expr]) -> Option<u8> {
    matched_meta(before, META_NFPROTO)
}

/// The one-byte value `meta <key>` was last matched equal to in `before`.
fn matched_meta(before: &[Expr], key: u32) -> Option<u8> {
    before.windows(2).rev().find_map(|w| match w {
        [Expr::Meta { key: k, dreg }, Expr::Cmp { sreg, op: CMP_EQ, data }] if *k == key && dreg == sreg => {
            match data.as_slice() {
                [p] => Some(*p),
                _ => None,
            }
        }
        _ => None,
    })
}

/// What a load expression loads, how its value prints, and where it goes
/// (`before`: the rule's expressions ahead of it).
fn load(e: &Expr, before: &[Expr]) -> Option<(String, ValueKind, u32)> {
    Some(match e {
        Expr::Meta { key, dreg } => {
            let (name, kind) = match *key {
                META_NFPROTO => ("meta nfproto".to_string(), ValueKind::NfProto),
                META_L4PROTO => ("meta l4proto".to_string(), ValueKind::L4Proto),
                META_IIF => ("iif".to_string(), ValueKind::Hex),
                k => (format!("meta key {k}"), ValueKind::Hex),
            };
            (name, kind, *dreg)
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let (name, kind) = match (*base, *offset, *len) {
                (PAYLOAD_NETWORK, 12, 4) => ("ip saddr", ValueKind::Ipv4),
                (PAYLOAD_NETWORK, 16, 4) => ("ip daddr", ValueKind::Ipv4),
                (PAYLOAD_NETWORK, 8, 16) => ("ip6 saddr", ValueKind::Ipv6),
                (PAYLOAD_NETWORK, 24, 16) => ("ip6 daddr", ValueKind::Ipv6),
                (PAYLOAD_NETWORK, 6, 2) if matched_nfproto(before) == Some(NFPROTO_IPV4) => {
                    ("ip frag-off", ValueKind::Decimal)
                }
                (PAYLOAD_TRANSPORT, 0, 2) => ("tcp sport", ValueKind::Port),
                (PAYLOAD_TRANSPORT, 2, 2) => ("tcp dport", ValueKind::Port),
                (PAYLOAD_TRANSPORT, TCP_FLAGS_OFFSET, 1) => ("tcp flags", ValueKind::TcpFlags),
                (PAYLOAD_TRANSPORT, 0, 1) if matched_l4proto(before) == Some(IPPROTO_ICMP) => {
                    ("icmp type", ValueKind::IcmpType)
                }
                (PAYLOAD_TRANSPORT, 0, 1) if matched_l4proto(before) == Some(IPPROTO_ICMPV6) => {
                    ("icmpv6 type", ValueKind::Icmpv6Type)
                }
                _ => {
                    let b = ["@ll", "@nh", "@th"].get(*base as usize).copied().unwrap_or("@base?");
                    return Some((format!("{b},{},{}", offset * 8, len * 8), ValueKind::Hex, *dreg));
                }
            };
            (name.to_string(), kind, *dreg)
        }
        Expr::Fib { flags, result, dreg } => {
            let what = match *flags & (FIB_F_SADDR | FIB_F_DADDR) {
                FIB_F_SADDR => "saddr",
                FIB_F_DADDR => "daddr",
                _ => "addr?",
            };
            let extra = *flags & !(FIB_F_SADDR | FIB_F_DADDR);
            let extra = if extra != 0 {
                format!(" flags 0x{extra:x}")
            } else {
                String::new()
            };
            let (res, kind) = match *result {
                FIB_RESULT_ADDRTYPE => ("type", ValueKind::AddrType),
                1 => ("oif", ValueKind::Hex),
                2 => ("oifname", ValueKind::Hex),
                r => return Some((format!("fib {what}{extra} result {r}"), ValueKind::Hex, *dreg)),
            };
            (format!("fib {what}{extra} {res}"), kind, *dreg)
        }
        _ => return None,
    })
}

fn value_text(kind: ValueKind, data: &[u8]) -> String {
    match (kind, data) {
        (ValueKind::NfProto, [2]) => "ipv4".into(),
        (ValueKind::NfProto, [10]) => "ipv6".into(),
        (ValueKind::L4Proto, [6]) => "tcp".into(),
        (ValueKind::L4Proto, [17]) => "udp".into(),
        (ValueKind::L4Proto, [p]) => p.to_string(),
        (ValueKind::AddrType, [a, b, c, d]) => match u32::from_ne_bytes([*a, *b, *c, *d]) {
            1 => "unicast".into(),
            RTN_LOCAL => "local".into(),
            3 => "broadcast".into(),
            5 => "multicast".into(),
            n => n.to_string(),
        },
        (ValueKind::Ipv4, [a, b, c, d]) => Ipv4Addr::new(*a, *b, *c, *d).to_string(),
        (ValueKind::Ipv6, d) if d.len() == 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(d);
            Ipv6Addr::from(o).to_string()
        }
        (ValueKind::Port, [a, b]) => u16::from_be_bytes([*a, *b]).to_string(),
        (ValueKind::TcpFlags, [f]) => tcp_flags_text(*f),
        (ValueKind::Decimal, d) if !d.is_empty() && d.len() <= 8 => {
            d.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)).to_string()
        }
        (ValueKind::IcmpType, [t]) => match t {
            0 => "echo-reply".into(),
            3 => "destination-unreachable".into(),
            8 => "echo-request".into(),
            11 => "time-exceeded".into(),
            12 => "parameter-problem".into(),
            14 => "timestamp-reply".into(),
            t => t.to_string(),
        },
        (ValueKind::Icmpv6Type, [t]) => match t {
            1 => "destination-unreachable".into(),
            2 => "packet-too-big".into(),
            3 => "time-exceeded".into(),
            4 => "parameter-problem".into(),
            128 => "echo-request".into(),
            129 => "echo-reply".into(),
            t => t.to_string(),
        },
        _ => format!("0x{}", hex(data)),
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Continue => "continue".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Other(code, chain) => format!(
            "verdict {}{}",
            *code as i32,
            chain.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
        ),
    }
}

/// Statements that are one expression each.
fn other_text(e: &Expr) -> String {
    match e {
        Expr::Counter(t) => format!("counter packets {} bytes {}", t.packets, t.bytes),
        Expr::Reject {
            kind: REJECT_TCP_RST, ..
        } => "reject with tcp reset".into(),
        Expr::Reject {
            kind: REJECT_ICMPX_UNREACH,
            icmp_code,
        } => {
            let code = match icmp_code {
                0 => "no-route".to_string(),
                1 => "port-unreachable".to_string(),
                2 => "host-unreachable".to_string(),
                3 => "admin-prohibited".to_string(),
                c => c.to_string(),
            };
            format!("reject with icmpx {code}")
        }
        Expr::Immediate {
            dreg: REG_VERDICT,
            verdict,
        } => verdict_text(verdict),
        Expr::Limit {
            rate,
            unit_secs,
            burst,
            kind: LIMIT_PKTS,
            flags: 0,
        } => {
            // nft leaves out its default burst of 5 packets.
            let burst = match burst {
                0 | 5 => String::new(),
                b => format!(" burst {b} packets"),
            };
            format!("limit rate {rate}/{}{burst}", unit_text(*unit_secs))
        }
        Expr::Log { prefix, group, snaplen } => {
            let snaplen = if *snaplen != 0 {
                format!(" snaplen {snaplen}")
            } else {
                String::new()
            };
            format!("log prefix \"{prefix}\" group {group}{snaplen}")
        }
        _ => raw_text(e),
    }
}

/// A limit's unit as nft names it (`second`, `minute`...).
fn unit_text(secs: u64) -> String {
    match secs {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86400 => "day".into(),
        604800 => "week".into(),
        n => format!("{n} seconds"),
    }
}

/// Milliseconds as nft prints a time (`1m`, `1h30m`, `500ms`).
pub fn duration_text(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

/// An expression as `nft --debug=netlink` prints it (`[ ... ]`).
pub fn raw_text(e: &Expr) -> String {
    let inner = match e {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let b = ["link", "network", "transport"]
                .get(*base as usize)
                .copied()
                .unwrap_or("unknown");
            format!("payload load {len}b @ {b} header + {offset} => reg {dreg}")
        }
        Expr::Meta { key, dreg } => {
            let k = match *key {
                META_NFPROTO => "nfproto".to_string(),
                META_L4PROTO => "l4proto".to_string(),
                META_IIF => "iif".to_string(),
                k => format!("unknown {k}"),
            };
            format!("meta load {k} => reg {dreg}")
        }
        Expr::Cmp { sreg, op, data } => {
            let op = ["eq", "neq", "lt", "lte", "gt", "gte"]
                .get(*op as usize)
                .copied()
                .unwrap_or("?");
            format!("cmp {op} reg {sreg} {}", words(data))
        }
        Expr::Bitwise {
            sreg,
            dreg,
            len: _,
            mask,
            xor,
        } => format!("bitwise reg {dreg} = ( reg {sreg} & {} ) ^ {}", words(mask), words(xor)),
        Expr::Lookup { set, sreg, flags } => {
            let f = if *flags != 0 {
                format!(" 0x{flags:x}")
            } else {
                String::new()
            };
            format!("lookup reg {sreg} set {set}{f}")
        }
        Expr::Fib { flags, result, dreg } => {
            let mut what: Vec<&str> = Vec::new();
            for (bit, n) in [
                (FIB_F_SADDR, "saddr"),
                (FIB_F_DADDR, "daddr"),
                (4, "mark"),
                (8, "iif"),
                (16, "oif"),
            ] {
                if flags & bit != 0 {
                    what.push(n);
                }
            }
            let res = ["unspec", "oif", "oifname", "type"]
                .get(*result as usize)
                .copied()
                .unwrap_or("unknown");
            format!("fib {} {res} => reg {dreg}", what.join(" . "))
        }
        Expr::Counter(t) => format!("counter pkts {} bytes {}", t.packets, t.bytes),
        Expr::Reject { kind, icmp_code } => format!("reject type {kind} code {icmp_code}"),
        Expr::Immediate { dreg, verdict } => {
            let v = match verdict {
                Verdict::Jump(c) => format!("jump -> {c}"),
                Verdict::Goto(c) => format!("goto -> {c}"),
                v => verdict_text(v),
            };
            format!("immediate reg {dreg} {v}")
        }
        Expr::Dynset {
            op,
            set,
            sreg_key,
            timeout_ms,
            flags,
            exprs,
        } => {
            let verb = ["add", "update", "delete"]
                .get(*op as usize)
                .copied()
                .unwrap_or("unknown");
            let mut s = format!("dynset {verb} reg_key {sreg_key} set {set}");
            if *timeout_ms != 0 {
                s.push_str(&format!(" timeout {timeout_ms}ms"));
            }
            for e in exprs {
                s.push_str(&format!(" expr {}", raw_text(e)));
            }
            if *flags != 0 {
                s.push_str(&format!(" flags 0x{flags:x}"));
            }
            s
        }
        Expr::Limit {
            rate,
            unit_secs,
            burst,
            kind,
            flags,
        } => {
            let kind = match *kind {
                LIMIT_PKTS => "packets".to_string(),
                1 => "bytes".to_string(),
                k => k.to_string(),
            };
            format!(
                "limit rate {rate}/{} burst {burst} type {kind} flags 0x{flags:x}",
                unit_text(*unit_secs)
            )
        }
        Expr::Log { prefix, group, snaplen } => {
            format!("log prefix {prefix} group {group} snaplen {snaplen} qthreshold 0")
        }
        Expr::Raw { name, attrs } => {
            let a: Vec<String> = attrs
                .iter()
                .map(|a| format!("{}=0x{}", a.kind, hex(&a.value)))
                .collect();
            format!("{name} {}", a.join(" "))
        }
    };
    format!("[ {inner} ]")
}

/// Data as libnftnl prints it: host-order 32-bit words, `0x%08x`.
fn words(data: &[u8]) -> String {
    data.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            format!("0x{:08x}", u32::from_ne_bytes(w))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every expression of a rule as `nft --debug=netlink` lists it.
pub fn debug_lines(exprs: &[Expr]) -> Vec<String> {
    exprs.iter().map(raw_text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(base: u32, offset: u32, len: u32, dreg: u32) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        }
    }

    #[test]
    fn masked_tcp_flags_print_as_nft_lists_them_and_odd_masks_raw() {
        let bw = |mask: u8, xor: u8| Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            len: 1,
            mask: vec![mask],
            xor: vec![xor],
        };
        let l4 = [
            Expr::Meta {
                key: META_L4PROTO,
                dreg: REG_1,
            },
            Expr::Cmp {
                sreg: REG_1,
                op: CMP_EQ,
                data: vec![6],
            },
        ];
        let text = |mask: u8, xor: u8, op: u32, value: u8| {
            let mut e = l4.to_vec();
            e.push(p(PAYLOAD_TRANSPORT, 13, 1, REG_1));
            e.push(bw(mask, xor));
            e.push(Expr::Cmp {
                sreg: REG_1,
                op,
                data: vec![value],
            });
            statements(&e)
                .into_iter()
                .map(|s| s.text)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string()
        };
        assert_eq!(text(0x04, 0, CMP_NEQ, 0), "tcp flags rst");
        assert_eq!(text(0x04, 0, CMP_EQ, 0), "tcp flags ! rst");
        assert_eq!(text(0x12, 0, CMP_EQ, 0x12), "tcp flags syn,ack / syn,ack");
        assert_eq!(text(0x12, 0, CMP_NEQ, 0x12), "tcp flags != syn,ack / syn,ack");
        // A xor is not nft's flag test: printed raw.
        assert!(text(0x04, 0x01, CMP_EQ, 0).contains("[ bitwise reg 1 = ( reg 1 & 0x00000004 ) ^ 0x00000001 ]"));
        // A masked value looked up in a set: raw, never a plain lookup.
        let mut e = l4.to_vec();
        e.extend([
            p(PAYLOAD_TRANSPORT, 13, 1, REG_1),
            bw(0x12, 0),
            Expr::Lookup {
                set: "s".into(),
                sreg: REG_1,
                flags: 0,
            },
        ]);
        let t: Vec<String> = statements(&e).into_iter().map(|s| s.text).collect();
        assert!(t.iter().any(|x| x.starts_with("[ bitwise")), "{t:?}");
        assert!(!t.iter().any(|x| x.starts_with("tcp flags @s")), "{t:?}");
    }

    #[test]
    fn negated_lookup_and_unknown_sequences_print_without_panicking() {
        let e = vec![
            Expr::Meta {
                key: META_NFPROTO,
                dreg: 1,
            },
            Expr::Cmp {
                sreg: 1,
                op: CMP_EQ,
                data: vec![2],
            },
            p(PAYLOAD_NETWORK, 12, 4, 1),
            Expr::Lookup {
                set: "s".into(),
                sreg: 1,
                flags: LOOKUP_F_INV,
            },
            Expr::Cmp {
                sreg: 3,
                op: CMP_EQ,
                data: vec![1],
            },
            p(PAYLOAD_LL, 0, 6, 1),
            Expr::Raw {
                name: "quota".into(),
                attrs: vec![RawAttr {
                    kind: 1,
                    value: vec![0, 1],
                }],
            },
        ];
        let texts: Vec<String> = statements(&e).into_iter().map(|s| s.text).collect();
        assert_eq!(
            texts,
            [
                "",
                "ip saddr != @s",
                "[ cmp eq reg 3 0x00000001 ]",
                "[ payload load 6b @ link header + 0 => reg 1 ]",
                "[ quota 1=0x0001 ]"
            ]
        );
        assert_eq!(statements(&[]), vec![]);
    }

    #[test]
    fn a_nfproto_match_without_header_load_is_printed() {
        let e = [
            Expr::Meta {
                key: META_NFPROTO,
                dreg: 1,
            },
            Expr::Cmp {
                sreg: 1,
                op: CMP_EQ,
                data: vec![10],
            },
        ];
        assert_eq!(statements(&e)[0].text, "meta nfproto ipv6");
    }
}
