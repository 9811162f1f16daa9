//! Durable lifecycle state: PostgreSQL for production, an embedded SQLite file as the default.
//!
//! Both backends hold the same tables (see `sql/`) and behave the same; the lifecycle decisions
//! themselves are made by the pure [`crate::lifecycle`] module, so a backend only loads state,
//! hands it to the diff and writes the result in one transaction. `Store` is meant for the one
//! thread that writes (the poll thread); the health thread gets its own cheap [`Pinger`].

pub mod error;
mod history;
mod metrics;
pub mod outbox;
mod postgres;
mod sqlite;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

pub use error::StoreError;
pub use history::render_history;
pub use metrics::StoreMetrics;
pub use outbox::{Assigned, DueMessage, MessageUpdate, OutboxStats};

use crate::lifecycle::{AssetId, Event, Observation, StoredAsset};
use crate::secret::mask_database_url;

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
];

/// How the agent talks TLS to PostgreSQL. The names are libpq's, the meanings differ where noted
/// in the README: `require` verifies like `verify-full`, because an unverified "encrypted"
/// connection gives a false sense of safety and rustls has no opportunistic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without certificate verification (libpq's default);
    /// plain TCP otherwise.
    Prefer,
    /// TLS required; certificate chain and host name verified.
    Require,
    /// TLS required; certificate chain verified, host name not.
    VerifyCa,
    /// TLS required; certificate chain and host name verified.
    VerifyFull,
}

