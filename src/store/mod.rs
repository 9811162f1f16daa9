//! Durable lifecycle state: PostgreSQL for production, an embedded SQLite file as the default.
//!
//! Both backends hold the same tables (see `sql/`) and behave the same; the lifecycle decisions
//! themselves are made by the pure [`crate::lifecycle`] module, so a backend only loads state,
//! hands it to the diff and writes the result in one transaction. `Store` is meant for the one
//! thread that writes (the poll thread); the health thread gets its own cheap [`Pinger`].

mod backend;
pub mod error;
mod history;
mod metrics;
pub mod outbox;
mod ping;
mod postgres;
mod sqlite;
mod target;
mod tls;

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;

pub use error::StoreError;
pub use history::render_history;
pub use metrics::StoreMetrics;
pub use outbox::{
    Assigned, MessageUpdate, OutboxStats, Plan, QueuedRow, QueuedWindows, StoredMessage,
};
pub use ping::Pinger;
pub use target::{DatabaseTarget, PgSslMode, PgTarget, mask_database_url};

use self::backend::{Backend, StoredContainer, Tx};
use crate::lifecycle::{self, AssetId, Event, Observation, StoredAsset};
use crate::severity::Severity;

/// Migrations embedded in the binary; versions only ever grow, applied ones are never edited.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../sql/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "notification_messages",
        sql: include_str!("../../sql/postgres/0002_notification_messages.sql"),
    },
    Migration {
        version: 3,
        name: "finding_identity",
        sql: include_str!("../../sql/postgres/0003_finding_identity.sql"),
    },
    Migration {
        version: 4,
        name: "coverage",
        sql: include_str!("../../sql/postgres/0004_coverage.sql"),
    },
    Migration {
        version: 5,
        name: "outbox_queued_at",
        sql: include_str!("../../sql/postgres/0005_outbox_queued_at.sql"),
    },
    Migration {
        version: 6,
        name: "announced",
        sql: include_str!("../../sql/postgres/0006_announced.sql"),
    },
];

pub(crate) const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../sql/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "notification_messages",
        sql: include_str!("../../sql/sqlite/0002_notification_messages.sql"),
    },
    Migration {
        version: 3,
        name: "finding_identity",
        sql: include_str!("../../sql/sqlite/0003_finding_identity.sql"),
    },
    Migration {
        version: 4,
        name: "coverage",
        sql: include_str!("../../sql/sqlite/0004_coverage.sql"),
    },
    Migration {
        version: 5,
        name: "outbox_queued_at",
        sql: include_str!("../../sql/sqlite/0005_outbox_queued_at.sql"),
    },
    Migration {
        version: 6,
        name: "announced",
        sql: include_str!("../../sql/sqlite/0006_announced.sql"),
    },
];

/// The versions of a set of migrations, for [`SchemaStatus::embedded`].
pub(crate) fn versions(migrations: &[Migration]) -> Vec<i64> {
    migrations.iter().map(|m| m.version).collect()
}

/// The migrations still to apply, in order, given the versions a database has applied (sorted);
/// refuses a database that a newer agent migrated.
pub(crate) fn pending_migrations<'m>(
    migrations: &'m [Migration],
    applied: &[i64],
) -> Result<Vec<&'m Migration>, StoreError> {
    let embedded = migrations.last().map_or(0, |m| m.version);
    if let Some(&newest) = applied.last()
        && newest > embedded
    {
        return Err(StoreError::SchemaTooNew {
            applied: newest,
            embedded,
        });
    }
    Ok(migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

/// Which embedded migrations the database has applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub applied: Vec<i64>,
    pub embedded: Vec<i64>,
}

impl SchemaStatus {
    /// Versions embedded in this binary that the database does not have yet.
    pub fn pending(&self) -> Vec<i64> {
        self.embedded
            .iter()
            .copied()
            .filter(|v| !self.applied.contains(v))
            .collect()
    }

    pub fn is_current(&self) -> bool {
        self.pending().is_empty() && self.applied.iter().all(|v| self.embedded.contains(v))
    }
}

/// What one `apply` did, for the cycle's summary line and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The scan was not newer than what the store already has: nothing but the report version
    /// was written.
    pub stale: bool,
    /// Finding rows inserted or updated.
    pub rows_written: usize,
    /// Lifecycle events recorded (each also queued once per notification target).
    pub events: Vec<Event>,
}

