#!/usr/bin/env bash
# The one benchmark command: runs every part of issue #6, each in its own network namespaces
# (never the root namespace's firewall; traffic only between namespaces the parts create),
# collects each part's markdown table and writes them, with the machine, kernel and tool
# versions, to docs/benchmarks.md:
#   1. check cost vs node size   benches/status-cost.sh   (0 / 1,000 / 10,000 / 100,000 foreign rules)
#   2. apply cost, cold and warm benches/apply-cost.sh    (same sizes)
#   3. drift-to-repair latency and time to block on first start
#                                benches/repair-latency.sh (benches/repair_latency.rs)
#   4. data-path cost            benches/datapath.sh      (iperf3 + benches/connect_rate.rs)
#   5. footprint                 benches/footprint.sh
# Usage: sudo benches/run-all.sh              full run, about 15-20 minutes on 2 cores
#        sudo QUICK=1 benches/run-all.sh      smoke test (few repetitions, small sizes), 2-3 minutes;
#                                             writes target/bench/benchmarks-quick.md unless OUT is set
#        PARTS="status apply repair datapath footprint" selects parts; OUT=FILE changes the output.
# Exits non-zero if a part failed (the others still run; the doc says which failed).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (the parts create network namespaces)" >&2; exit 1; }
QUICK=${QUICK:-0}
PARTS=${PARTS:-status apply repair datapath footprint}
if [ "$QUICK" = 1 ]; then
  OUT=${OUT:-target/bench/benchmarks-quick.md}
  STATUS_ARGS=(3 0 1000) APPLY_ARGS=(3 0 1000)
  REPAIR_ARGS=(--iterations 10 --slow-iterations 3 --foreign 1000 --start-runs 3 --no-doc)
  DATAPATH_ARGS=(1 2 1) FOOTPRINT_ARGS=(10 nftables:0)
  REGEN="sudo QUICK=1 benches/run-all.sh"
else
  OUT=${OUT:-docs/benchmarks.md}
  STATUS_ARGS=(7 0 1000 10000 100000) APPLY_ARGS=(5 0 1000 10000 100000)
  REPAIR_ARGS=(--iterations 100 --slow-iterations 20 --foreign 100000 --start-runs 10)
  DATAPATH_ARGS=(5 5 3) FOOTPRINT_ARGS=(60 nftables:0)
  REGEN="sudo benches/run-all.sh"
fi
mkdir -p "$(dirname "$OUT")"
if [[ " $PARTS " == *" datapath "* ]] && ! command -v iperf3 >/dev/null; then
  echo "installing iperf3 for the data-path part" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >&2
fi
cargo build --release --locked -q
cargo bench --locked -q --no-run --bench repair_latency --bench connect_rate 2>/dev/null

TMP=$(mktemp -d)
DAEMON_DOC=docs/benchmarks-daemon.md
# footprint.sh always rewrites its section of docs/benchmarks-daemon.md: keep a quick run from
# replacing real numbers there.
if [ "$QUICK" = 1 ] && [ -f "$DAEMON_DOC" ]; then cp "$DAEMON_DOC" "$TMP/daemon-doc"; fi
restore() {
  if [ "$QUICK" = 1 ]; then
    if [ -f "$TMP/daemon-doc" ]; then cp "$TMP/daemon-doc" "$DAEMON_DOC"; else rm -f "$DAEMON_DOC"; fi
  fi
  rm -rf "$TMP"
}
trap restore EXIT
trap 'exit 130' INT TERM

