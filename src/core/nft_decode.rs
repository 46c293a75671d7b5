//! A kernel dump of our table (`TableDump`, the NfTablesMessage values the
//! transport read) decoded into a TableModel. Every attribute that is part
//! of an object's identity is kept; state the kernel adds (handles, use
//! counts, element counts, backend names, rule positions, counter values) is
//! not compared (counters are kept in `Tally`). Attributes and expressions
//! this model does not know are kept as raw bytes, so they show up as
//! differences instead of vanishing. Numbers the crate leaves raw are read
//! as the kernel writes them: big-endian, except nft's userdata and `cmp`
//! data, which are kept as bytes.

use super::nft_model::*;
use super::nft_wire::*;
use netlink_packet_core::{DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable, NLA_TYPE_MASK};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, Immediate, ListAttribute,
    Lookup, Meta, NfTablesMessage, Payload, RuleAttribute, SetAttribute, SetDescription, SetElementAttribute,
    SetElementList, TableAttribute, Verdict as NlVerdict, VerdictAttribute,
};

/// What the transport's `dump_table` (`backend::nfnl`) returns: the kernel's
/// objects of one table, as plain messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDump {
    /// The NEWTABLE message, None when the table does not exist.
    pub table: Option<NfTablesMessage>,
    pub chains: Vec<NfTablesMessage>,
    pub sets: Vec<NfTablesMessage>,
    /// NEWSETELEM messages, for every set.
    pub elements: Vec<NfTablesMessage>,
    /// NEWRULE messages in kernel order.
    pub rules: Vec<NfTablesMessage>,
}

/// The model of a dumped table.
pub fn from_dump(d: &TableDump) -> Result<TableModel, String> {
    let mut t = TableModel::default();
    match &d.table {
        Some(NfTablesMessage::NewTable(m)) => {
            for a in &m.attributes {
                match a {
                    TableAttribute::Flags(f) => t.flags = f.bits(),
                    TableAttribute::UserData(u) => t.userdata = u.clone(),
                    TableAttribute::Name(_)
                    | TableAttribute::Use(_)
                    | TableAttribute::Handle(_)
                    | TableAttribute::Owner(_) => {}
                    a => t.unknown.push(raw(a)),
                }
            }
        }
        Some(_) => return Err("the table dump holds a message that is not a table".into()),
        None => return Err("the table does not exist".into()),
    }
    for m in &d.sets {
        let NfTablesMessage::NewSet(m) = m else {
            return Err("the set dump holds a message that is not a set".into());
        };
        let (name, set) = decode_set(&m.attributes)?;
        t.sets.insert(name, set);
    }
    for m in &d.elements {
        let NfTablesMessage::NewSetElement(m) = m else {
            return Err("the element dump holds a message that is not a set element list".into());
        };
        let mut set_name = None;
        let mut elems = Vec::new();
        for a in &m.attributes {
            match a {
                SetElementList::Set(s) => set_name = Some(s.clone()),
                SetElementList::Elements(list) => elems.extend(list.iter().map(decode_element)),
                _ => {}
            }
        }
        if elems.is_empty() {
            continue;
        }
        let name = set_name.ok_or("set elements without a set name")?;
        let set = t
            .sets
            .get_mut(&name)
            .ok_or_else(|| format!("elements of set {name}, which the dump does not have"))?;
        let elems = elems.into_iter().collect::<Result<Vec<_>, _>>()?;
        if set.flags & SET_F_EVAL != 0 {
            // Added by the packet path (the meter's sources): state, not identity.
            set.learned.0.extend(elems);
        } else {
            set.elements.extend(elems);
        }
    }
    for m in &d.chains {
        let NfTablesMessage::NewChain(m) = m else {
            return Err("the chain dump holds a message that is not a chain".into());
        };
        let (name, chain) = decode_chain(&m.attributes)?;
        t.chains.insert(name, chain);
    }
    for m in &d.rules {
        let NfTablesMessage::NewRule(m) = m else {
            return Err("the rule dump holds a message that is not a rule".into());
        };
        let (chain, rule) = decode_rule(&m.attributes)?;
        t.chains
            .get_mut(&chain)
            .ok_or_else(|| format!("a rule of chain {chain}, which the dump does not have"))?
            .rules
            .push(rule);
    }
    Ok(t)
}

