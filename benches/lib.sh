# shellcheck shell=bash
# Helpers shared by the shell benches (sourced, not run): timing medians and the foreign
# kube-proxy-like ruleset. Callers set RUNS (repetitions) and NS (their own network namespace).

ms_runs() { # ms_runs <strict 0|1> <prep> <cmd...>: median wall time of RUNS runs of cmd, in ms
  # prep runs (untimed, output discarded) before each timed run; strict=1 fails on a non-zero exit.
  local strict=$1 prep=$2 times=() t0 t1 rc
  shift 2
  for _ in $(seq "$RUNS"); do
    "$prep" >/dev/null 2>&1 || true
    rc=0
    t0=$(date +%s%N); "$@" >/dev/null 2>&1 || rc=$?; t1=$(date +%s%N)
    if [ "$strict" = 1 ] && [ "$rc" -ne 0 ]; then
      echo "failed (exit $rc): $*" >&2
      return 1
    fi
    times+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

ms_median() { # ms_median <cmd...>: median wall time of RUNS runs, in ms (exit status ignored)
  ms_runs 0 : "$@"
}

load_foreign() { # load_foreign <variant> <n>: n rules in NS, half in FORWARD, half in KUBE-SVC-like chains
  local v=$1 n=$2
  [ "$n" -gt 0 ] || return 0
  {
    echo "*filter"
    echo ":KUBE-SERVICES - [0:0]"
    local half=$((n / 2)) i
    for ((i = 0; i < half; i++)); do
      printf -- '-A FORWARD -s 10.%d.%d.%d/32 -d 172.%d.%d.%d/32 -p tcp -m tcp --dport 80 -m comment --comment "ns/svc-%d" -j ACCEPT\n' \
        $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) $((16 + (i >> 16 & 15))) $((i >> 8 & 255)) $((i & 255)) "$i"
    done
    for ((i = half; i < n; i++)); do
      printf -- '-A KUBE-SERVICES -d 172.%d.%d.%d/32 -p tcp -m tcp --dport 443 -m comment --comment "ns/svc-%d" -j RETURN\n' \
        $((16 + (i >> 16 & 15))) $((i >> 8 & 255)) $((i & 255)) "$i"
    done
    echo "COMMIT"
  } | ip netns exec "$NS" "iptables-$v-restore" --noflush
}
