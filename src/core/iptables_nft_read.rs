//! iptables-nft read back over nf_tables netlink, without
//! `iptables-nft-save` of the whole table: what was read (`ChainRead`: our
//! chain's use count and rules, the first rule of each hook chain), the
//! `Reference` it is compared with, and the decisions (pure).
//!
//! The reference is the bytes iptables-nft itself wrote for our rules (each
//! rule's expressions, counter values zeroed, and its userdata), learnt right
//! after our own `iptables-nft-restore` wrote all of them, in the generation
//! that write committed (nothing else in between). A later read whose bytes
//! equal it holds exactly what we wrote. Anything the bytes cannot decide (a
//! rule of our chain that differs, a jump outside rule 1, no reference yet)
//! is left to the text read-back, which names what changed; where the text
//! matches but the bytes do not, the difference is one iptables cannot print
//! (`hidden_change`), reported and rewritten. Text alone never teaches the
//! bytes: a match iptables-nft-save does not print would be learnt as ours. What the bytes decide alone:
//! in sync, our chain absent or empty, a jump missing from rule 1 of a hook
//! chain while no other jump to our chain exists (the chain's use count
//! less its own rules).

use super::iptables_state::{IptObserved, JumpState};
use super::policy::Hook;
use super::render_iptables::IptDesired;
use netlink_packet_core::{DefaultNla, Emitable, Nla};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, ExpressionAttribute, Expressions, Hook as ChainHook, ListAttribute, RuleAttribute,
    RuleMessage,
};
use std::collections::BTreeSet;

/// Our chain and the heads of the hook chains, as the kernel holds them (one ruleset generation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainRead {
    /// The ruleset generation the read was taken in.
    pub generation: u32,
    /// The table's flags (None: no such table); `dormant` switches all of it off.
    pub table_flags: Option<u32>,
    /// The table's handle (None: no such table).
    pub table_handle: Option<u64>,
    /// Our chain: None when absent, else its use count as the kernel
    /// reports it (the rules it holds plus the rules that jump to it) and
    /// its rules in order.
    pub chain: Option<(u32, Vec<RuleMessage>)>,
    /// Each head chain asked for, in that order.
    pub heads: Vec<Head>,
}

/// One hook chain as read: the chain itself and its rule 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// None: the chain does not exist.
    pub chain: Option<ChainMessage>,
    /// None: the chain is empty or absent.
    pub first: Option<RuleMessage>,
}

/// NFT_TABLE_F_DORMANT: the table is switched off, none of its chains run.
const TABLE_DORMANT: u32 = 1;

/// Whether the read's table is dormant (switched off with nft).
pub fn dormant(read: &ChainRead) -> bool {
    read.table_flags.is_some_and(|f| f & TABLE_DORMANT != 0)
}

/// Whether a hook chain holds rules (its use count: a base chain's rules)
/// while none could be read: a rule 1 too large for a dump datagram. No
/// rule of ours is; it must never read as "no rule there".
fn unreadable(head: &Head) -> bool {
    head.first.is_none()
        && head.chain.as_ref().is_some_and(|c| {
            c.attributes
                .iter()
                .any(|a| matches!(a, ChainAttribute::Use(n) if *n > 0))
        })
}

/// The hook chains that exist but are not a base chain at their hook (a
/// regular chain of that name, or a base chain hooked elsewhere): a jump in
/// them filters nothing. `read.heads` are `hooks`, in order.
pub fn unhooked(hooks: &[Hook], read: &ChainRead) -> BTreeSet<Hook> {
    hooks
        .iter()
        .zip(&read.heads)
        .filter(|(hook, head)| {
            head.chain.as_ref().is_some_and(|c| {
                let number = c.attributes.iter().find_map(|a| match a {
                    ChainAttribute::Hook(parts) => parts.iter().find_map(|p| match p {
                        ChainHook::Number(n) => Some(u32::from(*n)),
                        _ => None,
                    }),
                    _ => None,
                });
                number != Some(hook.number())
            })
        })
        .map(|(hook, _)| *hook)
        .collect()
}

/// What iptables-nft wrote for the rules we want: one entry per rule of our
/// chain, in order, and our jump rule (the same in every hook chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The wanted state it was learnt for (`key`).
    pub key: String,
    pub rules: Vec<Vec<u8>>,
    pub jump: Vec<u8>,
}

