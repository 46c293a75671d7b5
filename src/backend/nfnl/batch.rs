//! `transact`: one nf_tables batch = one kernel transaction. The messages go
//! between NFNL_MSG_BATCH_BEGIN and _END in one datagram (the kernel
//! processes a batch per datagram: a batch whose END is in another datagram
//! is aborted, so a batch is never split; the send buffer is grown to fit
//! instead, as nft does). Every message asks for an ack; the kernel
//! processes the whole batch, queues one ack or error per message, commits
//! only if none failed (else aborts: nothing of the batch is applied), and
//! then delivers the acks. We read until every sequence number is answered.
//!
//! Header flags per message (kernel net/netfilter/nf_tables_api.c):
//! - `NLM_F_REQUEST`: always (a request to the kernel).
//! - `NLM_F_ACK`: always here: answer even on success, so each message is
//!   accounted for (errors are reported either way).
//! - `NLM_F_CREATE`: create when absent. NEWTABLE creates without it too;
//!   NEWSET and NEWRULE refuse without it (ENOENT / EINVAL).
//! - `NLM_F_EXCL`: fail with EEXIST when the object exists. Without it,
//!   NEWTABLE on an existing table updates its flags (dormant, and persist
//!   on an owned table or an orphan being adopted), NEWCHAIN updates a
//!   chain's policy, NEWSET accepts an identical set, NEWSETELEM accepts an
//!   element already there.
//! - `NLM_F_APPEND` (NEWRULE): add after the position (at the chain's end
//!   without one); without it a rule is inserted at the chain's start.
//! - `NLM_F_REPLACE` (NEWRULE with a handle): replace that rule; NEWTABLE
//!   and NEWCHAIN refuse it on an existing object (EOPNOTSUPP).
//! - DEL* messages carry no creation flags; deleting an absent object is ENOENT.

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::NfTablesMessage;

use super::error::NfnlError;
use super::frame::{self, Reply};
use super::socket::NfnlSocket;

/// One message of a batch: the nf_tables payload, its family (nfgenmsg; our
/// table is `inet`, 1) and its creation flags (`NLM_F_CREATE`, `NLM_F_EXCL`,
/// `NLM_F_APPEND`, `NLM_F_REPLACE`; REQUEST and ACK are always added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMsg {
    pub family: u8,
    pub flags: u16,
    pub msg: NfTablesMessage,
}

impl BatchMsg {
    /// With the usual creation flags for its type (`default_flags`).
    pub fn new(family: u8, msg: NfTablesMessage) -> BatchMsg {
        BatchMsg {
            family,
            flags: default_flags(&msg),
            msg,
        }
    }

    /// Replaces the creation flags.
    pub fn with_flags(mut self, flags: u16) -> BatchMsg {
        self.flags = flags;
        self
    }

    /// Adds `NLM_F_EXCL`: refuse (EEXIST) instead of updating an existing object.
    pub fn exclusive(mut self) -> BatchMsg {
        self.flags |= NLM_F_EXCL;
        self
    }

    /// Every message of `msgs` in `family`, with default flags.
    pub fn all(family: u8, msgs: Vec<NfTablesMessage>) -> Vec<BatchMsg> {
        msgs.into_iter().map(|m| BatchMsg::new(family, m)).collect()
    }
}

/// The creation flags `nft add ...` uses: NEWTABLE/NEWCHAIN/NEWSET/NEWSETELEM
/// `NLM_F_CREATE` (create, or keep/update what exists), NEWRULE
/// `NLM_F_CREATE | NLM_F_APPEND` (append at the chain's end), others none.
pub fn default_flags(msg: &NfTablesMessage) -> u16 {
    match msg {
        NfTablesMessage::NewRule(_) => NLM_F_CREATE | NLM_F_APPEND,
        NfTablesMessage::NewTable(_)
        | NfTablesMessage::NewChain(_)
        | NfTablesMessage::NewSet(_)
        | NfTablesMessage::NewSetElement(_)
        | NfTablesMessage::NewObject(_)
        | NfTablesMessage::NewFlowTable(_) => NLM_F_CREATE,
        _ => 0,
    }
}