/// The netlink port id owning the dumped table (NFTA_TABLE_OWNER), if any.
pub fn table_owner(d: &TableDump) -> Option<u32> {
    d.table.as_ref().and_then(message_owner)
}

/// `NFTA_TABLE_OWNER` of a `NewTable` message: the owning socket's port id,
/// present only while the table is owned (an orphan has none).
pub fn message_owner(msg: &NfTablesMessage) -> Option<u32> {
    match msg {
        NfTablesMessage::NewTable(t) => t.attributes.iter().find_map(|a| match a {
            TableAttribute::Owner(p) => Some(*p),
            _ => None,
        }),
        _ => None,
    }
}

/// `NFTA_TABLE_FLAGS` of a `NewTable` message.
pub fn message_flags(msg: &NfTablesMessage) -> Option<u32> {
    match msg {
        NfTablesMessage::NewTable(t) => t.attributes.iter().find_map(|a| match a {
            TableAttribute::Flags(f) => Some(f.bits()),
            _ => None,
        }),
        _ => None,
    }
}

/// Any attribute as (type, value bytes).
fn raw<T: Nla>(a: &T) -> RawAttr {
    let mut value = vec![0; a.value_len()];
    a.emit_value(&mut value);
    RawAttr {
        kind: a.kind() & NLA_TYPE_MASK,
        value,
    }
}

fn decode_set(attrs: &[SetAttribute]) -> Result<(String, SetModel), String> {
    let (mut name, mut key_type, mut key_len) = (None, None, None);
    let mut set = SetModel::new(KeyType::Other { type_id: 0, len: 0 }, 0, Vec::new(), Default::default());
    for a in attrs {
        match a {
            SetAttribute::Name(n) => name = Some(n.clone()),
            SetAttribute::Flags(f) => set.flags = f.bits(),
            SetAttribute::KeyType(k) => key_type = Some(*k),
            SetAttribute::KeyLen(l) => key_len = Some(*l),
            SetAttribute::UserData(u) => set.userdata = u.clone(),
            SetAttribute::Timeout(ms) => set.timeout_ms = *ms,
            // An empty description is what the kernel reports for ours, or just the size.
            SetAttribute::Description(d)
                if d.iter()
                    .all(|x| matches!(x, SetDescription::Unspec | SetDescription::Size(_))) =>
            {
                for x in d {
                    if let SetDescription::Size(n) = x {
                        set.size = *n;
                    }
                }
            }
            SetAttribute::Table(_)
            | SetAttribute::Handle(_)
            | SetAttribute::Type(_)
            | SetAttribute::Count(_)
            | SetAttribute::Id(_) => {}
            a => set.unknown.push(raw(a)),
        }
    }
    let name = name.ok_or("a set without a name")?;
    set.key = KeyType::from_wire(key_type.unwrap_or(0), key_len.unwrap_or(0));
    Ok((name, set))
}

fn decode_element(l: &ListAttribute<SetElementAttribute>) -> Result<Element, String> {
    let ListAttribute::Element(attrs) = l else {
        return Err("a set element list entry that is not an element".into());
    };
    let mut e = Element {
        key: Vec::new(),
        flags: 0,
        unknown: Vec::new(),
    };
    for a in attrs {
        match a {
            SetElementAttribute::Key(DataAttribute::Value(k)) => e.key = k.clone(),
            SetElementAttribute::Flags(f) => e.flags = f.bits(),
            a => e.unknown.push(raw(a)),
        }
    }
    Ok(e)
}

fn decode_chain(attrs: &[ChainAttribute]) -> Result<(String, ChainModel), String> {
    let mut name = None;
    let mut c = ChainModel::default();
    let (mut chain_type, mut hook, mut priority, mut policy) = (None, None, None, None);
    for a in attrs {
        match a {
            ChainAttribute::Name(n) => name = Some(n.clone()),
            ChainAttribute::Type(t) => chain_type = Some(t.clone()),
            ChainAttribute::Policy(p) => policy = Some(*p),
            ChainAttribute::Flags(f) => c.flags = f.bits(),
            ChainAttribute::UserData(u) => c.userdata = u.clone(),
            ChainAttribute::Hook(h) => {
                for x in h {
                    match x {
                        Hook::Number(n) => hook = Some(u32::from(*n)),
                        Hook::Priority(p) => priority = Some(*p as i32),
                        x => c.unknown.push(raw(x)),
                    }
                }
            }
            ChainAttribute::Table(_)
            | ChainAttribute::Handle(_)
            | ChainAttribute::Use(_)
            | ChainAttribute::Counter(_)
            | ChainAttribute::Id(_) => {}
            a => c.unknown.push(raw(a)),
        }
    }
    if let Some(hook) = hook {
        c.base = Some(BaseChain {
            chain_type: chain_type.unwrap_or_default(),
            hook,
            priority: priority.unwrap_or(0),
            policy: policy.unwrap_or(NF_ACCEPT),
        });
    }
    Ok((name.ok_or("a chain without a name")?, c))
}

