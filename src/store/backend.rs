//! The seam between the store's algorithms and a database dialect.
//!
//! [`super::Store`] writes each algorithm once (apply a scan, remove a workload, group and claim
//! outbox rows) over [`Tx`], one open write transaction. A backend implements [`Backend`] and
//! [`Tx`] with its SQL and row mapping only: how a statement is spelled, how a row becomes a
//! value, and how it batches (PostgreSQL writes a whole report with one `UNNEST` statement per
//! table, SQLite with prepared statements in a loop). No lifecycle or outbox decision is made
//! behind this trait.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

#[cfg(feature = "test-support")]
use super::SchemaStatus;
use super::{
    KnownReport, MessageUpdate, OpenFindings, OutboxStats, QueuedRow, QueuedWindows, Removal,
    ReportVersion,
    StoreError,
};
use crate::lifecycle::{AssetId, Covered, Event, FindingKey, Observation, StoredFinding};
use crate::severity::Severity;

/// A container's row of `scanned_containers`: what the stale check and the diff need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredContainer {
    pub last_scan_at: Timestamp,
    pub image: String,
    pub revision: Option<u64>,
}

/// A message row's head as [`Tx::due_heads`] reads it: id, creation time, attempts so far.
pub(crate) type MessageHead = (String, Timestamp, u32);

