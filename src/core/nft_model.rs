//! The typed model of our nf_tables table as the kernel holds it: table
//! flags and userdata, sets with their exact key type and elements (interval
//! sets as the start and end elements the kernel stores), chains with their
//! hook, and rules as the kernel expressions with every attribute. The same
//! value is built from the Blocklist (`nft_desired`), encoded to and decoded
//! from netlink (`nft_wire`, `nft_decode`), printed (`nft_text`) and compared
//! (`nft_diff`). Counter values are state, not identity: they are kept but
//! never make two models differ. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

/// The table we own (`table inet apiserver_guard`). Nothing else is ever written.
pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "apiserver_guard";
/// Regular chain holding the rules; base chains jump to it.
pub const GUARD_CHAIN: &str = "guard";
/// Comment of the one rule in each base chain.
pub const ENTER_COMMENT: &str = "enter-guard";
/// Filter priority: after DNAT, so a ClusterIP is matched on the real apiserver address.
pub const PRIORITY: i32 = 0;

/// nf_tables family of our table (`inet`).
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// Table flags (`NFT_TABLE_F_*`). Dormant: the base chains are not hooked.
pub const TABLE_F_DORMANT: u32 = 0x1;
/// Only the netlink socket that created the table may change or delete it,
/// `flush ruleset` skips it, and it is destroyed when that socket closes
/// (kernel 5.12).
pub const TABLE_F_OWNER: u32 = 0x2;
/// With owner: the table outlives its socket, orphaned (owner cleared) until
/// a socket adopts it by sending NEWTABLE with owner|persist (kernel 6.9).
pub const TABLE_F_PERSIST: u32 = 0x4;

/// Set flags (`NFT_SET_*`) and element flags.
pub const SET_F_ANONYMOUS: u32 = 0x1;
pub const SET_F_CONSTANT: u32 = 0x2;
pub const SET_F_INTERVAL: u32 = 0x4;
pub const SET_F_MAP: u32 = 0x8;
pub const SET_F_TIMEOUT: u32 = 0x10;
/// `flags dynamic`: the packet path adds elements (`update @set`).
pub const SET_F_EVAL: u32 = 0x20;
pub const SET_F_CONCAT: u32 = 0x80;
pub const ELEM_F_INTERVAL_END: u32 = 0x1;

/// Chain flag the kernel sets on base chains.
pub const CHAIN_F_BASE: u32 = 0x1;
/// Hook numbers (`NF_INET_*`).
pub const HOOK_LOCAL_IN: u32 = 1;
pub const HOOK_FORWARD: u32 = 2;
pub const HOOK_LOCAL_OUT: u32 = 3;
/// Netfilter verdicts (`NF_DROP`, `NF_ACCEPT`), also chain policies.
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;

/// Registers: the verdict register, the 16-byte ones and the 32-bit ones.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;
pub const REG32_01: u32 = 9;

/// Expression attribute values.
pub const META_IIF: u32 = 4;
pub const META_NFPROTO: u32 = 15;
pub const META_L4PROTO: u32 = 16;
pub const PAYLOAD_LL: u32 = 0;
pub const PAYLOAD_NETWORK: u32 = 1;
pub const PAYLOAD_TRANSPORT: u32 = 2;
pub const CMP_EQ: u32 = 0;
pub const CMP_NEQ: u32 = 1;
pub const LOOKUP_F_INV: u32 = 0x1;
pub const FIB_F_SADDR: u32 = 0x1;
pub const FIB_F_DADDR: u32 = 0x2;
pub const FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_LOCAL`, compared in host byte order after `fib ... type`.
pub const RTN_LOCAL: u32 = 2;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// The TCP header's flags byte (`tcp flags`) and the flags our log rules test.
pub const TCP_FLAGS_OFFSET: u32 = 13;
pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_PSH: u8 = 0x08;
pub const TCP_FLAG_ACK: u8 = 0x10;
pub const TCP_FLAG_URG: u8 = 0x20;
/// `NFT_BITWISE_BOOL`: the mask-and-xor operation (the kernel reports it).
pub const BITWISE_BOOL: u32 = 0;
pub const REJECT_TCP_RST: u32 = 1;
pub const REJECT_ICMPX_UNREACH: u32 = 2;
pub const ICMPX_ADMIN_PROHIBITED: u8 = 3;
/// `NFT_DYNSET_OP_UPDATE`: add the key, or refresh its timeout.
pub const DYNSET_OP_UPDATE: u32 = 1;
/// `NFT_LIMIT_PKTS`.
pub const LIMIT_PKTS: u32 = 0;

/// `NFTNL_UDATA_*_COMMENT` of tables and rules in nft's userdata TLVs.
pub const UDATA_COMMENT: u8 = 0;

/// One netlink attribute we keep as bytes: its type (without the nested /
/// byte-order flags) and its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawAttr {
    pub kind: u16,
    pub value: Vec<u8>,
}

/// Our table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableModel {
    /// `TABLE_F_*` bits.
    pub flags: u32,
    /// NFTA_TABLE_USERDATA as nft writes it (see [`comment_udata`]).
    pub userdata: Vec<u8>,
    pub sets: BTreeMap<String, SetModel>,
    pub chains: BTreeMap<String, ChainModel>,
    /// Table attributes this model does not know (state ones excluded).
    pub unknown: Vec<RawAttr>,
}

/// The key of a set, as nf_tables numbers it (`NFTA_SET_KEY_TYPE` / `_LEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    InetService,
    /// `iface_index`: an interface index, host byte order.
    IfaceIndex,
    /// A concatenation, each part padded to 4 bytes in the key.
    Concat(Vec<KeyType>),
    /// Anything else, kept as read.
    Other {
        type_id: u32,
        len: u32,
    },
}

