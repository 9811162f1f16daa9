//! The PostgreSQL backend: its SQL and row mapping behind [`Backend`] and [`Tx`].
//!
//! A `postgres::Client` never recovers from a broken connection, so this type owns an optional
//! client, drops it on a connection loss and reconnects on the next call, waiting longer after
//! each failed attempt. Large reports are written with one `UNNEST` statement per table instead
//! of one statement per finding.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use ::postgres::error::SqlState;
use ::postgres::{Client, GenericClient, NoTls, Statement, Transaction};
use jiff::Timestamp;

use super::backend::{
    AFTER_EVENT_COLUMNS, Backend, EVENT_COLUMNS, MessageHead, StoredContainer, Tx, Work,
    severity_of,
};
use super::error::redact;
use super::outbox::{MessageUpdate, OutboxStats, QueuedRow, QueuedWindows};
use super::{
    KnownReport, OpenFindings, POSTGRES_MIGRATIONS, PgTarget, Removal, ReportVersion, SchemaStatus,
    StoreError, pending_migrations, tls, versions,
};
use crate::lifecycle::{
    AssetId, Covered, Event, EventKind, Finding, FindingKey, FindingState, Observation, StoredFinding,
};

/// Serialises migrations of agents starting together ("kijo" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6b69_6a6f_0000_0001;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub(crate) fn connect(target: &PgTarget) -> Result<Client, StoreError> {
    let connect_error = |detail: String| StoreError::Connect {
        target: target.masked.clone(),
        detail: redact(&detail, &target.secrets),
    };
    let result = match tls::connector(target)? {
        None => target.config.connect(NoTls),
        Some(tls) => target.config.connect(tls),
    };
    result.map_err(|e| {
        let mut detail = error_text(&e);
        if detail.contains("invalid peer certificate") {
            detail.push_str(
                "; the server certificate is not trusted for this host: name its CA with \
                 sslrootcert=/path/ca.pem, or use sslmode=verify-ca if only the host name differs",
            );
        }
        connect_error(detail)
    })
}

/// The driver's message including its cause chain (`db error: ERROR: …`).
fn error_text(e: &::postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn pg_err(e: ::postgres::Error, context: &'static str, secrets: &[String]) -> StoreError {
    let detail = redact(&error_text(&e), secrets);
    if e.is_closed() {
        return StoreError::ConnectionLost(detail);
    }
    if let Some(code) = e.code() {
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(detail);
        }
        // Class 08 is "connection exception"; 57P01-57P03 are the server shutting the session.
        let c = code.code();
        if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03") {
            return StoreError::ConnectionLost(detail);
        }
    } else if std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::ConnectionLost(detail);
    }
    StoreError::Query { context, detail }
}

fn to_sys(t: Timestamp) -> SystemTime {
    let micros = t.as_microsecond();
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    }
}

