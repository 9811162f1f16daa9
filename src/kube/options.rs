//! How the client finds the cluster and how hard it retries: the knobs callers set.

use std::path::PathBuf;
use std::time::Duration;

use super::metrics::KubeMetrics;

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
    /// modest (the API server's own guidance for large lists is paging with `limit`).
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
