#!/usr/bin/env bash
# Installs the system packages apiserver-guard's build, demo and tests need
# (Debian/Ubuntu, as root). Idempotent: installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have nft || need+=(nftables)
{ have iptables-legacy && have iptables-nft; } || need+=(iptables)
have ip || need+=(iproute2)
have curl || need+=(curl)
have setpriv || need+=(util-linux)
have sysctl || need+=(procps)
have cc || need+=(gcc libc6-dev)
have openssl || need+=(openssl)
# promtool (scripts/check-alerts.sh, tests/metrics_lint.rs) ships in the
# Prometheus server's package; python3-yaml reads the rules for the checks.
have promtool || need+=(prometheus)
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Only promtool is wanted: the server the package enables and starts under
  # systemd (it does not where no systemd runs) is stopped and disabled again.
  if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

if ! have cargo; then
  echo "cargo not found: install a Rust toolchain (https://rustup.rs, Rust 1.80 or newer), then run this again" >&2
  exit 1
fi