/// One element exactly as the kernel stores it: key bytes in network order
/// (concatenation parts padded to 4 bytes) and `NFTA_SET_ELEM_FLAGS`
/// (`ELEM_F_INTERVAL_END` on the end of a range in an interval set).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Vec<u8>,
    pub flags: u32,
    /// Element attributes this model does not know (timeouts, data...).
    pub unknown: Vec<RawAttr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetModel {
    pub key: KeyType,
    /// `SET_F_*` bits.
    pub flags: u32,
    /// NFTA_SET_USERDATA (nft records the key byte order and typeof there).
    pub userdata: Vec<u8>,
    /// NFTA_SET_TIMEOUT in milliseconds (0: none).
    pub timeout_ms: u64,
    /// NFTA_SET_DESC_SIZE, the most elements it holds (0: not given).
    pub size: u32,
    pub elements: BTreeSet<Element>,
    /// Elements the kernel added to a dynamic set (`SET_F_EVAL`) at run time:
    /// read back, but state, not identity.
    pub learned: Learned,
    pub unknown: Vec<RawAttr>,
}

impl SetModel {
    /// A set of `key` with these flags and elements, nothing else.
    pub fn new(key: KeyType, flags: u32, userdata: Vec<u8>, elements: BTreeSet<Element>) -> SetModel {
        SetModel {
            key,
            flags,
            userdata,
            timeout_ms: 0,
            size: 0,
            elements,
            learned: Learned::default(),
            unknown: Vec::new(),
        }
    }
}

/// The elements of a dynamic set as read back: equal to any other (the
/// kernel adds and expires them as packets come; they never make two
/// models differ).
#[derive(Debug, Clone, Default)]
pub struct Learned(pub BTreeSet<Element>);

impl PartialEq for Learned {
    fn eq(&self, _: &Learned) -> bool {
        true
    }
}
impl Eq for Learned {}

/// Hook, priority and policy of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: String,
    /// `HOOK_*` number.
    pub hook: u32,
    pub priority: i32,
    /// `NF_ACCEPT` or `NF_DROP`.
    pub policy: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainModel {
    pub base: Option<BaseChain>,
    /// NFTA_CHAIN_FLAGS as the kernel reports it (`CHAIN_F_BASE` on base chains).
    pub flags: u32,
    pub userdata: Vec<u8>,
    pub rules: Vec<RuleModel>,
    pub unknown: Vec<RawAttr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleModel {
    pub exprs: Vec<Expr>,
    /// NFTA_RULE_USERDATA: nft's TLVs, the comment as [`comment_udata`] writes it.
    pub userdata: Vec<u8>,
    pub unknown: Vec<RawAttr>,
}

/// Packet and byte counts of a counter expression: read back and reported,
/// but equal to any other tally (state, not identity).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub packets: u64,
    pub bytes: u64,
}

impl PartialEq for Tally {
    fn eq(&self, _: &Tally) -> bool {
        true
    }
}
impl Eq for Tally {}

/// What an `immediate` expression loads into the verdict register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// Any other code (a chain name when the kernel gave one).
    Other(u32, Option<String>),
}

