#!/usr/bin/env python3
"""Checks that rendered Helm manifests grant the agent exactly what it reads: no less (the
agent would fail on a 403 in production) and no more (the RBAC is the promise of a
read-only agent). The list of what it reads is deploy/rbac-permissions.json; the Rust
test `cargo test --lib kube::rbac` compares it with the code's READ_PERMISSIONS, the
chart's templates and every kustomize rendering. This script remains for the Helm
renderings only, which need Helm's library (.ci/render-chart.py).

Usage: check-rbac.py [--namespaced] [--extra-get=GROUP/RESOURCE]... FILE...
                (rendered multi-document YAML)
  default       cluster-wide install: one ClusterRoleBinding to the agent's
                ServiceAccount whose ClusterRole grants the whole list
  --namespaced  Roles/RoleBindings in the watched namespaces grant the namespaced part
                of the list, and no ClusterRole is bound
  --extra-get   the chart's rbac.extraOwnerRules were set: each listed resource is also
                granted `get` (and no other verb), in the ClusterRole or in every Role
Both modes also check the leader-election Role in the agent's own namespace.
"""
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
PERMISSIONS = ROOT / "deploy" / "rbac-permissions.json"
CHART_COPY = ROOT / "deploy" / "helm" / "kijo-agent" / "files" / "rbac-permissions.json"
# kijo_agent::kube::LEASE_PERMISSIONS, granted in the agent's own namespace only.
LEASE_GRANTS = {("coordination.k8s.io", "leases", verb, None) for verb in ("get", "create", "update")}


def load_permissions():
    entries = json.loads(PERMISSIONS.read_text())
    grants = {"cluster": set(), "namespaced": set()}
    for e in entries:
        for verb in e["verbs"]:
            triple = (e["api_group"], e["resource"], verb, None)
            grants["cluster"].add(triple)
            if e["namespaced"]:
                grants["namespaced"].add(triple)
    return grants


def rule_grants(rule, where, errors):
    """Expands one PolicyRule into (group, resource, verb, resourceName) tuples."""
    if rule.get("nonResourceURLs"):
        errors.append(f"{where}: nonResourceURLs granted")
    out = set()
    names = rule.get("resourceNames") or [None]
    for group in rule.get("apiGroups", []):
        for res in rule.get("resources", []):
            for verb in rule.get("verbs", []):
                if "*" in (group, res, verb):
                    errors.append(f"{where}: wildcard in {group!r}/{res!r}/{verb!r}")
                for name in names:
                    out.add((group, res, verb, name))
    return out


def fmt(grants):
    return "\n".join(
        f"    {g or 'core'}/{r} {v}" + (f" (name {n})" if n else "") for g, r, v, n in sorted(grants, key=str)
    )


def main(argv):
    namespaced = "--namespaced" in argv
    files = [a for a in argv if not a.startswith("--")]
    errors = []
    expected = load_permissions()
    extra = set()
    for a in argv:
        if a.startswith("--extra-get="):
            group, _, resource = a.removeprefix("--extra-get=").partition("/")
            extra.add((group, resource, "get", None))
    for scope in expected.values():
        scope |= extra
    if CHART_COPY.exists() and CHART_COPY.read_bytes() != PERMISSIONS.read_bytes():
        errors.append(f"{CHART_COPY.relative_to(ROOT)} differs from {PERMISSIONS.relative_to(ROOT)}: copy it")

    docs = []
    for f in files:
        with open(f) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        errors.append(f"expected one Deployment, found {len(deployments)}")
        print("\n".join("FAIL " + e for e in errors))
        return 1
    dep = deployments[0]
    sa_ns = dep["metadata"]["namespace"]
    sa_name = dep["spec"]["template"]["spec"].get("serviceAccountName", "default")

    def bound_to_agent(binding):
        return any(
            s.get("kind") == "ServiceAccount" and s.get("name") == sa_name and s.get("namespace", binding["metadata"].get("namespace")) == sa_ns
            for s in binding.get("subjects", [])
        )

    def role(kind, name, ns=None):
        for r in by_kind.get(kind, []):
            if r["metadata"]["name"] == name and (kind == "ClusterRole" or r["metadata"].get("namespace") == ns):
                return r
        errors.append(f"{kind} {name} referenced by a binding is not in the manifests")
        return None

    cluster_wide = set()
    for b in by_kind.get("ClusterRoleBinding", []):
        if bound_to_agent(b):
            r = role("ClusterRole", b["roleRef"]["name"])
            for rule in (r or {}).get("rules", []):
                cluster_wide |= rule_grants(rule, f"ClusterRole {b['roleRef']['name']}", errors)

    per_ns = {}
    for b in by_kind.get("RoleBinding", []):
        if not bound_to_agent(b):
            continue
        ns = b["metadata"]["namespace"]
        ref = b["roleRef"]
        r = role(ref["kind"], ref["name"], ns)
        for rule in (r or {}).get("rules", []):
            per_ns.setdefault(ns, set()).update(rule_grants(rule, f"{ref['kind']} {ns}/{ref['name']}", errors))

    lease = per_ns.pop(sa_ns, set())
    if lease != LEASE_GRANTS:
        errors.append(f"leader-election grants in {sa_ns} differ\n  want:\n{fmt(LEASE_GRANTS)}\n  have:\n{fmt(lease)}")

    def compare(what, have, want):
        if have - want:
            errors.append(f"{what} grants more than the agent reads:\n{fmt(have - want)}")
        if want - have:
            errors.append(f"{what} misses what the agent reads:\n{fmt(want - have)}")

    if namespaced:
        if cluster_wide:
            errors.append("namespaced install binds a ClusterRole:\n" + fmt(cluster_wide))
        if not per_ns:
            errors.append("namespaced install grants no namespace anything")
        for ns, have in sorted(per_ns.items()):
            compare(f"namespace {ns}", have, expected["namespaced"])
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        listed = set(filter(None, (env.get("KIJO_NAMESPACES") or "").split(",")))
        if listed != set(per_ns):
            errors.append(f"KIJO_NAMESPACES {sorted(listed)} != namespaces with a Role {sorted(per_ns)}")
    else:
        compare("ClusterRole", cluster_wide, expected["cluster"])
        if per_ns:
            errors.append(f"cluster-wide install also binds Roles in {sorted(per_ns)}")

    label = ", ".join(files)
    if errors:
        for e in errors:
            print(f"FAIL rbac {label}: {e}")
        return 1
    mode = "namespaced" if namespaced else "cluster-wide"
    plus = f" + get on {len(extra)} extra owner resources" if extra else ""
    print(f"ok   rbac {label}: {mode} grants == deploy/rbac-permissions.json{plus}, lease role exact")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
