#!/usr/bin/env bash
# Why a repair right after a foreign deletion waits in the kernel: times one
# nf_tables batch sent 2 ms after another process's deletion, with the deleting
# process exiting (its socket closes) or keeping its socket open, and with no
# deletion at all. See benches/kernel_commit_wait.py. Touches only the scratch
# network namespace it creates. Usage: benches/kernel-commit-wait.sh [ITERATIONS] (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ns="ag-commitwait-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
echo "Machine: kernel $(uname -r), $(nft --version)"
ip netns exec "$ns" python3 benches/kernel_commit_wait.py "${1:-60}"
