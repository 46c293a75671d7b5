//! A TableModel as the nf_tables messages that create it, in the attribute
//! order and encoding `nft` uses (checked against `nft --debug=mnl`):
//! NEWTABLE, every NEWSET with its NEWSETELEM, every NEWCHAIN, then the
//! rules chain by chain. Expressions the crate does not model (counter,
//! reject, fib, dynset with its nested limit, log) go through its raw
//! expression variant, big-endian like the
//! kernel's netlink policy wants. The caller frames them in a batch (family
//! `inet`) and adds whatever flushes or deletes its plan needs first.

use super::nft_model::*;
use netlink_packet_core::{DefaultNla, Nla, NLA_F_NESTED};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, HookNumber,
    Immediate, InetHookNumber, ListAttribute, Lookup, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register,
    RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementAttribute, SetElementFlags, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableFlags, TableMessage, Verdict as NlVerdict,
    VerdictAttribute,
};

/// Counter, reject and fib attribute numbers (`NFTA_COUNTER_*`, ...).
pub const NFTA_COUNTER_BYTES: u16 = 1;
pub const NFTA_COUNTER_PACKETS: u16 = 2;
pub const NFTA_REJECT_TYPE: u16 = 1;
pub const NFTA_REJECT_ICMP_CODE: u16 = 2;
pub const NFTA_FIB_DREG: u16 = 1;
pub const NFTA_FIB_RESULT: u16 = 2;
pub const NFTA_FIB_FLAGS: u16 = 3;
pub const NFTA_DYNSET_SET_NAME: u16 = 1;
pub const NFTA_DYNSET_SET_ID: u16 = 2;
pub const NFTA_DYNSET_OP: u16 = 3;
pub const NFTA_DYNSET_SREG_KEY: u16 = 4;
pub const NFTA_DYNSET_TIMEOUT: u16 = 6;
pub const NFTA_DYNSET_EXPR: u16 = 7;
pub const NFTA_DYNSET_PAD: u16 = 8;
pub const NFTA_DYNSET_FLAGS: u16 = 9;
pub const NFTA_DYNSET_EXPRESSIONS: u16 = 10;
pub const NFTA_LIMIT_RATE: u16 = 1;
pub const NFTA_LIMIT_UNIT: u16 = 2;
pub const NFTA_LIMIT_BURST: u16 = 3;
pub const NFTA_LIMIT_TYPE: u16 = 4;
pub const NFTA_LIMIT_FLAGS: u16 = 5;
pub const NFTA_LIMIT_PAD: u16 = 6;
pub const NFTA_LOG_GROUP: u16 = 1;
pub const NFTA_LOG_PREFIX: u16 = 2;
pub const NFTA_LOG_SNAPLEN: u16 = 3;

/// The messages that create `t` from nothing (inside one batch).
pub fn messages(t: &TableModel) -> Vec<NfTablesMessage> {
    let mut out = vec![table_message(t)];
    for (i, (name, set)) in t.sets.iter().enumerate() {
        out.push(set_message(name, set, i as u32 + 1));
        if !set.elements.is_empty() {
            out.push(elements_message(name, set));
        }
    }
    for (name, chain) in &t.chains {
        out.push(chain_message(name, chain));
    }
    for (name, chain) in &t.chains {
        out.extend(chain.rules.iter().map(|r| rule_message(name, r)));
    }
    out
}

