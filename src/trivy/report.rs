//! Typed, tolerant parsing of VulnerabilityReport and ClusterVulnerabilityReport objects.
//!
//! The operator's CRDs preserve unknown fields and docs examples omit "required" ones, so the
//! parser accepts anything that carries what identity needs (name, owner, container) and
//! ignores the rest. An object that lacks those is a [`Malformed`] value, never a panic: the
//! caller skips it, logs it and counts it, and the cycle goes on.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;

use crate::text::{cleaned, safe_link};

/// The report kinds the agent reads. Later kinds (ExposedSecretReport, ConfigAuditReport) get
/// their own variant and finding type; the metadata handling below is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportKind {
    VulnerabilityReport,
    ClusterVulnerabilityReport,
}

impl ReportKind {
    pub const ALL: &'static [ReportKind] = &[
        ReportKind::VulnerabilityReport,
        ReportKind::ClusterVulnerabilityReport,
    ];

    /// The wire `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::VulnerabilityReport => "VulnerabilityReport",
            ReportKind::ClusterVulnerabilityReport => "ClusterVulnerabilityReport",
        }
    }

    /// The REST resource name used in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            ReportKind::VulnerabilityReport => "vulnerabilityreports",
            ReportKind::ClusterVulnerabilityReport => "clustervulnerabilityreports",
        }
    }

    /// The field of `report` that lists this kind's findings. Missing or null, the report is
    /// malformed (see [`parse_report`]); an empty list is a scan that found nothing.
    pub fn findings_field(self) -> &'static str {
        match self {
            ReportKind::VulnerabilityReport | ReportKind::ClusterVulnerabilityReport => {
                "vulnerabilities"
            }
        }
    }

    pub fn cluster_scoped(self) -> bool {
        matches!(self, ReportKind::ClusterVulnerabilityReport)
    }

    pub fn from_kind(kind: &str) -> Option<ReportKind> {
        ReportKind::ALL.iter().copied().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `metadata.ownerReferences` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub controller: Option<bool>,
}

/// The parts of Kubernetes `ObjectMeta` the agent uses. Metadata-only listings yield this, so
/// callers can compare `(uid, resource_version)` against the previous cycle without fetching
/// report bodies. `managedFields` and other bulky fields are skipped while decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
    pub creation_timestamp: Option<String>,
    /// The prefix the API server named the object from, when it was made with `generateName`
    /// (an owner read for [`crate::trivy::instance::family_of`]; reports have none).
    pub generate_name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    pub owner_references: Vec<OwnerReference>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Labels and annotations Trivy Operator sets on every report (see the upstream sample reports
/// in tests/fixtures/trivy).
pub const LABEL_OWNER_KIND: &str = "trivy-operator.resource.kind";
pub const LABEL_OWNER_NAME: &str = "trivy-operator.resource.name";
pub const LABEL_OWNER_NAMESPACE: &str = "trivy-operator.resource.namespace";
pub const LABEL_CONTAINER: &str = "trivy-operator.container.name";
pub const LABEL_SPEC_HASH: &str = "resource-spec-hash";
/// Holds the owner name when it is not a valid label value (the label then carries a hash).
pub const ANNOTATION_OWNER_NAME: &str = "trivy-operator.resource.name";

/// The workload a report was produced for, as the operator recorded it (the direct owner, e.g.
/// a ReplicaSet; see [`crate::trivy::resolve_chain`] for the Deployment or Rollout above it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    /// `""` for cluster-scoped owners.
    pub namespace: String,
}

/// The scanned image.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Image {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl fmt::Display for Image {
    /// `registry/repository:tag@digest`, leaving out the parts the report does not carry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.registry.is_empty() {
            write!(f, "{}/", self.registry)?;
        }
        f.write_str(&self.repository)?;
        if !self.tag.is_empty() {
            write!(f, ":{}", self.tag)?;
        }
        if !self.digest.is_empty() {
            write!(f, "@{}", self.digest)?;
        }
        Ok(())
    }
}

