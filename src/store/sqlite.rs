//! The embedded SQLite backend: same tables, same lifecycle, one file.
//!
//! Writes take the database lock up front (`BEGIN IMMEDIATE`) so two processes never deadlock
//! upgrading a read lock, and wait `busy_timeout` for each other instead of failing. WAL keeps
//! the health thread's reads from blocking the writer; temp_store=MEMORY because a scratch image
//! has no /tmp.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};

use super::outbox::{Assigned, MessageUpdate, OutboxStats, Plan};
use super::{
    Applied, KnownReport, Removal, ReportVersion, SQLITE_MIGRATIONS, SchemaStatus, SeverityCount,
    StoreError, StoredMessage, sqlite_parent_exists, truncate_micros,
};
use crate::lifecycle::{
    self, AssetId, Changes, Event, EventKind, Finding, FindingKey, FindingState, Observation,
    StoredAsset, StoredFinding,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Six fractional digits always, so that text order is time order.
fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn sql_err(path: &Path, e: rusqlite::Error, context: &'static str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::ConstraintViolation
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                return StoreError::Conflict(e.to_string());
            }
            ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::ReadOnly => {
                return StoreError::Connect {
                    target: format!("sqlite:{}", path.display()),
                    detail: e.to_string(),
                };
            }
            _ => {}
        }
    }
    StoreError::Query {
        context,
        detail: e.to_string(),
    }
}

fn open_connection(path: &Path, timeout: Duration) -> Result<Connection, StoreError> {
    let connect_err = |detail: String| StoreError::Connect {
        target: format!("sqlite:{}", path.display()),
        detail,
    };
    if !sqlite_parent_exists(path) {
        return Err(connect_err(
            "its directory does not exist; mount a writable volume there".into(),
        ));
    }
    let conn = Connection::open(path).map_err(|e| connect_err(e.to_string()))?;
    conn.busy_timeout(timeout)
        .map_err(|e| connect_err(e.to_string()))?;
    // Switching a fresh file to WAL needs an exclusive lock the busy handler does not always
    // wait for, so two agents opening together retry here.
    let deadline = Instant::now() + timeout;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && is_busy(&e) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(connect_err(e.to_string())),
        }
    }
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA foreign_keys=ON;",
    )
    .map_err(|e| connect_err(e.to_string()))?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// For the readiness probe: an existing database only, never creating one.
pub(crate) fn open_existing(path: &Path, timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Connect {
        target: format!("sqlite:{}", path.display()),
        detail: e.to_string(),
    })?;
    conn.busy_timeout(timeout)
        .map_err(|e| StoreError::Connect {
            target: format!("sqlite:{}", path.display()),
            detail: e.to_string(),
        })?;
    Ok(conn)
}

fn schema_status_of(conn: &Connection) -> rusqlite::Result<SchemaStatus> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    let applied = if exists {
        let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?
    } else {
        Vec::new()
    };
    Ok(SchemaStatus {
        applied,
        embedded: SQLITE_MIGRATIONS.iter().map(|m| m.version).collect(),
    })
}

pub(crate) fn check_only(path: &Path) -> Result<SchemaStatus, StoreError> {
    if !path.exists() {
        if !sqlite_parent_exists(path) {
            return Err(StoreError::Connect {
                target: format!("sqlite:{}", path.display()),
                detail: "neither the file nor its directory exists".into(),
            });
        }
        return Ok(SchemaStatus {
            applied: Vec::new(),
            embedded: SQLITE_MIGRATIONS.iter().map(|m| m.version).collect(),
        });
    }
    let conn = open_existing(path, BUSY_TIMEOUT)?;
    schema_status_of(&conn).map_err(|e| sql_err(path, e, "reading the schema version"))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let q = |e| sql_err(path, e, "applying migrations");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(q)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'))",
    )
    .map_err(q)?;
    let applied = schema_status_of(&tx).map_err(q)?.applied;
    let embedded_max = SQLITE_MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(&newest) = applied.last()
        && newest > embedded_max
    {
        return Err(StoreError::SchemaTooNew {
            applied: newest,
            embedded: embedded_max,
        });
    }
    for m in SQLITE_MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        let failed = |e: rusqlite::Error| StoreError::Migration {
            version: m.version,
            name: m.name,
            detail: e.to_string(),
        };
        tx.execute_batch(m.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            params![m.version, m.name],
        )
        .map_err(failed)?;
        log::info!(version = m.version, name = m.name; "database migration applied");
    }
    tx.commit().map_err(q)
}

