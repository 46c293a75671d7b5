//! The functional core: policy data, validation, the backend-neutral rule
//! model, rendering for every backend and drift comparison. No I/O here.

pub mod address;
pub mod attempt_log;
pub mod attempt_packet;
pub mod attempts;
pub mod connections;
pub mod drift;
pub mod duration;
pub mod iptables_legacy_blob;
pub mod iptables_legacy_read;
pub mod iptables_nft_read;
pub mod iptables_plan;
pub mod iptables_state;
pub mod meter_holders;
pub mod meter_keys;
pub mod model;
pub mod nflog_wire;
pub mod nft_answers;
pub mod nft_decode;
pub mod nft_desired;
pub mod nft_diff;
pub mod nft_eval;
pub mod nft_events;
pub mod nft_exprs;
#[cfg(test)]
mod nft_golden_tests;
pub mod nft_model;
pub mod nft_ownership;
pub mod nft_plan;
pub mod nft_replay;
pub mod nft_stmt;
pub mod nft_text;
pub mod nft_wire;
pub mod policy;
pub mod render_iptables;
pub mod special;
pub mod validate;
