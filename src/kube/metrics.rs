//! The Kubernetes client's Prometheus metrics.

use crate::metrics::{Counter, Family, Registry};

/// The client's Prometheus metrics.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    /// Responses by HTTP status (`error` when there was none).
    pub requests: Family<Vec<(String, String)>, Counter>,
    pub retries: Counter,
    pub malformed_reports: Counter,
    pub list_restarts: Counter,
    /// Owner lookups RBAC refused, by owner kind.
    pub owner_forbidden: Family<Vec<(String, String)>, Counter>,
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
        registry.register(
            "kijo_kube_owner_forbidden",
            "Owner lookups the API refused (403), by owner kind; their reports stay attributed to the nearest readable owner below",
            m.owner_forbidden.clone(),
        );
        m
    }
}
