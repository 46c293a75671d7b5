#!/usr/bin/env bash
# Cost of checking the block on a node with many foreign (kube-proxy-like)
# rules: `apiserver-guard status` per backend vs the manual idiom
# `iptables -C FORWARD ...`, with 0 and N foreign rules loaded in the same
# iptables variant (KUBE-SVC-like chains plus rules directly in FORWARD), and
# `apiserver-guard --version` timed the same way in the same row (the cost of
# starting the process at all; the ratio status / --version is the target).
# Runs in its own network namespace; prints a markdown table of medians (ms).
# Usage: benches/status-cost.sh [RUNS] [SIZES...]   (as root; default: 7 runs, sizes 0 100000;
#        benches/run-all.sh runs it with sizes 0 1000 10000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
RUNS=${1:-7}; shift || true
SIZES=("${@:-0 100000}"); read -r -a SIZES <<<"${SIZES[*]}"
cargo build --release --locked -q
BIN="$PWD/target/release/apiserver-guard"
NS="agbench-$$"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh   # ms_median, load_foreign
POLICY=(--container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel --config /dev/null)

echo "| foreign rules | backend | \`apiserver-guard status\` (ms) | \`apiserver-guard --version\` (ms) | status / --version | manual \`iptables -C\` (ms) |"
echo "|---:|---|---:|---:|---:|---:|"
for n in "${SIZES[@]}"; do
  for backend in nftables iptables-nft iptables-legacy; do
    ip netns del "$NS" 2>/dev/null || true
    ip netns add "$NS"
    variant=nft; [ "$backend" = iptables-legacy ] && variant=legacy
    load_foreign "$variant" "$n"
    # The manual rule first, then ours (our jump must stay rule 1: status in sync is what is timed).
    ip netns exec "$NS" "iptables-$variant" -I FORWARD -s 10.0.0.0/16 -d 192.168.50.10 -j REJECT
    ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --backend "$backend" >/dev/null
    ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend "$backend" >/dev/null ||
      { echo "status of $backend is not in sync after apply" >&2; exit 1; }
    ours=$(ms_median ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend "$backend")
    version=$(ms_median ip netns exec "$NS" "$BIN" --version)
    manual=$(ms_median ip netns exec "$NS" "iptables-$variant" -C FORWARD -s 10.0.0.0/16 -d 192.168.50.10 -j REJECT)
    ratio=$(awk -v a="$ours" -v b="$version" 'BEGIN {printf "%.1f x", (b > 0 ? a / b : 0)}')
    echo "| $n | $backend | $ours | $version | $ratio | $manual (iptables-$variant) |"
  done
done