/// A report already applied: its version and the workload container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownReport {
    pub resource_version: String,
    pub asset: AssetId,
    /// This report is the one last applied to its container. A known, unchanged report of the
    /// current revision that is not current means a rollback made it current again: apply it.
    pub current: bool,
}

/// The version of a report as the Kubernetes API shows it, recorded so that an unchanged report
/// is skipped without being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportVersion {
    pub uid: String,
    pub resource_version: String,
}

/// Open findings of one severity, for `kijo-agent history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeverityCount {
    pub severity: Severity,
    pub open: u64,
}

impl SeverityCount {
    /// Per-severity totals over namespaces, most severe first, severities without an open
    /// finding left out.
    pub fn totals(rows: &[OpenFindings]) -> Vec<SeverityCount> {
        Severity::ALL
            .iter()
            .filter_map(|&severity| {
                let open: u64 = rows
                    .iter()
                    .filter(|r| r.severity == severity)
                    .map(|r| r.open)
                    .sum();
                (open > 0).then_some(SeverityCount { severity, open })
            })
            .collect()
    }
}

/// Open findings of one severity in one namespace (`""` for cluster-scoped reports), for the
/// `kijo_findings_open` gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFindings {
    pub severity: Severity,
    pub namespace: String,
    pub open: u64,
    /// The oldest `first_seen` among these findings that were announced (opened as news, see
    /// `StoredFinding::announced`); `None` when there is none.
    pub oldest_announced: Option<Timestamp>,
}

/// A workload that is gone, whose open findings are closed as `workload_removed`.
#[derive(Clone, Copy)]
pub(crate) struct Removal<'a> {
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

/// The lifecycle store of the writing thread.
pub struct Store {
    backend: Box<dyn Backend>,
    metrics: Option<StoreMetrics>,
    #[cfg(feature = "test-support")]
    sibling_lookups: u64,
}

impl Store {
    /// Connects and applies the embedded migrations under a lock, so two agents starting at the
    /// same time neither race nor apply a migration twice.
    pub fn open(target: &DatabaseTarget) -> Result<Store, StoreError> {
        let backend: Box<dyn Backend> = match target {
            DatabaseTarget::Postgres(pg) => Box::new(postgres::PgStore::open(pg)?),
            DatabaseTarget::Sqlite(path) => Box::new(sqlite::SqliteStore::open(path)?),
        };
        Ok(Store {
            backend,
            metrics: None,
            #[cfg(feature = "test-support")]
            sibling_lookups: 0,
        })
    }

    /// Counts this store's writes and errors in the given metrics from now on.
    pub fn with_metrics(mut self, metrics: StoreMetrics) -> Store {
        self.metrics = Some(metrics);
        self
    }

    fn observe<T>(&self, started: std::time::Instant, result: &Result<T, StoreError>) {
        if let Some(m) = &self.metrics {
            m.observe(started.elapsed(), result.as_ref().err());
        }
    }

    /// Runs one algorithm in one transaction of the backend and returns what it produced.
    fn transaction<T>(
        &mut self,
        context: &'static str,
        mut work: impl FnMut(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.backend.transaction(context, &mut |tx| {
            out = Some(work(tx)?);
            Ok(())
        })?;
        Ok(out.expect("the transaction committed, so the work ran to its end"))
    }

    /// Test hooks (`test-support`): the agent itself never asks these.
    #[cfg(feature = "test-support")]
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.backend.ping()
    }

    #[cfg(feature = "test-support")]
    pub fn schema_status(&mut self) -> Result<SchemaStatus, StoreError> {
        self.backend.schema_status()
    }

    #[cfg(feature = "test-support")]
    /// True when this cluster has never recorded a scan. Prefer [`Store::baseline_pending`] for
    /// the baseline decision: it stays true when the first cycle was interrupted halfway.
    pub fn is_empty_for_cluster(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.backend.is_empty_for_cluster(cluster)
    }

    /// True until [`Store::finish_baseline`] was called for this cluster: apply scans with
    /// `baseline = true` meanwhile. A first cycle that crashed halfway is thus repeated as a
    /// baseline instead of announcing the rest of the cluster as new.
    pub fn baseline_pending(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.backend.baseline_pending(cluster)
    }

