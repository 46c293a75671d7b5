//! The reconcile steps, synchronous (they run tools): `check` reads back our
//! objects; only when they differ does the controller call `repair`, which
//! re-applies atomically and reads back again. A check with nothing to change
//! changes nothing (counters and handles stay as they are).

use crate::backend::exec::SYSTEM;
use crate::backend::select::{leftovers, remove_from_all, remove_others, select_usable};
use crate::backend::{Backend, PacketCounters};
use crate::core::drift::{describe, Drift};
use crate::core::model::Blocklist;
use crate::core::nft_ownership::TableOwnership;
use crate::core::policy::Policy;
use crate::error::{Error, Result};
use std::sync::Arc;

pub struct Reconciler {
    pub policy: Policy,
    pub blocklist: Blocklist,
    pub backend: Arc<dyn Backend>,
    /// Why this backend was chosen.
    pub why: String,
    /// Whether our table is kept owned by this process, and why (or why not).
    pub ownership: (bool, String),
}

impl Reconciler {
    /// Picks the backend for `policy` and makes it keep its table owned
    /// as `ownership` allows (probing the kernel, committing nothing).
    pub fn new(policy: Policy, blocklist: Blocklist, ownership: TableOwnership) -> Result<Reconciler> {
        let (backend, why) = select_usable(policy.backend, &SYSTEM)?;
        let ownership = backend.take_ownership(ownership)?;
        Ok(Reconciler {
            policy,
            blocklist,
            backend: Arc::from(backend),
            why,
            ownership,
        })
    }

    /// The same backend with another policy (a discovery change: no new
    /// backend detection, no new event source).
    pub fn with_policy(&self, policy: Policy, blocklist: Blocklist) -> Reconciler {
        Reconciler {
            policy,
            blocklist,
            backend: self.backend.clone(),
            why: self.why.clone(),
            ownership: self.ownership.clone(),
        }
    }

    /// Reads back our objects and compares (no change). `thorough` also
    /// looks for our objects in the backends not in use.
    pub fn check(&self, thorough: bool) -> Result<Vec<Drift>> {
        let mut drift = self.backend.status(&self.blocklist)?;
        if thorough {
            drift.extend(leftovers(self.backend.as_ref(), &SYSTEM));
        }
        Ok(drift)
    }

    /// Re-applies atomically and proves it with a read-back; `thorough` also
    /// clears leftovers in the other backends.
    pub fn repair(&self, thorough: bool) -> Result<()> {
        self.backend.apply(&self.blocklist)?;
        let left = self.backend.status(&self.blocklist)?;
        if !left.is_empty() {
            return Err(Error::runtime(format!(
                "repair with {} did not take: {}",
                self.backend.name(),
                describe(&left)
            )));
        }
        if thorough {
            remove_others(self.backend.as_ref(), &SYSTEM)?;
        }
        Ok(())
    }

    /// Packets and bytes our rules blocked (and audited), where the backend counts them.
    pub fn counters(&self) -> Option<PacketCounters> {
        self.backend.packet_counters().unwrap_or(None)
    }

    /// Removes everything of ours from every backend (`--cleanup-on-exit`):
    /// first through our own backend (the socket that owns the table), then
    /// whatever another backend still holds.
    pub fn remove_everything(&self) -> Result<()> {
        self.backend.remove()?;
        remove_from_all(&SYSTEM, None).map(|_| ()).map_err(|(_, e)| e)
    }
}
