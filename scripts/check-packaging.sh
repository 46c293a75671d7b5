#!/usr/bin/env bash
# Packaging checks (issue #5, systemd and .deb/.rpm part). Installs the
# checkers it needs, builds both packages (scripts/build-packages.sh), then
# fails on any message from: systemd-analyze verify (every unit in systemd/),
# systemd-analyze security --offline=true above exposure 2.0 (every service),
# lintian and rpmlint (remaining tags only through packaging/deb/lintian-overrides
# and packaging/rpm/rpmlint.toml, each with its reason), shellcheck (every
# *.sh in the repository, .ci/run and the .deb maintainer scripts); checks
# what the packages contain; and finally runs the packaged units for real
# under systemd in a throwaway container (systemd/test-in-container.sh).
# Needs root (apt, mount namespaces, systemd-nspawn). Changes nothing on this
# machine but the installed checker packages.
# Usage: scripts/check-packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: installs the checkers, uses mount namespaces and systemd-nspawn" >&2
  exit 1
fi

have() { command -v "$1" >/dev/null 2>&1; }
need=()
have lintian || need+=(lintian)
have rpmlint || need+=(rpmlint)
have rpm || need+=(rpm)
have shellcheck || need+=(shellcheck)
have systemd-analyze || need+=(systemd)
have systemd-nspawn || need+=(systemd-container)
have man || need+=(man-db)
have dpkg-shlibdeps || need+=(dpkg-dev)
have strip || need+=(binutils)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

scripts/build-packages.sh
deb=$(find target/packages -maxdepth 1 -name 'apiserver-guard_*.deb')
rpmfile=$(find target/packages -maxdepth 1 -name 'apiserver-guard-*.rpm')

failures=0
step() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*"
  failures=$((failures + 1))
}
ok() { printf 'ok: %s\n' "$*"; }

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
dpkg-deb -x "$deb" "$tree"

