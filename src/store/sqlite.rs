//! The embedded SQLite backend: same tables, same lifecycle, one file; its SQL and row mapping
//! behind [`Backend`] and [`Tx`].
//!
//! Writes take the database lock up front (`BEGIN IMMEDIATE`) so two processes never deadlock
//! upgrading a read lock, and wait `busy_timeout` for each other instead of failing. WAL keeps
//! the health thread's reads from blocking the writer; temp_store=MEMORY because a scratch image
//! has no /tmp.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};

use super::backend::{
    AFTER_EVENT_COLUMNS, Backend, EVENT_COLUMNS, MessageHead, StoredContainer, Tx, Work,
    severity_of,
};
use super::outbox::{MessageUpdate, OutboxStats, QueuedRow, QueuedWindows};
use super::{
    KnownReport, OpenFindings, Removal, ReportVersion, SQLITE_MIGRATIONS, SchemaStatus, StoreError,
    pending_migrations, sqlite_parent_exists, versions,
};
use crate::lifecycle::{
    AssetId, Covered, Event, EventKind, Finding, FindingKey, FindingState, Observation, StoredFinding,
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
        embedded: versions(SQLITE_MIGRATIONS),
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
            embedded: versions(SQLITE_MIGRATIONS),
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
    for m in pending_migrations(SQLITE_MIGRATIONS, &applied)? {
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

    /// One query on the connection, its error named by `context`.
    fn query<T>(
        &mut self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        f(&self.conn).map_err(|e| sql_err(&self.path, e, context))
    }
}

/// Collects a statement's mapped rows.
fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    stmt.query_map(params, f)?.collect()
}

