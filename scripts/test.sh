#!/usr/bin/env bash
# The whole test suite, exactly what CI runs: install system packages,
# check formatting and lints, then unit and real-kernel integration tests
# (each in its own network namespaces; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the integration tests create network namespaces and program their firewalls" >&2
  exit 1
fi
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
