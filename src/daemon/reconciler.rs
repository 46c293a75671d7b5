//! The reconcile steps, synchronous (they run tools): `check` reads back our
//! objects; only when they differ does the controller call `repair`, which
//! re-applies atomically and reads back again. A check with nothing to change
//! changes nothing (counters and handles stay as they are).

use crate::backend::exec::SYSTEM;
use crate::backend::select::{leftovers, remove_from_all, remove_others, select_usable};
use crate::backend::Backend;
use crate::core::drift::{describe, Drift};
use crate::core::model::Blocklist;
use crate::core::policy::Policy;
use crate::error::{Error, Result};
use std::sync::Arc;

pub struct Reconciler {
    pub policy: Policy,
    pub blocklist: Blocklist,
    pub backend: Arc<dyn Backend>,
    /// Why this backend was chosen.
    pub why: String,
}

impl Reconciler {
    pub fn new(policy: Policy, blocklist: Blocklist) -> Result<Reconciler> {
        let (backend, why) = select_usable(policy.backend, &SYSTEM)?;
        Ok(Reconciler {
            policy,
            blocklist,
            backend: Arc::from(backend),
            why,
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
        self.backend.install(&self.blocklist)?;
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

    /// Packets and bytes our rules blocked, where the backend counts them.
    pub fn counters(&self) -> Option<(u64, u64)> {
        self.backend.blocked_counters().unwrap_or(None)
    }

    /// Removes everything of ours from every backend (`--cleanup-on-exit`).
    pub fn remove_everything(&self) -> Result<()> {
        remove_from_all(&SYSTEM, None).map(|_| ()).map_err(|(_, e)| e)
    }
}