/// One kernel expression with all its attributes. Registers are the kernel's
/// numbers (`REG_*`); multi-byte attributes are host values (the wire is
/// big-endian), `data` and keys are the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    /// `reg dreg = (reg sreg & mask) ^ xor` over `len` bytes (the boolean
    /// bitwise: `tcp flags & rst == 0` loads, masks, then compares).
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Lookup {
        set: String,
        sreg: u32,
        flags: u32,
    },
    Fib {
        flags: u32,
        result: u32,
        dreg: u32,
    },
    Counter(Tally),
    Reject {
        kind: u32,
        icmp_code: u8,
    },
    Immediate {
        dreg: u32,
        verdict: Verdict,
    },
    /// `update @set { <key in sreg_key> <exprs> }`: adds the key to a
    /// dynamic set or refreshes it; the rule stops when an embedded
    /// expression (a limit) says so. `timeout_ms` and `flags` are 0 in ours.
    Dynset {
        op: u32,
        set: String,
        sreg_key: u32,
        timeout_ms: u64,
        flags: u32,
        exprs: Vec<Expr>,
    },
    /// `limit rate R/unit burst B packets`: `unit_secs` seconds per `rate`.
    Limit {
        rate: u64,
        unit_secs: u64,
        burst: u32,
        kind: u32,
        flags: u32,
    },
    /// `log prefix "..." group G snaplen N` (NFLOG; `snaplen` 0: not given).
    Log {
        prefix: String,
        group: u16,
        snaplen: u32,
    },
    /// An expression this model does not know, or a known one with
    /// attributes it does not know: its name and every attribute as bytes.
    Raw {
        name: String,
        attrs: Vec<RawAttr>,
    },
}

impl RuleModel {
    /// A rule with nft's comment userdata.
    pub fn new(exprs: Vec<Expr>, comment: &str) -> RuleModel {
        RuleModel {
            exprs,
            userdata: comment_udata(comment),
            unknown: Vec::new(),
        }
    }

    /// The comment nft shows, if the userdata holds one.
    pub fn comment(&self) -> Option<String> {
        udata_comment(&self.userdata)
    }
}

impl TableModel {
    pub fn comment(&self) -> Option<String> {
        udata_comment(&self.userdata)
    }
}

/// nft's userdata for a comment: TLV type `UDATA_COMMENT`, one length byte,
/// the text and its NUL (what `nft ... comment "x"` sends).
pub fn comment_udata(comment: &str) -> Vec<u8> {
    let text: Vec<u8> = comment.bytes().chain(std::iter::once(0)).take(255).collect();
    let mut v = vec![UDATA_COMMENT, text.len() as u8];
    v.extend(text);
    v
}

/// The comment TLV of nft userdata, if any.
pub fn udata_comment(udata: &[u8]) -> Option<String> {
    udata_tlvs(udata)?
        .into_iter()
        .find(|(t, _)| *t == UDATA_COMMENT)
        .map(|(_, v)| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned())
}

/// nft userdata as (type, value) TLVs; None when the bytes are not TLVs.
pub fn udata_tlvs(mut udata: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !udata.is_empty() {
        let (&t, rest) = udata.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..len as usize)?;
        out.push((t, value));
        udata = &rest[len as usize..];
    }
    Some(out)
}

/// nft's `datatype` numbers.
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_IFINDEX: u32 = 20;
/// Bits per part in a concatenated type number.
const CONCAT_TYPE_BITS: u32 = 6;

impl KeyType {
    /// NFTA_SET_KEY_TYPE.
    pub fn type_id(&self) -> u32 {
        match self {
            KeyType::Ipv4Addr => TYPE_IPV4_ADDR,
            KeyType::Ipv6Addr => TYPE_IPV6_ADDR,
            KeyType::InetService => TYPE_INET_SERVICE,
            KeyType::IfaceIndex => TYPE_IFINDEX,
            KeyType::Concat(parts) => parts.iter().fold(0, |acc, p| (acc << CONCAT_TYPE_BITS) | p.type_id()),
            KeyType::Other { type_id, .. } => *type_id,
        }
    }

