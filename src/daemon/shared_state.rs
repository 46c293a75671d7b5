//! The daemon's look for rules of others that share kernel state with ours
//! (`Backend::shared_state_warnings`: the iptables log rules' hashlimit
//! tables, shared by name): run in the background, since it reads every
//! iptables table with the tools and must never hold up a check or a
//! repair; one at a time; the count in the metrics, a warning line for each
//! rule whenever what is found changes, a line when they are gone.

use super::metrics::Metrics;
use super::reconciler::Reconciler;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the daemon looks (at most; at the resync after it).
pub const LOOK_EVERY: Duration = Duration::from_secs(60);

/// What the last look found, and whether one is under way.
#[derive(Default)]
pub struct SharedStateWatch {
    last: Mutex<Vec<String>>,
    busy: AtomicBool,
    started: Mutex<Option<Instant>>,
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
            let found = tokio::task::spawn_blocking(move || rec.backend.shared_state_warnings(&rec.blocklist))
                .await
                .unwrap_or_default();
            watch.record(found, &state);
            watch.busy.store(false, Ordering::Release);
        });
    }

    fn record(&self, found: Vec<String>, state: &Mutex<Metrics>) {
        lock(state).foreign_meter_rules = found.len() as u64;
        let mut last = lock(&self.last);
        if *last == found {
            return;
        }
        for w in &found {
            log::warn!("{w}");
        }
        if found.is_empty() {
            log::info!("no rule of others names our hashlimit tables any more");
        }
        *last = found;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_recorded_and_the_count_kept() {
        let w = SharedStateWatch::default();
        let state = Mutex::new(Metrics::new("test"));
        assert!(w.due());
        w.record(vec!["a".into(), "b".into()], &state);
        assert_eq!(lock(&state).foreign_meter_rules, 2);
        assert_eq!(*lock(&w.last), ["a", "b"]);
        w.record(Vec::new(), &state);
        assert_eq!(lock(&state).foreign_meter_rules, 0);
        assert!(lock(&w.last).is_empty());
        *lock(&w.started) = Some(Instant::now());
        assert!(!w.due(), "looked just now");
    }
}
