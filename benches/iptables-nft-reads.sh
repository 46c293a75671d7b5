#!/usr/bin/env bash
# iptables-nft reads only what is ours (issue 15): `apiserver-guard status` on iptables-nft,
# which reads our chain and rule 1 of each hooked chain over nf_tables netlink, next to the
# nftables backend's status and to the same iptables-nft status forced through the text
# read-back (`iptables-nft-save` of the whole table: the reference file removed before each
# run); then variant detection (`status --backend iptables`) in iptables-wrappers' host states; then the
# daemon's repair of our chain and jump removed with N foreign rules (benches/repair_latency).
# Runs in its own network namespaces; prints markdown tables of medians (ms).
# Usage: benches/iptables-nft-reads.sh [RUNS] [N] [REPAIRS]   (as root; REPAIRS=0 skips the repair part; default 7 runs,
#        N = 100000 foreign rules, 20 repairs; ~4 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
RUNS=${1:-7}
N=${2:-100000}
REPAIRS=${3:-20}
if [ -z "${BIN:-}" ]; then   # BIN=path: time that binary instead (no build)
  cargo build --release --locked -q
  BIN="$PWD/target/release/apiserver-guard"
fi
NS="agbench-ipt-$$"
REFS=/run/apiserver-guard/iptables-nft-reference
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh   # ms_runs, ms_median, load_foreign
POLICY=(--container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel --config /dev/null)
forget_reference() { rm -f "$REFS"/*; }
fresh_ns() { ip netns del "$NS" 2>/dev/null || true; ip netns add "$NS"; }
in_sync() { ip netns exec "$NS" "$BIN" status "${POLICY[@]}" "$@" >/dev/null || { echo "status $* not in sync" >&2; exit 1; }; }

echo "#### \`status\`: our chain over netlink vs the whole table as text"
echo
echo "| foreign rules (iptables-nft) | nftables backend (ms) | iptables-nft, netlink read (ms) | iptables-nft / nftables | iptables-nft, text read-back (ms) | \`--version\` (ms) |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in 0 "$N"; do
  fresh_ns
  load_foreign nft "$n"
  ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --backend nftables >/dev/null
  in_sync --backend nftables
  nft=$(ms_runs 1 : ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend nftables)
  ip netns exec "$NS" "$BIN" remove >/dev/null
  ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --backend iptables-nft >/dev/null
  in_sync --backend iptables-nft
  fast=$(ms_runs 1 : ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend iptables-nft)
  text=$(ms_runs 1 forget_reference ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend iptables-nft)
  version=$(ms_median ip netns exec "$NS" "$BIN" --version)
  ratio=$(awk -v a="$fast" -v b="$nft" 'BEGIN {printf "%.1f x", (b > 0 ? a / b : 0)}')
  echo "| $n | $nft | $fast | $ratio | $text | $version |"
done
echo
echo "Median of $RUNS runs each, including \`ip netns exec\`. Target: iptables-nft \`status\` within 3 x the nftables backend's at $N foreign rules."
echo
echo "#### Variant detection (\`status --backend iptables\`): iptables-wrappers' host states with $N foreign rules"
echo
echo "| host state (hint chains as kubelet makes them; foreign rules in iptables-nft unless said) | expected (iptables-wrappers) | variant chosen | \`status --backend iptables\` (ms) |"
echo "|---|---|---|---:|"
# state | expected | what
STATES=(
  "nft-hint|iptables-nft|KUBE-IPTABLES-HINT in iptables-nft's mangle table (IPv4)"
  "nft-canary-v6|iptables-nft|KUBE-KUBELET-CANARY in ip6tables-nft's mangle table only (IPv6)"
  "legacy-hint|iptables-legacy|KUBE-IPTABLES-HINT in iptables-legacy's mangle table"
  "legacy-hint-v6|iptables-legacy|KUBE-IPTABLES-HINT in ip6tables-legacy's mangle table only (IPv6)"
  "legacy-canary-nat|iptables-legacy|KUBE-KUBELET-CANARY in iptables-legacy's nat table, next to the foreign rules in nft (Docker-like)"
  "both-hints|iptables-nft|hint chains in both variants"
  "nft-canary-filter|iptables-nft|KUBE-KUBELET-CANARY in iptables-nft's filter table (not a hint: outside mangle), rules counted"
  "no-hint|iptables-nft|no hint chain anywhere, rules counted (more in nft)"
  "no-hint-legacy|iptables-legacy|no hint chain anywhere, the foreign rules in iptables-legacy (more in legacy; iptables-wrappers v2 counts: legacy, its v3 takes nft without counting)"
)
for entry in "${STATES[@]}"; do
  IFS='|' read -r state expected what <<<"$entry"
  fresh_ns
  if [ "$state" = no-hint-legacy ]; then load_foreign legacy "$N"; else load_foreign nft "$N"; fi
  x() { ip netns exec "$NS" "$@" >/dev/null; }
  case $state in
    nft-hint) x iptables-nft -t mangle -N KUBE-IPTABLES-HINT ;;
    nft-canary-v6) x ip6tables-nft -t mangle -N KUBE-KUBELET-CANARY ;;
    legacy-hint) x iptables-legacy -t mangle -N KUBE-IPTABLES-HINT ;;
    legacy-hint-v6) x ip6tables-legacy -t mangle -N KUBE-IPTABLES-HINT ;;
    legacy-canary-nat) x iptables-legacy -t nat -N KUBE-KUBELET-CANARY ;;
    both-hints) x iptables-nft -t mangle -N KUBE-IPTABLES-HINT; x iptables-legacy -t mangle -N KUBE-IPTABLES-HINT ;;
    nft-canary-filter) x iptables-nft -t filter -N KUBE-KUBELET-CANARY ;;
  esac
  ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --backend iptables >/dev/null
  in_sync --backend iptables
  chosen=$(ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend iptables | sed -n 's/^backend: \([a-z-]*\).*/\1/p')
  [ "$chosen" = "$expected" ] || { echo "$what: chose $chosen, iptables-wrappers chooses $expected" >&2; exit 1; }
  t=$(ms_runs 1 : ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --backend iptables)
  echo "| $what | $expected | $chosen | $t |"
done
echo
echo "Median of $RUNS runs each; the variant is the one \`status\` names (the script fails if it is not iptables-wrappers' choice). The same states, and more, are built in a fresh namespace by \`tests/iptables_detection.rs\` (in scripts/test.sh), which also checks that the pod is refused and where our chain lands."
echo
[ "$REPAIRS" -gt 0 ] || exit 0   # REPAIRS=0: no repair part
echo "#### The daemon's repair with $N foreign rules (iptables-nft)"
echo
ip netns del "$NS" 2>/dev/null || true
forget_reference
echo "From the foreign command that removed the block (\`-F APISERVER-GUARD\` + \`-D FORWARD\` our jump, one \`iptables-nft-restore --noflush\`) to the pod refused again, and what the daemon logged as its check + repair (benches/repair_latency, as in section 3; ms):"
echo
# Only the two tables of that row (section 3 explains the method).
cargo bench --locked -q --bench repair_latency -- --only "iptables-nft:$N" --slow-iterations "$REPAIRS" \
  --foreign "$N" --start-runs 1 --no-doc |
  awk '/^### Drift-to-repair latency/ {on = 1} /^### Exposure/ {on = 0} on && /^\|/ {print; blank = 1; next} on && blank && /^$/ {print; blank = 0}'
