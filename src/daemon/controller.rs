//! The daemon's check -> repair -> metrics -> readiness step, with the
//! firewall given as a parameter (`Firewall`): the reconciler in the
//! daemon, a fake in the unit tests below (drift, failure, busy), so this
//! logic is tested without root. The repair budget (`repair_budget.rs`)
//! decides whether a repair runs now or at the next token.

use super::metrics::Metrics;
use super::reconciler::Reconciler;
use super::repair_budget::{Gate, RepairBudget, Spent, DEFAULT_BUDGET};
use super::trigger::Trigger;
use super::{unix_now, CONFLICT_LINE};
use crate::backend::PacketCounters;
use crate::core::drift::{describe, Drift};
use crate::core::policy::Action;
use crate::error::Result;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why `/readyz` says no while our objects read as in place but their bytes
/// could not be proven.
pub const UNPROVEN: &str = "our rules read as in place as iptables rules, but their bytes could not be verified: \
                            another process changed our objects around each of our writes (see the log); \
                            the next resync writes them again";
use std::time::Instant;

/// What the reconcile step needs of the firewall.
pub trait Firewall: Send + Sync + 'static {
    /// Reads back our objects and compares (no change); `thorough` also looks at the other backends.
    fn check(&self, thorough: bool) -> Result<Vec<Drift>>;
    /// Re-applies atomically and proves it with a read-back.
    fn repair(&self, thorough: bool) -> Result<()>;
    /// Packets and bytes our rules counted, where the backend can tell.
    fn counters(&self) -> Option<PacketCounters>;
    /// Whether our table is held by this process's socket.
    fn owned(&self) -> bool;
    /// The action of the enforced policy.
    fn action(&self) -> Action;
    /// Whether "in sync" is proven byte for byte (`Backend::proven`).
    fn proven(&self) -> bool {
        true
    }
}

impl Firewall for Reconciler {
    fn check(&self, thorough: bool) -> Result<Vec<Drift>> {
        Reconciler::check(self, thorough)
    }
    fn repair(&self, thorough: bool) -> Result<()> {
        Reconciler::repair(self, thorough)
    }
    fn counters(&self) -> Option<PacketCounters> {
        Reconciler::counters(self)
    }
    fn owned(&self) -> bool {
        self.backend.owned()
    }
    fn action(&self) -> Action {
        self.policy.action
    }
    fn proven(&self) -> bool {
        self.backend.proven(&self.blocklist)
    }
}

/// The repair budget, and whether the repair it deferred must be thorough
/// (a resync's: leftovers in the other backends too).
pub struct Deferral {
    pub budget: RepairBudget,
    pub thorough: bool,
}

/// Metrics and the last writer shared with the rest of the daemon, and the repair budget.
pub struct Controller {
    state: Arc<Mutex<Metrics>>,
    last_actor: Arc<Mutex<Option<String>>>,
    budget: Mutex<Deferral>,
}

impl Controller {
    pub fn new(state: Arc<Mutex<Metrics>>, last_actor: Arc<Mutex<Option<String>>>) -> Controller {
        Controller {
            state,
            last_actor,
            budget: Mutex::new(Deferral {
                budget: RepairBudget::new(DEFAULT_BUDGET, Instant::now()),
                thorough: false,
            }),
        }
    }

