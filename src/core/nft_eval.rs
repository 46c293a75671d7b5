//! Would this packet get through? A pure evaluator of a table model (ours as
//! `desired` builds it, or the kernel's as `nft_decode` reads it back): the
//! base chains of the packet's hook, rule by rule, expression by expression,
//! with nf_tables' register file, set lookups (hash, interval and
//! concatenated keys), `fib` address types, jumps, returns and verdicts, as
//! the kernel runs them. It lets the blocking matrix run in plain `cargo
//! test`; tests/evaluator_crosscheck.rs holds it to real packets on a real
//! kernel so the two cannot drift apart. A per-source meter is taken to be
//! under its limit (the log rule goes on) and holds the keys the packet's
//! own rules added; an expression it does not know
//! ends the rule as a failed match would, and says so.

use super::nft_model::*;
use std::net::IpAddr;

/// A packet at one hook of the node's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1/58 ICMP).
    pub proto: u8,
    /// Destination port (TCP/UDP); 0 for protocols without one.
    pub dport: u16,
    /// The TCP header's flags (`TCP_FLAG_*`; a connect's first packet: SYN).
    pub tcp_flags: u8,
    /// The ICMP or ICMPv6 type (`proto` 1 or 58; 8 and 128: echo request).
    pub icmp_type: u8,
    /// `HOOK_LOCAL_IN`, `HOOK_FORWARD` or `HOOK_LOCAL_OUT`.
    pub hook: u32,
}

/// What the table does with the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Let through (by a verdict, a chain policy, or no base chain at its hook).
    Accept,
    Drop,
    /// Refused with `reject` of this type and ICMP code (`REJECT_TCP_RST`, `REJECT_ICMPX_UNREACH`).
    Reject {
        kind: u32,
        icmp_code: u8,
    },
}

/// The fate, the comment of the rule that decided it (None: a policy or
/// nothing), and the log prefixes the packet passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub fate: Fate,
    pub decided_by: Option<String>,
    pub logged: Vec<String>,
    /// Expressions the evaluator does not know (each ended its rule).
    pub unknown: Vec<String>,
}

/// Deepest chain nesting followed (the kernel's limit is 16).
const MAX_DEPTH: usize = 16;
/// The address type `fib` reports for an address that is not the node's.
const RTN_UNICAST: u32 = 1;

/// Evaluates `p` against every base chain of `t` at its hook, in priority
/// order; `node_addrs` are the node's own addresses (for `fib ... type local`).
pub fn evaluate(t: &TableModel, p: &Packet, node_addrs: &[IpAddr]) -> Evaluation {
    let mut run = Run {
        t,
        p,
        node_addrs,
        logged: Vec::new(),
        unknown: Vec::new(),
        added: Vec::new(),
    };
    let mut bases: Vec<(&String, &ChainModel, &BaseChain)> = t
        .chains
        .iter()
        .filter_map(|(n, c)| c.base.as_ref().map(|b| (n, c, b)))
        .filter(|(_, _, b)| b.hook == p.hook)
        .collect();
    bases.sort_by_key(|(_, _, b)| b.priority);
    for (name, _, base) in bases {
        let (end, by) = run.chain(name, 0);
        let fate = match end {
            End::Verdict(f) => f,
            End::Fell => {
                if base.policy == NF_DROP {
                    Fate::Drop
                } else {
                    Fate::Accept
                }
            }
        };
        if fate != Fate::Accept {
            return run.finish(fate, by);
        }
    }
    run.finish(Fate::Accept, None)
}

/// How a chain ended: a final verdict, or it ran out / returned.
enum End {
    Verdict(Fate),
    Fell,
}

struct Run<'a> {
    t: &'a TableModel,
    p: &'a Packet,
    node_addrs: &'a [IpAddr],
    logged: Vec<String>,
    unknown: Vec<String>,
    /// Keys the packet's own meter updates added to dynamic sets (a later
    /// rule's lookup finds them, as in the kernel).
    added: Vec<(String, Vec<u8>)>,
}

/// nf_tables' register file: verdict register, then four 16-byte registers
/// that the 32-bit registers 8..23 overlay.
struct Regs([u8; 80]);

impl Regs {
    fn offset(reg: u32) -> Option<usize> {
        match reg {
            1..=4 => Some(reg as usize * 16),
            8..=23 => Some(16 + (reg as usize - 8) * 4),
            _ => None,
        }
    }

    /// Stores `data` at `reg`, zeroing the rest of its last 32-bit word (as the kernel does).
    fn store(&mut self, reg: u32, data: &[u8]) -> bool {
        let Some(at) = Self::offset(reg) else { return false };
        let words = data.len().div_ceil(4).max(1) * 4;
        if at + words > self.0.len() {
            return false;
        }
        self.0[at..at + words].fill(0);
        self.0[at..at + data.len()].copy_from_slice(data);
        true
    }

