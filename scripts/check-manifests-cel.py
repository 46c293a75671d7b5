#!/usr/bin/env python3
"""The admission policies of scripts/check-manifests.sh, evaluated (run by it,
with the checkers' venv python, which has PyYAML and cel-python).

  check-manifests-cel.py OUT     OUT: the renderings and index.json of `render`

Every CEL expression of every ValidatingAdmissionPolicy in the renderings
must compile. The allow-label policy (discovery/admission) is then run the way
the apiserver runs one (matchConstraints, matchConditions, variables in
order, validations) on admission requests whose outcome is known: the label
outside the allowed namespaces is refused unless an admin group asks, pods
without it are not matched, an update that keeps the label as it was passes.
Its allowedNamespaces must be exactly the namespaces of the discovery agent's
--allow-pods entries and --allow-namespaces, and every --allow-pods entry must
be NAMESPACE/SELECTOR on the label the policy guards. The events policy is run
the same way: the agent's own Events (created, then their count patched, in
its node's name) pass; another reason, object, namespace or node does not.
"""
import json
import pathlib
import re
import sys

import celpy
import yaml

POLICY = "apiserver-guard-allow-label"
EVENTS_POLICY = "apiserver-guard-own-events-only"
AGENT_USER = "system:serviceaccount:apiserver-guard:apiserver-guard"
LABEL = "apiserver-guard.io/allow"
AGENT = "apiserver-guard"
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
ENV = celpy.Environment()


class Problem(Exception):
    pass


def program(expr, where):
    try:
        return ENV.program(ENV.compile(expr))
    except celpy.CELParseError as e:
        raise Problem(f"{where}: CEL does not compile: {e}") from e


def expressions(policy):
    """(where, expression) of every CEL expression of a policy."""
    spec, name = policy["spec"], policy["metadata"]["name"]
    for kind in ("matchConditions", "variables"):
        for item in spec.get(kind, []):
            yield f"{name} {kind} {item['name']}", item["expression"]
    for i, v in enumerate(spec.get("validations", [])):
        yield f"{name} validations[{i}]", v["expression"]
        if "messageExpression" in v:
            yield f"{name} validations[{i}] messageExpression", v["messageExpression"]