    /// Marks the cluster's baseline complete; call it after the first cycle that applied every
    /// report without error. Calling it again changes nothing.
    pub fn finish_baseline(&mut self, cluster: &str, at: Timestamp) -> Result<(), StoreError> {
        self.backend.finish_baseline(cluster, truncate_micros(at))
    }

    /// Since when the agent covers each scope of the cluster ([`lifecycle::covered_since`]
    /// reads it), given the scopes (namespace or [`lifecycle::ALL_NAMESPACES`], report kind)
    /// this agent covers now.
    ///
    /// A cluster whose baseline completed but that has no coverage row at all was written by an
    /// agent before coverage was recorded (schema 3): that agent covered its configured scopes
    /// since its baseline, so the scopes covered now are recorded at the baseline's completion
    /// (not as begun now, which would hide the news of this cycle, and not as never covered).
    pub fn coverage(
        &mut self,
        cluster: &str,
        scopes: &[(String, String)],
    ) -> Result<Vec<lifecycle::Covered>, StoreError> {
        let covered = self.backend.coverage(cluster)?;
        if !covered.is_empty() || scopes.is_empty() {
            return Ok(covered);
        }
        match self.backend.baseline_completed_at(cluster)? {
            None => Ok(covered),
            Some(at) => {
                log::info!(
                    cluster = cluster;
                    "no coverage recorded yet (a store from before coverage baselines): the scopes covered now count as covered since the baseline"
                );
                self.backend.record_coverage(cluster, scopes, at)?;
                self.backend.coverage(cluster)
            }
        }
    }

    /// Records that the scopes (namespace or [`lifecycle::ALL_NAMESPACES`], report kind) are
    /// covered since `at`; call it after a cycle that covered them completed. A scope already
    /// recorded keeps its earlier time, and no row is ever deleted: narrowing
    /// `KIJO_NAMESPACES` and widening it again keeps the first coverage.
    pub fn record_coverage(
        &mut self,
        cluster: &str,
        scopes: &[(String, String)],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        if scopes.is_empty() {
            return Ok(());
        }
        self.backend
            .record_coverage(cluster, scopes, truncate_micros(at))
    }

    /// Every report version recorded for a cluster, by report uid, with the workload container
    /// it was applied to: one query per cycle instead of one per report.
    pub fn report_versions(
        &mut self,
        cluster: &str,
    ) -> Result<HashMap<String, KnownReport>, StoreError> {
        self.backend.report_versions(cluster)
    }

    #[cfg(feature = "test-support")]
    /// The resourceVersion recorded for a report uid, `None` for a report never applied. Test
    /// hook; the poll loop reads them all at once with [`Store::report_versions`].
    pub fn report_version(
        &mut self,
        cluster: &str,
        report_uid: &str,
    ) -> Result<Option<String>, StoreError> {
        self.backend.report_version(cluster, report_uid)
    }

    /// Forgets report versions of reports that no longer exist (TTL re-creation gives every
    /// report a new uid each day). `live_uids` is every report uid currently listed; call it only
    /// after a complete, successful list, or an empty list forgets every version.
    pub fn retain_report_versions(
        &mut self,
        cluster: &str,
        live_uids: &[String],
    ) -> Result<usize, StoreError> {
        self.backend.retain_report_versions(cluster, live_uids)
    }

    /// Applies one scan of one workload container: loads its stored state, skips a stale scan
    /// ([`lifecycle::is_stale`]: by Deployment revision, then by scan time), diffs (loading the
    /// keys of the workload's other containers only when a finding would be new), writes the
    /// changed rows, the events, one outbox row per event and target, the container's image,
    /// revision and report uid, and the report version, all in one transaction. On a connection loss the whole transaction is retried once on a
    /// fresh connection (safe: an already committed scan is stale the second time).
    /// The cluster is `observation.cluster`.
    pub fn apply(
        &mut self,
        observation: &Observation,
        report: Option<&ReportVersion>,
        baseline: bool,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let mut observation = observation.clone();
        // Both databases keep microseconds; comparing a finer scan time with its stored
        // rounding would make the same scan look newer on the second apply.
        observation.scanned_at = truncate_micros(observation.scanned_at);
        let started = std::time::Instant::now();
        let result = self.transaction("applying a scan", |tx| {
            apply_scan(tx, &observation, report, baseline, targets)
        });
        self.observe(started, &result);
        let (applied, _siblings_loaded) = result?;
        #[cfg(feature = "test-support")]
        if _siblings_loaded {
            self.sibling_lookups += 1;
        }
        Ok(applied)
    }

