//! Shared integration-test harness: network namespaces, a three-namespace
//! pod/node/apiserver topology, in-namespace TCP listeners and clients, curl
//! helpers, firewall snapshots and the preflight check that decides whether
//! the privileged tests can run at all.
//!
//! Every integration test file pulls this in with `mod common;` and uses only
//! part of it, hence the blanket `dead_code` allowance (and `unused_imports`,
//! which rustc reports for re-exports a given test file does not use).
#![allow(dead_code)]
#![allow(unused_imports)]

mod addresses;
pub mod bad_input_cases;
pub mod bad_input_checks;
mod connection;
mod curl;
pub mod daemon_cases;
pub mod daemon_checks;
pub mod discovery_cases;
pub mod fake_apiserver;
mod firewall;
mod guard;
pub mod guard_cases;
mod listener;
pub mod meter_fill;
mod netns;
pub mod nflog_probe;
mod preflight;
mod process;
pub mod save_counter;
mod server;
pub mod spoof;
mod topology;
pub mod verify_cases;
pub mod victim_acks;

pub use addresses::*;
pub use connection::HeldConnection;
pub use curl::{curl, curl_from, CurlResult};
pub use firewall::{firewall_snapshot, our_table_listing};
pub use guard::{guard, guard_bin, guard_spawn};
pub use listener::Listener;
pub use netns::Netns;
pub use preflight::can_run;
pub use topology::{Topology, API_IF, LISTEN_ADDRS, NODE_API_IF, NODE_OTHER_POD_IF, NODE_POD_IF, POD_IF};
