//! Kubernetes API access over raw HTTPS (ureq + rustls): configuration (in-cluster or
//! kubeconfig with exec plugins), a client with refreshing credentials and a retry policy,
//! streamed paginated listings of Trivy reports, owner lookups and `--dry-run` checks.

pub mod client;
pub mod config;
pub mod error;
pub mod exec;
pub mod list;
pub mod owner;
mod tls;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use client::Client;
pub use config::{AuthConfig, ClusterConfig, Origin};
pub use error::KubeError;
pub use list::{ListEvent, ListStats, collection_path};
pub use owner::OwnerResolver;

use crate::metrics::{Counter, Family, Registry};
use crate::trivy::ReportKind;
use client::Request;

/// How to find the cluster. `Default` gives the documented resolution order.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// `--kubeconfig`: only this file is read.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: instead of `current-context`.
    pub context: Option<String>,
    /// In-cluster service-account directory; `None` is the standard mount.
    pub service_account_dir: Option<PathBuf>,
    pub retry: RetryPolicy,
    /// Items per list page. Full VulnerabilityReports can be ~1 MiB each, so keep this
    /// modest (k8s-api.md §3.8).
    pub page_size: u32,
    /// Upper bound on one response body (a page or one object).
    pub max_page_bytes: u64,
    pub metrics: Option<KubeMetrics>,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            kubeconfig: None,
            context: None,
            service_account_dir: None,
            retry: RetryPolicy::default(),
            page_size: 100,
            max_page_bytes: 256 * 1024 * 1024,
            metrics: None,
        }
    }
}

/// Retries of one request (5xx, 429, connection errors, broken bodies) and of listings.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, including the first.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A server's `Retry-After` is honoured up to this long.
    pub retry_after_cap: Duration,
    /// Restarts of one listing (expired continue tokens, pages broken mid-body).
    pub max_list_restarts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(30),
            max_list_restarts: 3,
        }
    }
}

/// The client's Prometheus metrics.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    /// Responses by HTTP status (`error` when there was none).
    pub requests: Family<Vec<(String, String)>, Counter>,
    pub retries: Counter,
    pub malformed_reports: Counter,
    pub list_restarts: Counter,
}

impl KubeMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = KubeMetrics::default();
        registry.register(
            "kijo_kube_api_requests",
            "Kubernetes API responses by HTTP status (status=error: no response)",
            m.requests.clone(),
        );
        registry.register(
            "kijo_kube_api_retries",
            "Kubernetes API requests retried (5xx, 429, connection errors, broken bodies)",
            m.retries.clone(),
        );
        registry.register(
            "kijo_malformed_reports",
            "Trivy reports skipped because they could not be parsed",
            m.malformed_reports.clone(),
        );
        registry.register(
            "kijo_kube_list_restarts",
            "Listings restarted from the first page (expired continue token or broken page)",
            m.list_restarts.clone(),
        );
        m
    }
}

/// The report kinds the agent reads.
pub const REPORT_KINDS: &[ReportKind] = ReportKind::ALL;

/// One RBAC grant the agent's code needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every read the agent's code makes against the API. The packaging checks its ClusterRole
/// against this list.
pub const READ_PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "aquasecurity.github.io",
        resource: "vulnerabilityreports",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "aquasecurity.github.io",
        resource: "clustervulnerabilityreports",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "apps",
        resource: "replicasets",
        verbs: &["get"],
    },
    Permission {
        api_group: "apps",
        resource: "deployments",
        verbs: &["get"],
    },
    Permission {
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["get"],
    },
    Permission {
        api_group: "apps",
        resource: "daemonsets",
        verbs: &["get"],
    },
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get"],
    },
    Permission {
        api_group: "batch",
        resource: "cronjobs",
        verbs: &["get"],
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get"],
    },
    Permission {
        api_group: "",
        resource: "replicationcontrollers",
        verbs: &["get"],
    },
];

/// What leader election through [`Client::write_json`] / [`Client::get_json`] on a Lease
/// needs, in the agent's own namespace.
pub const LEASE_PERMISSIONS: &[Permission] = &[Permission {
    api_group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
}];

/// One `--dry-run` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

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
    for kind in REPORT_KINDS {
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