pub use crate::severity::Severity;

/// The report model has one finding type, the lifecycle's: parsing fills it directly, so no
/// second shape of a finding exists between the wire and the store.
pub use crate::lifecycle::{Finding, FindingKey};

/// A parsed report. Entries with the same key (one package at several paths, which the
/// operator lists as separate entries: trivy-operator issues #947, #2502) are instances of one
/// finding, merged by [`crate::lifecycle::merge_instances`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub kind: ReportKind,
    /// `""` for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// `report.updateTimestamp`; absent in some hand-written reports.
    pub update_timestamp: Option<Timestamp>,
    pub creation_timestamp: Option<Timestamp>,
    pub owner: Owner,
    pub owner_references: Vec<OwnerReference>,
    pub container: String,
    pub image: Image,
    /// `resource-spec-hash`: changes when the owner's pod template changes.
    pub spec_hash: String,
    /// All annotations, e.g. `trivy-operator.aquasecurity.github.io/report-ttl` (`0s` marks
    /// a report of an old revision that the operator is about to delete).
    pub annotations: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
}

/// A report that could not be used. Carries enough to log and count it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub kind: ReportKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "<unnamed>"
        } else {
            &self.name
        };
        if self.namespace.is_empty() {
            write!(f, "malformed {} {name}: {}", self.kind, self.reason)
        } else {
            write!(
                f,
                "malformed {} {}/{name}: {}",
                self.kind, self.namespace, self.reason
            )
        }
    }
}

#[derive(Deserialize)]
struct RawReport {
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    report: Option<RawVulnData>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawVulnData {
    update_timestamp: Option<String>,
    registry: Option<RawRegistry>,
    artifact: Option<RawArtifact>,
    vulnerabilities: Option<Vec<RawVuln>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRegistry {
    server: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawArtifact {
    repository: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawVuln {
    #[serde(rename = "vulnerabilityID")]
    vulnerability_id: Option<String>,
    resource: Option<String>,
    installed_version: Option<String>,
    fixed_version: Option<StringOrList>,
    severity: Option<String>,
    title: Option<String>,
    primary_link: Option<String>,
    package_path: Option<String>,
    target: Option<String>,
}

/// `fixedVersion` is a comma-separated string on the wire; an array is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_string(self) -> String {
        match self {
            StringOrList::One(s) => s,
            StringOrList::Many(v) => v.join(", "),
        }
    }
}

/// Only the identifying metadata, decoded when the full parse failed so that the
/// [`Malformed`] value can still name the object.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MinimalReport {
    metadata: MinimalMeta,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MinimalMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
}

/// Parses one report object. `kind` is what the caller listed; the object's own `kind` field
/// wins when present and known.
pub fn parse_report(kind: ReportKind, json: &str) -> Result<Report, Malformed> {
    match serde_json::from_str::<RawReport>(json) {
        Ok(raw) => from_raw(kind, raw),
        Err(e) => {
            let meta = serde_json::from_str::<MinimalReport>(json)
                .map(|m| m.metadata)
                .unwrap_or_default();
            Err(Malformed {
                kind,
                namespace: meta.namespace.unwrap_or_default(),
                name: meta.name.unwrap_or_default(),
                uid: meta.uid.unwrap_or_default(),
                reason: format!("invalid json: {e}"),
            })
        }
    }
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|e| format!("{field} {s:?} is not an RFC 3339 time: {e}")),
    }
}

