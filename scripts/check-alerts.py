#!/usr/bin/env python3
"""The parts of scripts/check-alerts.sh that read YAML (run by it).

  spec PROMETHEUSRULE RULES OUT
      the PrometheusRule is one monitoring.coreos.com/v1 PrometheusRule whose
      spec, parsed, equals the rules file; writes that spec to OUT (for promtool)
  lint RULES README SRC TEST...
      every alert has a severity (critical, warning, info), a summary and a
      description and a `for:`; every README "Section" its annotations name is
      a heading of README; every apiserver_guard_* metric its expression reads
      appears in the daemon's source under SRC; README names the alert; the
      unit tests have a case where it fires and one where it stays silent
"""
import pathlib
import re
import sys

import yaml

SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}


class Problem(Exception):
    pass


def load(path):
    docs = [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d is not None]
    if len(docs) != 1:
        raise Problem(f"{path}: want one YAML document, found {len(docs)}")
    return docs[0]


def cmd_spec(promrule, rules, out):
    doc, want = load(promrule), load(rules)
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "PrometheusRule":
        raise Problem(f"{promrule}: want apiVersion monitoring.coreos.com/v1, kind PrometheusRule")
    if set(doc) != {"apiVersion", "kind", "metadata", "spec"}:
        raise Problem(f"{promrule}: unexpected top-level keys {sorted(set(doc))}")
    if doc["spec"] != want:
        raise Problem(f"{promrule}: spec differs from {rules}")
    pathlib.Path(out).write_text(yaml.safe_dump(doc["spec"], sort_keys=False, width=float("inf")))
    print(f"{promrule}: spec equals {rules} ({sum(len(g['rules']) for g in want['groups'])} rules)")


def headings(readme):
    out = set()
    for line in pathlib.Path(readme).read_text().splitlines():
        m = re.match(r"#{2,6} (.*)", line)
        if m:
            out.add(m.group(1).strip())
    return out


def tested(tests):
    """alertname -> (has a firing case, has a silent case)."""
    out = {}
    for t in tests:
        for group in load(t).get("tests", []):
            for case in group.get("alert_rule_test", []):
                fires, silent = out.get(case["alertname"], (False, False))
                if case.get("exp_alerts"):
                    fires = True
                else:
                    silent = True
                out[case["alertname"]] = (fires, silent)
    return out


def cmd_lint(rules, readme, src, *tests):
    doc = load(rules)
    sections = headings(readme)
    readme_text = pathlib.Path(readme).read_text()
    source = "\n".join(p.read_text() for p in sorted(pathlib.Path(src).rglob("*.rs")))
    cases = tested(tests)
    problems, alerts = [], []
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            if name is None:
                problems.append(f"recording rule {rule.get('record')}: this file holds alerts only")
                continue
            alerts.append(name)
            w = f"{name}"
            if set(rule) - RULE_KEYS:
                problems.append(f"{w}: unexpected keys {sorted(set(rule) - RULE_KEYS)}")
            if "for" not in rule:
                problems.append(f"{w}: give it a `for:` (0m where the expression holds by itself)")
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{w}: label severity must be one of {sorted(SEVERITIES)}")
            ann = rule.get("annotations", {})
            for a in ("summary", "description"):
                if not ann.get(a):
                    problems.append(f"{w}: annotation {a} missing")
            text = " ".join(str(v) for v in ann.values())
            named = re.findall(r'README((?: (?:and )?"[^"]+")+)', text)
            refs = [r for group_ in named for r in re.findall(r'"([^"]+)"', group_)]
            if not refs:
                problems.append(f"{w}: the description must point at a README section (README \"...\")")
            for r in refs:
                if r not in sections:
                    problems.append(f"{w}: README has no section \"{r}\"")
            for metric in sorted(set(re.findall(r"apiserver_guard_[a-z_]+", rule["expr"]))):
                if f"{metric}" not in source:
                    problems.append(f"{w}: reads {metric}, which nothing under {src} exports")
            if f"`{name}`" not in readme_text:
                problems.append(f"{w}: README does not name it (`{name}`)")
            fires, silent = cases.get(name, (False, False))
            if not fires:
                problems.append(f"{w}: no unit test makes it fire")
            if not silent:
                problems.append(f"{w}: no unit test expects it silent")
    for name in sorted(set(cases) - set(alerts)):
        problems.append(f"the unit tests test {name}, which is not an alert of {rules}")
    if len(set(alerts)) != len(alerts):
        problems.append("alert names must be unique")
    if problems:
        raise Problem("\n  ".join(problems))
    print(f"{len(alerts)} alerts: severity, summary, description, README sections, metrics and unit tests in order")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        {"spec": cmd_spec, "lint": cmd_lint}[cmd](*args)
    except Problem as e:
        sys.exit(f"check-alerts: FAILED:\n  {e}")


if __name__ == "__main__":
    main()