impl PgSslMode {
    fn parse(value: &str) -> Option<PgSslMode> {
        Some(match value {
            "disable" => PgSslMode::Disable,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed PostgreSQL URL: the driver's config without the TLS parameters we handle ourselves.
#[derive(Clone)]
pub struct PgTarget {
    pub(crate) config: ::postgres::Config,
    pub ssl_mode: PgSslMode,
    pub root_cert: Option<PathBuf>,
    masked: String,
    /// Password spellings (raw and decoded) scrubbed from every driver message.
    pub(crate) secrets: Vec<String>,
}

/// Where the lifecycle state lives, parsed from `KIJO_DATABASE_URL`.
// One value per process, parsed once: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum DatabaseTarget {
    Postgres(PgTarget),
    Sqlite(PathBuf),
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl DatabaseTarget {
    /// Parses `postgres://…`/`postgresql://…` (libpq-style URL) or `sqlite:PATH`/`sqlite://PATH`.
    /// Errors name the problem and show the URL only masked.
    pub fn parse(url: &str) -> Result<DatabaseTarget, String> {
        let url = url.trim();
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err("sqlite URL has no file path; use sqlite:/var/lib/kijo/kijo.db".into());
            }
            if rest.contains('?') {
                return Err(format!(
                    "sqlite:{rest} has parameters; the sqlite URL takes a file path only"
                ));
            }
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(rest)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return parse_postgres(url).map(DatabaseTarget::Postgres);
        }
        Err(format!(
            "{} is neither a postgres://, postgresql:// nor a sqlite: URL",
            mask_database_url(url)
        ))
    }

    /// A masked description for logs: no password, no credential query parameter.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Postgres(pg) => pg.masked.clone(),
            DatabaseTarget::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

fn parse_postgres(url: &str) -> Result<PgTarget, String> {
    let masked = mask_database_url(url);
    let secrets = url_passwords(url);
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut ssl_mode = PgSslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "sslmode" => {
                ssl_mode = PgSslMode::parse(&value).ok_or_else(|| {
                    format!(
                        "{masked}: sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                    )
                })?;
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(format!(
                    "{masked}: {key} is not supported; use password or scram authentication over sslmode=require"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: ::postgres::Config = rebuilt.parse().map_err(|e: ::postgres::Error| {
        format!("{masked}: {}", error::redact(&e.to_string(), &secrets))
    })?;
    if root_cert.is_some() && ssl_mode == PgSslMode::Disable {
        return Err(format!(
            "{masked}: sslrootcert is given but sslmode=disable"
        ));
    }
    config.ssl_mode(match ssl_mode {
        PgSslMode::Disable => ::postgres::config::SslMode::Disable,
        PgSslMode::Prefer => ::postgres::config::SslMode::Prefer,
        _ => ::postgres::config::SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_tcp_user_timeout().is_none() {
        // A dead peer fails writes after this long instead of hanging the poll thread.
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(60));
    if config.get_application_name().is_none() {
        config.application_name("kijo-agent");
    }
    Ok(PgTarget {
        config,
        ssl_mode,
        root_cert,
        masked,
        secrets,
    })
}

/// The password as written in the URL and percent-decoded, from userinfo and `password=`.
fn url_passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let before_query = rest.split('?').next().unwrap_or("");
        let authority = before_query.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            out.push(pw.to_owned());
            out.push(percent_decode(pw));
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split('&') {
                if let Some(("password", pw)) = pair.split_once('=') {
                    out.push(pw.to_owned());
                    out.push(percent_decode(pw));
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
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
}

/// The version of a report as the Kubernetes API shows it, recorded so that an unchanged report
/// is skipped without being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportVersion {
    pub uid: String,
    pub resource_version: String,
}

/// Open findings of one severity, for `kijo-agent history` and the open-findings gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeverityCount {
    pub severity: String,
    pub open: u64,
}

/// A workload, or one container of it, that is gone.
#[derive(Clone, Copy)]
pub(crate) struct Removal<'a> {
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub container: Option<&'a str>,
}

enum Backend {
    Postgres(Box<postgres::PgStore>),
    Sqlite(sqlite::SqliteStore),
}

/// The lifecycle store of the writing thread.
pub struct Store {
    backend: Backend,
    metrics: Option<StoreMetrics>,
}

impl Store {
    /// Connects and applies the embedded migrations under a lock, so two agents starting at the
    /// same time neither race nor apply a migration twice.
    pub fn open(target: &DatabaseTarget) -> Result<Store, StoreError> {
        let backend = match target {
            DatabaseTarget::Postgres(pg) => {
                Backend::Postgres(Box::new(postgres::PgStore::open(pg)?))
            }
            DatabaseTarget::Sqlite(path) => Backend::Sqlite(sqlite::SqliteStore::open(path)?),
        };
        Ok(Store {
            backend,
            metrics: None,
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

    pub fn ping(&mut self) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.ping(),
            Backend::Sqlite(s) => s.ping(),
        }
    }

    pub fn schema_status(&mut self) -> Result<SchemaStatus, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.schema_status(),
            Backend::Sqlite(s) => s.schema_status(),
        }
    }

    /// True when this cluster has never recorded a scan. Prefer [`Store::baseline_pending`] for
    /// the baseline decision: it stays true when the first cycle was interrupted halfway.
    pub fn is_empty_for_cluster(&mut self, cluster: &str) -> Result<bool, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.is_empty_for_cluster(cluster),
            Backend::Sqlite(s) => s.is_empty_for_cluster(cluster),
        }
    }

    /// True until [`Store::finish_baseline`] was called for this cluster: apply scans with
    /// `baseline = true` meanwhile. A first cycle that crashed halfway is thus repeated as a
    /// baseline instead of announcing the rest of the cluster as new.
    pub fn baseline_pending(&mut self, cluster: &str) -> Result<bool, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.baseline_pending(cluster),
            Backend::Sqlite(s) => s.baseline_pending(cluster),
        }
    }

    /// Marks the cluster's baseline complete; call it after the first cycle that applied every
    /// report without error. Calling it again changes nothing.
    pub fn finish_baseline(&mut self, cluster: &str, at: Timestamp) -> Result<(), StoreError> {
        let at = truncate_micros(at);
        match &mut self.backend {
            Backend::Postgres(s) => s.finish_baseline(cluster, at),
            Backend::Sqlite(s) => s.finish_baseline(cluster, at),
        }
    }

    /// Every report version recorded for a cluster, by report uid, with the workload container
    /// it was applied to: one query per cycle instead of one per report.
    pub fn report_versions(
        &mut self,
        cluster: &str,
    ) -> Result<HashMap<String, KnownReport>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.report_versions(cluster),
            Backend::Sqlite(s) => s.report_versions(cluster),
        }
    }