fn from_sys(t: SystemTime) -> Timestamp {
    let micros = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn migrate(client: &mut Client, secrets: &[String]) -> Result<(), StoreError> {
    let q = |e| pg_err(e, "applying migrations", secrets);
    let mut tx = client.transaction().map_err(q)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(q)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .map_err(q)?;
    let applied = applied_versions(&mut tx).map_err(q)?;
    for m in pending_migrations(POSTGRES_MIGRATIONS, &applied)? {
        let failed = |e| StoreError::Migration {
            version: m.version,
            name: m.name,
            detail: redact(&error_text(&e), secrets),
        };
        tx.batch_execute(m.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .map_err(failed)?;
        log::info!(version = m.version, name = m.name; "database migration applied");
    }
    tx.commit().map_err(q)
}

fn applied_versions(c: &mut impl GenericClient) -> Result<Vec<i64>, ::postgres::Error> {
    Ok(c.query(
        "SELECT version FROM schema_migrations ORDER BY version",
        &[],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

fn schema_status_of(c: &mut impl GenericClient) -> Result<SchemaStatus, ::postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0);
    let applied = if exists {
        applied_versions(c)?
    } else {
        Vec::new()
    };
    Ok(SchemaStatus {
        applied,
        embedded: versions(POSTGRES_MIGRATIONS),
    })
}

pub(crate) fn check_only(target: &PgTarget) -> Result<SchemaStatus, StoreError> {
    let mut client = connect(target)?;
    schema_status_of(&mut client)
        .map_err(|e| pg_err(e, "reading the schema version", &target.secrets))
}

/// Statements prepared once per connection: a scan's transaction is then one round trip per
/// statement instead of two.
pub(crate) struct Statements {
    lock_asset: Statement,
    load_container: Statement,
    load_findings: Statement,
    sibling_keys: Statement,
    upsert_rows: Statement,
    insert_events: Statement,
    insert_outbox: Statement,
    upsert_container: Statement,
    upsert_report: Statement,
    #[cfg(feature = "test-support")]
    report_version: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Statements, ::postgres::Error> {
        Ok(Statements {
            lock_asset: c.prepare("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")?,
            load_container: c.prepare("SELECT last_scan_at, image, revision FROM scanned_containers
         WHERE cluster_name = $1 AND namespace = $2 AND workload_kind = $3 AND workload = $4
           AND container = $5")?,
            load_findings: c.prepare("SELECT cve_id, package, package_path, severity, installed_version, fixed_version, title,
                link, image, state, first_seen, last_seen, fixed_at, reintroduced_count,
                peak_severity, announced
         FROM vulnerability_history
         WHERE cluster_name = $1 AND namespace = $2 AND workload_kind = $3 AND workload = $4
           AND container = $5")?,
            sibling_keys: c.prepare("SELECT cve_id, package, min(first_seen) FROM vulnerability_history
         WHERE cluster_name = $1 AND namespace = $2 AND workload_kind = $3 AND workload = $4
           AND container <> $5 AND state IN ('open', 'container_removed')
         GROUP BY cve_id, package")?,
            upsert_rows: c.prepare("INSERT INTO vulnerability_history AS h (cluster_name, namespace, workload_kind, workload,
                 container, cve_id, package, package_path, severity, installed_version,
                 fixed_version, title, link, image, state, first_seen, last_seen, fixed_at,
                 reintroduced_count, peak_severity, announced)
             SELECT $1, $2, $3, $4, $5, u.* FROM UNNEST($6::text[], $7::text[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                 $15::text[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
                 $19::int4[], $20::text[], $21::bool[]) AS u
             ON CONFLICT ON CONSTRAINT vulnerability_history_finding DO UPDATE SET
                 package_path = EXCLUDED.package_path,
                 severity = EXCLUDED.severity, installed_version = EXCLUDED.installed_version,
                 fixed_version = EXCLUDED.fixed_version, title = EXCLUDED.title,
                 link = EXCLUDED.link, image = EXCLUDED.image, state = EXCLUDED.state,
                 first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
                 fixed_at = EXCLUDED.fixed_at, reintroduced_count = EXCLUDED.reintroduced_count,
                 peak_severity = EXCLUDED.peak_severity, announced = EXCLUDED.announced")?,
            insert_events: c.prepare("INSERT INTO lifecycle_events (event_id, kind, cluster_name, namespace, workload_kind,
             workload, container, image, cve_id, package, package_path, installed_version,
             fixed_version, severity, previous_severity, title, link, reintroduced_count,
             occurred_at, peak_severity)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
             $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
             $18::int4[], $19::timestamptz[], $20::text[])")?,
            insert_outbox: c.prepare("INSERT INTO notification_outbox (event_id, target, queued_at)
             SELECT e, t, $3::timestamptz FROM UNNEST($1::text[]) AS e CROSS JOIN UNNEST($2::text[]) AS t")?,
            upsert_container: c.prepare("INSERT INTO scanned_containers
                         (cluster_name, namespace, workload_kind, workload, container, image,
                          last_scan_at, revision, report_uid)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (cluster_name, namespace, workload_kind, workload, container)
                     DO UPDATE SET image = EXCLUDED.image, last_scan_at = EXCLUDED.last_scan_at,
                                   revision = EXCLUDED.revision, report_uid = EXCLUDED.report_uid,
                                   removed_at = NULL")?,
            upsert_report: c.prepare("INSERT INTO report_versions (cluster_name, report_uid, resource_version,
                         update_timestamp, namespace, workload_kind, workload, container)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (cluster_name, report_uid) DO UPDATE SET
                         resource_version = EXCLUDED.resource_version,
                         update_timestamp = EXCLUDED.update_timestamp,
                         namespace = EXCLUDED.namespace, workload_kind = EXCLUDED.workload_kind,
                         workload = EXCLUDED.workload, container = EXCLUDED.container,
                         recorded_at = now()")?,
            #[cfg(feature = "test-support")]
            report_version: c.prepare("SELECT resource_version FROM report_versions WHERE cluster_name = $1 AND report_uid = $2")?,
        })
    }
}

pub(crate) struct PgStore {
    target: PgTarget,
    /// The connection and its prepared statements; `None` after a connection loss.
    client: Option<(Client, Statements)>,
    retry_at: Option<Instant>,
    delay: Duration,
}

impl PgStore {
    pub(crate) fn open(target: &PgTarget) -> Result<PgStore, StoreError> {
        let mut client = connect(target)?;
        migrate(&mut client, &target.secrets)?;
        let st = Statements::prepare(&mut client)
            .map_err(|e| pg_err(e, "preparing statements", &target.secrets))?;
        Ok(PgStore {
            target: target.clone(),
            client: Some((client, st)),
            retry_at: None,
            delay: Duration::from_secs(1),
        })
    }

    fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        let now = Instant::now();
        if let Some(at) = self.retry_at
            && now < at
        {
            return Err(StoreError::Backoff {
                target: self.target.masked.clone(),
                retry_in: at - now,
            });
        }
        let connected = connect(&self.target).and_then(|mut c| {
            let st = Statements::prepare(&mut c)
                .map_err(|e| pg_err(e, "preparing statements", &self.target.secrets))?;
            Ok((c, st))
        });
        match connected {
            Ok(c) => {
                log::info!(database = self.target.masked.as_str(); "database connection reopened");
                self.client = Some(c);
                self.retry_at = None;
                self.delay = Duration::from_secs(1);
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(now + self.delay);
                self.delay = (self.delay * 2).min(MAX_BACKOFF);
                Err(e)
            }
        }
    }

    /// Runs `f` on a live connection. On a connection loss the client is dropped; with
    /// `retry_once` the whole closure runs again on a fresh connection, so pass only work that is
    /// one transaction and idempotent.
    fn run<T>(
        &mut self,
        retry_once: bool,
        mut f: impl FnMut(&mut Client, &Statements, &[String]) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            self.ensure_connected()?;
            let (client, st) = self.client.as_mut().expect("connected above");
            match f(client, st, &self.target.secrets) {
                Err(e) if e.is_connection_loss() || client.is_closed() => {
                    self.client = None;
                    log::warn!(error:% = e; "database connection lost");
                    attempt += 1;
                    if !(retry_once && attempt == 1) {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// One query on a live connection (retried once after a connection loss), its driver error
    /// named by `context`.
    fn query<T>(
        &mut self,
        context: &'static str,
        mut f: impl FnMut(&mut Client, &Statements) -> Result<T, ::postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run(true, |c, st, s| f(c, st).map_err(|e| pg_err(e, context, s)))
    }
}

impl Backend for PgStore {
    fn transaction(
        &mut self,
        context: &'static str,
        work: &mut Work<'_>,
    ) -> Result<(), StoreError> {
        self.run(true, |c, st, secrets| {
            let tx = c.transaction().map_err(|e| pg_err(e, context, secrets))?;
            let mut tx = PgTx {
                tx,
                st,
                secrets,
                context,
            };
            work(&mut tx)?;
            tx.tx.commit().map_err(|e| pg_err(e, context, secrets))
        })
    }

    #[cfg(feature = "test-support")]
    fn ping(&mut self) -> Result<(), StoreError> {
        self.run(false, |c, _, s| {
            c.simple_query("SELECT 1")
                .map(|_| ())
                .map_err(|e| pg_err(e, "pinging", s))
        })
    }

    #[cfg(feature = "test-support")]
    fn schema_status(&mut self) -> Result<SchemaStatus, StoreError> {
        self.query("reading the schema version", |c, _| schema_status_of(c))
    }

    #[cfg(feature = "test-support")]
    fn is_empty_for_cluster(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.query("checking for a baseline", |c, _| {
            c.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM scanned_containers WHERE cluster_name = $1)",
                &[&cluster],
            )
            .map(|r| r.get(0))
        })
    }

    fn baseline_pending(&mut self, cluster: &str) -> Result<bool, StoreError> {
        self.query("checking for a baseline", |c, _| {
            c.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM clusters WHERE cluster_name = $1)",
                &[&cluster],
            )
            .map(|r| r.get(0))
        })
    }

    fn finish_baseline(&mut self, cluster: &str, at: Timestamp) -> Result<(), StoreError> {
        self.query("finishing the baseline", |c, _| {
            c.execute(
                "INSERT INTO clusters (cluster_name, baseline_completed_at) VALUES ($1, $2)
                 ON CONFLICT (cluster_name) DO NOTHING",
                &[&cluster, &to_sys(at)],
            )
            .map(|_| ())
        })
    }

    fn baseline_completed_at(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        self.query("checking for a baseline", |c, _| {
            c.query_opt(
                "SELECT baseline_completed_at FROM clusters WHERE cluster_name = $1",
                &[&cluster],
            )
            .map(|r| r.map(|r| from_sys(r.get(0))))
        })
    }

    fn coverage(&mut self, cluster: &str) -> Result<Vec<Covered>, StoreError> {
        self.query("reading coverage", |c, _| {
            c.query(
                "SELECT namespace, report_kind, covered_since FROM coverage
                 WHERE cluster_name = $1 ORDER BY 1, 2",
                &[&cluster],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| Covered {
                        namespace: r.get(0),
                        kind: r.get(1),
                        since: from_sys(r.get(2)),
                    })
                    .collect()
            })
        })
    }

    fn record_coverage(
        &mut self,
        cluster: &str,
        scopes: &[(String, String)],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let namespaces: Vec<&str> = scopes.iter().map(|(n, _)| n.as_str()).collect();
        let kinds: Vec<&str> = scopes.iter().map(|(_, k)| k.as_str()).collect();
        let at = to_sys(at);
        self.query("recording coverage", |c, _| {
            c.execute(
                "INSERT INTO coverage (cluster_name, namespace, report_kind, covered_since)
                 SELECT $1, s.namespace, s.kind, $4
                 FROM unnest($2::text[], $3::text[]) AS s(namespace, kind)
                 ON CONFLICT DO NOTHING",
                &[&cluster, &namespaces, &kinds, &at],
            )
            .map(|_| ())
        })
    }

    fn report_versions(
        &mut self,
        cluster: &str,
    ) -> Result<HashMap<String, KnownReport>, StoreError> {
        self.query("reading report versions", |c, _| {
            c.query(
                "SELECT rv.report_uid, rv.resource_version, rv.namespace, rv.workload_kind,
                        rv.workload, rv.container, coalesce(sc.report_uid = rv.report_uid, false)
                 FROM report_versions rv
                 LEFT JOIN scanned_containers sc ON sc.cluster_name = rv.cluster_name
                   AND sc.namespace = rv.namespace AND sc.workload_kind = rv.workload_kind
                   AND sc.workload = rv.workload AND sc.container = rv.container
                 WHERE rv.cluster_name = $1",
                &[&cluster],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r.get(0),
                            KnownReport {
                                resource_version: r.get(1),
                                asset: AssetId {
                                    namespace: r.get(2),
                                    workload_kind: r.get(3),
                                    workload: r.get(4),
                                    container: r.get(5),
                                },
                                current: r.get(6),
                            },
                        )
                    })
                    .collect()
            })
        })
    }

    #[cfg(feature = "test-support")]
    fn report_version(&mut self, cluster: &str, uid: &str) -> Result<Option<String>, StoreError> {
        self.query("reading a report version", |c, st| {
            c.query_opt(&st.report_version, &[&cluster, &uid])
                .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn retain_report_versions(
        &mut self,
        cluster: &str,
        live: &[String],
    ) -> Result<usize, StoreError> {
        self.query("pruning report versions", |c, _| {
            c.execute(
                "DELETE FROM report_versions WHERE cluster_name = $1 AND NOT (report_uid = ANY($2))",
                &[&cluster, &live],
            )
            .map(|n| n as usize)
        })
    }

    fn known_workloads(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        self.query("listing workloads", |c, _| {
            c.query(
                "SELECT DISTINCT namespace, workload_kind, workload FROM scanned_containers
                 WHERE cluster_name = $1 AND removed_at IS NULL ORDER BY 1, 2, 3",
                &[&cluster],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            })
        })
    }

    fn live_containers(
        &mut self,
        cluster: &str,
        keep: &mut dyn FnMut(&AssetId) -> bool,
    ) -> Result<Vec<AssetId>, StoreError> {
        use ::postgres::fallible_iterator::FallibleIterator;
        self.query("listing containers", |c, _| {
            // Streamed (`query_raw`): one row decoded at a time, none collected first. A retry
            // after a lost connection starts a fresh `out`.
            let mut rows = c.query_raw(
                "SELECT namespace, workload_kind, workload, container FROM scanned_containers
                 WHERE cluster_name = $1 AND removed_at IS NULL ORDER BY 1, 2, 3, 4",
                [&cluster],
            )?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let asset = AssetId {
                    namespace: r.get(0),
                    workload_kind: r.get(1),
                    workload: r.get(2),
                    container: r.get(3),
                };
                if keep(&asset) {
                    out.push(asset);
                }
            }
            Ok(out)
        })
    }

    fn recent_events(&mut self, cluster: &str, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.query("reading events", |c, _| {
            c.query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM lifecycle_events le
                     WHERE le.cluster_name = $1 ORDER BY le.seq DESC LIMIT $2"
                ),
                &[&cluster, &i64::from(limit)],
            )
            .map(|rows| rows.iter().filter_map(event_of_row).collect())
        })
    }

    fn open_findings(&mut self, cluster: &str) -> Result<Vec<OpenFindings>, StoreError> {
        self.query("counting open findings", |c, _| {
            c.query(
                "SELECT h.severity, h.namespace, count(*),
                        min(h.first_seen) FILTER (WHERE h.announced)
                 FROM vulnerability_history h
                 WHERE h.cluster_name = $1 AND h.state = 'open'
                 GROUP BY h.severity, h.namespace",
                &[&cluster],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| OpenFindings {
                        severity: severity_of(r.get(0)),
                        namespace: r.get(1),
                        open: r.get::<_, i64>(2).max(0) as u64,
                        oldest_announced: r.get::<_, Option<SystemTime>>(3).map(from_sys),
                    })
                    .collect()
            })
        })
    }

    fn outbox_stats(&mut self, cluster: &str) -> Result<Vec<OutboxStats>, StoreError> {
        self.query("counting queued notifications", |c, _| {
            c.query(
                "SELECT target, count(*), min(created_at) FROM notification_messages
                 WHERE cluster_name = $1 AND state = 'pending' GROUP BY target ORDER BY target",
                &[&cluster],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| OutboxStats {
                        target: r.get(0),
                        pending: r.get::<_, i64>(1).max(0) as u64,
                        oldest_created_at: r.get::<_, Option<SystemTime>>(2).map(from_sys),
                    })
                    .collect()
            })
        })
    }

    fn queued_windows(&mut self, cluster: &str) -> Result<QueuedWindows, StoreError> {
        self.query("reading the queued notifications' windows", |c, _| {
            let targets = c.query(
                "SELECT o.target,
                        CASE WHEN count(o.queued_at) < count(*) THEN NULL
                             ELSE min(o.queued_at) END
                 FROM notification_outbox o
                 JOIN lifecycle_events le ON le.event_id = o.event_id
                 WHERE le.cluster_name = $1 AND o.state = 'pending' AND o.message_id IS NULL
                 GROUP BY o.target ORDER BY o.target",
                &[&cluster],
            )?;
            let events = c.query_one(
                "SELECT count(DISTINCT o.event_id) FROM notification_outbox o
                 JOIN lifecycle_events le ON le.event_id = o.event_id
                 WHERE le.cluster_name = $1 AND o.state = 'pending' AND o.message_id IS NULL",
                &[&cluster],
            )?;
            Ok(QueuedWindows {
                targets: targets
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, Option<SystemTime>>(1).map(from_sys)))
                    .collect(),
                events: events.get::<_, i64>(0).max(0) as usize,
            })
        })
    }

    fn next_due(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        self.query("reading the next delivery time", |c, _| {
            c.query_one(
                "SELECT min(next_attempt_at) FROM notification_messages
                 WHERE cluster_name = $1 AND state = 'pending'",
                &[&cluster],
            )
            .map(|r| r.get::<_, Option<SystemTime>>(0).map(from_sys))
        })
    }
}

