#!/usr/bin/env python3
"""The Kubernetes half of scripts/check-manifests.sh (run by it, with the
checkers' venv python, which has PyYAML).

  render KDIR OUT              render every kustomization under KDIR into OUT/<name>.yaml
                               (a renderer of the kustomize features the project uses:
                               resources, namespace, labels, images, JSON patches), one
                               file per distinct output; OUT/index.json maps each
                               kustomization to its file
  compare OUT KUSTOMIZATION RENDERED
                               the same objects as `kubectl kustomize` produced (RENDERED)?
  versions OLDEST FILE...      "VERSION FILE..." lines: each file validated against OLDEST,
                               or against the first version that has all of its kinds;
                               "custom FILE..." for files of custom resources (no schema
                               in kubernetes-validate: checked by `custom`)
  custom FILE...               the shape of each custom resource (PrometheusRule: the
                               fields the Prometheus Operator's CRD has; promtool checks
                               the rules themselves, scripts/check-alerts.sh)
  strip IN OUT                 copies of the rendered files without checkov.io/skipN annotations
  skips REPORT OUT             every skip has a reason and is needed (REPORT: checkov JSON of
                               the stripped copies)
  consistency KDIR OUT VERSION CONTAINERFILE CONFIG_OUT
                               kustomizations list every manifest beside them; namespaces,
                               labels, images, hardening, host paths, RBAC against the flags
  commands OUT WORK GUARD...   the agents' flags and the probes' commands, run through
                               apiserver-guard itself (GUARD... runs it)
"""
import copy
import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}
# Kinds that kubernetes-validate's oldest schema (1.25) lacks: the first version to check them with.
MIN_VERSION = {
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): "1.30.0",
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): "1.30.0",
}
# Custom resources kubernetes-validate has no schema for (it would only warn):
# checked by cmd_custom instead.
CUSTOM = {("monitoring.coreos.com/v1", "PrometheusRule")}
KNOWN_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
AGENT, PROBE = "apiserver-guard", "apiserver-guard-probe"
# Host paths a pod of this project may mount, and how.
HOST_PATHS = {
    "/run/xtables.lock": "FileOrCreate",        # the iptables lock shared with kube-proxy
    "/var/lib/apiserver-guard": "DirectoryOrCreate",  # the discovery cache
    "/run/netns": "DirectoryOrCreate",          # pod network namespaces, read-only, for the probe
}


class Problem(Exception):
    pass


def load_docs(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]


def dump(docs):
    return yaml.safe_dump_all(docs, sort_keys=False, width=float("inf"))


def key(d):
    m = d["metadata"]
    return (d["apiVersion"], d["kind"], m.get("namespace", ""), m["name"])


# ---- the renderer -----------------------------------------------------------------

