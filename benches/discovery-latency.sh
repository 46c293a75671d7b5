#!/usr/bin/env bash
# Discovery latency of `apiserver-guard run --apiserver auto` (EndpointSlice change in a fake
# apiserver -> first refused / served-again pod connect, nftables and iptables-nft) and the cost of
# the Kubernetes client (binary size, --version, time to block on start, idle RSS) against a binary
# built from the last commit before discovery; then how long an allowed pod keeps its exemption
# after its deletionTimestamp is set (deletion.rs).
# Builds the release binary and (once; cached in target/bench-baseline/) the baseline binary from a
# `git archive` export of BASELINE, then runs the Rust bench target benches/discovery_latency/main.rs,
# which creates its own network namespaces (pod <-> node <-> api, deleted on exit) and prints
# markdown tables to stdout (progress on stderr).
# Usage: benches/discovery-latency.sh [--baseline REV|none] [--baseline-if-cached]
#          [--iterations 20] [--start-runs 10] [--version-runs 50] [--rss-runs 3] [--rss-wait 5]
#          [--backends nftables,iptables-nft] [--probe-gap-us 0] [--deletion-runs 20]
#          [--deletion-only]   (that last part alone: `--baseline none --deletion-only`)
#        (as root; ~1 minute on 2 idle cores, plus ~1.5 minutes the first time, to build the baseline)
#        --baseline REV       commit to compare with (default 78e4143, the last one before the
#                             Kubernetes client dependencies); `none` skips the comparison
#        --baseline-if-cached use the baseline only if it is already built (quick runs)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
BASELINE=78e4143
IF_CACHED=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) BASELINE=${2:?--baseline needs a commit or none}; shift 2 ;;
    --baseline-if-cached) IF_CACHED=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

cargo build --release --locked -q
LABEL="$(git rev-parse --short HEAD 2>/dev/null || echo "no git")$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ", src modified")"
ARGS+=(--label "$LABEL")

if [ "$BASELINE" != none ]; then
  REV=$(git rev-parse --short=12 "$BASELINE^{commit}")
  BASE_BIN=target/bench-baseline/apiserver-guard-$REV
  if [ ! -x "$BASE_BIN" ] && [ "$IF_CACHED" = 0 ]; then
    echo "building the baseline $REV (release; once, cached as $BASE_BIN)" >&2
    SRC=$(mktemp -d)
    trap 'rm -rf "$SRC"' EXIT
    git archive "$REV" | tar -x -C "$SRC"
    CARGO_TARGET_DIR="$SRC/target" cargo build --release --locked -q --manifest-path "$SRC/Cargo.toml" >&2
    mkdir -p target/bench-baseline
    cp "$SRC/target/release/apiserver-guard" "$BASE_BIN.tmp" && mv "$BASE_BIN.tmp" "$BASE_BIN"
    rm -rf "$SRC"
    trap - EXIT
  fi
  if [ -x "$BASE_BIN" ]; then
    ARGS+=(--baseline-bin "$BASE_BIN" --baseline-label "$REV")
  else
    echo "baseline $REV not built (--baseline-if-cached): no before/after comparison" >&2
  fi
fi
exec cargo bench --locked -q --bench discovery_latency -- "${ARGS[@]}"
