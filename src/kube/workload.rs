//! Does a workload still exist? Asked only for workloads whose reports all disappeared, to tell
//! a removed workload (its findings close as `workload_removed`) from Trivy Operator's 24 h
//! report TTL or a failed scan (absence is not a fix: nothing changes).

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
        _ => return None,
    })
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
    /// Looks a workload up by kind, namespace and name. Errors other than 403 fail the cycle so
    /// that a flaky API never closes findings.
    pub fn workload_existence(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Existence, KubeError> {
        let Some((prefix, plural)) = workload_collection(kind) else {
            return Ok(Existence::Unknown);
        };
        if namespace.is_empty() {
            return Ok(Existence::Unknown);
        }
        let path = format!(
            "{prefix}/namespaces/{}/{plural}/{}",
            encode_query(namespace),
            encode_query(name)
        );
        match self.get_text(&path) {
            Ok(Some(_)) => Ok(Existence::Exists),
            Ok(None) => Ok(Existence::Gone),
            Err(e) if e.is_forbidden() => Ok(Existence::Unknown),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("ClusterSbomReport", None),
            ("Node", None),
        ];
        for (kind, want) in cases {
            assert_eq!(workload_collection(kind).map(|c| c.1), want, "{kind}");
        }
    }
}
