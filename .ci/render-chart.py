#!/usr/bin/env python3
"""Lints deploy/helm/kijo-agent with Helm's own library (PyPI helm-python-sdk, which
embeds Helm v4's Go code: no helm binary, no cluster) and renders it offline for the
value sets users will use. Writes OUTDIR/chart-<case>.yaml and prints one line per
case, "FILE [--namespaced] [--no-network-policy] [--extra-get=GROUP/RESOURCE...]", for
.ci/validate-deploy to check.

Usage: render-chart.py OUTDIR
"""
import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "helm" / "kijo-agent"
PG = "postgresql://user:pass@host:5432/dbname"
EXTRA_OWNER_RULES = [{"apiGroup": "apps.kruise.io", "resources": ["clonesets", "advancedstatefulsets"]},
                     {"apiGroup": "example.com", "resources": ["widgets"]}]
# .ci/check-rbac.py --extra-get=GROUP/RESOURCE: what those rules must add, and nothing else.
EXTRA_GET_FLAGS = [f"--extra-get={r['apiGroup']}/{res}" for r in EXTRA_OWNER_RULES for res in r["resources"]]
# (case, values, flags for the checks)
CASES = [
    ("readme-set", {"databaseUrl": PG}, []),
    ("readme-values", {
        "databaseUrl": "postgresql://user:pass@postgres:5432/kijo",
        "clusterName": "production-eu",
        "notifications": {"slack": {"webhookUrl": "https://hooks.slack.com/services/T/B/X"}},
        "severity": "HIGH",
        "resources": {"limits": {"memory": "256Mi", "cpu": "200m"},
                      "requests": {"memory": "128Mi", "cpu": "100m"}},
    }, []),
    ("existing-secret", {"existingSecret": "kijo-agent-secrets", "serviceMonitor": {"enabled": True}}, []),
    ("embedded", {}, []),
    ("embedded-emptydir", {"persistence": {"enabled": False}, "networkPolicy": {"enabled": False}},
     ["--no-network-policy"]),
    ("namespaced", {"databaseUrl": PG, "namespaces": ["team-a", "team-b"],
                    "notifications": {"webhook": {"url": "https://hooks.example.com/x", "secret": "s"}},
                    "saas": {"endpoint": "https://api.kijo.io", "apiKey": "k"}}, ["--namespaced"]),
    # Everything monitoring turned on, three replicas (a PodDisruptionBudget) and egress
    # narrowed to address blocks.
    ("monitoring", {"databaseUrl": PG, "replicaCount": 3,
                    "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True, "criticalOpenDays": 3},
                    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Security"}},
                    "networkPolicy": {"apiServerCIDRs": ["10.0.0.1/32"], "databaseCIDRs": ["10.20.0.0/24"],
                                      "notificationCIDRs": ["10.30.0.5/32", "10.30.0.6/32"]}}, []),
    ("single-replica-postgres", {"databaseUrl": PG, "replicaCount": 1}, []),
    # A custom controller's kinds (rbac.extraOwnerRules): the shipped rules plus `get` on
    # exactly those, cluster-wide and in every namespace's Role.
    ("extra-owner-rules", {"databaseUrl": PG, "rbac": {"extraOwnerRules": EXTRA_OWNER_RULES}},
     EXTRA_GET_FLAGS),
    ("namespaced-extra-owner-rules", {"databaseUrl": PG, "namespaces": ["team-a", "team-b"],
                                      "rbac": {"extraOwnerRules": EXTRA_OWNER_RULES}},
     ["--namespaced"] + EXTRA_GET_FLAGS),
]
# case -> [(ports of an egress rule, the CIDRs it must be narrowed to)]
NARROWED = {"monitoring": [([443, 6443], ["10.0.0.1/32"]), ([443], ["10.30.0.5/32", "10.30.0.6/32"]),
                           ([5432], ["10.20.0.0/24"])]}
