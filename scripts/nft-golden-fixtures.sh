#!/bin/sh
# Records the golden fixtures of src/core/nft_golden_tests.rs: for each shape,
# the text nft_text::render prints is installed with `nft -f` in a scratch
# network namespace, then listed by nft (<shape>.list) and dumped by the
# kernel (<shape>.hex, via nft-dump-hex.py). Run as root; touches only the
# namespace it creates.
set -eu
cd "$(dirname "$0")/.."
dir=tests/fixtures/nft
cargo test --locked --lib nft_golden_tests::write_rendered_inputs -- --ignored >/dev/null
ns="ag-nftgolden-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
for f in "$dir"/*.nft; do
    base="${f%.nft}"
    ip netns exec "$ns" nft -f "$f"
    ip netns exec "$ns" nft list table inet apiserver_guard >"$base.list"
    ip netns exec "$ns" python3 scripts/nft-dump-hex.py 1 apiserver_guard >"$base.hex"
    ip netns exec "$ns" nft delete table inet apiserver_guard
    echo "recorded $base"
done
