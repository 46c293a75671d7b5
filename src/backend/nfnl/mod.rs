//! nf_tables over our own netlink socket, without the `nft` binary or a C
//! library: `NfnlSocket` (the socket; its port id is the owner identity),
//! `transact` (one batch = one kernel transaction, every message acked,
//! refusals typed and pointing at the message), `dump_table` (one table's
//! objects, consistent, filtered by the kernel), `table_handle`,
//! `read_chain_and_heads` (one chain and the first rules of others, for
//! iptables-nft),
//! `delete_table_if_empty` (refused by the kernel unless empty), `owner_support` (what table
//! ownership the kernel offers). Payloads are the
//! `netlink_packet_netfilter::nftables::NfTablesMessage` values the model
//! builds and reads; this module only moves them.

mod batch;
mod chain_read;
pub mod commit_watch;
mod dump;
mod error;
mod frame;
mod owner_process;
mod ownership;
mod socket;
pub mod subscribe;
mod table;

pub use batch::{default_flags, describe, transact, BatchMsg};
pub use chain_read::{read_chain_and_heads, ChainRead};
pub use dump::{chain_exists, chain_names, dump_table, family_name, table_handle, table_of, TableDump};
pub use error::{NfnlError, NfnlErrorKind};
pub use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
pub use owner_process::{describe_owner, owner_process, port_alive, OwnerProcess};
pub use ownership::{
    owner_support, table_flags, table_owner, Ownership, NFT_TABLE_F_DORMANT, NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST,
};
pub use socket::NfnlSocket;
pub use table::{delete_table_if_empty, TableFate};

/// nfproto families of `table inet|ip|ip6 ...`, defined once in the model.
pub use crate::core::nft_model::{NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6};

/// Receive buffer per exchange: the kernel fills dump datagrams up to 32 KiB
/// (more for one very large object); a larger datagram is reported, not cut.
const RECV_BUF: usize = 256 * 1024;