pub(crate) struct SqliteStore {
    path: PathBuf,
    conn: Connection,
}

impl SqliteStore {
    pub(crate) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = open_connection(path, BUSY_TIMEOUT)?;
        migrate(&mut conn, path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            conn,
        })
    }

    fn err(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| sql_err(&self.path, e, context)
    }

    pub(crate) fn ping(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(self.err("pinging"))
    }

    pub(crate) fn schema_status(&mut self) -> Result<SchemaStatus, StoreError> {
        schema_status_of(&self.conn).map_err(self.err("reading the schema version"))
    }

    pub(crate) fn is_empty_for_cluster(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM scanned_containers WHERE cluster_name = ?1)",
                [cluster],
                |r| r.get(0),
            )
            .map_err(self.err("checking for a baseline"))
    }

    pub(crate) fn baseline_pending(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM clusters WHERE cluster_name = ?1)",
                [cluster],
                |r| r.get(0),
            )
            .map_err(self.err("checking for a baseline"))
    }

    pub(crate) fn finish_baseline(
        &mut self,
        cluster: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO clusters (cluster_name, baseline_completed_at) VALUES (?1, ?2)
                 ON CONFLICT (cluster_name) DO NOTHING",
                [cluster, &ts(at)],
            )
            .map(|_| ())
            .map_err(self.err("finishing the baseline"))
    }

    pub(crate) fn report_versions(
        &mut self,
        cluster: &str,
    ) -> Result<HashMap<String, KnownReport>, StoreError> {
        let read = |conn: &Connection| -> rusqlite::Result<HashMap<String, KnownReport>> {
            let mut stmt = conn.prepare(
                "SELECT report_uid, resource_version, namespace, workload_kind, workload, container
                 FROM report_versions WHERE cluster_name = ?1",
            )?;
            let rows = stmt.query_map([cluster], |r| {
                Ok((
                    r.get(0)?,
                    KnownReport {
                        resource_version: r.get(1)?,
                        asset: AssetId {
                            namespace: r.get(2)?,
                            workload_kind: r.get(3)?,
                            workload: r.get(4)?,
                            container: r.get(5)?,
                        },
                    },
                ))
            })?;
            rows.collect()
        };
        read(&self.conn).map_err(self.err("reading report versions"))
    }

    pub(crate) fn report_version(
        &mut self,
        cluster: &str,
        uid: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT resource_version FROM report_versions WHERE cluster_name = ?1 AND report_uid = ?2",
                [cluster, uid],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("reading a report version"))
    }

    pub(crate) fn retain_report_versions(
        &mut self,
        cluster: &str,
        live: &[String],
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "pruning report versions");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS live_uids (uid TEXT PRIMARY KEY); DELETE FROM live_uids;")
            .map_err(q)?;
        {
            let mut ins = tx
                .prepare("INSERT OR IGNORE INTO live_uids (uid) VALUES (?1)")
                .map_err(q)?;
            for uid in live {
                ins.execute([uid]).map_err(q)?;
            }
        }
        let n = tx
            .execute(
                "DELETE FROM report_versions WHERE cluster_name = ?1
                   AND report_uid NOT IN (SELECT uid FROM live_uids)",
                [cluster],
            )
            .map_err(q)?;
        tx.execute_batch("DELETE FROM live_uids;").map_err(q)?;
        tx.commit().map_err(q)?;
        Ok(n)
    }

    pub(crate) fn load_asset(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<StoredAsset, StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "loading findings");
        let tx = self.conn.transaction().map_err(q)?;
        let last = last_scan(&tx, cluster, asset).map_err(q)?;
        load_findings(&tx, cluster, asset, last).map_err(q)
    }

    pub(crate) fn apply(
        &mut self,
        obs: &Observation,
        report: Option<&ReportVersion>,
        baseline: bool,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "applying a scan");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        let cluster = obs.cluster.as_str();
        let asset = &obs.asset;
        let last = last_scan(&tx, cluster, asset).map_err(q)?;
        let applied = if last.is_some_and(|l| obs.scanned_at <= l) {
            Applied {
                stale: true,
                ..Applied::default()
            }
        } else {
            let stored = load_findings(&tx, cluster, asset, last).map_err(q)?;
            let changes = lifecycle::diff(&stored, obs, baseline);
            tx.execute(
                "INSERT INTO scanned_containers
                     (cluster_name, namespace, workload_kind, workload, container, image, last_scan_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (cluster_name, namespace, workload_kind, workload, container)
                 DO UPDATE SET image = excluded.image, last_scan_at = excluded.last_scan_at,
                               removed_at = NULL",
                params![
                    cluster,
                    asset.namespace,
                    asset.workload_kind,
                    asset.workload,
                    asset.container,
                    obs.image,
                    ts(obs.scanned_at)
                ],
            )
            .map_err(q)?;
            write_changes(&tx, cluster, asset, &changes, targets).map_err(q)?;
            Applied {
                stale: false,
                rows_written: changes.rows.len(),
                events: changes.events,
            }
        };
        if let Some(r) = report {
            tx.execute(
                "INSERT INTO report_versions (cluster_name, report_uid, resource_version,
                     update_timestamp, namespace, workload_kind, workload, container)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (cluster_name, report_uid) DO UPDATE SET
                     resource_version = excluded.resource_version,
                     update_timestamp = excluded.update_timestamp,
                     namespace = excluded.namespace, workload_kind = excluded.workload_kind,
                     workload = excluded.workload, container = excluded.container,
                     recorded_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'",
                params![
                    cluster,
                    r.uid,
                    r.resource_version,
                    ts(obs.scanned_at),
                    asset.namespace,
                    asset.workload_kind,
                    asset.workload,
                    asset.container
                ],
            )
            .map_err(q)?;
        }
        tx.commit().map_err(q)?;
        Ok(applied)
    }

    pub(crate) fn remove_workload(
        &mut self,
        cluster: &str,
        removal: &Removal<'_>,
        at: Timestamp,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let Removal {
            namespace,
            kind,
            name,
            container,
        } = *removal;
        let at = truncate_micros(at);
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "removing a workload");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        let containers: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT container, last_scan_at FROM scanned_containers
                     WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
                       AND workload = ?4 AND removed_at IS NULL
                       AND (?5 IS NULL OR container = ?5) ORDER BY container",
                )
                .map_err(q)?;
            stmt.query_map(params![cluster, namespace, kind, name, container], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(q)?
        };
        let mut applied = Applied::default();
        for (container, last) in containers {
            let asset = AssetId {
                namespace: namespace.to_owned(),
                workload_kind: kind.to_owned(),
                workload: name.to_owned(),
                container,
            };
            let stored = load_findings(&tx, cluster, &asset, Some(parse_ts(&last))).map_err(q)?;
            let changes = lifecycle::workload_removed(cluster, &asset, &stored, at);
            write_changes(&tx, cluster, &asset, &changes, targets).map_err(q)?;
            applied.rows_written += changes.rows.len();
            applied.events.extend(changes.events);
        }
        tx.execute(
            "UPDATE scanned_containers SET removed_at = ?5
             WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
               AND workload = ?4 AND removed_at IS NULL AND (?6 IS NULL OR container = ?6)",
            params![cluster, namespace, kind, name, ts(at), container],
        )
        .map_err(q)?;
        tx.execute(
            "DELETE FROM report_versions WHERE cluster_name = ?1 AND namespace = ?2
               AND workload_kind = ?3 AND workload = ?4 AND (?5 IS NULL OR container = ?5)",
            params![cluster, namespace, kind, name, container],
        )
        .map_err(q)?;
        tx.commit().map_err(q)?;
        Ok(applied)
    }

    pub(crate) fn known_assets(&mut self, cluster: &str) -> Result<Vec<AssetId>, StoreError> {
        let q = self.err("listing containers");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT namespace, workload_kind, workload, container FROM scanned_containers
                 WHERE cluster_name = ?1 AND removed_at IS NULL ORDER BY 1, 2, 3, 4",
            )
            .map_err(&q)?;
        stmt.query_map([cluster], |r| {
            Ok(AssetId {
                namespace: r.get(0)?,
                workload_kind: r.get(1)?,
                workload: r.get(2)?,
                container: r.get(3)?,
            })
        })
        .map_err(&q)?
        .collect::<rusqlite::Result<_>>()
        .map_err(&q)
    }

    pub(crate) fn known_workloads(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let q = self.err("listing workloads");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT namespace, workload_kind, workload FROM scanned_containers
                 WHERE cluster_name = ?1 AND removed_at IS NULL ORDER BY 1, 2, 3",
            )
            .map_err(&q)?;
        stmt.query_map([cluster], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&q)
    }

    pub(crate) fn recent_events(
        &mut self,
        cluster: &str,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let q = self.err("reading events");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM lifecycle_events le
                 WHERE le.cluster_name = ?1 ORDER BY le.seq DESC LIMIT ?2"
            ))
            .map_err(&q)?;
        let rows = stmt
            .query_map(params![cluster, limit], event_of_row)
            .map_err(&q)?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(ev) = row.map_err(&q)? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    pub(crate) fn open_counts_by_severity(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<SeverityCount>, StoreError> {
        let q = self.err("counting open findings");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT severity, count(*) FROM vulnerability_history
                 WHERE cluster_name = ?1 AND state = 'open' GROUP BY severity",
            )
            .map_err(&q)?;
        stmt.query_map([cluster], |r| {
            Ok(SeverityCount {
                severity: r.get(0)?,
                open: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .map_err(&q)?
        .collect::<rusqlite::Result<_>>()
        .map_err(&q)
    }
}

fn last_scan(
    tx: &Transaction<'_>,
    cluster: &str,
    asset: &AssetId,
) -> rusqlite::Result<Option<Timestamp>> {
    tx.query_row(
        "SELECT last_scan_at FROM scanned_containers WHERE cluster_name = ?1 AND namespace = ?2
           AND workload_kind = ?3 AND workload = ?4 AND container = ?5",
        [
            cluster,
            &asset.namespace,
            &asset.workload_kind,
            &asset.workload,
            &asset.container,
        ],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map(|o| o.map(|s| parse_ts(&s)))
}

fn load_findings(
    tx: &Transaction<'_>,
    cluster: &str,
    asset: &AssetId,
    last_scan_at: Option<Timestamp>,
) -> rusqlite::Result<StoredAsset> {
    let mut stmt = tx.prepare(
        "SELECT cve_id, package, package_path, severity, installed_version, fixed_version, title,
                link, image, state, first_seen, last_seen, fixed_at, reintroduced_count
         FROM vulnerability_history
         WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3 AND workload = ?4
           AND container = ?5",
    )?;
    let rows = stmt.query_map(
        [
            cluster,
            &asset.namespace,
            &asset.workload_kind,
            &asset.workload,
            &asset.container,
        ],
        |r| {
            let state: String = r.get(9)?;
            let first: String = r.get(10)?;
            let last: String = r.get(11)?;
            let fixed: Option<String> = r.get(12)?;
            Ok(
                FindingState::parse(&state).map(|state| -> rusqlite::Result<StoredFinding> {
                    Ok(StoredFinding {
                        finding: Finding {
                            key: FindingKey {
                                vulnerability_id: r.get(0)?,
                                package: r.get(1)?,
                                package_path: r.get(2)?,
                            },
                            severity: r.get(3)?,
                            installed_version: r.get(4)?,
                            fixed_version: r.get(5)?,
                            title: r.get(6)?,
                            link: r.get(7)?,
                        },
                        image: r.get(8)?,
                        state,
                        first_seen: parse_ts(&first),
                        last_seen: parse_ts(&last),
                        fixed_at: fixed.as_deref().map(parse_ts),
                        reintroduced_count: r.get(13)?,
                    })
                }),
            )
        },
    )?;
    let mut findings = Vec::new();
    for row in rows {
        if let Some(f) = row? {
            findings.push(f?);
        }
    }
    Ok(StoredAsset {
        last_scan_at,
        findings,
    })
}

fn write_changes(
    tx: &Transaction<'_>,
    cluster: &str,
    asset: &AssetId,
    changes: &Changes,
    targets: &[String],
) -> rusqlite::Result<()> {
    if !changes.rows.is_empty() {
        let mut upsert = tx.prepare(
            "INSERT INTO vulnerability_history (cluster_name, namespace, workload_kind, workload,
                 container, cve_id, package, package_path, severity, installed_version,
                 fixed_version, title, link, image, state, first_seen, last_seen, fixed_at,
                 reintroduced_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19)
             ON CONFLICT (cluster_name, namespace, workload_kind, workload, container, cve_id,
                 package, package_path) DO UPDATE SET
                 severity = excluded.severity, installed_version = excluded.installed_version,
                 fixed_version = excluded.fixed_version, title = excluded.title,
                 link = excluded.link, image = excluded.image, state = excluded.state,
                 first_seen = excluded.first_seen, last_seen = excluded.last_seen,
                 fixed_at = excluded.fixed_at, reintroduced_count = excluded.reintroduced_count",
        )?;
        for r in &changes.rows {
            upsert.execute(params![
                cluster,
                asset.namespace,
                asset.workload_kind,
                asset.workload,
                asset.container,
                r.finding.key.vulnerability_id,
                r.finding.key.package,
                r.finding.key.package_path,
                r.finding.severity,
                r.finding.installed_version,
                r.finding.fixed_version,
                r.finding.title,
                r.finding.link,
                r.image,
                r.state.as_str(),
                ts(r.first_seen),
                ts(r.last_seen),
                r.fixed_at.map(ts),
                r.reintroduced_count,
            ])?;
        }
    }
    if changes.events.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare(
        "INSERT INTO lifecycle_events (event_id, kind, cluster_name, namespace, workload_kind,
             workload, container, image, cve_id, package, package_path, installed_version,
             fixed_version, severity, previous_severity, title, link, reintroduced_count,
             occurred_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19)",
    )?;
    let mut outbox =
        tx.prepare("INSERT INTO notification_outbox (event_id, target) VALUES (?1, ?2)")?;
    for e in &changes.events {
        insert.execute(params![
            e.event_id,
            e.kind.as_str(),
            e.cluster,
            e.asset.namespace,
            e.asset.workload_kind,
            e.asset.workload,
            e.asset.container,
            e.image,
            e.finding.key.vulnerability_id,
            e.finding.key.package,
            e.finding.key.package_path,
            e.finding.installed_version,
            e.finding.fixed_version,
            e.finding.severity,
            e.previous_severity,
            e.finding.title,
            e.finding.link,
            e.reintroduced_count,
            ts(e.occurred_at),
        ])?;
        for t in targets {
            outbox.execute([&e.event_id, t])?;
        }
    }
    Ok(())
}

/// The columns [`event_of_row`] reads, in order.
const EVENT_COLUMNS: &str = "le.event_id, le.kind, le.cluster_name, le.namespace, le.workload_kind,
    le.workload, le.container, le.image, le.cve_id, le.package, le.package_path,
    le.installed_version, le.fixed_version, le.severity, le.previous_severity, le.title, le.link,
    le.reintroduced_count, le.occurred_at";

/// A `lifecycle_events` row (selected with [`EVENT_COLUMNS`]); `None` for an unknown kind.
fn event_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Event>> {
    let kind: String = r.get(1)?;
    let Some(kind) = EventKind::parse(&kind) else {
        return Ok(None);
    };
    let occurred: String = r.get(18)?;
    Ok(Some(Event {
        event_id: r.get(0)?,
        kind,
        cluster: r.get(2)?,
        asset: AssetId {
            namespace: r.get(3)?,
            workload_kind: r.get(4)?,
            workload: r.get(5)?,
            container: r.get(6)?,
        },
        image: r.get(7)?,
        finding: Finding {
            key: FindingKey {
                vulnerability_id: r.get(8)?,
                package: r.get(9)?,
                package_path: r.get(10)?,
            },
            installed_version: r.get(11)?,
            fixed_version: r.get(12)?,
            severity: r.get(13)?,
            title: r.get(15)?,
            link: r.get(16)?,
        },
        previous_severity: r.get(14)?,
        reintroduced_count: r.get(17)?,
        occurred_at: parse_ts(&occurred),
    }))
}

impl SqliteStore {
    pub(crate) fn assign_messages(
        &mut self,
        cluster: &str,
        now: Timestamp,
        planner: &dyn Fn(Vec<(String, Event)>) -> Plan,
    ) -> Result<Assigned, StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "grouping queued notifications");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        let rows: Vec<(String, Event)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {EVENT_COLUMNS}, o.target FROM notification_outbox o
                     JOIN lifecycle_events le ON le.event_id = o.event_id
                     WHERE le.cluster_name = ?1 AND o.state = 'pending' AND o.message_id IS NULL
                     ORDER BY le.seq, o.target"
                ))
                .map_err(q)?;
            let mapped = stmt
                .query_map([cluster], |r| {
                    Ok((r.get::<_, String>(19)?, event_of_row(r)?))
                })
                .map_err(q)?;
            let mut out = Vec::new();
            for row in mapped {
                if let (target, Some(event)) = row.map_err(q)? {
                    out.push((target, event));
                }
            }
            out
        };
        if rows.is_empty() {
            return Ok(Assigned::default());
        }
        let plan = planner(rows);
        let now = ts(now);
        {
            let mut message = tx
                .prepare(
                    "INSERT INTO notification_messages
                         (message_id, target, cluster_name, created_at, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT DO NOTHING",
                )
                .map_err(q)?;
            let mut member = tx
                .prepare(
                    "UPDATE notification_outbox SET message_id = ?1
                     WHERE event_id = ?2 AND target = ?3",
                )
                .map_err(q)?;
            for (target, id, events) in &plan.messages {
                message
                    .execute(params![id, target, cluster, now])
                    .map_err(q)?;
                for e in events {
                    member.execute(params![id, e, target]).map_err(q)?;
                }
            }
            let mut filtered = tx
                .prepare(
                    "UPDATE notification_outbox SET state = 'filtered'
                     WHERE event_id = ?1 AND target = ?2",
                )
                .map_err(q)?;
            for (target, e) in &plan.filtered {
                filtered.execute(params![e, target]).map_err(q)?;
            }
        }
        tx.commit().map_err(q)?;
        Ok(Assigned {
            messages: plan.messages.len(),
            filtered: plan.filtered.len(),
        })
    }

    pub(crate) fn due_messages(
        &mut self,
        cluster: &str,
        target: &str,
        now: Timestamp,
        limit: u32,
        claim_until: Timestamp,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "reading due notifications");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        let heads: Vec<(String, String, u32)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT message_id, created_at, attempts FROM notification_messages
                     WHERE cluster_name = ?1 AND target = ?2 AND state = 'pending'
                       AND next_attempt_at <= ?3
                     ORDER BY created_at, message_id LIMIT ?4",
                )
                .map_err(q)?;
            stmt.query_map(params![cluster, target, ts(now), limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(q)?
            .collect::<rusqlite::Result<_>>()
            .map_err(q)?
        };
        let mut claim = tx
            .prepare(
                "UPDATE notification_messages SET next_attempt_at = ?3
                 WHERE message_id = ?1 AND target = ?2",
            )
            .map_err(q)?;
        for (id, _, _) in &heads {
            claim
                .execute(params![id, target, ts(claim_until)])
                .map_err(q)?;
        }
        drop(claim);
        let mut out = Vec::with_capacity(heads.len());
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM notification_outbox o
                 JOIN lifecycle_events le ON le.event_id = o.event_id
                 WHERE o.message_id = ?1 AND o.target = ?2 ORDER BY le.seq"
            ))
            .map_err(q)?;
        for (id, created, attempts) in heads {
            let events: Vec<Event> = stmt
                .query_map(params![id, target], event_of_row)
                .map_err(q)?
                .filter_map(|r| r.transpose())
                .collect::<rusqlite::Result<_>>()
                .map_err(q)?;
            out.push(StoredMessage {
                message_id: id,
                created_at: parse_ts(&created),
                attempts,
                events,
            });
        }
        drop(stmt);
        tx.commit().map_err(q)?;
        Ok(out)
    }

    pub(crate) fn update_message(
        &mut self,
        target: &str,
        message_id: &str,
        update: &MessageUpdate,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "recording a delivery attempt");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        let (state, next, error, delivered) = match update {
            MessageUpdate::Delivered { at } => ("delivered", ts(*at), None, Some(ts(*at))),
            MessageUpdate::Retry { at, error } => ("pending", ts(*at), Some(error.as_str()), None),
            MessageUpdate::Dead { at, reason } => ("dead", ts(*at), Some(reason.as_str()), None),
        };
        tx.execute(
            "UPDATE notification_messages SET state = ?3, attempts = attempts + 1,
                 next_attempt_at = ?4, last_error = coalesce(?5, last_error), delivered_at = ?6
             WHERE message_id = ?1 AND target = ?2 AND state = 'pending'",
            params![message_id, target, state, next, error, delivered],
        )
        .map_err(q)?;
        tx.execute(
            "UPDATE notification_outbox SET state = ?3, attempts = attempts + 1,
                 next_attempt_at = ?4, last_error = coalesce(?5, last_error), delivered_at = ?6
             WHERE message_id = ?1 AND target = ?2 AND state = 'pending'",
            params![message_id, target, state, next, error, delivered],
        )
        .map_err(q)?;
        tx.commit().map_err(q)
    }

    pub(crate) fn outbox_stats(&mut self, cluster: &str) -> Result<Vec<OutboxStats>, StoreError> {
        let q = self.err("counting queued notifications");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT target, count(*), min(created_at) FROM notification_messages
                 WHERE cluster_name = ?1 AND state = 'pending' GROUP BY target ORDER BY target",
            )
            .map_err(&q)?;
        stmt.query_map([cluster], |r| {
            let oldest: Option<String> = r.get(2)?;
            Ok(OutboxStats {
                target: r.get(0)?,
                pending: r.get::<_, i64>(1)?.max(0) as u64,
                oldest_created_at: oldest.as_deref().map(parse_ts),
            })
        })
        .map_err(&q)?
        .collect::<rusqlite::Result<_>>()
        .map_err(&q)
    }

    pub(crate) fn next_due(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        self.conn
            .query_row(
                "SELECT min(next_attempt_at) FROM notification_messages
                 WHERE cluster_name = ?1 AND state = 'pending'",
                [cluster],
                |r| r.get::<_, Option<String>>(0),
            )
            .map(|o| o.as_deref().map(parse_ts))
            .map_err(self.err("reading the next delivery time"))
    }
}
