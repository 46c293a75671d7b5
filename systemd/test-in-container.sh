#!/usr/bin/env bash
# Runs the packaged, hardened systemd units for real: boots a throwaway
# systemd-nspawn container (systemd as its PID 1, its own network namespace,
# its root a tmpfs overlay of this machine's root, so nothing here changes),
# installs the .deb with dpkg, and checks that the sandbox leaves the agent
# able to do its job: nothing enabled or started on install; an unconfigured
# start fails with exit 2 and no restart loop; READY=1, watchdog pings,
# /readyz on localhost; repair of `nft flush ruleset`; reload by SIGHUP and
# by config change; the nftables, iptables-nft and iptables-legacy backends
# (CAP_NET_RAW, /run/xtables.lock, /proc/self/net); reload propagation from
# nftables.service; fail-closed stop; the one-shot unit; the block in the
# kernel before a stand-in kubelet.service starts at boot; upgrade, conffile
# kept, removal and purge leaving the block. Needs root and systemd-nspawn
# (apt install systemd-container). Prints one line per check; exits 1 if any failed.
# Usage: systemd/test-in-container.sh [path/to/apiserver-guard.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(find target/packages -maxdepth 1 -name 'apiserver-guard_*.deb' | head -n 1)}
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
  echo "no .deb given or found in target/packages (run scripts/build-packages.sh)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (systemd-nspawn, overlay mounts)" >&2
  exit 1
fi
command -v systemd-nspawn >/dev/null || {
  echo "systemd-nspawn missing: apt-get install systemd-container" >&2
  exit 1
}

work=$(mktemp -d /tmp/apiserver-guard-ct.XXXXXX)
root=$work/root
nspawn_pid=
leader=
failures=0

pass() { printf 'PASS  %s\n' "$*"; }
fail() {
  printf 'FAIL  %s\n' "$*"
  failures=$((failures + 1))
}
check() { # check DESCRIPTION COMMAND...: PASS when the command succeeds
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
ct() { nsenter -t "$leader" -a "$@"; }
not() { ! "$@"; }
prop() { ct systemctl show -P "$2" "$1" 2>/dev/null || true; }
# The block in nftables, or in an iptables variant.
has_nft_table() { ct nft list table inet apiserver_guard >/dev/null 2>&1; }
has_ipt_chain() { ct "$1" -w 5 -S APISERVER-GUARD >/dev/null 2>&1; }
# Polls COMMAND... for up to 5 s.
eventually() {
  local i
  for i in $(seq 50); do
    "$@" && return 0
    [ "$i" -lt 50 ] && sleep 0.1
  done
  return 1
}
write_config() { ct sh -c 'cat >/etc/apiserver-guard/config.toml'; }

boot() {
  local keep_unit=()
  # Without a systemd on this machine there is no bus to create a scope on:
  # the container stays in our own cgroup.
  [ -d /run/systemd/system ] || keep_unit=(--keep-unit)
  systemd-nspawn -D "$root" --private-network --register=no "${keep_unit[@]}" \
    --link-journal=no --uuid="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
    --machine=apiserver-guard-ct -b --console=pipe </dev/null >>"$work/console.log" 2>&1 &
  nspawn_pid=$!
  local i
  for i in $(seq 100); do
    leader=$(ps -o pid= --ppid "$nspawn_pid" 2>/dev/null | tr -d ' ' | head -n 1 || true)
    [ -n "$leader" ] && ct true 2>/dev/null && break
    sleep 0.1
  done
  [ -n "$leader" ] || {
    echo "container did not start; console:" >&2
    cat "$work/console.log" >&2
    exit 1
  }
  local state=
  for i in $(seq 600); do
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.1
  done
  echo "      container $state"
}

shutdown_ct() {
  [ -n "$nspawn_pid" ] || return 0
  if [ -n "$leader" ]; then ct systemctl poweroff >/dev/null 2>&1 || true; fi
  local i
  for i in $(seq 300); do
    kill -0 "$nspawn_pid" 2>/dev/null || break
    # nspawn halts the container on the first SIGTERM, kills it on the second.
    case $i in 100 | 200) kill -TERM "$nspawn_pid" 2>/dev/null || true ;; esac
    sleep 0.1
  done
  wait "$nspawn_pid" 2>/dev/null || true
  nspawn_pid=
  leader=
}

cleanup() {
  shutdown_ct
  umount "$root" 2>/dev/null || true
  umount "$work" 2>/dev/null || true
  rmdir "$work" 2>/dev/null || true
}
trap cleanup EXIT

