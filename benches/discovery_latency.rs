//! Placeholder replaced by the discovery latency benchmark (see benches/discovery-latency.sh).
fn main() {}