fn from_raw(hint: ReportKind, raw: RawReport) -> Result<Report, Malformed> {
    let kind = raw
        .kind
        .as_deref()
        .and_then(ReportKind::from_kind)
        .unwrap_or(hint);
    let meta = raw.metadata;
    let malformed = |reason: String| Malformed {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        reason,
    };
    if meta.name.is_empty() {
        return Err(malformed("metadata.name is missing".into()));
    }
    let Some(data) = raw.report else {
        return Err(malformed("the report field is missing".into()));
    };
    let owner = owner_of(&meta).map_err(&malformed)?;
    // Cluster reports describe the cluster as one pseudo-workload and may lack the label;
    // a namespaced report without it could not be told apart from its siblings.
    let container = match meta.labels.get(LABEL_CONTAINER) {
        Some(c) if !c.is_empty() => c.clone(),
        _ if kind.cluster_scoped() => String::new(),
        _ => return Err(malformed(format!("label {LABEL_CONTAINER} is missing"))),
    };
    let update_timestamp = parse_time("report.updateTimestamp", data.update_timestamp.as_deref())
        .map_err(&malformed)?;
    // A bad creationTimestamp is the API server's business, not a reason to drop the report.
    let creation_timestamp = parse_time(
        "metadata.creationTimestamp",
        meta.creation_timestamp.as_deref(),
    )
    .ok()
    .flatten();
    let artifact = data.artifact.unwrap_or_default();
    // Report text is untrusted: control and bidi characters go here, once (see crate::text).
    let text = |s: Option<String>| cleaned(s.unwrap_or_default());
    let image = Image {
        registry: text(data.registry.and_then(|r| r.server)),
        repository: text(artifact.repository),
        tag: text(artifact.tag),
        digest: text(artifact.digest),
    };
    // A missing or null list is not "no vulnerabilities": read as an empty scan it would close
    // every open finding of the container. Only `[]` says the scan found nothing.
    let Some(vulnerabilities) = data.vulnerabilities else {
        return Err(malformed(format!(
            "report.{} is missing or null",
            kind.findings_field()
        )));
    };
    let mut findings = Vec::with_capacity(vulnerabilities.len());
    for (i, v) in vulnerabilities.into_iter().enumerate() {
        let id = text(v.vulnerability_id);
        let package = text(v.resource);
        if id.is_empty() {
            return Err(malformed(format!(
                "report.vulnerabilities[{i}].vulnerabilityID is missing"
            )));
        }
        if package.is_empty() {
            return Err(malformed(format!(
                "report.vulnerabilities[{i}].resource is missing ({id})"
            )));
        }
        // Trivy writes `packagePath` for language packages and `target` (the scanned file or
        // OS) always; either locates the instance, neither is identity.
        let package_path = match text(v.package_path) {
            p if p.is_empty() => text(v.target),
            p => p,
        };
        findings.push(Finding {
            key: FindingKey {
                vulnerability_id: id,
                package,
            },
            installed_version: text(v.installed_version),
            fixed_version: text(v.fixed_version.map(StringOrList::into_string)),
            severity: Severity::from_trivy(v.severity.as_deref().unwrap_or("")),
            title: text(v.title),
            // Becomes the clickable CVE link in messages: only https (or loopback http).
            link: v
                .primary_link
                .filter(|l| safe_link(l).is_some())
                .unwrap_or_default(),
            package_path,
        });
    }
    let findings = crate::lifecycle::merge_instances(findings);
    let namespace = if kind.cluster_scoped() {
        String::new()
    } else {
        meta.namespace.clone()
    };
    Ok(Report {
        kind,
        namespace,
        spec_hash: meta
            .labels
            .get(LABEL_SPEC_HASH)
            .cloned()
            .unwrap_or_default(),
        name: meta.name,
        uid: meta.uid,
        resource_version: meta.resource_version,
        update_timestamp,
        creation_timestamp,
        owner,
        owner_references: meta.owner_references,
        annotations: meta.annotations,
        container,
        image,
        findings,
    })
}