# --- A writable throwaway root: this machine's root, read-only, under a tmpfs.
mount -t tmpfs -o size=1g,mode=0755 apiserver-guard-ct "$work"
mkdir "$work/upper" "$work/overlay-work" "$root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
# Start none of this machine's enabled services in the container.
find "$root/etc/systemd/system" -path '*.wants/*' -delete
# A Docker-style policy-rc.d (exit 101: "start nothing") would make the
# maintainer scripts' deb-systemd-invoke skip its stop/restart, as it should
# there; a real node has none.
rm -f "$root/usr/sbin/policy-rc.d"
# A stand-in kubelet that records, when it starts, whether the block is there.
cat >"$root/etc/systemd/system/kubelet.service" <<'UNIT'
[Unit]
Description=stand-in kubelet: records whether the apiserver-guard block was in the kernel when it started
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'if nft list table inet apiserver_guard >/dev/null 2>&1; then echo present; else echo absent; fi >/run/kubelet-saw-block'
[Install]
WantedBy=multi-user.target
UNIT
cp "$deb" "$root/root/apiserver-guard.deb"

echo "== booting the container (systemd $(systemd-nspawn --version | head -n 1 | cut -d' ' -f2))"
boot

echo "== install"
check "dpkg -i installs the package" ct dpkg -i /root/apiserver-guard.deb
check "nothing enabled: apiserver-guard.service is disabled" \
  test "$(ct systemctl is-enabled apiserver-guard.service 2>/dev/null)" = disabled
check "nothing enabled: apiserver-guard-apply.service is disabled" \
  test "$(ct systemctl is-enabled apiserver-guard-apply.service 2>/dev/null)" = disabled
check "nothing started on install" \
  test "$(ct systemctl is-active apiserver-guard.service apiserver-guard-apply.service | sort -u)" = inactive
check "postinst created /run/xtables.lock" ct test -f /run/xtables.lock
check "systemd-analyze verify: the installed units load without a message" \
  test -z "$(ct systemd-analyze verify apiserver-guard.service apiserver-guard-apply.service 2>&1)"
ct systemd-analyze security apiserver-guard.service apiserver-guard-apply.service --no-pager 2>/dev/null |
  grep -E '^(UNIT|apiserver)' | sed 's/^/      /'

echo "== unconfigured (the packaged config has every key commented out)"
ct systemctl start apiserver-guard.service >/dev/null 2>&1 && fail "unconfigured start must fail"
sleep 3
check "unconfigured daemon: exit status 2" test "$(prop apiserver-guard.service ExecMainStatus)" = 2
check "unconfigured daemon: not restarted (RestartPreventExitStatus=2)" \
  test "$(prop apiserver-guard.service NRestarts)" = 0
check "unconfigured daemon: says why" \
  sh -c "nsenter -t $leader -a journalctl -u apiserver-guard.service --no-pager | grep -q 'no container CIDR given'"
ct systemctl start apiserver-guard-apply.service >/dev/null 2>&1 && fail "unconfigured one-shot must fail"
check "unconfigured one-shot: exit status 2" test "$(prop apiserver-guard-apply.service ExecMainStatus)" = 2
ct systemctl reset-failed apiserver-guard.service apiserver-guard-apply.service

echo "== daemon, nftables backend"
policy='container_cidr = ["10.0.0.0/16"]
apiserver = ["192.168.50.10:5443"]'
printf '%s\n' "$policy" | write_config
check "configured daemon starts (READY=1 reached systemd)" ct systemctl start apiserver-guard.service
started=$(date +%s)
pid=$(prop apiserver-guard.service MainPID)
check "status text from sd_notify" sh -c "nsenter -t $leader -a systemctl show -P StatusText apiserver-guard.service | grep -q 'block in place'"
check "block installed (nft table inet apiserver_guard)" has_nft_table
check "/readyz answers 200 on 127.0.0.1:9440 (listener and IPAddressAllow=localhost)" \
  ct curl -fsS -o /dev/null http://127.0.0.1:9440/readyz
ct nft flush ruleset
check "nft flush ruleset: repaired (nft monitor works in the sandbox)" eventually has_nft_table
check "repair was logged" \
  sh -c "nsenter -t $leader -a journalctl -u apiserver-guard.service --no-pager | grep -q 'repaired drift'"
check "systemctl reload: same process, config re-read" ct systemctl reload apiserver-guard.service
sleep 1
check "systemctl reload: main PID unchanged" test "$(prop apiserver-guard.service MainPID)" = "$pid"
printf '%s\nexempt = ["10.0.250.0/24"]\n' "$policy" | write_config
check "config change picked up (exempt set appears)" \
  eventually sh -c "nsenter -t $leader -a nft list table inet apiserver_guard | grep -q 10.0.250.0/24"
