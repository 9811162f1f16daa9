//! Does a workload still exist? Asked only for workloads whose reports all disappeared, to tell
//! a removed workload (its findings close as `workload_removed`) from Trivy Operator's 24 h
//! report TTL or a failed scan (absence is not a fix: nothing changes).
//!
//! Which containers does a workload's pod template declare? Asked only for a stored container
//! that has no report in its workload's current revision, to tell a container removed from the
//! workload (its findings close as `container_removed`) from one whose scan is pending.

use serde::Deserialize;

use super::client::{Client, encode_query};
use super::error::KubeError;

/// The API collection of each workload kind the operator scans, by the kind name it records.
pub fn workload_collection(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Deployment" => ("/apis/apps/v1", "deployments"),
        "ReplicaSet" => ("/apis/apps/v1", "replicasets"),
        "StatefulSet" => ("/apis/apps/v1", "statefulsets"),
        "DaemonSet" => ("/apis/apps/v1", "daemonsets"),
        "Job" => ("/apis/batch/v1", "jobs"),
        "CronJob" => ("/apis/batch/v1", "cronjobs"),
        "Pod" => ("/api/v1", "pods"),
        "ReplicationController" => ("/api/v1", "replicationcontrollers"),
        // Argo Rollouts (https://argo-rollouts.readthedocs.io/en/stable/features/specification/):
        // not scanned itself, but the controller of the ReplicaSets that are.
        "Rollout" => ("/apis/argoproj.io/v1alpha1", "rollouts"),
        _ => return None,
    })
}

/// The apiVersion of a kind in [`workload_collection`].
pub(crate) fn api_version_of(kind: &str) -> Option<&'static str> {
    let (prefix, _) = workload_collection(kind)?;
    prefix
        .strip_prefix("/apis/")
        .or_else(|| prefix.strip_prefix("/api/"))
}

/// The collection of a kind the agent knows, when the apiVersion is the one the table has (an
/// ownerReference to another group's kind of the same name is located by discovery).
pub(crate) fn known_collection(
    api_version: &str,
    kind: &str,
) -> Option<(&'static str, &'static str)> {
    workload_collection(kind).filter(|_| api_version_of(kind) == Some(api_version))
}

/// Whether a workload still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existence {
    Exists,
    Gone,
    /// The kind is not one the agent can look up, or it may not read it: keep its findings open
    /// rather than guess.
    Unknown,
}

impl Client {
    /// Looks a workload up in its collection (`(prefix, plural)`, e.g. from
    /// `workload_collection`; `None`: the agent cannot tell where the kind lives), namespace and
    /// name. Errors other than 403 fail the cycle so that a flaky API never closes findings.
    pub fn workload_existence(
        &self,
        collection: Option<(&str, &str)>,
        namespace: &str,
        name: &str,
    ) -> Result<Existence, KubeError> {
        let Some(path) = object_path(collection, namespace, name) else {
            return Ok(Existence::Unknown);
        };
        match self.get_text(&path) {
            Ok(Some(_)) => Ok(Existence::Exists),
            Ok(None) => Ok(Existence::Gone),
            Err(e) if e.is_forbidden() => Ok(Existence::Unknown),
            Err(e) => Err(e),
        }
    }
}

impl Client {
    /// When a workload was created (`metadata.creationTimestamp`, second precision), for the
    /// coverage baseline: asked only for a workload the store has never seen whose report
    /// appears after its scope was covered. `None` when the API does not tell: gone (404), may
    /// not be read (403), a kind the agent does not know, no readable timestamp. Other errors
    /// fail the cycle.
    pub fn workload_created(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<jiff::Timestamp>, KubeError> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            #[serde(default)]
            creation_timestamp: Option<String>,
        }
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: Meta,
        }
        let Some(path) = object_path(workload_collection(kind), namespace, name) else {
            return Ok(None);
        };
        match self.get_json::<Object>(&path) {
            Ok(Some(o)) => Ok(o
                .metadata
                .creation_timestamp
                .and_then(|t| t.parse().ok())),
            Ok(None) => Ok(None),
            Err(e) if e.is_forbidden() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Where a kind keeps its pod spec: `spec.template.spec` for the controllers, one level deeper
/// for a CronJob (`spec.jobTemplate.spec.template.spec`), `spec` for a Pod. `None` for kinds the
/// agent cannot read.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController"
        | "Job" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        "Pod" => &["spec"],
        // Unless `spec.workloadRef` points at a Deployment's template instead
        // (`template_containers`).
        "Rollout" => &["spec", "template", "spec"],
        _ => return None,
    })
}

