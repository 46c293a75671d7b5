//! `delete_table_if_empty`: deletes one nf_tables table, named by its handle
//! (that instance, not a later table of the same name), only when it holds
//! nothing (no chain, set, object or flowtable), decided by the kernel in the
//! same transaction: DELTABLE carries `NLM_F_NONREC`, so a table that is in
//! use is refused with EBUSY instead of being flushed (without the flag the
//! kernel deletes a table with everything in it). Nothing can slip into the
//! table between a check and the delete, because there is no separate check.

use netlink_packet_netfilter::nftables::{NfTablesMessage, TableAttribute, TableMessage};

use super::batch::{transact, BatchMsg};
use super::error::{NfnlError, NfnlErrorKind};
use super::socket::NfnlSocket;

/// `NLM_F_NONREC` (linux/netlink.h): do not delete recursively.
const NLM_F_NONREC: u16 = 0x100;

/// What became of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFate {
    Deleted,
    /// It holds something (the kernel refused with EBUSY): left alone.
    InUse,
    /// No table has that handle (deleted, perhaps replaced by another of the same name).
    Absent,
}

/// Deletes the table of family `family` with handle `handle` if, and only
/// if, it is empty.
pub fn delete_table_if_empty(sock: &NfnlSocket, family: u8, handle: u64) -> Result<TableFate, NfnlError> {
    let del = NfTablesMessage::DeleteTable(TableMessage {
        attributes: vec![TableAttribute::Handle(handle)],
    });
    match transact(sock, vec![BatchMsg::new(family, del).with_flags(NLM_F_NONREC)]) {
        Ok(()) => Ok(TableFate::Deleted),
        Err(e) if e.is(NfnlErrorKind::Busy) => Ok(TableFate::InUse),
        Err(e) if e.is(NfnlErrorKind::NotFound) => Ok(TableFate::Absent),
        Err(e) => Err(e),
    }
}