check "nftables.service start (flush ruleset): block back" ct systemctl start nftables.service
check "  ... block present after nftables.service start" eventually has_nft_table
before=$(ct journalctl -u apiserver-guard.service --no-pager | grep -c 'config reloaded' || true)
ct systemctl reload nftables.service
check "nftables.service reload: propagated to us (ReloadPropagatedFrom=)" \
  eventually sh -c "[ \$(nsenter -t $leader -a journalctl -u apiserver-guard.service --no-pager | grep -c 'config reloaded') -gt $before ]"
check "  ... block present after nftables.service reload" eventually has_nft_table

echo "== daemon, iptables backends"
printf '%s\nbackend = "iptables-legacy"\n' "$policy" | write_config
check "iptables-legacy: chain installed (CAP_NET_RAW, xtables lock, /proc/self/net)" \
  eventually has_ipt_chain iptables-legacy
check "iptables-legacy: the nftables table was removed" eventually sh -c "! nsenter -t $leader -a nft list table inet apiserver_guard"
ct iptables-legacy -w 5 -F OUTPUT
check "iptables-legacy: flushed jump repaired by the periodic resync (10 s)" \
  sh -c "for i in \$(seq 12); do nsenter -t $leader -a iptables-legacy -w 5 -S OUTPUT | grep -q APISERVER-GUARD && exit 0; sleep 1; done; exit 1"
printf '%s\nbackend = "iptables-nft"\n' "$policy" | write_config
check "iptables-nft: chain installed" eventually has_ipt_chain iptables-nft
check "iptables-nft: the legacy chain was removed" eventually sh -c "! nsenter -t $leader -a iptables-legacy -w 5 -S APISERVER-GUARD"
printf '%s\n' "$policy" | write_config
check "back to auto (nftables)" eventually has_nft_table

echo "== watchdog"
elapsed=$(($(date +%s) - started))
[ "$elapsed" -lt 35 ] && sleep $((35 - elapsed))
check "alive after >30 s (WatchdogSec=30s): same PID, no restart" \
  test "$(prop apiserver-guard.service MainPID)" = "$pid" -a "$(prop apiserver-guard.service NRestarts)" = 0
errors=$(ct journalctl _SYSTEMD_UNIT=apiserver-guard.service -p err --no-pager -o cat | grep -v 'no container CIDR' || true)
if [ -z "$errors" ]; then
  pass "no error in the daemon's log"
else
  fail "errors in the daemon's log:"
  printf '%s\n' "$errors" | sed 's/^/      /'
fi

echo "== stop (fail-closed)"
check "systemctl stop" ct systemctl stop apiserver-guard.service
check "block still in place after stop" has_nft_table

echo "== one-shot unit"
ct nft flush ruleset
check "apiserver-guard-apply.service starts" ct systemctl start apiserver-guard-apply.service
check "  ... active (exited) with the block in place" \
  sh -c "[ \"\$(nsenter -t $leader -a systemctl show -P SubState apiserver-guard-apply.service)\" = exited ] && nsenter -t $leader -a nft list table inet apiserver_guard"
ct systemctl reload nftables.service
check "nftables.service reload (flushes): block applied again" eventually has_nft_table
ct systemctl restart nftables.service
check "nftables.service restart: block applied again (PartOf=)" eventually has_nft_table
ct systemctl stop nftables.service
check "nftables.service stop (flushes): the one-shot is stopped too, never 'active' over no block" \
  test "$(ct systemctl is-active apiserver-guard-apply.service)" = inactive
printf '%s\nbackend = "iptables-legacy"\n' "$policy" | write_config
check "one-shot with iptables-legacy" ct systemctl restart apiserver-guard-apply.service
check "  ... chain installed" has_ipt_chain iptables-legacy
ct systemctl stop apiserver-guard-apply.service
ct apiserver-guard remove >/dev/null
printf '%s\n' "$policy" | write_config

echo "== boot: the block is in place before kubelet starts"
ct systemctl enable apiserver-guard.service kubelet.service >/dev/null 2>&1
shutdown_ct
boot
check "after boot: apiserver-guard.service active" test "$(ct systemctl is-active apiserver-guard.service)" = active
check "after boot: /run/xtables.lock created by tmpfiles.d" ct test -f /run/xtables.lock
check "stand-in kubelet saw the block when it started" \
  test "$(ct cat /run/kubelet-saw-block 2>/dev/null)" = present
