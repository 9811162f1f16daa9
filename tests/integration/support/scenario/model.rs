//! The scenario file format (`tests/scenarios/*.yaml`, described in docs/scenarios.md) as serde
//! structs. Every struct denies unknown fields, so a misspelt key is an error naming the file
//! and the step instead of a step that silently does less than it says.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A whole file as first read: the steps stay raw JSON values so that each one is decoded on its
/// own and an error can name its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Environment of every cycle of this file (scalars; `true` and `10s` alike; `null` unsets
    /// a variable the runner sets, so the agent's default applies).
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    pub steps: Vec<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Step {
    /// Create or replace a workload (and what Kubernetes makes of it: a Deployment's ReplicaSet,
    /// a CronJob's Job).
    Workload(Workload),
    /// Create or replace a VulnerabilityReport, written as Trivy Operator writes it.
    Report(Report),
    /// The same report scanned again: edited findings, a later scan time; re-created when it
    /// was deleted (Trivy Operator's TTL).
    Rescan(Rescan),
    Delete(Delete),
    /// A JSON merge patch to any object, for what the compact forms do not cover.
    Patch(Patch),
    /// Advance the scenario's scan clock, e.g. `1h`.
    Clock(String),
    /// One `kijo-agent --once` and what a person receives from it.
    Cycle(Cycle),
    /// Resources (`rollouts.argoproj.io`, `replicasets.apps`, `pods`) the API refuses (403)
    /// from now on, as when RBAC grants nothing on them; `[]` lifts it.
    Forbid(Vec<String>),
    /// The same steps once per number from `from` to `to`, with `{n}` in any string replaced
    /// by the number: a hundred workloads and their reports in a few lines.
    Repeat(Repeat),
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Workload(_) => "workload",
            Step::Report(_) => "report",
            Step::Rescan(_) => "rescan",
            Step::Delete(_) => "delete",
            Step::Patch(_) => "patch",
            Step::Clock(_) => "clock",
            Step::Cycle(_) => "cycle",
            Step::Forbid(_) => "forbid",
            Step::Repeat(_) => "repeat",
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Workload {
    Deployment(WorkloadSpec),
    StatefulSet(WorkloadSpec),
    DaemonSet(WorkloadSpec),
    CronJob(WorkloadSpec),
    Job(WorkloadSpec),
    Pod(WorkloadSpec),
    /// An Argo Rollout (`argoproj.io/v1alpha1`): ReplicaSets with the
    /// `rollout.argoproj.io/revision` annotation, rolled out and back like a Deployment's.
    Rollout(WorkloadSpec),
    /// An OpenKruise CloneSet (`apps.kruise.io/v1alpha1`), a controller the agent does not know
    /// by name: it owns one Pod per template directly, replaced on every rollout.
    CloneSet(WorkloadSpec),
    /// An Argo Workflow (`argoproj.io/v1alpha1`) with one step: a run-once Pod it controls,
    /// `<name>-main-<number>`. Reports name it `workflow/build-x7k2p` (the Pod's report).
    Workflow(WorkloadSpec),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Container name → image, e.g. `app: "nginx:1.25.3@sha256:aa"`.
    pub containers: BTreeMap<String, String>,
    #[serde(default, rename = "initContainers")]
    pub init_containers: BTreeMap<String, String>,
    /// Deployments and Rollouts only: the revision annotation of this rollout (default: the
    /// previous one + 1, starting at 1).
    pub revision: Option<u64>,
    /// Rollouts only: the Rollout names a Deployment's pod template with `spec.workloadRef`
    /// (a Deployment of the same name with 0 replicas holds the template) instead of its own.
    #[serde(default, rename = "workloadRef")]
    pub workload_ref: bool,
    /// Pods, Jobs and Workflows: the `metadata.generateName` the object was made from (the `name` stands
    /// for the one the API server generated), as CI runners and workflow engines make them.
    #[serde(default, rename = "generateName")]
    pub generate_name: Option<String>,
    /// Pods only: `spec.restartPolicy` (`Never` and `OnFailure` run once); default: none
    /// written.
    #[serde(default, rename = "restartPolicy")]
    pub restart_policy: Option<String>,
}

pub fn default_namespace() -> String {
    "default".to_owned()
}

/// Which report: its owner as a person names it, and the container.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ReportRef {
    /// `deployment/web`, `statefulset/db`, `daemonset/agent`, `cronjob/backup`, `job/x`,
    /// `pod/debug`, or `replicaset/<name>` for a ReplicaSet by its own name.
    pub owner: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub container: String,
    /// Deployments: the report of the ReplicaSet that got this revision (default: the current
    /// one).
    pub revision: Option<u64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub owner: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub container: String,
    pub revision: Option<u64>,
    /// The scanned image; default: the container's image in the owner's pod template.
    pub image: Option<String>,
    /// Scan time: the scenario clock by default; `3h` is the fixed start + 3 h, `+2h` the wall
    /// clock + 2 h (a scanner whose clock is ahead).
    pub scanned: Option<String>,
    /// Compact lines (`CVE-1 openssl 3.0.1 -> 3.0.2 CRITICAL path=/app/a.jar`) or raw objects.
    /// `null` writes `"vulnerabilities": null`; leaving the key out writes no key at all.
    #[serde(default, deserialize_with = "present")]
    pub vulnerabilities: Option<Option<Vec<Value>>>,
    /// Summary counts instead of the ones computed from the findings.
    pub summary: Option<Summary>,
    /// A JSON merge patch applied to the built object (kept for later rescans).
    pub patch: Option<Value>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    #[serde(default)]
    pub critical: u64,
    #[serde(default)]
    pub high: u64,
    #[serde(default)]
    pub medium: u64,
    #[serde(default)]
    pub low: u64,
    #[serde(default)]
    pub unknown: u64,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Rescan {
    pub owner: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub container: String,
    pub revision: Option<u64>,
    /// Advance the scan clock first (e.g. `1h`); the rescan is dated at the clock.
    pub after: Option<String>,
    /// A new scanned image (e.g. another digest); default: the owner's current image for that
    /// container, or the image the report was given.
    pub image: Option<String>,
    pub scanned: Option<String>,
    /// Replace the whole list (same forms as in `report`).
    #[serde(default, deserialize_with = "present")]
    pub vulnerabilities: Option<Option<Vec<Value>>>,
    /// Findings to add (compact lines or raw objects).
    #[serde(default)]
    pub add: Vec<Value>,
    /// Vulnerability ids to drop (every entry with that id).
    #[serde(default)]
    pub remove: Vec<String>,
    pub summary: Option<Summary>,
    pub patch: Option<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    /// `deployment/web` etc.: the workload; its ReplicaSets, Jobs and reports go with it
    /// (garbage collection).
    pub workload: Option<String>,
    pub report: Option<ReportRef>,
    /// `<plural>/<name>`, e.g. `replicasets/web-5d8f…`.
    pub object: Option<String>,
    /// With `object`: delete only that object and leave what it owns (its reports), as before
    /// the garbage collector has caught up.
    #[serde(default)]
    pub orphan: bool,
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// `<plural>/<name>`, e.g. `vulnerabilityreports/replicaset-web-…-app`.
    pub object: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub merge: Value,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// First number (inclusive).
    pub from: u32,
    /// Last number (inclusive).
    pub to: u32,
    /// Steps in the usual forms; decoded (and checked) for each number.
    pub steps: Vec<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Cycle {
    /// Advance the agent's clock first, by this much (`5m`), and keep it that far ahead for
    /// every later cycle of the file: the `--once` runs under libfaketime with the sum of all
    /// `later` so far. The scan clock and the cluster's clock do not move.
    pub later: Option<String>,
    /// Environment for this cycle only, over the file's `env`.
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// Every message received in this cycle, as a person reads it (the Slack text without its
    /// last line); `[]` is silence. Compared as a sorted multiset.
    pub expect: Vec<String>,
    /// Substrings that must each appear in the agent's log (stderr) of this cycle.
    #[serde(default)]
    pub expect_log: Vec<String>,
}

/// `Some(x)` whenever the key is present, so `null` (`Some(None)`) differs from absent (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An environment value as the agent reads it: YAML scalars of any type as their text.
pub fn env_text(key: &str, v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        // Unset, also where the runner sets a value: the agent's own default applies.
        Value::Null => Ok(None),
        other => Err(format!("env {key}: expected a scalar or null, got {other}")),
    }
}
