#!/usr/bin/env bash
# Drift-to-repair latency of `apiserver-guard run` (foreign flush -> first refused pod connect,
# per backend, with 0 and N foreign iptables-nft rules) and time to block on first start.
# Builds the release binary, then runs the Rust bench target benches/repair_latency/, which
# creates its own network namespaces (pod <-> node <-> api, deleted on exit), prints markdown
# tables to stdout (progress on stderr) and rewrites its section of docs/benchmarks-daemon.md.
# Usage: benches/repair-latency.sh [--iterations 100] [--slow-iterations 20] [--foreign 100000]
#          [--start-runs 10] [--no-doc] [--only BACKEND:N,...] [--probe-gap-us 0]
#        (as root; ~7 minutes on 2 idle cores)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
cargo build --release --locked -q
exec cargo bench --locked -q --bench repair_latency -- "$@"
