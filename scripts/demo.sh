#!/usr/bin/env bash
# The main job in a throwaway sandbox: builds apiserver-guard, makes three
# network namespaces (pod 10.0.1.2 in the container CIDR 10.0.0.0/16, a node
# that routes, an "apiserver" serving HTTPS on 192.168.50.10:5443) and runs the
# daemon, `apiserver-guard run`, in the node namespace. One line per step,
# with timings: spawn to ready and to the first refused pod connect; the
# guide's check (`curl -k https://<apiserver>:5443`) from the pod (refused) and
# the node (served); a foreign `nft flush ruleset` that cannot touch the owned
# table; `verify`, `attempts` and three lines of /metrics; a clean stop
# (SIGTERM, exit 0, the table stays); then a daemon with
# `--table-ownership off` repairing a flush (its logged repair time), its
# stop, and `remove`. Touches nothing outside its namespaces, which are
# removed on exit, error or not.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates network namespaces)" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --locked -q
BIN="$PWD/target/release/apiserver-guard"

now_us() { local t=$EPOCHREALTIME; echo $((10#${t//[.,]/})); }
ms_since() { echo $((($(now_us) - $1) / 1000)); } # ms_since <start µs>
T_START=$(now_us)

P="agdemo-$$"
POD="$P-pod" NODE="$P-node" API="$P-api"
TMP=$(mktemp -d)
DAEMON="" LOG=""
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ -n "$LOG" ] && [ -s "$LOG" ]; then
    echo "demo failed (exit $rc); the daemon's last log lines:" >&2
    tail -n 15 "$LOG" >&2
  fi
  [ -z "$DAEMON" ] || kill "$DAEMON" 2>/dev/null || true
  for ns in "$POD" "$NODE" "$API"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
# A signal (Ctrl-C, a closed pipe such as `| head`) exits through the same cleanup.
trap 'exit 130' INT
trap 'exit 143' TERM HUP
trap 'exit 141' PIPE
die() { echo "demo: $*" >&2; exit 1; }

# --- the sandbox: pod -> node (routes) -> apiserver -------------------------
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
# The stand-in apiserver answers each connection in its own thread (a TLS
# handshake the block cuts in half must not hang the next client), with
# a 5 s socket timeout.
cat >"$TMP/apiserver.py" <<'PY'
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 5
    def do_GET(self):
        body = b"apiserver stand-in\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("192.168.50.10", 5443), Handler)
server.daemon_threads = True
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
server.serve_forever()
PY
ip netns exec "$API" python3 "$TMP/apiserver.py" "$TMP/cert.pem" "$TMP/key.pem" >/dev/null 2>&1 &
up=""
for _ in $(seq 50); do
  ip netns exec "$NODE" curl -sk -o /dev/null --max-time 1 https://192.168.50.10:5443/ && { up=1; break; }
  sleep 0.1
done
[ -n "$up" ] || { echo "demo: the stand-in apiserver did not answer within 5 s" >&2; exit 1; }

# --- helpers ----------------------------------------------------------------
URL=https://192.168.50.10:5443/
HEALTH=http://127.0.0.1:9440 # the daemon's default --listen, inside the node namespace
POLICY=(--container-cidr 10.0.0.0/16 --apiserver 192.168.50.10:5443 --mode tunnel)
node() { ip netns exec "$NODE" "$@"; }
guard() { node "$BIN" "$@"; }
step() { printf '%-14s %s\n' "$1" "$2"; } # step <label> <one line>
# check <netns> <served|refused>: "served (N ms)" or "REFUSED (curl exit N,
# N ms)", marked UNEXPECTED (and the demo then exits 1) when not as expected.
check() {
  local t0 rc=0 got
  t0=$(now_us)
  ip netns exec "$1" curl -sk -o /dev/null --max-time 3 "$URL" || rc=$?
  if [ "$rc" -eq 0 ]; then got="served ($(ms_since "$t0") ms)"
  else got="REFUSED (curl exit $rc, $(ms_since "$t0") ms)"; fi
  local want=7
  [ "$2" = served ] && want=0
  if [ "$rc" -ne "$want" ]; then
    got="$got <- UNEXPECTED (expected $2)"
    echo "$1: $got" >>"$TMP/unexpected"
  fi
  echo "$got"
}
both() { echo "pod -> apiserver $(check "$POD" "$1"); node -> apiserver $(check "$NODE" served)"; }
# start_daemon <log> [run options]: spawns `apiserver-guard run`, prints the
# time from spawn to /readyz 200 and to the first pod connect refused.
start_daemon() {
  LOG=$1; shift
  local t0 ready="" refused="" body
  t0=$(now_us)
  # `ip netns exec` execs the binary: $! is the daemon itself.
  ip netns exec "$NODE" "$BIN" run "${POLICY[@]}" --config /dev/null --log-format text "$@" 2>"$LOG" &
  DAEMON=$!
  while [ -z "$ready" ] || [ -z "$refused" ]; do
    kill -0 "$DAEMON" 2>/dev/null || die "the daemon exited early"
    [ "$(ms_since "$t0")" -lt 10000 ] || die "the daemon was not ready and blocking within 10 s"
    if [ -z "$ready" ] && body=$(node curl -sf --max-time 1 "$HEALTH/readyz" 2>/dev/null); then
      ready="$(ms_since "$t0") ms"
    fi
    if [ -z "$refused" ]; then
      local rc=0
      ip netns exec "$POD" curl -sk -o /dev/null --max-time 1 "$URL" || rc=$?
      [ "$rc" -eq 7 ] && refused="$(ms_since "$t0") ms"
    fi
  done
  step "  ready" "/readyz 200 $ready after spawn (\"${body%%$'\n'*}\"); first pod connect refused $refused after spawn"
}
# stop_daemon: SIGTERM, wait, print the exit code and how long it took.
stop_daemon() {
  local t0 rc=0
  t0=$(now_us)
  kill -TERM "$DAEMON"
  wait "$DAEMON" || rc=$?
  DAEMON=""
  [ "$rc" -eq 0 ] || die "the daemon exited $rc on SIGTERM"
  step "SIGTERM" "the daemon exited 0 after $(ms_since "$t0") ms"
}
# table_line: whether the kernel lists our table now, and owned or not.
table_line() {
  local listing
  if listing=$(node nft list table inet apiserver_guard 2>/dev/null); then
    if head -n 3 <<<"$listing" | grep -q 'flags .*owner'; then echo "nft list table: present, flags owner"
    else echo "nft list table: present, not owned"; fi
  else
    echo "nft list table: absent"
  fi
}
# status_line: `status`'s state and owner in one line.
status_line() {
  local out state owner
  out=$(guard status "${POLICY[@]}" --config /dev/null || true)
  state=$(grep -m1 '^state:' <<<"$out" || echo "state: ?")
  owner=$(grep -m1 -o '^owned by: [^(]*([^)]*)' <<<"$out" || echo "no owner")
  echo "status: ${state#state: }, $owner"
}
flush() { # flush: a foreign `nft flush ruleset` in the node namespace, timed
  local t0
  t0=$(now_us)
  node nft flush ruleset
  echo "nft flush ruleset took $(ms_since "$t0") ms"
}

# --- the demo ---------------------------------------------------------------
echo "sandbox: pod 10.0.1.2 (container CIDR 10.0.0.0/16) -> node 10.0.1.1/192.168.50.1 -> apiserver https://192.168.50.10:5443 (set up in $(ms_since "$T_START") ms)"
step "before" "$(both served)"

echo "== apiserver-guard run ${POLICY[*]} (in the node namespace; table owned: the default)"
start_daemon "$TMP/run-owned.log"
step "  curl -k" "$(both refused)"
flushed=$(flush)
step "  foreign" "$flushed; $(table_line)"
step "  after it" "pod -> apiserver $(check "$POD" refused); $(status_line)"
echo "-- apiserver-guard verify --netns /run/netns/$POD --tls (the daemon keeps running)"
guard verify "${POLICY[@]}" --config /dev/null --netns "/run/netns/$POD" --tls | sed 's/^/   /'
echo "-- apiserver-guard attempts (the pod's refused connects, from the daemon's log rules)"
guard attempts | sed 's/^/   /'
echo "-- curl $HEALTH/metrics (3 of its lines)"
node curl -s "$HEALTH/metrics" \
  | grep -E '^apiserver_guard_(in_sync|table_owned|attempts_total)[ {]' | head -n 3 | sed 's/^/   /'
stop_daemon
step "  after it" "$(table_line); $(status_line): the table stays after the daemon; pod -> apiserver $(check "$POD" refused)"

echo "== apiserver-guard run ... --table-ownership off (an ordinary table, repaired after foreign changes)"
start_daemon "$TMP/run-off.log" --table-ownership off
flushed=$(flush)
step "  foreign" "$flushed (an ordinary table goes with everything else)"
repair=""
for _ in $(seq 100); do
  repair=$(grep -m1 -o 'repaired drift in [0-9.]* ms' "$LOG" || true)
  [ -n "$repair" ] && break
  sleep 0.05
done
[ -n "$repair" ] || die "no 'repaired drift' line in the daemon's log within 5 s"
cause=$(grep -m1 -o 'cause="[a-z_]*"' "$LOG" || true)
step "  after it" "daemon log: $repair ($cause); $(table_line); pod -> apiserver $(check "$POD" refused)"
stop_daemon
step "  after it" "$(table_line); $(status_line): the table stays after the daemon; remove it:"
removed=$(guard remove 2>&1) || die "remove failed: $removed"
step "remove" "$removed"
step "  after it" "$(table_line); $(both served)"
echo "demo took $(ms_since "$T_START") ms after the build"
[ ! -s "$TMP/unexpected" ] || die "unexpected results: $(tr '\n' ';' <"$TMP/unexpected")"
