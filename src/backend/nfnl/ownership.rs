//! Kernel table ownership: the flag constants, reading owner and flags back
//! from a table message, and `owner_support`, which asks the running kernel
//! what it supports.
//!
//! Why a probe and not the kernel version: `owner` arrived in 5.12 and
//! `persist` in 6.9, but distribution kernels backport (and a custom kernel
//! may lack nf_tables pieces), so a version number can lie either way. The
//! probe sends one batch that creates two throw-away tables with a name
//! unique to this socket, one flagged owner, one owner|persist, then deletes
//! them, then deletes the first again, which always fails (ENOENT): the
//! kernel answers every message and aborts the batch, so nothing is ever
//! committed (no generation bump, no change event, our real table never
//! named). A refused create means that flag is unsupported (older kernels
//! answer EOPNOTSUPP or EINVAL for unknown table flags). Should the last
//! delete somehow succeed, the batch deleted what it created.

use netlink_packet_netfilter::nftables::{NfTablesMessage, TableAttribute, TableFlags, TableMessage};

use super::batch::{transact_results, BatchMsg};
use super::error::NfnlError;
use super::socket::NfnlSocket;

/// Reading owner and flags back from a table message, defined once in the decoder.
pub use crate::core::nft_decode::{message_flags as table_flags, message_owner as table_owner};
/// The table flags, defined once in the model (`NFT_TABLE_F_*`).
pub use crate::core::nft_model::{
    TABLE_F_DORMANT as NFT_TABLE_F_DORMANT, TABLE_F_OWNER as NFT_TABLE_F_OWNER, TABLE_F_PERSIST as NFT_TABLE_F_PERSIST,
};

/// What the running kernel supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub owner: bool,
    pub persist: bool,
}

/// Probes the kernel (see the module doc); commits nothing.
pub fn owner_support(sock: &NfnlSocket) -> Result<Ownership, NfnlError> {
    let owned = format!("agprobe_{}_o", sock.port_id());
    let persisted = format!("agprobe_{}_p", sock.port_id());
    let results = transact_results(sock, &probe_batch(&owned, &persisted))?;
    Ok(Ownership {
        owner: results.first().is_some_and(|r| r.is_ok()),
        persist: results.get(1).is_some_and(|r| r.is_ok()),
    })
}

fn probe_batch(owned: &str, persisted: &str) -> Vec<BatchMsg> {
    const INET: u8 = 1;
    let new =
        |name: &str, flags: u32| BatchMsg::new(INET, NfTablesMessage::NewTable(table(name, Some(flags)))).exclusive();
    let del = |name: &str| BatchMsg::new(INET, NfTablesMessage::DeleteTable(table(name, None)));
    vec![
        new(owned, NFT_TABLE_F_OWNER),
        new(persisted, NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST),
        del(owned),
        del(persisted),
        // Deleted already: always ENOENT, so the kernel aborts the batch.
        del(owned),
    ]
}

fn table(name: &str, flags: Option<u32>) -> TableMessage {
    let mut attributes = vec![TableAttribute::Name(name.into())];
    if let Some(f) = flags {
        attributes.push(TableAttribute::Flags(TableFlags::from_bits_retain(f)));
    }
    TableMessage { attributes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_EXCL;

    #[test]
    fn owner_and_flags_come_from_the_table_attributes() {
        let raw = [
            // NFTA_TABLE_NAME "t", NFTA_TABLE_FLAGS 6, NFTA_TABLE_OWNER 4242 (big endian).
            6u8, 0, 1, 0, b't', 0, 0, 0, 8, 0, 2, 0, 0, 0, 0, 6, 8, 0, 7, 0, 0, 0, 0x10, 0x92,
        ];
        use netlink_packet_core::ParseableParametrized;
        let msg = NfTablesMessage::parse_with_param(&raw[..], 0).unwrap();
        assert_eq!(table_flags(&msg), Some(NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST));
        assert_eq!(table_owner(&msg), Some(4242));
        let orphan = NfTablesMessage::NewTable(table("t", Some(NFT_TABLE_F_PERSIST)));
        assert_eq!(table_owner(&orphan), None);
    }

    #[test]
    fn the_probe_batch_always_fails_at_its_last_message() {
        let b = probe_batch("a", "b");
        assert_eq!(b.len(), 5);
        assert!(b[..2].iter().all(|m| m.flags & NLM_F_EXCL != 0));
        assert_eq!(table_flags(&b[1].msg), Some(NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST));
        assert_eq!(b[4], b[2], "the first table is deleted twice");
    }
}
