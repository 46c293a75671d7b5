#!/usr/bin/env bash
# The alerting rules people load as they are (README "Health and metrics"):
# packaging/prometheus/apiserver-guard-rules.yml (systemd nodes: rule_files)
# and the PrometheusRule of packaging/kubernetes/monitoring/, whose spec is
# generated from it. Checks, failing on any problem:
#   - the PrometheusRule is exactly what the rules file generates (text), and
#     its spec, parsed, equals the rules file (scripts/check-alerts.py);
#   - `promtool check rules` on both;
#   - every alert has a severity, a summary and a description, the README
#     sections its annotations name exist, the metrics it reads are ones the
#     daemon exports, README names it, and its unit tests make it both fire
#     and stay silent;
#   - `promtool test rules` on tests/prometheus/*.test.yml, against the rules
#     file and again against the PrometheusRule's spec.
# promtool comes from Debian's prometheus package (scripts/install-deps.sh).
# Usage: scripts/check-alerts.sh           check
#        scripts/check-alerts.sh --write   regenerate the PrometheusRule
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=packaging/prometheus/apiserver-guard-rules.yml
PROMRULE=packaging/kubernetes/monitoring/prometheusrule.yaml
TESTS=(tests/prometheus/*.test.yml)

step() { printf '\n== %s\n' "$*"; }
die() { printf 'check-alerts: FAILED: %s\n' "$*" >&2; exit 1; }

# The PrometheusRule: this header, then the rules file from `groups:` on (its
# leading comment left out) as the spec.
prometheusrule() {
  cat <<'EOF'
# GENERATED from packaging/prometheus/apiserver-guard-rules.yml by
# scripts/check-alerts.sh --write: edit that file and run it, never this one
# (scripts/check-alerts.sh fails when they differ).
#
# The apiserver-guard alerts for the Prometheus Operator (monitoring.coreos.com
# CRDs installed). `kubectl apply -k packaging/kubernetes/monitoring`, or list
# this directory under `resources:` of your overlay. Your Prometheus must
# select it: its ruleNamespaceSelector must include namespace apiserver-guard,
# and its ruleSelector must match this object's labels (kube-prometheus-stack
# selects `release: <its release name>` unless
# ruleSelectorNilUsesHelmValues=false): add the label in your overlay. The
# rules assume the agents are scraped as job "apiserver-guard" (README
# "Health and metrics").
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: apiserver-guard
  labels:
    app.kubernetes.io/name: apiserver-guard
spec:
EOF
  sed -n '/^groups:/,$p' "$RULES" | sed 's/^\(.\)/  \1/'
}

if [ "${1:-}" = --write ]; then
  prometheusrule >"$PROMRULE"
  echo "wrote $PROMRULE"
  exit 0
fi
[ "$#" -eq 0 ] || die "usage: $0 [--write]"

command -v promtool >/dev/null 2>&1 ||
  die "promtool not found: scripts/install-deps.sh installs it (Debian package prometheus)"
python3 -c 'import yaml' 2>/dev/null ||
  die "python3 with PyYAML is needed: scripts/install-deps.sh installs it (python3-yaml)"
promtool --version 2>&1 | head -n1

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step "$PROMRULE is generated from $RULES"
prometheusrule >"$WORK/prometheusrule.yaml"
diff -u "$PROMRULE" "$WORK/prometheusrule.yaml" ||
  die "$PROMRULE differs from what $RULES generates: run scripts/check-alerts.sh --write"
python3 scripts/check-alerts.py spec "$PROMRULE" "$RULES" "$WORK/prometheusrule-spec.yml"

step "promtool check rules"
promtool check rules "$RULES" "$WORK/prometheusrule-spec.yml"

step "every alert: severity, summary, description, README sections, metrics, unit tests"
python3 scripts/check-alerts.py lint "$RULES" README.md src "${TESTS[@]}"

step "promtool test rules (against $RULES)"
promtool test rules "${TESTS[@]}"

step "promtool test rules (against the PrometheusRule's spec)"
for t in "${TESTS[@]}"; do
  sed "s|^  - ../../$RULES\$|  - $WORK/prometheusrule-spec.yml|" "$t" >"$WORK/$(basename "$t")"
  grep -q "^  - $WORK/prometheusrule-spec.yml\$" "$WORK/$(basename "$t")" ||
    die "$t: rule_files must name ../../$RULES (one entry)"
  promtool test rules "$WORK/$(basename "$t")"
done

printf '\ncheck-alerts: all checks passed\n'
