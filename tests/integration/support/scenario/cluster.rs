//! Building the Kubernetes objects of a scenario: workloads with what their controllers make of
//! them, and VulnerabilityReports shaped exactly as Trivy Operator writes them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::{Summary, WorkloadSpec};
use crate::support::sandbox::Sandbox;

/// A workload kind as scenario files name it (`deployment/web`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    CronJob,
    Job,
    Pod,
    Rollout,
    CloneSet,
    Workflow,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "deployment" => Kind::Deployment,
            "replicaset" => Kind::ReplicaSet,
            "statefulset" => Kind::StatefulSet,
            "daemonset" => Kind::DaemonSet,
            "cronjob" => Kind::CronJob,
            "job" => Kind::Job,
            "pod" => Kind::Pod,
            "rollout" => Kind::Rollout,
            "cloneset" => Kind::CloneSet,
            "workflow" => Kind::Workflow,
            other => {
                return Err(format!(
                    "unknown kind {other:?} (deployment, replicaset, statefulset, daemonset, cronjob, job, pod, rollout, cloneset, workflow)"
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::CronJob => "CronJob",
            Kind::Job => "Job",
            Kind::Pod => "Pod",
            Kind::Rollout => "Rollout",
            Kind::CloneSet => "CloneSet",
            Kind::Workflow => "Workflow",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::CronJob | Kind::Job => "batch/v1",
            Kind::Pod => "v1",
            Kind::Rollout | Kind::Workflow => "argoproj.io/v1alpha1",
            Kind::CloneSet => "apps.kruise.io/v1alpha1",
            _ => "apps/v1",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::CronJob => "cronjobs",
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::Rollout => "rollouts",
            Kind::CloneSet => "clonesets",
            Kind::Workflow => "workflows",
        }
    }
}

/// `owner_kind/name` → (kind, name).
pub fn parse_owner(s: &str) -> Result<(Kind, String), String> {
    let (kind, name) = s
        .split_once('/')
        .filter(|(_, n)| !n.is_empty())
        .ok_or_else(|| format!("owner {s:?}: expected <kind>/<name>, e.g. deployment/web"))?;
    Ok((Kind::parse(kind)?, name.to_owned()))
}

/// The API path of a collection of `plural` in `ns` (any resource the sandbox serves).
pub fn collection(plural: &str, ns: &str) -> String {
    let prefix = match plural {
        "pods" | "namespaces" => "/api/v1",
        "cronjobs" | "jobs" => "/apis/batch/v1",
        "deployments" | "replicasets" | "statefulsets" | "daemonsets" => "/apis/apps/v1",
        "rollouts" | "workflows" => "/apis/argoproj.io/v1alpha1",
        "clonesets" => "/apis/apps.kruise.io/v1alpha1",
        _ => "/apis/aquasecurity.github.io/v1alpha1",
    };
    format!("{prefix}/namespaces/{ns}/{plural}")
}

/// Creates or replaces (PUT keeps uid and creationTimestamp, as the API server does); returns
/// the stored object.
pub fn upsert(sb: &Sandbox, plural: &str, ns: &str, obj: &Value) -> Result<Value, String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let path = collection(plural, ns);
    let body = obj.to_string();
    let put = sb.http("PUT", &format!("{path}/{name}"), Some(&body), &[]);
    let reply = match put.status {
        200 => put,
        404 => sb.http("POST", &path, Some(&body), &[]),
        s => return Err(format!("PUT {path}/{name}: {s} {}", put.body)),
    };
    if !(200..300).contains(&reply.status) {
        return Err(format!(
            "write {path}/{name}: {} {}",
            reply.status, reply.body
        ));
    }
    Ok(reply.json())
}

pub fn get(sb: &Sandbox, plural: &str, ns: &str, name: &str) -> Result<Value, String> {
    let path = format!("{}/{name}", collection(plural, ns));
    let r = sb.http("GET", &path, None, &[]);
    if r.status != 200 {
        return Err(format!("GET {path}: {} {}", r.status, r.body));
    }
    Ok(r.json())
}

pub fn delete(sb: &Sandbox, plural: &str, ns: &str, name: &str) -> Result<(), String> {
    delete_with(sb, plural, ns, name, false)
}

/// `orphan`: delete the object only, leaving its dependents (`propagationPolicy=Orphan`), as a
/// cluster looks before the garbage collector has caught up.
pub fn delete_with(
    sb: &Sandbox,
    plural: &str,
    ns: &str,
    name: &str,
    orphan: bool,
) -> Result<(), String> {
    let mut path = format!("{}/{name}", collection(plural, ns));
    if orphan {
        path.push_str("?propagationPolicy=Orphan");
    }
    let r = sb.http("DELETE", &path, None, &[]);
    if r.status != 200 && r.status != 202 {
        return Err(format!("DELETE {path}: {} {}", r.status, r.body));
    }
    Ok(())
}