    /// Closes every open finding of one container that the workload's current revision no
    /// longer has (`container_removed`), marks the container removed and forgets its report
    /// versions, in one transaction. A later scan of it reopens its findings silently.
    pub fn remove_container(
        &mut self,
        cluster: &str,
        asset: &AssetId,
        at: Timestamp,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let at = truncate_micros(at);
        let started = std::time::Instant::now();
        let result = self.transaction("removing a container", |tx| {
            remove_container(tx, cluster, asset, at, targets)
        });
        self.observe(started, &result);
        result
    }

    /// The containers with a recorded scan that are not removed and that `keep` accepts, in
    /// key order. The poll cycle keeps those its listed reports do not cover, to check them
    /// against their workload's pod template; rows are filtered as they are read.
    pub fn live_containers(
        &mut self,
        cluster: &str,
        keep: &mut dyn FnMut(&AssetId) -> bool,
    ) -> Result<Vec<AssetId>, StoreError> {
        self.backend.live_containers(cluster, keep)
    }

    #[cfg(feature = "test-support")]
    /// How many applies of this store loaded sibling keys (test hook: the query must run only
    /// for scans with a would-be new finding).
    pub fn sibling_lookups(&self) -> u64 {
        self.sibling_lookups
    }

    /// Closes every open finding of a workload that no longer exists (`workload_removed`), for
    /// all its containers, and forgets its report versions.
    pub fn remove_workload(
        &mut self,
        cluster: &str,
        namespace: &str,
        workload_kind: &str,
        workload: &str,
        at: Timestamp,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let removal = Removal {
            namespace,
            kind: workload_kind,
            name: workload,
        };
        let at = truncate_micros(at);
        let started = std::time::Instant::now();
        let result = self.transaction("removing a workload", |tx| {
            remove_workload(tx, cluster, &removal, at, targets)
        });
        self.observe(started, &result);
        result
    }

    /// Workloads (namespace, kind, name) with a recorded scan and not yet removed; the caller
    /// compares them with the cluster to find removed ones.
    pub fn known_workloads(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        self.backend.known_workloads(cluster)
    }

    /// The newest lifecycle events of a cluster, newest first.
    pub fn recent_events(&mut self, cluster: &str, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.backend.recent_events(cluster, limit)
    }

    /// Open findings per severity and namespace (most severe first, then by namespace), with
    /// the oldest `first_seen` among the announced ones: one aggregate query.
    pub fn open_findings(&mut self, cluster: &str) -> Result<Vec<OpenFindings>, StoreError> {
        let mut rows = self.backend.open_findings(cluster)?;
        rows.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.namespace.cmp(&b.namespace))
        });
        Ok(rows)
    }

    /// Open findings per severity, most severe first.
    pub fn open_counts_by_severity(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<SeverityCount>, StoreError> {
        Ok(SeverityCount::totals(&self.open_findings(cluster)?))
    }
}

/// The changed rows, then the events with their outbox rows.
fn write_changes(
    tx: &mut dyn Tx,
    cluster: &str,
    asset: &AssetId,
    changes: &lifecycle::Changes,
    targets: &[String],
) -> Result<(), StoreError> {
    if !changes.rows.is_empty() {
        tx.upsert_findings(cluster, asset, &changes.rows)?;
    }
    if !changes.events.is_empty() {
        // The agent's clock, not the database's: the batch window is measured with the same
        // clock by the notify thread (and `--once` runs under a test's shifted clock).
        tx.insert_events(&changes.events, targets, truncate_micros(Timestamp::now()))?;
    }
    Ok(())
}

/// The stored state of a container without its findings: enough for the stale check.
fn stored_asset(container: Option<StoredContainer>) -> StoredAsset {
    match container {
        None => StoredAsset::default(),
        Some(c) => StoredAsset {
            last_scan_at: Some(c.last_scan_at),
            image: c.image,
            revision: c.revision,
            ..StoredAsset::default()
        },
    }
}

