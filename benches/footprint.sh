#!/usr/bin/env bash
# Footprint of the `apiserver-guard run` daemon: size of target/release/apiserver-guard, idle RSS
# (VmRSS/VmHWM from /proc/PID/status) and idle CPU over SECONDS (utime+stime from /proc/PID/stat
# before and after, divided by wall time, % of one core): the daemon's own, with the short-lived
# tools it ran and reaped (nft/iptables for each resync). The daemon hears ruleset changes on a
# netlink socket of its own (no child process). Default
# resync (10 s), tunnel mode, each row in its own network namespace (deleted on exit), nothing
# else running there; a row BACKEND:N first loads N foreign kube-proxy-like iptables-nft rules.
# The daemon runs with its defaults, so on Linux 6.9+ it owns its nftables table (flags
# owner|persist); the "table owned" column is its apiserver_guard_table_owned metric.
# Targets from the issue: idle RSS < 15 MiB, idle CPU < 0.5% of a core (reported, not asserted).
# Prints a markdown table to stdout (progress on stderr) and rewrites its section of
# docs/benchmarks-daemon.md.
# Usage: benches/footprint.sh [SECONDS] [BACKEND:N...]   (as root; default: 60 nftables:0;
#        about SECONDS + 10 s per row, more with foreign rules)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
SECS=${1:-60}; shift || true
ROWS=("$@"); [ ${#ROWS[@]} -gt 0 ] || ROWS=(nftables:0)
cargo build --release --locked -q
BIN=${APISERVER_GUARD_BIN:-$PWD/target/release/apiserver-guard}
HZ=$(getconf CLK_TCK)
NS="agbench-fp-$$"
LOG=$(mktemp)
DPID=""
cleanup() {
  [ -z "$DPID" ] || kill -KILL "$DPID" 2>/dev/null || true
  if ip netns list | grep -qw "$NS"; then
    # Only processes inside our own, uniquely named namespace, by pid.
    for p in $(ip netns pids "$NS"); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ticks() { # ticks <pid> <fields>: sum of the given /proc/PID/stat fields (1-based, as in proc(5))
  local pid=$1 f=$2
  sed 's/^.*) //' "/proc/$pid/stat" | awk -v f="$f" '{n = split(f, a, ","); s = 0; for (i = 1; i <= n; i++) s += $(a[i] - 2); print s}'
}
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
metric() { # metric <name{labels}>: value from /metrics inside the namespace, 0 if absent
  { ip netns exec "$NS" curl -s --max-time 2 http://127.0.0.1:9440/metrics || true; } | awk -v m="$1" '$1 == m {print $2; f = 1} END {if (!f) print 0}'
}
load_foreign() { # n kube-proxy-like rules: half in FORWARD (unrelated /32s), half in an unreferenced chain
  local n=$1 half=$(( $1 / 2 ))
  awk -v n="$n" -v half="$half" 'BEGIN {
    print "*filter"; print ":KUBE-SERVICES - [0:0]"
    for (i = 0; i < n; i++) {
      a = int(i / 65536) % 16; b = int(i / 256) % 256; c = i % 256
      if (i < half) printf "-A FORWARD -s 172.%d.%d.%d/32 -d 172.%d.%d.%d/32 -m comment --comment \"ns/svc-%d\" -j ACCEPT\n", 16 + a, b, c, 17 + a, b, c, i
      else printf "-A KUBE-SERVICES -d 172.%d.%d.%d/32 -p tcp -m tcp --dport 443 -m comment --comment \"ns/svc-%d\" -j RETURN\n", 18 + a, b, c, i
    }
    print "COMMIT" }' | ip netns exec "$NS" iptables-nft-restore --noflush
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? 100 * a / b : 0)}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

SIZE=$(stat -c %s "$BIN")
FACTS="Machine: $(nproc) cores (\`nproc\`), kernel $(uname -r), $(nft --version), $(iptables --version); run $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "$FACTS" >&2

TABLE="| backend | foreign rules | table owned | binary size | idle RSS (VmRSS) | peak RSS (VmHWM) | idle CPU, daemon | idle CPU, incl. reaped tools | checks in window (timer / event) |
|---|---:|---|---:|---:|---:|---:|---:|---:|"
for row in "${ROWS[@]}"; do
  backend=${row%%:*}; n=${row#*:}
  echo "row $backend with $n foreign rules: ${SECS}s idle" >&2
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  [ "$n" -eq 0 ] || load_foreign "$n"
  ip netns exec "$NS" "$BIN" run --container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel \
    --config /dev/null --log-format text --backend "$backend" 2>"$LOG" &
  DPID=$!   # `ip netns exec` execs the daemon: same pid
  for _ in $(seq 600); do grep -q 'ready: the block is in place' "$LOG" && break; sleep 0.1; done
  grep -q 'ready: the block is in place' "$LOG" || { echo "daemon not ready after 60 s:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 1
  timer0=$(metric 'apiserver_guard_reconciles_total{trigger="timer"}'); event0=$(metric 'apiserver_guard_reconciles_total{trigger="event"}')
  own0=$(ticks "$DPID" 14,15); all0=$(ticks "$DPID" 14,15,16,17); w0=$(date +%s%N)
  sleep "$SECS"
  own1=$(ticks "$DPID" 14,15); all1=$(ticks "$DPID" 14,15,16,17); w1=$(date +%s%N)
  timer1=$(metric 'apiserver_guard_reconciles_total{trigger="timer"}'); event1=$(metric 'apiserver_guard_reconciles_total{trigger="event"}')
  wall_ticks=$(awk -v a="$w0" -v b="$w1" -v hz="$HZ" 'BEGIN {print (b - a) / 1e9 * hz}')
  rss=$(kib "$DPID" VmRSS); hwm=$(kib "$DPID" VmHWM)
  owned=$(metric apiserver_guard_table_owned); [ "$owned" = 1 ] && owned="yes (owner, persist)" || owned="no"
  TABLE+="
| $backend | $n | $owned | $(mib $((SIZE / 1024))) MiB | $(mib "$rss") MiB | $(mib "$hwm") MiB | $(pct $((own1 - own0)) "$wall_ticks") % | $(pct $((all1 - all0)) "$wall_ticks") % | $((timer1 - timer0)) / $((event1 - event0)) |"
  kill -TERM "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""
  for p in $(ip netns pids "$NS"); do kill -KILL "$p" 2>/dev/null || true; done
  ip netns del "$NS"
done

BODY="$FACTS

Idle daemon (\`apiserver-guard run --mode tunnel --backend B\`, its defaults: resync 10 s, table ownership
auto, nothing else changing the namespace's firewall), measured over ${SECS} s from 1 s after \`ready\`.
\"Table owned\": its \`apiserver_guard_table_owned\` metric (the nftables table held by the daemon's netlink
socket). CPU = (utime+stime) delta / wall time, % of one core; \"incl. reaped tools\" adds cutime+cstime
(processes a check runs: iptables tools; none for nftables, which speaks netlink itself). Targets from the issue: idle RSS < 15 MiB, idle CPU < 0.5 % of a core. Regenerate with
\`benches/footprint.sh ${SECS} ${ROWS[*]}\`.

$TABLE"
echo "$BODY"

DOC=docs/benchmarks-daemon.md
mkdir -p docs
# shellcheck disable=SC2016 # the backquotes are Markdown, not command substitution
[ -f "$DOC" ] || printf '# apiserver-guard daemon benchmarks\n\nGenerated by `benches/repair-latency.sh` and `benches/footprint.sh`; each script rewrites only its own section.\n' >"$DOC"
SECTION="<!-- footprint:begin -->
## Footprint

$BODY
<!-- footprint:end -->"
if grep -q '<!-- footprint:begin -->' "$DOC"; then
  awk -v s="$SECTION" '/<!-- footprint:begin -->/ {print s; skip = 1; next} /<!-- footprint:end -->/ {skip = 0; next} !skip' "$DOC" >"$DOC.tmp"
  mv "$DOC.tmp" "$DOC"
else
  printf '\n%s\n' "$SECTION" >>"$DOC"
fi
echo "written to $DOC" >&2
