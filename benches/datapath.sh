#!/usr/bin/env bash
# Data-path cost of the block on traffic it does not block: TCP throughput (iperf3, one stream)
# and short-connection rate (benches/connect_rate.rs: back-to-back TCP connects, RST-closed)
# from a pod namespace (10.0.1.2) through a forwarding node namespace to 192.168.50.20 in an
# api namespace; the blocked apiserver is 192.168.50.10:5443, so every packet walks the block's
# rules without matching. Configurations, applied with `apiserver-guard apply --mode tunnel`
# in the node namespace: no rule; nftables with 1 and 1,000 container CIDRs (one set lookup);
# iptables-nft with 1 and 1,000, iptables-legacy with 1,000 (one rule per CIDR). The pod's
# 10.0.0.0/16 is always one of the CIDRs. Repetitions are interleaved (every configuration once
# per round) so that load from other work on the machine spreads over all of them; the table
# gives medians, min-max, and the ratio of the medians to "no rule".
# Prints a markdown table; its own namespaces only (deleted on exit), nothing in the root one.
# Usage: benches/datapath.sh [ROUNDS] [IPERF_SECONDS] [CONNECT_SECONDS]
#        (as root; default 5 5 3, about 5 minutes; apt-get install -y iperf3 if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
ROUNDS=${1:-5} TPUT_S=${2:-5} CONN_S=${3:-3}
command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install -y iperf3" >&2; exit 1; }
cargo build --release --locked -q
BIN="$PWD/target/release/apiserver-guard"
CONNECT=$(cargo bench --locked -q --no-run --bench connect_rate --message-format=json \
  | jq -r 'select(.target.name == "connect_rate" and .executable != null) | .executable')
[ -x "$CONNECT" ] || { echo "connect_rate bench binary not found" >&2; exit 1; }
POD="agbench-dp-pod-$$" NODE="agbench-dp-node-$$" API="agbench-dp-api-$$"
TARGET=192.168.50.20 APISERVER=192.168.50.10:5443
SRV=""
cleanup() {
  [ -z "$SRV" ] || kill "$SRV" 2>/dev/null || true
  for ns in "$POD" "$NODE" "$API"; do
    if ip netns list | grep -qw "$ns"; then
      # Only processes inside our own, uniquely named namespaces, by pid.
      for p in $(ip netns pids "$ns"); do kill -KILL "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pod (10.0.1.2/24) <-veth-> node (forwarding) <-veth-> api (192.168.50.10 and .20 /24)
for ns in "$POD" "$NODE" "$API"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec "$NODE" sysctl -q -w net.ipv4.ip_forward=1
ip -n "$NODE" link add to-pod type veth peer name eth0 netns "$POD"
ip -n "$NODE" link add to-api type veth peer name eth0 netns "$API"
ip -n "$NODE" addr add 10.0.1.1/24 dev to-pod
ip -n "$NODE" addr add 192.168.50.1/24 dev to-api
ip -n "$NODE" link set to-pod up
ip -n "$NODE" link set to-api up
ip -n "$POD" addr add 10.0.1.2/24 dev eth0
ip -n "$POD" link set eth0 up
ip -n "$POD" route add default via 10.0.1.1
ip -n "$API" addr add 192.168.50.10/24 dev eth0
ip -n "$API" addr add "$TARGET/24" dev eth0
ip -n "$API" link set eth0 up
ip -n "$API" route add default via 192.168.50.1

ip netns exec "$API" iperf3 -s -B "$TARGET" -p 5201 >/dev/null 2>&1 &
SRV=$!   # `ip netns exec` execs iperf3: same pid
for _ in $(seq 50); do ip netns exec "$API" ss -ltn | grep -q "$TARGET:5201" && break; sleep 0.1; done

# 1,000 CIDRs: the pod's /16 plus 999 /24s with gaps between them (adjacent ones would be merged).
MANY="10.0.0.0/16"
for ((i = 0; i < 999; i++)); do MANY+=",10.$((1 + i / 128)).$((2 * (i % 128))).0/24"; done
CONFIGS=(none:0 nftables:1 nftables:1000 iptables-nft:1 iptables-nft:1000 iptables-legacy:1000)

configure() { # configure <backend|none> <cidrs>: exactly this block (or none) in the node namespace
  local backend=$1 n=$2 cidrs=10.0.0.0/16
  ip netns exec "$NODE" "$BIN" remove >/dev/null
  [ "$backend" != none ] || return 0
  [ "$n" -eq 1 ] || cidrs=$MANY
  local policy=(--container-cidr "$cidrs" --apiserver "$APISERVER" --mode tunnel --config /dev/null --backend "$backend")
  ip netns exec "$NODE" "$BIN" apply "${policy[@]}" >/dev/null
  ip netns exec "$NODE" "$BIN" status "${policy[@]}" >/dev/null || { echo "block not in place: $backend $n" >&2; exit 1; }
}

declare -A TPUT CONN
for round in $(seq "$ROUNDS"); do
  for cfg in "${CONFIGS[@]}"; do
    backend=${cfg%%:*} n=${cfg#*:}
    configure "$backend" "$n"
    gbps=$(ip netns exec "$POD" iperf3 -c "$TARGET" -p 5201 -t "$TPUT_S" -O 1 -J \
      | jq -r '.end.sum_received.bits_per_second / 1e9')
    read -r rate failed < <("$CONNECT" --bench --client-ns "$POD" --server-ns "$API" --addr "$TARGET:7000" --seconds "$CONN_S")
    echo "datapath round $round/$ROUNDS, $backend x $n CIDRs: $(printf '%.2f' "$gbps") Gbit/s, $rate connects/s ($failed failed)" >&2
    TPUT[$cfg]+="$gbps " CONN[$cfg]+="$rate "
  done
done
ip netns exec "$NODE" "$BIN" remove >/dev/null

stats() { # stats <values...>: "median min max"
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[1], a[NR]}'
}
label() {
  case $1 in
    none:0) echo "no rule" ;;
    nftables:*) echo "nftables, $2 CIDR(s) (one set lookup)" ;;
    *) echo "${1%%:*}, $2 CIDR(s) ($2 rule(s) in APISERVER-GUARD)" ;;
  esac
}
# shellcheck disable=SC2086 # the accumulated values are space-separated numbers
read -r t0 _ _ <<<"$(stats ${TPUT[none:0]})"
# shellcheck disable=SC2086
read -r c0 _ _ <<<"$(stats ${CONN[none:0]})"
echo "| configuration (traffic not blocked) | TCP throughput, Gbit/s: median (min-max) | vs no rule | connects/s: median (min-max) | vs no rule |"
echo "|---|---:|---:|---:|---:|"
for cfg in "${CONFIGS[@]}"; do
  # shellcheck disable=SC2086
  read -r tm tl th <<<"$(stats ${TPUT[$cfg]})"
  # shellcheck disable=SC2086
  read -r cm cl ch <<<"$(stats ${CONN[$cfg]})"
  awk -v l="$(label "$cfg" "${cfg#*:}")" -v tm="$tm" -v tl="$tl" -v th="$th" -v t0="$t0" \
    -v cm="$cm" -v cl="$cl" -v ch="$ch" -v c0="$c0" 'BEGIN {
      printf "| %s | %.2f (%.2f-%.2f) | %.1f %% | %d (%d-%d) | %.1f %% |\n", l, tm, tl, th, 100 * tm / t0, cm, cl, ch, 100 * cm / c0 }'
done
echo
echo "$ROUNDS interleaved rounds; iperf3 -t $TPUT_S -O 1 (one stream, first second omitted), connect rate over $CONN_S s with 2 client threads."