/// lock → container → stale check → load → diff (→ siblings → diff, only when a finding would
/// be new) → upsert container → write changes → upsert report version; the caller commits.
/// Returns what was applied and whether the sibling keys were loaded.
fn apply_scan(
    tx: &mut dyn Tx,
    obs: &Observation,
    report: Option<&ReportVersion>,
    baseline: bool,
    targets: &[String],
) -> Result<(Applied, bool), StoreError> {
    let cluster = obs.cluster.as_str();
    let asset = &obs.asset;
    // Serialises writers of the same container: a stale leader racing the new one waits, then
    // sees its commit.
    tx.lock_asset(cluster, asset)?;
    let mut stored = stored_asset(tx.load_container(cluster, asset)?);
    let mut siblings_loaded = false;
    let applied = if lifecycle::is_stale(&stored, obs) {
        Applied {
            stale: true,
            ..Applied::default()
        }
    } else {
        stored.findings = tx.load_findings(cluster, asset)?;
        let mut changes = lifecycle::diff(&stored, obs, baseline);
        if changes.needs_siblings {
            // Only a scan with a would-be new finding pays for this query: a renamed container's
            // findings are held by its old name.
            stored.sibling_keys = Some(tx.sibling_keys(cluster, asset)?);
            siblings_loaded = true;
            changes = lifecycle::diff(&stored, obs, baseline);
        }
        tx.upsert_container(obs, report.map_or("", |r| r.uid.as_str()))?;
        write_changes(tx, cluster, asset, &changes, targets)?;
        Applied {
            stale: false,
            rows_written: changes.rows.len(),
            events: changes.events,
        }
    };
    if let Some(r) = report {
        tx.upsert_report(obs, r)?;
    }
    Ok((applied, siblings_loaded))
}

/// For each live container of the workload, in container order: lock → re-read → load →
/// close; then mark the containers removed and forget their report versions.
fn remove_workload(
    tx: &mut dyn Tx,
    cluster: &str,
    removal: &Removal<'_>,
    at: Timestamp,
    targets: &[String],
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    for (container, listed_scan) in tx.workload_containers(cluster, removal)? {
        let asset = AssetId {
            namespace: removal.namespace.to_owned(),
            workload_kind: removal.kind.to_owned(),
            workload: removal.name.to_owned(),
            container,
        };
        // Same lock as `apply_scan`, taken in container order; re-read after waiting for it.
        tx.lock_asset(cluster, &asset)?;
        let mut stored = stored_asset(tx.load_container(cluster, &asset)?);
        stored.last_scan_at = stored.last_scan_at.or(Some(listed_scan));
        stored.findings = tx.load_findings(cluster, &asset)?;
        let changes = lifecycle::workload_removed(cluster, &asset, &stored, at);
        write_changes(tx, cluster, &asset, &changes, targets)?;
        applied.rows_written += changes.rows.len();
        applied.events.extend(changes.events);
    }
    tx.mark_removed(cluster, removal, at)?;
    tx.forget_reports(cluster, removal)?;
    Ok(applied)
}

/// lock → re-read → close as `container_removed` → mark the container removed → forget its
/// report versions; the caller commits.
fn remove_container(
    tx: &mut dyn Tx,
    cluster: &str,
    asset: &AssetId,
    at: Timestamp,
    targets: &[String],
) -> Result<Applied, StoreError> {
    tx.lock_asset(cluster, asset)?;
    let mut stored = stored_asset(tx.load_container(cluster, asset)?);
    stored.findings = tx.load_findings(cluster, asset)?;
    let changes = lifecycle::container_removed(cluster, asset, &stored, at);
    write_changes(tx, cluster, asset, &changes, targets)?;
    tx.mark_container_removed(cluster, asset, at)?;
    tx.forget_container_reports(cluster, asset)?;
    Ok(Applied {
        stale: false,
        rows_written: changes.rows.len(),
        events: changes.events,
    })
}