    /// The resourceVersion recorded for a report uid, `None` for a report never applied.
    pub fn report_version(
        &mut self,
        cluster: &str,
        report_uid: &str,
    ) -> Result<Option<String>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.report_version(cluster, report_uid),
            Backend::Sqlite(s) => s.report_version(cluster, report_uid),
        }
    }

    /// Forgets report versions of reports that no longer exist (TTL re-creation gives every
    /// report a new uid each day). `live_uids` is every report uid currently listed; call it only
    /// after a complete, successful list, or an empty list forgets every version.
    pub fn retain_report_versions(
        &mut self,
        cluster: &str,
        live_uids: &[String],
    ) -> Result<usize, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.retain_report_versions(cluster, live_uids),
            Backend::Sqlite(s) => s.retain_report_versions(cluster, live_uids),
        }
    }

    /// The stored state of one workload container (what `diff` compares against).
    pub fn load_asset(
        &mut self,
        cluster: &str,
        asset: &AssetId,
    ) -> Result<StoredAsset, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.load_asset(cluster, asset),
            Backend::Sqlite(s) => s.load_asset(cluster, asset),
        }
    }

    /// Applies one scan of one workload container: loads its stored findings, diffs, writes the
    /// changed rows, the events, one outbox row per event and target, and the report version,
    /// all in one transaction. On a connection loss the whole transaction is retried once on a
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
        let result = match &mut self.backend {
            Backend::Postgres(s) => s.apply(&observation, report, baseline, targets),
            Backend::Sqlite(s) => s.apply(&observation, report, baseline, targets),
        };
        self.observe(started, &result);
        result
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
            container: None,
        };
        self.remove(cluster, removal, at, targets)
    }

    /// Closes the open findings of one container that disappeared from a workload that still
    /// exists (its old report lingers until Trivy's TTL and is never re-created), with the same
    /// `workload_removed` event as a removed workload.
    pub fn remove_container(
        &mut self,
        cluster: &str,
        asset: &AssetId,
        at: Timestamp,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let removal = Removal {
            namespace: &asset.namespace,
            kind: &asset.workload_kind,
            name: &asset.workload,
            container: Some(&asset.container),
        };
        self.remove(cluster, removal, at, targets)
    }

    #[allow(clippy::too_many_arguments)]
    fn remove(
        &mut self,
        cluster: &str,
        removal: Removal<'_>,
        at: Timestamp,
        targets: &[String],
    ) -> Result<Applied, StoreError> {
        let started = std::time::Instant::now();
        let result = match &mut self.backend {
            Backend::Postgres(s) => s.remove_workload(cluster, &removal, at, targets),
            Backend::Sqlite(s) => s.remove_workload(cluster, &removal, at, targets),
        };
        self.observe(started, &result);
        result
    }

    /// Every workload container with a recorded scan and not removed.
    pub fn known_assets(&mut self, cluster: &str) -> Result<Vec<AssetId>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.known_assets(cluster),
            Backend::Sqlite(s) => s.known_assets(cluster),
        }
    }

    /// Workloads (namespace, kind, name) with a recorded scan and not yet removed; the caller
    /// compares them with the cluster to find removed ones.
    pub fn known_workloads(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.known_workloads(cluster),
            Backend::Sqlite(s) => s.known_workloads(cluster),
        }
    }

    /// The newest lifecycle events of a cluster, newest first.
    pub fn recent_events(&mut self, cluster: &str, limit: u32) -> Result<Vec<Event>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.recent_events(cluster, limit),
            Backend::Sqlite(s) => s.recent_events(cluster, limit),
        }
    }

    /// Open findings per severity, most severe first.
    pub fn open_counts_by_severity(
        &mut self,
        cluster: &str,
    ) -> Result<Vec<SeverityCount>, StoreError> {
        let mut counts = match &mut self.backend {
            Backend::Postgres(s) => s.open_counts_by_severity(cluster)?,
            Backend::Sqlite(s) => s.open_counts_by_severity(cluster)?,
        };
        counts.sort_by_key(|c| severity_rank(&c.severity));
        Ok(counts)
    }
}

/// A message row with its events, as a backend reads it; [`Store::due_messages`] rebuilds the
/// message from the events.
pub(crate) struct StoredMessage {
    pub message_id: String,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub events: Vec<Event>,
}

