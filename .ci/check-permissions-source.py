#!/usr/bin/env python3
"""Checks that deploy/rbac-permissions.json (what the manifests grant) says the same as
the agent's code: the consts kijo_agent::kube::READ_PERMISSIONS and LEASE_PERMISSIONS
in src/kube/. Reads the Rust source text (each entry is a `Permission { api_group,
resource, verbs }` literal), so it needs no build. Exits 0 with a note while the
consts do not exist yet.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENTRY = re.compile(
    r'Permission\s*\{\s*api_group:\s*"([^"]*)",\s*resource:\s*"([^"]*)",\s*verbs:\s*&\[([^\]]*)\],?\s*\}', re.S)


def const_block(text, name):
    m = re.search(rf"pub const {name}\s*:\s*&\[Permission\]\s*=\s*&\[(.*?)\];", text, re.S)
    return m and m.group(1)


def triples(entries):
    return {(g, r, v) for g, r, verbs in entries for v in verbs}


def from_rust(block):
    return triples((g, r, re.findall(r'"([^"]*)"', verbs)) for g, r, verbs in ENTRY.findall(block))


def main():
    sources = sorted((ROOT / "src" / "kube").glob("**/*.rs"))
    text = "\n".join(p.read_text() for p in sources)
    read = const_block(text, "READ_PERMISSIONS")
    if read is None:
        print("ok   permissions source: kube::READ_PERMISSIONS not written yet; deploy/rbac-permissions.json stands alone")
        return 0
    code = from_rust(read)
    listed = triples((e["api_group"], e["resource"], e["verbs"])
                     for e in json.loads((ROOT / "deploy" / "rbac-permissions.json").read_text()))
    errors = []
    if code - listed:
        errors.append(f"the code reads what deploy/rbac-permissions.json does not grant: {sorted(code - listed)}")
    if listed - code:
        errors.append(f"deploy/rbac-permissions.json grants what the code does not read: {sorted(listed - code)}")
    lease = const_block(text, "LEASE_PERMISSIONS")
    want_lease = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    if lease is not None and from_rust(lease) != want_lease:
        errors.append(f"kube::LEASE_PERMISSIONS {sorted(from_rust(lease))} != the manifests' lease Role {sorted(want_lease)}")
    for e in errors:
        print(f"FAIL permissions source: {e}")
    if not errors:
        print(f"ok   permissions source: kube::READ_PERMISSIONS == deploy/rbac-permissions.json ({len(code)} grants)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