# Values the schema must refuse (a typo here would otherwise deploy silently).
REJECTED = [
    ("severity typo", {"severity": "SEVERE"}),
    ("unknown top-level key", {"databaseURL": PG}),
    ("bad namespace name", {"namespaces": ["Team_A"]}),
    ("a CIDR without prefix length", {"networkPolicy": {"databaseCIDRs": ["10.0.0.1"]}}),
    ("days as a string", {"prometheusRule": {"criticalOpenDays": "7d"}}),
    # rbac.extraOwnerRules grants `get` on custom resources, never more.
    ("an owner rule with verbs", {"rbac": {"extraOwnerRules": [
        {"apiGroup": "apps.kruise.io", "resources": ["clonesets"], "verbs": ["list", "watch"]}]}}),
    ("an owner rule on a wildcard resource", {"rbac": {"extraOwnerRules": [{"apiGroup": "apps.kruise.io", "resources": ["*"]}]}}),
    ("an owner rule on a wildcard group", {"rbac": {"extraOwnerRules": [{"apiGroup": "*", "resources": ["clonesets"]}]}}),
    ("an owner rule on the core group (Secrets)", {"rbac": {"extraOwnerRules": [{"apiGroup": "", "resources": ["secrets"]}]}}),
    ("an owner rule on a subresource", {"rbac": {"extraOwnerRules": [{"apiGroup": "apps.kruise.io", "resources": ["clonesets/scale"]}]}}),
    ("an owner rule with resourceNames", {"rbac": {"extraOwnerRules": [
        {"apiGroup": "apps.kruise.io", "resources": ["clonesets"], "resourceNames": ["x"]}]}}),
    ("an owner rule without resources", {"rbac": {"extraOwnerRules": [{"apiGroup": "apps.kruise.io", "resources": []}]}}),
    ("an unknown rbac key", {"rbac": {"extraRules": []}}),
]


def narrowing_errors(text, want):
    """The rendered NetworkPolicy's egress rule for each port list goes to exactly those CIDRs."""
    import yaml

    pol = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "NetworkPolicy")
    got = {tuple(sorted(p["port"] for p in r.get("ports", []))): sorted(b["ipBlock"]["cidr"] for b in r.get("to", []))
           for r in pol["spec"]["egress"]}
    return [f"egress rule for ports {ports} goes to {got.get(tuple(ports))}, want {sorted(cidrs)}"
            for ports, cidrs in want if got.get(tuple(ports)) != sorted(cidrs)]


def main(outdir):
    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    report = helm.lint(str(CHART), strict=True, namespace="kijo-system")
    # severity 1 is INFO ("icon is recommended"); 2 warning, 3 error fail the lint.
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    if problems:
        failed = True
        for p in problems:
            print(f"FAIL helm lint: {p.get('path', '')} {p['error']}", file=sys.stderr)
    else:
        print(f"ok   helm lint --strict {CHART.name}", file=sys.stderr)
    chart = helm.Chart.load(str(CHART))
    for case, values, flags in CASES:
        manifests = chart.render(values, name="kijo-agent", namespace="kijo-system", is_install=True)
        docs = [m.strip() for _, m in sorted(manifests.items()) if m.strip() and not _.endswith("NOTES.txt")]
        path = out / f"chart-{case}.yaml"
        path.write_text("".join(f"---\n{d}\n" for d in docs))
        for e in narrowing_errors(path.read_text(), NARROWED[case]) if case in NARROWED else []:
            failed = True
            print(f"FAIL chart {case}: {e}", file=sys.stderr)
        print(" ".join([str(path)] + flags))
    for what, values in REJECTED:
        try:
            chart.render(values, name="kijo-agent", namespace="kijo-system")
        except helm.HelmValuesError:
            print(f"ok   values schema rejects {what}", file=sys.stderr)
        else:
            failed = True
            print(f"FAIL values schema accepts {what}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
