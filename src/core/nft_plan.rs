//! The one transaction that brings our table from what was read back to
//! what the Blocklist wants, as data: an ordered list of `Op`s (encoded to
//! nf_tables messages by `messages`, replayed on a model by `nft_replay`
//! for tests). Pure; the backend sends it as one batch.
//!
//! The table is updated in place, never deleted and created again: packets
//! see the old rules or the new ones and nothing in between (deleting and
//! re-creating the table in one transaction is not that: measured on kernel
//! 6.18, pods got through during the swap of an interval set). The in-place
//! order: NEWTABLE (flags as wanted), empty every chain that exists (so no
//! rule references a set or chain we change), delete the sets and then the
//! chains the policy does not have, foreign ones and those of another shape
//! (a set's key, flags or userdata, a chain's type, hook or priority cannot
//! be changed in place), declare every set (a kept one is flushed) and fill
//! it, declare every chain (this also sets a base chain's policy), then the
//! rules of the regular chains and last the jumps of the base chains.
//!
//! When only set elements differ, the plan deletes and adds just those
//! elements (deletions first: an aggregated element may replace the ones it
//! covers): rules keep their handles and counters.
//!
//! The one exception to "in place": a table whose comment or other table
//! attributes are not ours cannot get them in place (the kernel updates only
//! a table's flags), so it is deleted and created in the same transaction.

use super::nft_model::*;
use super::nft_wire::{chain_message, elements_message, rule_message, set_message, table_message};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute, SetElementList,
    SetElementMessage, SetMessage, TableAttribute, TableMessage,
};
use std::collections::BTreeSet;

/// One step of a transaction on our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// NEWTABLE: creates the table (flags and userdata), or sets the flags of the existing one.
    Table { flags: u32, userdata: Vec<u8> },
    /// DELTABLE.
    DeleteTable,
    /// DELRULE naming only the chain: deletes every rule in it.
    FlushChain(String),
    /// DELCHAIN (the kernel deletes its rules with it).
    DeleteChain(String),
    /// DELSET.
    DeleteSet(String),
    /// NEWSET (its elements are not part of this op).
    AddSet(String, SetModel),
    /// DELSETELEM naming only the set: deletes every element.
    FlushSet(String),
    /// NEWSETELEM.
    AddElements(String, BTreeSet<Element>),
    /// DELSETELEM of these elements.
    DeleteElements(String, BTreeSet<Element>),
    /// NEWCHAIN: creates the chain, or sets the policy of an existing base chain.
    AddChain(String, ChainModel),
    /// NEWRULE appended at the end of the chain.
    AddRule(String, RuleModel),
}

/// What kind of transaction a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// The table is as wanted.
    Nothing,
    /// The table is absent: create it whole.
    Create,
    /// Only set elements differ: delete and add just those.
    Elements,
    /// Empty the chains, fix sets and chains, refill, in place.
    InPlace,
    /// Table attributes only a new table can have: delete and create in one transaction.
    Recreate,
    /// An orphaned table taken over by NEWTABLE owner|persist, then brought in place.
    Adopt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: PlanKind,
    pub ops: Vec<Op>,
}

/// The transaction that brings the table from `got` (None: absent) to `want`.
pub fn plan(want: &TableModel, got: Option<&TableModel>) -> Plan {
    let Some(got) = got else {
        return Plan {
            kind: PlanKind::Create,
            ops: create(want),
        };
    };
    if want == got {
        return Plan {
            kind: PlanKind::Nothing,
            ops: Vec::new(),
        };
    }
    if want.userdata != got.userdata || want.unknown != got.unknown {
        return recreate(want);
    }
    element_plan(want, got).unwrap_or_else(|| in_place(want, got))
}

/// Deletes the table and creates `want` in one transaction (for a table
/// that cannot be brought in place, or cannot be read as a model).
pub fn recreate(want: &TableModel) -> Plan {
    let mut ops = vec![Op::DeleteTable];
    ops.extend(create(want));
    Plan {
        kind: PlanKind::Recreate,
        ops,
    }
}

/// The ops that create `want` where nothing exists.
fn create(want: &TableModel) -> Vec<Op> {
    let mut ops = vec![table_op(want)];
    for (name, set) in &want.sets {
        ops.push(Op::AddSet(name.clone(), shape(set)));
        if !set.elements.is_empty() {
            ops.push(Op::AddElements(name.clone(), set.elements.clone()));
        }
    }
    ops.extend(chains_and_rules(want));
    ops
}

fn table_op(want: &TableModel) -> Op {
    Op::Table {
        flags: want.flags,
        userdata: want.userdata.clone(),
    }
}

/// A set without its elements.
fn shape(set: &SetModel) -> SetModel {
    SetModel {
        elements: BTreeSet::new(),
        ..set.clone()
    }
}

/// A chain without its rules.
fn chain_shape(chain: &ChainModel) -> ChainModel {
    ChainModel {
        rules: Vec::new(),
        ..chain.clone()
    }
}

/// Declares every chain, then fills the regular chains, then the base chains (the jumps).
fn chains_and_rules(want: &TableModel) -> Vec<Op> {
    let mut ops: Vec<Op> = want
        .chains
        .iter()
        .map(|(name, c)| Op::AddChain(name.clone(), chain_shape(c)))
        .collect();
    let regular = want.chains.iter().filter(|(_, c)| c.base.is_none());
    let base = want.chains.iter().filter(|(_, c)| c.base.is_some());
    for (name, c) in regular.chain(base) {
        ops.extend(c.rules.iter().map(|r| Op::AddRule(name.clone(), r.clone())));
    }
    ops
}