    fn load(&self, reg: u32, len: usize) -> Option<&[u8]> {
        let at = Self::offset(reg)?;
        self.0.get(at..at + len)
    }
}

impl Run<'_> {
    fn finish(self, fate: Fate, decided_by: Option<String>) -> Evaluation {
        Evaluation {
            fate,
            decided_by,
            logged: self.logged,
            unknown: self.unknown,
        }
    }

    fn chain(&mut self, name: &str, depth: usize) -> (End, Option<String>) {
        let Some(chain) = self.t.chains.get(name) else {
            self.unknown.push(format!("jump to a missing chain {name}"));
            return (End::Fell, None);
        };
        if depth > MAX_DEPTH {
            self.unknown
                .push(format!("chains nested deeper than {MAX_DEPTH} at {name}"));
            return (End::Fell, None);
        }
        for rule in &chain.rules {
            match self.rule(rule, depth) {
                Step::Next => {}
                Step::Return => return (End::Fell, None),
                Step::Final(fate, by) => return (End::Verdict(fate), by),
            }
        }
        (End::Fell, None)
    }

    fn rule(&mut self, rule: &RuleModel, depth: usize) -> Step {
        let mut regs = Regs([0; 80]);
        let comment = rule.comment();
        for e in &rule.exprs {
            match self.expr(e, &mut regs) {
                Flow::Go => {}
                Flow::Break => return Step::Next,
                Flow::Verdict(v) => {
                    return match v {
                        Verdict::Accept => Step::Final(Fate::Accept, comment),
                        Verdict::Drop => Step::Final(Fate::Drop, comment),
                        Verdict::Return => Step::Return,
                        Verdict::Continue => Step::Next,
                        Verdict::Jump(c) => match self.chain(&c, depth + 1) {
                            (End::Verdict(f), by) => Step::Final(f, by),
                            (End::Fell, _) => Step::Next,
                        },
                        Verdict::Goto(c) => match self.chain(&c, depth + 1) {
                            (End::Verdict(f), by) => Step::Final(f, by),
                            (End::Fell, _) => Step::Return,
                        },
                        Verdict::Other(code, _) => {
                            self.unknown.push(format!("verdict code {code}"));
                            Step::Next
                        }
                    };
                }
                Flow::Reject(kind, icmp_code) => return Step::Final(Fate::Reject { kind, icmp_code }, comment),
            }
        }
        Step::Next
    }

    fn expr(&mut self, e: &Expr, regs: &mut Regs) -> Flow {
        let ok = |b: bool| if b { Flow::Go } else { Flow::Break };
        match e {
            Expr::Meta { key, dreg } => {
                let value = match *key {
                    META_NFPROTO => match self.p.src {
                        IpAddr::V4(_) => NFPROTO_IPV4,
                        IpAddr::V6(_) => NFPROTO_IPV6,
                    },
                    META_L4PROTO => self.p.proto,
                    // Only the meters key on it, and meters never decide.
                    META_IIF => return ok(regs.store(*dreg, &0u32.to_ne_bytes())),
                    k => {
                        self.unknown.push(format!("meta key {k}"));
                        return Flow::Break;
                    }
                };
                ok(regs.store(*dreg, &[value]))
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let header = match *base {
                    PAYLOAD_NETWORK => self.network_header(),
                    PAYLOAD_TRANSPORT => self.transport_header(),
                    b => {
                        self.unknown.push(format!("payload base {b}"));
                        return Flow::Break;
                    }
                };
                let (o, l) = (*offset as usize, *len as usize);
                match header.get(o..o + l) {
                    Some(bytes) => ok(regs.store(*dreg, bytes)),
                    None => Flow::Break,
                }
            }
            Expr::Cmp { sreg, op, data } => {
                let Some(v) = regs.load(*sreg, data.len()) else {
                    return Flow::Break;
                };
                match *op {
                    CMP_EQ => ok(v == data.as_slice()),
                    CMP_NEQ => ok(v != data.as_slice()),
                    o => {
                        self.unknown.push(format!("cmp op {o}"));
                        Flow::Break
                    }
                }
            }
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => {
                let n = *len as usize;
                let Some(v) = regs.load(*sreg, n) else {
                    return Flow::Break;
                };
                if mask.len() != n || xor.len() != n {
                    self.unknown.push(format!("{e:?}"));
                    return Flow::Break;
                }
                let out: Vec<u8> = v.iter().zip(mask).zip(xor).map(|((b, m), x)| (b & m) ^ x).collect();
                ok(regs.store(*dreg, &out))
            }
            Expr::Lookup { set, sreg, flags } => {
                let Some(s) = self.t.sets.get(set) else {
                    self.unknown.push(format!("lookup in a missing set {set}"));
                    return Flow::Break;
                };
                let Some(key) = regs.load(*sreg, key_len(&s.key)) else {
                    return Flow::Break;
                };
                let found = contains(s, key) || self.added.iter().any(|(n, k)| n == set && k == key);
                ok(found != (flags & LOOKUP_F_INV != 0))
            }
            Expr::Fib { flags, result, dreg } if *result == FIB_RESULT_ADDRTYPE => {
                let addr = if flags & FIB_F_SADDR != 0 {
                    self.p.src
                } else {
                    self.p.dst
                };
                let kind = if self.node_addrs.contains(&addr) {
                    RTN_LOCAL
                } else {
                    RTN_UNICAST
                };
                ok(regs.store(*dreg, &kind.to_ne_bytes()))
            }
            Expr::Counter(_) | Expr::Limit { .. } => Flow::Go,
            // The meter: taken to be under its limit; the key is in the set after.
            Expr::Dynset { set, sreg_key, .. } => {
                let Some(s) = self.t.sets.get(set) else {
                    self.unknown.push(format!("update of a missing set {set}"));
                    return Flow::Break;
                };
                let Some(key) = regs.load(*sreg_key, key_len(&s.key)) else {
                    return Flow::Break;
                };
                self.added.push((set.clone(), key.to_vec()));
                Flow::Go
            }
            Expr::Log { prefix, .. } => {
                self.logged.push(prefix.clone());
                Flow::Go
            }
            Expr::Immediate { dreg, verdict } if *dreg == REG_VERDICT => Flow::Verdict(verdict.clone()),
            Expr::Reject { kind, icmp_code } => Flow::Reject(*kind, *icmp_code),
            other => {
                self.unknown.push(format!("{other:?}"));
                Flow::Break
            }
        }
    }

    fn network_header(&self) -> Vec<u8> {
        match (self.p.src, self.p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = vec![0u8; 20];
                h[0] = 0x45;
                h[9] = self.p.proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[6] = self.p.proto;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h
            }
            _ => Vec::new(),
        }
    }

    /// Ports for TCP and UDP; a TCP header's flags too; an ICMP header's type.
    fn transport_header(&self) -> Vec<u8> {
        if self.p.proto == IPPROTO_ICMP || self.p.proto == IPPROTO_ICMPV6 {
            return vec![self.p.icmp_type, 0, 0, 0, 0, 0, 0, 0];
        }
        let tcp = self.p.proto == IPPROTO_TCP;
        let mut h = vec![0u8; if tcp { 20 } else { 8 }];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&self.p.dport.to_be_bytes());
        if tcp {
            h[TCP_FLAGS_OFFSET as usize] = self.p.tcp_flags;
        }
        h
    }
}

