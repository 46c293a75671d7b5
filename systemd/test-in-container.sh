#!/usr/bin/env bash
# Runs the packaged, hardened systemd units for real: boots a throwaway
# systemd-nspawn container (systemd as its PID 1, its own network namespace,
# its root a tmpfs overlay of this machine's root, so nothing here changes),
# installs the .deb with dpkg, and checks that the sandbox leaves the agent
# able to do its job: nothing enabled or started on install; an unconfigured
# start fails with exit 2 and no restart loop; READY=1, watchdog pings,
# /readyz on localhost; its owned table untouched by `nft flush ruleset`; reload by SIGHUP and
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
leader_pidns=
failures=0

# Diagnostics go to fd 3, the script's stdout, which check() leaves open.
exec 3>&1
note() { printf '      %s\n' "$*" >&3; }
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
# Runs a command inside the container, but only while $leader is still the
# container's init found by boot(): were it gone and its PID reused, nsenter
# would run the command in another process's namespaces (this machine's
# firewall, say).
ct() {
  if [ -z "$leader" ] || [ "$(readlink "/proc/$leader/ns/pid" 2>/dev/null)" != "$leader_pidns" ]; then
    echo "the container's init (PID ${leader:-none}) is gone" >&2
    return 1
  fi
  nsenter -t "$leader" -a "$@"
}
not() { ! "$@"; }
# The container answers and COMMAND fails in it (not merely "nsenter failed").
ct_fails() { ct true && ! ct "$@"; }
prop() { ct systemctl show -P "$2" "$1" 2>/dev/null || true; }
# The block in nftables, or in an iptables variant.
has_nft_table() { ct nft list table inet apiserver_guard >/dev/null 2>&1; }
has_ipt_chain() { ct "$1" -w 5 -S APISERVER-GUARD >/dev/null 2>&1; }
# Polls COMMAND... every 0.1 s until it succeeds, for up to SECONDS.
within() { # within SECONDS COMMAND...
  local tries=$(($1 * 10)) i
  shift
  for i in $(seq "$tries"); do
    "$@" && return 0
    [ "$i" -lt "$tries" ] && sleep 0.1
  done
  return 1
}
eventually() { within 5 "$@"; }
nft_table_has() { ct nft list table inet apiserver_guard 2>/dev/null | grep -F -- "$1" >/dev/null; }
status_says() { [[ $(prop apiserver-guard.service StatusText) == *"$1"* ]]; }
write_config() { ct sh -c 'cat >/etc/apiserver-guard/config.toml'; }
# Whether the daemon's journal has a line matching PATTERN (grep -E), among the
# entries that also match the journalctl MATCHES (e.g. REASON=SIGHUP). journald
# takes in log lines asynchronously: poll with `eventually`. (No grep -q here:
# under pipefail, journalctl cut short by SIGPIPE would fail the pipeline.)
logged() { # logged PATTERN [MATCHES...]
  local pattern=$1
  shift
  ct journalctl -u apiserver-guard.service --no-pager "$@" 2>/dev/null | grep -E -- "$pattern" >/dev/null
}
# How many of the daemon's journal lines match PATTERN (and MATCHES).
count_logged() { # count_logged PATTERN [MATCHES...]
  local pattern=$1
  shift
  ct journalctl -u apiserver-guard.service --no-pager "$@" 2>/dev/null | grep -cE -- "$pattern" || true
}
# Prints UNIT's "ActiveState SubState" once it has settled: no job of its own
# queued or running, and in no transitional state (activating, reloading,
# deactivating, auto-restart). A systemctl start/stop/reload/restart waits for
# its own job only; jobs it propagates to other units (PartOf=,
# ReloadPropagatedFrom=) are queued in the same transaction but may still be
# pending or running when it returns. Gives up after 20 s and prints the last
# state seen, marked "unsettled".
settled() { # settled UNIT
  local unit=$1 i active=
  for i in $(seq 200); do
    if [ -z "$(ct systemctl list-jobs --no-legend "$unit" 2>/dev/null)" ]; then
      active=$(prop "$unit" ActiveState)
      case $active in
      active | inactive | failed)
        # No job left: nothing changes this state any more (a oneshot, or a
        # daemon that does not crash), so a read after the job check is final.
        printf '%s %s\n' "$active" "$(prop "$unit" SubState)"
        return 0
        ;;
      esac
    fi
    sleep 0.1
  done
  printf 'unsettled %s %s\n' "$active" "$(prop "$unit" SubState)"
}
# Whether UNIT settles in the state STATE ("active exited", "inactive dead").
settles_in() { # settles_in UNIT STATE
  local got
  got=$(settled "$1")
  [ "$got" = "$2" ] && return 0
  note "$1: $got, expected $2"
  return 1
}