/// Plain words for a message type, for error messages.
pub fn describe(msg: &NfTablesMessage) -> &'static str {
    match msg {
        NfTablesMessage::NewTable(_) => "new table",
        NfTablesMessage::DeleteTable(_) => "delete table",
        NfTablesMessage::NewChain(_) => "new chain",
        NfTablesMessage::DeleteChain(_) => "delete chain",
        NfTablesMessage::NewRule(_) => "new rule",
        NfTablesMessage::DeleteRule(_) => "delete rule",
        NfTablesMessage::NewSet(_) => "new set",
        NfTablesMessage::DeleteSet(_) => "delete set",
        NfTablesMessage::NewSetElement(_) => "new set elements",
        NfTablesMessage::DeleteSetElement(_) => "delete set elements",
        _ => "other request",
    }
}

/// Sends `msgs` as one transaction; `Ok` once the kernel acknowledged every
/// message (the batch is committed). On refusal nothing of the batch is
/// applied and the error names the first refused message (`index`) and its
/// errno. An empty batch sends nothing.
pub fn transact(sock: &NfnlSocket, msgs: Vec<BatchMsg>) -> Result<(), NfnlError> {
    let results = transact_results(sock, &msgs)?;
    let refused: Vec<(usize, i32)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .collect();
    match refused.first() {
        None => Ok(()),
        Some(&(i, errno)) => {
            let more = match refused.len() - 1 {
                0 => String::new(),
                n => format!(" ({n} more refused)"),
            };
            let context = format!(
                "message {} of {} ({}) refused, nothing of the batch was applied{more}",
                i + 1,
                msgs.len(),
                describe(&msgs[i].msg)
            );
            Err(NfnlError::new(errno, Some(i), context))
        }
    }
}

/// Like `transact`, but returns each message's own answer (an errno for a
/// refused one); `Err` only when the batch as a whole failed or went
/// unanswered. Any refusal means the batch was aborted.
pub(crate) fn transact_results(sock: &NfnlSocket, msgs: &[BatchMsg]) -> Result<Vec<Result<(), i32>>, NfnlError> {
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = sock.lock();
    sock.drain(&mut buf);
    let first = sock.reserve_seq(msgs.len() as u32 + 2);
    let bytes = encode_batch(msgs, first);
    sock.send(&bytes).map_err(|e| {
        NfnlError::io(
            &e,
            format!("sending a batch of {} messages ({} bytes)", msgs.len(), bytes.len()),
        )
    })?;
    let mut acks = Acks::new(first, msgs.len());
    while !acks.finished() {
        let n = sock.recv(&mut buf).map_err(|e| {
            NfnlError::io(
                &e,
                format!(
                    "waiting for the acks of a batch of {} messages ({} unanswered; it may or may not be applied)",
                    msgs.len(),
                    acks.unanswered()
                ),
            )
        })?;
        for reply in frame::parse_datagram(&buf[..n])? {
            if let Reply::Ack { seq, errno } = reply {
                acks.record(seq, errno);
            }
        }
    }
    acks.outcome()
}

/// The batch bytes: BEGIN (seq `first`), message i (seq `first + 1 + i`), END.
pub(crate) fn encode_batch(msgs: &[BatchMsg], first: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * (msgs.len() + 2));
    frame::encode_delimiter(&mut out, true, first);
    for (i, m) in msgs.iter().enumerate() {
        let seq = first.wrapping_add(1 + i as u32);
        frame::encode(
            &mut out,
            m.family,
            0,
            m.msg.clone(),
            NLM_F_REQUEST | NLM_F_ACK | m.flags,
            seq,
        );
    }
    frame::encode_delimiter(&mut out, false, first.wrapping_add(msgs.len() as u32 + 1));
    out
}

/// Sequence bookkeeping for one batch: which messages are answered, how.
#[derive(Debug)]
pub(crate) struct Acks {
    first: u32,
    answers: Vec<Option<i32>>,
    unanswered: usize,
    /// An error addressed to BEGIN or END: the batch as a whole failed (no
    /// privilege, out of memory, the commit itself refused, e.g. ELOOP).
    batch_errno: Option<i32>,
}

impl Acks {
    pub(crate) fn new(first: u32, n: usize) -> Acks {
        Acks {
            first,
            answers: vec![None; n],
            unanswered: n,
            batch_errno: None,
        }
    }