enum Step {
    Next,
    Return,
    Final(Fate, Option<String>),
}

enum Flow {
    Go,
    Break,
    Verdict(Verdict),
    Reject(u32, u8),
}

/// Bytes of a key in the registers (each part of a concatenation padded to 4).
fn key_len(k: &KeyType) -> usize {
    match k {
        KeyType::Ipv4Addr => 4,
        KeyType::Ipv6Addr => 16,
        KeyType::InetService => 2,
        KeyType::IfaceIndex => 4,
        KeyType::Concat(parts) => parts.iter().map(|p| key_len(p).div_ceil(4) * 4).sum(),
        KeyType::Other { len, .. } => *len as usize,
    }
}

/// Whether `key` is in the set: an element equal to it, or, in an interval
/// set, a range start at or below it with no range end closer to it (an end
/// and a start at one key: the start holds, as the kernel keeps both).
fn contains(s: &SetModel, key: &[u8]) -> bool {
    let elements = s.elements.iter().chain(s.learned.0.iter());
    if s.flags & SET_F_INTERVAL == 0 {
        return elements.into_iter().any(|e| e.key.as_slice() == key);
    }
    let mut best: Option<(&[u8], bool)> = None;
    for e in elements {
        if e.key.as_slice() > key {
            continue;
        }
        let start = e.flags & ELEM_F_INTERVAL_END == 0;
        best = match best {
            Some((k, s)) if k > e.key.as_slice() => Some((k, s)),
            Some((k, s)) if k == e.key.as_slice() => Some((k, s || start)),
            _ => Some((e.key.as_slice(), start)),
        };
    }
    best.is_some_and(|(_, start)| start)
}

#[cfg(test)]
#[path = "nft_eval_tests.rs"]
mod tests;
