//! The `--dry-run` checks of Kubernetes access: reachability, authentication and every
//! permission the agent needs, in the scope it will use.

use super::client::{Client, Request};
use super::error::KubeError;
use super::list::{self, collection_path};
use crate::check::Check;
use crate::trivy::ReportKind;

/// A name no ReplicaSet has; a GET of it tells whether `get` is permitted (404) or not (403)
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
    checks.extend(scopes.iter().map(|scope| get_replicasets(client, *scope)));
    checks
}

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

/// `get` on ReplicaSets, probed with a name that does not exist: 404 means permitted.
fn get_replicasets(client: &Client, scope: Option<&str>) -> Check {
    let ns = scope.unwrap_or("default");
    let path = format!("/apis/apps/v1/namespaces/{ns}/replicasets/{PROBE_NAME}");
    let outcome = match client.execute(&Request::get(&path, list::ACCEPT_JSON)) {
        Ok(_) => Ok("ok".to_owned()),
        Err(e) if e.is_not_found() => Ok("ok".to_owned()),
        Err(e) if e.is_forbidden() => Err(format!(
            "{e}; reports of Deployments will be attributed to their ReplicaSets"
        )),
        Err(e) => Err(e.to_string()),
    };
    let where_ = scope.map_or("all namespaces (probed in default)".to_owned(), |n| {
        format!("namespace {n}")
    });
    Check::new(
        format!("get replicasets in {where_} (Deployment lookup)"),
        outcome,
    )
}
