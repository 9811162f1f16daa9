//! The declarative lifecycle scenarios (`tests/scenarios/*.yaml`, docs/scenarios.md): each file
//! is run against a fresh sandbox and a fresh store with the real binary, one `--once` per
//! `cycle` step, and what a loopback Slack receiver got in that cycle is compared with the
//! step's `expect`.

pub mod cluster;
pub mod model;

use std::collections::BTreeMap;
use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use self::cluster::{Kind, ReportParts};
use self::model::{
    Cycle, Delete, RawFile, Repeat, Report, Rescan, Step, Summary, Workload, WorkloadSpec,
};
use super::agent::run;
use super::lifecycle::Db;
use super::receiver::Receiver;
use super::sandbox::Sandbox;

/// The cluster name in every message.
pub const CLUSTER: &str = "prod";
/// Scan times are relative to this fixed start (in the past, so no scan is "in the future").
const START: &str = "2026-01-01T00:00:00Z";
/// libfaketime (Debian package `faketime`), which runs the agent with its clock ahead for a
/// cycle's `later:`.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A file's environment: `None` unsets a variable the runner would set.
pub type Env = BTreeMap<String, Option<String>>;

/// Parses a whole file up front, so a typo fails before anything runs.
pub fn parse(name: &str, text: &str) -> Result<(Env, Vec<Step>), String> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    let env = raw
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), model::env_text(k, v)?)))
        .collect::<Result<_, String>>()
        .map_err(|e| format!("{name}: {e}"))?;
    let steps = raw
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let what = v
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            let step = serde_json::from_value::<Step>(v)
                .map_err(|e| format!("{name}: step {i} ({what}): {e}"))?;
            if let Step::Repeat(r) = &step {
                // A typo inside a repeat fails here too, not only when the step runs.
                for (j, raw) in r.steps.iter().enumerate() {
                    serde_json::from_value::<Step>(with_number(raw, r.from))
                        .map_err(|e| format!("{name}: step {i} (repeat) step {j}: {e}"))?;
                }
            }
            Ok(step)
        })
        .collect::<Result<_, String>>()?;
    Ok((env, steps))
}

/// `1h`, `30m`, `1h30m`, `2d`, `45s`.
pub fn duration(s: &str) -> Result<SignedDuration, String> {
    let bad = || format!("duration {s:?}: expected e.g. 1h, 30m, 1h30m, 2d, 45s");
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || s.trim().is_empty() {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(total))
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One Deployment's (or Argo Rollout's) rollout history: which ReplicaSet got which revision.
struct Deployment {
    revision: u64,
    current_rs: String,
    by_revision: BTreeMap<u64, String>,
}

/// What a report was last written from, so a rescan can change only what it says.
#[derive(Clone)]
struct ReportState {
    owner_kind: Kind,
    owner_name: String,
    namespace: String,
    container: String,
    image: Option<String>,
    vulnerabilities: Option<Option<Vec<Value>>>,
    summary: Option<Summary>,
    patch: Option<Value>,
}

struct World<'a> {
    sb: Sandbox,
    slack: Receiver,
    db: &'a Db,
    clock: Timestamp,
    env: Env,
    /// By (namespace, kind, name).
    deployments: BTreeMap<(String, Kind, String), Deployment>,
    /// A CloneSet's current Pod, by (namespace, name).
    clonesets: BTreeMap<(String, String), String>,
    reports: BTreeMap<(String, String), ReportState>,
    received: usize,
    /// The latest `creationTimestamp` the sandbox gave a workload this file wrote.
    newest_created: Option<Timestamp>,
    /// `KIJO_NAMESPACES` of the last cycle (`Some(None)`: unset); `None` before the first.
    last_namespaces: Option<Option<String>>,
    /// How far ahead of the wall clock the agent's clock runs: the sum of the cycles' `later`.
    agent_ahead: SignedDuration,
}

