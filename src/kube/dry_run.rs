//! The `--dry-run` checks of Kubernetes access: reachability, authentication and every
//! permission the agent needs, in the scope it will use.

use super::client::{Client, Request};
use super::error::KubeError;
use super::list::{self, collection_path};
use crate::check::Check;
use crate::trivy::ReportKind;

/// A name no object has; a GET of it tells whether `get` is permitted (404) or not (403)
/// without needing any real object.
const PROBE_NAME: &str = "kijo-agent-dry-run-probe";

/// Checks API reachability, authentication and each permission the agent needs, in the
/// scope it will use (cluster-wide, or each namespace of `namespaces`).
pub fn dry_run_checks(client: &Client, namespaces: &[String]) -> Vec<Check> {
    let reachable = reachable(client);
    let authenticated = if reachable.ok {
        authenticated(client)
    } else {
        Check::new(
            "authenticated",
            Err("skipped: api not reachable".to_owned()),
        )
    };
    let auth_ok = authenticated.ok;
    let mut checks = vec![reachable, authenticated];
    if !auth_ok {
        return checks;
    }
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for kind in ReportKind::ALL {
        for scope in &scopes {
            if kind.cluster_scoped() && scope.is_some() {
                continue;
            }
            checks.push(list_reports(client, *kind, *scope));
        }
    }
    for owner in OWNER_PROBES {
        checks.extend(scopes.iter().map(|scope| get_owner(client, owner, *scope)));
    }
    checks
}

/// An owner kind the chain follows (`crate::trivy::resolve_chain`), probed for `get`.
struct OwnerProbe {
    /// `/apis/<group>/<version>` or `/api/v1`.
    prefix: &'static str,
    plural: &'static str,
    /// `plural.group`, as RBAC rules and errors name it.
    resource: &'static str,
    /// What the lookup is for, in the check's name.
    purpose: &'static str,
    /// What happens without it.
    without: &'static str,
}

/// The owners above a report's own owner that the agent reads: a ReplicaSet's Deployment or
/// Rollout, a Job's CronJob. (The report owners themselves are read too, and their `get` is
/// granted with the workload existence checks.)
const OWNER_PROBES: &[OwnerProbe] = &[
    OwnerProbe {
        prefix: "/apis/apps/v1",
        plural: "replicasets",
        resource: "replicasets",
        purpose: "Deployment lookup",
        without: "reports of Deployments will be attributed to their ReplicaSets",
    },
    OwnerProbe {
        prefix: "/apis/argoproj.io/v1alpha1",
        plural: "rollouts",
        resource: "rollouts.argoproj.io",
        purpose: "Argo Rollout lookup",
        without: "reports of Argo Rollouts will be attributed to their ReplicaSets",
    },
    OwnerProbe {
        prefix: "/apis/batch/v1",
        plural: "jobs",
        resource: "jobs",
        purpose: "CronJob lookup",
        without: "reports of a CronJob's Jobs will be attributed to the Jobs",
    },
];

/// `/version` is open to everyone on most clusters: it proves reachability only.
fn reachable(client: &Client) -> Check {
    let outcome = match client.execute(&Request::get("/version", list::ACCEPT_JSON)) {
        Ok(_) | Err(KubeError::Api { .. }) => Ok("ok".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    Check::new(format!("api reachable at {}", client.describe()), outcome)
}

/// Discovery is granted to every authenticated user (system:discovery): 401 means the
/// credential was rejected, 403 that the API sees an anonymous user.
fn authenticated(client: &Client) -> Check {
    let outcome = match client.execute(&Request::get("/apis", list::ACCEPT_JSON)) {
        Ok(_) => Ok("ok".to_owned()),
        Err(e @ KubeError::Api { status: 401, .. }) => Err(e.to_string()),
        Err(e @ KubeError::Api { status: 403, .. }) => Err(format!(
            "{e}; the api treats the agent as anonymous: no credential was sent"
        )),
        Err(KubeError::Api { .. }) => Ok("ok".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    Check::new("authenticated", outcome)
}

/// One page of one report kind's metadata in one scope (`None`: all namespaces).
fn list_reports(client: &Client, kind: ReportKind, scope: Option<&str>) -> Check {
    let path = format!("{}?limit=1", collection_path(kind, scope));
    let where_ = scope.map_or("all namespaces".to_owned(), |n| format!("namespace {n}"));
    let outcome = client
        .execute(&Request::get(&path, list::ACCEPT_METADATA_LIST))
        .map(|_| "ok".to_owned())
        .map_err(|e| e.to_string());
    Check::new(format!("list {} in {where_}", kind.plural()), outcome)
}

/// `get` on an owner kind, probed with a name that does not exist: 404 means permitted (or,
/// for a custom resource, that its CRD is not installed: nothing to look up either).
fn get_owner(client: &Client, owner: &OwnerProbe, scope: Option<&str>) -> Check {
    let ns = scope.unwrap_or("default");
    let path = format!(
        "{}/namespaces/{ns}/{}/{PROBE_NAME}",
        owner.prefix, owner.plural
    );
    let outcome = match client.execute(&Request::get(&path, list::ACCEPT_JSON)) {
        Ok(_) => Ok("ok".to_owned()),
        Err(e) if e.is_not_found() => Ok("ok".to_owned()),
        Err(e) if e.is_forbidden() => Err(format!(
            "{e}; {} (grant get on {})",
            owner.without, owner.resource
        )),
        Err(e) => Err(e.to_string()),
    };
    let where_ = scope.map_or("all namespaces (probed in default)".to_owned(), |n| {
        format!("namespace {n}")
    });
    Check::new(
        format!("get {} in {where_} ({})", owner.resource, owner.purpose),
        outcome,
    )
}
