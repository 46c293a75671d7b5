//! `read_chain_and_heads`: one chain of a table and the first rule of some
//! others, without reading the rest of the table (what iptables-nft's
//! `iptables-nft-save` cannot do: it reads the whole table, seconds on a node
//! with 100,000 rules). GETTABLE (its flags: a dormant table runs nothing),
//! GETCHAIN naming the chain (its use count: how many
//! rules jump to it), a GETRULE dump naming the chain (the kernel walks that
//! chain alone) and, for each head chain, GETCHAIN naming it (is it hooked,
//! and where) and a GETRULE dump on a socket of its
//! own that is closed after the first datagram: the kernel builds the next
//! part of a dump only when the reader asks for it, so a chain of 100,000
//! rules costs one datagram. The ruleset generation is read before and after;
//! a commit in between retries the read (bounded; then `Busy`).

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, NfTablesMessage, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};

use super::commit_watch::CommitWatch;
use super::dump::{family_name, generation, get_one, request};
use super::error::{NfnlError, NfnlErrorKind};
use super::frame::{self, Reply};
use super::socket::NfnlSocket;
use crate::core::nft_events::own_write_proven;

pub use crate::core::iptables_nft_read::{ChainRead, Head};

/// How many times a read torn by a concurrent commit is retried.
const ATTEMPTS: usize = 5;

/// Reads chain `chain` of `family`/`table` (use count and rules) and the
/// first rule of each chain in `heads`, all of one ruleset generation.
pub fn read_chain_and_heads(
    sock: &NfnlSocket,
    family: u8,
    table: &str,
    chain: &str,
    heads: &[&str],
) -> Result<ChainRead, NfnlError> {
    // Opened once a read was torn, before the next: it hears every commit
    // during the reads after it (none is opened when the first read is whole).
    let mut watch: Option<CommitWatch> = None;
    for _ in 0..ATTEMPTS {
        match read_once(sock, family, table, chain, heads)? {
            Attempt::Whole(read) => return Ok(read),
            Attempt::Interrupted => {}
            // Other agents committed during the read (kube-proxy's churn):
            // it holds all the same when none of those commits touched the
            // objects it read (the commits the kernel notified say so).
            Attempt::Torn { mut read, after } => {
                let before = read.generation;
                let untouched = watch
                    .as_mut()
                    .and_then(|w| w.until(after))
                    .is_some_and(|changes| own_write_proven(changes, family, before, after, |_| false));
                if untouched {
                    read.generation = after;
                    return Ok(read);
                }
            }
        }
        if watch.is_none() {
            watch = CommitWatch::open().ok();
        }
    }
    Err(NfnlError::new(
        libc::EBUSY,
        None,
        format!(
            "reading chain {chain} of table {} {table}: the ruleset changed during each of {ATTEMPTS} attempts",
            family_name(family)
        ),
    ))
}

/// One read attempt.
enum Attempt {
    /// Nothing was committed during the read.
    Whole(ChainRead),
    /// Commits came during the read: `read.generation` is the generation
    /// it began in, `after` the one it ended in.
    Torn { read: ChainRead, after: u32 },
    /// A dump was cut by a commit: nothing usable.
    Interrupted,
}

