#!/usr/bin/env bash
# The one benchmark command: runs every part of issue #6, each in its own network namespaces
# (never the root namespace's firewall; traffic only between namespaces the parts create),
# collects each part's markdown table and writes them, with the machine, kernel and tool
# versions, to docs/benchmarks.md:
#   1. check cost vs node size   benches/status-cost.sh   (0 / 1,000 / 10,000 / 100,000 foreign rules)
#   2. apply cost, cold and warm benches/apply-cost.sh    (same sizes)
#   3. drift-to-repair latency and time to block on first start
#                                benches/repair-latency.sh (benches/repair_latency/)
#   4. data-path cost            benches/datapath.sh      (iperf3 + benches/connect_rate.rs)
#   5. footprint                 benches/footprint.sh
#   6. discovery latency and the cost of the Kubernetes client
#                                benches/discovery-latency.sh (benches/discovery_latency/main.rs; builds the
#                                pre-discovery baseline once into target/bench-baseline/, ~2 minutes)
#   7. table ownership (foreign flush/delete against the daemon's table) and apply cost in process
#                                benches/table-ownership.sh (benches/table_ownership/main.rs)
#   8. who tried: the attempt log under a flood, and the data-path cost of the log statement
#                                benches/attempt-log.sh (benches/attempt_log/main.rs)
#   9. the kernel's commit wait  benches/kernel-commit-wait.sh
#  10. iptables-nft reads only what is ours; variant detection; repair with foreign rules
#                                benches/iptables-nft-reads.sh
# Usage: sudo benches/run-all.sh              full run, about 20-25 minutes on 2 cores
#        sudo QUICK=1 benches/run-all.sh      smoke test (few repetitions, small sizes), 3-4 minutes;
#                                             writes target/bench/benchmarks-quick.md unless OUT is set
#        PARTS="status apply repair datapath footprint discovery ownership attempts commitwait iptables" selects parts; OUT=FILE changes
#        the output; BENCH_SOURCE="..." describes the source tree in the header (default: git commit).
#        A run of only some parts keeps the other sections of an existing OUT as they are (each section
#        ends with the command, date and commit that produced it); MERGE=0 writes only the parts run.
# Exits non-zero if a part failed (the others still run; the doc says which failed).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (the parts create network namespaces)" >&2; exit 1; }
QUICK=${QUICK:-0}
ALL_PARTS="status apply repair datapath footprint discovery ownership attempts commitwait iptables"
PARTS=${PARTS:-$ALL_PARTS}
for p in $PARTS; do
  [[ " $ALL_PARTS " == *" $p "* ]] || { echo "unknown part '$p' (parts: $ALL_PARTS)" >&2; exit 2; }
done
# Merge into an existing document when only some parts run.
if [ "$(tr ' ' '\n' <<<"$PARTS" | sort -u | xargs)" = "$(tr ' ' '\n' <<<"$ALL_PARTS" | sort -u | xargs)" ]; then
  MERGE=${MERGE:-0}
else
  MERGE=${MERGE:-1}
fi
if [ "$QUICK" = 1 ]; then
  OUT=${OUT:-target/bench/benchmarks-quick.md}
  STATUS_ARGS=(3 0 1000) APPLY_ARGS=(3 0 1000)
  REPAIR_ARGS=(--iterations 10 --slow-iterations 3 --foreign 1000 --start-runs 3 --no-doc)
  DATAPATH_ARGS=(1 2 1) FOOTPRINT_ARGS=(10 nftables:0)
  # The baseline binary only if an earlier run built it (building it takes ~2 minutes).
  DISCOVERY_ARGS=(--iterations 4 --start-runs 2 --version-runs 5 --rss-runs 1 --rss-wait 2 --baseline-if-cached)
  OWNERSHIP_ARGS=(--rounds 50 --iterations 100 --runs 3 --foreign 1000)
  ATTEMPTS_ARGS=(--flood-seconds 3 --rate-seconds 1 --rounds 1)
  COMMITWAIT_ARGS=(10)
  IPTABLES_ARGS=(3 1000 3)
else
  OUT=${OUT:-docs/benchmarks.md}
  STATUS_ARGS=(7 0 1000 10000 100000) APPLY_ARGS=(5 0 1000 10000 100000)
  REPAIR_ARGS=(--iterations 100 --slow-iterations 20 --foreign 100000 --start-runs 10)
  DATAPATH_ARGS=(5 5 3) FOOTPRINT_ARGS=(60 nftables:0 nftables:100000)
  DISCOVERY_ARGS=(--iterations 20 --start-runs 10 --version-runs 50 --rss-runs 3 --rss-wait 5)
  OWNERSHIP_ARGS=(--rounds 1000 --iterations 1000 --runs 20 --foreign 100000)
  ATTEMPTS_ARGS=(--flood-seconds 10 --single-every-ms 100 --rate-seconds 3 --rounds 5)
  COMMITWAIT_ARGS=(60)
  IPTABLES_ARGS=(7 100000 20)
