//! The plain-data input of the notifier: one lifecycle change of one finding.
//!
//! These types are deliberately independent of the store and the lifecycle code so that
//! selection, grouping and rendering can be tested with literals, and so the integrator only
//! has to write one conversion from a lifecycle event (or an outbox row) into a [`Change`].

use jiff::Timestamp;

pub use crate::severity::Severity;

/// The lifecycle transitions that can reach people. Baseline and persistent findings have no
/// variant on purpose: they can never be passed to the notifier by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    New,
    Fixed,
    Reintroduced,
    WorkloadRemoved,
}

impl ChangeKind {
    /// The webhook `event` value; the first three are the original README's names.
    pub fn event_name(self) -> &'static str {
        match self {
            ChangeKind::New => "vulnerabilities_detected",
            ChangeKind::Fixed => "vulnerabilities_fixed",
            ChangeKind::Reintroduced => "vulnerabilities_reintroduced",
            ChangeKind::WorkloadRemoved => "workload_removed",
        }
    }
}

/// One finding's lifecycle change, as it should be told to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Unique id of the lifecycle event; message ids are derived from these.
    pub event_id: String,
    pub cluster: String,
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub container: String,
    pub image: String,
    /// Empty for a `WorkloadRemoved` change that is about the workload, not one finding.
    pub vulnerability_id: String,
    pub package: String,
    pub installed_version: String,
    pub fixed_version: Option<String>,
    pub severity: Severity,
    pub title: Option<String>,
    pub link: Option<String>,
    pub occurred_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_match_the_original_readme() {
        assert_eq!(ChangeKind::New.event_name(), "vulnerabilities_detected");
        assert_eq!(ChangeKind::Fixed.event_name(), "vulnerabilities_fixed");
        assert_eq!(
            ChangeKind::Reintroduced.event_name(),
            "vulnerabilities_reintroduced"
        );
        assert_eq!(ChangeKind::WorkloadRemoved.event_name(), "workload_removed");
    }
}