fn asset_lock_key(cluster: &str, asset: &AssetId) -> String {
    // \x1f (unit separator) cannot occur in Kubernetes names; PostgreSQL text cannot hold \0.
    [
        cluster,
        &asset.namespace,
        &asset.workload_kind,
        &asset.workload,
        &asset.container,
    ]
    .join("\x1f")
}

/// One open transaction with the connection's prepared statements.
struct PgTx<'a> {
    tx: Transaction<'a>,
    st: &'a Statements,
    secrets: &'a [String],
    context: &'static str,
}

impl<'a> PgTx<'a> {
    /// Maps a driver error of this transaction's work.
    fn err(&self) -> impl Fn(::postgres::Error) -> StoreError + use<'a> {
        let (context, secrets) = (self.context, self.secrets);
        move |e| pg_err(e, context, secrets)
    }
}

impl Tx for PgTx<'_> {
    fn lock_asset(&mut self, cluster: &str, asset: &AssetId) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(&self.st.lock_asset, &[&asset_lock_key(cluster, asset)])
            .map(|_| ())
            .map_err(q)
    }

    fn load_container(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<Option<StoredContainer>, StoreError> {
        let q = self.err();
        self.tx
            .query_opt(
                &self.st.load_container,
                &[
                    &cluster,
                    &asset.namespace,
                    &asset.workload_kind,
                    &asset.workload,
                    &asset.container,
                ],
            )
            .map(|r| {
                r.map(|r| StoredContainer {
                    last_scan_at: from_sys(r.get(0)),
                    image: r.get(1),
                    revision: r
                        .get::<_, Option<i64>>(2)
                        .and_then(|v| u64::try_from(v).ok()),
                })
            })
            .map_err(q)
    }

    fn load_findings(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<Vec<StoredFinding>, StoreError> {
        let q = self.err();
        let rows = self
            .tx
            .query(
                &self.st.load_findings,
                &[
                    &cluster,
                    &asset.namespace,
                    &asset.workload_kind,
                    &asset.workload,
                    &asset.container,
                ],
            )
            .map_err(q)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let state: String = r.get(9);
                Some(StoredFinding {
                    finding: Finding {
                        key: FindingKey {
                            vulnerability_id: r.get(0),
                            package: r.get(1),
                        },
                        package_path: r.get(2),
                        severity: severity_of(r.get(3)),
                        installed_version: r.get(4),
                        fixed_version: r.get(5),
                        title: r.get(6),
                        link: r.get(7),
                    },
                    image: r.get(8),
                    state: FindingState::parse(&state)?,
                    first_seen: from_sys(r.get(10)),
                    last_seen: from_sys(r.get(11)),
                    fixed_at: r.get::<_, Option<SystemTime>>(12).map(from_sys),
                    reintroduced_count: r.get::<_, i32>(13).max(0) as u32,
                    peak_severity: severity_of(r.get(14)),
                    announced: r.get(15),
                })
            })
            .collect())
    }

    fn sibling_keys(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<BTreeMap<FindingKey, Timestamp>, StoreError> {
        let q = self.err();
        self.tx
            .query(
                &self.st.sibling_keys,
                &[
                    &cluster,
                    &asset.namespace,
                    &asset.workload_kind,
                    &asset.workload,
                    &asset.container,
                ],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let key = FindingKey {
                            vulnerability_id: r.get(0),
                            package: r.get(1),
                        };
                        (key, from_sys(r.get(2)))
                    })
                    .collect()
            })
            .map_err(q)
    }

    fn upsert_container(&mut self, obs: &Observation, report_uid: &str) -> Result<(), StoreError> {
        let q = self.err();
        let asset = &obs.asset;
        let revision = obs
            .revision
            .map(|r| i64::try_from(r).unwrap_or(i64::MAX));
        self.tx
            .execute(
                &self.st.upsert_container,
                &[
                    &obs.cluster,
                    &asset.namespace,
                    &asset.workload_kind,
                    &asset.workload,
                    &asset.container,
                    &obs.image,
                    &to_sys(obs.scanned_at),
                    &revision,
                    &report_uid,
                ],
            )
            .map(|_| ())
            .map_err(q)
    }

    /// One statement, whatever the report's size.
    fn upsert_findings(
        &mut self,
        cluster: &str,
        asset: &AssetId,
        rows: &[StoredFinding],
    ) -> Result<(), StoreError> {
        let q = self.err();
        let col = |f: fn(&StoredFinding) -> &str| -> Vec<&str> { rows.iter().map(f).collect() };
        let ids = col(|r| &r.finding.key.vulnerability_id);
        let packages = col(|r| &r.finding.key.package);
        let paths = col(|r| &r.finding.package_path);
        let severities = col(|r| r.finding.severity.as_str());
        let installed = col(|r| &r.finding.installed_version);
        let fixed = col(|r| &r.finding.fixed_version);
        let titles = col(|r| &r.finding.title);
        let links = col(|r| &r.finding.link);
        let images = col(|r| &r.image);
        let states = col(|r| r.state.as_str());
        let first: Vec<SystemTime> = rows.iter().map(|r| to_sys(r.first_seen)).collect();
        let last: Vec<SystemTime> = rows.iter().map(|r| to_sys(r.last_seen)).collect();
        let fixed_at: Vec<Option<SystemTime>> =
            rows.iter().map(|r| r.fixed_at.map(to_sys)).collect();
        let counts: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.reintroduced_count).unwrap_or(i32::MAX))
            .collect();
        let peaks = col(|r| r.peak_severity.as_str());
        let announced: Vec<bool> = rows.iter().map(|r| r.announced).collect();
        self.tx
            .execute(
                &self.st.upsert_rows,
                &[
                    &cluster,
                    &asset.namespace,
                    &asset.workload_kind,
                    &asset.workload,
                    &asset.container,
                    &ids,
                    &packages,
                    &paths,
                    &severities,
                    &installed,
                    &fixed,
                    &titles,
                    &links,
                    &images,
                    &states,
                    &first,
                    &last,
                    &fixed_at,
                    &counts,
                    &peaks,
                    &announced,
                ],
            )
            .map_err(&q)?;
        Ok(())
    }

    /// One statement for the events and one for their outbox rows, whatever their number.
    fn insert_events(
        &mut self,
        ev: &[Event],
        targets: &[String],
        queued_at: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.err();
        let col = |f: fn(&Event) -> &str| -> Vec<&str> { ev.iter().map(f).collect() };
        let event_ids = col(|e| &e.event_id);
        let kinds = col(|e| e.kind.as_str());
        let clusters = col(|e| &e.cluster);
        let namespaces = col(|e| &e.asset.namespace);
        let workload_kinds = col(|e| &e.asset.workload_kind);
        let workloads = col(|e| &e.asset.workload);
        let containers = col(|e| &e.asset.container);
        let images = col(|e| &e.image);
        let ids = col(|e| &e.finding.key.vulnerability_id);
        let packages = col(|e| &e.finding.key.package);
        let paths = col(|e| &e.finding.package_path);
        let installed = col(|e| &e.finding.installed_version);
        let fixed = col(|e| &e.finding.fixed_version);
        let severities = col(|e| e.finding.severity.as_str());
        let previous: Vec<Option<&str>> = ev
            .iter()
            .map(|e| e.previous_severity.map(|s| s.as_str()))
            .collect();
        let titles = col(|e| &e.finding.title);
        let links = col(|e| &e.finding.link);
        let counts: Vec<i32> = ev
            .iter()
            .map(|e| i32::try_from(e.reintroduced_count).unwrap_or(i32::MAX))
            .collect();
        let occurred: Vec<SystemTime> = ev.iter().map(|e| to_sys(e.occurred_at)).collect();
        let peaks = col(|e| e.peak_severity.as_str());
        self.tx
            .execute(
                &self.st.insert_events,
                &[
                    &event_ids,
                    &kinds,
                    &clusters,
                    &namespaces,
                    &workload_kinds,
                    &workloads,
                    &containers,
                    &images,
                    &ids,
                    &packages,
                    &paths,
                    &installed,
                    &fixed,
                    &severities,
                    &previous,
                    &titles,
                    &links,
                    &counts,
                    &occurred,
                    &peaks,
                ],
            )
            .map_err(&q)?;
        if !targets.is_empty() {
            self.tx
                .execute(
                    &self.st.insert_outbox,
                    &[&event_ids, &targets, &to_sys(queued_at)],
                )
                .map_err(&q)?;
        }
        Ok(())
    }

    fn upsert_report(
        &mut self,
        obs: &Observation,
        report: &ReportVersion,
    ) -> Result<(), StoreError> {
        let q = self.err();
        let asset = &obs.asset;
        self.tx
            .execute(
                &self.st.upsert_report,
                &[
                    &obs.cluster,
                    &report.uid,
                    &report.resource_version,
                    &to_sys(obs.scanned_at),
                    &asset.namespace,
                    &asset.workload_kind,
                    &asset.workload,
                    &asset.container,
                ],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn workload_containers(
        &mut self,
        cluster: &str,
        w: &Removal<'_>,
    ) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let q = self.err();
        self.tx
            .query(
                "SELECT container, last_scan_at FROM scanned_containers
                 WHERE cluster_name = $1 AND namespace = $2 AND workload_kind = $3
                   AND workload = $4 AND removed_at IS NULL
                 ORDER BY container",
                &[&cluster, &w.namespace, &w.kind, &w.name],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), from_sys(r.get(1))))
                    .collect()
            })
            .map_err(q)
    }

    fn mark_removed(
        &mut self,
        cluster: &str,
        w: &Removal<'_>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "UPDATE scanned_containers SET removed_at = coalesce(removed_at, $5),
                     revision = NULL
                 WHERE cluster_name = $1 AND namespace = $2 AND workload_kind = $3
                   AND workload = $4",
                &[&cluster, &w.namespace, &w.kind, &w.name, &to_sys(at)],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn forget_reports(&mut self, cluster: &str, w: &Removal<'_>) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "DELETE FROM report_versions WHERE cluster_name = $1 AND namespace = $2
                   AND workload_kind = $3 AND workload = $4",
                &[&cluster, &w.namespace, &w.kind, &w.name],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn mark_container_removed(
        &mut self,
        cluster: &str,
        a: &AssetId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "UPDATE scanned_containers SET removed_at = $6
                 WHERE cluster_name = $1 AND namespace = $2 AND workload_kind = $3
                   AND workload = $4 AND container = $5 AND removed_at IS NULL",
                &[
                    &cluster,
                    &a.namespace,
                    &a.workload_kind,
                    &a.workload,
                    &a.container,
                    &to_sys(at),
                ],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn forget_container_reports(&mut self, cluster: &str, a: &AssetId) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "DELETE FROM report_versions WHERE cluster_name = $1 AND namespace = $2
                   AND workload_kind = $3 AND workload = $4 AND container = $5",
                &[&cluster, &a.namespace, &a.workload_kind, &a.workload, &a.container],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn queued_rows(&mut self, cluster: &str) -> Result<Vec<QueuedRow>, StoreError> {
        let q = self.err();
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS}, o.target, o.queued_at FROM notification_outbox o
                     JOIN lifecycle_events le ON le.event_id = o.event_id
                     WHERE le.cluster_name = $1 AND o.state = 'pending'
                       AND o.message_id IS NULL
                     ORDER BY le.seq, o.target
                     FOR UPDATE OF o"
                ),
                &[&cluster],
            )
            .map_err(q)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(QueuedRow {
                    target: r.get(AFTER_EVENT_COLUMNS),
                    queued_at: r
                        .get::<_, Option<SystemTime>>(AFTER_EVENT_COLUMNS + 1)
                        .map(from_sys),
                    event: event_of_row(r)?,
                })
            })
            .collect())
    }

    fn insert_message(
        &mut self,
        cluster: &str,
        target: &str,
        message_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "INSERT INTO notification_messages
                     (message_id, target, cluster_name, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
                &[&message_id, &target, &cluster, &to_sys(now)],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn assign_rows(
        &mut self,
        target: &str,
        message_id: &str,
        event_ids: &[String],
    ) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "UPDATE notification_outbox SET message_id = $1
                 WHERE target = $2 AND event_id = ANY($3)",
                &[&message_id, &target, &event_ids],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn mark_filtered(&mut self, rows: &[(String, String)]) -> Result<(), StoreError> {
        let q = self.err();
        let (targets, ids): (Vec<&str>, Vec<&str>) =
            rows.iter().map(|(t, e)| (t.as_str(), e.as_str())).unzip();
        self.tx
            .execute(
                "UPDATE notification_outbox o SET state = 'filtered'
                 FROM UNNEST($1::text[], $2::text[]) AS f(t, e)
                 WHERE o.target = f.t AND o.event_id = f.e",
                &[&targets, &ids],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn due_heads(
        &mut self,
        cluster: &str,
        target: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<MessageHead>, StoreError> {
        let q = self.err();
        self.tx
            .query(
                "SELECT message_id, created_at, attempts FROM notification_messages
                 WHERE cluster_name = $1 AND target = $2 AND state = 'pending'
                   AND next_attempt_at <= $3
                 ORDER BY created_at, message_id LIMIT $4
                 FOR UPDATE SKIP LOCKED",
                &[&cluster, &target, &to_sys(now), &i64::from(limit)],
            )
            .map(|rows| {
                rows.iter()
                    .map(|h| {
                        (
                            h.get(0),
                            from_sys(h.get(1)),
                            h.get::<_, i32>(2).max(0) as u32,
                        )
                    })
                    .collect()
            })
            .map_err(q)
    }

    fn claim(
        &mut self,
        target: &str,
        message_id: &str,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.err();
        self.tx
            .execute(
                "UPDATE notification_messages SET next_attempt_at = $3
                 WHERE message_id = $1 AND target = $2",
                &[&message_id, &target, &to_sys(until)],
            )
            .map(|_| ())
            .map_err(q)
    }

    fn message_events(&mut self, target: &str, message_id: &str) -> Result<Vec<Event>, StoreError> {
        let q = self.err();
        self.tx
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM notification_outbox o
                     JOIN lifecycle_events le ON le.event_id = o.event_id
                     WHERE o.message_id = $1 AND o.target = $2 ORDER BY le.seq"
                ),
                &[&message_id, &target],
            )
            .map(|rows| rows.iter().filter_map(event_of_row).collect())
            .map_err(q)
    }

    fn record_attempt(
        &mut self,
        target: &str,
        message_id: &str,
        update: &MessageUpdate,
    ) -> Result<(), StoreError> {
        let q = self.err();
        let (state, next, error, delivered) = match update {
            MessageUpdate::Delivered { at } => ("delivered", to_sys(*at), None, Some(to_sys(*at))),
            MessageUpdate::Retry { at, error } => {
                ("pending", to_sys(*at), Some(error.as_str()), None)
            }
            MessageUpdate::Dead { at, reason } => {
                ("dead", to_sys(*at), Some(reason.as_str()), None)
            }
        };
        for table in ["notification_messages", "notification_outbox"] {
            self.tx
                .execute(
                    &format!(
                        "UPDATE {table} SET state = $3, attempts = attempts + 1,
                             next_attempt_at = $4, last_error = coalesce($5, last_error),
                             delivered_at = $6
                         WHERE message_id = $1 AND target = $2 AND state = 'pending'"
                    ),
                    &[&message_id, &target, &state, &next, &error, &delivered],
                )
                .map_err(&q)?;
        }
        Ok(())
    }
}

/// A `lifecycle_events` row (selected with [`EVENT_COLUMNS`]); `None` for an unknown kind.
fn event_of_row(r: &::postgres::Row) -> Option<Event> {
    let kind: String = r.get(1);
    let severity = severity_of(r.get(13));
    Some(Event {
        event_id: r.get(0),
        kind: EventKind::parse(&kind)?,
        cluster: r.get(2),
        asset: AssetId {
            namespace: r.get(3),
            workload_kind: r.get(4),
            workload: r.get(5),
            container: r.get(6),
        },
        image: r.get(7),
        finding: Finding {
            key: FindingKey {
                vulnerability_id: r.get(8),
                package: r.get(9),
            },
            package_path: r.get(10),
            installed_version: r.get(11),
            fixed_version: r.get(12),
            severity,
            title: r.get(15),
            link: r.get(16),
        },
        previous_severity: r.get::<_, Option<&str>>(14).map(severity_of),
        // NULL for events recorded before schema 0003: their severity was all that was told.
        peak_severity: r.get::<_, Option<&str>>(19).map_or(severity, severity_of),
        reintroduced_count: r.get::<_, i32>(17).max(0) as u32,
        occurred_at: from_sys(r.get(18)),
    })
}
