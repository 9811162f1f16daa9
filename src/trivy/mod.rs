//! The Trivy Operator report model: typed, tolerant parsing of the custom resources and the
//! identity rules (which workload a report belongs to, which findings are "the same").
//!
//! Everything here is pure: it takes JSON text or plain data and returns plain data, so the
//! rules that decide what users get notified about are unit-tested without a cluster.
//!
//! Extending to ExposedSecretReports or ConfigAuditReports means adding a finding type that
//! implements [`Keyed`] and a parser for its `report` body; the metadata, owner and lifecycle
//! handling in [`Report`] stay the same.

pub mod identity;
pub mod report;

pub use identity::{OwnerLookup, ReplicaSetInfo, Revision, Workload, newest_by_key, workload_of};
pub use report::{Keyed, Malformed, ObjectMeta, Owner, Report, ReportKind, parse_report};