fn decode_rule(attrs: &[RuleAttribute]) -> Result<(String, RuleModel), String> {
    let mut chain = None;
    let mut r = RuleModel::default();
    for a in attrs {
        match a {
            RuleAttribute::Chain(c) => chain = Some(c.clone()),
            RuleAttribute::Expressions(list) => r.exprs = list.iter().map(decode_expr).collect(),
            RuleAttribute::UserData(u) => r.userdata = u.clone(),
            RuleAttribute::Table(_)
            | RuleAttribute::Handle(_)
            | RuleAttribute::Position(_)
            | RuleAttribute::Id(_)
            | RuleAttribute::PositionId(_) => {}
            a => r.unknown.push(raw(a)),
        }
    }
    Ok((chain.ok_or("a rule without a chain")?, r))
}

/// One expression; anything not exactly as modelled becomes `Expr::Raw`.
pub fn decode_expr(l: &ListAttribute<ExpressionAttribute>) -> Expr {
    let ListAttribute::Element(attrs) = l else {
        return Expr::Raw {
            name: "?".into(),
            attrs: Vec::new(),
        };
    };
    let name = attrs
        .iter()
        .find_map(|a| match a {
            ExpressionAttribute::Name(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let data = attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Data(d) => Some(d),
        _ => None,
    });
    let typed = data.and_then(typed_expr);
    typed.unwrap_or_else(|| Expr::Raw {
        name,
        attrs: data.map(raw_data).unwrap_or_default(),
    })
}

fn raw_data(d: &Expressions) -> Vec<RawAttr> {
    match d {
        Expressions::Bitwise(v) => v.iter().map(raw).collect(),
        Expressions::Cmp(v) => v.iter().map(raw).collect(),
        Expressions::Immediate(v) => v.iter().map(raw).collect(),
        Expressions::Lookup(v) => v.iter().map(raw).collect(),
        Expressions::Meta(v) => v.iter().map(raw).collect(),
        Expressions::Payload(v) => v.iter().map(raw).collect(),
        Expressions::Unknown(v) | Expressions::Other { attributes: v, .. } => v.iter().map(raw).collect(),
        _ => Vec::new(),
    }
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Attributes of a raw expression by type; None on a repeated or unknown one.
fn by_kind(attrs: &[DefaultNla], known: &[u16]) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out: Vec<Option<Vec<u8>>> = vec![None; known.len()];
    for a in attrs {
        let r = raw(a);
        let i = known.iter().position(|k| *k == r.kind)?;
        if out[i].replace(r.value).is_some() {
            return None;
        }
    }
    Some(out)
}

fn typed_expr(d: &Expressions) -> Option<Expr> {
    Some(match d {
        Expressions::Payload(v) => {
            let (mut base, mut offset, mut len, mut dreg) = (None, None, None, None);
            for a in v {
                match a {
                    Payload::Base(x) => base = Some(*x),
                    Payload::Offset(x) => offset = Some(*x),
                    Payload::Len(x) => len = Some(*x),
                    Payload::DestinationRegister(r) => dreg = Some(u32::from(*r)),
                    _ => return None,
                }
            }
            Expr::Payload {
                base: base?,
                offset: offset?,
                len: len?,
                dreg: dreg?,
            }
        }
        Expressions::Meta(v) => {
            let (mut key, mut dreg) = (None, None);
            for a in v {
                match a {
                    Meta::Key(k) => key = Some(u32::from(*k)),
                    Meta::DestinationRegister(r) => dreg = Some(u32::from(*r)),
                    _ => return None,
                }
            }
            Expr::Meta { key: key?, dreg: dreg? }
        }
        Expressions::Cmp(v) => {
            let (mut sreg, mut op, mut data) = (None, None, None);
            for a in v {
                match a {
                    Cmp::SourceRegister(r) => sreg = Some(u32::from(*r)),
                    Cmp::Op(o) => op = Some(u32::from(*o)),
                    Cmp::Data(DataAttribute::Value(b)) => data = Some(b.clone()),
                    _ => return None,
                }
            }
            Expr::Cmp {
                sreg: sreg?,
                op: op?,
                data: data?,
            }
        }
        Expressions::Bitwise(v) => {
            // The boolean operation only (a shift is another expression: raw),
            // each attribute once.
            let (mut sreg, mut dreg, mut len, mut op, mut mask, mut xor) = (None, None, None, None, None, None);
            for a in v {
                let fresh = match a {
                    Bitwise::SourceRegister(r) => sreg.replace(u32::from(*r)).is_none(),
                    Bitwise::DestinationRegister(r) => dreg.replace(u32::from(*r)).is_none(),
                    Bitwise::Length(l) => len.replace(*l).is_none(),
                    Bitwise::Op(o) => op.replace(*o).is_none(),
                    Bitwise::Mask(DataAttribute::Value(b)) => mask.replace(b.clone()).is_none(),
                    Bitwise::Xor(DataAttribute::Value(b)) => xor.replace(b.clone()).is_none(),
                    _ => false,
                };
                if !fresh {
                    return None;
                }
            }
            if op.unwrap_or(BITWISE_BOOL) != BITWISE_BOOL {
                return None;
            }
            Expr::Bitwise {
                sreg: sreg?,
                dreg: dreg?,
                len: len?,
                mask: mask?,
                xor: xor?,
            }
        }
        Expressions::Lookup(v) => {
            let (mut set, mut sreg, mut flags) = (None, None, 0);
            for a in v {
                match a {
                    Lookup::Set(s) => set = Some(s.clone()),
                    Lookup::SourceRegister(r) => sreg = Some(u32::from(*r)),
                    Lookup::Flags(f) => flags = *f,
                    Lookup::SetId(_) => {}
                    _ => return None,
                }
            }
            Expr::Lookup {
                set: set?,
                sreg: sreg?,
                flags,
            }
        }
        Expressions::Immediate(v) => {
            let (mut dreg, mut verdict) = (None, None);
            for a in v {
                match a {
                    Immediate::DestinationRegister(r) => dreg = Some(u32::from(*r)),
                    Immediate::Data(DataAttribute::Verdict(attrs)) => verdict = Some(decode_verdict(attrs)?),
                    _ => return None,
                }
            }
            Expr::Immediate {
                dreg: dreg?,
                verdict: verdict?,
            }
        }
        Expressions::Other {
            expression_type,
            attributes,
        } => match expression_type.as_str() {
            "counter" => {
                // NFTA_COUNTER_PAD (3) may pad the 64-bit values.
                let a = by_kind(attributes, &[NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS, 3])?;
                let get = |i: usize| a[i].as_deref().map_or(Some(0), be_u64);
                Expr::Counter(Tally {
                    bytes: get(0)?,
                    packets: get(1)?,
                })
            }
            "reject" => {
                let a = by_kind(attributes, &[NFTA_REJECT_TYPE, NFTA_REJECT_ICMP_CODE])?;
                let icmp_code = match a[1].as_deref() {
                    None => 0,
                    Some([c]) => *c,
                    Some(_) => return None,
                };
                Expr::Reject {
                    kind: be_u32(a[0].as_deref()?)?,
                    icmp_code,
                }
            }
            "fib" => {
                let a = by_kind(attributes, &[NFTA_FIB_DREG, NFTA_FIB_RESULT, NFTA_FIB_FLAGS])?;
                Expr::Fib {
                    dreg: be_u32(a[0].as_deref()?)?,
                    result: be_u32(a[1].as_deref()?)?,
                    flags: be_u32(a[2].as_deref()?)?,
                }
            }
            "dynset" => {
                let a = by_kind(
                    attributes,
                    &[
                        NFTA_DYNSET_SREG_KEY,
                        NFTA_DYNSET_OP,
                        NFTA_DYNSET_SET_NAME,
                        NFTA_DYNSET_SET_ID,
                        NFTA_DYNSET_TIMEOUT,
                        NFTA_DYNSET_EXPR,
                        NFTA_DYNSET_FLAGS,
                        NFTA_DYNSET_PAD,
                        NFTA_DYNSET_EXPRESSIONS,
                    ],
                )?;
                let exprs = match (&a[5], &a[8]) {
                    (None, None) => Vec::new(),
                    (Some(one), None) => vec![nested_expr(one)?],
                    (None, Some(list)) => nested_list(list)?,
                    (Some(_), Some(_)) => return None,
                };
                Expr::Dynset {
                    sreg_key: be_u32(a[0].as_deref()?)?,
                    op: be_u32(a[1].as_deref()?)?,
                    set: c_string(a[2].as_deref()?)?,
                    timeout_ms: a[4].as_deref().map_or(Some(0), be_u64)?,
                    flags: a[6].as_deref().map_or(Some(0), be_u32)?,
                    exprs,
                }
            }
            "limit" => {
                let a = by_kind(
                    attributes,
                    &[
                        NFTA_LIMIT_RATE,
                        NFTA_LIMIT_UNIT,
                        NFTA_LIMIT_BURST,
                        NFTA_LIMIT_TYPE,
                        NFTA_LIMIT_FLAGS,
                        NFTA_LIMIT_PAD,
                    ],
                )?;
                Expr::Limit {
                    rate: be_u64(a[0].as_deref()?)?,
                    unit_secs: be_u64(a[1].as_deref()?)?,
                    burst: be_u32(a[2].as_deref()?)?,
                    kind: be_u32(a[3].as_deref()?)?,
                    flags: be_u32(a[4].as_deref()?)?,
                }
            }
            "log" => {
                // Level, flags or a queue threshold make it another log: raw.
                let a = by_kind(attributes, &[NFTA_LOG_PREFIX, NFTA_LOG_GROUP, NFTA_LOG_SNAPLEN])?;
                let group = match a[1].as_deref()? {
                    [h, l] => u16::from_be_bytes([*h, *l]),
                    _ => return None,
                };
                Expr::Log {
                    prefix: c_string(a[0].as_deref()?)?,
                    group,
                    snaplen: a[2].as_deref().map_or(Some(0), be_u32)?,
                }
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// A NUL-terminated string attribute.
fn c_string(v: &[u8]) -> Option<String> {
    let text = v.strip_suffix(&[0])?;
    (!text.contains(&0)).then(|| String::from_utf8(text.to_vec()).ok())?
}

/// One expression nested in another (dynset's `expr`: name and data attributes).
fn nested_expr(value: &[u8]) -> Option<Expr> {
    // Framed as the list element the crate parses expressions from.
    let len = 4 + value.len();
    let mut buf = Vec::with_capacity(len.div_ceil(4) * 4);
    buf.extend((len as u16).to_ne_bytes());
    buf.extend((1u16 | netlink_packet_core::NLA_F_NESTED).to_ne_bytes());
    buf.extend(value);
    buf.resize(len.div_ceil(4) * 4, 0);
    let l = ListAttribute::<ExpressionAttribute>::parse(&NlaBuffer::new(&buf)).ok()?;
    match decode_expr(&l) {
        Expr::Raw { .. } => None,
        e => Some(e),
    }
}

/// A list of nested expressions (`NFTA_DYNSET_EXPRESSIONS`).
fn nested_list(value: &[u8]) -> Option<Vec<Expr>> {
    NlasIterator::new(value)
        .map(|nla| {
            let nla = nla.ok()?;
            let l = ListAttribute::<ExpressionAttribute>::parse(&nla).ok()?;
            match decode_expr(&l) {
                Expr::Raw { .. } => None,
                e => Some(e),
            }
        })
        .collect()
}

fn decode_verdict(attrs: &[VerdictAttribute]) -> Option<Verdict> {
    let (mut code, mut chain) = (None, None);
    for a in attrs {
        match a {
            VerdictAttribute::Code(c) => code = Some(*c),
            VerdictAttribute::Chain(c) => chain = Some(c.clone()),
            _ => return None,
        }
    }
    Some(match (code?, chain) {
        (NlVerdict::Jump, Some(c)) => Verdict::Jump(c),
        (NlVerdict::Goto, Some(c)) => Verdict::Goto(c),
        (NlVerdict::Return, None) => Verdict::Return,
        (NlVerdict::Continue, None) => Verdict::Continue,
        (NlVerdict::Other(NF_ACCEPT), None) => Verdict::Accept,
        (NlVerdict::Other(NF_DROP), None) => Verdict::Drop,
        (c, chain) => Verdict::Other(u32::from(c), chain),
    })
}
