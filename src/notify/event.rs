//! The input of the notifier: one lifecycle change of one finding, as it should be told.
//!
//! A [`Change`] holds the lifecycle's own [`Finding`] and [`AssetId`] (one finding model, not a
//! copy of its fields), plus what only notification needs: the [`ChangeKind`] people are told
//! and the severities that decide whether and how they are told. Selection, grouping and
//! rendering stay testable with literals; the one conversion from a lifecycle event is
//! `plan::change_of`.

use jiff::Timestamp;

pub use crate::lifecycle::{AssetId, Finding};
pub use crate::severity::Severity;

/// The lifecycle transitions that can reach people. Baseline and persistent findings, and a
/// lowered severity, have no variant on purpose: they can never be passed to the notifier by
/// mistake. The order is the order of messages within one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    New,
    Fixed,
    /// No longer reported by the scanner although the image did not change.
    Withdrawn,
    Reintroduced,
    /// Reported again after the scanner had stopped reporting it (a withdrawn finding).
    ReportedAgain,
    /// An open finding's severity rose (`severity_changed` with a higher severity).
    SeverityRaised,
    WorkloadRemoved,
    /// The workload's current revision no longer has the container.
    ContainerRemoved,
}

impl ChangeKind {
    /// Every kind, in message order (the SaaS contract's enum lists exactly these names).
    #[cfg(test)]
    pub const ALL: [ChangeKind; 8] = [
        ChangeKind::New,
        ChangeKind::Fixed,
        ChangeKind::Withdrawn,
        ChangeKind::Reintroduced,
        ChangeKind::ReportedAgain,
        ChangeKind::SeverityRaised,
        ChangeKind::WorkloadRemoved,
        ChangeKind::ContainerRemoved,
    ];

    /// The webhook `event` value; the first three are the original README's names, so
    /// receivers written against it keep working.
    pub fn event_name(self) -> &'static str {
        match self {
            ChangeKind::New => "vulnerabilities_detected",
            ChangeKind::Fixed => "vulnerabilities_fixed",
            ChangeKind::Withdrawn => "vulnerabilities_withdrawn",
            ChangeKind::Reintroduced => "vulnerabilities_reintroduced",
            ChangeKind::ReportedAgain => "vulnerabilities_reported_again",
            ChangeKind::SeverityRaised => "vulnerabilities_severity_raised",
            ChangeKind::WorkloadRemoved => "workload_removed",
            ChangeKind::ContainerRemoved => "container_removed",
        }
    }

    /// Kinds that end an open period. People hear of them by the finding's peak severity (what
    /// they were told while it was open), not by its severity at the end.
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            ChangeKind::Fixed
                | ChangeKind::Withdrawn
                | ChangeKind::WorkloadRemoved
                | ChangeKind::ContainerRemoved
        )
    }

    /// Kinds about a workload or container going away, sent only with
    /// `KIJO_NOTIFY_WORKLOAD_REMOVED`.
    pub fn is_removal(self) -> bool {
        matches!(
            self,
            ChangeKind::WorkloadRemoved | ChangeKind::ContainerRemoved
        )
    }
}

/// One finding's lifecycle change, as it should be told to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Unique id of the lifecycle event; message ids are derived from these.
    pub event_id: String,
    pub cluster: String,
    pub asset: AssetId,
    pub image: String,
    /// The finding as of the change (for a raise, with the new severity). An empty
    /// vulnerability id marks a `WorkloadRemoved` change about the workload, not one finding.
    pub finding: Finding,
    /// For [`ChangeKind::SeverityRaised`]: the severity before the raise.
    pub previous_severity: Option<Severity>,
    /// The highest severity of the finding's open period as of the change.
    pub peak_severity: Severity,
    pub occurred_at: Timestamp,
}

impl Change {
    /// The severity this change is told (and thresholded) by: the peak for a closing kind, so
    /// the end of a finding announced as CRITICAL is told as CRITICAL even if it was lowered
    /// meanwhile; the current severity otherwise. A peak below the current severity (a row
    /// written before peaks were kept) never hides the current one.
    pub fn told_severity(&self) -> Severity {
        if self.kind.is_closing() {
            self.peak_severity.max(self.finding.severity)
        } else {
            self.finding.severity
        }
    }

    /// Whether this change is about one finding (not a workload as a whole).
    pub fn has_finding(&self) -> bool {
        !self.finding.key.vulnerability_id.is_empty()
    }
}

/// `Some` for a non-empty attribute: the lifecycle stores "unknown" as an empty string.
pub(crate) fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_match_the_original_readme_and_the_contract() {
        let names: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.event_name()).collect();
        assert_eq!(
            names,
            [
                "vulnerabilities_detected",
                "vulnerabilities_fixed",
                "vulnerabilities_withdrawn",
                "vulnerabilities_reintroduced",
                "vulnerabilities_reported_again",
                "vulnerabilities_severity_raised",
                "workload_removed",
                "container_removed",
            ]
        );
        let mut sorted = ChangeKind::ALL;
        sorted.sort();
        assert_eq!(sorted, ChangeKind::ALL, "ALL is in message order");
    }
}