guard_ready=$(prop apiserver-guard.service ActiveEnterTimestampMonotonic)
kubelet_start=$(prop kubelet.service ExecMainStartTimestampMonotonic)
check "apiserver-guard was ready (${guard_ready} us) before kubelet started (${kubelet_start} us)" \
  test "$guard_ready" -gt 0 -a "$guard_ready" -lt "$kubelet_start"
net_pre=$(prop network-pre.target ActiveEnterTimestampMonotonic)
check "... and before network-pre.target (${net_pre} us)" test "$guard_ready" -le "$net_pre"
echo "      critical chain:"
ct systemd-analyze critical-chain kubelet.service --no-pager 2>/dev/null | tail -n +3 | sed 's/^/      /'

echo "== periodic probe: needs the example drop-in (probe.conf)"
# A pod and an apiserver namespace routed through the container ("the node").
# shellcheck disable=SC2016 # $ns expands inside the container's shell
ct sh -e -c '
  ip netns add pod
  ip netns add api
  ip link add vpod type veth peer name eth0 netns pod
  ip link add vapi type veth peer name eth0 netns api
  ip addr add 10.0.1.1/24 dev vpod && ip link set vpod up
  ip addr add 192.168.50.1/24 dev vapi && ip link set vapi up
  for ns in pod api; do ip -n $ns link set lo up && ip -n $ns link set eth0 up; done
  ip -n pod addr add 10.0.1.2/24 dev eth0 && ip -n pod route add default via 10.0.1.1
  ip -n api addr add 192.168.50.10/24 dev eth0 && ip -n api route add default via 192.168.50.1
  sysctl -qw net.ipv4.ip_forward=1
  systemd-run -q --unit=fake-apiserver ip netns exec api python3 -m http.server 5443 --bind 192.168.50.10
'
metrics() { ct curl -fsS http://127.0.0.1:9440/metrics 2>/dev/null || true; }
probe_ok() { metrics | grep -qx 'apiserver_guard_probe_ok 1'; }
printf '%s\nprobe_interval = "1s"\n' "$policy" | write_config
ct systemctl restart apiserver-guard.service
sleep 4
check "without the drop-in the probe cannot pass (no setns, IPAddressDeny=any)" not probe_ok
ct journalctl _SYSTEMD_UNIT=apiserver-guard.service --no-pager -o cat | grep -m 1 'could not verify' | cut -c1-200 | sed 's/^/      /' || true
ct install -D -m 0644 /usr/share/doc/apiserver-guard/examples/probe.conf /etc/systemd/system/apiserver-guard.service.d/probe.conf
ct systemctl daemon-reload
ct systemctl restart apiserver-guard.service
check "with the drop-in: probe passes (pod refused, node served)" eventually probe_ok
metrics | grep -E '^apiserver_guard_probe_(outcome|reachable)\{.*\} 1' | sed 's/^/      /'
ct systemd-analyze security apiserver-guard.service --no-pager 2>/dev/null | grep Overall | sed 's/^/      with probe.conf: /'
printf '%s\n' "$policy" | write_config
ct rm -r /etc/systemd/system/apiserver-guard.service.d
ct systemctl daemon-reload
ct systemctl restart apiserver-guard.service

echo "== upgrade, removal, purge"
ct sh -c 'echo "# local edit" >>/etc/apiserver-guard/config.toml'
pid=$(prop apiserver-guard.service MainPID)
check "upgrade (dpkg -i again) succeeds" ct dpkg -i /root/apiserver-guard.deb
check "upgrade: running daemon restarted on the new binary" \
  test "$(prop apiserver-guard.service MainPID)" != "$pid" -a "$(ct systemctl is-active apiserver-guard.service)" = active
check "upgrade: the edited conffile is kept" ct grep -q '^# local edit' /etc/apiserver-guard/config.toml
check "upgrade: block in place" has_nft_table
check "dpkg -r succeeds" ct dpkg -r apiserver-guard
check "removal stopped the daemon" sh -c "! nsenter -t $leader -a pgrep -x apiserver-guard"
check "removal left the block in place (fail-closed)" has_nft_table
check "removal kept the config" ct test -f /etc/apiserver-guard/config.toml
check "removal kept the state directory (StateDirectory=, the discovery cache)" ct test -d /var/lib/apiserver-guard
check "dpkg -P succeeds" ct dpkg -P apiserver-guard
check "purge removed the config and the enable link" \
  sh -c "! nsenter -t $leader -a test -e /etc/apiserver-guard/config.toml && ! nsenter -t $leader -a test -L /etc/systemd/system/multi-user.target.wants/apiserver-guard.service"
check "purge removed the state directory" sh -c "! nsenter -t $leader -a test -e /var/lib/apiserver-guard"

echo
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