impl Backend for SqliteStore {
    fn transaction(
        &mut self,
        context: &'static str,
        work: &mut Work<'_>,
    ) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(path, e, context))?;
        let mut tx = SqliteTx { tx, path, context };
        work(&mut tx)?;
        tx.tx.commit().map_err(|e| sql_err(path, e, context))
    }

    #[cfg(feature = "test-support")]
    fn ping(&mut self) -> Result<(), StoreError> {
        self.query("pinging", |c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        })
    }

    #[cfg(feature = "test-support")]
    fn schema_status(&mut self) -> Result<SchemaStatus, StoreError> {
        self.query("reading the schema version", schema_status_of)
    }

    #[cfg(feature = "test-support")]
    fn is_empty_for_cluster(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.query("checking for a baseline", |c| {
            c.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM scanned_containers WHERE cluster_name = ?1)",
                [cluster],
                |r| r.get(0),
            )
        })
    }

    fn baseline_pending(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.query("checking for a baseline", |c| {
            c.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM clusters WHERE cluster_name = ?1)",
                [cluster],
                |r| r.get(0),
            )
        })
    }

    fn finish_baseline(&mut self, cluster: &str, at: Timestamp) -> Result<(), StoreError> {
        self.query("finishing the baseline", |c| {
            c.execute(
                "INSERT INTO clusters (cluster_name, baseline_completed_at) VALUES (?1, ?2)
                 ON CONFLICT (cluster_name) DO NOTHING",
                [cluster, &ts(at)],
            )
            .map(|_| ())
        })
    }

    fn baseline_completed_at(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        self.query("checking for a baseline", |c| {
            c.query_row(
                "SELECT baseline_completed_at FROM clusters WHERE cluster_name = ?1",
                [cluster],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|t| t.as_deref().map(parse_ts))
        })
    }

    fn coverage(&mut self, cluster: &str) -> Result<Vec<Covered>, StoreError> {
        self.query("reading coverage", |c| {
            collect(
                &mut c.prepare(
                    "SELECT namespace, report_kind, covered_since FROM coverage
                     WHERE cluster_name = ?1 ORDER BY 1, 2",
                )?,
                [cluster],
                |r| {
                    Ok(Covered {
                        namespace: r.get(0)?,
                        kind: r.get(1)?,
                        since: parse_ts(&r.get::<_, String>(2)?),
                    })
                },
            )
        })
    }

    fn record_coverage(
        &mut self,
        cluster: &str,
        scopes: &[(String, String)],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let q = |e| sql_err(&path, e, "recording coverage");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q)?;
        {
            let mut ins = tx
                .prepare(
                    "INSERT INTO coverage (cluster_name, namespace, report_kind, covered_since)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )
                .map_err(q)?;
            let at = ts(at);
            for (namespace, kind) in scopes {
                ins.execute([cluster, namespace, kind, &at]).map_err(q)?;
            }
        }
        tx.commit().map_err(q)
    }

    fn report_versions(
        &mut self,
        cluster: &str,
    ) -> Result<HashMap<String, KnownReport>, StoreError> {
        self.query("reading report versions", |c| {
            let mut stmt = c.prepare(
                "SELECT rv.report_uid, rv.resource_version, rv.namespace, rv.workload_kind,
                        rv.workload, rv.container, coalesce(sc.report_uid = rv.report_uid, 0)
                 FROM report_versions rv
                 LEFT JOIN scanned_containers sc ON sc.cluster_name = rv.cluster_name
                   AND sc.namespace = rv.namespace AND sc.workload_kind = rv.workload_kind
                   AND sc.workload = rv.workload AND sc.container = rv.container
                 WHERE rv.cluster_name = ?1",
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
                        current: r.get(6)?,
                    },
                ))
            })?;
            rows.collect()
        })
    }

    #[cfg(feature = "test-support")]
    fn report_version(&mut self, cluster: &str, uid: &str) -> Result<Option<String>, StoreError> {
        self.query("reading a report version", |c| {
            c.query_row(
                "SELECT resource_version FROM report_versions WHERE cluster_name = ?1 AND report_uid = ?2",
                [cluster, uid],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn retain_report_versions(
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

    fn known_workloads(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        self.query("listing workloads", |c| {
            collect(
                &mut c.prepare(
                    "SELECT DISTINCT namespace, workload_kind, workload FROM scanned_containers
                     WHERE cluster_name = ?1 AND removed_at IS NULL ORDER BY 1, 2, 3",
                )?,
                [cluster],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }

    fn live_containers(
        &mut self,
        cluster: &str,
        keep: &mut dyn FnMut(&AssetId) -> bool,
    ) -> Result<Vec<AssetId>, StoreError> {
        self.query("listing containers", |c| {
            let mut stmt = c.prepare(
                "SELECT namespace, workload_kind, workload, container FROM scanned_containers
                 WHERE cluster_name = ?1 AND removed_at IS NULL ORDER BY 1, 2, 3, 4",
            )?;
            let mut rows = stmt.query([cluster])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let asset = AssetId {
                    namespace: r.get(0)?,
                    workload_kind: r.get(1)?,
                    workload: r.get(2)?,
                    container: r.get(3)?,
                };
                if keep(&asset) {
                    out.push(asset);
                }
            }
            Ok(out)
        })
    }

    fn recent_events(&mut self, cluster: &str, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.query("reading events", |c| {
            let rows = collect(
                &mut c.prepare(&format!(
                    "SELECT {EVENT_COLUMNS} FROM lifecycle_events le
                     WHERE le.cluster_name = ?1 ORDER BY le.seq DESC LIMIT ?2"
                ))?,
                params![cluster, limit],
                event_of_row,
            )?;
            Ok(rows.into_iter().flatten().collect())
        })
    }

    fn open_findings(&mut self, cluster: &str) -> Result<Vec<OpenFindings>, StoreError> {
        self.query("counting open findings", |c| {
            collect(
                &mut c.prepare(
                    "SELECT h.severity, h.namespace, count(*),
                            min(CASE WHEN h.announced THEN h.first_seen END)
                     FROM vulnerability_history h
                     WHERE h.cluster_name = ?1 AND h.state = 'open'
                     GROUP BY h.severity, h.namespace",
                )?,
                [cluster],
                |r| {
                    let oldest: Option<String> = r.get(3)?;
                    Ok(OpenFindings {
                        severity: severity_of(&r.get::<_, String>(0)?),
                        namespace: r.get(1)?,
                        open: r.get::<_, i64>(2)?.max(0) as u64,
                        oldest_announced: oldest.as_deref().map(parse_ts),
                    })
                },
            )
        })
    }

    fn queued_windows(&mut self, cluster: &str) -> Result<QueuedWindows, StoreError> {
        self.query("reading the queued notifications' windows", |c| {
            let targets = collect(
                &mut c.prepare(
                    "SELECT o.target,
                            CASE WHEN count(o.queued_at) < count(*) THEN NULL
                                 ELSE min(o.queued_at) END
                     FROM notification_outbox o
                     JOIN lifecycle_events le ON le.event_id = o.event_id
                     WHERE le.cluster_name = ?1 AND o.state = 'pending' AND o.message_id IS NULL
                     GROUP BY o.target ORDER BY o.target",
                )?,
                [cluster],
                |r| {
                    let oldest: Option<String> = r.get(1)?;
                    Ok((r.get(0)?, oldest.as_deref().map(parse_ts)))
                },
            )?;
            let events: i64 = c.query_row(
                "SELECT count(DISTINCT o.event_id) FROM notification_outbox o
                 JOIN lifecycle_events le ON le.event_id = o.event_id
                 WHERE le.cluster_name = ?1 AND o.state = 'pending' AND o.message_id IS NULL",
                [cluster],
                |r| r.get(0),
            )?;
            Ok(QueuedWindows {
                targets,
                events: events.max(0) as usize,
            })
        })
    }

    fn outbox_stats(&mut self, cluster: &str) -> Result<Vec<OutboxStats>, StoreError> {
        self.query("counting queued notifications", |c| {
            collect(
                &mut c.prepare(
                    "SELECT target, count(*), min(created_at) FROM notification_messages
                     WHERE cluster_name = ?1 AND state = 'pending' GROUP BY target ORDER BY target",
                )?,
                [cluster],
                |r| {
                    let oldest: Option<String> = r.get(2)?;
                    Ok(OutboxStats {
                        target: r.get(0)?,
                        pending: r.get::<_, i64>(1)?.max(0) as u64,
                        oldest_created_at: oldest.as_deref().map(parse_ts),
                    })
                },
            )
        })
    }

    fn next_due(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        self.query("reading the next delivery time", |c| {
            c.query_row(
                "SELECT min(next_attempt_at) FROM notification_messages
                 WHERE cluster_name = ?1 AND state = 'pending'",
                [cluster],
                |r| r.get::<_, Option<String>>(0),
            )
            .map(|o| o.as_deref().map(parse_ts))
        })
    }
}

/// One `BEGIN IMMEDIATE` transaction: it holds the database's write lock, so
/// [`Tx::lock_asset`] has nothing left to lock.
struct SqliteTx<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
    context: &'static str,
}

impl<'a> SqliteTx<'a> {
    /// Maps a driver error of this transaction's work.
    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + use<'a> {
        let (path, context) = (self.path, self.context);
        move |e| sql_err(path, e, context)
    }
}

impl Tx for SqliteTx<'_> {
    fn lock_asset(&mut self, _cluster: &str, _asset: &AssetId) -> Result<(), StoreError> {
        Ok(())
    }

    fn load_container(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<Option<StoredContainer>, StoreError> {
        self.tx
            .prepare(
                "SELECT last_scan_at, image, revision FROM scanned_containers WHERE cluster_name = ?1
                   AND namespace = ?2 AND workload_kind = ?3 AND workload = ?4 AND container = ?5",
            )
            .and_then(|mut s| {
                s.query_row(
                    [
                        cluster,
                        &asset.namespace,
                        &asset.workload_kind,
                        &asset.workload,
                        &asset.container,
                    ],
                    |r| {
                        Ok(StoredContainer {
                            last_scan_at: parse_ts(&r.get::<_, String>(0)?),
                            image: r.get(1)?,
                            revision: r
                                .get::<_, Option<i64>>(2)?
                                .and_then(|v| u64::try_from(v).ok()),
                        })
                    },
                )
                .optional()
            })
            .map_err(self.err())
    }

    fn load_findings(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<Vec<StoredFinding>, StoreError> {
        let q = self.err();
        let mut stmt = self
            .tx
            .prepare(
                "SELECT cve_id, package, package_path, severity, installed_version, fixed_version,
                        title, link, image, state, first_seen, last_seen, fixed_at,
                        reintroduced_count, peak_severity, announced
                 FROM vulnerability_history
                 WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
                   AND workload = ?4 AND container = ?5",
            )
            .map_err(&q)?;
        let rows = collect(
            &mut stmt,
            [
                cluster,
                &asset.namespace,
                &asset.workload_kind,
                &asset.workload,
                &asset.container,
            ],
            |r| {
                let state: String = r.get(9)?;
                let Some(state) = FindingState::parse(&state) else {
                    return Ok(None);
                };
                let first: String = r.get(10)?;
                let last: String = r.get(11)?;
                let fixed: Option<String> = r.get(12)?;
                Ok(Some(StoredFinding {
                    finding: Finding {
                        key: FindingKey {
                            vulnerability_id: r.get(0)?,
                            package: r.get(1)?,
                        },
                        package_path: r.get(2)?,
                        severity: severity_of(&r.get::<_, String>(3)?),
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
                    peak_severity: severity_of(&r.get::<_, String>(14)?),
                    announced: r.get(15)?,
                }))
            },
        )
        .map_err(&q)?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn sibling_keys(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<BTreeMap<FindingKey, Timestamp>, StoreError> {
        let q = self.err();
        let mut stmt = self
            .tx
            .prepare(
                "SELECT cve_id, package, min(first_seen) FROM vulnerability_history
                 WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
                   AND workload = ?4 AND container <> ?5
                   AND state IN ('open', 'container_removed')
                 GROUP BY cve_id, package",
            )
            .map_err(&q)?;
        let keys = collect(
            &mut stmt,
            [
                cluster,
                &asset.namespace,
                &asset.workload_kind,
                &asset.workload,
                &asset.container,
            ],
            |r| {
                let first_seen: String = r.get(2)?;
                let key = FindingKey {
                    vulnerability_id: r.get(0)?,
                    package: r.get(1)?,
                };
                Ok((key, parse_ts(&first_seen)))
            },
        )
        .map_err(&q)?;
        Ok(keys.into_iter().collect())
    }

    fn upsert_container(&mut self, obs: &Observation, report_uid: &str) -> Result<(), StoreError> {
        let asset = &obs.asset;
        self.tx
            .execute(
                "INSERT INTO scanned_containers (cluster_name, namespace, workload_kind, workload,
                     container, image, last_scan_at, revision, report_uid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (cluster_name, namespace, workload_kind, workload, container)
                 DO UPDATE SET image = excluded.image, last_scan_at = excluded.last_scan_at,
                               revision = excluded.revision, report_uid = excluded.report_uid,
                               removed_at = NULL",
                params![
                    obs.cluster,
                    asset.namespace,
                    asset.workload_kind,
                    asset.workload,
                    asset.container,
                    obs.image,
                    ts(obs.scanned_at),
                    obs.revision.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
                    report_uid,
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn upsert_findings(
        &mut self,
        cluster: &str,
        asset: &AssetId,
        rows: &[StoredFinding],
    ) -> Result<(), StoreError> {
        let q = self.err();
        let mut upsert = self
            .tx
            .prepare(
                "INSERT INTO vulnerability_history (cluster_name, namespace, workload_kind,
                         workload, container, cve_id, package, package_path, severity,
                         installed_version, fixed_version, title, link, image, state, first_seen,
                         last_seen, fixed_at, reintroduced_count, peak_severity, announced)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17, ?18, ?19, ?20, ?21)
                     ON CONFLICT (cluster_name, namespace, workload_kind, workload, container,
                         cve_id, package) DO UPDATE SET
                         package_path = excluded.package_path, severity = excluded.severity,
                         installed_version = excluded.installed_version,
                         fixed_version = excluded.fixed_version, title = excluded.title,
                         link = excluded.link, image = excluded.image, state = excluded.state,
                         first_seen = excluded.first_seen, last_seen = excluded.last_seen,
                         fixed_at = excluded.fixed_at,
                         reintroduced_count = excluded.reintroduced_count,
                         peak_severity = excluded.peak_severity,
                         announced = excluded.announced",
            )
            .map_err(&q)?;
        for r in rows {
            upsert
                .execute(params![
                    cluster,
                    asset.namespace,
                    asset.workload_kind,
                    asset.workload,
                    asset.container,
                    r.finding.key.vulnerability_id,
                    r.finding.key.package,
                    r.finding.package_path,
                    r.finding.severity.as_str(),
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
                    r.peak_severity.as_str(),
                    r.announced,
                ])
                .map_err(&q)?;
        }
        Ok(())
    }

    fn insert_events(
        &mut self,
        events: &[Event],
        targets: &[String],
        queued_at: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.err();
        let mut insert = self
            .tx
            .prepare(
                "INSERT INTO lifecycle_events (event_id, kind, cluster_name, namespace,
                     workload_kind, workload, container, image, cve_id, package, package_path,
                     installed_version, fixed_version, severity, previous_severity, title, link,
                     reintroduced_count, occurred_at, peak_severity)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20)",
            )
            .map_err(&q)?;
        let mut outbox = self
            .tx
            .prepare(
                "INSERT INTO notification_outbox (event_id, target, queued_at) VALUES (?1, ?2, ?3)",
            )
            .map_err(&q)?;
        for e in events {
            insert
                .execute(params![
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
                    e.finding.package_path,
                    e.finding.installed_version,
                    e.finding.fixed_version,
                    e.finding.severity.as_str(),
                    e.previous_severity.map(|s| s.as_str()),
                    e.finding.title,
                    e.finding.link,
                    e.reintroduced_count,
                    ts(e.occurred_at),
                    e.peak_severity.as_str(),
                ])
                .map_err(&q)?;
            for t in targets {
                outbox
                    .execute(params![e.event_id, t, ts(queued_at)])
                    .map_err(&q)?;
            }
        }
        Ok(())
    }

    fn upsert_report(
        &mut self,
        obs: &Observation,
        report: &ReportVersion,
    ) -> Result<(), StoreError> {
        let asset = &obs.asset;
        self.tx
            .execute(
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
                    obs.cluster,
                    report.uid,
                    report.resource_version,
                    ts(obs.scanned_at),
                    asset.namespace,
                    asset.workload_kind,
                    asset.workload,
                    asset.container
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn workload_containers(
        &mut self,
        cluster: &str,
        w: &Removal<'_>,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let q = self.err();
        let mut stmt = self
            .tx
            .prepare(
                "SELECT container, last_scan_at FROM scanned_containers
                 WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
                   AND workload = ?4 AND removed_at IS NULL ORDER BY container",
            )
            .map_err(&q)?;
        collect(
            &mut stmt,
            params![cluster, w.namespace, w.kind, w.name],
            |r| Ok((r.get(0)?, parse_ts(&r.get::<_, String>(1)?))),
        )
        .map_err(&q)
    }

    fn mark_removed(
        &mut self,
        cluster: &str,
        w: &Removal<'_>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE scanned_containers SET removed_at = coalesce(removed_at, ?5),
                     revision = NULL
                 WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
                   AND workload = ?4",
                params![cluster, w.namespace, w.kind, w.name, ts(at)],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn forget_reports(&mut self, cluster: &str, w: &Removal<'_>) -> Result<(), StoreError> {
        self.tx
            .execute(
                "DELETE FROM report_versions WHERE cluster_name = ?1 AND namespace = ?2
                   AND workload_kind = ?3 AND workload = ?4",
                params![cluster, w.namespace, w.kind, w.name],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn mark_container_removed(
        &mut self,
        cluster: &str,
        a: &AssetId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE scanned_containers SET removed_at = ?6
                 WHERE cluster_name = ?1 AND namespace = ?2 AND workload_kind = ?3
                   AND workload = ?4 AND container = ?5 AND removed_at IS NULL",
                params![
                    cluster,
                    a.namespace,
                    a.workload_kind,
                    a.workload,
                    a.container,
                    ts(at)
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn forget_container_reports(&mut self, cluster: &str, a: &AssetId) -> Result<(), StoreError> {
        self.tx
            .execute(
                "DELETE FROM report_versions WHERE cluster_name = ?1 AND namespace = ?2
                   AND workload_kind = ?3 AND workload = ?4 AND container = ?5",
                params![cluster, a.namespace, a.workload_kind, a.workload, a.container],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn queued_rows(&mut self, cluster: &str) -> Result<Vec<QueuedRow>, StoreError> {
        let q = self.err();
        let mut stmt = self
            .tx
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS}, o.target, o.queued_at FROM notification_outbox o
                 JOIN lifecycle_events le ON le.event_id = o.event_id
                 WHERE le.cluster_name = ?1 AND o.state = 'pending' AND o.message_id IS NULL
                 ORDER BY le.seq, o.target"
            ))
            .map_err(&q)?;
        let rows = collect(&mut stmt, [cluster], |r| {
            let target: String = r.get(AFTER_EVENT_COLUMNS)?;
            let queued_at: Option<String> = r.get(AFTER_EVENT_COLUMNS + 1)?;
            Ok(event_of_row(r)?.map(|event| QueuedRow {
                target,
                queued_at: queued_at.as_deref().map(parse_ts),
                event,
            }))
        })
        .map_err(&q)?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn insert_message(
        &mut self,
        cluster: &str,
        target: &str,
        message_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare(
                "INSERT INTO notification_messages
                     (message_id, target, cluster_name, created_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![message_id, target, cluster, ts(now)]))
            .map(|_| ())
            .map_err(self.err())
    }

    fn assign_rows(
        &mut self,
        target: &str,
        message_id: &str,
        event_ids: &[String],
    ) -> Result<(), StoreError> {
        let q = self.err();
        let mut member = self
            .tx
            .prepare(
                "UPDATE notification_outbox SET message_id = ?1
                 WHERE event_id = ?2 AND target = ?3",
            )
            .map_err(&q)?;
        for e in event_ids {
            member.execute(params![message_id, e, target]).map_err(&q)?;
        }
        Ok(())
    }

    fn mark_filtered(&mut self, rows: &[(String, String)]) -> Result<(), StoreError> {
        let q = self.err();
        let mut filtered = self
            .tx
            .prepare(
                "UPDATE notification_outbox SET state = 'filtered'
                 WHERE event_id = ?1 AND target = ?2",
            )
            .map_err(&q)?;
        for (target, e) in rows {
            filtered.execute(params![e, target]).map_err(&q)?;
        }
        Ok(())
    }

    fn due_heads(
        &mut self,
        cluster: &str,
        target: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<MessageHead>, StoreError> {
        let q = self.err();
        let mut stmt = self
            .tx
            .prepare(
                "SELECT message_id, created_at, attempts FROM notification_messages
                 WHERE cluster_name = ?1 AND target = ?2 AND state = 'pending'
                   AND next_attempt_at <= ?3
                 ORDER BY created_at, message_id LIMIT ?4",
            )
            .map_err(&q)?;
        collect(&mut stmt, params![cluster, target, ts(now), limit], |r| {
            Ok((r.get(0)?, parse_ts(&r.get::<_, String>(1)?), r.get(2)?))
        })
        .map_err(&q)
    }

    fn claim(
        &mut self,
        target: &str,
        message_id: &str,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare(
                "UPDATE notification_messages SET next_attempt_at = ?3
                 WHERE message_id = ?1 AND target = ?2",
            )
            .and_then(|mut s| s.execute(params![message_id, target, ts(until)]))
            .map(|_| ())
            .map_err(self.err())
    }

    fn message_events(&mut self, target: &str, message_id: &str) -> Result<Vec<Event>, StoreError> {
        let q = self.err();
        let mut stmt = self
            .tx
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM notification_outbox o
                 JOIN lifecycle_events le ON le.event_id = o.event_id
                 WHERE o.message_id = ?1 AND o.target = ?2 ORDER BY le.seq"
            ))
            .map_err(&q)?;
        let rows = collect(&mut stmt, params![message_id, target], event_of_row).map_err(&q)?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn record_attempt(
        &mut self,
        target: &str,
        message_id: &str,
        update: &MessageUpdate,
    ) -> Result<(), StoreError> {
        let q = self.err();
        let (state, next, error, delivered) = update.columns();
        let (next, delivered) = (ts(next), delivered.map(ts));
        for table in ["notification_messages", "notification_outbox"] {
            self.tx
                .execute(
                    &format!(
                        "UPDATE {table} SET state = ?3, attempts = attempts + 1,
                             next_attempt_at = ?4, last_error = coalesce(?5, last_error),
                             delivered_at = ?6
                         WHERE message_id = ?1 AND target = ?2 AND state = 'pending'"
                    ),
                    params![message_id, target, state, next, error, delivered],
                )
                .map_err(&q)?;
        }
        Ok(())
    }
}

/// A `lifecycle_events` row (selected with [`EVENT_COLUMNS`]); `None` for an unknown kind.
fn event_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Event>> {
    let kind: String = r.get(1)?;
    let Some(kind) = EventKind::parse(&kind) else {
        return Ok(None);
    };
    let occurred: String = r.get(18)?;
    let previous: Option<String> = r.get(14)?;
    let severity = severity_of(&r.get::<_, String>(13)?);
    // NULL for events recorded before schema 0003: their severity was all that was told.
    let peak: Option<String> = r.get(19)?;
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
            },
            package_path: r.get(10)?,
            installed_version: r.get(11)?,
            fixed_version: r.get(12)?,
            severity,
            title: r.get(15)?,
            link: r.get(16)?,
        },
        previous_severity: previous.as_deref().map(severity_of),
        peak_severity: peak.as_deref().map_or(severity, severity_of),
        reintroduced_count: r.get(17)?,
        occurred_at: parse_ts(&occurred),
    }))
}
