//! Kubernetes API access over raw HTTPS (ureq + rustls): configuration (in-cluster or
//! kubeconfig with exec plugins), a client with refreshing credentials and a retry policy,
//! streamed paginated listings of Trivy reports, owner lookups and `--dry-run` checks.

pub mod client;
pub mod config;
mod dry_run;
pub mod error;
pub mod exec;
pub mod list;
mod metrics;
mod options;
pub mod owner;
mod rbac;
mod tls;
pub mod workload;

pub use client::Client;
pub use config::{AuthConfig, ClusterConfig, Origin};
pub use dry_run::dry_run_checks;
pub use error::KubeError;
pub use list::{ListEvent, ListStats, collection_path};
pub use metrics::KubeMetrics;
pub use options::{KubeOptions, RetryPolicy};
pub use owner::OwnerResolver;
pub use rbac::{LEASE_PERMISSIONS, Permission, READ_PERMISSIONS};
