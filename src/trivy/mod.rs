//! The Trivy Operator report model: typed, tolerant parsing of the custom resources and the
//! identity rules (which workload a report belongs to, which findings are "the same").
//!
//! Everything here is pure: it takes JSON text or plain data and returns plain data, so the
//! rules that decide what users get notified about are unit-tested without a cluster.
//!
//! There is one finding model, [`crate::lifecycle::Finding`]: the parser fills it directly.
//! Extending to ExposedSecretReports or ConfigAuditReports means a parser for their `report`
//! body (and its list field, [`ReportKind::findings_field`]); the metadata, owner and lifecycle
//! handling in [`Report`] stay the same.

pub mod identity;
pub mod instance;
pub mod report;

pub use identity::{
    Attribution, ObjectInfo, ObjectKey, ObjectLookup, Revision, Workload, has_revisions,
    newest_by_key, resolve_chain,
};
pub use report::{Malformed, ObjectMeta, Owner, OwnerReference, Report, ReportKind, parse_report};
