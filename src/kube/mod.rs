//! Kubernetes API access over raw HTTPS (ureq + rustls): configuration (in-cluster or
//! kubeconfig with exec plugins), a client with refreshing credentials and a retry policy,
//! streamed paginated listings of Trivy reports, owner lookups and `--dry-run` checks.

mod client;
pub mod config;
mod dry_run;
mod error;
mod exec;
pub(crate) mod list;
mod metrics;
mod options;
mod owner;
/// The RBAC table the packaging is checked against; only its test reads it.
#[cfg(test)]
mod rbac;
mod tls;
pub(crate) mod workload;

pub use client::Client;
pub use dry_run::dry_run_checks;
pub use error::KubeError;
pub use list::ListEvent;
pub use metrics::KubeMetrics;
pub use options::{KubeOptions, RetryPolicy};
pub use owner::OwnerResolver;