/// One attempt.
fn read_once(sock: &NfnlSocket, family: u8, table: &str, chain: &str, heads: &[&str]) -> Result<Attempt, NfnlError> {
    let mut buf = sock.lock();
    sock.drain(&mut buf);
    let what = format!("reading chain {chain} of table {} {table}", family_name(family));
    let before = generation(sock, &mut buf)?;
    let get_table = NfTablesMessage::GetTable(TableMessage {
        attributes: vec![TableAttribute::Name(table.into())],
    });
    let (table_flags, table_handle) = match get_one(sock, &mut buf, family, table, get_table, &what)? {
        Some(NfTablesMessage::NewTable(t)) => (
            Some(
                t.attributes
                    .iter()
                    .find_map(|a| match a {
                        TableAttribute::Flags(f) => Some(f.bits()),
                        _ => None,
                    })
                    .unwrap_or(0),
            ),
            t.attributes.iter().find_map(|a| match a {
                TableAttribute::Handle(h) => Some(*h),
                _ => None,
            }),
        ),
        _ => (None, None),
    };
    let uses = match get_one(sock, &mut buf, family, table, get_chain(table, chain), &what)? {
        Some(NfTablesMessage::NewChain(c)) => Some(
            c.attributes
                .iter()
                .find_map(|a| match a {
                    ChainAttribute::Use(n) => Some(*n),
                    _ => None,
                })
                .unwrap_or(0),
        ),
        _ => None,
    };
    let mut read = ChainRead {
        table_flags,
        table_handle,
        ..Default::default()
    };
    if let Some(uses) = uses {
        let part = request(sock, &mut buf, family, rules_of(table, chain), true, &what)?;
        if part.interrupted {
            return Ok(Attempt::Interrupted);
        }
        let rules = part
            .of_table(family, table)
            .into_iter()
            .filter_map(|m| match m {
                NfTablesMessage::NewRule(r) if names_chain(&r, chain) => Some(r),
                _ => None,
            })
            .collect();
        read.chain = Some((uses, rules));
    }
    for head in heads {
        let chain = match get_one(sock, &mut buf, family, table, get_chain(table, head), &what)? {
            Some(NfTablesMessage::NewChain(c)) => Some(c),
            _ => None,
        };
        let first = if chain.is_some() {
            first_rule(family, table, head)?
        } else {
            None
        };
        read.heads.push(Head { chain, first });
    }
    let after = generation(sock, &mut buf)?;
    read.generation = before;
    Ok(if before == after {
        Attempt::Whole(read)
    } else {
        Attempt::Torn { read, after }
    })
}

/// A GETCHAIN request naming one chain.
fn get_chain(table: &str, chain: &str) -> NfTablesMessage {
    NfTablesMessage::GetChain(ChainMessage {
        attributes: vec![ChainAttribute::Table(table.into()), ChainAttribute::Name(chain.into())],
    })
}

/// A GETRULE dump request for the rules of one chain.
fn rules_of(table: &str, chain: &str) -> NfTablesMessage {
    NfTablesMessage::GetRule(RuleMessage {
        attributes: vec![RuleAttribute::Table(table.into()), RuleAttribute::Chain(chain.into())],
    })
}

fn names_chain(rule: &RuleMessage, chain: &str) -> bool {
    rule.attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Chain(c) if c == chain))
}

/// The first rule of chain `chain` (None: the chain is empty or absent),
/// read on a socket of its own that is dropped, dump unfinished, as soon as
/// the first rule arrives.
fn first_rule(family: u8, table: &str, chain: &str) -> Result<Option<RuleMessage>, NfnlError> {
    let what = format!(
        "reading the first rule of chain {chain} of table {} {table}",
        family_name(family)
    );
    let sock = NfnlSocket::open().map_err(|e| NfnlError::io(&e, &what))?;
    let mut buf = sock.lock();
    // The kernel sizes a dump's datagrams by the largest receive the socket
    // has made (up to 32 KiB); on a fresh socket a rule longer than a page
    // would not fit and the dump would end empty. One small exchange first.
    generation(&sock, &mut buf)?;
    let seq = sock.reserve_seq(1);
    let mut bytes = Vec::with_capacity(64);
    frame::encode(
        &mut bytes,
        family,
        0,
        rules_of(table, chain),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    sock.send(&bytes).map_err(|e| NfnlError::io(&e, &what))?;
    loop {
        let n = sock.recv(&mut buf).map_err(|e| NfnlError::io(&e, &what))?;
        let replies = frame::parse_datagram_of(&buf[..n], Some(table)).map_err(|e| NfnlError {
            context: format!("{what}: {}", e.context),
            ..e
        })?;
        for reply in replies {
            if reply.seq() != seq {
                continue;
            }
            match reply {
                Reply::Object {
                    family: f,
                    msg: NfTablesMessage::NewRule(r),
                    ..
                } if f == family && names_chain(&r, chain) => return Ok(Some(r)),
                Reply::Done { errno: 0, .. } => return Ok(None),
                Reply::Done { errno, .. } | Reply::Ack { errno, .. } if errno != 0 => {
                    let e = NfnlError::new(errno, None, &what);
                    return if e.is(NfnlErrorKind::NotFound) {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
                _ => {}
            }
        }
    }
}