/// Whether an existing set can stay (same key, flags, userdata, timeout, size and attributes).
fn set_keeps(want: &SetModel, got: &SetModel) -> bool {
    want.key == got.key
        && want.flags == got.flags
        && want.userdata == got.userdata
        && want.timeout_ms == got.timeout_ms
        && want.size == got.size
        && want.unknown == got.unknown
}

/// Whether an existing chain can stay: same type, hook and priority (the
/// policy is updated in place), flags, userdata and attributes.
fn chain_keeps(want: &ChainModel, got: &ChainModel) -> bool {
    let hooked = |c: &ChainModel| c.base.as_ref().map(|b| (b.chain_type.clone(), b.hook, b.priority));
    hooked(want) == hooked(got)
        && want.flags == got.flags
        && want.userdata == got.userdata
        && want.unknown == got.unknown
}

/// The in-place transaction (see the module doc); also the fallback when an
/// element-only one is refused.
pub fn in_place(want: &TableModel, got: &TableModel) -> Plan {
    let mut ops = vec![table_op(want)];
    ops.extend(got.chains.keys().map(|name| Op::FlushChain(name.clone())));
    let kept_set =
        |name: &String| matches!((want.sets.get(name), got.sets.get(name)), (Some(w), Some(g)) if set_keeps(w, g));
    // Anonymous sets belong to the rules that use them and went with the flush.
    for (name, _) in got
        .sets
        .iter()
        .filter(|(n, g)| g.flags & SET_F_ANONYMOUS == 0 && !kept_set(n))
    {
        ops.push(Op::DeleteSet(name.clone()));
    }
    let kept_chain = |name: &String| matches!((want.chains.get(name), got.chains.get(name)), (Some(w), Some(g)) if chain_keeps(w, g));
    for name in got.chains.keys().filter(|n| !kept_chain(n)) {
        ops.push(Op::DeleteChain(name.clone()));
    }
    for (name, set) in &want.sets {
        ops.push(Op::AddSet(name.clone(), shape(set)));
        if kept_set(name) && !got.sets[name].elements.is_empty() {
            ops.push(Op::FlushSet(name.clone()));
        }
        if !set.elements.is_empty() {
            ops.push(Op::AddElements(name.clone(), set.elements.clone()));
        }
    }
    ops.extend(chains_and_rules(want));
    Plan {
        kind: PlanKind::InPlace,
        ops,
    }
}

/// The element-only transaction, when `got` differs from `want` in set
/// elements and in nothing else; None otherwise.
pub fn element_plan(want: &TableModel, got: &TableModel) -> Option<Plan> {
    let mut same_but_elements = got.clone();
    for (name, set) in same_but_elements.sets.iter_mut() {
        set.elements = want.sets.get(name)?.elements.clone();
    }
    if same_but_elements != *want || want == got {
        return None;
    }
    let mut ops = Vec::new();
    for (name, g) in &got.sets {
        let gone: BTreeSet<Element> = g.elements.difference(&want.sets[name].elements).cloned().collect();
        if !gone.is_empty() {
            ops.push(Op::DeleteElements(name.clone(), gone));
        }
    }
    for (name, w) in &want.sets {
        let new: BTreeSet<Element> = w.elements.difference(&got.sets[name].elements).cloned().collect();
        if !new.is_empty() {
            ops.push(Op::AddElements(name.clone(), new));
        }
    }
    Some(Plan {
        kind: PlanKind::Elements,
        ops,
    })
}

/// The nf_tables messages of a plan, in order (family `inet`; the batch
/// gives each its usual creation flags: NEWRULE appends).
pub fn messages(ops: &[Op]) -> Vec<NfTablesMessage> {
    let mut set_id = 0;
    ops.iter()
        .map(|op| match op {
            Op::Table { flags, userdata } => table_message(&TableModel {
                flags: *flags,
                userdata: userdata.clone(),
                ..Default::default()
            }),
            Op::DeleteTable => NfTablesMessage::DeleteTable(TableMessage {
                attributes: vec![TableAttribute::Name(TABLE_NAME.into())],
            }),
            Op::FlushChain(chain) => NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(TABLE_NAME.into()),
                    RuleAttribute::Chain(chain.clone()),
                ],
            }),
            Op::DeleteChain(chain) => NfTablesMessage::DeleteChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(TABLE_NAME.into()),
                    ChainAttribute::Name(chain.clone()),
                ],
            }),
            Op::DeleteSet(set) => NfTablesMessage::DeleteSet(SetMessage {
                attributes: vec![SetAttribute::Table(TABLE_NAME.into()), SetAttribute::Name(set.clone())],
            }),
            Op::AddSet(name, set) => {
                set_id += 1;
                set_message(name, set, set_id)
            }
            Op::FlushSet(set) => NfTablesMessage::DeleteSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(TABLE_NAME.into()),
                    SetElementList::Set(set.clone()),
                ],
            }),
            Op::AddElements(set, elements) => elements_message(set, &with_elements(elements)),
            Op::DeleteElements(set, elements) => match elements_message(set, &with_elements(elements)) {
                NfTablesMessage::NewSetElement(m) => NfTablesMessage::DeleteSetElement(m),
                other => other,
            },
            Op::AddChain(name, chain) => chain_message(name, chain),
            Op::AddRule(chain, rule) => rule_message(chain, rule),
        })
        .collect()
}

/// A set holding just `elements` (the element encoder needs only those).
fn with_elements(elements: &BTreeSet<Element>) -> SetModel {
    SetModel::new(KeyType::Other { type_id: 0, len: 0 }, 0, Vec::new(), elements.clone())
}

#[cfg(test)]
#[path = "nft_plan_tests.rs"]
mod tests;