/// The notification outbox (see [`outbox`]). Used by the notify thread on its own connection.
impl Store {
    /// Groups every queued, not yet grouped outbox row of `cluster` into messages (or marks it
    /// filtered), in one transaction. Rows are only ever grouped once.
    pub fn assign_messages(
        &mut self,
        cluster: &str,
        min_severity: crate::severity::Severity,
        notify_workload_removed: bool,
        now: Timestamp,
    ) -> Result<Assigned, StoreError> {
        let now = truncate_micros(now);
        let planner = move |rows: Vec<(String, Event)>| {
            outbox::plan(rows, min_severity, notify_workload_removed)
        };
        match &mut self.backend {
            Backend::Postgres(s) => s.assign_messages(cluster, now, &planner),
            Backend::Sqlite(s) => s.assign_messages(cluster, now, &planner),
        }
    }

    /// Claims up to `limit` pending messages of one target whose next attempt is due, oldest
    /// first, rebuilt with their stored id. Claiming moves their next attempt to
    /// `now + CLAIM_LEASE`, so a second agent (or this one after a crash mid-send) does not send
    /// them at the same time; the outcome written by [`Store::update_message`] replaces the
    /// claim. A message that cannot be rebuilt is logged and skipped.
    pub fn due_messages(
        &mut self,
        cluster: &str,
        target: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DueMessage>, StoreError> {
        let now = truncate_micros(now);
        let claim_until = now.checked_add(outbox::CLAIM_LEASE).unwrap_or(now);
        let stored = match &mut self.backend {
            Backend::Postgres(s) => s.due_messages(cluster, target, now, limit, claim_until)?,
            Backend::Sqlite(s) => s.due_messages(cluster, target, now, limit, claim_until)?,
        };
        Ok(stored
            .into_iter()
            .filter_map(|m| {
                Some(DueMessage {
                    target: target.to_owned(),
                    created_at: m.created_at,
                    attempts: m.attempts,
                    message: outbox::rebuild(&m.message_id, &m.events)?,
                })
            })
            .collect())
    }

    /// Records the outcome of one attempt for a message and its outbox rows.
    pub fn update_message(
        &mut self,
        target: &str,
        message_id: &str,
        update: &MessageUpdate,
    ) -> Result<(), StoreError> {
        let update = match update {
            MessageUpdate::Delivered { at } => MessageUpdate::Delivered {
                at: truncate_micros(*at),
            },
            MessageUpdate::Retry { at, error } => MessageUpdate::Retry {
                at: truncate_micros(*at),
                error: error.clone(),
            },
            MessageUpdate::Dead { at, reason } => MessageUpdate::Dead {
                at: truncate_micros(*at),
                reason: reason.clone(),
            },
        };
        match &mut self.backend {
            Backend::Postgres(s) => s.update_message(target, message_id, &update),
            Backend::Sqlite(s) => s.update_message(target, message_id, &update),
        }
    }

    /// Pending messages per target, for the outbox gauges.
    pub fn outbox_stats(&mut self, cluster: &str) -> Result<Vec<OutboxStats>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.outbox_stats(cluster),
            Backend::Sqlite(s) => s.outbox_stats(cluster),
        }
    }

    /// When the earliest pending message is due, so the notify thread sleeps exactly that long.
    pub fn next_due(&mut self, cluster: &str) -> Result<Option<Timestamp>, StoreError> {
        match &mut self.backend {
            Backend::Postgres(s) => s.next_due(cluster),
            Backend::Sqlite(s) => s.next_due(cluster),
        }
    }
}

pub(crate) fn truncate_micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "CRITICAL" => 0,
        "HIGH" => 1,
        "MEDIUM" => 2,
        "LOW" => 3,
        _ => 4,
    }
}

/// A separate, cheap connection for the readiness probe. It never blocks the writer and opens a
/// new connection by itself after a failure.
pub struct Pinger {
    target: DatabaseTarget,
    pg: Option<::postgres::Client>,
    sqlite: Option<rusqlite::Connection>,
}

impl Pinger {
    pub fn new(target: &DatabaseTarget) -> Pinger {
        Pinger {
            target: target.clone(),
            pg: None,
            sqlite: None,
        }
    }