/// The same messages addressed to table `name` instead of ours (the twin of
/// a handover): every table name attribute is replaced, nothing else.
pub fn retarget(msgs: Vec<NfTablesMessage>, name: &str) -> Vec<NfTablesMessage> {
    let mut msgs = msgs;
    for m in &mut msgs {
        match m {
            NfTablesMessage::NewTable(t) | NfTablesMessage::DeleteTable(t) => {
                for a in &mut t.attributes {
                    if let TableAttribute::Name(n) = a {
                        *n = name.to_string();
                    }
                }
            }
            NfTablesMessage::NewChain(c) | NfTablesMessage::DeleteChain(c) => {
                for a in &mut c.attributes {
                    if let ChainAttribute::Table(n) = a {
                        *n = name.to_string();
                    }
                }
            }
            NfTablesMessage::NewSet(s) | NfTablesMessage::DeleteSet(s) => {
                for a in &mut s.attributes {
                    if let SetAttribute::Table(n) = a {
                        *n = name.to_string();
                    }
                }
            }
            NfTablesMessage::NewSetElement(e) | NfTablesMessage::DeleteSetElement(e) => {
                for a in &mut e.attributes {
                    if let SetElementList::Table(n) = a {
                        *n = name.to_string();
                    }
                }
            }
            NfTablesMessage::NewRule(r) | NfTablesMessage::DeleteRule(r) => {
                for a in &mut r.attributes {
                    if let RuleAttribute::Table(n) = a {
                        *n = name.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    msgs
}

pub fn table_message(t: &TableModel) -> NfTablesMessage {
    let mut attributes = vec![
        TableAttribute::Name(TABLE_NAME.to_string()),
        TableAttribute::Flags(TableFlags::from_bits_retain(t.flags)),
    ];
    if !t.userdata.is_empty() {
        attributes.push(TableAttribute::UserData(t.userdata.clone()));
    }
    NfTablesMessage::NewTable(TableMessage { attributes })
}

/// NEWSET; `id` names the set inside the transaction.
pub fn set_message(name: &str, set: &SetModel, id: u32) -> NfTablesMessage {
    let mut attributes = vec![
        SetAttribute::Table(TABLE_NAME.to_string()),
        SetAttribute::Name(name.to_string()),
        SetAttribute::Flags(SetFlags::from_bits_retain(set.flags)),
        SetAttribute::KeyType(set.key.type_id()),
        SetAttribute::KeyLen(set.key.key_len()),
        SetAttribute::Id(id),
    ];
    if set.size != 0 {
        attributes.push(SetAttribute::Description(vec![SetDescription::Size(set.size)]));
    }
    if set.timeout_ms != 0 {
        attributes.push(SetAttribute::Timeout(set.timeout_ms));
    }
    if !set.userdata.is_empty() {
        attributes.push(SetAttribute::UserData(set.userdata.clone()));
    }
    NfTablesMessage::NewSet(SetMessage { attributes })
}

/// NEWSETELEM with every element of `set` (ascending, as nft sends them).
pub fn elements_message(name: &str, set: &SetModel) -> NfTablesMessage {
    let elems = set.elements.iter().map(|e| {
        let mut attrs = Vec::new();
        if e.flags != 0 {
            attrs.push(SetElementAttribute::Flags(SetElementFlags::from_bits_retain(e.flags)));
        }
        attrs.push(SetElementAttribute::Key(DataAttribute::Value(e.key.clone())));
        attrs.extend(
            e.unknown
                .iter()
                .map(|a| SetElementAttribute::Other(DefaultNla::new(a.kind, a.value.clone()))),
        );
        ListAttribute::Element(attrs)
    });
    NfTablesMessage::NewSetElement(SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE_NAME.to_string()),
            SetElementList::Set(name.to_string()),
            SetElementList::Elements(elems.collect()),
        ],
    })
}

pub fn chain_message(name: &str, c: &ChainModel) -> NfTablesMessage {
    let mut attributes = vec![
        ChainAttribute::Table(TABLE_NAME.to_string()),
        ChainAttribute::Name(name.to_string()),
    ];
    if let Some(b) = &c.base {
        attributes.push(ChainAttribute::Type(b.chain_type.clone()));
        attributes.push(ChainAttribute::Policy(b.policy));
        attributes.push(ChainAttribute::Hook(vec![
            Hook::Number(HookNumber::Inet(InetHookNumber::from(b.hook))),
            Hook::Priority(b.priority as u32),
        ]));
    }
    // The kernel sets the base flag itself; nft sends no flags.
    let flags = c.flags & !CHAIN_F_BASE;
    if flags != 0 {
        attributes.push(ChainAttribute::Flags(
            netlink_packet_netfilter::nftables::ChainFlags::from_bits_retain(flags),
        ));
    }
    if !c.userdata.is_empty() {
        attributes.push(ChainAttribute::UserData(c.userdata.clone()));
    }
    NfTablesMessage::NewChain(ChainMessage { attributes })
}

/// NEWRULE appending `r` to `chain`.
pub fn rule_message(chain: &str, r: &RuleModel) -> NfTablesMessage {
    let mut attributes = vec![
        RuleAttribute::Table(TABLE_NAME.to_string()),
        RuleAttribute::Chain(chain.to_string()),
        RuleAttribute::Expressions(r.exprs.iter().map(expression).collect()),
    ];
    if !r.userdata.is_empty() {
        attributes.push(RuleAttribute::UserData(r.userdata.clone()));
    }
    NfTablesMessage::NewRule(RuleMessage { attributes })
}

fn u32_be(kind: u16, v: u32) -> DefaultNla {
    DefaultNla::new(kind, v.to_be_bytes().to_vec())
}

fn u64_be(kind: u16, v: u64) -> DefaultNla {
    DefaultNla::new(kind, v.to_be_bytes().to_vec())
}

/// A NUL-terminated string attribute.
fn string(kind: u16, s: &str) -> DefaultNla {
    DefaultNla::new(kind, s.bytes().chain(std::iter::once(0)).collect())
}

/// An expression nested in another (dynset's `expr`): its name and data attributes.
fn nested_expression(kind: u16, e: &Expr) -> DefaultNla {
    let l = expression(e);
    let mut value = vec![0; l.value_len()];
    l.emit_value(&mut value);
    DefaultNla::new(kind | NLA_F_NESTED, value)
}

/// A list of expressions (`NFTA_DYNSET_EXPRESSIONS`): one list element each.
fn nested_expressions(kind: u16, exprs: &[Expr]) -> DefaultNla {
    let list: Vec<ListAttribute<ExpressionAttribute>> = exprs.iter().map(expression).collect();
    let mut value = vec![0; netlink_packet_core::Emitable::buffer_len(&list.as_slice())];
    netlink_packet_core::Emitable::emit(&list.as_slice(), &mut value);
    DefaultNla::new(kind | NLA_F_NESTED, value)
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> ListAttribute<ExpressionAttribute> {
    Expressions::Other {
        expression_type: name.to_string(),
        attributes,
    }
    .into()
}

/// One expression in nft's attribute order.
pub fn expression(e: &Expr) -> ListAttribute<ExpressionAttribute> {
    let reg = |r: u32| Register::from(r);
    match e {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => Expressions::Payload(vec![
            Payload::DestinationRegister(reg(*dreg)),
            Payload::Base(*base),
            Payload::Offset(*offset),
            Payload::Len(*len),
        ])
        .into(),
        Expr::Meta { key, dreg } => Expressions::Meta(vec![
            Meta::Key(MetaKey::from(*key)),
            Meta::DestinationRegister(reg(*dreg)),
        ])
        .into(),
        Expr::Cmp { sreg, op, data } => Expressions::Cmp(vec![
            Cmp::SourceRegister(reg(*sreg)),
            Cmp::Op(Operator::from(*op)),
            Cmp::Data(DataAttribute::Value(data.clone())),
        ])
        .into(),
        Expr::Bitwise {
            sreg,
            dreg,
            len,
            mask,
            xor,
        } => Expressions::Bitwise(vec![
            Bitwise::SourceRegister(reg(*sreg)),
            Bitwise::DestinationRegister(reg(*dreg)),
            Bitwise::Length(*len),
            Bitwise::Op(BITWISE_BOOL),
            Bitwise::Mask(DataAttribute::Value(mask.clone())),
            Bitwise::Xor(DataAttribute::Value(xor.clone())),
        ])
        .into(),
        Expr::Lookup { set, sreg, flags } => {
            let mut attrs = vec![Lookup::SourceRegister(reg(*sreg)), Lookup::Set(set.clone())];
            if *flags != 0 {
                attrs.push(Lookup::Flags(*flags));
            }
            Expressions::Lookup(attrs).into()
        }
        Expr::Fib { flags, result, dreg } => other(
            "fib",
            vec![
                u32_be(NFTA_FIB_FLAGS, *flags),
                u32_be(NFTA_FIB_RESULT, *result),
                u32_be(NFTA_FIB_DREG, *dreg),
            ],
        ),
        // nft sends a counter without attributes: it starts at zero.
        Expr::Counter(_) => other("counter", Vec::new()),
        Expr::Reject { kind, icmp_code } => other(
            "reject",
            vec![
                u32_be(NFTA_REJECT_TYPE, *kind),
                DefaultNla::new(NFTA_REJECT_ICMP_CODE, vec![*icmp_code]),
            ],
        ),
        Expr::Immediate { dreg, verdict } => {
            let (code, chain) = verdict_code(verdict);
            let mut v = vec![VerdictAttribute::Code(code)];
            if let Some(c) = chain {
                v.push(VerdictAttribute::Chain(c));
            }
            Expressions::Immediate(vec![
                Immediate::DestinationRegister(reg(*dreg)),
                Immediate::Data(DataAttribute::Verdict(v)),
            ])
            .into()
        }
        Expr::Dynset {
            op,
            set,
            sreg_key,
            timeout_ms,
            flags,
            exprs,
        } => {
            let mut attrs = vec![
                u32_be(NFTA_DYNSET_SREG_KEY, *sreg_key),
                u32_be(NFTA_DYNSET_OP, *op),
                string(NFTA_DYNSET_SET_NAME, set),
            ];
            if *timeout_ms != 0 {
                attrs.push(u64_be(NFTA_DYNSET_TIMEOUT, *timeout_ms));
            }
            match exprs.as_slice() {
                [] => {}
                [one] => attrs.push(nested_expression(NFTA_DYNSET_EXPR, one)),
                many => attrs.push(nested_expressions(NFTA_DYNSET_EXPRESSIONS, many)),
            }
            if *flags != 0 {
                attrs.push(u32_be(NFTA_DYNSET_FLAGS, *flags));
            }
            other("dynset", attrs)
        }
        Expr::Limit {
            rate,
            unit_secs,
            burst,
            kind,
            flags,
        } => other(
            "limit",
            vec![
                u64_be(NFTA_LIMIT_RATE, *rate),
                u64_be(NFTA_LIMIT_UNIT, *unit_secs),
                u32_be(NFTA_LIMIT_BURST, *burst),
                u32_be(NFTA_LIMIT_TYPE, *kind),
                u32_be(NFTA_LIMIT_FLAGS, *flags),
            ],
        ),
        Expr::Log { prefix, group, snaplen } => {
            let mut attrs = vec![
                string(NFTA_LOG_PREFIX, prefix),
                DefaultNla::new(NFTA_LOG_GROUP, group.to_be_bytes().to_vec()),
            ];
            if *snaplen != 0 {
                attrs.push(u32_be(NFTA_LOG_SNAPLEN, *snaplen));
            }
            other("log", attrs)
        }
        Expr::Raw { name, attrs } => other(
            name,
            attrs.iter().map(|a| DefaultNla::new(a.kind, a.value.clone())).collect(),
        ),
    }
}

fn verdict_code(v: &Verdict) -> (NlVerdict, Option<String>) {
    match v {
        Verdict::Accept => (NlVerdict::Other(NF_ACCEPT), None),
        Verdict::Drop => (NlVerdict::Other(NF_DROP), None),
        Verdict::Continue => (NlVerdict::Continue, None),
        Verdict::Return => (NlVerdict::Return, None),
        Verdict::Jump(c) => (NlVerdict::Jump, Some(c.clone())),
        Verdict::Goto(c) => (NlVerdict::Goto, Some(c.clone())),
        Verdict::Other(code, c) => (NlVerdict::from(*code), c.clone()),
    }
}