pub fn merge_patch(
    sb: &Sandbox,
    plural: &str,
    ns: &str,
    name: &str,
    patch: &Value,
) -> Result<(), String> {
    let path = format!("{}/{name}", collection(plural, ns));
    let r = sb.http(
        "PATCH",
        &path,
        Some(&patch.to_string()),
        &[("Content-Type", "application/merge-patch+json")],
    );
    if r.status != 200 {
        return Err(format!("PATCH {path}: {} {}", r.status, r.body));
    }
    Ok(())
}

pub fn ensure_namespace(sb: &Sandbox, ns: &str) -> Result<(), String> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let r = sb.http("POST", "/api/v1/namespaces", Some(&body.to_string()), &[]);
    match r.status {
        201 | 409 => Ok(()),
        s => Err(format!("create namespace {ns}: {s} {}", r.body)),
    }
}

/// FNV-1a, 64 bit: stable short hashes for names and `resource-spec-hash`.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A `pod-template-hash` as Kubernetes spells them (10 characters of its safe alphabet), from
/// the template: the same containers give the same ReplicaSet, which is how a rollback finds
/// its old ReplicaSet again.
pub fn template_hash(spec: &WorkloadSpec) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = fnv(&format!("{:?}{:?}", spec.containers, spec.init_containers));
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The one Pod of a Workflow, named as Argo Workflows names a step's pod
/// (`<workflow>-<template>-<number>`).
pub fn workflow_pod(workflow: &str) -> String {
    format!("{workflow}-main-{}", fnv(workflow) % 10_000_000_000)
}

/// A pod spec from the compact container maps.
pub fn pod_spec(spec: &WorkloadSpec, restart: Option<&str>) -> Value {
    let list = |m: &BTreeMap<String, String>| -> Vec<Value> {
        m.iter()
            .map(|(name, image)| json!({"name": name, "image": image}))
            .collect()
    };
    let mut pod = json!({"containers": list(&spec.containers)});
    if !spec.init_containers.is_empty() {
        pod["initContainers"] = json!(list(&spec.init_containers));
    }
    if let Some(r) = restart {
        pod["restartPolicy"] = json!(r);
    }
    pod
}

fn meta(name: &str, ns: &str, labels: Value) -> Value {
    json!({"name": name, "namespace": ns, "labels": labels})
}

/// The object of a non-Deployment workload (a Deployment is built by the runner, which keeps
/// its revisions).
pub fn workload_object(kind: Kind, spec: &WorkloadSpec) -> Value {
    let labels = json!({"app": spec.name});
    let template = |restart| json!({"metadata": {"labels": {"app": spec.name}}, "spec": pod_spec(spec, restart)});
    let mut obj = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.name(),
        "metadata": meta(&spec.name, &spec.namespace, labels.clone()),
    });
    obj["spec"] = match kind {
        Kind::StatefulSet => json!({"replicas": 1, "serviceName": spec.name,
            "selector": {"matchLabels": labels}, "template": template(None)}),
        Kind::DaemonSet => json!({"selector": {"matchLabels": labels}, "template": template(None)}),
        Kind::CronJob => json!({"schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": template(Some("OnFailure"))}}}),
        Kind::Job => json!({"template": template(Some("Never"))}),
        Kind::Pod => pod_spec(spec, spec.restart_policy.as_deref()),
        Kind::Deployment | Kind::ReplicaSet | Kind::Rollout | Kind::CloneSet | Kind::Workflow => {
            unreachable!("built by the runner")
        }
    };
    if kind == Kind::Pod {
        obj["status"] = json!({"phase": "Running"});
    }
    if let Some(prefix) = &spec.generate_name {
        obj["metadata"]["generateName"] = json!(prefix);
    }
    obj
}

pub fn owner_reference(kind: Kind, owner: &Value, block: bool) -> Value {
    json!({
        "apiVersion": kind.api_version(), "kind": kind.name(),
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": block,
    })
}

/// The pod template's containers (and init containers) of a stored workload object.
pub fn template_images(kind: Kind, obj: &Value) -> BTreeMap<String, String> {
    let spec = match kind {
        Kind::Pod => &obj["spec"],
        Kind::CronJob => &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &obj["spec"]["template"]["spec"],
    };
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_owned(),
                c["image"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// `report.registry` and `report.artifact` of an image reference, as Trivy Operator fills them:
/// Docker Hub images get `index.docker.io` and the `library/` prefix.
pub fn artifact(image: &str) -> (String, Value) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, repo))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), repo.to_owned())
        }
        Some(_) => ("index.docker.io".to_owned(), name.to_owned()),
        None => ("index.docker.io".to_owned(), format!("library/{name}")),
    };
    let mut art = json!({"repository": repository, "tag": tag.unwrap_or("latest")});
    if let Some(d) = digest {
        art["digest"] = json!(d);
    }
    (registry, art)
}