/// The owner comes from the operator's labels; when the name did not fit in a label the
/// annotation holds it. The controller ownerReference is the fallback for reports written by
/// other tools. The report *name* is never parsed: it may be a hash.
pub fn owner_of(meta: &ObjectMeta) -> Result<Owner, String> {
    let controller = meta
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
        .or(meta.owner_references.first());
    let kind = match meta.labels.get(LABEL_OWNER_KIND) {
        Some(k) if !k.is_empty() => k.clone(),
        _ => match controller {
            Some(r) if !r.kind.is_empty() => r.kind.clone(),
            _ => return Err(format!("label {LABEL_OWNER_KIND} is missing")),
        },
    };
    let name = match (
        meta.labels.get(LABEL_OWNER_NAME),
        meta.annotations.get(ANNOTATION_OWNER_NAME),
    ) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(n)) if !n.is_empty() => n.clone(),
        _ => match controller {
            Some(r) if !r.name.is_empty() && r.kind == kind => r.name.clone(),
            _ => {
                return Err(format!(
                    "neither label nor annotation {LABEL_OWNER_NAME} names the owner"
                ));
            }
        },
    };
    let namespace = match meta.labels.get(LABEL_OWNER_NAMESPACE) {
        Some(ns) => ns.clone(),
        None => meta.namespace.clone(),
    };
    Ok(Owner {
        kind,
        name,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_json(labels: &str, annotations: &str, vulns: &str, extra_report: &str) -> String {
        format!(
            r#"{{"apiVersion":"aquasecurity.github.io/v1alpha1","kind":"VulnerabilityReport",
            "metadata":{{"name":"replicaset-web-5d8f-app","namespace":"shop","uid":"u-1",
              "resourceVersion":"42","creationTimestamp":"2026-01-02T03:04:05Z",
              "labels":{{{labels}}},"annotations":{{{annotations}}},
              "managedFields":[{{"manager":"trivy-operator","fieldsV1":{{"f:report":{{}}}}}}],
              "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5d8f","uid":"rs-1","controller":true}}]}},
            "report":{{"updateTimestamp":"2026-01-02T04:00:00Z","unknownField":{{"x":1}},
              "registry":{{"server":"ghcr.io"}},
              "artifact":{{"repository":"acme/web","tag":"1.2","digest":"sha256:abc"}},
              "vulnerabilities":[{vulns}]{extra_report}}}}}"#
        )
    }

    const LABELS: &str = r#""trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"web-5d8f","trivy-operator.resource.namespace":"shop","trivy-operator.container.name":"app","resource-spec-hash":"h1""#;

    fn vuln(id: &str, pkg: &str, installed: &str, sev: &str, extra: &str) -> String {
        format!(
            r#"{{"vulnerabilityID":"{id}","resource":"{pkg}","installedVersion":"{installed}","severity":"{sev}","title":"t","primaryLink":"https://avd/{id}","links":[],"score":7.5{extra}}}"#
        )
    }

    #[test]
    fn parses_a_typical_report() {
        let json = report_json(
            LABELS,
            "",
            &[
                vuln(
                    "CVE-1",
                    "openssl",
                    "1.0",
                    "critical",
                    r#","fixedVersion":"1.1, 1.2""#,
                ),
                vuln(
                    "CVE-2",
                    "zlib",
                    "2.0",
                    "High",
                    r#","packagePath":"/app/x.jar""#,
                ),
            ]
            .join(","),
            "",
        );
        let r = parse_report(ReportKind::VulnerabilityReport, &json).unwrap();
        assert_eq!(r.name, "replicaset-web-5d8f-app");
        assert_eq!(r.namespace, "shop");
        assert_eq!(r.uid, "u-1");
        assert_eq!(r.resource_version, "42");
        assert_eq!(
            r.owner,
            Owner {
                kind: "ReplicaSet".into(),
                name: "web-5d8f".into(),
                namespace: "shop".into()
            }
        );
        assert_eq!(r.container, "app");
        assert_eq!(r.spec_hash, "h1");
        assert_eq!(r.image.to_string(), "ghcr.io/acme/web:1.2@sha256:abc");
        assert_eq!(
            r.update_timestamp,
            Some("2026-01-02T04:00:00Z".parse().unwrap())
        );
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.findings[0].severity, Severity::Critical);
        assert_eq!(r.findings[0].fixed_version, "1.1, 1.2");
        assert_eq!(r.findings[1].package_path, "/app/x.jar");
        assert_eq!(r.findings[0].key.vulnerability_id, "CVE-1");
        assert_eq!(r.findings[0].key.package, "openssl");
        assert_eq!(r.findings[0].link, "https://avd/CVE-1");
    }

    #[test]
    fn tolerant_and_malformed_cases() {
        // (description, json, Ok(finding count) or Err(reason fragment))
        let hashed_labels = r#""trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name-hash":"6b7c9","trivy-operator.resource.namespace":"shop","trivy-operator.container.name":"app""#;
        let no_container = r#""trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name":"web-5d8f""#;
        let cases: Vec<(&str, String, Result<usize, &str>)> = vec![
            ("empty vulnerabilities list", report_json(LABELS, "", "", ""), Ok(0)),
            ("no vulnerabilities key", report_json(LABELS, "", "", "").replace(r#""vulnerabilities":[]"#, r#""notVulnerabilities":[]"#), Err("report.vulnerabilities is missing or null")),
            ("null vulnerabilities", report_json(LABELS, "", "", "").replace(r#""vulnerabilities":[]"#, r#""vulnerabilities":null"#), Err("report.vulnerabilities is missing or null")),
            ("cluster report without vulnerabilities", report_json(LABELS, "", "", "").replace(r#""vulnerabilities":[]"#, r#""notVulnerabilities":[]"#).replace(r#""kind":"VulnerabilityReport""#, r#""kind":"ClusterVulnerabilityReport""#), Err("report.vulnerabilities is missing or null")),
            ("null fields", report_json(LABELS, "", r#"{"vulnerabilityID":"CVE-9","resource":"p","installedVersion":null,"fixedVersion":null,"severity":null,"title":null}"#, ""), Ok(1)),
            ("fixedVersion as list", report_json(LABELS, "", r#"{"vulnerabilityID":"CVE-9","resource":"p","fixedVersion":["1","2"]}"#, ""), Ok(1)),
            ("pkgPath is not packagePath", report_json(LABELS, "", r#"{"vulnerabilityID":"CVE-9","resource":"p","pkgPath":"/x"}"#, ""), Ok(1)),
            ("hashed owner name uses the annotation", report_json(hashed_labels, r#""trivy-operator.resource.name":"a-very-long-name""#, "", ""), Ok(0)),
            ("missing container label", report_json(no_container, "", "", ""), Err("trivy-operator.container.name")),
            ("missing vulnerability id", report_json(LABELS, "", r#"{"resource":"p"}"#, ""), Err("vulnerabilities[0].vulnerabilityID")),
            ("missing package", report_json(LABELS, "", r#"{"vulnerabilityID":"CVE-1"}"#, ""), Err("vulnerabilities[0].resource")),
            ("wrong type", report_json(LABELS, "", r#"{"vulnerabilityID":"CVE-1","resource":"p","title":5}"#, ""), Err("invalid json")),
            ("vulnerabilities not a list", report_json(LABELS, "", "", "").replace(r#""vulnerabilities":[]"#, r#""vulnerabilities":"x""#), Err("invalid json")),
            ("bad update timestamp", report_json(LABELS, "", "", "").replace("2026-01-02T04:00:00Z", "yesterday"), Err("updateTimestamp")),
            ("no report", r#"{"kind":"VulnerabilityReport","metadata":{"name":"n","namespace":"ns","labels":{}}}"#.to_string(), Err("report field")),
        ];
        for (what, json, want) in cases {
            let got = parse_report(ReportKind::VulnerabilityReport, &json);
            match (want, got) {
                (Ok(n), Ok(r)) => assert_eq!(r.findings.len(), n, "{what}"),
                (Err(frag), Err(m)) => {
                    assert!(m.reason.contains(frag), "{what}: reason {:?}", m.reason);
                    assert!(!m.name.is_empty(), "{what}: malformed must name the report");
                }
                (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn hashed_names_resolve_owner_from_annotation_not_from_report_name() {
        let labels = r#""trivy-operator.resource.kind":"ReplicaSet","trivy-operator.resource.name-hash":"6b7c9","trivy-operator.resource.namespace":"shop","trivy-operator.container.name":"app""#;
        let json = report_json(
            labels,
            r#""trivy-operator.resource.name":"real-owner-abc""#,
            "",
            "",
        )
        .replace("replicaset-web-5d8f-app", "replicaset-66f5df7b4f");
        let r = parse_report(ReportKind::VulnerabilityReport, &json).unwrap();
        assert_eq!(r.owner.name, "real-owner-abc");
        assert_eq!(r.name, "replicaset-66f5df7b4f");
    }

    #[test]
    fn cluster_reports_have_no_namespace() {
        let json = r#"{"kind":"ClusterVulnerabilityReport","metadata":{"name":"clustersbomreport-kbom-k8s-cluster","uid":"c1",
          "labels":{"trivy-operator.resource.kind":"ClusterSbomReport","trivy-operator.resource.name":"kbom","trivy-operator.resource.namespace":"","trivy-operator.container.name":"k8s-cluster"}},
          "report":{"updateTimestamp":"2026-01-01T00:00:00Z","artifact":{"repository":"kubernetes","tag":"v1.32.0"},"registry":{"server":"k8s.io"},
          "vulnerabilities":[{"vulnerabilityID":"CVE-2025-1","resource":"k8s.io/kubelet","installedVersion":"1.32.0","severity":"MEDIUM"}]}}"#;
        let r = parse_report(ReportKind::VulnerabilityReport, json).unwrap();
        assert_eq!(r.kind, ReportKind::ClusterVulnerabilityReport);
        assert_eq!(r.namespace, "");
        assert_eq!(r.owner.namespace, "");
        assert_eq!(r.image.to_string(), "k8s.io/kubernetes:v1.32.0");
        assert_eq!(r.container, "k8s-cluster");
        // Without the container label a cluster report is still usable.
        let unlabelled = json.replace(r#","trivy-operator.container.name":"k8s-cluster""#, "");
        let r = parse_report(ReportKind::ClusterVulnerabilityReport, &unlabelled).unwrap();
        assert_eq!(r.container, "");
    }

    /// The upstream Trivy Operator samples (tests/fixtures/trivy/SOURCES.md) all parse.
    #[test]
    fn upstream_samples_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trivy");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut n = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("vulnerabilityreport-") || !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            let r = parse_report(ReportKind::VulnerabilityReport, &text)
                .unwrap_or_else(|m| panic!("{name}: {m}"));
            assert!(
                !r.owner.name.is_empty() && !r.container.is_empty(),
                "{name}"
            );
            n += 1;
        }
        assert_eq!(n, 3, "the three samples in {}", dir.display());
    }

    #[test]
    fn report_text_is_sanitised_and_unsafe_links_dropped() {
        let json = report_json(
            LABELS,
            "",
            &[
                r#"{"vulnerabilityID":"CVE-1","resource":"openssl","installedVersion":"1.0\u0000-evil\u202e","severity":"HIGH","title":"bell\u0007 and\nline","primaryLink":"javascript:alert(1)"}"#.to_owned(),
                vuln("CVE-2", "zlib", "2.0", "HIGH", ""),
            ]
            .join(","),
            "",
        );
        let r = parse_report(ReportKind::VulnerabilityReport, &json).unwrap();
        assert_eq!(r.findings[0].installed_version, "1.0-evil");
        assert_eq!(r.findings[0].title, "bell and line");
        assert_eq!(
            r.findings[0].link, "",
            "a javascript: link is dropped"
        );
        assert_eq!(r.findings[1].link, "https://avd/CVE-2");
    }

    #[test]
    fn severity_parsing_is_case_insensitive() {
        let cases = [
            ("CRITICAL", Severity::Critical),
            ("critical", Severity::Critical),
            ("High", Severity::High),
            (" medium ", Severity::Medium),
            ("low", Severity::Low),
            ("UNKNOWN", Severity::Unknown),
            ("NONE", Severity::Unknown),
            ("", Severity::Unknown),
        ];
        for (input, want) in cases {
            assert_eq!(Severity::from_trivy(input), want, "{input:?}");
        }
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Unknown);
    }

    /// Entries with the same (id, package) are instances of one finding: every installed
    /// version and path is kept, the highest severity wins, and the order of the entries does
    /// not matter. The path is `packagePath`, else `target`.
    #[test]
    fn entries_with_one_key_are_instances_of_one_finding() {
        let entry = |id: &str, pkg: &str, installed: &str, sev: &str, path: &str, target: &str| {
            let mut extra = String::new();
            if !path.is_empty() {
                extra.push_str(&format!(r#","packagePath":"{path}""#));
            }
            if !target.is_empty() {
                extra.push_str(&format!(r#","target":"{target}""#));
            }
            vuln(id, pkg, installed, sev, &extra)
        };
        // (entries, expected findings as (id, package, installed, path, severity))
        type Want = Vec<(&'static str, &'static str, &'static str, &'static str, Severity)>;
        let cases: Vec<(&str, Vec<String>, Want)> = vec![
            (
                "one package at two paths",
                vec![
                    entry("CVE-1", "log4j", "2.14", "MEDIUM", "/b.jar", "Java"),
                    entry("CVE-1", "log4j", "2.15", "HIGH", "/a.jar", "Java"),
                ],
                vec![("CVE-1", "log4j", "2.14, 2.15", "/a.jar, /b.jar", Severity::High)],
            ),
            (
                "the same instance twice",
                vec![
                    entry("CVE-1", "zlib", "1", "LOW", "", "debian"),
                    entry("CVE-1", "zlib", "1", "LOW", "", "debian"),
                ],
                vec![("CVE-1", "zlib", "1", "debian", Severity::Low)],
            ),
            (
                "target when there is no packagePath",
                vec![
                    entry("CVE-1", "p", "1", "LOW", "", "Node.js"),
                    entry("CVE-1", "p", "1", "LOW", "/app/node_modules/p", "Node.js"),
                ],
                vec![("CVE-1", "p", "1", "/app/node_modules/p, Node.js", Severity::Low)],
            ),
            (
                "other id or package: other findings",
                vec![
                    entry("CVE-1", "p", "1", "LOW", "", ""),
                    entry("CVE-2", "p", "1", "LOW", "", ""),
                    entry("CVE-1", "q", "1", "LOW", "", ""),
                ],
                vec![
                    ("CVE-1", "p", "1", "", Severity::Low),
                    ("CVE-2", "p", "1", "", Severity::Low),
                    ("CVE-1", "q", "1", "", Severity::Low),
                ],
            ),
        ];
        for (what, entries, want) in cases {
            let mut forward = entries.clone();
            let mut backward = entries;
            backward.reverse();
            for (order, list) in [("forward", &mut forward), ("backward", &mut backward)] {
                let json = report_json(LABELS, "", &list.join(","), "");
                let r = parse_report(ReportKind::VulnerabilityReport, &json).unwrap();
                let mut got: Vec<_> = r
                    .findings
                    .iter()
                    .map(|f| {
                        (
                            f.key.vulnerability_id.as_str(),
                            f.key.package.as_str(),
                            f.installed_version.as_str(),
                            f.package_path.as_str(),
                            f.severity,
                        )
                    })
                    .collect();
                got.sort();
                let mut want = want.clone();
                want.sort();
                assert_eq!(got, want, "{what} ({order})");
            }
        }
    }
}
