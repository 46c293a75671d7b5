#!/usr/bin/env bash
# The log rules' data-path cost, release against release: builds the release binary of each
# revision given (a git worktree per revision under target/compare/, one shared target dir),
# then runs the attempt_log bench's data-path rows only (`--datapath-only`: connect rate with the
# log rules vs `--log-group off`, to an unmatched address and to the apiserver in audit mode)
# for each binary in turn, PASSES times, so that load from other work spreads over all of them.
# Prints one markdown table per run (the harness's own rows) under a heading naming the revision.
# Its own namespaces only (the harness deletes them on exit), nothing in the root one.
# Usage: benches/attempt-log-compare.sh [--passes 2] [--rounds 8] [--rate-seconds 2] REV [REV...]
#        (as root; each revision's first build takes minutes: release with LTO)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
PASSES=2 ROUNDS=8 RATE_S=2
while [ $# -gt 0 ]; do
  case $1 in
    --passes) PASSES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate-seconds) RATE_S=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "give at least one revision" >&2; exit 2; }
root=$(pwd)
out=$root/target/compare
mkdir -p "$out"
declare -A bin
for rev in "$@"; do
  sha=$(git rev-parse --short=7 "$rev^{commit}")
  wt=$out/src-$sha
  [ -d "$wt" ] || git worktree add -q --detach "$wt" "$sha"
  echo "building $rev ($sha)" >&2
  (cd "$wt" && CARGO_TARGET_DIR=$out/target cargo build --release --locked -q --bin apiserver-guard)
  cp "$out/target/release/apiserver-guard" "$out/apiserver-guard-$sha"
  bin[$rev]=$out/apiserver-guard-$sha
done
cargo bench --locked -q --no-run --bench attempt_log 2>/dev/null
for pass in $(seq "$PASSES"); do
  for rev in "$@"; do
    echo "### $rev ($(basename "${bin[$rev]}")), pass $pass of $PASSES"
    echo
    APISERVER_GUARD_BIN=${bin[$rev]} cargo bench --locked -q --bench attempt_log -- \
      --datapath-only --rounds "$ROUNDS" --rate-seconds "$RATE_S" | grep '^|'
    echo
  done
done
