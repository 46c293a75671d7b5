#!/usr/bin/env bash
# The main job in a throwaway sandbox: builds apiserver-guard, makes three
# network namespaces (pod 10.0.1.2 in the container CIDR 10.0.0.0/16, a node
# that routes, an "apiserver" serving HTTPS on 192.168.50.10:5443), and shows
# the guide's check (`curl -k https://<apiserver>:5443`) from the pod and from
# the node before and after `apiserver-guard apply`, after a foreign
# `nft flush ruleset`, and after `remove`. Touches nothing outside its namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates network namespaces)" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --locked -q
BIN="$PWD/target/release/apiserver-guard"

P="agdemo-$$"
POD="$P-pod" NODE="$P-node" API="$P-api"
TMP=$(mktemp -d)
cleanup() {
  for ns in "$POD" "$NODE" "$API"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

for ns in "$POD" "$NODE" "$API"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add eth0 netns "$POD" type veth peer name to-pod netns "$NODE"
ip link add eth0 netns "$API" type veth peer name to-api netns "$NODE"
ip -n "$POD" addr add 10.0.1.2/24 dev eth0
ip -n "$NODE" addr add 10.0.1.1/24 dev to-pod
ip -n "$NODE" addr add 192.168.50.1/24 dev to-api
ip -n "$API" addr add 192.168.50.10/24 dev eth0
ip -n "$POD" link set eth0 up
ip -n "$NODE" link set to-pod up
ip -n "$NODE" link set to-api up
ip -n "$API" link set eth0 up
ip -n "$POD" route add default via 10.0.1.1
ip -n "$API" route add default via 192.168.50.1
ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=apiserver -days 1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
ip netns exec "$API" openssl s_server -quiet -www -accept 5443 \
  -cert "$TMP/cert.pem" -key "$TMP/key.pem" >/dev/null 2>&1 &
for _ in $(seq 50); do
  ip netns exec "$NODE" curl -sk -o /dev/null --max-time 1 https://192.168.50.10:5443/ && break
  sleep 0.1
done

check() { # check <label> <netns>
  local t0 t1 rc=0
  t0=$(date +%s%N)
  ip netns exec "$2" curl -sk -o /dev/null --max-time 3 https://192.168.50.10:5443/ || rc=$?
  t1=$(date +%s%N)
  local ms=$(( (t1 - t0) / 1000000 ))
  if [ "$rc" -eq 0 ]; then printf '  %-31s served    (%d ms)\n' "$1" "$ms"
  else printf '  %-31s REFUSED   (curl exit %d, %d ms)\n' "$1" "$rc" "$ms"; fi
}
both() { check "pod  10.0.1.2 -> apiserver" "$POD"; check "node 192.168.50.1 -> apiserver" "$NODE"; }
guard() { ip netns exec "$NODE" "$BIN" "$@" --config /dev/null; }
POLICY=(--container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel)

echo "== before: curl -k https://192.168.50.10:5443 (the guide's check)"; both
echo; echo "== apiserver-guard apply ${POLICY[*]}"; guard apply "${POLICY[@]}"; both
echo; echo "== apply again (idempotent)"; guard apply "${POLICY[@]}"
echo; echo "== another agent runs 'nft flush ruleset' on the node"
ip netns exec "$NODE" nft flush ruleset; both
echo; echo "== apiserver-guard status"; guard status "${POLICY[@]}" || echo "  (status exit $?: drift found)"
echo; echo "== apply repairs it"; guard apply "${POLICY[@]}"; both
echo; echo "== apiserver-guard remove"; ip netns exec "$NODE" "$BIN" remove; both
