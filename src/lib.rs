//! apiserver-guard: keeps pod traffic away from kube-apiserver with one
//! atomic, idempotent, self-checking firewall block. `core` is pure (policy,
//! validation, model, rendering, drift); `backend` talks to nft/iptables;
//! `commands` wires them to the command line.

pub mod attempts_cmd;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod daemon;
pub mod daemon_settings;
pub mod discovery;
pub mod error;
pub mod logging;
pub mod node_facts;
pub mod policy_source;
pub mod regular_file;
pub mod verify;
pub mod verify_cmd;
