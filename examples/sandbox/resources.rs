//! The fixed table of resources the sandbox serves. A static table (rather than CRD objects)
//! keeps discovery, routing and printing consistent from one place.

/// One printer column of a Table response, as a CRD's `additionalPrinterColumns` declares it.
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer` or `date` (the Table column type).
    pub typ: &'static str,
    /// JSON path inside the object; empty means "the object's age".
    pub path: &'static [&'static str],
    pub priority: u8,
}

pub struct Resource {
    /// API group; empty for the core (`/api/v1`) group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Extra columns between Name and Age (Age is always present).
    pub columns: &'static [Column],
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or just the plural for core), as error messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn col(
    name: &'static str,
    typ: &'static str,
    path: &'static [&'static str],
    priority: u8,
) -> Column {
    Column {
        name,
        typ,
        path,
        priority,
    }
}

const AGE: Column = col("Age", "date", &[], 0);

const VULN_COLUMNS: &[Column] = &[
    col(
        "Repository",
        "string",
        &["report", "artifact", "repository"],
        0,
    ),
    col("Tag", "string", &["report", "artifact", "tag"], 0),
    col("Scanner", "string", &["report", "scanner", "name"], 0),
    AGE,
    col(
        "Critical",
        "integer",
        &["report", "summary", "criticalCount"],
        1,
    ),
    col("High", "integer", &["report", "summary", "highCount"], 1),
    col(
        "Medium",
        "integer",
        &["report", "summary", "mediumCount"],
        1,
    ),
    col("Low", "integer", &["report", "summary", "lowCount"], 1),
    col(
        "Unknown",
        "integer",
        &["report", "summary", "unknownCount"],
        1,
    ),
];

const SECRET_COLUMNS: &[Column] = &[
    col(
        "Repository",
        "string",
        &["report", "artifact", "repository"],
        0,
    ),
    col("Tag", "string", &["report", "artifact", "tag"], 0),
    col("Scanner", "string", &["report", "scanner", "name"], 0),
    AGE,
    col(
        "Critical",
        "integer",
        &["report", "summary", "criticalCount"],
        1,
    ),
    col("High", "integer", &["report", "summary", "highCount"], 1),
    col(
        "Medium",
        "integer",
        &["report", "summary", "mediumCount"],
        1,
    ),
    col("Low", "integer", &["report", "summary", "lowCount"], 1),
];

const CHECK_COLUMNS: &[Column] = &[
    col("Scanner", "string", &["report", "scanner", "name"], 0),
    AGE,
    col(
        "Critical",
        "integer",
        &["report", "summary", "criticalCount"],
        1,
    ),
    col("High", "integer", &["report", "summary", "highCount"], 1),
    col(
        "Medium",
        "integer",
        &["report", "summary", "mediumCount"],
        1,
    ),
    col("Low", "integer", &["report", "summary", "lowCount"], 1),
];

const SBOM_COLUMNS: &[Column] = &[
    col(
        "Repository",
        "string",
        &["report", "artifact", "repository"],
        0,
    ),
    col("Tag", "string", &["report", "artifact", "tag"], 0),
    col("Scanner", "string", &["report", "scanner", "name"], 0),
    AGE,
    col(
        "Components",
        "integer",
        &["report", "summary", "componentsCount"],
        1,
    ),
    col(
        "Dependencies",
        "integer",
        &["report", "summary", "dependenciesCount"],
        1,
    ),
];

const COMPLIANCE_COLUMNS: &[Column] = &[
    AGE,
    col("Fail", "integer", &["status", "summary", "failCount"], 1),
    col("Pass", "integer", &["status", "summary", "passCount"], 1),
];

const PLAIN: &[Column] = &[AGE];

const TRIVY: &str = "aquasecurity.github.io";

const fn trivy(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    columns: &'static [Column],
) -> Resource {
    Resource {
        group: TRIVY,
        version: "v1alpha1",
        plural,
        singular,
        kind,
        short_names,
        namespaced,
        columns,
    }
}

const fn builtin(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        short_names,
        namespaced,
        columns: PLAIN,
    }
}

pub static RESOURCES: &[Resource] = &[
    trivy(
        "vulnerabilityreports",
        "vulnerabilityreport",
        "VulnerabilityReport",
        &["vuln", "vulns"],
        true,
        VULN_COLUMNS,
    ),
    trivy(
        "clustervulnerabilityreports",
        "clustervulnerabilityreport",
        "ClusterVulnerabilityReport",
        &["clustervuln"],
        false,
        VULN_COLUMNS,
    ),
    trivy(
        "exposedsecretreports",
        "exposedsecretreport",
        "ExposedSecretReport",
        &["exposedsecret", "exposedsecrets"],
        true,
        SECRET_COLUMNS,
    ),
    trivy(
        "configauditreports",
        "configauditreport",
        "ConfigAuditReport",
        &["configaudit", "configaudits"],
        true,
        CHECK_COLUMNS,
    ),
    trivy(
        "clusterconfigauditreports",
        "clusterconfigauditreport",
        "ClusterConfigAuditReport",
        &["clusterconfigaudit"],
        false,
        CHECK_COLUMNS,
    ),
    trivy(
        "rbacassessmentreports",
        "rbacassessmentreport",
        "RbacAssessmentReport",
        &["rbacassessment", "rbacassessments"],
        true,
        CHECK_COLUMNS,
    ),
    trivy(
        "clusterrbacassessmentreports",
        "clusterrbacassessmentreport",
        "ClusterRbacAssessmentReport",
        &["clusterrbacassessmentreport"],
        false,
        CHECK_COLUMNS,
    ),
    trivy(
        "infraassessmentreports",
        "infraassessmentreport",
        "InfraAssessmentReport",
        &["infraassessment", "infraassessments"],
        true,
        CHECK_COLUMNS,
    ),
    trivy(
        "clusterinfraassessmentreports",
        "clusterinfraassessmentreport",
        "ClusterInfraAssessmentReport",
        &["clusterinfraassessment"],
        false,
        CHECK_COLUMNS,
    ),
    trivy(
        "sbomreports",
        "sbomreport",
        "SbomReport",
        &["sbom", "sboms"],
        true,
        SBOM_COLUMNS,
    ),
    trivy(
        "clustersbomreports",
        "clustersbomreport",
        "ClusterSbomReport",
        &["clustersbom"],
        false,
        SBOM_COLUMNS,
    ),
    trivy(
        "clustercompliancereports",
        "clustercompliancereport",
        "ClusterComplianceReport",
        &["compliance"],
        false,
        COMPLIANCE_COLUMNS,
    ),
    builtin(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        &["rs"],
        true,
    ),
    builtin(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        &["deploy"],
        true,
    ),
    builtin(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        &["sts"],
        true,
    ),
    builtin(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        &["ds"],
        true,
    ),
    builtin("batch", "v1", "jobs", "job", "Job", &[], true),
    builtin(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        &["cj"],
        true,
    ),
    builtin("", "v1", "pods", "pod", "Pod", &["po"], true),
    builtin(
        "",
        "v1",
        "replicationcontrollers",
        "replicationcontroller",
        "ReplicationController",
        &["rc"],
        true,
    ),
    builtin(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        &["ns"],
        false,
    ),
    // A minimal Argo Rollouts CRD (argoproj.io/v1alpha1 rollouts): the controller of the
    // ReplicaSets of a Rollout (https://argo-rollouts.readthedocs.io/).
    builtin(
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "rollout",
        "Rollout",
        &["ro"],
        true,
    ),
    // A minimal Argo Workflows CRD (argoproj.io/v1alpha1 workflows): the controller of a
    // workflow's run-once step pods (https://argo-workflows.readthedocs.io/).
    builtin(
        "argoproj.io",
        "v1alpha1",
        "workflows",
        "workflow",
        "Workflow",
        &["wf"],
        true,
    ),
    // A minimal OpenKruise CloneSet CRD (apps.kruise.io/v1alpha1 clonesets): a controller of
    // Pods the agent does not know by name, to exercise owner-kind discovery.
    builtin(
        "apps.kruise.io",
        "v1alpha1",
        "clonesets",
        "cloneset",
        "CloneSet",
        &[],
        true,
    ),
    builtin(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        &[],
        true,
    ),
];

/// Index of the resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Index of the resource with this apiVersion and kind (used when loading files).
pub fn find_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.api_version() == api_version && r.kind == kind)
}

/// The distinct group/versions, in table order, for discovery.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
