//! The Event writer: a task of its own that, every `TICK` or when the
//! attempts reader notes a pod's first attempt, takes the writes the
//! `EventBook` says are due and does them one by one, each bounded in time.
//! Outcomes are counted in `Metrics`; failures are logged (the first one,
//! then at most one line a minute saying how many more), never retried
//! faster than the book allows, and never hold up the reader or the block.

use super::attempts::EventStats;
use super::metrics::Metrics;
use crate::discovery::event_book::{EventBook, Outcome, WRITE_EVERY_MS};
use crate::discovery::events::write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// How often due writes are looked for without a wake-up.
const TICK: Duration = Duration::from_secs(1);
/// At most one failure line this often.
const FAILURE_LINE_EVERY: Duration = Duration::from_millis(WRITE_EVERY_MS);

/// The book the attempts reader notes into, and the bell it rings.
#[derive(Clone)]
pub struct EventsHandle {
    pub book: Arc<Mutex<EventBook>>,
    pub wake: Arc<Notify>,
}

impl EventsHandle {
    pub fn new(node: &str) -> EventsHandle {
        EventsHandle {
            book: Arc::new(Mutex::new(EventBook::new(node))),
            wake: Arc::new(Notify::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes Events for as long as the task lives.
pub async fn run(client: kube::Client, events: EventsHandle, state: Arc<Mutex<Metrics>>) {
    lock(&state).attempts.events = Some(EventStats::default());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = FailureLines::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = events.wake.notified() => {}
        }
        let due = lock(&events.book).due(unix_ms());
        for w in due {
            let result = write(&client, &w).await;
            let outcome = match &result {
                Ok(()) => Outcome::Written,
                Err((o, _)) => *o,
            };
            let dropped = {
                let mut book = lock(&events.book);
                book.done(&w, outcome);
                book.dropped()
            };
            {
                let mut m = lock(&state);
                let s = m.attempts.events.get_or_insert_with(Default::default);
                match (&result, w.create) {
                    (Ok(()), true) => s.created += 1,
                    (Ok(()), false) => s.patched += 1,
                    (Err(_), _) => s.failed += 1,
                }
                s.dropped = dropped;
            }
            if let Err((_, why)) = result {
                failures.failed(&why);
            }
        }
    }
}

/// The failure log's rate limit: the first failure at once, then one line a
/// minute with the latest reason and how many failed since.
#[derive(Default)]
struct FailureLines {
    last_line: Option<Instant>,
    unlogged: u64,
}

impl FailureLines {
    fn failed(&mut self, why: &str) {
        if self.last_line.is_some_and(|t| t.elapsed() < FAILURE_LINE_EVERY) {
            self.unlogged += 1;
            return;
        }
        let more = std::mem::take(&mut self.unlogged);
        let tail = if more > 0 {
            format!(" ({more} more failed writes since the last such line)")
        } else {
            String::new()
        };
        log::warn!("pod Event not written: {why}{tail}; attempts stay in the log, /attempts and /metrics");
        self.last_line = Some(Instant::now());
    }
}