    pub fn budget(&self) -> MutexGuard<'_, Deferral> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn metrics(&self) -> MutexGuard<'_, Metrics> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One check (and repair if needed) through `fw`: metrics, readiness,
    /// the repair budget and the log lines follow from it. Returns whether
    /// it ended in sync, and whether the result is noteworthy (drift or an error).
    pub async fn reconcile(&self, fw: Arc<dyn Firewall>, trigger: Trigger, thorough: bool) -> (bool, bool) {
        let started = Instant::now();
        let f = fw.clone();
        let checked = tokio::task::spawn_blocking(move || f.check(thorough)).await;
        let mut spent: Option<Spent> = None;
        let result = match checked {
            // The first apply runs even when everything reads as in place: it
            // is idempotent, and it is how a backend that could not verify what
            // it read (iptables-nft without its learnt bytes) makes it its own.
            // Likewise at each resync while "in sync" rests on the text alone
            // (the bytes could not be learnt, e.g. another agent committed
            // around every write): writing again is how they get learnt.
            Ok(Ok(drift))
                if drift.is_empty() && (trigger == Trigger::Start || (trigger == Trigger::Timer && !fw.proven())) =>
            {
                let f = fw.clone();
                match tokio::task::spawn_blocking(move || f.repair(thorough)).await {
                    Ok(Ok(())) => Ok(None),
                    Ok(Err(e)) => Err(format!("first apply failed: {e}")),
                    Err(e) => Err(format!("first apply task failed: {e}")),
                }
            }
            Ok(Ok(drift)) if drift.is_empty() => Ok(None),
            Ok(Ok(drift)) => {
                let what = describe(&drift);
                {
                    let mut m = self.metrics();
                    m.in_sync = false;
                    m.not_ready_reason = what.clone();
                }
                if trigger.budgeted() {
                    let now = Instant::now();
                    let mut b = self.budget();
                    match b.budget.gate(now) {
                        Gate::Now => spent = Some(b.budget.spend(now)),
                        Gate::Wait(_) => {
                            // Not dropped: `due` runs it at the next token.
                            b.thorough |= thorough;
                            drop(b);
                            let mut m = self.metrics();
                            *m.reconciles.entry(trigger.as_str().to_string()).or_default() += 1;
                            m.observe_duration(started.elapsed());
                            return (false, false);
                        }
                    }
                }
                let f = fw.clone();
                match tokio::task::spawn_blocking(move || f.repair(thorough)).await {
                    Ok(Ok(())) => Ok(Some(drift)),
                    Ok(Err(e)) => Err(format!("{what}; repair failed: {e}")),
                    Err(e) => Err(format!("{what}; repair task failed: {e}")),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("check task failed: {e}")),
        };
        let elapsed = started.elapsed();
        let counters = if thorough {
            let f = fw.clone();
            tokio::task::spawn_blocking(move || f.counters()).await.unwrap_or(None)
        } else {
            None
        };
        let owned = fw.owned();
        let mut m = self.metrics();
        m.table_owned = owned;
        *m.reconciles.entry(trigger.as_str().to_string()).or_default() += 1;
        m.observe_duration(elapsed);
        if let Some(c) = counters {
            (m.blocked_packets, m.blocked_bytes) = c.blocked;
            (m.audited_packets, m.audited_bytes) = c.audited;
        }
        m.action = fw.action();
        let noteworthy = !matches!(result, Ok(None));
        let actor = || {
            let actor = self.last_actor.lock().unwrap_or_else(|p| p.into_inner()).clone();
            actor.unwrap_or_else(|| "unknown (no change event seen)".into())
        };
        // In a repair conflict one line a minute replaces a line per repair
        // (a drift not seen yet in the conflict still has its own).
        let in_conflict = spent.is_some_and(|s| s.in_conflict);
        if let Some(s) = spent {
            self.conflict_report(&mut m, s, &actor());
        }
        if matches!(result, Ok(None)) {
            if let Some(c) = self.budget().budget.settled(Instant::now()) {
                m.repair_conflict = None;
                log::info!(
                    deferred = c.deferred;
                    "repair conflict over after {:.1} s: the block stayed in place for {} after the last repair \
                     ({} repairs had to wait); repairs run at once again",
                    c.lasted.as_secs_f64(), DEFAULT_BUDGET.every(), c.deferred
                );
            }
        }
        let ok = match result {
            // In place as read, but the bytes could not be proven (another
            // process changed our objects around each write that would have
            // taught them): not "in sync", which would rest on text that
            // cannot show a hidden match.
            Ok(_) if !fw.proven() => {
                m.in_sync = false;
                m.not_ready_reason = UNPROVEN.to_string();
                true
            }
            Ok(repaired) => {
                m.in_sync = true;
                m.last_success_unix = unix_now();
                m.not_ready_reason.clear();
                if trigger.applies_policy() {
                    let verb = if repaired.is_some() {
                        "installed"
                    } else {
                        "already in place"
                    };
                    log::info!(trigger = trigger.as_str(); "block {verb} ({:.1} ms)", elapsed.as_secs_f64() * 1000.0);
                } else if let Some(drift) = repaired {
                    let kind = drift[0].kind;
                    *m.repairs.entry(kind.as_str().to_string()).or_default() += 1;
                    let actor = actor();
                    let what = describe(&drift);
                    if !in_conflict || self.budget().budget.news(&what) {
                        log::warn!(
                            cause = kind.as_str(), trigger = trigger.as_str(), last_writer = actor.as_str(),
                            repair_ms = elapsed.as_secs_f64() * 1000.0;
                            "repaired drift in {:.1} ms: {} (likely: {}; last writer of our objects: {})",
                            elapsed.as_secs_f64() * 1000.0, what, kind.likely_cause(), actor
                        );
                    }
                }
                true
            }
            Err(e) => {
                m.in_sync = false;
                m.reconcile_errors += 1;
                m.not_ready_reason = e.clone();
                // In a conflict the other process undoing a repair before its
                // read-back is expected: counted, and told by the conflict line.
                if !in_conflict {
                    log::error!(trigger = trigger.as_str(); "check/repair failed: {e}");
                }
                false
            }
        };
        drop(m);
        (ok, noteworthy)
    }

    /// After a repair the budget let run: counts it if it had been deferred,
    /// keeps `/readyz` naming the other process while the conflict lasts, and
    /// writes the conflict line when one is due (at most once a minute).
    fn conflict_report(&self, m: &mut Metrics, s: Spent, actor: &str) {
        if s.deferred {
            m.repair_conflicts += 1;
        }
        if !s.in_conflict {
            return;
        }
        m.repair_conflict = Some(actor.to_string());
        let Some(r) = s.report else { return };
        let b = DEFAULT_BUDGET;
        let every = b.every();
        if r.first {
            log::warn!(
                last_writer = actor, conflict_deferred = r.deferred;
                "{CONFLICT_LINE}{actor}: the block is removed again faster than the daemon may repair it \
                 ({} repairs at once, then one per {every}); repairing once per {every} until it stops, so pods \
                 may get through for up to {every} each time. Find that process and make it leave our objects \
                 alone (this line repeats at most once a minute; /readyz says 503 meanwhile)",
                b.burst
            );
        } else {
            log::warn!(
                last_writer = actor, conflict_repairs = r.repairs, conflict_deferred = r.deferred;
                "{CONFLICT_LINE}{actor}: {} repairs ({} of them deferred) since the last such line, conflict for \
                 {:.0} s; still repairing once per {every}",
                r.repairs, r.deferred, r.lasted.as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
