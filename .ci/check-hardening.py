#!/usr/bin/env python3
"""Checks the promises the manifests make beyond RBAC, on rendered YAML: the pod runs
as 65534:65534 with a read-only root, no capabilities, no privilege escalation and
the RuntimeDefault seccomp profile; the service-account token is projected into the
agent's container only; probes are those of the original README; secrets come from
Secrets, never from the ConfigMap; an embedded SQLite store runs as one replica.

Usage: check-hardening.py [--no-network-policy] FILE...
"""
import sys

import yaml

SECRET_VARS = {"KIJO_DATABASE_URL", "KIJO_NOTIFY_SLACK", "KIJO_NOTIFY_WEBHOOK",
               "KIJO_NOTIFY_WEBHOOK_SECRET", "KIJO_SAAS_API_KEY"}
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def check(docs, want_netpol):
    errors = []
    err = errors.append
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(deps) != 1:
        return [f"expected one Deployment, found {len(deps)}"]
    dep = deps[0]
    spec = dep["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    for key, want in (("runAsNonRoot", True), ("runAsUser", 65534), ("runAsGroup", 65534)):
        if psc.get(key) != want:
            err(f"pod securityContext.{key} is {psc.get(key)!r}, want {want!r}")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err("pod seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            err(f"pod sets {key}")
    if spec.get("automountServiceAccountToken") is not False:
        err("pod automountServiceAccountToken is not false (the token is projected explicitly)")
    if len(spec["containers"]) != 1 or spec.get("initContainers"):
        err("the pod must hold the agent container only")
    c = spec["containers"][0]
    csc = c.get("securityContext", {})
    if csc.get("allowPrivilegeEscalation") is not False:
        err("allowPrivilegeEscalation is not false")
    if csc.get("readOnlyRootFilesystem") is not True:
        err("readOnlyRootFilesystem is not true")
    if csc.get("privileged"):
        err("container is privileged")
    caps = csc.get("capabilities", {})
    if caps.get("drop") != ["ALL"] or caps.get("add"):
        err(f"capabilities are {caps!r}, want drop [ALL] and no add")
    for kind, path, delay, period in (("livenessProbe", "/health/live", 30, 10),
                                      ("readinessProbe", "/health/ready", 5, 5)):
        p = c.get(kind, {})
        got = (p.get("httpGet", {}).get("path"), p.get("httpGet", {}).get("port"),
               p.get("initialDelaySeconds"), p.get("periodSeconds"))
        if got != (path, 8080, delay, period):
            err(f"{kind} is {got}, want {(path, 8080, delay, period)}")
    res = c.get("resources", {})
    if not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory"):
        err("memory request and limit must be set")

    env = {e["name"]: e for e in c.get("env", [])}
    for name in ("POD_NAME", "POD_NAMESPACE", "KIJO_LEASE_NAMESPACE"):
        want = "metadata.name" if name == "POD_NAME" else "metadata.namespace"
        if env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != want:
            err(f"{name} is not the downward-API {want}")
    db = env.get("KIJO_DATABASE_URL")
    if db is None:
        err("KIJO_DATABASE_URL is not set")
        embedded = False
    elif "value" in db:
        embedded = db["value"].startswith("sqlite:")
        if not embedded:
            err("KIJO_DATABASE_URL is a literal that is not sqlite: (a PostgreSQL URL carries a password: use a Secret)")
    else:
        embedded = False
        ref = db.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("key") != "database-url":
            err(f"KIJO_DATABASE_URL comes from key {ref.get('key')!r}, want database-url")
    slack = env.get("KIJO_NOTIFY_SLACK")
    if slack is not None and slack.get("valueFrom", {}).get("secretKeyRef", {}).get("key") != "slack-webhook":
        err("KIJO_NOTIFY_SLACK must come from a Secret key slack-webhook")
    for name in SECRET_VARS & env.keys():
        if name != "KIJO_DATABASE_URL" and "value" in env[name]:
            err(f"{name} is a literal in the Deployment; it must come from a Secret")
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        leaked = SECRET_VARS & set((cm.get("data") or {}).keys())
        if leaked:
            err(f"ConfigMap {cm['metadata']['name']} carries secrets {sorted(leaked)}")

    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    token = mounts.get(TOKEN_PATH)
    if not token or not token.get("readOnly"):
        err(f"no read-only projected token at {TOKEN_PATH}")
    else:
        sources = vols.get(token["name"], {}).get("projected", {}).get("sources", [])
        kinds = {k for s in sources for k in s}
        if kinds != {"serviceAccountToken", "configMap", "downwardAPI"}:
            err(f"token volume sources are {sorted(kinds)}")
    if embedded:
        if dep["spec"].get("replicas") != 1:
            err("an embedded SQLite store needs exactly one replica")
        if dep["spec"].get("strategy", {}).get("type") != "Recreate":
            err("an embedded SQLite store needs the Recreate strategy")
        path = db["value"].split(":", 1)[1]
        if not any(path.startswith(m.rstrip("/") + "/") for m in mounts):
            err(f"the SQLite file {path} is not on a mounted volume")

    svc = [d for d in docs if d["kind"] == "Service"]
    if not svc or not any(p.get("port") == 8080 for p in svc[0]["spec"]["ports"]):
        err("no Service on port 8080 for health and metrics")
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        # No bundled schema for this CRD: check that it scrapes our Service's /metrics.
        want = sm["spec"].get("selector", {}).get("matchLabels", {})
        labels = svc[0]["metadata"].get("labels", {}) if svc else {}
        if not want or any(labels.get(k) != v for k, v in want.items()):
            err(f"ServiceMonitor selector {want} does not select the Service")
        eps = sm["spec"].get("endpoints", [])
        svc_ports = {p.get("name") for p in svc[0]["spec"]["ports"]} if svc else set()
        if not eps or any(e.get("port") not in svc_ports or e.get("path") != "/metrics" for e in eps):
            err(f"ServiceMonitor endpoints {eps} are not the Service's named port with /metrics")
    netpols = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if want_netpol:
        if len(netpols) != 1 or "Egress" not in netpols[0]["spec"].get("policyTypes", []):
            err("no NetworkPolicy limiting egress")
        else:
            ports = {(p.get("protocol", "TCP"), p["port"]) for r in netpols[0]["spec"].get("egress", []) for p in r.get("ports", [])}
            need = {("UDP", 53), ("TCP", 443)} | (set() if embedded else {("TCP", 5432)})
            if not need <= ports:
                err(f"egress misses {sorted(need - ports)}")
            if any(not r.get("ports") for r in netpols[0]["spec"].get("egress", [])):
                err("an egress rule allows every port")
    elif netpols:
        err("NetworkPolicy rendered although disabled")
    return errors


def main(argv):
    want_netpol = "--no-network-policy" not in argv
    files = [a for a in argv if not a.startswith("--")]
    docs = []
    for f in files:
        with open(f) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    errors = check(docs, want_netpol)
    label = ", ".join(files)
    for e in errors:
        print(f"FAIL hardening {label}: {e}")
    if not errors:
        print(f"ok   hardening {label}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