def admit(policy, request):
    """(allowed, message) for an admission request, as the apiserver decides it."""
    spec = policy["spec"]
    rules = spec["matchConstraints"]["resourceRules"]
    if not any(request["operation"] in r["operations"] and request["resource"] in r["resources"] for r in rules):
        return True, "not matched (resource rules)"
    act = {
        "request": {k: request[k] for k in ("operation", "namespace", "userInfo")},
        "object": request.get("object"),
        "oldObject": request.get("oldObject"),
    }
    name = policy["metadata"]["name"]

    def cel(expr, variables):
        # An evaluation error would make the apiserver refuse (failurePolicy Fail): a mistake here.
        try:
            names = {k: celpy.json_to_cel(v) for k, v in act.items()}
            names["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
            value = program(expr, name).evaluate(names)
        except celpy.CELEvalError as e:
            raise Problem(f"{name}: {expr!r} fails on {request['operation']} in {request['namespace']}: {e}") from e
        if isinstance(value, celpy.CELEvalError):
            raise Problem(f"{name}: {expr!r} fails on {request['operation']} in {request['namespace']}: {value}")
        return value

    truth = lambda value: isinstance(value, celpy.celtypes.BoolType) and bool(value)
    for c in spec.get("matchConditions", []):
        if not truth(cel(c["expression"], {})):
            return True, f"not matched ({c['name']})"
    variables = {}
    for v in spec.get("variables", []):
        variables[v["name"]] = cel(v["expression"], variables)
    for v in spec["validations"]:
        if not truth(cel(v["expression"], variables)):
            msg = cel(v["messageExpression"], variables) if "messageExpression" in v else v.get("message", "")
            return False, str(msg)
    return True, "admitted"


def pod(namespace, labels):
    meta = {"name": "p", "namespace": namespace}
    if labels is not None:  # absent, as the apiserver sends a pod without labels
        meta["labels"] = labels
    return {"metadata": meta}


def request(op, ns, groups, labels, old_labels=None):
    return {
        "operation": op,
        "resource": "pods",
        "namespace": ns,
        "userInfo": {"username": "someone", "groups": groups},
        "object": pod(ns, labels),
        "oldObject": pod(ns, old_labels) if old_labels is not None else None,
    }


def check_allow_label_policy(policy, allowed_namespaces):
    tenant, admin = ["system:authenticated"], ["system:masters", "system:authenticated"]
    label = {LABEL: "true"}
    inside, outside = allowed_namespaces[0], "tenant-a"
    cases = [
        ("a tenant labels a pod of its own namespace", request("CREATE", outside, tenant, label), False),
        ("the label with another value", request("CREATE", outside, tenant, {LABEL: "false"}), False),
        ("a controller's service account in a tenant namespace",
         request("CREATE", outside, ["system:serviceaccounts", "system:serviceaccounts:kube-system"], label), False),
        ("the label added by an update", request("UPDATE", outside, tenant, label, {"app": "x"}), False),
        ("the label's value changed by an update", request("UPDATE", outside, tenant, label, {LABEL: "no"}), False),
        ("a pod without the label", request("CREATE", outside, tenant, {"app": "x"}), True),
        ("a pod without labels", request("CREATE", outside, tenant, None), True),
        ("the label in an allowed namespace", request("CREATE", inside, tenant, label), True),
        ("an admin group anywhere", request("CREATE", outside, admin, label), True),
        ("an update that keeps the label as it was", request("UPDATE", outside, tenant, label, label), True),
        ("a delete", {**request("DELETE", outside, tenant, label), "object": None}, True),
        ("a user without groups", {**request("CREATE", outside, [], label),
                                   "userInfo": {"username": "x"}}, False),
    ]
    problems = []
    for what, req, expected in cases:
        allowed, message = admit(policy, req)
        if allowed != expected:
            problems.append(f"{POLICY}: {what}: {'admitted' if allowed else 'refused'}, expected "
                            f"{'admitted' if expected else 'refused'} ({message})")
        elif not allowed and outside not in message:
            problems.append(f"{POLICY}: {what}: the refusal does not name the namespace: {message}")
    if problems:
        raise Problem("\n  ".join(problems))
    print(f"{POLICY}: {len(cases)} admission requests decided as expected")


def event(ns, host="node-a", reason="ApiserverAccessBlocked", kind="Pod", pod_ns=None, count=1):
    return {
        "metadata": {"name": "web-0.187a", "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": kind, "namespace": pod_ns or ns, "name": "web-0", "uid": "u1"},
        "type": "Warning", "reason": reason, "count": count,
        "message": "1 attempt(s) to reach the apiserver at 192.168.50.10:5443 blocked",
        "source": {"component": "apiserver-guard", "host": host},
    }


def event_request(op, obj, old=None, user=AGENT_USER, node="node-a"):
    extra = {"authentication.kubernetes.io/node-name": [node]} if node else {}
    return {
        "operation": op,
        "resource": "events",
        "namespace": obj["metadata"]["namespace"],
        "userInfo": {"username": user, "groups": ["system:serviceaccounts"], "extra": extra},
        "object": obj,
        "oldObject": old,
    }


def check_events_policy(policy):
    name = policy["metadata"]["name"]
    ours = event("team-a")
    cases = [
        ("the agent creates its Event about a pod", event_request("CREATE", ours), True),
        ("... and patches its count", event_request("UPDATE", event("team-a", count=4), ours), True),
        ("an audited attempt", event_request("CREATE", event("team-a", reason="ApiserverAccessAudited")), True),
        ("another reason", event_request("CREATE", event("team-a", reason="Killing")), False),
        ("about a Node", event_request("CREATE", event("team-a", kind="Node")), False),
        ("about a pod of another namespace", event_request("CREATE", event("team-a", pod_ns="team-b")), False),
        ("in another node's name", event_request("CREATE", event("team-a", host="node-b")), False),
        ("a token without a node name", event_request("CREATE", ours, node=None), False),
        ("an update that changes the pod", event_request("UPDATE", ours, event("team-a", pod_ns="x")), False),
        ("another user", event_request("CREATE", event("team-a", reason="Killing"), user="system:node:n"), True),
    ]
    problems = []
    for what, req, expected in cases:
        allowed, message = admit(policy, req)
        if allowed != expected:
            problems.append(f"{name}: {what}: {'admitted' if allowed else 'refused'}, expected "
                            f"{'admitted' if expected else 'refused'} ({message})")
    if problems:
        raise Problem("\n  ".join(problems))
    print(f"{name}: {len(cases)} admission requests decided as expected")


def agent_scopes(docs):
    """The namespaces of the discovery agent's allow-list, and the problems of its --allow-pods entries."""
    ds = [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == AGENT]
    args = ds[0]["spec"]["template"]["spec"]["containers"][0].get("args", []) if ds else []
    values = lambda flag: [v for i, a in enumerate(args) if a == f"--{flag}" and i + 1 < len(args)
                           for v in [args[i + 1]]] + [a.split("=", 1)[1] for a in args if a.startswith(f"--{flag}=")]
    namespaces = {n.strip() for v in values("allow-namespaces") for n in v.split(",") if n.strip()}
    problems = []
    for entry in (e.strip() for v in values("allow-pods") for e in v.split(";") if e.strip()):
        ns, _, selector = entry.partition("/")
        if not NAMESPACE.fullmatch(ns) or not selector:
            problems.append(f"DaemonSet {AGENT}: --allow-pods {entry}: scope it to a namespace (NAMESPACE/SELECTOR)")
        elif not selector.startswith(LABEL):
            problems.append(f"DaemonSet {AGENT}: --allow-pods {entry}: select on {LABEL}, the label the admission "
                            "policy guards")
        namespaces.add(ns)
    return sorted(namespaces), problems


def main():
    out = pathlib.Path(sys.argv[1])
    index = json.loads((out / "index.json").read_text())
    docs_of = {k: list(yaml.safe_load_all((out / f).read_text())) for k, f in index.items()}
    try:
        compiled, policy, events_policy, agent = 0, None, None, None
        for kpath, docs in sorted(docs_of.items()):
            for d in (d for d in docs if d and d["kind"] == "ValidatingAdmissionPolicy"):
                for where, expr in expressions(d):
                    program(expr, f"{kpath}: {where}")
                    compiled += 1
                if d["metadata"]["name"] == POLICY:
                    policy = d
                if d["metadata"]["name"] == EVENTS_POLICY:
                    events_policy = d
            if any(d and d["kind"] == "DaemonSet" and "--allow-pods" in " ".join(
                    d["spec"]["template"]["spec"]["containers"][0].get("args", [])) for d in docs):
                agent = docs
        print(f"{compiled} CEL expressions of the admission policies compile")
        if policy is None or events_policy is None or agent is None:
            raise Problem(f"ValidatingAdmissionPolicies {POLICY} and {EVENTS_POLICY} and an agent with --allow-pods "
                          "must all be rendered")
        namespaces, problems = agent_scopes(agent)
        listed = next(v for v in policy["spec"]["variables"] if v["name"] == "allowedNamespaces")
        listed = sorted(str(n) for n in program(listed["expression"], POLICY).evaluate({}))
        if listed != namespaces:
            problems.append(f"{POLICY}: allowedNamespaces {listed} must be the namespaces of the agent's allow-list "
                            f"{namespaces}: change both together")
        if problems:
            raise Problem("\n  ".join(problems))
        print(f"{POLICY}: allowedNamespaces {listed} = the agent's allow-list namespaces")
        sys.stdout.flush()
        check_allow_label_policy(policy, listed)
        check_events_policy(events_policy)
    except Problem as e:
        sys.exit(f"check-manifests: FAILED:\n  {e}")


if __name__ == "__main__":
    main()