    /// NFTA_SET_KEY_LEN in bytes.
    pub fn key_len(&self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
            KeyType::IfaceIndex => 4,
            KeyType::Concat(parts) => parts.iter().map(|p| p.key_len().div_ceil(4) * 4).sum(),
            KeyType::Other { len, .. } => *len,
        }
    }

    /// The key type the kernel attributes describe.
    pub fn from_wire(type_id: u32, len: u32) -> KeyType {
        let single = |t: u32| match t {
            TYPE_IPV4_ADDR => Some(KeyType::Ipv4Addr),
            TYPE_IPV6_ADDR => Some(KeyType::Ipv6Addr),
            TYPE_INET_SERVICE => Some(KeyType::InetService),
            TYPE_IFINDEX => Some(KeyType::IfaceIndex),
            _ => None,
        };
        let other = KeyType::Other { type_id, len };
        if let Some(k) = single(type_id) {
            return if k.key_len() == len { k } else { other };
        }
        let mut parts = Vec::new();
        let mut t = type_id;
        while t != 0 {
            match single(t & ((1 << CONCAT_TYPE_BITS) - 1)) {
                Some(k) => parts.push(k),
                None => return other,
            }
            t >>= CONCAT_TYPE_BITS;
        }
        parts.reverse();
        let k = KeyType::Concat(parts);
        if matches!(&k, KeyType::Concat(p) if p.len() > 1) && k.key_len() == len {
            k
        } else {
            other
        }
    }

    /// As `nft list` names it: `ipv4_addr . inet_service`.
    pub fn name(&self) -> String {
        match self {
            KeyType::Ipv4Addr => "ipv4_addr".into(),
            KeyType::Ipv6Addr => "ipv6_addr".into(),
            KeyType::InetService => "inet_service".into(),
            KeyType::IfaceIndex => "iface_index".into(),
            KeyType::Concat(parts) => parts.iter().map(KeyType::name).collect::<Vec<_>>().join(" . "),
            KeyType::Other { type_id, len } => format!("type {type_id} len {len}"),
        }
    }
}

/// The counter of one rule read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub chain: String,
    /// The rule's comment ("" when it has none).
    pub comment: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Every counter in the table, chain by chain, rule by rule.
pub fn counters(t: &TableModel) -> Vec<RuleCounter> {
    let mut out = Vec::new();
    for (chain, c) in &t.chains {
        for r in &c.rules {
            for e in &r.exprs {
                if let Expr::Counter(tally) = e {
                    out.push(RuleCounter {
                        chain: chain.clone(),
                        comment: r.comment().unwrap_or_default(),
                        packets: tally.packets,
                        bytes: tally.bytes,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_userdata_is_nft_tlv_with_nul() {
        // nft --debug=netlink: userdata = { \x00\x0aexempt-v4\x00 }
        assert_eq!(comment_udata("exempt-v4"), b"\x00\x0aexempt-v4\x00".to_vec());
        assert_eq!(udata_comment(b"\x00\x0aexempt-v4\x00").as_deref(), Some("exempt-v4"));
        assert_eq!(udata_comment(b"\x00\x09"), None, "truncated TLV");
        assert_eq!(udata_comment(b""), None);
    }

    #[test]
    fn key_types_round_trip_the_kernel_numbers() {
        let concat = KeyType::Concat(vec![KeyType::Ipv4Addr, KeyType::InetService]);
        // Read back from the kernel: NFTA_SET_KEY_TYPE 0x1cd, NFTA_SET_KEY_LEN 8.
        assert_eq!((concat.type_id(), concat.key_len()), (0x1cd, 8));
        assert_eq!(KeyType::from_wire(0x1cd, 8), concat);
        let v6 = KeyType::Concat(vec![KeyType::Ipv6Addr, KeyType::InetService]);
        assert_eq!((v6.type_id(), v6.key_len()), (0x20d, 20));
        assert_eq!(KeyType::from_wire(7, 4), KeyType::Ipv4Addr);
        assert_eq!(KeyType::from_wire(7, 16), KeyType::Other { type_id: 7, len: 16 });
        assert_eq!(KeyType::from_wire(99, 4), KeyType::Other { type_id: 99, len: 4 });
        assert_eq!(concat.name(), "ipv4_addr . inet_service");
    }

    #[test]
    fn counters_are_state_not_identity_but_are_read() {
        let rule = |p| {
            RuleModel::new(
                vec![Expr::Counter(Tally {
                    packets: p,
                    bytes: p * 60,
                })],
                "block-all-v4",
            )
        };
        assert_eq!(rule(0), rule(7));
        let mut t = TableModel::default();
        t.chains.insert(
            "guard".into(),
            ChainModel {
                rules: vec![rule(7)],
                ..Default::default()
            },
        );
        assert_eq!(
            counters(&t),
            vec![RuleCounter {
                chain: "guard".into(),
                comment: "block-all-v4".into(),
                packets: 7,
                bytes: 420
            }]
        );
    }
}
