//! Backends: thin adapters that install, read back and remove the one
//! `Blocklist` in a firewall. One file per backend, one place (`select`)
//! that picks the backend and says why.

pub mod detect;
pub mod exec;
pub mod iptables;
pub mod iptables_created;
pub mod iptables_legacy_raw;
pub mod iptables_reference;
pub mod meter_holders;
pub mod nfnl;
pub mod nftables;
pub mod select;

use crate::core::drift::Drift;
use crate::core::model::Blocklist;
use crate::core::nft_ownership::TableOwnership;
use crate::error::Result;

/// Packets and bytes counted by our rules, kept apart by what the rules do:
/// `blocked` (`block-...`, refused or dropped) and `audited` (`audit-...`,
/// `--action audit`: let through). Never summed: an audited packet was not blocked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCounters {
    pub blocked: (u64, u64),
    pub audited: (u64, u64),
}

/// What a look for rules of others sharing our kernel state found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedLook {
    /// One line per rule found.
    pub warnings: Vec<String>,
    /// What could not be read: the look is incomplete.
    pub problems: Vec<String>,
}

/// What every firewall backend offers. `status` reads back only our own
/// objects; `apply` changes nothing when `status` finds nothing to change.
pub trait Backend: Send + Sync {
    /// e.g. `nftables`, `iptables-nft`, `iptables-legacy`.
    fn name(&self) -> &'static str;
    /// Whether the kernel announces changes to this backend's objects (nf_tables
    /// change events); without them the daemon relies on its resync timer.
    fn emits_change_events(&self) -> bool {
        true
    }
    /// Whether a check in sync is proven byte for byte (false: iptables-nft
    /// without the learnt bytes of our rules, so the text read-back decides;
    /// the daemon then writes our objects again at its resync to learn them).
    fn proven(&self, _b: &Blocklist) -> bool {
        true
    }
    /// The payload `apply` sends to install the blocklist on a node that has none of it.
    fn render(&self, b: &Blocklist) -> String;
    /// Differences between the installed objects and the blocklist.
    fn status(&self, b: &Blocklist) -> Result<Vec<Drift>>;
    /// Installs or repairs atomically; returns whether anything was changed.
    fn apply(&self, b: &Blocklist) -> Result<bool>;
    /// Removes every object of ours; returns whether anything was there.
    fn remove(&self) -> Result<bool>;
    /// Whether any object of ours exists (cheap; used to find leftovers).
    fn present(&self) -> Result<bool>;
    /// Packets and bytes our blocking (and audit) rules have counted, where the backend can tell cheaply.
    fn packet_counters(&self) -> Result<Option<PacketCounters>> {
        Ok(None)
    }
    /// Rules of others that share kernel state with ours and can change
    /// what ours do (the iptables log rules' hashlimit tables, shared by
    /// name); None where nothing of ours is shared (no log rules, nftables).
    fn shared_state(&self, _b: &Blocklist) -> Option<SharedLook> {
        None
    }
    /// Keeps our objects owned by this process where the backend and the
    /// kernel can (the daemon calls it once); returns whether they will be,
    /// and the sentence for the log.
    fn take_ownership(&self, _setting: TableOwnership) -> Result<(bool, String)> {
        Ok((
            false,
            format!(
                "{} has no table ownership: foreign changes are repaired when seen",
                self.name()
            ),
        ))
    }
    /// Whether the last read found our objects held by this process.
    fn owned(&self) -> bool {
        false
    }
    /// The process that owns our objects, in words, as the last read found
    /// them (`status` reads first, so no second read is needed).
    fn owner(&self) -> Option<String> {
        None
    }
}
