#!/usr/bin/env bash
# Builds the apiserver-guard packages into target/packages/: the release
# binary, the man pages and shell completions generated from the clap
# definitions (examples/gen_assets.rs), then a .deb with cargo-deb and an
# .rpm with cargo-generate-rpm. Installs those two cargo tools (pinned
# versions) if missing; needs dpkg-dev and binutils.
# Usage: scripts/build-packages.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The packaging tools, at the versions the lintian/rpmlint results were checked with.
for pinned in cargo-deb@3.8.0 cargo-generate-rpm@0.21.1; do
  tool=${pinned%@*}
  if [ "$("$tool" --version 2>/dev/null | cut -d' ' -f2)" != "${pinned#*@}" ]; then
    echo "installing $pinned"
    cargo install --locked --quiet --force "$pinned"
  fi
done
# cargo-deb computes the libc dependency with dpkg-shlibdeps and strips with binutils.
for cmd in dpkg-shlibdeps:dpkg-dev strip:binutils; do
  command -v "${cmd%:*}" >/dev/null || {
    echo "${cmd%:*} missing: apt-get install ${cmd#*:}" >&2
    exit 1
  }
done

# Reproducible man page dates (and cargo-deb timestamps): the last commit's time.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

# cargo-deb writes no DEBIAN/md5sums; dpkg --verify and debsums need it.
# Conffiles are left out, as dh_md5sums does (dpkg tracks their sums itself).
add_md5sums() {
  local deb=$1 tree
  tree=$(mktemp -d)
  dpkg-deb -R "$deb" "$tree/pkg"
  (
    cd "$tree/pkg"
    find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
      LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums
  )
  dpkg-deb --root-owner-group -Zxz --build "$tree/pkg" "$deb" >/dev/null
  rm -rf "$tree"
}

cargo build --release --locked --bin apiserver-guard

assets=target/assets
rm -rf "$assets"
cargo run --quiet --locked --example gen_assets -- "$assets"
# Man pages ship gzipped (-n: no name or time stamp in the header, reproducible).
gzip -9 -n "$assets"/man/*.8

# The Debian changelog Debian policy asks for, one entry for this version.
version=$(target/release/apiserver-guard --version | cut -d' ' -f2)
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
cat >"$assets/changelog" <<CHANGELOG
apiserver-guard ($version-1) unstable; urgency=medium

  * Package of apiserver-guard $version; the changes are in the project's
    git history and README.

 -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
CHANGELOG

out=target/packages
rm -rf "$out"
mkdir -p "$out"
cargo deb --no-build --strip --output "$out/"
add_md5sums "$out"/*.deb
cargo generate-rpm --output "$out/"

echo "built:"
ls -l "$out"
