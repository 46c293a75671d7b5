#!/usr/bin/env bash
# Cost of checking the block on a node with many foreign (kube-proxy-like)
# rules: `apiserver-guard status` per backend vs the manual idiom
# `iptables -C FORWARD ...`, with 0 and N foreign rules loaded in the same
# iptables variant (KUBE-SVC-like chains plus rules directly in FORWARD).
# Runs in its own network namespace; prints a markdown table of medians (ms).
# Usage: benches/status-cost.sh [RUNS] [SIZES...]   (default: 7 runs, sizes 0 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
RUNS=${1:-7}; shift || true
SIZES=("${@:-0 100000}"); read -r -a SIZES <<<"${SIZES[*]}"
cargo build --release --locked -q
BIN="$PWD/target/release/apiserver-guard"
NS="agbench-$$"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
POLICY=(--container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel --config /dev/null)

ms_median() { # ms_median <cmd...>: median wall time of RUNS runs, in ms (exit status ignored)
  local times=() t0 t1
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

load_foreign() { # load_foreign <variant> <n>: n rules, half in FORWARD, half in KUBE-SVC-like chains
  local v=$1 n=$2
  [ "$n" -gt 0 ] || return 0
  {
    echo "*filter"
    echo ":KUBE-SERVICES - [0:0]"
    local half=$((n / 2)) i
    for ((i = 0; i < half; i++)); do
      printf -- '-A FORWARD -s 10.%d.%d.%d/32 -d 172.%d.%d.%d/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/svc-%d" -j ACCEPT\n' \
        $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) $((16 + (i >> 16 & 15))) $((i >> 8 & 255)) $((i & 255)) "$i"
    done
    for ((i = half; i < n; i++)); do
      printf -- '-A KUBE-SERVICES -d 172.%d.%d.%d/32 -p tcp -m tcp --dport 443 -m comment --comment "ns/svc-%d" -j RETURN\n' \
        $((16 + (i >> 16 & 15))) $((i >> 8 & 255)) $((i & 255)) "$i"
    done
    echo "COMMIT"
  } | ip netns exec "$NS" "iptables-$v-restore" --noflush
}

echo "| foreign rules | backend | \`apiserver-guard status\` (ms) | manual \`iptables -C\` (ms) |"
echo "|---:|---|---:|---:|"
for n in "${SIZES[@]}"; do
  for backend in nftables iptables-nft iptables-legacy; do
    ip netns del "$NS" 2>/dev/null || true
    ip netns add "$NS"
    variant=nft; [ "$backend" = iptables-legacy ] && variant=legacy
    load_foreign "$variant" "$n"
    ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --backend "$backend" >/dev/null
    ip netns exec "$NS" "iptables-$variant" -I FORWARD -s 10.0.0.0/16 -d 192.168.50.10 -j REJECT
    ours=$(ms_median ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend "$backend")
    manual=$(ms_median ip netns exec "$NS" "iptables-$variant" -C FORWARD -s 10.0.0.0/16 -d 192.168.50.10 -j REJECT)
    echo "| $n | $backend | $ours | $manual (iptables-$variant) |"
  done
done