def pointer(path):
    if not path.startswith("/"):
        raise Problem(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def walk(doc, parts, where):
    for p in parts:
        if isinstance(doc, list):
            if not p.isdigit() or int(p) >= len(doc):
                raise Problem(f"{where}: no element {p}")
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            if p not in doc:
                raise Problem(f"{where}: no field {p}")
            doc = doc[p]
        else:
            raise Problem(f"{where}: {p} below a scalar")
    return doc


def json_patch(doc, ops, where):
    for op in ops:
        kind, parts = op["op"], pointer(op["path"])
        w = f"{where}: {kind} {op['path']}"
        parent, last = walk(doc, parts[:-1], w), parts[-1]
        if kind == "test":
            if walk(doc, parts, w) != op["value"]:
                raise Problem(f"{w}: test failed, found {walk(doc, parts, w)!r}")
        elif kind == "add":
            if isinstance(parent, list):
                i = len(parent) if last == "-" else int(last)
                parent.insert(i, copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            walk(doc, parts, w)
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            walk(doc, parts, w)
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise Problem(f"{w}: op {kind} is not implemented by this check's renderer")


def matches(target, d):
    group, _, version = d["apiVersion"].rpartition("/")
    want = {"group": group, "version": version, "kind": d["kind"],
            "name": d["metadata"]["name"], "namespace": d["metadata"].get("namespace")}
    unknown = set(target) - set(want)
    if unknown:
        raise Problem(f"patch target fields {sorted(unknown)} are not implemented by this check's renderer")
    return all(want[k] == v for k, v in target.items())


def pod_specs(d):
    t = d.get("spec", {}).get("template")
    return [t["spec"]] if t else []


def render(kdir, seen=()):
    kdir = kdir.resolve()
    if kdir in seen:
        raise Problem(f"{kdir}: cycle")
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise Problem(f"{kdir}/kustomization.yaml: {sorted(unknown)} not implemented by this check's renderer")
    docs = []
    for r in k.get("resources", []):
        p = kdir / r
        docs += render(p, seen + (kdir,)) if p.is_dir() else load_docs(p)
    # kustomize's order: patches, namespace, labels, images.
    for patch in k.get("patches", []):
        ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise Problem(f"{kdir}: only JSON patches (a list of ops) are implemented by this check's renderer")
        hits = [d for d in docs if matches(patch["target"], d)]
        if len(hits) != 1:
            raise Problem(f"{kdir}: patch target {patch['target']} matches {len(hits)} objects, want 1")
        json_patch(hits[0], ops, f"{kdir}: patch of {hits[0]['kind']} {hits[0]['metadata']['name']}")
    if "namespace" in k:
        for d in docs:
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                raise Problem(f"{kdir}: namespace with bindings is not implemented by this check's renderer")
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        if entry.get("includeSelectors"):
            raise Problem(f"{kdir}: labels with includeSelectors are not implemented by this check's renderer")
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeTemplates") and "template" in d.get("spec", {}):
                d["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for img in k.get("images", []):
        for d in docs:
            for pod in pod_specs(d):
                for c in pod.get("initContainers", []) + pod.get("containers", []):
                    name = re.split(r"[@:]", c["image"], maxsplit=1)[0]
                    if name != img["name"]:
                        continue
                    new = img.get("newName", name)
                    if "digest" in img:
                        c["image"] = f"{new}@{img['digest']}"
                    elif "newTag" in img:
                        c["image"] = f"{new}:{img['newTag']}"
                    else:
                        c["image"] = new + c["image"][len(name):]
    return docs


def cmd_render(kdir, out):
    kdir, out = pathlib.Path(kdir), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index, by_text = {}, {}
    for kfile in sorted(kdir.rglob("kustomization.yaml")):
        rel = kfile.parent.relative_to(kdir.parent).as_posix()
        text = dump(render(kfile.parent))
        if text not in by_text:
            by_text[text] = rel.replace("/", "_") + ".yaml"
            (out / by_text[text]).write_text(text)
        index[str(kfile.parent)] = by_text[text]
        same = "" if by_text[text] == rel.replace("/", "_") + ".yaml" else f" (the same objects as {by_text[text]})"
        print(f"{kfile.parent}: {len(load_docs(out / by_text[text]))} objects{same}")
    (out / "index.json").write_text(json.dumps(index, indent=1))


def cmd_compare(out, kustomization, rendered):
    index = json.loads((pathlib.Path(out) / "index.json").read_text())
    ours = {key(d): d for d in load_docs(pathlib.Path(out) / index[kustomization])}
    theirs = {key(d): d for d in load_docs(rendered)}
    problems = [f"only in kubectl kustomize: {k}" for k in sorted(set(theirs) - set(ours))]
    problems += [f"only in this check's rendering: {k}" for k in sorted(set(ours) - set(theirs))]
    for k in sorted(set(ours) & set(theirs)):
        if ours[k] != theirs[k]:
            problems.append(f"{k} differs:\n--- kubectl kustomize\n{dump([theirs[k]])}--- this check\n{dump([ours[k]])}")
    if problems:
        raise Problem(f"{kustomization}: this check's renderer and kubectl kustomize disagree:\n  " + "\n  ".join(problems))
    print(f"{kustomization}: kubectl kustomize renders the same {len(ours)} objects")


def cmd_versions(oldest, files):
    groups = {}
    for f in files:
        custom = [(d["apiVersion"], d["kind"]) in CUSTOM for d in load_docs(f)]
        if any(custom):
            if not all(custom):
                raise Problem(f"{f}: custom resources go in files of their own")
            groups.setdefault("custom", []).append(f)
            continue
        need = [MIN_VERSION.get((d["apiVersion"], d["kind"]), oldest) for d in load_docs(f)]
        v = max([oldest] + need, key=lambda s: tuple(map(int, s.split("."))))
        groups.setdefault(v, []).append(f)
    for v, fs in sorted(groups.items()):
        print(v, *fs)


DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def check_prometheusrule(d, where):
    """The fields of monitoring.coreos.com/v1 PrometheusRule (the operator's CRD), nothing else."""
    problems = []

    def keys(obj, allowed, at, required=()):
        if not isinstance(obj, dict):
            problems.append(f"{where}: {at} must be a mapping")
            return False
        problems.extend(f"{where}: {at}.{k} is not a field of PrometheusRule" for k in sorted(set(obj) - set(allowed)))
        problems.extend(f"{where}: {at}.{k} is required" for k in required if k not in obj)
        return True

    def strings(obj, at):
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
            problems.append(f"{where}: {at} must map strings to strings")

    keys(d, {"apiVersion", "kind", "metadata", "spec"}, "", ("metadata", "spec"))
    if keys(d.get("metadata"), {"name", "namespace", "labels", "annotations"}, "metadata", ("name",)):
        for k in ("labels", "annotations"):
            if k in d["metadata"]:
                strings(d["metadata"][k], f"metadata.{k}")
    if not keys(d.get("spec"), {"groups"}, "spec", ("groups",)):
        return problems
    for i, g in enumerate(d["spec"]["groups"] or []):
        at = f"spec.groups[{i}]"
        if not keys(g, {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset"}, at, ("name",)):
            continue
        for j, r in enumerate(g.get("rules") or []):
            rat = f"{at}.rules[{j}]"
            if not keys(r, {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}, rat, ("expr",)):
                continue
            if ("alert" in r) == ("record" in r):
                problems.append(f"{where}: {rat}: exactly one of alert and record")
            for k in ("for", "keep_firing_for"):
                if k in r and not DURATION.match(str(r[k])):
                    problems.append(f"{where}: {rat}.{k}: {r[k]!r} is not a duration")
            for k in ("labels", "annotations"):
                if k in r:
                    strings(r[k], f"{rat}.{k}")
    return problems


def cmd_custom(*files):
    problems, n = [], 0
    for f in files:
        for d in load_docs(f):
            where = f"{f}: {d['kind']} {d.get('metadata', {}).get('name')}"
            if (d["apiVersion"], d["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule"):
                problems += check_prometheusrule(d, where)
                n += 1
            else:
                problems.append(f"{where}: no check for this custom resource")
    if problems:
        raise Problem("\n  ".join(problems))
    print(f"{n} PrometheusRule(s) in {len(files)} file(s): only fields of the CRD (the rules: scripts/check-alerts.sh)")


def cmd_strip(src, dst):
    dst = pathlib.Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(pathlib.Path(src).glob("*.yaml")):
        docs = load_docs(f)
        for d in docs:
            ann = d["metadata"].get("annotations", {})
            for k in [k for k in ann if k.startswith("checkov.io/skip")]:
                del ann[k]
            if "annotations" in d["metadata"] and not ann:
                del d["metadata"]["annotations"]
        (dst / f.name).write_text(dump(docs))


def cmd_skips(report_path, out):
    report, problems, skips = json.loads(pathlib.Path(report_path).read_text()), [], set()
    for f in sorted(pathlib.Path(out).glob("*.yaml")):
        for d in load_docs(f):
            meta = d["metadata"]
            for k, value in (meta.get("annotations") or {}).items():
                if not k.startswith("checkov.io/skip"):
                    continue
                m = re.fullmatch(r"(CKV2?_K8S_\d+)=([^=]{20,})", str(value))
                if not m:
                    problems.append(f"{f.name}: {d['kind']} {meta['name']}: {k}: want 'CKV_K8S_NN=reason' "
                                    f"(one '=', a real reason), got {value!r}")
                    continue
                skips.add((f.name, d["kind"], meta["name"], m.group(1)))
    failed = set()
    for r in report if isinstance(report, list) else [report]:
        for c in r.get("results", {}).get("failed_checks", []):
            kind, _namespace, name = c["resource"].split(".", 2)
            failed.add((os.path.basename(c["file_path"]), kind, name, c["check_id"]))
    for s in sorted(skips - failed):
        problems.append(f"{s[0]}: {s[1]} {s[2]}: the skip of {s[3]} is not needed (it passes without it): remove the annotation")
    for f in sorted(failed - skips):
        problems.append(f"{f[0]}: {f[1]} {f[2]}: {f[3]} fails and is not skipped")
    for s in sorted({s[1:] for s in skips}):
        print(f"skipped with reason: {s[0]}/{s[1]}: {s[2]}")
    if problems:
        raise Problem("\n  ".join(problems))
    print(f"{len(skips)} skips in the rendered objects, each needed and annotated with its reason")


# ---- consistency -------------------------------------------------------------------

def flags(args):
    """--flag value / --flag=value pairs of an agent's args."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                k, v, i = a[2:], args[i + 1], i + 1
            else:
                k, v = a[2:], ""
            out.setdefault(k, []).append(v)
        i += 1
    return out


def wants(args):
    """What the agent's flags ask of the API: (namespace or '*', group, resource, verb) grants."""
    f = flags(args)
    auto = lambda name: any(v.strip().lower() == "auto" for x in f.get(name, []) for v in x.split(","))
    grants = set()
    if auto("apiserver"):
        grants |= {("default", "discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")}
    if "allow-pods" in f or "allow-namespaces" in f:
        grants |= {("*", "", "pods", v) for v in ("list", "watch")}
    if auto("container-cidr") or "node-taint" in f:
        grants |= {("*", "", "nodes", v) for v in ("get", "list", "watch")}
    if "node-taint" in f:
        grants.add(("*", "", "nodes", "patch"))
    # With any of the above and the log group read (the default), the agent names the pod behind
    # each attempt (the pods of its node) and writes an Event on it.
    if grants and not any(v.strip().lower() == "off" for v in f.get("log-group", [])):
        grants |= {("*", "", "pods", v) for v in ("list", "watch")}
        grants |= {("*", "", "events", v) for v in ("create", "patch")}
    return grants


def granted(docs, sa_ns, sa):
    roles = {(d["kind"], d["metadata"].get("namespace", "*"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out, problems = set(), []
    for b in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace") == sa_ns
                   for s in b.get("subjects", [])):
            continue
        ns = b["metadata"].get("namespace", "*")
        ref = b["roleRef"]
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else "*", ref["name"]))
        if role is None:
            problems.append(f"{b['kind']} {b['metadata']['name']} refers to {ref['kind']} {ref['name']}, which is not in the rendering")
            continue
        for rule in role.get("rules", []):
            for g in rule.get("apiGroups", []):
                for r in rule.get("resources", []):
                    for v in rule.get("verbs", []):
                        if "*" in (g, r, v) or rule.get("nonResourceURLs"):
                            problems.append(f"{role['kind']} {role['metadata']['name']}: no wildcards")
                        out.add((ns, g, r, v))
    return out, problems


def cmd_consistency(kdir, out, version, containerfile, config_out):
    kdir, out = pathlib.Path(kdir), pathlib.Path(out)
    index = json.loads((out / "index.json").read_text())
    problems, listed_total, objects = [], 0, 0
    for kpath, rendered in sorted(index.items()):
        kd = pathlib.Path(kpath)
        k = yaml.safe_load((kd / "kustomization.yaml").read_text())
        listed = k.get("resources", [])
        listed_total += len(listed)
        present = sorted(p.name for p in kd.glob("*.yaml") if p.name != "kustomization.yaml")
        for name in sorted(set(present) - set(listed)):
            problems.append(f"{kd}/kustomization.yaml does not list {name}")
        for name in listed:
            if not (kd / name).exists():
                problems.append(f"{kd}/kustomization.yaml lists {name}, which does not exist")
        if k.get("namespace", "apiserver-guard") != "apiserver-guard":
            problems.append(f"{kd}/kustomization.yaml: namespace, if set, must be apiserver-guard")
        own = [d for n in present for d in load_docs(kd / n)]
        has_workload = any(d["kind"] == "DaemonSet" for d in own)
        tag = {i["name"]: i for i in k.get("images", [])}.get("apiserver-guard", {}).get("newTag")
        if (has_workload or tag is not None) and tag != version:
            problems.append(f"{kd}/kustomization.yaml: images: apiserver-guard newTag must be {version} (Cargo.toml)")
        docs = load_docs(out / rendered)
        objects += len(docs)
        problems += [f"{kd} (rendered): {p}" for p in check_rendering(docs, version)]

    label = re.search(r'org\.opencontainers\.image\.version="([^"]*)"', pathlib.Path(containerfile).read_text())
    if not label or label.group(1) != version:
        problems.append(f"{containerfile}: LABEL org.opencontainers.image.version must be {version} (Cargo.toml)")
    base = load_docs(out / index[str(kdir)])
    cms = [d for d in base if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "apiserver-guard"]
    if len(cms) != 1 or "config.toml" not in cms[0].get("data", {}):
        problems.append("ConfigMap apiserver-guard with key config.toml is missing")
    else:
        pathlib.Path(config_out).write_text(cms[0]["data"]["config.toml"])
    if problems:
        raise Problem("\n  ".join(problems))
    print(f"{len(index)} kustomizations listing {listed_total} resources, {objects} rendered objects consistent "
          f"(version {version}, namespace apiserver-guard)")


def check_rendering(docs, version):
    problems = []
    for d in docs:
        meta = d["metadata"]
        where = f"{d['kind']} {meta['name']}"
        if meta.get("labels", {}).get("app.kubernetes.io/name") != "apiserver-guard":
            problems.append(f"{where}: label app.kubernetes.io/name: apiserver-guard missing")
        ns = meta.get("namespace")
        if d["kind"] in CLUSTER_SCOPED:
            if ns is not None:
                problems.append(f"{where}: cluster-scoped, must have no namespace")
        elif d["kind"] in ("Role", "RoleBinding") and ns == "default":
            pass  # the EndpointSlice grant; checked against the flags below
        elif ns != "apiserver-guard":
            problems.append(f"{where}: namespace must be apiserver-guard")
        if d["kind"] == "DaemonSet":
            problems += check_daemonset(d, docs, version)
    dss = {d["metadata"]["name"]: d for d in docs if d["kind"] == "DaemonSet"}
    if AGENT in dss and PROBE in dss:
        a, p = (dss[n]["spec"]["template"]["spec"] for n in (AGENT, PROBE))
        if a.get("affinity") != p.get("affinity") or a.get("nodeSelector") != p.get("nodeSelector"):
            problems.append("the probe must run on exactly the agent's nodes (same nodeSelector and affinity), "
                            "or it reports unprotected nodes that are not meant to be enforced")
    if AGENT in dss:
        pod = dss[AGENT]["spec"]["template"]["spec"]
        sa = pod.get("serviceAccountName", "default")
        have, rbac_problems = granted(docs, dss[AGENT]["metadata"]["namespace"], sa)
        problems += rbac_problems
        need = wants(pod["containers"][0].get("args", []))
        if have != need:
            problems.append(f"RBAC of ServiceAccount {sa} does not match the agent's flags: missing "
                            f"{sorted(need - have)}, not needed {sorted(have - need)}")
        if bool(need) != (pod.get("automountServiceAccountToken") is True):
            problems.append(f"DaemonSet {AGENT}: automountServiceAccountToken must be true exactly when its flags "
                            "use the API (auto, allow-lists, node taint)")
    return problems


def check_daemonset(d, docs, version):
    meta, problems = d["metadata"], []
    where = f"DaemonSet {meta['name']}"
    pod = d["spec"]["template"]["spec"]
    if any(d["spec"]["template"]["metadata"]["labels"].get(a) != b for a, b in d["spec"]["selector"]["matchLabels"].items()):
        problems.append(f"{where}: the pod template does not carry the selector's labels")
    if meta["name"] != AGENT and pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false (only the discovery agent talks to the API)")
    if pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{where}: no hostPID, no hostIPC")
    if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    if {"operator": "Exists"} not in pod.get("tolerations", []):
        problems.append(f"{where}: must tolerate every taint (operator: Exists): one pod per node")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        hp = v.get("hostPath")
        if hp and HOST_PATHS.get(hp["path"]) != hp.get("type"):
            problems.append(f"{where}: host path {hp['path']} ({hp.get('type')}) is not one of {HOST_PATHS}")
    agent_flags = {}
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
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        netns = mounts.get("/run/netns")
        probe_ns = bool(netns and netns.get("readOnly") and volumes[netns["name"]].get("hostPath", {}).get("path") == "/run/netns")
        if c is pod["containers"][0] and meta["name"] == AGENT:
            agent_flags = flags(c.get("args", []))
        if added and added not in (["NET_ADMIN", "NET_RAW"], ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]):
            problems.append(f"{cw}: the only capabilities ever added are NET_ADMIN and NET_RAW (+ SYS_ADMIN for the taint probe)")
        if "SYS_ADMIN" in added and not (probe_ns and "node-taint" in agent_flags):
            problems.append(f"{cw}: SYS_ADMIN only for the probe that gates --node-taint, with /run/netns mounted read-only")
        if probe_ns and "SYS_ADMIN" not in added:
            problems.append(f"{cw}: /run/netns is mounted but cannot be entered without SYS_ADMIN: drop the mount")
        if added and not pod.get("hostNetwork"):
            problems.append(f"{cw}: capabilities without hostNetwork make no sense here")
        if not added and not (sc.get("runAsNonRoot") and sc.get("runAsUser", 0) != 0):
            problems.append(f"{cw}: a container without added capabilities must run as non-root")
        for m in mounts.values():
            hp = volumes.get(m["name"], {}).get("hostPath")
            if hp and hp["path"] != "/run/xtables.lock" and hp["path"] != "/var/lib/apiserver-guard" and not m.get("readOnly"):
                problems.append(f"{cw}: host path {hp['path']} must be mounted read-only")
    if meta["name"] == PROBE and pod.get("hostNetwork"):
        problems.append(f"{where}: the probe must run in the pod network")
    if meta["name"] == AGENT:
        c = pod["containers"][0]
        env = {e["name"]: e for e in c.get("env", [])}
        port = int(env.get("APISERVER_GUARD_LISTEN", {}).get("value", "127.0.0.1:9440").rsplit(":", 1)[1])
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            if probe == "startupProbe" and probe not in c:
                continue
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("port") != port or get.get("path") != path:
                problems.append(f"{where}: {probe} must GET {path} on the listen port {port}")
        if pod.get("priorityClassName") != "system-node-critical":
            problems.append(f"{where}: priorityClassName system-node-critical")
        if wants(c.get("args", [])) or "node-taint" in agent_flags:
            node = env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if node != "spec.nodeName":
                problems.append(f"{where}: discovery needs NODE_NAME from the downward API (spec.nodeName)")
            cache = {m["mountPath"]: m for m in c.get("volumeMounts", [])}.get("/var/lib/apiserver-guard")
            if not cache or volumes[cache["name"]].get("hostPath", {}).get("path") != "/var/lib/apiserver-guard":
                problems.append(f"{where}: the discovery cache /var/lib/apiserver-guard must be the node's "
                                "(hostPath), or a restarted agent forgets the last known state")
            if "startupProbe" not in c:
                problems.append(f"{where}: with discovery the agent listens only once it knows what to block: "
                                "a startupProbe must hold the liveness probe back")
            if "node-taint" in agent_flags:
                taint = agent_flags["node-taint"][0]
                if not any(t.get("key") == taint and t.get("effect") == "NoSchedule" for t in pod.get("tolerations", [])):
                    problems.append(f"{where}: must name the start-up taint {taint}:NoSchedule among its tolerations")
    return problems


# ---- the commands, run through apiserver-guard itself -------------------------------

def kubelet_env(container, fields, services):
    """The container's environment as the kubelet builds it: $(VAR) from earlier entries and the service variables."""
    env = dict(services)
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def run(argv, env, expect, what, needle=None):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != expect or (needle and needle not in out):
        raise Problem(f"{what}: expected exit {expect}{' and ' + repr(needle) if needle else ''}, got {r.returncode}:\n{out}")
    return out


STANDIN = {"pod": "10.244.1.5", "service": "10.96.0.1", "node": "10.0.0.10"}


@contextlib.contextmanager
def standin_netns():
    """A network namespace of our own with the stand-in addresses (see cmd_commands); removed after."""
    ns = f"agcm-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        steps = [["ip", "link", "set", "lo", "up"]]
        steps += [["ip", "addr", "add", f"{a}/32", "dev", "lo"] for a in STANDIN.values()]
        steps += [["ip", "route", "replace", "local", STANDIN[k], "dev", "lo", "table", "local", "src", STANDIN["pod"]]
                  for k in ("service", "node")]
        for step in steps:
            r = subprocess.run(["ip", "netns", "exec", ns] + step, capture_output=True, text=True)
            if r.returncode != 0:
                raise Problem(f"stand-in namespace: {' '.join(step)}: {r.stderr.strip()}")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def cmd_commands(out, work, guard):
    out, work = pathlib.Path(out), pathlib.Path(work)
    index = json.loads((out / "index.json").read_text())
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("APISERVER_GUARD_") and not k.startswith("KUBERNETES_") and k != "NODE_NAME"}
    # A throwaway network namespace stands in for the cluster (`verify` refuses loopback
    # apiservers and pod networks): the pod 10.244.1.5, the `kubernetes` Service 10.96.0.1 and
    # the node 10.0.0.10 all live on its loopback, with local routes whose preferred source is
    # the pod's address, so the kernel picks the pod's address towards both; nothing listens
    # on the Service port, which refuses the way a blocked apiserver does, and the node's
    # address (the probe's positive control, `verify --control`) answers with a refusal too.
    services = {"KUBERNETES_SERVICE_HOST": STANDIN["service"], "KUBERNETES_SERVICE_PORT": "6443"}
    fields = {"spec.nodeName": "node-a", "status.podIP": STANDIN["pod"], "status.hostIP": STANDIN["node"],
              "metadata.namespace": "apiserver-guard", "metadata.name": "apiserver-guard-x1"}
    bindir = work / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "apiserver-guard"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in guard) + ' "$@"\n')
    wrapper.chmod(0o755)
    done = set()
    for rendered in sorted(set(index.values())):
        docs = load_docs(out / rendered)
        cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for d in (d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] in (AGENT, PROBE)):
            pod = d["spec"]["template"]["spec"]
            c = pod["containers"][0]
            # The ConfigMap, where the container mounts it.
            cfgdir = work / "etc" / rendered / d["metadata"]["name"]
            cfgdir.mkdir(parents=True, exist_ok=True)
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
            dirs = {}
            for v in pod.get("volumes", []):
                if "configMap" in v:
                    for name, text in cms[v["configMap"]["name"]]["data"].items():
                        (cfgdir / name).write_text(text)
                    dirs[mounts[v["name"]]] = str(cfgdir)

            def here(text):  # paths inside the ConfigMap's mount, as they are here
                for inside, outside in dirs.items():
                    text = text.replace(inside + "/", outside + "/")
                return text

            env = {k: here(v) for k, v in kubelet_env(c, fields, services).items()}
            env.update(base_env)
            env["PATH"] = f"{bindir}:{os.environ['PATH']}"
            what = f"{rendered}: DaemonSet {d['metadata']['name']}"
            sig = json.dumps([d["metadata"]["name"], c.get("args"), c.get("readinessProbe"), sorted(env.items())])
            if sig in done:
                continue
            done.add(sig)
            if d["metadata"]["name"] == AGENT:
                if not wants(c.get("args", [])):
                    continue
                # Every flag and value is parsed and checked in one pass, touching nothing; a
                # named kubeconfig that is missing is bad input too (exit 2). It must be the only
                # problem reported: then every other flag and value was accepted.
                env["APISERVER_GUARD_KUBECONFIG"] = str(work / "no-such-kubeconfig")
                env["APISERVER_GUARD_DISCOVERY_CACHE"] = str(work / "cache" / "discovered.json")
                needle = "invalid input, nothing was changed: APISERVER_GUARD_KUBECONFIG: cannot read the kubeconfig"
                run(["apiserver-guard"] + [here(a) for a in c["args"]], env, 2, f"{what}: apiserver-guard {' '.join(c['args'])}",
                    needle)
                if (work / "cache").exists():
                    raise Problem(f"{what}: wrote a cache without having discovered anything")
                print(f"{what}: its flags are accepted (stopped at the missing kubeconfig, as expected)")
            else:
                cmd = [here(a) for a in c["readinessProbe"]["exec"]["command"]]
                # As shipped the base's ConfigMap is unconfigured: the probe must say so (exit 2);
                # where the variant supplies the policy, it must run and pass (the stand-in
                # apiserver on loopback refuses, like a blocked one).
                unconfigured = not {"APISERVER_GUARD_CONTAINER_CIDR", "APISERVER_GUARD_APISERVER"} <= set(env)
                if unconfigured:
                    run(cmd, env, 2, f"{what}: readiness probe {cmd}", "no container CIDR given")
                    print(f"{what}: readiness probe reports the unconfigured ConfigMap (exit 2)")
                else:
                    with standin_netns() as ns:
                        run(["ip", "netns", "exec", ns] + cmd, env, 0, f"{what}: readiness probe {cmd}")
                    print(f"{what}: readiness probe runs with the policy from its environment and passes")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "versions":
            cmd_versions(args[0], args[1:])
        elif cmd == "commands":
            cmd_commands(args[0], args[1], args[2:])
        elif cmd == "custom":
            cmd_custom(*args)
        else:
            {"render": cmd_render, "compare": cmd_compare, "strip": cmd_strip, "skips": cmd_skips,
             "consistency": cmd_consistency}[cmd](*args)
    except Problem as e:
        sys.exit(f"check-manifests: FAILED:\n  {e}")


if __name__ == "__main__":
    main()
