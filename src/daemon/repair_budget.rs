//! The repair budget: how often the daemon may repair the block, so that a
//! fight with another agent that keeps undoing it cannot become a busy loop
//! (kube-proxy's `BoundedFrequencyRunner` is the model). A token bucket: a
//! burst of `burst` repairs at once (the usual case: one firewall reload, one
//! repair, no wait), then one more per `interval`. A repair wanted while the
//! bucket is empty is never dropped: it is *deferred* to the instant the next
//! token comes (`due`), so the block is back at most one interval after the
//! other agent stops.
//!
//! A deferred repair that still finds drift when it runs puts the daemon in
//! *conflict* (someone undoes the block faster than the budget allows):
//! counted, reported by `/readyz`, and logged at most once per `log_every`
//! instead of one line per repair: within a conflict a repair has a line of
//! its own only the first time its drift is seen (`news`), so a new kind of
//! damage is still told, the same one undone again and again is not. The
//! conflict clears at the first check that finds the block in place at least
//! one interval after the last repair (the daemon schedules that check: `due`).
//!
//! Pure: every decision takes the time as an argument, so the unit tests below
//! drive it with a fake clock.

use std::time::{Duration, Instant};

/// The budget's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Repairs allowed at once, with a full bucket.
    pub burst: u32,
    /// One more repair per interval once the burst is spent.
    pub interval: Duration,
    /// At most one conflict log line per this long.
    pub log_every: Duration,
}

impl BudgetConfig {
    /// The interval as operators read it: `1s`, `250ms`.
    pub fn every(&self) -> String {
        let ms = self.interval.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }
}

/// The defaults: 5 at once, then at most one repair per second, one log line a minute.
pub const DEFAULT_BUDGET: BudgetConfig = BudgetConfig {
    burst: 5,
    interval: Duration::from_secs(1),
    log_every: Duration::from_secs(60),
};

/// Whether a repair may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Now,
    /// The bucket is empty: the repair is deferred to this instant.
    Wait(Instant),
}

/// What the daemon should say after a repair (`RepairBudget::spend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// This repair had been deferred by the budget (a repair conflict).
    pub deferred: bool,
    /// The daemon is in conflict: the per-repair log line gives way to `report`.
    pub in_conflict: bool,
    /// A conflict line is due now (the first of a conflict, or a minute after the last).
    pub report: Option<Report>,
}

/// The numbers a conflict line gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The first line of this conflict.
    pub first: bool,
    /// Repairs and deferred repairs since the previous line of this conflict (this one included).
    pub repairs: u64,
    pub deferred: u64,
    /// How long the conflict has lasted.
    pub lasted: Duration,
}

/// A conflict that just ended (`RepairBudget::settled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    pub lasted: Duration,
    /// Repairs that had to wait, over the whole conflict.
    pub deferred: u64,
}

#[derive(Debug, Clone)]
struct Conflict {
    since: Instant,
    deferred_total: u64,
    /// Since the last conflict line.
    repairs: u64,
    deferred: u64,
    /// The first line of this conflict is still to be written.
    first_pending: bool,
    /// The drifts already told in this conflict (at most `MAX_SEEN`).
    seen: Vec<String>,
}

/// How many distinct drifts a conflict tells one by one; past that, only the conflict line.
const MAX_SEEN: usize = 16;

/// The bucket and the conflict state.
#[derive(Debug, Clone)]
pub struct RepairBudget {
    cfg: BudgetConfig,
    tokens: u32,
    /// When the next token comes (meaningful while the bucket is not full).
    refill_at: Instant,
    /// A repair was wanted while the bucket was empty and has not run yet.
    deferred: bool,
    last_repair: Option<Instant>,
    conflict: Option<Conflict>,
    last_report: Option<Instant>,
    /// When the daemon last ran the check `due` asked for.
    last_due_check: Option<Instant>,
}

impl RepairBudget {
    /// A full bucket at `now`.
    pub fn new(cfg: BudgetConfig, now: Instant) -> RepairBudget {
        let cfg = BudgetConfig {
            burst: cfg.burst.max(1),
            ..cfg
        };
        RepairBudget {
            cfg,
            tokens: cfg.burst,
            refill_at: now + cfg.interval,
            deferred: false,
            last_repair: None,
            conflict: None,
            last_report: None,
            last_due_check: None,
        }
    }

    pub fn config(&self) -> BudgetConfig {
        self.cfg
    }

    fn refill(&mut self, now: Instant) {
        while self.tokens < self.cfg.burst && now >= self.refill_at {
            self.tokens += 1;
            self.refill_at += self.cfg.interval;
        }
    }