step "systemd-analyze verify (any output fails)"
# verify checks that ExecStart= binaries and Documentation= man pages exist
# where the unit says. A private mount namespace lays the package's /usr/bin
# and man pages over this machine's for the check; nothing gets installed.
for unit in systemd/*.service; do
  # shellcheck disable=SC2016 # expanded by the inner shell
  if out=$(unshare -m --propagation private sh -c '
      mount -t overlay overlay -o "lowerdir=$1/usr/bin:/usr/bin" /usr/bin &&
      mount -t overlay overlay -o "lowerdir=$1/usr/share/man:/usr/share/man" /usr/share/man &&
      systemd-analyze verify "$2"' sh "$tree" "$unit" 2>&1) && [ -z "$out" ]; then
    ok "$unit"
  else
    fail "$unit:"
    printf '%s\n' "$out"
  fi
done

step "systemd-analyze security --offline=true (exposure at most 2.0)"
for unit in systemd/*.service; do
  if out=$(systemd-analyze security --offline=true --threshold=20 --no-pager "$unit" 2>&1); then
    ok "$(printf '%s\n' "$out" | grep 'Overall exposure')"
  else
    fail "$unit:"
    printf '%s\n' "$out" | grep -E '✗|Overall'
  fi
done

step "tmpfiles.d snippet"
if out=$(systemd-tmpfiles --root="$tree" --create "$tree/usr/lib/tmpfiles.d/apiserver-guard.conf" 2>&1) &&
  [ -z "$out" ] && [ -f "$tree/run/xtables.lock" ]; then
  ok "creates /run/xtables.lock"
else
  fail "systemd-tmpfiles: $out"
fi

step "packaged config"
# Unconfigured, the daemon and apply must refuse (exit 2) rather than run on
# defaults; every key it documents must be one the binary accepts.
# `render` validates like `apply` and changes nothing.
config="$tree/etc/apiserver-guard/config.toml"
set +e
out=$("$tree/usr/bin/apiserver-guard" render --config "$config" 2>&1)
rc=$?
set -e
if [ "$rc" -eq 2 ] && grep -q 'no container CIDR given' <<<"$out"; then
  ok "as shipped: refused with exit 2 (no container CIDR given)"
else
  fail "as shipped: expected exit 2 'no container CIDR given', got $rc: $out"
fi
sed 's/^#\([a-z_]* = \)/\1/' "$config" >"$tree/all-keys.toml"
keys=$(grep -c '^[a-z_]* = ' "$tree/all-keys.toml" || true)
discovery_keys='^(kubeconfig|node_name|allow_pods|allow_namespaces|discovery_cache|node_taint) = '
grep -Ev "$discovery_keys" "$tree/all-keys.toml" >"$tree/static-keys.toml"
static=$(grep -c '^[a-z_]* = ' "$tree/static-keys.toml" || true)
# --mode tunnel skips the self-lockout check, which depends on this machine's routes.
if out=$("$tree/usr/bin/apiserver-guard" render --config "$tree/static-keys.toml" --mode tunnel 2>&1) && [ "$static" -eq 14 ]; then
  ok "all $static commented policy and daemon keys, uncommented, are accepted"
else
  fail "uncommented example config ($static keys) refused: $out"
fi
# With the Kubernetes discovery keys too: every key and value is parsed and
# checked in one pass; a named kubeconfig that is missing is bad input too
# (exit 2), and it must be the only problem reported (one line: then every
# other key and value was accepted). Nothing is contacted.
set +e
out=$(APISERVER_GUARD_KUBECONFIG="$tree/no-such-kubeconfig" "$tree/usr/bin/apiserver-guard" render \
  --config "$tree/all-keys.toml" --mode tunnel 2>&1)
rc=$?
set -e
only="invalid input, nothing was changed: APISERVER_GUARD_KUBECONFIG: cannot read the kubeconfig $tree/no-such-kubeconfig"
if [ "$rc" -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -qF "$only" <<<"$out" && [ "$keys" -eq 20 ]; then
  ok "all $keys commented keys, discovery ones included, are accepted"
else
  fail "uncommented example config with discovery keys ($keys keys): expected exit 2 naming only the missing kubeconfig, got $rc: $out"
fi

step "lintian (tags only through packaging/deb/lintian-overrides)"
# Fails on errors, warnings and info tags; pedantic and experimental ones are shown.
if out=$(lintian --pedantic -I -E --tag-display-limit 0 --fail-on error,warning,info "$deb" 2>&1); then
  ok "lintian $deb"
else
  fail "lintian $deb:"
fi
printf '%s\n' "$out" | grep -v 'running with root privileges' || true

step "rpmlint (messages only through packaging/rpm/rpmlint.toml)"
if out=$(rpmlint --strict -c packaging/rpm/rpmlint.toml "$rpmfile" 2>&1); then
  ok "$(printf '%s\n' "$out" | tail -n 1)"
else
  fail "rpmlint $rpmfile:"
  printf '%s\n' "$out"
fi

step "package contents"
before=$failures
deb_files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
for f in /usr/bin/apiserver-guard /lib/systemd/system/apiserver-guard.service \
  /lib/systemd/system/apiserver-guard-apply.service /usr/lib/tmpfiles.d/apiserver-guard.conf \
  /etc/apiserver-guard/config.toml /usr/share/man/man8/apiserver-guard.8.gz \
  /usr/share/man/man8/apiserver-guard-run.8.gz /usr/share/bash-completion/completions/apiserver-guard \
  /usr/share/zsh/vendor-completions/_apiserver-guard /usr/share/fish/vendor_completions.d/apiserver-guard.fish \
  /usr/share/doc/apiserver-guard/README.md /usr/share/doc/apiserver-guard/copyright \
  /usr/share/doc/apiserver-guard/examples/probe.conf /usr/share/doc/apiserver-guard/examples/discovery.conf \
  /usr/share/doc/apiserver-guard/examples/apiserver-guard-rules.yml; do
  grep -qx "$f" <<<"$deb_files" || fail ".deb lacks $f"
done
[ "$(dpkg-deb -f "$deb" Depends | grep -c 'nftables | iptables')" -eq 1 ] || fail ".deb does not depend on nftables | iptables"
dpkg-deb -e "$deb" "$tree/DEBIAN"
grep -qx /etc/apiserver-guard/config.toml "$tree/DEBIAN/conffiles" || fail ".deb: config.toml is not a conffile"
if grep -hv '^ *#' "$tree"/DEBIAN/post* "$tree"/DEBIAN/pre* | grep -E 'enable|(invoke|systemctl) +(start|restart)'; then
  fail ".deb maintainer scripts must enable and start nothing"
fi
rpm_files=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpmfile")
for f in /usr/bin/apiserver-guard /usr/lib/systemd/system/apiserver-guard.service \
  /usr/lib/systemd/system/apiserver-guard-apply.service /usr/lib/tmpfiles.d/apiserver-guard.conf \
  /usr/share/man/man8/apiserver-guard.8.gz /usr/share/bash-completion/completions/apiserver-guard \
  /usr/share/zsh/site-functions/_apiserver-guard /usr/share/fish/vendor_completions.d/apiserver-guard.fish \
  /usr/share/doc/apiserver-guard/README.md /usr/share/doc/apiserver-guard/examples/apiserver-guard-rules.yml; do
  grep -q " $f\$" <<<"$rpm_files" || fail ".rpm lacks $f"
done
grep -qE '^cn /etc/apiserver-guard/config.toml$' <<<"$rpm_files" || fail ".rpm: config.toml is not %config(noreplace)"
rpm -qp --requires "$rpmfile" | grep -qx '(nftables or iptables)' || fail ".rpm does not require (nftables or iptables)"
if rpm -qp --scripts "$rpmfile" | grep -v '^ *#' | grep -E 'enable|systemctl +(start|restart)'; then
  fail ".rpm scriptlets must enable and start nothing"
fi
if [ "$failures" -eq "$before" ]; then ok "both packages hold what they should, enable and start nothing"; fi

step "shellcheck"
mapfile -t scripts < <(find . -name '*.sh' -not -path './target/*' -not -path './.git/*' | sort)
scripts+=(.ci/run packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm)
if shellcheck "${scripts[@]}"; then ok "${#scripts[@]} scripts"; else fail "shellcheck"; fi

step "the units under a real systemd (throwaway container)"
if systemd/test-in-container.sh "$deb"; then ok "container test"; else fail "container test"; fi

step "sizes"
ls -l "$deb" "$rpmfile"
printf 'installed size (deb): %s KiB\n' "$(dpkg-deb -f "$deb" Installed-Size)"

echo
if [ "$failures" -gt 0 ]; then
  echo "packaging checks: $failures FAILED"
  exit 1
fi
echo "packaging checks: all passed"
