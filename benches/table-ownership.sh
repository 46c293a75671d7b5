#!/usr/bin/env bash
# Table ownership and apply cost (issue 12), nftables backend: 1,000 `nft flush ruleset` and
# 1,000 `nft delete table inet apiserver_guard` from another process against the daemon's owned
# table while a pod connects back to back (connections served); an allow-list element update,
# apply cold in process and as a process, `status` and `--version`, with 100,000 foreign rules.
# Builds the release binary, then runs the Rust bench target benches/table_ownership/main.rs,
# which creates its own network namespaces (deleted on exit) and prints markdown tables to stdout
# (progress on stderr).
# Usage: benches/table-ownership.sh [--rounds 1000] [--iterations 1000] [--runs 20]
#          [--foreign 100000] [--probe-gap-us 0] [--skip-flush] [--skip-apply]
#        (as root; ~1-2 minutes on 2 idle cores)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
cargo build --release --locked -q
exec cargo bench --locked -q --bench table_ownership -- "$@"
