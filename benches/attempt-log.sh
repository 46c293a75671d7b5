#!/usr/bin/env bash
# Who tried, under a flood (issue 13), nftables backend: the daemon with its defaults while a pod
# floods connects to the blocked apiserver (from 1 source, then 250) and another pod source tries
# once every 100 ms: daemon CPU and RSS, attempts reported vs made, connect -> log line p50/p99;
# then the data-path cost of the log statement on traffic that is not blocked (connect rate with
# the log rules vs --log-group off, to an unmatched address and to the apiserver in audit mode).
# Builds the release binary, then runs the Rust bench target benches/attempt_log/main.rs, which
# creates its own network namespaces (deleted on exit) and prints markdown tables to stdout
# (progress on stderr).
# Usage: benches/attempt-log.sh [--flood-seconds 10] [--single-every-ms 100] [--rate-seconds 3]
#          [--rounds 5] [--datapath-only]
#        (--datapath-only: skip the floods, only the data-path rows)
#        (as root; ~2 minutes on 2 idle cores)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
cargo build --release --locked -q
exec cargo bench --locked -q --bench attempt_log -- "$@"
