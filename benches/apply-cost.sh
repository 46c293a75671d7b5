#!/usr/bin/env bash
# Cost of installing the block on a node with many foreign (kube-proxy-like) rules:
# `apiserver-guard apply` per backend, cold (nothing of ours installed: `remove` before each
# timed run, untimed) and warm (already in place: nothing to change), next to the manual idiom
# `iptables -C FORWARD ... || iptables -I FORWARD ...` (cold: the rule deleted before each run;
# warm: present) on the same ruleset. Foreign rules as in benches/status-cost.sh (benches/lib.sh),
# loaded in the backend's iptables variant (iptables-nft for the nftables backend).
# Runs in its own network namespace; prints a markdown table of medians (ms).
# Usage: benches/apply-cost.sh [RUNS] [SIZES...]   (as root; default: 5 runs, sizes 0 1000 10000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
RUNS=${1:-5}; shift || true
SIZES=("${@:-0 1000 10000 100000}"); read -r -a SIZES <<<"${SIZES[*]}"
cargo build --release --locked -q
BIN="$PWD/target/release/apiserver-guard"
NS="agbench-apply-$$"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh   # ms_runs, load_foreign
POLICY=(--container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel --config /dev/null)
RULE=(FORWARD -s 10.0.0.0/16 -d 192.168.50.10/32 -p tcp -m tcp --dport 5443 -j REJECT --reject-with tcp-reset)
backend="" variant=""

ours_apply() { ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --backend "$backend"; }
ours_remove() { ip netns exec "$NS" "$BIN" remove; }
manual() { # the idiom from the manual procedure: check, insert if missing
  ip netns exec "$NS" "iptables-$variant" -w -C "${RULE[@]}" 2>/dev/null || ip netns exec "$NS" "iptables-$variant" -w -I "${RULE[@]}"
}
manual_undo() { ip netns exec "$NS" "iptables-$variant" -w -D "${RULE[@]}"; }

echo "| foreign rules | backend | \`apply\` cold (ms) | \`apply\` warm (ms) | manual \`-C \|\| -I\` cold (ms) | manual warm (ms) | cold ours / manual |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for n in "${SIZES[@]}"; do
  for backend in nftables iptables-nft iptables-legacy; do
    echo "apply cost: $backend with $n foreign rules, $RUNS runs" >&2
    ip netns del "$NS" 2>/dev/null || true
    ip netns add "$NS"
    variant=nft; [ "$backend" = iptables-legacy ] && variant=legacy
    load_foreign "$variant" "$n"
    cold=$(ms_runs 1 ours_remove ours_apply)
    warm=$(ms_runs 1 : ours_apply)
    ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend "$backend" >/dev/null \
      || { echo "block not in place after apply ($backend, $n)" >&2; exit 1; }
    ours_remove >/dev/null
    mcold=$(ms_runs 1 manual_undo manual)
    mwarm=$(ms_runs 1 : manual)
    ratio=$(awk -v a="$cold" -v b="$mcold" 'BEGIN {printf "%.2g x", (b > 0 ? a / b : 0)}')
    echo "| $n | $backend | $cold | $warm | $mcold (iptables-$variant) | $mwarm | $ratio |"
  done
done