/// A compact finding line, `ID PACKAGE INSTALLED [-> FIXED] SEVERITY [key=value…]` with keys
/// `path` (packagePath), `target`, `title`, `link` (primaryLink); a raw object passes through.
pub fn vulnerability(v: &Value) -> Result<Value, String> {
    let line = match v {
        Value::Object(_) => return Ok(v.clone()),
        Value::String(s) => s,
        other => {
            return Err(format!(
                "a vulnerability is a line or an object, got {other}"
            ));
        }
    };
    let bad = |why: &str| {
        format!(
            "vulnerability {line:?}: {why}; expected `ID PACKAGE INSTALLED [-> FIXED] SEVERITY [path=… target=… title=… link=…]`"
        )
    };
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let mut attrs = BTreeMap::new();
    while let Some((k, val)) = words.last().and_then(|w| w.split_once('=')) {
        if !["path", "target", "title", "link"].contains(&k) {
            return Err(bad(&format!("unknown attribute {k}")));
        }
        // Titles have no spaces in a compact line: `title=zlib:_heap_overflow`.
        let val = if k == "title" {
            val.replace('_', " ")
        } else {
            val.to_owned()
        };
        attrs.insert(k, val);
        words.pop();
    }
    let (id, package, installed, fixed, severity) = match words.as_slice() {
        [id, pkg, inst, "->", fixed, sev] => (*id, *pkg, *inst, *fixed, *sev),
        [id, pkg, inst, sev] => (*id, *pkg, *inst, "", *sev),
        _ => return Err(bad("wrong number of words")),
    };
    if !["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"].contains(&severity) {
        return Err(bad(&format!("severity {severity:?}")));
    }
    let mut out = json!({
        "vulnerabilityID": id, "resource": package, "installedVersion": installed,
        "fixedVersion": fixed, "severity": severity,
        "title": attrs.get("title").cloned().unwrap_or_default(),
        "links": [], "target": attrs.get("target").cloned().unwrap_or_default(),
    });
    if let Some(p) = attrs.get("path") {
        out["packagePath"] = json!(p);
    }
    if let Some(l) = attrs.get("link") {
        out["primaryLink"] = json!(l);
    }
    Ok(out)
}

pub fn summary_of(vulns: Option<&[Value]>, given: Option<&Summary>) -> Value {
    let mut s = given.cloned().unwrap_or_default();
    if given.is_none() {
        for v in vulns.unwrap_or_default() {
            match v["severity"].as_str().unwrap_or("") {
                "CRITICAL" => s.critical += 1,
                "HIGH" => s.high += 1,
                "MEDIUM" => s.medium += 1,
                "LOW" => s.low += 1,
                _ => s.unknown += 1,
            }
        }
    }
    json!({"criticalCount": s.critical, "highCount": s.high, "mediumCount": s.medium,
           "lowCount": s.low, "unknownCount": s.unknown})
}

/// RFC 7386 merge patch.
pub fn merge(doc: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !doc.is_object() {
                *doc = json!({});
            }
            let d = doc.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    d.remove(k);
                } else {
                    merge(d.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *doc = other.clone(),
    }
}

/// Everything a VulnerabilityReport is built from.
pub struct ReportParts<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner_kind: Kind,
    pub owner: &'a Value,
    pub container: &'a str,
    pub image: &'a str,
    pub scanned: &'a str,
    /// `None`: no `vulnerabilities` key; `Some(None)`: `null`.
    pub vulnerabilities: Option<Option<&'a [Value]>>,
    pub summary: Option<&'a Summary>,
    pub spec_hash: String,
}

/// A VulnerabilityReport as Trivy Operator writes it (metadata, labels, one controller
/// ownerReference, `report.{updateTimestamp, scanner, registry, artifact, summary,
/// vulnerabilities}`).
pub fn report_object(p: &ReportParts) -> Value {
    let (registry, artifact) = artifact(p.image);
    let owner_name = p.owner["metadata"]["name"].as_str().unwrap_or_default();
    let mut report = json!({
        "updateTimestamp": p.scanned,
        "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.58.1"},
        "registry": {"server": registry},
        "artifact": artifact,
        "os": {"family": "debian", "name": "12.5"},
        "summary": summary_of(p.vulnerabilities.flatten(), p.summary),
    });
    match p.vulnerabilities {
        None => {}
        Some(None) => report["vulnerabilities"] = Value::Null,
        Some(Some(v)) => report["vulnerabilities"] = json!(v),
    }
    json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "labels": {
                "trivy-operator.resource.kind": p.owner_kind.name(),
                "trivy-operator.resource.name": owner_name,
                "trivy-operator.resource.namespace": p.namespace,
                "trivy-operator.container.name": p.container,
                "resource-spec-hash": p.spec_hash,
                "app.kubernetes.io/managed-by": "trivy-operator",
            },
            "annotations": {"trivy-operator.aquasecurity.github.io/report-ttl": "24h0m0s"},
            "ownerReferences": [owner_reference(p.owner_kind, p.owner, false)],
        },
        "report": report,
    })
}

/// The `resource-spec-hash` label: a hash of the owner's pod template.
pub fn spec_hash(images: &BTreeMap<String, String>) -> String {
    format!("{:010x}", fnv(&format!("{images:?}")) & 0xff_ffff_ffff)
}
