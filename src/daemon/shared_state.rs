//! The daemon's look for rules of others that share kernel state with ours
//! (`Backend::shared_state_warnings`: the iptables log rules' hashlimit
//! tables, shared by name): run in the background, since it reads every
//! iptables table with the tools and must never hold up a check or a
//! repair; one at a time; the count in the metrics, a warning line for each
//! rule whenever what is found changes, a line when they are gone.

use super::metrics::Metrics;
use super::reconciler::Reconciler;
use crate::backend::SharedLook;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the daemon looks (at most; at the resync after it).
pub const LOOK_EVERY: Duration = Duration::from_secs(60);

/// What the last look found, and whether one is under way.
#[derive(Default)]
pub struct SharedStateWatch {
    last: Mutex<Seen>,
    busy: AtomicBool,
    started: Mutex<Option<Instant>>,
}

/// The warnings of the last complete look, and the problems of the last look.
#[derive(Default)]
struct Seen {
    warnings: Vec<String>,
    problems: Vec<String>,
}

impl SharedStateWatch {
    /// Whether a look is due (none yet, or the last started `LOOK_EVERY` ago).
    pub fn due(&self) -> bool {
        lock(&self.started).is_none_or(|t| t.elapsed() >= LOOK_EVERY)
    }

    /// Starts a look at `rec`'s objects in the background, unless one is under way.
    pub fn look(self: &Arc<Self>, rec: Arc<Reconciler>, state: Arc<Mutex<Metrics>>) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        *lock(&self.started) = Some(Instant::now());
        let watch = self.clone();
        tokio::spawn(async move {
            let look = tokio::task::spawn_blocking(move || rec.backend.shared_state(&rec.blocklist))
                .await
                .unwrap_or_else(|e| {
                    Some(SharedLook {
                        warnings: Vec::new(),
                        problems: vec![format!("the look failed: {e}")],
                    })
                });
            watch.record(look, &state);
            watch.busy.store(false, Ordering::Release);
        });
    }

    /// One look's outcome: None, nothing of ours shared (the count 0,
    /// nothing said); a complete look replaces what was found (a line for
    /// each rule when that changes); an incomplete one says why once and
    /// only adds what it found (the last complete look stands).
    fn record(&self, look: Option<SharedLook>, state: &Mutex<Metrics>) {
        let mut seen = lock(&self.last);
        let Some(look) = look else {
            *seen = Seen::default();
            lock(state).foreign_meter_rules = 0;
            return;
        };
        if look.problems != seen.problems && !look.problems.is_empty() {
            log::warn!(
                "could not look at every iptables table for rules naming our hashlimit tables ({}); \
                 what the last complete look found stands",
                look.problems.join("; ")
            );
        }
        let complete = look.problems.is_empty();
        seen.problems = look.problems;
        let found = if complete {
            look.warnings
        } else {
            let mut kept = seen.warnings.clone();
            kept.extend(look.warnings.into_iter().filter(|w| !seen.warnings.contains(w)));
            kept
        };
        lock(state).foreign_meter_rules = found.len() as u64;
        if found == seen.warnings {
            return;
        }
        for w in found.iter().filter(|w| !seen.warnings.contains(w)) {
            log::warn!("{w}");
        }
        if found.is_empty() {
            log::info!(
                "no rule of others names our hashlimit tables any more; a table such a rule created keeps its \
                 size while our log rules name it (README, Troubleshooting)"
            );
        }
        seen.warnings = found;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(warnings: &[&str], problems: &[&str]) -> Option<SharedLook> {
        Some(SharedLook {
            warnings: warnings.iter().map(|s| s.to_string()).collect(),
            problems: problems.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn complete_looks_replace_incomplete_ones_add_and_none_clears() {
        let w = SharedStateWatch::default();
        let state = Mutex::new(Metrics::new("test"));
        let count = || lock(&state).foreign_meter_rules;
        assert!(w.due());
        w.record(look(&["a", "b"], &[]), &state);
        assert_eq!(count(), 2);
        // An incomplete look that found nothing leaves what the complete one found.
        w.record(look(&[], &["iptables-nft-save: killed"]), &state);
        assert_eq!(count(), 2);
        assert_eq!(lock(&w.last).warnings, ["a", "b"]);
        // ... and adds what it did find.
        w.record(look(&["c"], &["iptables-nft-save: killed"]), &state);
        assert_eq!(count(), 3);
        // A complete look decides.
        w.record(look(&["c"], &[]), &state);
        assert_eq!(count(), 1);
        assert!(lock(&w.last).problems.is_empty());
        w.record(None, &state);
        assert_eq!(count(), 0);
        assert!(lock(&w.last).warnings.is_empty());
        *lock(&w.started) = Some(Instant::now());
        assert!(!w.due(), "looked just now");
    }
}
