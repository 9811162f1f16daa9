#!/usr/bin/env python3
"""Checks the monitoring objects of a rendered YAML file (chart or kustomize):
  - every PrometheusRule against a schema of monitoring.coreos.com/v1 PrometheusRule
    (no PyPI or npm package ships the Prometheus Operator's CRD schemas, so SCHEMA below
    restates the CRD's spec.groups part, stricter: unknown fields are refused here
    where the API server would silently prune them), then its groups written to
    OUTDIR/<name>.rules.yaml and checked with `promtool check rules`;
  - every ConfigMap with the grafana_dashboard label holds dashboard JSON whose panels
    query the dashboard's data-source variable;
  - a PodDisruptionBudget exists exactly when the Deployment runs more than one replica,
    and selects its pods.
Prints the rule files it wrote (one per line) on stdout for `promtool test rules`.

Usage: check-monitoring.py OUTDIR FILE
"""
import json
import pathlib
import subprocess
import sys

import jsonschema
import yaml

# Prometheus durations as the CRD's pattern spells them.
DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"labels": STRING_MAP, "annotations": STRING_MAP}},
        "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {"groups": {"type": "array", "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": DURATION},
                    "query_offset": {"type": "string", "pattern": DURATION},
                    "limit": {"type": "integer"},
                    "labels": STRING_MAP,
                    "partial_response_strategy": {"type": "string", "pattern": "^(?i)(abort|warn)?$"},
                    "rules": {"type": "array", "items": {
                        "type": "object", "required": ["expr"], "additionalProperties": False,
                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                        "properties": {
                            "alert": {"type": "string"}, "record": {"type": "string"},
                            "expr": {"type": ["string", "integer"]},
                            "for": {"type": "string", "pattern": DURATION},
                            "keep_firing_for": {"type": "string", "pattern": "^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$", "minLength": 1},
                            "labels": STRING_MAP, "annotations": STRING_MAP}}}}}}},
        },
    },
}


def check(docs, outdir, stem):
    errors, written = [], []
    for rule in (d for d in docs if d["kind"] == "PrometheusRule"):
        name = rule["metadata"]["name"]
        for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(rule):
            errors.append(f"PrometheusRule {name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        path = pathlib.Path(outdir) / f"{stem}-{name}.rules.yaml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
        run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
        if run.returncode != 0:
            errors.append(f"promtool check rules {name}: {run.stdout}{run.stderr}")
        written.append(str(path))
    for cm in (d for d in docs if d["kind"] == "ConfigMap" and (d["metadata"].get("labels") or {}).get("grafana_dashboard")):
        name = cm["metadata"]["name"]
        files = cm.get("data") or {}
        if not files:
            errors.append(f"dashboard ConfigMap {name} has no data")
        for key, text in files.items():
            try:
                dash = json.loads(text)
            except ValueError as e:
                errors.append(f"dashboard ConfigMap {name}/{key} is not JSON: {e}")
                continue
            if not dash.get("uid") or not dash.get("title"):
                errors.append(f"dashboard {key} needs a uid and a title (the sidecar replaces dashboards by uid)")
            for p in dash.get("panels", []):
                if p["type"] == "row":
                    continue
                if p.get("datasource", {}).get("uid") != "${datasource}":
                    errors.append(f"panel {p['title']!r} does not use the ${{datasource}} variable")
                if not p.get("targets") or any(not t.get("expr") for t in p["targets"]):
                    errors.append(f"panel {p['title']!r} has a target without a query")
    deps = [d for d in docs if d["kind"] == "Deployment"]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    if len(deps) == 1:
        replicas = deps[0]["spec"].get("replicas", 1)
        pods = deps[0]["spec"]["template"]["metadata"]["labels"]
        if replicas > 1 and len(pdbs) != 1:
            errors.append(f"{replicas} replicas but {len(pdbs)} PodDisruptionBudgets (want 1)")
        if replicas == 1 and pdbs:
            errors.append("a PodDisruptionBudget for a single replica would block node drains")
        for pdb in pdbs:
            want = pdb["spec"].get("selector", {}).get("matchLabels", {})
            if not want or any(pods.get(k) != v for k, v in want.items()):
                errors.append(f"PodDisruptionBudget selector {want} does not select the agent's pods")
            if pdb["spec"].get("maxUnavailable") is None or pdb["spec"].get("minAvailable") is not None:
                errors.append("PodDisruptionBudget must set maxUnavailable only (minAvailable blocks scale-downs)")
    return errors, written


def main(outdir, file):
    with open(file) as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    errors, written = check(docs, outdir, pathlib.Path(file).stem)
    for e in errors:
        print(f"FAIL monitoring {file}: {e}", file=sys.stderr)
    for w in written:
        print(w)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