    /// May a repair run now? Takes nothing; on `Wait` the repair is
    /// remembered as deferred until the next token (`due`).
    pub fn gate(&mut self, now: Instant) -> Gate {
        self.refill(now);
        if self.tokens > 0 {
            Gate::Now
        } else {
            self.deferred = true;
            Gate::Wait(self.refill_at)
        }
    }

    /// A repair runs now (after `gate` said `Now`): takes a token, and says
    /// whether it had waited and what to log.
    pub fn spend(&mut self, now: Instant) -> Spent {
        self.refill(now);
        if self.tokens == self.cfg.burst {
            // The clock for the next token starts with the first one taken.
            self.refill_at = now + self.cfg.interval;
        }
        self.tokens = self.tokens.saturating_sub(1);
        self.last_repair = Some(now);
        let deferred = std::mem::take(&mut self.deferred);
        if deferred && self.conflict.is_none() {
            self.conflict = Some(Conflict {
                since: now,
                deferred_total: 0,
                repairs: 0,
                deferred: 0,
                first_pending: true,
                seen: Vec::new(),
            });
        }
        let Some(c) = self.conflict.as_mut() else {
            return Spent {
                deferred,
                in_conflict: false,
                report: None,
            };
        };
        c.repairs += 1;
        if deferred {
            c.deferred += 1;
            c.deferred_total += 1;
        }
        let due = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.log_every);
        let report = due.then(|| {
            let r = Report {
                first: c.first_pending,
                repairs: c.repairs,
                deferred: c.deferred,
                lasted: now.saturating_duration_since(c.since),
            };
            (c.repairs, c.deferred, c.first_pending) = (0, 0, false);
            r
        });
        if report.is_some() {
            self.last_report = Some(now);
        }
        Spent {
            deferred,
            in_conflict: true,
            report,
        }
    }

    /// A check found the block in place: nothing is waiting any more, and a
    /// conflict ends once the block has stayed put for an interval after the
    /// last repair.
    pub fn settled(&mut self, now: Instant) -> Option<Cleared> {
        self.deferred = false;
        let quiet_since = self.last_repair? + self.cfg.interval;
        if now < quiet_since {
            return None;
        }
        let c = self.conflict.take()?;
        Some(Cleared {
            lasted: now.saturating_duration_since(c.since),
            deferred: c.deferred_total,
        })
    }

    /// When the daemon must check next on the budget's account: a deferred
    /// repair at the next token, or (in conflict) the check that can clear it.
    /// Never sooner than an interval after the last such check, so a check
    /// that keeps failing (neither `spend` nor `settled` follows) is retried
    /// once per interval, not in a loop.
    pub fn due(&self) -> Option<Instant> {
        let planned = if self.deferred {
            Some(self.refill_at)
        } else {
            self.conflict.is_some().then(|| self.clear_check()).flatten()
        }?;
        Some(match self.last_due_check {
            Some(t) => planned.max(t + self.cfg.interval),
            None => planned,
        })
    }

    /// The daemon runs the check `due` asked for, now.
    pub fn due_check(&mut self, now: Instant) {
        self.last_due_check = Some(now);
    }

    fn clear_check(&self) -> Option<Instant> {
        Some(self.last_repair? + self.cfg.interval)
    }

    pub fn in_conflict(&self) -> bool {
        self.conflict.is_some()
    }

    /// Whether a repair of drift `what` gets a log line of its own: always
    /// outside a conflict; inside one, only the first time `what` is seen.
    pub fn news(&mut self, what: &str) -> bool {
        let Some(c) = self.conflict.as_mut() else { return true };
        if c.seen.len() >= MAX_SEEN || c.seen.iter().any(|s| s == what) {
            return false;
        }
        c.seen.push(what.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A fake clock: instants as offsets from one origin.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, d: Duration) -> Instant {
            self.0 + d
        }
    }

    fn budget() -> (Clock, RepairBudget) {
        let c = Clock(Instant::now());
        let b = RepairBudget::new(DEFAULT_BUDGET, c.at(Duration::ZERO));
        (c, b)
    }

    /// gate + spend as the daemon does for one repair; None when deferred.
    fn repair(b: &mut RepairBudget, now: Instant) -> Option<Spent> {
        match b.gate(now) {
            Gate::Now => Some(b.spend(now)),
            Gate::Wait(_) => None,
        }
    }

    #[test]
    fn a_burst_runs_at_once_then_one_per_interval() {
        let (c, mut b) = budget();
        for i in 0..5 {
            let s = repair(&mut b, c.at(ms(i))).expect("within the burst");
            assert_eq!(
                s,
                Spent {
                    deferred: false,
                    in_conflict: false,
                    report: None
                }
            );
        }
        // The sixth waits for the first token, one interval after the first repair.
        assert_eq!(b.gate(c.at(ms(10))), Gate::Wait(c.at(S)));
        assert_eq!(b.due(), Some(c.at(S)));
        assert_eq!(b.gate(c.at(ms(999))), Gate::Wait(c.at(S)), "not a moment early");
        assert_eq!(b.gate(c.at(S)), Gate::Now);
        let s = b.spend(c.at(S));
        assert!(s.deferred && s.in_conflict);
        // The next token one interval later, never two at once.
        assert_eq!(b.gate(c.at(S + ms(5))), Gate::Wait(c.at(2 * S)));
        assert_eq!(b.gate(c.at(2 * S)), Gate::Now);
    }

    #[test]
    fn tokens_come_back_one_per_interval_up_to_the_burst() {
        let (c, mut b) = budget();
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        // 3.5 intervals later: three tokens, not more.
        let t = c.at(3 * S + ms(500));
        for _ in 0..3 {
            assert!(repair(&mut b, t).is_some());
        }
        assert_eq!(b.gate(t), Gate::Wait(c.at(4 * S)));
        // An hour of quiet refills to the burst, never beyond.
        b.settled(c.at(3600 * S));
        let t = c.at(3600 * S);
        for _ in 0..5 {
            assert!(repair(&mut b, t).is_some());
        }
        assert!(matches!(b.gate(t), Gate::Wait(w) if w == t + S));
    }

    #[test]
    fn a_burst_of_one_is_a_plain_minimum_interval() {
        let c = Clock(Instant::now());
        let cfg = BudgetConfig {
            burst: 0, // taken as 1
            interval: ms(250),
            log_every: S,
        };
        let mut b = RepairBudget::new(cfg, c.at(Duration::ZERO));
        assert_eq!(b.config().burst, 1);
        assert_eq!(
            (b.config().every(), DEFAULT_BUDGET.every()),
            ("250ms".into(), "1s".into())
        );
        assert!(repair(&mut b, c.at(Duration::ZERO)).is_some());
        assert_eq!(b.gate(c.at(ms(100))), Gate::Wait(c.at(ms(250))));
        assert!(repair(&mut b, c.at(ms(250))).is_some());
        assert_eq!(b.gate(c.at(ms(251))), Gate::Wait(c.at(ms(500))));
    }

    #[test]
    fn a_deferred_repair_enters_the_conflict_and_reports_once() {
        let (c, mut b) = budget();
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        assert!(!b.in_conflict(), "a burst alone is no conflict");
        assert!(repair(&mut b, c.at(ms(20))).is_none());
        assert!(!b.in_conflict(), "deferred, not yet found to be needed");
        let s = repair(&mut b, c.at(S)).unwrap();
        assert!(b.in_conflict());
        assert_eq!(
            s.report,
            Some(Report {
                first: true,
                repairs: 1,
                deferred: 1,
                lasted: Duration::ZERO
            })
        );
        // Each interval: a deferral, then the repair; no line until a minute passed.
        for k in 2..=60u32 {
            let t = c.at(k * S);
            assert!(repair(&mut b, t - ms(990)).is_none(), "second {k}: deferred");
            let s = repair(&mut b, t).unwrap_or_else(|| panic!("second {k}: runs at its token"));
            assert!(s.deferred && s.in_conflict);
            assert_eq!(s.report, None, "second {k}: at most one line a minute");
        }
        let t = c.at(61 * S);
        assert!(repair(&mut b, t - ms(990)).is_none());
        let s = repair(&mut b, t).unwrap();
        assert_eq!(
            s.report,
            Some(Report {
                first: false,
                repairs: 60,
                deferred: 60,
                lasted: 60 * S
            }),
            "a minute after the first line, the repairs since"
        );
    }

    #[test]
    fn the_conflict_clears_after_an_interval_in_place_and_due_schedules_that_check() {
        let (c, mut b) = budget();
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        assert_eq!(b.due(), None, "nothing waits, no conflict");
        repair(&mut b, c.at(ms(20)));
        repair(&mut b, c.at(S)).unwrap();
        assert_eq!(b.due(), Some(c.at(2 * S)), "the check that can clear it");
        // In place too soon after the repair: still a conflict.
        assert_eq!(b.settled(c.at(S + ms(500))), None);
        assert!(b.in_conflict());
        // Deferred again meanwhile: due at the next token.
        assert!(repair(&mut b, c.at(S + ms(600))).is_none());
        assert_eq!(b.due(), Some(c.at(2 * S)));
        repair(&mut b, c.at(2 * S)).unwrap();
        // The other agent stopped: in place one interval later, cleared.
        assert_eq!(
            b.settled(c.at(3 * S)),
            Some(Cleared {
                lasted: 2 * S,
                deferred: 2
            })
        );
        assert!(!b.in_conflict());
        assert_eq!(b.due(), None);
        assert_eq!(b.settled(c.at(4 * S)), None, "cleared once");
    }

    #[test]
    fn a_deferral_that_finds_nothing_to_repair_is_no_conflict() {
        let (c, mut b) = budget();
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        assert!(repair(&mut b, c.at(ms(20))).is_none());
        // The check at the token finds the block in place (the change was not ours).
        assert_eq!(b.settled(c.at(S)), None);
        assert_eq!(b.due(), None, "nothing is waiting any more");
        let s = repair(&mut b, c.at(S + ms(1))).unwrap();
        assert!(!s.deferred && !s.in_conflict && s.report.is_none());
    }

    #[test]
    fn log_lines_stay_a_minute_apart_across_conflicts() {
        let (c, mut b) = budget();
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        repair(&mut b, c.at(ms(20)));
        assert!(repair(&mut b, c.at(S)).unwrap().report.is_some());
        assert!(b.settled(c.at(2 * S)).is_some());
        // A new conflict ten seconds later: its first line waits for the minute.
        let t = c.at(10 * S);
        for _ in 0..5 {
            assert!(repair(&mut b, t).is_some());
        }
        assert!(repair(&mut b, t).is_none());
        let s = repair(&mut b, t + S).unwrap();
        assert!(s.in_conflict && s.report.is_none(), "{s:?}");
        let mut k = 2;
        let report = loop {
            let t = c.at((10 + k) * S);
            assert!(repair(&mut b, t - ms(500)).is_none());
            if let Some(r) = repair(&mut b, t).unwrap().report {
                break (k, r);
            }
            k += 1;
        };
        assert_eq!(
            report.0, 51,
            "the line comes a minute after the previous one (second 61)"
        );
        assert!(report.1.first, "it is this conflict's first line");
        assert_eq!(report.1.deferred, 51);
    }

    #[test]
    fn in_a_conflict_each_drift_is_told_once() {
        let (c, mut b) = budget();
        assert!(
            b.news("table missing") && b.news("table missing"),
            "no conflict: every repair"
        );
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        repair(&mut b, c.at(ms(20)));
        repair(&mut b, c.at(S)).unwrap();
        assert!(b.news("table missing"));
        assert!(!b.news("table missing"), "undone again: the conflict line tells it");
        assert!(b.news("chain flushed"), "a new kind of damage is told");
        for i in 0..20 {
            b.news(&format!("drift {i}"));
        }
        assert!(!b.news("yet another"), "bounded");
        // A new conflict tells them afresh.
        assert!(b.settled(c.at(2 * S)).is_some());
        let t = c.at(10 * S);
        for _ in 0..5 {
            repair(&mut b, t).unwrap();
        }
        repair(&mut b, t);
        repair(&mut b, t + S).unwrap();
        assert!(b.news("table missing"));
    }

    #[test]
    fn a_due_check_that_keeps_failing_is_retried_once_per_interval() {
        let (c, mut b) = budget();
        for i in 0..5 {
            repair(&mut b, c.at(ms(i))).unwrap();
        }
        assert!(repair(&mut b, c.at(ms(20))).is_none());
        assert_eq!(b.due(), Some(c.at(S)));
        // The check at the token fails: no spend, no settled. Not again at once.
        b.due_check(c.at(S));
        assert_eq!(b.due(), Some(c.at(2 * S)));
        b.due_check(c.at(2 * S));
        assert_eq!(b.due(), Some(c.at(3 * S)));
        // It works at last: the deferred repair runs and counts as a conflict.
        let s = repair(&mut b, c.at(3 * S)).unwrap();
        assert!(s.deferred && s.in_conflict);
        b.due_check(c.at(3 * S));
        assert_eq!(b.due(), Some(c.at(4 * S)), "the check that can clear it");
    }

    #[test]
    fn a_repair_without_a_token_still_counts_and_never_underflows() {
        // The daemon always gates first; spending on an empty bucket saturates.
        let (c, mut b) = budget();
        for _ in 0..7 {
            b.spend(c.at(ms(1)));
        }
        assert_eq!(b.gate(c.at(ms(2))), Gate::Wait(c.at(S + ms(1))));
    }
}