# The container's init: the child of systemd-nspawn that is PID 1 of a PID
# namespace of its own (the last NSpid in /proc/PID/status is 1, and there is
# more than one: ours, then the container's) and has executed systemd. It
# keeps its PID while the container runs. nspawn's other children (the outer
# child that sets up the mounts and exits, helpers) live in our PID
# namespace; the init, before it executes systemd, may still be setting up.
# (machinectl would need systemd-machined, hence a systemd on this machine.)
find_leader() {
  local pid
  for pid in $(ps -o pid= --ppid "$nspawn_pid" 2>/dev/null); do
    awk '$1 == "NSpid:" { found = NF > 2 && $NF == 1 } END { exit !found }' "/proc/$pid/status" 2>/dev/null &&
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] &&
      echo "$pid" && return 0
  done
  return 1
}

boot() {
  local keep_unit=()
  # Without a systemd on this machine there is no bus to create a scope on:
  # the container stays in our own cgroup.
  [ -d /run/systemd/system ] || keep_unit=(--keep-unit)
  systemd-nspawn -D "$root" --private-network --register=no "${keep_unit[@]}" \
    --link-journal=no --uuid="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
    --machine=apiserver-guard-ct -b --console=pipe </dev/null >>"$work/console.log" 2>&1 &
  nspawn_pid=$!
  local i pid=
  for i in $(seq 300); do # 30 s: nspawn's set-up is slow on a busy machine
    kill -0 "$nspawn_pid" 2>/dev/null || break
    pid=$(find_leader) && break
    sleep 0.1
  done
  if [ -n "$pid" ]; then
    leader=$pid
    leader_pidns=$(readlink "/proc/$pid/ns/pid" 2>/dev/null || true)
  fi
  if [ -z "$leader_pidns" ] || ! ct true 2>/dev/null; then
    echo "container did not start (no init found among the children of systemd-nspawn); console:" >&2
    cat "$work/console.log" >&2
    exit 1
  fi
  local state=
  for i in $(seq 600); do
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.1
  done
  # The init found above is still the container's init and still PID 1 there.
  if [ "$(find_leader)" != "$leader" ] || ! ct true 2>/dev/null; then
    echo "the container's init (PID $leader) went away while it booted; console:" >&2
    cat "$work/console.log" >&2
    exit 1
  fi
  echo "      container $state (init: PID $leader)"
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
  leader_pidns=
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
check "unconfigured daemon: says why" eventually logged 'no container CIDR given'
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
# STATUS= follows READY=1 in a message of its own: systemd may not have it yet.
check "status text from sd_notify" eventually status_says 'block in place'
check "block installed (nft table inet apiserver_guard)" has_nft_table
check "/readyz answers 200 on 127.0.0.1:9440 (listener and IPAddressAllow=localhost)" \
  ct curl -fsS -o /dev/null http://127.0.0.1:9440/readyz
check "the daemon owns its table (flags owner, from the sandboxed unit)" nft_table_has 'flags owner'
ct nft flush ruleset
check "nft flush ruleset: the owned table is skipped, whole" nft_table_has 'block-tcp-port-v4'
check "  ... and nothing needed a repair" not logged 'repaired drift'
# (Output captured first: under pipefail, nft's own exit 1 would fail a pipe into grep.)
nft_delete_refused() {
  local out
  out=$(ct nft delete table inet apiserver_guard 2>&1) && return 1
  [[ $out == *'Operation not permitted'* ]]
}
check "nft delete table: refused while the daemon owns it" nft_delete_refused
check "systemctl reload: same process, config re-read" ct systemctl reload apiserver-guard.service
# ExecReload= (kill -HUP) returns at once; the daemon re-reads on its own time.
check "  ... config re-read on SIGHUP (logged)" eventually logged 'config reloaded' REASON=SIGHUP
sleep 1
check "systemctl reload: main PID unchanged" test "$(prop apiserver-guard.service MainPID)" = "$pid"
printf '%s\nexempt = ["10.0.250.0/24"]\n' "$policy" | write_config
check "config change picked up (exempt set appears)" eventually nft_table_has 10.0.250.0/24
check "nftables.service start (flush ruleset): block back" ct systemctl start nftables.service
check "  ... block present after nftables.service start" eventually has_nft_table
# Only SIGHUP reloads count (a config file change logs another reason), and
# the one SIGHUP before this one is already in the journal (checked above).
sighup_reloads() { count_logged 'config reloaded' REASON=SIGHUP; }
more_sighup_reloads_than() { [ "$(sighup_reloads)" -gt "$1" ]; }
before=$(sighup_reloads)
ct systemctl reload nftables.service
check "nftables.service reload: propagated to us (ReloadPropagatedFrom=)" \
  eventually more_sighup_reloads_than "$before"
check "  ... block present after nftables.service reload" eventually has_nft_table

echo "== daemon, iptables backends"
printf '%s\nbackend = "iptables-legacy"\n' "$policy" | write_config
check "iptables-legacy: chain installed (CAP_NET_RAW, xtables lock, /proc/self/net)" \
  eventually has_ipt_chain iptables-legacy
check "iptables-legacy: the nftables table was removed" eventually ct_fails nft list table inet apiserver_guard
ct iptables-legacy -w 5 -F OUTPUT
legacy_jump() { ct iptables-legacy -w 5 -S OUTPUT 2>/dev/null | grep -F APISERVER-GUARD >/dev/null; }
check "iptables-legacy: flushed jump repaired by the periodic resync (10 s)" within 12 legacy_jump
printf '%s\nbackend = "iptables-nft"\n' "$policy" | write_config
check "iptables-nft: chain installed" eventually has_ipt_chain iptables-nft
check "iptables-nft: the legacy chain was removed" eventually ct_fails iptables-legacy -w 5 -S APISERVER-GUARD
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
# systemctl waits for the nftables.service job only: the one-shot's
# propagated reload, restart or stop may still be queued or running when it
# returns (a restart's `apply` still running, say, which the next stop would
# cut short). Each check waits for the one-shot to settle, then asserts.
oneshot_applied() { settles_in apiserver-guard-apply.service "active exited" && has_nft_table; }
check "  ... active (exited) with the block in place" oneshot_applied
ct systemctl reload nftables.service
check "nftables.service reload (flushes): block applied again (ReloadPropagatedFrom=)" oneshot_applied
ct systemctl restart nftables.service
check "nftables.service restart: block applied again (PartOf=)" oneshot_applied
ct systemctl stop nftables.service
check "nftables.service stop (flushes): the one-shot is stopped too, never 'active' over no block" \
  settles_in apiserver-guard-apply.service "inactive dead"
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
check "removal stopped the daemon" ct_fails pgrep -x apiserver-guard
check "removal left the block in place (fail-closed)" has_nft_table
check "removal kept the config" ct test -f /etc/apiserver-guard/config.toml
check "removal kept the state directory (StateDirectory=, the discovery cache)" ct test -d /var/lib/apiserver-guard
check "dpkg -P succeeds" ct dpkg -P apiserver-guard
purged() {
  ct_fails test -e /etc/apiserver-guard/config.toml &&
    ct_fails test -L /etc/systemd/system/multi-user.target.wants/apiserver-guard.service
}
check "purge removed the config and the enable link" purged
check "purge removed the state directory" ct_fails test -e /var/lib/apiserver-guard

echo
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) FAILED"
  exit 1
fi
echo "all checks passed"