    pub fn ping(&mut self, timeout: Duration) -> Result<(), StoreError> {
        match &self.target {
            DatabaseTarget::Postgres(pg) => {
                if self.pg.is_none() {
                    let mut pg = pg.clone();
                    pg.config.connect_timeout(timeout);
                    self.pg = Some(postgres::connect(&pg)?);
                }
                let client = self.pg.as_mut().expect("connected above");
                client.is_valid(timeout).map_err(|e| {
                    self.pg = None;
                    match &self.target {
                        DatabaseTarget::Postgres(pg) => {
                            StoreError::ConnectionLost(error::redact(&e.to_string(), &pg.secrets))
                        }
                        DatabaseTarget::Sqlite(_) => unreachable!(),
                    }
                })
            }
            DatabaseTarget::Sqlite(path) => {
                if self.sqlite.is_none() {
                    self.sqlite = Some(sqlite::open_existing(path, timeout)?);
                }
                let conn = self.sqlite.as_ref().expect("opened above");
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                    .map_err(|e| {
                        self.sqlite = None;
                        StoreError::ConnectionLost(format!("{}: {e}", path.display()))
                    })
            }
        }
    }
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
    fn parses_database_urls() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "sqlite:/var/lib/kijo/kijo.db",
                Ok("sqlite:/var/lib/kijo/kijo.db"),
            ),
            ("sqlite:///tmp/x.db", Ok("sqlite:/tmp/x.db")),
            ("sqlite://rel.db", Ok("sqlite:rel.db")),
            ("sqlite:", Err("no file path")),
            ("sqlite:/x.db?mode=ro", Err("file path only")),
            (
                "postgres://kijo:hunter2@db:5432/kijo",
                Ok("postgres://kijo:***@db:5432/kijo"),
            ),
            (
                "postgresql://kijo:hunter2@db/kijo?sslmode=require",
                Ok("postgresql://kijo:***@db/kijo?sslmode=require"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?sslmode=allow",
                Err("sslmode=allow"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?sslmode=bogus",
                Err("is not one of"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?sslcert=/c.pem",
                Err("sslcert is not supported"),
            ),
            (
                "postgres://kijo:hunter2@db/kijo?frobnicate=1",
                Err("frobnicate"),
            ),
            ("postgres://kijo:hunter2@db:notaport/kijo", Err("port")),
            (
                "postgres://kijo:hunter2@db/kijo?sslmode=disable&sslrootcert=/ca.pem",
                Err("sslmode=disable"),
            ),
            ("mysql://kijo:hunter2@db/kijo", Err("neither")),
            ("host=db password=hunter2", Err("neither")),
        ];
        for (url, want) in cases {
            let got = DatabaseTarget::parse(url);
            match (want, &got) {
                (Ok(desc), Ok(t)) => assert_eq!(&t.describe(), desc, "{url}"),
                (Err(needle), Err(msg)) => {
                    assert!(msg.contains(needle), "{url}: {msg}");
                    assert!(!msg.contains("hunter2"), "{url} leaked: {msg}");
                }
                _ => panic!("{url}: got {got:?}, want {want:?}"),
            }
            if let Ok(t) = &got {
                assert!(!format!("{t:?}").contains("hunter2"));
            }
        }
    }

    #[test]
    fn ssl_parameters_are_stripped_and_mapped() {
        let cases = [
            ("postgres://u@h/d", PgSslMode::Prefer, None),
            ("postgres://u@h/d?sslmode=disable", PgSslMode::Disable, None),
            ("postgres://u@h/d?sslmode=require", PgSslMode::Require, None),
            (
                "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/ca.pem",
                PgSslMode::VerifyCa,
                Some("/ca.pem"),
            ),
            (
                "postgres://u@h/d?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-full&connect_timeout=3",
                PgSslMode::VerifyFull,
                Some("/etc/ca.pem"),
            ),
        ];
        for (url, mode, root) in cases {
            let Ok(DatabaseTarget::Postgres(pg)) = DatabaseTarget::parse(url) else {
                panic!("{url} did not parse as postgres");
            };
            assert_eq!(pg.ssl_mode, mode, "{url}");
            assert_eq!(pg.root_cert.as_deref(), root.map(Path::new), "{url}");
            assert_eq!(pg.config.get_user(), Some("u"));
            assert_eq!(pg.config.get_application_name(), Some("kijo-agent"));
            assert!(pg.config.get_connect_timeout().is_some());
        }
    }

    #[test]
    fn passwords_are_collected_for_redaction() {
        let cases = [
            ("postgres://u:p%40ss@h/d", vec!["p%40ss", "p@ss"]),
            ("postgres://u@h/d?password=x", vec!["x", "x"]),
            ("postgres://u@h/d", vec![]),
        ];
        for (url, want) in cases {
            assert_eq!(url_passwords(url), want, "{url}");
        }
    }

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