/// Runs one scenario file; returns its failures (empty: it passed).
pub fn run_file(path: &Path, db: &Db) -> Vec<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: cannot read: {e}")],
    };
    let (env, steps) = match parse(&name, &text) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let mut world = World {
        sb: Sandbox::start(&[]),
        slack: Receiver::start(),
        db,
        clock: START.parse().expect("START"),
        env,
        deployments: BTreeMap::new(),
        clonesets: BTreeMap::new(),
        reports: BTreeMap::new(),
        received: 0,
        newest_created: None,
        last_namespaces: None,
        agent_ahead: SignedDuration::ZERO,
    };
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{name} step {i} ({}) on {}", step.name(), db.name());
        match world.step(step) {
            Ok(mismatches) => failures.extend(mismatches.into_iter().map(|m| format!("{at}: {m}"))),
            Err(e) => {
                // The cluster is no longer what the file says: later steps would mislead.
                failures.push(format!("{at}: {e} (scenario stopped here)"));
                break;
            }
        }
    }
    failures
}

impl World<'_> {
    /// Runs a step: `Err` when it could not be carried out, `Ok(mismatches)` for a cycle's
    /// expectations that did not hold.
    fn step(&mut self, step: &Step) -> Result<Vec<String>, String> {
        match step {
            Step::Workload(w) => self.workload(w)?,
            Step::Report(r) => self.report(r)?,
            Step::Rescan(r) => self.rescan(r)?,
            Step::Delete(d) => self.delete(d)?,
            Step::Patch(p) => {
                let (plural, name) = split_object(&p.object)?;
                cluster::merge_patch(&self.sb, plural, &p.namespace, name, &p.merge)?;
            }
            Step::Clock(d) => self.clock += duration(d)?,
            Step::Cycle(c) => return self.cycle(c),
            Step::Repeat(r) => return self.repeat(r),
            Step::Forbid(resources) => {
                let body = json!({"resources": resources}).to_string();
                let r = self
                    .sb
                    .http("POST", "/_sandbox/forbidden", Some(&body), &[]);
                if r.status != 200 {
                    return Err(format!("forbid: {} {}", r.status, r.body));
                }
            }
        }
        Ok(Vec::new())
    }

    fn workload(&mut self, w: &Workload) -> Result<(), String> {
        let (kind, spec) = match w {
            Workload::Deployment(s) => (Kind::Deployment, s),
            Workload::StatefulSet(s) => (Kind::StatefulSet, s),
            Workload::DaemonSet(s) => (Kind::DaemonSet, s),
            Workload::CronJob(s) => (Kind::CronJob, s),
            Workload::Job(s) => (Kind::Job, s),
            Workload::Pod(s) => (Kind::Pod, s),
            Workload::Rollout(s) => (Kind::Rollout, s),
            Workload::CloneSet(s) => (Kind::CloneSet, s),
            Workload::Workflow(s) => (Kind::Workflow, s),
        };
        cluster::ensure_namespace(&self.sb, &spec.namespace)?;
        if spec.generate_name.is_some() && !matches!(kind, Kind::Pod | Kind::Job | Kind::Workflow) {
            return Err("`generateName` is for Pods, Jobs and Workflows only".into());
        }
        if spec.restart_policy.is_some() && kind != Kind::Pod {
            return Err("`restartPolicy` is for Pods only".into());
        }
        if matches!(kind, Kind::Deployment | Kind::Rollout) {
            return self.deployment(kind, spec);
        }
        if spec.revision.is_some() {
            return Err("`revision` is for Deployments and Rollouts only".into());
        }
        if spec.workload_ref {
            return Err("`workloadRef` is for Rollouts only".into());
        }
        if kind == Kind::CloneSet {
            return self.cloneset(spec);
        }
        if kind == Kind::Workflow {
            return self.workflow(spec);
        }
        let obj = cluster::workload_object(kind, spec);
        let stored = cluster::upsert(&self.sb, kind.plural(), &spec.namespace, &obj)?;
        self.note_created(&stored);
        if kind == Kind::CronJob {
            // The CronJob's latest Job (Trivy Operator does not scan it: its owner is a CronJob).
            let job = json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": format!("{}-29000000", spec.name), "namespace": spec.namespace,
                             "labels": {"app": spec.name},
                             "ownerReferences": [cluster::owner_reference(Kind::CronJob, &stored, true)]},
                "spec": obj["spec"]["jobTemplate"]["spec"],
            });
            cluster::upsert(&self.sb, "jobs", &spec.namespace, &job)?;
        }
        Ok(())
    }

    /// A Deployment rollout as the controller does it: the ReplicaSet is named after the pod
    /// template's hash, so going back to an earlier template re-uses (and re-numbers) its old
    /// ReplicaSet — a rollback. Older ReplicaSets are scaled to 0 and keep their reports.
    /// An Argo Rollout is done the same way, with its own revision annotation.
    fn deployment(&mut self, kind: Kind, spec: &WorkloadSpec) -> Result<(), String> {
        let annotation = match kind {
            Kind::Rollout => "rollout.argoproj.io/revision",
            _ => "deployment.kubernetes.io/revision",
        };
        let key = (spec.namespace.clone(), kind, spec.name.clone());
        let previous = self.deployments.get(&key).map_or(0, |d| d.revision);
        let revision = spec.revision.unwrap_or(previous + 1);
        let hash = cluster::template_hash(spec);
        let rs_name = format!("{}-{hash}", spec.name);
        let labels = json!({"app": spec.name});
        let rev = revision.to_string();
        let template =
            json!({"metadata": {"labels": labels}, "spec": cluster::pod_spec(spec, None)});
        if spec.workload_ref && kind != Kind::Rollout {
            return Err("`workloadRef` is for Rollouts only".into());
        }
        let mut deployment = json!({
            "apiVersion": kind.api_version(), "kind": kind.name(),
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels,
                         "annotations": {annotation: rev}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        });
        if spec.workload_ref {
            // Argo Rollouts' migration path: the Deployment keeps the template at 0 replicas.
            let holder = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template},
            });
            cluster::upsert(&self.sb, "deployments", &spec.namespace, &holder)?;
            deployment["spec"] = json!({
                "replicas": 1, "selector": {"matchLabels": labels},
                "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            });
        }
        let stored = cluster::upsert(&self.sb, kind.plural(), &spec.namespace, &deployment)?;
        self.note_created(&stored);
        if let Some(old) = self
            .deployments
            .get(&key)
            .filter(|d| d.current_rs != rs_name)
        {
            cluster::merge_patch(
                &self.sb,
                "replicasets",
                &spec.namespace,
                &old.current_rs,
                &json!({"spec": {"replicas": 0}}),
            )?;
        }
        let mut rs_labels = labels.clone();
        rs_labels["pod-template-hash"] = json!(hash);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"] = rs_labels.clone();
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": spec.namespace, "labels": rs_labels,
                         "annotations": {annotation: rev},
                         "ownerReferences": [cluster::owner_reference(kind, &stored, true)]},
            "spec": {"replicas": 1, "selector": {"matchLabels": rs_labels}, "template": rs_template},
        });
        cluster::upsert(&self.sb, "replicasets", &spec.namespace, &rs)?;
        let d = self.deployments.entry(key).or_insert(Deployment {
            revision,
            current_rs: rs_name.clone(),
            by_revision: BTreeMap::new(),
        });
        d.revision = revision;
        d.current_rs = rs_name.clone();
        d.by_revision.insert(revision, rs_name);
        Ok(())
    }

    /// A CloneSet and its one Pod, named after the pod template's hash as its controller
    /// names pods: a rollout replaces the Pod (and, through garbage collection, its reports).
    fn cloneset(&mut self, spec: &WorkloadSpec) -> Result<(), String> {
        let labels = json!({"app": spec.name});
        let template =
            json!({"metadata": {"labels": labels}, "spec": cluster::pod_spec(spec, None)});
        let cloneset = json!({
            "apiVersion": Kind::CloneSet.api_version(), "kind": "CloneSet",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        });
        let stored = cluster::upsert(&self.sb, "clonesets", &spec.namespace, &cloneset)?;
        let pod_name = format!("{}-{}", spec.name, &cluster::template_hash(spec)[..5]);
        let key = (spec.namespace.clone(), spec.name.clone());
        if let Some(old) = self.clonesets.get(&key).filter(|p| **p != pod_name) {
            cluster::delete(&self.sb, "pods", &spec.namespace, old)?;
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": spec.namespace, "labels": labels,
                         "ownerReferences": [cluster::owner_reference(Kind::CloneSet, &stored, true)]},
            "spec": cluster::pod_spec(spec, None),
            "status": {"phase": "Running"},
        });
        cluster::upsert(&self.sb, "pods", &spec.namespace, &pod)?;
        self.clonesets.insert(key, pod_name);
        Ok(())
    }

    /// An Argo Workflow and the run-once Pod of its one step ([`cluster::workflow_pod`]).
    fn workflow(&mut self, spec: &WorkloadSpec) -> Result<(), String> {
        let labels = json!({"workflows.argoproj.io/workflow": spec.name});
        let mut workflow = json!({
            "apiVersion": Kind::Workflow.api_version(), "kind": "Workflow",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
            "spec": {"entrypoint": "main",
                     "templates": [{"name": "main", "container": cluster::pod_spec(spec, None)["containers"][0]}]},
        });
        if let Some(prefix) = &spec.generate_name {
            workflow["metadata"]["generateName"] = json!(prefix);
        }
        let stored = cluster::upsert(&self.sb, "workflows", &spec.namespace, &workflow)?;
        self.note_created(&stored);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": cluster::workflow_pod(&spec.name), "namespace": spec.namespace,
                         "labels": labels,
                         "ownerReferences": [cluster::owner_reference(Kind::Workflow, &stored, true)]},
            "spec": cluster::pod_spec(spec, Some("Never")),
            "status": {"phase": "Running"},
        });
        cluster::upsert(&self.sb, "pods", &spec.namespace, &pod)?;
        Ok(())
    }

    /// (report owner kind, owner name, report name) of a report reference.
    fn resolve(
        &self,
        owner: &str,
        ns: &str,
        container: &str,
        revision: Option<u64>,
    ) -> Result<(Kind, String, String), String> {
        let (kind, name) = cluster::parse_owner(owner)?;
        let (kind, name) = match kind {
            Kind::Deployment | Kind::Rollout => {
                let what = kind.name().to_ascii_lowercase();
                let d = self
                    .deployments
                    .get(&(ns.to_owned(), kind, name.clone()))
                    .ok_or_else(|| {
                        format!("{what} {ns}/{name} was not created by a workload step")
                    })?;
                let rs = match revision {
                    Some(r) => d
                        .by_revision
                        .get(&r)
                        .ok_or_else(|| format!("{what} {ns}/{name} never had revision {r}"))?,
                    None => &d.current_rs,
                };
                (Kind::ReplicaSet, rs.clone())
            }
            _ if revision.is_some() => {
                return Err("`revision` is for Deployments and Rollouts only".into());
            }
            Kind::CloneSet => {
                let pod = self
                    .clonesets
                    .get(&(ns.to_owned(), name.clone()))
                    .ok_or_else(|| {
                        format!("cloneset {ns}/{name} was not created by a workload step")
                    })?;
                (Kind::Pod, pod.clone())
            }
            Kind::Workflow => (Kind::Pod, cluster::workflow_pod(&name)),
            k => (k, name),
        };
        let report = format!("{}-{name}-{container}", kind.name().to_ascii_lowercase());
        Ok((kind, name, report))
    }

    fn scan_time(&self, scanned: Option<&str>) -> Result<String, String> {
        Ok(rfc3339(match scanned {
            None => self.clock,
            Some(s) => match s.strip_prefix('+') {
                Some(ahead) => Timestamp::now() + duration(ahead)?,
                None => START.parse::<Timestamp>().expect("START") + duration(s)?,
            },
        }))
    }

    fn report(&mut self, r: &Report) -> Result<(), String> {
        let (owner_kind, owner_name, name) =
            self.resolve(&r.owner, &r.namespace, &r.container, r.revision)?;
        let vulnerabilities = match &r.vulnerabilities {
            None => None,
            Some(None) => Some(None),
            Some(Some(v)) => Some(Some(expand(v)?)),
        };
        let state = ReportState {
            owner_kind,
            owner_name,
            namespace: r.namespace.clone(),
            container: r.container.clone(),
            image: r.image.clone(),
            vulnerabilities,
            summary: r.summary.clone(),
            patch: r.patch.clone(),
        };
        let scanned = self.scan_time(r.scanned.as_deref())?;
        self.write_report(&name, &state, &scanned)?;
        self.reports.insert((r.namespace.clone(), name), state);
        Ok(())
    }

    fn rescan(&mut self, r: &Rescan) -> Result<(), String> {
        let (_, _, name) = self.resolve(&r.owner, &r.namespace, &r.container, r.revision)?;
        let key = (r.namespace.clone(), name.clone());
        let mut state = self.reports.get(&key).cloned().ok_or_else(|| {
            format!(
                "no report {}/{name} to rescan (write it with a report step)",
                r.namespace
            )
        })?;
        if let Some(after) = &r.after {
            self.clock += duration(after)?;
        }
        if let Some(image) = &r.image {
            state.image = Some(image.clone());
        }
        if let Some(v) = &r.vulnerabilities {
            state.vulnerabilities = match v {
                None => Some(None),
                Some(list) => Some(Some(expand(list)?)),
            };
        }
        if !r.remove.is_empty() || !r.add.is_empty() {
            let Some(Some(list)) = &mut state.vulnerabilities else {
                return Err("add/remove on a report without a vulnerabilities list".into());
            };
            for id in &r.remove {
                let before = list.len();
                list.retain(|v| v["vulnerabilityID"] != id.as_str());
                if list.len() == before {
                    return Err(format!("remove {id}: the report does not list it"));
                }
            }
            list.extend(expand(&r.add)?);
        }
        if let Some(s) = &r.summary {
            state.summary = Some(s.clone());
        }
        if let Some(p) = &r.patch {
            state.patch = Some(p.clone());
        }
        let scanned = self.scan_time(r.scanned.as_deref())?;
        self.write_report(&name, &state, &scanned)?;
        self.reports.insert(key, state);
        Ok(())
    }

    fn write_report(&self, name: &str, s: &ReportState, scanned: &str) -> Result<(), String> {
        let owner = cluster::get(&self.sb, s.owner_kind.plural(), &s.namespace, &s.owner_name)
            .map_err(|e| format!("report {name}: its owner must exist: {e}"))?;
        let images = cluster::template_images(s.owner_kind, &owner);
        let image = match (&s.image, images.get(&s.container)) {
            (Some(i), _) | (None, Some(i)) => i.clone(),
            (None, None) => {
                return Err(format!(
                    "report {name}: container {} is not in the pod template of {}/{} (give `image:`)",
                    s.container,
                    s.owner_kind.name(),
                    s.owner_name
                ));
            }
        };
        let mut obj = cluster::report_object(&ReportParts {
            name,
            namespace: &s.namespace,
            owner_kind: s.owner_kind,
            owner: &owner,
            container: &s.container,
            image: &image,
            scanned,
            vulnerabilities: s.vulnerabilities.as_ref().map(|v| v.as_deref()),
            summary: s.summary.as_ref(),
            spec_hash: cluster::spec_hash(&images),
        });
        if let Some(p) = &s.patch {
            cluster::merge(&mut obj, p);
        }
        cluster::upsert(&self.sb, "vulnerabilityreports", &s.namespace, &obj)?;
        Ok(())
    }

    fn delete(&mut self, d: &Delete) -> Result<(), String> {
        let given = [d.workload.is_some(), d.report.is_some(), d.object.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("delete takes exactly one of workload, report, object".into());
        }
        if let Some(w) = &d.workload {
            let (kind, name) = cluster::parse_owner(w)?;
            cluster::delete(&self.sb, kind.plural(), &d.namespace, &name)?;
            if matches!(kind, Kind::Deployment | Kind::Rollout) {
                // A Deployment created again starts its revisions over, as in Kubernetes.
                self.deployments.remove(&(d.namespace.clone(), kind, name));
            } else if kind == Kind::CloneSet {
                self.clonesets.remove(&(d.namespace.clone(), name));
            }
        } else if let Some(r) = &d.report {
            let (_, _, name) = self.resolve(&r.owner, &r.namespace, &r.container, r.revision)?;
            // Kept in `reports`: a later rescan re-creates it (Trivy Operator's TTL).
            cluster::delete(&self.sb, "vulnerabilityreports", &r.namespace, &name)?;
        } else if let Some(o) = &d.object {
            let (plural, name) = split_object(o)?;
            cluster::delete_with(&self.sb, plural, &d.namespace, name, d.orphan)?;
        }
        if d.orphan && d.object.is_none() {
            return Err("`orphan` is for `object` deletes only".into());
        }
        Ok(())
    }

    /// Remembers a workload's creation time as the sandbox stored it.
    fn note_created(&mut self, stored: &Value) {
        let created = stored["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok());
        self.newest_created = self.newest_created.max(created);
    }

    /// A cycle that may begin covering a scope (the file's first, or one that changes
    /// `KIJO_NAMESPACES`) starts only once the wall clock has left the second in which the
    /// newest workload was created: `creationTimestamp` has second precision, and the agent
    /// counts a workload created in the second its coverage began as created after it (news).
    /// Waits for that condition, never longer.
    fn await_coverage_start(&mut self, namespaces: Option<String>) {
        let begins = self.last_namespaces.as_ref() != Some(&namespaces);
        self.last_namespaces = Some(namespaces);
        let Some(created) = self.newest_created.filter(|_| begins) else {
            return;
        };
        let next_second = Timestamp::from_second(created.as_second() + 1).expect("in range");
        loop {
            let now = Timestamp::now();
            if now >= next_second {
                return;
            }
            let left = now.duration_until(next_second);
            std::thread::sleep(std::time::Duration::try_from(left).unwrap_or_default());
        }
    }

    /// Each step of `r` once per number, `{n}` replaced; the mismatches of all its cycles.
    fn repeat(&mut self, r: &Repeat) -> Result<Vec<String>, String> {
        if r.from > r.to {
            return Err(format!("repeat: from {} is after to {}", r.from, r.to));
        }
        let mut mismatches = Vec::new();
        for n in r.from..=r.to {
            for (i, raw) in r.steps.iter().enumerate() {
                let step: Step = serde_json::from_value(with_number(raw, n))
                    .map_err(|e| format!("repeat step {i} (n = {n}): {e}"))?;
                let found = self
                    .step(&step)
                    .map_err(|e| format!("repeat step {i} (n = {n}): {e}"))?;
                mismatches.extend(
                    found
                        .into_iter()
                        .map(|m| format!("repeat step {i} (n = {n}): {m}")),
                );
            }
        }
        Ok(mismatches)
    }

    /// The environment that runs the agent with its clock `agent_ahead` ahead (none while it is
    /// zero). Without libfaketime the cycle cannot mean what it says: an error, never a skip.
    fn agent_clock_env(&self) -> Result<Vec<(&'static str, String)>, String> {
        if self.agent_ahead.is_zero() {
            return Ok(Vec::new());
        }
        if !Path::new(FAKETIME_LIB).is_file() {
            return Err(format!(
                "`later:` runs the agent with its clock ahead under libfaketime, and {FAKETIME_LIB} \
                 is missing: install the `faketime` package (apt-get install faketime; .ci/run does)"
            ));
        }
        Ok(vec![
            ("LD_PRELOAD", FAKETIME_LIB.to_owned()),
            ("FAKETIME", format!("+{}s", self.agent_ahead.as_secs())),
            // Timeouts and sleeps keep real time; only the wall clock moves.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ])
    }

    fn cycle(&mut self, c: &Cycle) -> Result<Vec<String>, String> {
        if let Some(later) = &c.later {
            self.agent_ahead += duration(later)?;
        }
        let kubeconfig = self.sb.kubeconfig.display().to_string();
        let mut env: BTreeMap<String, String> = [
            ("KIJO_DATABASE_URL", self.db.url()),
            ("KIJO_CLUSTER_NAME", CLUSTER.to_owned()),
            ("KIJO_KUBECONFIG", kubeconfig),
            ("KIJO_HEALTH_ADDR", "127.0.0.1:0".to_owned()),
            ("KIJO_NOTIFY_SLACK", self.slack.url("/slack")),
            // --once delivers before it exits; this only bounds a broken delivery.
            ("KIJO_NOTIFY_ONCE_WAIT", "10s".to_owned()),
            // Each cycle's messages at once; a file that tests the window sets its own.
            ("KIJO_NOTIFY_BATCH_WINDOW", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let cycle_env = c
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), model::env_text(k, v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        for (k, v) in self.env.clone().into_iter().chain(cycle_env) {
            match v {
                Some(v) => env.insert(k, v),
                None => env.remove(&k),
            };
        }
        for (k, v) in self.agent_clock_env()? {
            env.insert(k.to_owned(), v);
        }
        self.await_coverage_start(env.get("KIJO_NAMESPACES").cloned());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, _, log) = run(&env, &["--once"]);
        let mut mismatches = Vec::new();
        if !status.success() {
            mismatches.push(format!(
                "kijo-agent --once exited with {status}:\n{}",
                indent(&log)
            ));
        }
        let requests: Vec<_> = self
            .slack
            .requests()
            .into_iter()
            .filter(|r| r.path == "/slack")
            .collect();
        let mut got: Vec<String> = requests[self.received..]
            .iter()
            .map(|r| person_text(&r.json()))
            .collect();
        self.received = requests.len();
        let mut want: Vec<String> = c.expect.iter().map(|m| m.trim_end().to_owned()).collect();
        got.sort();
        want.sort();
        if got != want {
            mismatches.push(message_diff(&want, &got));
        }
        for needle in &c.expect_log {
            if !log.contains(needle.as_str()) {
                mismatches.push(format!(
                    "the agent's log has no {needle:?}; its warnings (all its lines when none):\n{}",
                    indent(&warnings(&log))
                ));
            }
        }
        Ok(mismatches)
    }
}

/// `raw` with `{n}` replaced by `n` in every string (keys too).
fn with_number(raw: &Value, n: u32) -> Value {
    let text = |s: &str| s.replace("{n}", &n.to_string());
    match raw {
        Value::String(s) => Value::String(text(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| with_number(v, n)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (text(k), with_number(v, n)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn split_object(o: &str) -> Result<(&str, &str), String> {
    o.split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty())
        .ok_or_else(|| format!("object {o:?}: expected <plural>/<name>, e.g. replicasets/web-abc"))
}

fn expand(list: &[Value]) -> Result<Vec<Value>, String> {
    list.iter().map(cluster::vulnerability).collect()
}

/// A Slack body as a person reads it: the crate's own terminal rendering without the footer
/// (`kijo-agent · message <id> · <time>`, which carries a hash).
pub fn person_text(body: &Value) -> String {
    let text = kijo_agent::notify::slack::to_terminal_text(body);
    match text.rsplit_once('\n') {
        Some((head, last)) if last.starts_with("kijo-agent · message") => head.to_owned(),
        _ => text,
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn show(messages: &[String]) -> String {
    if messages.is_empty() {
        return "    (none)".to_owned();
    }
    messages
        .iter()
        .map(|m| indent(m))
        .collect::<Vec<_>>()
        .join("\n    ---\n")
}

/// Both sides in full; when they share some messages, also what only one side has.
fn message_diff(want: &[String], got: &[String]) -> String {
    let mut only_want = want.to_vec();
    let mut only_got = Vec::new();
    for g in got {
        match only_want.iter().position(|w| w == g) {
            Some(i) => {
                only_want.remove(i);
            }
            None => only_got.push(g.clone()),
        }
    }
    let mut out = format!(
        "messages differ\n  expected {} message(s):\n{}\n  received {} message(s):\n{}",
        want.len(),
        show(want),
        got.len(),
        show(got),
    );
    if only_want.len() < want.len() {
        out.push_str(&format!(
            "\n  expected, not received:\n{}\n  received, not expected:\n{}",
            show(&only_want),
            show(&only_got)
        ));
    }
    out
}

/// The log lines at warn or error (all lines when none), for a failed `expect_log`.
fn warnings(log: &str) -> String {
    let w: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"warn") || l.contains("\"level\":\"error"))
        .collect();
    if w.is_empty() {
        log.to_owned()
    } else {
        w.join("\n")
    }
}