/// The notification outbox (see [`outbox`]). Used by the notify thread on its own connection.
impl Store {
    /// Groups the queued, not yet grouped outbox rows of `cluster` into messages (or marks them
    /// filtered) as `planner` decides, in one transaction; rows the planner holds (an open
    /// batch window) stay queued. Rows are only ever grouped once.
    pub fn assign_messages(
        &mut self,
        cluster: &str,
        now: Timestamp,
        planner: &dyn Fn(Vec<QueuedRow>) -> Plan,
    ) -> Result<Assigned, StoreError> {
        let now = truncate_micros(now);
        self.transaction("grouping queued notifications", |tx| {
            let rows = tx.queued_rows(cluster)?;
            if rows.is_empty() {
                return Ok(Assigned::default());
            }
            let plan = planner(rows);
            for (target, id, events) in &plan.messages {
                tx.insert_message(cluster, target, id, now)?;
                tx.assign_rows(target, id, events)?;
            }
            if !plan.filtered.is_empty() {
                tx.mark_filtered(&plan.filtered)?;
            }
            let held: std::collections::BTreeSet<&str> = plan
                .held
                .iter()
                .flat_map(|(_, ids, _)| ids.iter().map(String::as_str))
                .collect();
            Ok(Assigned {
                messages: plan.messages.len(),
                filtered: plan.filtered.len(),
                held: held.len(),
                held_until: plan.held.iter().map(|(_, _, until)| *until).min(),
            })
        })
    }

    /// Claims up to `limit` pending messages of one target whose next attempt is due, oldest
    /// first, with their stored id and events. Claiming moves their next attempt to
    /// `now + CLAIM_LEASE`, so a second agent (or this one after a crash mid-send) does not send
    /// them at the same time; the outcome written by [`Store::update_message`] replaces the
    /// claim.
    pub fn due_messages(
        &mut self,
        cluster: &str,
        target: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let now = truncate_micros(now);
        let claim_until = now.checked_add(outbox::CLAIM_LEASE).unwrap_or(now);
        self.transaction("reading due notifications", |tx| {
            let heads = tx.due_heads(cluster, target, now, limit)?;
            for (id, _, _) in &heads {
                tx.claim(target, id, claim_until)?;
            }
            heads
                .into_iter()
                .map(|(message_id, created_at, attempts)| {
                    Ok(StoredMessage {
                        events: tx.message_events(target, &message_id)?,
                        message_id,
                        created_at,
                        attempts,
                    })
                })
                .collect()
        })
    }

    /// Records the outcome of one attempt for a message and its outbox rows.
    pub fn update_message(
        &mut self,
        target: &str,
        message_id: &str,
        update: &MessageUpdate,
    ) -> Result<(), StoreError> {
        let update = update.truncated();
        self.transaction("recording a delivery attempt", |tx| {
            tx.record_attempt(target, message_id, &update)
        })
    }

    /// Pending messages per target, for the outbox gauges.
    pub fn outbox_stats(&mut self, cluster: &str) -> Result<Vec<OutboxStats>, StoreError> {
        self.backend.outbox_stats(cluster)
    }

    /// The ungrouped queue of `cluster` per target, without its events (see [`QueuedWindows`]).
    pub fn queued_windows(&mut self, cluster: &str) -> Result<QueuedWindows, StoreError> {
        self.backend.queued_windows(cluster)
    }

    /// When the earliest pending message is due, so the notify thread sleeps exactly that long.
    pub fn next_due(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        self.backend.next_due(cluster)
    }
}

pub(crate) fn truncate_micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// For `--dry-run`: connects and reads which migrations are applied, changing nothing.
pub fn check_only(target: &DatabaseTarget) -> Result<SchemaStatus, StoreError> {
    match target {
        DatabaseTarget::Postgres(pg) => postgres::check_only(pg),
        DatabaseTarget::Sqlite(path) => sqlite::check_only(path),
    }
}

pub(crate) fn sqlite_parent_exists(path: &Path) -> bool {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.is_dir(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_status_reports_pending_versions() {
        let s = SchemaStatus {
            applied: vec![1],
            embedded: vec![1, 2],
        };
        assert_eq!(s.pending(), vec![2]);
        assert!(!s.is_current());
        let newer = SchemaStatus {
            applied: vec![1, 2, 3],
            embedded: vec![1, 2],
        };
        assert!(newer.pending().is_empty());
        assert!(!newer.is_current());
    }
}