fi
PREFIX=""
[ "$QUICK" = 1 ] && PREFIX="QUICK=1 "
[ "$PARTS" = "$ALL_PARTS" ] || PREFIX+="PARTS=\"$PARTS\" "
REGEN="sudo ${PREFIX}benches/run-all.sh"
mkdir -p "$(dirname "$OUT")"
if [[ " $PARTS " == *" datapath "* ]] && ! command -v iperf3 >/dev/null; then
  echo "installing iperf3 for the data-path part" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >&2
fi
cargo build --release --locked -q
cargo bench --locked -q --no-run --bench repair_latency --bench connect_rate --bench discovery_latency \
  --bench table_ownership --bench attempt_log

TMP=$(mktemp -d)
DAEMON_DOC=docs/benchmarks-daemon.md
# footprint.sh always rewrites its section of docs/benchmarks-daemon.md: keep a quick run from
# replacing real numbers there.
if [ "$QUICK" = 1 ] && [ -f "$DAEMON_DOC" ]; then cp "$DAEMON_DOC" "$TMP/daemon-doc"; fi
restore() {
  if [ "$QUICK" = 1 ]; then
    if [ -f "$TMP/daemon-doc" ]; then cp "$TMP/daemon-doc" "$DAEMON_DOC"; else rm -f "$DAEMON_DOC"; rmdir docs 2>/dev/null || true; fi
  fi
  rm -rf "$TMP"
}
trap restore EXIT
trap 'exit 130' INT TERM

first() { "$@" 2>/dev/null | head -n1 || echo "n/a"; }
T_START=$(date +%s)
FAILED=()
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
SOURCE=${BENCH_SOURCE:-$(git rev-parse --short HEAD 2>/dev/null || echo "no git")$(git diff --quiet HEAD -- src 2>/dev/null || echo ", src modified")}

