#!/usr/bin/env bash
# A full attempt meter (the sources a spoofing pod can make the kernel learn,
# up to the meter's 65,535) must not slow the daemon's reads: `status` time,
# and the time from SIGHUP (config switched from audit to reject) until the
# reject rules are in the kernel, with N elements in each of `connects_v6` and
# `flows_v6` (the meters of a port-scoped apiserver's rules). Each row
# in its own network namespace (deleted on exit); elements added with nft
# (the same set the packet path fills). BIN= compares another build (e.g.
# the release before the read skipped the meters' elements). The switch time
# is an upper bound: the polling `nft list chain` reads the set's elements too.
# `status` is the median of RUNS runs (default 3; benches/lib.sh).
# Usage: benches/full-meter.sh [N...]   (as root; default: 0 2000 16000 65000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(0 2000 16000 65000)
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q
  BIN="$PWD/target/release/apiserver-guard"
fi
NS="agbench-meter-$$"
DIR=$(mktemp -d)
DPID=""
cleanup() {
  [ -z "$DPID" ] || kill -KILL "$DPID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
CIDRS="10.0.0.0/16,fd00:10::/32"
APIS="192.168.50.10:5443,[fd00:50::10]:5443"
POLICY=(--container-cidr "$CIDRS" --apiserver "$APIS" --mode tunnel)
RUNS=${RUNS:-3}
# shellcheck source=benches/lib.sh
. benches/lib.sh   # ms_runs
now_ms() { echo $(($(date +%s%N) / 1000000)); }
fill() { # fill N: N distinct keys in each v6 meter (connects: iif . source; flows: iif . source . port)
  python3 -c "
n = $1
for s in range(0, n, 5000):
    srcs = ['fd00:10:%x:%x::1' % (i >> 16, i & 0xffff) for i in range(s, min(n, s + 5000))]
    print('add element inet apiserver_guard connects_v6 { %s }' % ', '.join('\"lo\" . ' + a for a in srcs))
    print('add element inet apiserver_guard flows_v6 { %s }' % ', '.join('\"lo\" . ' + a + ' . 40000' for a in srcs))
" >"$DIR/meter.nft"
  ip netns exec "$NS" nft -f "$DIR/meter.nft"
}
fresh() { ip netns del "$NS" 2>/dev/null || true; ip netns add "$NS"; ip -n "$NS" link set lo up; }

echo "| meter elements | \`status\`, median of $RUNS (ms) | SIGHUP audit -> reject rules in the kernel (ms) |"
echo "|---:|---:|---:|"
for n in "${SIZES[@]}"; do
  fresh
  ip netns exec "$NS" "$BIN" apply "${POLICY[@]}" --config /dev/null >/dev/null
  fill "$n"
  status_ms=$(ms_runs 1 : ip netns exec "$NS" "$BIN" status "${POLICY[@]}" --config /dev/null)
  fresh
  printf 'container_cidr = ["10.0.0.0/16", "fd00:10::/32"]\napiserver = ["192.168.50.10:5443", "[fd00:50::10]:5443"]\nmode = "tunnel"\naction = "audit"\n' >"$DIR/cfg.toml"
  ip netns exec "$NS" "$BIN" run --config "$DIR/cfg.toml" --log-format text --table-ownership off 2>"$DIR/log" &
  DPID=$!
  for _ in $(seq 300); do [ -e "$DIR/log" ] && break; sleep 0.01; done
  for _ in $(seq 300); do grep -q 'ready:' "$DIR/log" && break; sleep 0.1; done
  fill "$n"
  sleep 1
  t0=$(now_ms)
  sed -i 's/action = "audit"/action = "reject"/' "$DIR/cfg.toml"
  kill -HUP "$DPID"
  switch_ms="> 60000"
  for _ in $(seq 6000); do
    if ip netns exec "$NS" nft list chain inet apiserver_guard guard 2>/dev/null | grep -q 'block-'; then
      switch_ms=$(($(now_ms) - t0)); break
    fi
    sleep 0.01
  done
  kill -TERM "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""
  echo "| $n | $status_ms | $switch_ms |"
done