first() { "$@" 2>/dev/null | head -n1 || echo "n/a"; }
T_START=$(date +%s)
FAILED=()
BODY=""
part() { # part <key> <title> <intro> <cmd...>: run one part, append its section to BODY
  local key=$1 title=$2 intro=$3 t0 rc=0 out
  shift 3
  [[ " $PARTS " == *" $key "* ]] || return 0
  echo "=== $title: $*" >&2
  t0=$(date +%s)
  "$@" >"$TMP/$key.md" || rc=$?
  # The parts' own "Machine: ..." line repeats the header of this document.
  out=$(grep -v '^Machine: ' "$TMP/$key.md" || true)
  BODY+="
## $title

$intro

"
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$key")
    BODY+="**This part failed (exit $rc); partial output below.**

"
  fi
  BODY+="$out

_\`$*\`: $(( $(date +%s) - t0 )) s._
"
}

part status "1. Check cost vs node size" \
"\`apiserver-guard status\` per backend with N foreign kube-proxy-like rules (half in FORWARD, half in a KUBE-SERVICES chain; loaded in the backend's iptables variant, iptables-nft for nftables), next to the manual check \`iptables -C FORWARD ...\` on the same ruleset. Median wall time of ${STATUS_ARGS[0]} runs, ms, including \`ip netns exec\`. Target for nftables: flat, under 10 ms at 100,000 (the process start itself costs a few ms here)." \
  benches/status-cost.sh "${STATUS_ARGS[@]}"
part apply "2. Apply cost, cold and warm" \
"\`apiserver-guard apply\` per backend, cold (nothing of ours installed; \`remove\` before each run, untimed) and warm (already in place, nothing to change), next to the manual idiom \`iptables -C FORWARD ... || iptables -I FORWARD ...\` (cold: rule absent; warm: present), same foreign rules as above. Median wall time of ${APPLY_ARGS[0]} runs, ms. Ours does more than the idiom: one atomic transaction, both address families, its own chain/table, and it reads back what it installed." \
  benches/apply-cost.sh "${APPLY_ARGS[@]}"
part repair "3. Drift-to-repair latency and time to block on first start" \
"The daemon (\`apiserver-guard run\`, event-driven) in a node namespace routing a pod namespace to an apiserver namespace; a foreign command removes the block, a probe in the pod connects back to back until refused again. Timer rows are computed from the anchors' default intervals. Target: p99 < 50 ms on nftables." \
  benches/repair-latency.sh "${REPAIR_ARGS[@]}"
part datapath "4. Data-path cost" \
"Traffic that is *not* blocked (pod -> node (forwarding) -> 192.168.50.20; the block is for 192.168.50.10:5443), with no rule and with our block for 1 and 1,000 container CIDRs. Target: within 2 % of no rule at 1,000 CIDRs on nftables. Both tests are CPU-bound on this 2-core machine (client, forwarding and server share the cores), so they measure the per-packet cost of the rules, and the other work on the machine shows up as spread: compare the medians, and read a difference smaller than the min-max range as noise." \
  benches/datapath.sh "${DATAPATH_ARGS[@]}"
part footprint "5. Footprint" \
"Binary size, idle RSS and CPU of the daemon." \
  benches/footprint.sh "${FOOTPRINT_ARGS[@]}"

TOTAL=$(( $(date +%s) - T_START ))
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
{
  echo "# apiserver-guard benchmarks"
  echo
  echo "Generated by \`$REGEN\` (as root; $([ "$QUICK" = 1 ] && echo "QUICK smoke run: few repetitions, small sizes, not for comparison" || echo "full run")), which ran the parts below in $TOTAL s. Each part builds its own network namespaces and never touches the root namespace's firewall."
  echo
  echo "| machine | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| CPUs (\`nproc\`) | $(nproc) (${CPU_MODEL:-unknown model}) |"
  echo "| memory | $MEM |"
  echo "| kernel (\`uname -r\`) | $(uname -r) |"
  echo "| nftables | $(first nft --version) |"
  echo "| iptables | $(first iptables --version) |"
  echo "| iperf3 | $(first iperf3 --version) |"
  echo "| rustc | $(first rustc --version) |"
  echo "| apiserver-guard | $(first target/release/apiserver-guard --version) ($(git rev-parse --short HEAD 2>/dev/null || echo "no git")$(git diff --quiet HEAD -- src 2>/dev/null || echo ", src modified")) |"
  echo
  echo "The machine is shared with other work: absolute numbers are noisy. Every figure is a median of several runs (counts in each section); the ratios and the shape of the curves are the claims, not the absolute times."
  echo "$BODY"
} >"$OUT"
echo "written to $OUT in $TOTAL s" >&2
if [ ${#FAILED[@]} -gt 0 ]; then echo "failed parts: ${FAILED[*]}" >&2; exit 1; fi