# Section titles, in the document's order: a section is found again by its exact "## title" line.
declare -A TITLE=(
  [status]="1. Check cost vs node size"
  [apply]="2. Apply cost, cold and warm"
  [repair]="3. Drift-to-repair latency and time to block on first start"
  [datapath]="4. Data-path cost"
  [footprint]="5. Footprint"
  [discovery]="6. Discovery latency and the cost of the Kubernetes client"
  [ownership]="7. Table ownership and apply cost"
  [attempts]="8. Who tried: the attempt log under a flood"
  [commitwait]="9. Why a repair after a foreign deletion waits: the kernel's commit mutex"
  [iptables]="10. iptables-nft: reading only what is ours, variant detection, repair"
)
declare -A SECTION=()
KEPT=()
OLD_HEADER=""
old_section() { # old_section <title>: that section of the earlier document (heading to the next "## "), if any
  awk -v h="## $1" '$0 == h {on = 1; print; next} on && /^## / {exit} on' "$TMP/old.md"
}
if [ "$MERGE" = 1 ] && [ -f "$OUT" ]; then
  cp "$OUT" "$TMP/old.md"
  # "date, apiserver-guard version (source)" from the earlier machine table.
  OLD_HEADER=$(awk -F'|' '{gsub(/^ +| +$/, "", $2); gsub(/^ +| +$/, "", $3)}
    $2 == "date" {d = $3} $2 == "apiserver-guard" {v = $3} END {if (d != "") printf "%s, %s", d, v}' "$TMP/old.md")
  for key in $ALL_PARTS; do
    [[ " $PARTS " == *" $key "* ]] && continue
    old=$(old_section "${TITLE[$key]}")
    [ -n "$old" ] || continue
    # Say where a kept section comes from, once: unless its last line already dates it.
    if ! tail -n1 <<<"$old" | grep -q ' UTC, .*)\._$' && ! grep -q '^_Kept from ' <<<"$old"; then
      old+="

_Kept from the earlier version of this document (its header: ${OLD_HEADER:-not found})._"
    fi
    SECTION[$key]="$old"; KEPT+=("$key")
  done
fi

part() { # part <key> <intro> <cmd...>: run one part, record its section
  local key=$1 intro=$2 t0 rc=0 out body
  shift 2
  [[ " $PARTS " == *" $key "* ]] || return 0
  echo "=== ${TITLE[$key]}: $*" >&2
  t0=$(date +%s)
  "$@" >"$TMP/$key.md" || rc=$?
  # The parts' own "Machine: ..." line repeats the header of this document.
  out=$(grep -v '^Machine: ' "$TMP/$key.md" || true)
  body="## ${TITLE[$key]}

$intro

"
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$key")
    body+="**This part failed (exit $rc); partial output below.**

"
  fi
  body+="$out

_\`$*\`: $(( $(date +%s) - t0 )) s ($RUN_DATE, $SOURCE)._"
  SECTION[$key]="$body"
  write_doc "in progress: done up to part $key"
}

write_doc() { # write_doc <state>: the header and every section so far (after each part: a cut run leaves a partial doc)
  local state=$1 total=$(( $(date +%s) - T_START )) key ran="the parts below"
  CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  MEM=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
  if [ ${#KEPT[@]} -gt 0 ]; then
    ran="the parts $(for key in $PARTS; do printf '"%s", ' "${TITLE[$key]}"; done | sed 's/, $//')"
  fi
  {
    echo "# apiserver-guard benchmarks"
    echo
    echo "Generated by \`$REGEN\` (as root; $([ "$QUICK" = 1 ] && echo "QUICK smoke run: few repetitions, small sizes, not for comparison" || echo "full run")), which ran $ran in $total s ($state). Each part builds its own network namespaces and never touches the root namespace's firewall."
    if [ ${#KEPT[@]} -gt 0 ]; then
      echo
      echo "The other sections are kept as they were in the earlier version of this document; the last line of each says when and from which source it was produced. \`sudo benches/run-all.sh\` regenerates them all."
    fi
    echo
    echo "| machine | |"
    echo "|---|---|"
    echo "| date | $RUN_DATE |"
    echo "| CPUs (\`nproc\`) | $(nproc) (${CPU_MODEL:-unknown model}) |"
    echo "| memory | $MEM |"
    echo "| kernel (\`uname -r\`) | $(uname -r) |"
    echo "| nftables | $(first nft --version) |"
    echo "| iptables | $(first iptables --version) |"
    echo "| iperf3 | $(first iperf3 --version) |"
    echo "| rustc | $(first rustc --version) |"
    echo "| apiserver-guard | $(first target/release/apiserver-guard --version) ($SOURCE) |"
    echo
    echo "The machine is shared with other work: absolute numbers are noisy. Every figure is a median of several runs (counts in each section); the ratios and the shape of the curves are the claims, not the absolute times."
    for key in $ALL_PARTS; do
      [ -n "${SECTION[$key]:-}" ] || continue
      echo
      echo "${SECTION[$key]}"
    done
  } >"$OUT"
}

part status \
"\`apiserver-guard status\` per backend with N foreign kube-proxy-like rules (half in FORWARD, half in a KUBE-SERVICES chain; loaded in the backend's iptables variant, iptables-nft for nftables), next to \`apiserver-guard --version\` (the cost of starting the process at all) and the manual check \`iptables -C FORWARD ...\` on the same ruleset. Median wall time of ${STATUS_ARGS[0]} runs, ms, each including \`ip netns exec\` (a few ms here, in both \`status\` and \`--version\`: it narrows their ratio; section 7 times both without it). Target for nftables: \`status\` at 100,000 foreign rules <= 3 x \`--version\`." \
  benches/status-cost.sh "${STATUS_ARGS[@]}"
part apply \
"\`apiserver-guard apply\` per backend, cold (nothing of ours installed; \`remove\` before each run, untimed) and warm (already in place, nothing to change), next to the manual idiom \`iptables -C FORWARD ... || iptables -I FORWARD ...\` (cold: rule absent; warm: present), same foreign rules as above. Median wall time of ${APPLY_ARGS[0]} runs, ms. Ours does more than the idiom: one atomic transaction, both address families, its own chain/table, and it reads back what it installed." \
  benches/apply-cost.sh "${APPLY_ARGS[@]}"
part repair \
"The daemon (\`apiserver-guard run\`, event-driven) in a node namespace routing a pod namespace to an apiserver namespace; a foreign command removes the block, a probe in the pod connects back to back until refused again. The nftables rows run the daemon with \`--table-ownership off\` (an ordinary table a flush can reach; by default the daemon owns it and there is no hole: section 7). Timer rows are computed from the anchors' default intervals. Targets (nftables, ownership off): hole seen by the pod after a flush p99 <= 10 ms; repair p99 <= 3 ms." \
  benches/repair-latency.sh "${REPAIR_ARGS[@]}"
part datapath \
"Traffic that is *not* blocked (pod -> node (forwarding) -> 192.168.50.20; the block is for 192.168.50.10:5443), with no rule and with our block for 1 and 1,000 container CIDRs. Target: within 2 % of no rule at 1,000 CIDRs on nftables. Both tests are CPU-bound on this 2-core machine (client, forwarding and server share the cores), so they measure the per-packet cost of the rules, and the other work on the machine shows up as spread: compare the medians, and read a difference smaller than the min-max range as noise." \
  benches/datapath.sh "${DATAPATH_ARGS[@]}"
part footprint \
"Binary size, idle RSS and CPU of the daemon with its defaults (on this kernel: the nftables table owned by the daemon's socket)." \
  benches/footprint.sh "${FOOTPRINT_ARGS[@]}"
part discovery \
"Kubernetes discovery (\`run --apiserver auto\`) against a fake apiserver in the node namespace: time from an EndpointSlice change to the kernel holding it, seen by a pod that connects to the new and the old address, per backend; then what the Kubernetes client costs, next to a binary built from the last commit before discovery. Target: a change reaches the kernel within 1 s." \
  benches/discovery-latency.sh "${DISCOVERY_ARGS[@]}"
part ownership \
"The daemon owns its nftables table by default (flags owner|persist on its netlink socket, Linux 6.9+): what another process's \`nft flush ruleset\` and \`nft delete table\` do to a pod's connections meanwhile, and what an apply costs in process (the library) and as a process. Targets: 0 connections served; allow-list element update <= 2 ms; \`apply\` cold <= 5 ms beyond process start; \`status\` <= 3 x \`--version\`." \
  benches/table-ownership.sh "${OWNERSHIP_ARGS[@]}"
part attempts \
"The daemon with its defaults (log rules to NFLOG group 1443, metered per source in the kernel: 10/s, burst 20) while a pod floods connects to the blocked apiserver and another pod address tries once at a time: what the daemon costs and how fast and how completely it reports; then what the log statement costs traffic that is not blocked. Targets: attempt to log line p99 <= 100 ms; daemon CPU <= 5 % of a core at the kernel rate limit; RSS <= 20 MiB; the log statement's data-path cost within the noise." \
  benches/attempt-log.sh "${ATTEMPTS_ARGS[@]}"
part commitwait \
"Section 3 misses its repair target (p99 <= 3 ms with \`--table-ownership off\`) by the time our batch waits in the kernel. This part isolates that wait with \`nft\` alone (libnftables from a long-lived process standing in for the daemon, in a scratch namespace): another process deletes a table like ours; 2 ms after the deletion's change event (as the daemon reacts) the stand-in sends one batch, timed from its start to its acknowledgment. The foreign \`nft\` commits its deletion, which queues \`nf_tables_trans_destroy_work\` (a \`synchronize_rcu()\`); when it then closes its netlink socket, \`nft_rcv_nl_event\` takes the netns-wide \`commit_mutex\` and flushes that work, holding the mutex for the whole RCU grace period; every batch takes the same mutex first (\`nf_tables_valid_genid\`, from \`nfnetlink_rcv_batch\`), whatever it holds (net/netfilter/nf_tables_api.c; call chain seen in sched_switch stacks and lock events on this kernel). A deletion from a socket that stays open, or no deletion, leaves no wait: the time is the kernel's, and only ownership (nothing deleted) removes the window." \
  benches/kernel-commit-wait.sh "${COMMITWAIT_ARGS[@]}"
part iptables \
"The iptables-nft backend reads our chain and rule 1 of each hooked chain over nf_tables netlink and compares the bytes with those iptables-nft wrote for our rules (learnt right after our own restore wrote them); \`iptables-nft-save\` reads the whole \`filter\` table and runs only when the bytes cannot decide. Foreign rules as in section 1 (half in FORWARD, half in a KUBE-SERVICES chain). Target: iptables-nft \`status\` at 100,000 foreign rules within 3 x the nftables backend's; repair time reported." \
  benches/iptables-nft-reads.sh "${IPTABLES_ARGS[@]}"

TOTAL=$(( $(date +%s) - T_START ))
write_doc "complete"
echo "written to $OUT in $TOTAL s${KEPT[*]:+ (kept from the earlier document: ${KEPT[*]})}" >&2
if [ ${#FAILED[@]} -gt 0 ]; then echo "failed parts: ${FAILED[*]}" >&2; exit 1; fi
