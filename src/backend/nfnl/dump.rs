//! `dump_table`: everything the kernel holds for one table, read with
//! requests that name the table so the kernel filters for us: GETTABLE
//! (single reply; an absent table is `table: None`), GETSET and GETRULE dumps
//! carrying NFTA_SET_TABLE / NFTA_RULE_TABLE (the kernel skips other
//! tables' sets and rules without encoding them), GETCHAIN (the kernel has
//! no table filter for chain dumps; the family filter leaves other tables of
//! the same family, dropped here), and GETSETELEM per set. Every kind is
//! filtered here again by table name, so an older kernel that ignores a
//! filter attribute cannot mix in foreign objects.
//!
//! The parts are separate dumps, so a commit between them could give a
//! torn picture: the ruleset generation (GETGEN) is read before and after,
//! and a change, or a dump part flagged NLM_F_DUMP_INTR, retries the whole
//! read (bounded; then `Busy`). One tear the generation cannot show: the
//! table-filtered rule dump may read a table that a running commit is
//! replacing (see `dump_once`); chains with no rule at all are therefore
//! read again family-wide.

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, GenAttribute, GenMessage, NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute,
    SetElementList, SetElementMessage, SetMessage, TableAttribute, TableMessage,
};

use super::error::{NfnlError, NfnlErrorKind};
use super::frame::{self, Reply};
use super::socket::NfnlSocket;
use crate::core::nft_model::SET_F_EVAL;

/// How many times a read torn by a concurrent commit is retried.
const ATTEMPTS: usize = 5;

/// The kernel's objects of one table, as the kernel reports them (plain data,
/// defined in the pure core where it is decoded).
pub use crate::core::nft_decode::TableDump;

/// Reads table `family`/`table` whole and consistently (one ruleset generation).
pub fn dump_table(sock: &NfnlSocket, family: u8, table: &str) -> Result<TableDump, NfnlError> {
    let mut buf = sock.lock();
    for _ in 0..ATTEMPTS {
        if let Some(dump) = dump_once(sock, &mut buf, family, table)? {
            return Ok(dump);
        }
    }
    Err(NfnlError::new(
        libc::EBUSY,
        None,
        format!(
            "reading table {} {table}: the ruleset changed during each of {ATTEMPTS} attempts",
            family_name(family)
        ),
    ))
}

/// Whether chain `chain` exists in table `family`/`table`: one GETCHAIN
/// naming it (the kernel answers for that chain alone, however large the
/// table), so a presence check costs one round trip.
pub fn chain_exists(sock: &NfnlSocket, family: u8, table: &str, chain: &str) -> Result<bool, NfnlError> {
    let get = NfTablesMessage::GetChain(ChainMessage {
        attributes: vec![ChainAttribute::Table(table.into()), ChainAttribute::Name(chain.into())],
    });
    let what = format!("reading chain {chain} of table {} {table}", family_name(family));
    exists(sock, family, table, get, &what)
}

/// The handle of table `family`/`table`, None when it does not exist: one
/// GETTABLE naming it (one round trip, nothing of the table's contents is
/// sent). The handle tells one instance of a table from a later table of
/// the same name (handles are never reused within a network namespace).
pub fn table_handle(sock: &NfnlSocket, family: u8, table: &str) -> Result<Option<u64>, NfnlError> {
    let get = NfTablesMessage::GetTable(TableMessage {
        attributes: vec![TableAttribute::Name(table.into())],
    });
    let what = format!("reading table {} {table}", family_name(family));
    let mut buf = sock.lock();
    sock.drain(&mut buf);
    let Some(NfTablesMessage::NewTable(t)) = get_one(sock, &mut buf, family, table, get, &what)? else {
        return Ok(None);
    };
    t.attributes
        .iter()
        .find_map(|a| match a {
            TableAttribute::Handle(h) => Some(Some(*h)),
            _ => None,
        })
        .ok_or_else(|| NfnlError::malformed(format!("{what}: the reply has no handle")))
}