/// First line of a reference kept as text.
const TEXT_HEADER: &str = "apiserver-guard iptables reference 1";

impl Reference {
    /// The reference as kept in a file: a header, the key (a JSON string),
    /// then `jump HEX` and one `rule HEX` per rule of our chain, in order.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{TEXT_HEADER}\nkey {}\njump {}\n",
            serde_json::Value::String(self.key.clone()),
            hex(&self.jump)
        );
        for r in &self.rules {
            out.push_str(&format!("rule {}\n", hex(r)));
        }
        out
    }

    /// Reads `to_text`'s output back; None for anything else.
    pub fn from_text(text: &str) -> Option<Reference> {
        let mut lines = text.lines();
        if lines.next()? != TEXT_HEADER {
            return None;
        }
        let key = match serde_json::from_str(lines.next()?.strip_prefix("key ")?).ok()? {
            serde_json::Value::String(k) => k,
            _ => return None,
        };
        let jump = unhex(lines.next()?.strip_prefix("jump ")?)?;
        let rules = lines
            .map(|l| l.strip_prefix("rule ").and_then(unhex))
            .collect::<Option<Vec<_>>>()?;
        Some(Reference { key, rules, jump })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The identity of a wanted state: our chain's rule lines and the hooks.
pub fn key(want: &IptDesired) -> String {
    let hooks: Vec<&str> = want.hooks.iter().map(|h| h.iptables_chain()).collect();
    format!("{}\n# hooks: {}", want.rules.join("\n"), hooks.join(" "))
}

/// The hook chains whose first rule a read needs: the hooks we want.
pub fn heads(want: Option<&IptDesired>) -> Vec<Hook> {
    want.map(|w| w.hooks.clone()).unwrap_or_default()
}

/// One rule as compared: its expressions with counter values zeroed, and its
/// userdata, as netlink bytes (handle, position, table and chain left out).
pub fn rule_bytes(rule: &RuleMessage) -> Vec<u8> {
    let kept: Vec<RuleAttribute> = rule
        .attributes
        .iter()
        .filter_map(|a| match a {
            RuleAttribute::Expressions(list) => {
                Some(RuleAttribute::Expressions(list.iter().map(zero_counter).collect()))
            }
            RuleAttribute::UserData(_) => Some(a.clone()),
            _ => None,
        })
        .collect();
    let mut out = vec![0u8; kept.as_slice().buffer_len()];
    kept.as_slice().emit(&mut out);
    out
}

/// A `counter` expression with its packet and byte counts set to zero; any other expression as it is.
fn zero_counter(expr: &ListAttribute<ExpressionAttribute>) -> ListAttribute<ExpressionAttribute> {
    let ListAttribute::Element(parts) = expr else {
        return expr.clone();
    };
    if !parts
        .iter()
        .any(|p| matches!(p, ExpressionAttribute::Name(n) if n == "counter"))
    {
        return expr.clone();
    }
    let zero = |nlas: &[DefaultNla]| -> Vec<DefaultNla> {
        nlas.iter()
            .map(|n| DefaultNla::new(n.kind(), vec![0; n.value_len()]))
            .collect()
    };
    ListAttribute::Element(
        parts
            .iter()
            .map(|p| match p {
                ExpressionAttribute::Data(Expressions::Other {
                    expression_type,
                    attributes,
                }) => ExpressionAttribute::Data(Expressions::Other {
                    expression_type: expression_type.clone(),
                    attributes: zero(attributes),
                }),
                ExpressionAttribute::Data(Expressions::Unknown(attributes)) => {
                    ExpressionAttribute::Data(Expressions::Unknown(zero(attributes)))
                }
                other => other.clone(),
            })
            .collect(),
    )
}

/// The reference learnt from `read`, taken in the generation our own write
/// of all of `want` committed (the caller's promise). None when the read
/// does not hold our chain and a jump at rule 1 of every wanted hook.
pub fn learn(want: &IptDesired, read: &ChainRead) -> Option<Reference> {
    let (_, rules) = read.chain.as_ref()?;
    if !unhooked(&want.hooks, read).is_empty() || dormant(read) {
        return None;
    }
    let jumps: Vec<Vec<u8>> = read
        .heads
        .iter()
        .map(|h| h.first.as_ref().map(rule_bytes))
        .collect::<Option<_>>()?;
    let jump = jumps.first()?.clone();
    if jumps.iter().any(|j| *j != jump) || read.heads.len() != want.hooks.len() {
        return None;
    }
    Some(Reference {
        key: key(want),
        rules: rules.iter().map(rule_bytes).collect(),
        jump,
    })
}

/// What `iptables-nft-save` would have shown of our objects, derived from
/// the netlink read where the bytes decide (see the module doc); None
/// where they cannot, or when `want` is None (removal needs the full
/// picture: other rules and policies of the hook chains).
/// The head chains of `read` are `want`'s hooks, in order.
pub fn derive(want: Option<&IptDesired>, reference: Option<&Reference>, read: &ChainRead) -> Option<IptObserved> {
    let Some(want) = want else {
        // Nothing wanted and nothing of ours: in sync without more.
        return read.chain.is_none().then(IptObserved::default);
    };
    if read.heads.len() != want.hooks.len() {
        return None;
    }
    let reference = reference.filter(|r| r.key == key(want));
    let mut seen = IptObserved {
        unhooked: unhooked(&want.hooks, read),
        dormant: dormant(read),
        ..Default::default()
    };
    // How many rules jump to our chain.
    let jumps = match &read.chain {
        None => 0,
        Some((uses, rules)) => {
            if rules.is_empty() {
                seen.chain = Some(Vec::new());
            } else if reference.is_some_and(|r| {
                r.rules.len() == rules.len() && rules.iter().map(rule_bytes).eq(r.rules.iter().cloned())
            }) {
                seen.chain = Some(want.rules.clone());
            } else {
                return None;
            }
            uses.checked_sub(u32::try_from(rules.len()).ok()?)?
        }
    };
    if read.heads.iter().any(unreadable) {
        return None;
    }
    let mut at_top = 0u32;
    for (hook, head) in want.hooks.iter().zip(&read.heads) {
        let head = &head.first;
        let ours = match (head, reference) {
            (None, _) => false,
            (Some(rule), Some(r)) => rule_bytes(rule) == r.jump,
            // Nothing jumps to our chain: rule 1 cannot be our jump.
            (Some(_), None) if jumps == 0 => false,
            (Some(_), None) => return None,
        };
        if ours {
            at_top += 1;
            seen.jumps.insert(*hook, JumpState { at_top: true, count: 1 });
        } else {
            seen.jumps.insert(*hook, JumpState::default());
            if let Some(rule) = head {
                seen.top_rule.insert(*hook, foreign(rule));
            }
        }
    }
    // Every jump to our chain is one counted at rule 1 of a wanted hook:
    // none further down, none in another chain.
    (at_top == jumps).then_some(seen)
}

/// Where the bytes of a read whose text matched `want` differ from the
/// reference learnt for it (None: they do not, or the reference is for
/// another wanted state): "rule 2 of our chain", "our jump in FORWARD".
pub fn hidden_change(want: &IptDesired, reference: &Reference, read: &ChainRead) -> Option<String> {
    if reference.key != key(want) {
        return None;
    }
    if let Some((_, rules)) = &read.chain {
        if rules.len() != reference.rules.len() {
            return Some(format!(
                "our chain holds {} rules where we wrote {}",
                rules.len(),
                reference.rules.len()
            ));
        }
        if let Some(i) = rules
            .iter()
            .zip(&reference.rules)
            .position(|(r, want)| rule_bytes(r) != *want)
        {
            return Some(format!("rule {} of our chain", i + 1));
        }
    }
    want.hooks
        .iter()
        .zip(&read.heads)
        .find(|(_, head)| unreadable(head) || head.first.as_ref().is_some_and(|r| rule_bytes(r) != reference.jump))
        .map(|(hook, _)| format!("our jump in {}", hook.iptables_chain()))
}

/// How a foreign rule 1 is named without its text.
fn foreign(rule: &RuleMessage) -> String {
    let handle = rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Handle(h) => Some(*h),
        _ => None,
    });
    match handle {
        Some(h) => format!("a rule apiserver-guard did not write, nf_tables handle {h}"),
        None => "a rule apiserver-guard did not write".to_string(),
    }
}

#[cfg(test)]
#[path = "iptables_nft_read_tests.rs"]
mod tests;