/// One open write transaction. Every method is one statement (or one batch) of the dialect;
/// the transaction commits when the algorithm given to [`Backend::transaction`] returns `Ok`.
pub(crate) trait Tx {
    /// Serialises writers of one workload container, also one never seen before (there is no
    /// row to lock yet). A backend whose transactions lock the whole database does nothing.
    fn lock_asset(&mut self, cluster: &str, asset: &AssetId) -> Result<(), StoreError>;
    /// What is recorded about the container's last applied scan, `None` for one never seen.
    fn load_container(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<Option<StoredContainer>, StoreError>;
    /// Every stored finding row of the container.
    fn load_findings(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<Vec<StoredFinding>, StoreError>;
    /// Keys open, or closed as `container_removed`, in the workload's other containers, with
    /// the earliest `first_seen` of each.
    fn sibling_keys(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<BTreeMap<FindingKey, Timestamp>, StoreError>;
    /// Records the scan time, image, revision and report uid (`""` when unknown) of an applied
    /// scan and marks the container present.
    fn upsert_container(&mut self, obs: &Observation, report_uid: &str) -> Result<(), StoreError>;
    /// Inserts or updates finding rows of the container by key (never called with none).
    fn upsert_findings(
        &mut self,
        cluster: &str,
        asset: &AssetId,
        rows: &[StoredFinding],
    ) -> Result<(), StoreError>;
    /// Records events and queues one outbox row per event and target, queued at `queued_at`
    /// (never called with none).
    fn insert_events(
        &mut self,
        events: &[Event],
        targets: &[String],
        queued_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Records the report's version for the container the observation describes.
    fn upsert_report(
        &mut self,
        obs: &Observation,
        report: &ReportVersion,
    ) -> Result<(), StoreError>;
    /// The containers of a workload not yet removed, in container order, with their last scan.
    fn workload_containers(
        &mut self,
        cluster: &str,
        workload: &Removal<'_>,
    ) -> Result<Vec<(String, Timestamp)>, StoreError>;
    /// Marks every container of the workload removed at `at` (those already removed keep their
    /// time) and forgets their revisions: a re-created Deployment counts from 1 again.
    fn mark_removed(
        &mut self,
        cluster: &str,
        workload: &Removal<'_>,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Forgets the report versions recorded for the workload.
    fn forget_reports(&mut self, cluster: &str, workload: &Removal<'_>) -> Result<(), StoreError>;
    /// Marks one container removed at `at` (nothing when it already is).
    fn mark_container_removed(
        &mut self,
        cluster: &str,
        asset: &AssetId,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Forgets the report versions recorded for one container.
    fn forget_container_reports(&mut self, cluster: &str, asset: &AssetId)
    -> Result<(), StoreError>;

    /// Pending outbox rows not yet grouped, in event order; a backend that can lock rows locks
    /// them for the transaction.
    fn queued_rows(&mut self, cluster: &str) -> Result<Vec<QueuedRow>, StoreError>;
    /// Creates a pending message due at `now` (nothing when it already exists).
    fn insert_message(
        &mut self,
        cluster: &str,
        target: &str,
        message_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Assigns outbox rows of one target to a message.
    fn assign_rows(
        &mut self,
        target: &str,
        message_id: &str,
        event_ids: &[String],
    ) -> Result<(), StoreError>;
    /// Marks outbox rows (target, event id) as filtered: recorded, never sent.
    fn mark_filtered(&mut self, rows: &[(String, String)]) -> Result<(), StoreError>;
    /// Up to `limit` pending messages of one target due at `now`, oldest first; a backend that
    /// can skip rows locked by another agent skips them.
    fn due_heads(
        &mut self,
        cluster: &str,
        target: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<MessageHead>, StoreError>;
    /// Moves a message's next attempt to `until`.
    fn claim(&mut self, target: &str, message_id: &str, until: Timestamp)
    -> Result<(), StoreError>;
    /// The events of one message, in event order.
    fn message_events(&mut self, target: &str, message_id: &str) -> Result<Vec<Event>, StoreError>;
    /// Writes an attempt's outcome to a pending message and its outbox rows.
    fn record_attempt(
        &mut self,
        target: &str,
        message_id: &str,
        update: &MessageUpdate,
    ) -> Result<(), StoreError>;
}

/// The work given to [`Backend::transaction`]; it may run twice (see there).
pub(crate) type Work<'w> = dyn FnMut(&mut dyn Tx) -> Result<(), StoreError> + 'w;

/// One database connection of one dialect.
pub(crate) trait Backend: Send {
    /// Runs `work` in one write transaction and commits it when it returns `Ok`; an error rolls
    /// everything back. After a connection loss a backend that reconnects runs `work` once more
    /// on the fresh connection, so `work` must be idempotent (every algorithm is: a committed
    /// scan is stale the second time). `context` names the work in error messages.
    fn transaction(&mut self, context: &'static str, work: &mut Work<'_>)
    -> Result<(), StoreError>;

    #[cfg(feature = "test-support")]
    fn ping(&mut self) -> Result<(), StoreError>;
    #[cfg(feature = "test-support")]
    fn schema_status(&mut self) -> Result<SchemaStatus, StoreError>;
    #[cfg(feature = "test-support")]
    fn is_empty_for_cluster(&mut self, cluster: &str) -> Result<bool, StoreError>;
    fn baseline_pending(&mut self, cluster: &str) -> Result<bool, StoreError>;
    fn finish_baseline(&mut self, cluster: &str, at: Timestamp) -> Result<(), StoreError>;
    /// When the cluster's baseline completed, `None` while it is pending.
    fn baseline_completed_at(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError>;
    /// Every coverage row of the cluster.
    fn coverage(&mut self, cluster: &str) -> Result<Vec<Covered>, StoreError>;
    /// Records scopes (namespace, report kind) covered since `at`; a scope already recorded
    /// keeps its time.
    fn record_coverage(
        &mut self,
        cluster: &str,
        scopes: &[(String, String)],
        at: Timestamp,
    ) -> Result<(), StoreError>;
    fn report_versions(
        &mut self,
        cluster: &str,
    ) -> Result<HashMap<String, KnownReport>, StoreError>;
    #[cfg(feature = "test-support")]
    fn report_version(&mut self, cluster: &str, uid: &str) -> Result<Option<String>, StoreError>;
    fn retain_report_versions(
        &mut self,
        cluster: &str,
        live: &[String],
    ) -> Result<usize, StoreError>;
    fn known_workloads(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Containers with a recorded scan and not removed, in key order.
    /// The live containers `keep` accepts, read row by row: memory grows with the ones kept
    /// (a quiet cycle keeps none), not with the cluster.
    fn live_containers(
        &mut self,
        cluster: &str,
        keep: &mut dyn FnMut(&AssetId) -> bool,
    ) -> Result<Vec<AssetId>, StoreError>;
    fn recent_events(&mut self, cluster: &str, limit: u32) -> Result<Vec<Event>, StoreError>;
    /// Open findings per (severity, namespace), with the oldest `first_seen` among those that
    /// were announced (`announced`: opened as news, not recorded by a baseline).
    fn open_findings(&mut self, cluster: &str) -> Result<Vec<OpenFindings>, StoreError>;
    fn outbox_stats(&mut self, cluster: &str) -> Result<Vec<OutboxStats>, StoreError>;
    fn queued_windows(&mut self, cluster: &str) -> Result<QueuedWindows, StoreError>;
    fn next_due(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError>;
}

/// The `lifecycle_events` columns (alias `le`) every backend's event row mapping reads, in
/// this order.
pub(crate) const EVENT_COLUMNS: &str = "le.event_id, le.kind, le.cluster_name, le.namespace,
    le.workload_kind, le.workload, le.container, le.image, le.cve_id, le.package,
    le.package_path, le.installed_version, le.fixed_version, le.severity, le.previous_severity,
    le.title, le.link, le.reintroduced_count, le.occurred_at, le.peak_severity";

/// The column index of the first column after [`EVENT_COLUMNS`].
pub(crate) const AFTER_EVENT_COLUMNS: usize = 20;

/// Reads a severity column: the store writes [`Severity::as_str`], so this never guesses.
pub(crate) fn severity_of(column: &str) -> Severity {
    Severity::from_trivy(column)
}