/// One GET naming an object of table `family`/`table`: whether the kernel
/// answered with it (NotFound: it does not exist).
fn exists(sock: &NfnlSocket, family: u8, table: &str, get: NfTablesMessage, what: &str) -> Result<bool, NfnlError> {
    let mut buf = sock.lock();
    sock.drain(&mut buf);
    Ok(get_one(sock, &mut buf, family, table, get, what)?.is_some())
}

/// One GET naming an object of table `family`/`table` (on a socket the
/// caller holds): the kernel's answer, None when the object does not exist.
pub(super) fn get_one(
    sock: &NfnlSocket,
    buf: &mut [u8],
    family: u8,
    table: &str,
    get: NfTablesMessage,
    what: &str,
) -> Result<Option<NfTablesMessage>, NfnlError> {
    match request(sock, buf, family, get, false, what) {
        Ok(part) => Ok(part.of_table(family, table).into_iter().next()),
        Err(e) if e.is(NfnlErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names of the chains of table `family`/`table` (none when it does
/// not exist): one GETCHAIN dump; the kernel sends the family's chains and
/// those of other tables are skipped undecoded, so the size of the rules
/// (or of other tables) costs nothing. A dump torn by a commit is retried.
pub fn chain_names(sock: &NfnlSocket, family: u8, table: &str) -> Result<Vec<String>, NfnlError> {
    let mut buf = sock.lock();
    let what = format!("reading the chains of table {} {table}", family_name(family));
    for _ in 0..ATTEMPTS {
        sock.drain(&mut buf);
        let get = NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(table.into())],
        });
        let part = match request(sock, &mut buf, family, get, true, &what) {
            Ok(part) => part,
            Err(e) if e.is(NfnlErrorKind::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if part.interrupted {
            continue;
        }
        return Ok(part
            .of_table(family, table)
            .iter()
            .filter_map(|m| match m {
                NfTablesMessage::NewChain(c) => c.attributes.iter().find_map(|a| match a {
                    ChainAttribute::Name(n) => Some(n.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect());
    }
    Err(NfnlError::new(
        libc::EBUSY,
        None,
        format!("{what}: the ruleset changed during each of {ATTEMPTS} attempts"),
    ))
}

/// One attempt; `None` when the ruleset changed meanwhile.
fn dump_once(sock: &NfnlSocket, buf: &mut [u8], family: u8, table: &str) -> Result<Option<TableDump>, NfnlError> {
    sock.drain(buf);
    let what = |part: &str| format!("reading {part} of table {} {table}", family_name(family));
    let before = generation(sock, buf)?;
    let get_table = NfTablesMessage::GetTable(TableMessage {
        attributes: vec![TableAttribute::Name(table.into())],
    });
    let table_msg = match request(sock, buf, family, get_table, false, &what("the table")) {
        Ok(part) => part.of_table(family, table).into_iter().next(),
        Err(e) if e.is(NfnlErrorKind::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut dump = TableDump::default();
    let mut torn = false;
    if table_msg.is_some() {
        dump.table = table_msg;
        let get_chains = NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(table.into())],
        });
        let part = request(sock, buf, family, get_chains, true, &what("the chains"))?;
        torn |= part.interrupted;
        dump.chains = part.of_table(family, table);
        let get_sets = NfTablesMessage::GetSet(SetMessage {
            attributes: vec![SetAttribute::Table(table.into())],
        });
        let part = request(sock, buf, family, get_sets, true, &what("the sets"))?;
        torn |= part.interrupted;
        dump.sets = part.of_table(family, table);
        let get_rules = NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(table.into())],
        });
        let part = request(sock, buf, family, get_rules, true, &what("the rules"))?;
        torn |= part.interrupted;
        dump.rules = part.of_table(family, table);
        if dump.rules.is_empty() && !dump.chains.is_empty() {
            // The kernel's rule dump filtered by table name stops at the
            // first table of that name, active or not: inside a commit that
            // deletes and re-creates the table (after the generation flip,
            // before the old table is unlinked) it reads the old table, none
            // of whose rules are active, while every other part (and GETGEN)
            // already sees the new one. Chains without a single rule are
            // read again by the family-wide dump, which skips inactive rules
            // table by table (costly on a large ruleset, so only here: our
            // table in sync always holds rules).
            let get_family_rules = NfTablesMessage::GetRule(RuleMessage { attributes: vec![] });
            let part = request(
                sock,
                buf,
                family,
                get_family_rules,
                true,
                &what("the rules (family-wide)"),
            )?;
            torn |= part.interrupted;
            dump.rules = part.of_table(family, table);
        }
        // A dynamic set's elements are the sources the packet path learnt
        // (the attempt meters): state, never compared, and up to 65,535 of
        // them, which the kernel dumps in time quadratic in their number
        // (each dump part walks the set from the start). They are not read.
        for set in dump.sets.iter().filter(|m| !is_dynamic(m)).filter_map(set_name) {
            let get_elems = NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![SetElementList::Table(table.into()), SetElementList::Set(set.into())],
            });
            match request(
                sock,
                buf,
                family,
                get_elems,
                true,
                &what(&format!("the elements of set {set}")),
            ) {
                Ok(part) => {
                    torn |= part.interrupted;
                    dump.elements.extend(part.of_table(family, table));
                }
                // The set went away after the set dump: the generation check retries.
                Err(e) if e.is(NfnlErrorKind::NotFound) => torn = true,
                Err(e) => return Err(e),
            }
        }
    }
    let after = generation(sock, buf)?;
    Ok((!torn && before == after).then_some(dump))
}

/// The replies to one request.
pub(super) struct Part {
    pub(super) msgs: Vec<(u8, NfTablesMessage)>,
    pub(super) interrupted: bool,
}

impl Part {
    /// The messages about `family`/`table` only.
    pub(super) fn of_table(self, family: u8, table: &str) -> Vec<NfTablesMessage> {
        self.msgs
            .into_iter()
            .filter(|(f, m)| *f == family && table_of(m) == Some(table))
            .map(|(_, m)| m)
            .collect()
    }
}

/// Sends one request and collects its replies: for a dump until NLMSG_DONE,
/// otherwise until the ack. Replies to other sequence numbers are stale and skipped.
pub(super) fn request(
    sock: &NfnlSocket,
    buf: &mut [u8],
    family: u8,
    msg: NfTablesMessage,
    dump: bool,
    what: &str,
) -> Result<Part, NfnlError> {
    let table = table_in_request(&msg).map(str::to_owned);
    let seq = sock.reserve_seq(1);
    let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    let mut bytes = Vec::with_capacity(64);
    frame::encode(&mut bytes, family, 0, msg, flags, seq);
    sock.send(&bytes).map_err(|e| NfnlError::io(&e, what))?;
    let mut part = Part {
        msgs: Vec::new(),
        interrupted: false,
    };
    loop {
        let n = sock.recv(buf).map_err(|e| NfnlError::io(&e, what))?;
        for reply in frame::parse_datagram_of(&buf[..n], table.as_deref()).map_err(|e| NfnlError {
            context: format!("{what}: {}", e.context),
            ..e
        })? {
            if reply.seq() != seq {
                continue;
            }
            match reply {
                Reply::Object {
                    family: f,
                    interrupted,
                    msg,
                    ..
                } => {
                    part.interrupted |= interrupted;
                    part.msgs.push((f, msg));
                }
                Reply::Done { errno, interrupted, .. } => {
                    part.interrupted |= interrupted;
                    if errno != 0 {
                        return Err(NfnlError::new(errno, None, what));
                    }
                    return Ok(part);
                }
                Reply::Ack { errno: 0, .. } if !dump => return Ok(part),
                Reply::Ack { errno, .. } if errno != 0 => return Err(NfnlError::new(errno, None, what)),
                _ => {}
            }
        }
    }
}

/// The table a dump request filters for.
fn table_in_request(msg: &NfTablesMessage) -> Option<&str> {
    match msg {
        NfTablesMessage::GetChain(c) => c.attributes.iter().find_map(|a| match a {
            ChainAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::GetSet(s) => s.attributes.iter().find_map(|a| match a {
            SetAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::GetRule(r) => r.attributes.iter().find_map(|a| match a {
            RuleAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::GetSetElement(e) => e.attributes.iter().find_map(|a| match a {
            SetElementList::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::GetTable(t) => t.attributes.iter().find_map(|a| match a {
            TableAttribute::Name(n) => Some(n.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

/// The ruleset generation id (bumped by every commit).
pub(super) fn generation(sock: &NfnlSocket, buf: &mut [u8]) -> Result<u32, NfnlError> {
    let get = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
    let what = "reading the ruleset generation";
    let part = request(sock, buf, 0, get, false, what)?;
    part.msgs
        .iter()
        .find_map(|(_, m)| match m {
            NfTablesMessage::NewGen(g) => g.attributes.iter().find_map(|a| match a {
                GenAttribute::Id(id) => Some(*id),
                _ => None,
            }),
            _ => None,
        })
        .ok_or_else(|| NfnlError::malformed(format!("{what}: no generation id in the reply")))
}

/// The table a chain, set, element or rule message belongs to.
pub fn table_of(msg: &NfTablesMessage) -> Option<&str> {
    match msg {
        NfTablesMessage::NewChain(c) => c.attributes.iter().find_map(|a| match a {
            ChainAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::NewSet(s) => s.attributes.iter().find_map(|a| match a {
            SetAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::NewRule(r) => r.attributes.iter().find_map(|a| match a {
            RuleAttribute::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::NewSetElement(e) => e.attributes.iter().find_map(|a| match a {
            SetElementList::Table(t) => Some(t.as_str()),
            _ => None,
        }),
        NfTablesMessage::NewTable(t) => t.attributes.iter().find_map(|a| match a {
            TableAttribute::Name(n) => Some(n.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

/// Whether a set message describes a dynamic set (`flags dynamic`: the
/// packet path adds its elements).
fn is_dynamic(msg: &NfTablesMessage) -> bool {
    match msg {
        NfTablesMessage::NewSet(s) => s.attributes.iter().any(|a| match a {
            SetAttribute::Flags(f) => f.bits() & SET_F_EVAL != 0,
            _ => false,
        }),
        _ => false,
    }
}

fn set_name(msg: &NfTablesMessage) -> Option<&str> {
    match msg {
        NfTablesMessage::NewSet(s) => s.attributes.iter().find_map(|a| match a {
            SetAttribute::Name(n) => Some(n.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

/// nft's name for an nfproto family.
pub fn family_name(family: u8) -> String {
    match family {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        f => format!("family {f}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_objects_are_dropped_by_table_name() {
        let ours = NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![ChainAttribute::Table("agtest".into()), ChainAttribute::Name("c".into())],
        });
        let foreign = NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![ChainAttribute::Table("filter".into()), ChainAttribute::Name("c".into())],
        });
        let rule = NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![RuleAttribute::Table("agtest".into())],
        });
        let part = Part {
            msgs: vec![(1, foreign), (1, ours.clone()), (2, ours.clone()), (1, rule.clone())],
            interrupted: false,
        };
        assert_eq!(part.of_table(1, "agtest"), vec![ours, rule]);
    }

    #[test]
    fn set_and_element_messages_name_their_table() {
        let set = NfTablesMessage::NewSet(SetMessage {
            attributes: vec![SetAttribute::Table("t".into()), SetAttribute::Name("s".into())],
        });
        assert_eq!((table_of(&set), set_name(&set)), (Some("t"), Some("s")));
        let elems = NfTablesMessage::NewSetElement(SetElementMessage {
            attributes: vec![SetElementList::Table("t".into()), SetElementList::Set("s".into())],
        });
        assert_eq!(table_of(&elems), Some("t"));
        assert_eq!(family_name(1), "inet");
        assert_eq!(family_name(42), "family 42");
    }
}
