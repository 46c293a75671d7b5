//! The functional core: policy data, validation, the backend-neutral rule
//! model, rendering for every backend and drift comparison. No I/O here.

pub mod address;
pub mod drift;
pub mod iptables_state;
pub mod model;
pub mod nft_state;
pub mod policy;
pub mod render_iptables;
pub mod render_nft;
pub mod special;
pub mod validate;
