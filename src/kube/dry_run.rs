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
    let mut checks = Vec::new();
    // /version is open to everyone on most clusters: it proves reachability only.
    let reachable = match client.execute(&Request::get("/version", list::ACCEPT_JSON)) {
        Ok(_) | Err(KubeError::Api { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let reachable_ok = reachable.is_ok();
    checks.push(Check {
        name: format!("api reachable at {}", client.describe()),
        ok: reachable_ok,
        detail: reachable.err().unwrap_or_else(|| "ok".to_owned()),
    });
    // Discovery is granted to every authenticated user (system:discovery): 401 means the
    // credential was rejected, 403 that the API sees an anonymous user.
    let authenticated = if !reachable_ok {
        Err("skipped: api not reachable".to_owned())
    } else {
        match client.execute(&Request::get("/apis", list::ACCEPT_JSON)) {
            Ok(_) => Ok(()),
            Err(e @ KubeError::Api { status: 401, .. }) => Err(e.to_string()),
            Err(e @ KubeError::Api { status: 403, .. }) => Err(format!(
                "{e}; the api treats the agent as anonymous: no credential was sent"
            )),
            Err(KubeError::Api { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    let auth_ok = authenticated.is_ok();
    checks.push(Check {
        name: "authenticated".to_owned(),
        ok: auth_ok,
        detail: authenticated.err().unwrap_or_else(|| "ok".to_owned()),
    });
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
            let path = format!("{}?limit=1", collection_path(*kind, *scope));
            let where_ = scope.map_or("all namespaces".to_owned(), |n| format!("namespace {n}"));
            let result = client.execute(&Request::get(&path, list::ACCEPT_METADATA_LIST));
            let (ok, detail) = match result {
                Ok(_) => (true, "ok".to_owned()),
                Err(e) if e.is_not_found() => (false, format!("{e}")),
                Err(e) => (false, e.to_string()),
            };
            checks.push(Check {
                name: format!("list {} in {where_}", kind.plural()),
                ok,
                detail,
            });
        }
    }
    for scope in &scopes {
        let ns = scope.unwrap_or("default");
        let path = format!("/apis/apps/v1/namespaces/{ns}/replicasets/{PROBE_NAME}");
        let result = client.execute(&Request::get(&path, list::ACCEPT_JSON));
        let (ok, detail) = match result {
            Ok(_) => (true, "ok".to_owned()),
            Err(e) if e.is_not_found() => (true, "ok".to_owned()),
            Err(e) if e.is_forbidden() => (
                false,
                format!("{e}; reports of Deployments will be attributed to their ReplicaSets"),
            ),
            Err(e) => (false, e.to_string()),
        };
        let where_ = scope.map_or("all namespaces (probed in default)".to_owned(), |n| {
            format!("namespace {n}")
        });
        checks.push(Check {
            name: format!("get replicasets in {where_} (Deployment lookup)"),
            ok,
            detail,
        });
    }
    checks
}
