#!/usr/bin/env bash
# The whole test suite, exactly what CI runs: install system packages,
# check formatting and lints, check and unit-test the alerting rules
# (promtool), run unit and real-kernel integration tests
# (each in its own network namespaces; needs root), then the packaging
# checks (systemd units, .deb/.rpm, container and Kubernetes manifests,
# and a lint of every shell script). With APISERVER_GUARD_VM_TEST=1 it also boots a throwaway
# Debian VM twice to prove the block is in place before kubelet starts
# (downloads from the Debian mirror; takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the integration tests create network namespaces and program their firewalls" >&2
  exit 1
fi
scripts/install-deps.sh
if [ "${CI:-}" = true ]; then
  # A clean checkout gains nothing from incremental compilation's caches
  # (gigabytes of disk); say how much disk the run starts with.
  export CARGO_INCREMENTAL=0
  df -h . >&2
fi
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
scripts/check-alerts.sh
cargo test --locked --all-targets
if [ "${CI:-}" = true ]; then du -sh target >&2; fi
scripts/check-packaging.sh
scripts/check-manifests.sh
if [ "${APISERVER_GUARD_VM_TEST:-0}" = 1 ]; then
  tests/vm/run.sh
fi
