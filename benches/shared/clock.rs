//! The bench's monotonic clock: nanosecond timestamps shared by the pod probe and the daemon's log
//! reader (when each line was read), so that both sides of a measurement compare.

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the bench started (monotonic).
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
