//! Helpers shared by the `harness = false` benches (`repair_latency`, `connect_rate`,
//! `discovery_latency`, `table_ownership`, `attempt_log`), one job per file. Each bench pulls the whole tree in with
//! `#[path = ".../shared/mod.rs"] mod shared;` and uses only part of it, hence the blanket
//! `dead_code` allowance. Nothing here depends on the integration-test harness (`tests/common`),
//! which only `discovery_latency`, `table_ownership` and `attempt_log` include.
#![allow(dead_code)]

pub mod cli;
pub mod clock;
pub mod daemon;
pub mod foreign;
pub mod listener;
pub mod machine;
pub mod netns;
pub mod probe;
pub mod start;
pub mod stats;
pub mod stop;

/// The benches' result type: errors are messages for stderr.
pub type R<T> = Result<T, String>;