    /// Records an answer; answers to other (stale) sequence numbers and
    /// repeated answers are ignored.
    pub(crate) fn record(&mut self, seq: u32, errno: i32) {
        let offset = seq.wrapping_sub(self.first) as usize;
        let n = self.answers.len();
        if offset == 0 || offset == n + 1 {
            if errno != 0 && self.batch_errno.is_none() {
                self.batch_errno = Some(errno);
            }
        } else if (1..=n).contains(&offset) {
            let slot = &mut self.answers[offset - 1];
            if slot.is_none() {
                *slot = Some(errno);
                self.unanswered -= 1;
            }
        }
    }

    pub(crate) fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// Done when every message is answered, or the batch failed as a whole
    /// (then per-message answers may never come).
    pub(crate) fn finished(&self) -> bool {
        self.unanswered == 0 || self.batch_errno.is_some()
    }

    pub(crate) fn outcome(&self) -> Result<Vec<Result<(), i32>>, NfnlError> {
        if let Some(errno) = self.batch_errno {
            return Err(NfnlError::new(
                errno,
                None,
                format!(
                    "the batch of {} messages was refused as a whole, nothing was applied",
                    self.answers.len()
                ),
            ));
        }
        Ok(self
            .answers
            .iter()
            .map(|a| match a.unwrap_or(0) {
                0 => Ok(()),
                e => Err(e),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::nfnl::error::NfnlErrorKind;
    use netlink_packet_netfilter::nftables::{
        ChainAttribute, ChainMessage, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
    };

    fn table(name: &str) -> NfTablesMessage {
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(name.into())],
        })
    }

    #[test]
    fn default_flags_follow_nft_add() {
        assert_eq!(default_flags(&table("t")), NLM_F_CREATE);
        let chain = NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![ChainAttribute::Name("c".into())],
        });
        assert_eq!(default_flags(&chain), NLM_F_CREATE);
        let rule = NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![RuleAttribute::Chain("c".into())],
        });
        assert_eq!(default_flags(&rule), NLM_F_CREATE | NLM_F_APPEND);
        let del = NfTablesMessage::DeleteTable(TableMessage { attributes: vec![] });
        assert_eq!(default_flags(&del), 0);
        assert_eq!(
            BatchMsg::new(1, table("t")).exclusive().flags,
            NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(BatchMsg::new(1, table("t")).with_flags(0).flags, 0);
    }

    #[test]
    fn batch_is_begin_messages_end_with_consecutive_seqs_and_acks() {
        let msgs = vec![BatchMsg::new(1, table("a")), BatchMsg::new(1, table("b")).exclusive()];
        let bytes = encode_batch(&msgs, 100);
        let mut seen = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
            seen.push((kind, flags, seq));
            rest = &rest[len..];
        }
        assert_eq!(
            seen,
            vec![
                (0x10, NLM_F_REQUEST, 100),
                (10 << 8, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 101),
                (10 << 8, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, 102),
                (0x11, NLM_F_REQUEST, 103),
            ]
        );
    }

    #[test]
    fn every_message_must_be_answered() {
        let mut acks = Acks::new(10, 3);
        acks.record(11, 0);
        acks.record(11, 0); // repeated
        acks.record(5, libc::ENOENT); // stale, from an earlier exchange
        acks.record(14, 0); // END without error: nothing
        assert!(!acks.finished());
        assert_eq!(acks.unanswered(), 2);
        acks.record(13, 0);
        acks.record(12, libc::ENOENT);
        assert!(acks.finished());
        assert_eq!(acks.outcome().unwrap(), vec![Ok(()), Err(libc::ENOENT), Ok(())]);
    }

    #[test]
    fn an_error_on_begin_fails_the_whole_batch_at_once() {
        let mut acks = Acks::new(u32::MAX, 2); // wraps: messages are 0 and 1, END 2
        acks.record(0, 0);
        assert!(!acks.finished());
        acks.record(u32::MAX, libc::EPERM);
        assert!(acks.finished());
        let e = acks.outcome().unwrap_err();
        assert_eq!((e.kind, e.index), (NfnlErrorKind::PermissionDenied, None));
    }

    #[test]
    fn seqs_wrap_around() {
        let mut acks = Acks::new(u32::MAX - 1, 3); // messages u32::MAX, 0, 1
        for seq in [u32::MAX, 0, 1] {
            acks.record(seq, 0);
        }
        assert!(acks.finished());
        assert_eq!(acks.outcome().unwrap().len(), 3);
    }
}