/// The container names a workload object declares: `containers` and `initContainers` (a
/// sidecar is an init container with `restartPolicy: Always`, and Trivy Operator scans init
/// containers too). Ephemeral containers are debugging sessions, not part of the workload.
/// `None` when the object has no pod spec where its kind keeps one (an answer we cannot
/// interpret closes nothing).
pub(crate) fn template_containers(kind: &str, object: &serde_json::Value) -> Option<Vec<String>> {
    if kind == "Rollout" && object.pointer("/spec/workloadRef").is_some_and(|r| !r.is_null()) {
        // The pod template is another object's (Argo Rollouts' `workloadRef`, see
        // [`template_ref`]): this object's own `template`, if any, is not the one that runs.
        return None;
    }
    let mut spec = object;
    for field in pod_spec_path(kind)? {
        spec = spec.get(field)?;
    }
    if !spec.is_object() {
        return None;
    }
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        name: String,
    }
    let mut names = Vec::new();
    for field in ["containers", "initContainers"] {
        match spec.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(list) => {
                let list: Vec<Named> = serde_json::from_value(list.clone()).ok()?;
                names.extend(list.into_iter().map(|c| c.name).filter(|n| !n.is_empty()));
            }
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The workload whose pod template a Rollout runs, when it names one with `spec.workloadRef`
/// (<https://argo-rollouts.readthedocs.io/en/stable/features/migrating/#reference-deployment-from-rollout>):
/// the referenced object's kind and name, in the Rollout's namespace. `None` for a Rollout with
/// its own template, for other kinds, and for a reference to a kind the agent does not read
/// (its template is then unknown and no container is closed).
pub(crate) fn template_ref(kind: &str, object: &serde_json::Value) -> Option<(&'static str, String)> {
    if kind != "Rollout" {
        return None;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WorkloadRef {
        api_version: String,
        kind: String,
        name: String,
    }
    let r: WorkloadRef = serde_json::from_value(object.pointer("/spec/workloadRef")?.clone()).ok()?;
    // Argo Rollouts accepts a Deployment, a ReplicaSet or a PodTemplate; the first two keep
    // their template where [`template_containers`] looks for it.
    let kind = match r.kind.as_str() {
        "Deployment" => "Deployment",
        "ReplicaSet" => "ReplicaSet",
        _ => return None,
    };
    (known_collection(&r.api_version, kind).is_some() && !r.name.is_empty()).then_some((kind, r.name))
}

impl Client {
    /// The containers of a workload's pod template (`template_containers`), following a
    /// Rollout's `workloadRef` one step (`template_ref`). `None` when the workload (or the
    /// object it refers to) is gone (404: [`Client::workload_existence`] decides about that),
    /// may not be read (403), is of a kind the agent does not know, or has no readable
    /// template: nothing is closed on a guess. Other errors fail the cycle.
    pub fn workload_containers(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, KubeError> {
        let Some(object) = self.readable_workload(kind, namespace, name)? else {
            return Ok(None);
        };
        if let Some((ref_kind, ref_name)) = template_ref(kind, &object) {
            return Ok(self
                .readable_workload(ref_kind, namespace, &ref_name)?
                .and_then(|referenced| template_containers(ref_kind, &referenced)));
        }
        Ok(template_containers(kind, &object))
    }

    /// A workload object; `None` when it is gone, may not be read, or is of an unknown kind.
    fn readable_workload(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, KubeError> {
        let Some(path) = object_path(workload_collection(kind), namespace, name) else {
            return Ok(None);
        };
        match self.get_json::<serde_json::Value>(&path) {
            Ok(found) => Ok(found),
            Err(e) if e.is_forbidden() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The path of one namespaced object in a collection; `None` when the collection is unknown or
/// the object has no namespace (the workload kinds followed here are all namespaced).
fn object_path(collection: Option<(&str, &str)>, namespace: &str, name: &str) -> Option<String> {
    let (prefix, plural) = collection?;
    if namespace.is_empty() {
        return None;
    }
    Some(format!(
        "{prefix}/namespaces/{}/{plural}/{}",
        encode_query(namespace),
        encode_query(name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_containers_by_kind() {
        let pod_spec = json!({
            "containers": [{"name": "app", "image": "a"}, {"name": "sidecar", "image": "b"}],
            "initContainers": [{"name": "migrate", "image": "c"}],
            "ephemeralContainers": [{"name": "debugger", "image": "d"}],
        });
        let controller = json!({"spec": {"template": {"spec": pod_spec.clone()}}});
        let cronjob = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec.clone()}}}}});
        let pod = json!({"spec": pod_spec.clone()});
        let all = Some(vec![
            "app".to_owned(),
            "migrate".to_owned(),
            "sidecar".to_owned(),
        ]);
        // (kind, object, want)
        let cases: Vec<(&str, serde_json::Value, Option<Vec<String>>)> = vec![
            ("Deployment", controller.clone(), all.clone()),
            ("StatefulSet", controller.clone(), all.clone()),
            ("DaemonSet", controller.clone(), all.clone()),
            ("ReplicaSet", controller.clone(), all.clone()),
            ("ReplicationController", controller.clone(), all.clone()),
            ("Job", controller.clone(), all.clone()),
            ("CronJob", cronjob.clone(), all.clone()),
            ("Pod", pod.clone(), all.clone()),
            ("Rollout", controller.clone(), all.clone()),
            // A Rollout whose template is a Deployment's (workloadRef): unknown.
            (
                "Rollout",
                json!({"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "template": {"spec": pod_spec.clone()}}}),
                None,
            ),
            ("Rollout", json!({"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}), None),
            // A template read at the wrong depth is no answer, never "no containers".
            ("CronJob", controller.clone(), None),
            ("Deployment", pod.clone(), None),
            ("Deployment", json!({"spec": {"template": {"spec": null}}}), None),
            ("Deployment", json!({"spec": {"template": {"spec": {"containers": "x"}}}}), None),
            ("Node", pod.clone(), None),
            ("ClusterSbomReport", pod, None),
            // Only init containers, or none listed at all: a real (if odd) answer.
            (
                "Job",
                json!({"spec": {"template": {"spec": {"initContainers": [{"name": "i"}], "containers": null}}}}),
                Some(vec!["i".to_owned()]),
            ),
            ("Deployment", json!({"spec": {"template": {"spec": {}}}}), Some(vec![])),
        ];
        for (kind, object, want) in cases {
            assert_eq!(template_containers(kind, &object), want, "{kind} {object}");
        }
    }

    #[test]
    fn a_rollout_may_run_another_workloads_template() {
        let with_ref = |r: serde_json::Value| json!({"spec": {"workloadRef": r}});
        // (kind, object, want)
        let cases = [
            (
                "Rollout",
                with_ref(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})),
                Some(("Deployment", "web")),
            ),
            (
                "Rollout",
                with_ref(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1"})),
                Some(("ReplicaSet", "web-1")),
            ),
            // A PodTemplate, another group's Deployment, a reference without a name: unknown.
            ("Rollout", with_ref(json!({"apiVersion": "v1", "kind": "PodTemplate", "name": "t"})), None),
            ("Rollout", with_ref(json!({"apiVersion": "example.com/v1", "kind": "Deployment", "name": "web"})), None),
            ("Rollout", with_ref(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": ""})), None),
            ("Rollout", with_ref(json!({"apiVersion": "apps/v1", "kind": "Deployment"})), None),
            ("Rollout", json!({"spec": {"template": {"spec": {}}}}), None),
            // Only a Rollout's reference is followed.
            ("Deployment", with_ref(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})), None),
        ];
        for (kind, object, want) in cases {
            let got = template_ref(kind, &object);
            assert_eq!(got.as_ref().map(|(k, n)| (*k, n.as_str())), want, "{kind} {object}");
        }
    }

    #[test]
    fn every_scanned_kind_has_a_collection() {
        let cases = [
            ("Deployment", Some("deployments")),
            ("StatefulSet", Some("statefulsets")),
            ("DaemonSet", Some("daemonsets")),
            ("ReplicaSet", Some("replicasets")),
            ("CronJob", Some("cronjobs")),
            ("Job", Some("jobs")),
            ("Pod", Some("pods")),
            ("ReplicationController", Some("replicationcontrollers")),
            ("Rollout", Some("rollouts")),
            ("ClusterSbomReport", None),
            ("Node", None),
        ];
        for (kind, want) in cases {
            assert_eq!(workload_collection(kind).map(|c| c.1), want, "{kind}");
        }
    }

    #[test]
    fn known_collections_match_their_api_version() {
        // (apiVersion, kind, plural)
        let cases = [
            ("apps/v1", "ReplicaSet", Some("replicasets")),
            ("v1", "Pod", Some("pods")),
            ("batch/v1", "CronJob", Some("cronjobs")),
            ("argoproj.io/v1alpha1", "Rollout", Some("rollouts")),
            // Another group's kind of a known name is not ours.
            ("example.com/v1", "Rollout", None),
            ("apps/v1beta2", "Deployment", None),
            ("apps.kruise.io/v1alpha1", "CloneSet", None),
        ];
        for (api_version, kind, want) in cases {
            assert_eq!(known_collection(api_version, kind).map(|c| c.1), want, "{api_version} {kind}");
        }
        assert_eq!(api_version_of("Pod"), Some("v1"));
        assert_eq!(api_version_of("Rollout"), Some("argoproj.io/v1alpha1"));
        assert_eq!(api_version_of("CloneSet"), None);
    }
}
