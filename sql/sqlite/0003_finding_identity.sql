-- Same as sql/postgres/0003_finding_identity.sql. SQLite can change neither a UNIQUE nor a CHECK
-- constraint, so vulnerability_history and lifecycle_events are rebuilt. This runs inside the
-- migration transaction with foreign keys enforced (PRAGMA foreign_keys cannot change inside a
-- transaction): notification_outbox references lifecycle_events, so its rows are set aside
-- first, the event table is rebuilt with nothing referencing it, and they are put back. No
-- lifecycle event is written; every event keeps its seq.

-- vulnerability_history: one row per (container, cve_id, package). Rows that differ only in
-- package_path merge into the row seen most recently (ties: an open row, then the highest
-- severity, then the newest id); paths and installed versions become the sorted (byte order, as
-- the agent sorts them) distinct non-empty values joined by ', '.
CREATE TABLE vulnerability_history_v3 (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_name       TEXT    NOT NULL,
    namespace          TEXT    NOT NULL,
    workload           TEXT    NOT NULL,
    cve_id             TEXT    NOT NULL,
    severity           TEXT    NOT NULL,
    first_seen         TEXT    NOT NULL,
    last_seen          TEXT    NOT NULL,
    fixed_at           TEXT,
    workload_kind      TEXT    NOT NULL,
    container          TEXT    NOT NULL,
    package            TEXT    NOT NULL,
    package_path       TEXT    NOT NULL DEFAULT '',
    installed_version  TEXT    NOT NULL DEFAULT '',
    fixed_version      TEXT    NOT NULL DEFAULT '',
    title              TEXT    NOT NULL DEFAULT '',
    link               TEXT    NOT NULL DEFAULT '',
    image              TEXT    NOT NULL DEFAULT '',
    state              TEXT    NOT NULL CHECK (state IN
                         ('open', 'fixed', 'withdrawn', 'workload_removed', 'container_removed')),
    reintroduced_count INTEGER NOT NULL DEFAULT 0,
    peak_severity      TEXT    NOT NULL,
    UNIQUE (cluster_name, namespace, workload_kind, workload, container, cve_id, package)
);
INSERT INTO vulnerability_history_v3 (id, cluster_name, namespace, workload, cve_id, severity,
    first_seen, last_seen, fixed_at, workload_kind, container, package, package_path,
    installed_version, fixed_version, title, link, image, state, reintroduced_count,
    peak_severity)
SELECT r.id, r.cluster_name, r.namespace, r.workload, r.cve_id, r.severity,
       r.g_first_seen, r.g_last_seen,
       CASE WHEN r.any_open THEN NULL ELSE r.g_fixed_at END,
       r.workload_kind, r.container, r.package,
       CASE WHEN r.g_rows = 1 THEN r.package_path ELSE coalesce((
         SELECT group_concat(p, ', ' ORDER BY p) FROM (
           SELECT DISTINCT o.package_path AS p FROM vulnerability_history o
           WHERE o.cluster_name = r.cluster_name AND o.namespace = r.namespace
             AND o.workload_kind = r.workload_kind AND o.workload = r.workload
             AND o.container = r.container AND o.cve_id = r.cve_id AND o.package = r.package
             AND o.package_path <> '')), '') END,
       CASE WHEN r.g_rows = 1 THEN r.installed_version ELSE coalesce((
         SELECT group_concat(v, ', ' ORDER BY v) FROM (
           SELECT DISTINCT o.installed_version AS v FROM vulnerability_history o
           WHERE o.cluster_name = r.cluster_name AND o.namespace = r.namespace
             AND o.workload_kind = r.workload_kind AND o.workload = r.workload
             AND o.container = r.container AND o.cve_id = r.cve_id AND o.package = r.package
             AND o.installed_version <> '')), '') END,
       r.fixed_version, r.title, r.link, r.image,
       CASE WHEN r.any_open THEN 'open' ELSE r.state END,
       r.g_count, r.severity
FROM (
    SELECT h.*,
           row_number() OVER (w ORDER BY h.last_seen DESC, (h.state = 'open') DESC,
               CASE h.severity WHEN 'CRITICAL' THEN 4 WHEN 'HIGH' THEN 3 WHEN 'MEDIUM' THEN 2
                               WHEN 'LOW' THEN 1 ELSE 0 END DESC,
               h.id DESC)                     AS rn,
           max(h.state = 'open') OVER w       AS any_open,
           min(h.first_seen) OVER w           AS g_first_seen,
           max(h.last_seen) OVER w            AS g_last_seen,
           max(h.fixed_at) OVER w             AS g_fixed_at,
           max(h.reintroduced_count) OVER w   AS g_count,
           count(*) OVER w                    AS g_rows
    FROM vulnerability_history h
    WINDOW w AS (PARTITION BY h.cluster_name, h.namespace, h.workload_kind, h.workload,
                              h.container, h.cve_id, h.package)
) r
WHERE r.rn = 1;
DROP TABLE vulnerability_history;
ALTER TABLE vulnerability_history_v3 RENAME TO vulnerability_history;
CREATE INDEX vulnerability_history_open ON vulnerability_history (cluster_name, severity)
    WHERE state = 'open';

-- lifecycle_events: new kinds and peak_severity (NULL for events recorded before 0003, read as
-- their severity). The outbox rows are set aside so that dropping the old table leaves no
-- reference to a missing event, then come back unchanged.
CREATE TEMP TABLE kijo_outbox_v3 AS SELECT * FROM notification_outbox;
DELETE FROM notification_outbox;
CREATE TABLE lifecycle_events_v3 (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id           TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN
                         ('new', 'fixed', 'withdrawn', 'reintroduced', 'reported_again',
                          'severity_changed', 'workload_removed', 'container_removed')),
    cluster_name       TEXT    NOT NULL,
    namespace          TEXT    NOT NULL,
    workload_kind      TEXT    NOT NULL,
    workload           TEXT    NOT NULL,
    container          TEXT    NOT NULL,
    image              TEXT    NOT NULL,
    cve_id             TEXT    NOT NULL,
    package            TEXT    NOT NULL,
    package_path       TEXT    NOT NULL,
    installed_version  TEXT    NOT NULL,
    fixed_version      TEXT    NOT NULL,
    severity           TEXT    NOT NULL,
    previous_severity  TEXT,
    title              TEXT    NOT NULL,
    link               TEXT    NOT NULL,
    reintroduced_count INTEGER NOT NULL,
    occurred_at        TEXT    NOT NULL,
    recorded_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    peak_severity      TEXT
);
INSERT INTO lifecycle_events_v3 (seq, event_id, kind, cluster_name, namespace, workload_kind,
    workload, container, image, cve_id, package, package_path, installed_version,
    fixed_version, severity, previous_severity, title, link, reintroduced_count, occurred_at,
    recorded_at)
SELECT seq, event_id, kind, cluster_name, namespace, workload_kind, workload, container, image,
       cve_id, package, package_path, installed_version, fixed_version, severity,
       previous_severity, title, link, reintroduced_count, occurred_at, recorded_at
FROM lifecycle_events ORDER BY seq;
-- Dropping a table drops its triggers without firing them.
DROP TABLE lifecycle_events;
ALTER TABLE lifecycle_events_v3 RENAME TO lifecycle_events;
CREATE INDEX lifecycle_events_cluster ON lifecycle_events (cluster_name, seq);
CREATE TRIGGER lifecycle_events_no_update BEFORE UPDATE ON lifecycle_events
    BEGIN SELECT RAISE(ABORT, 'lifecycle_events is append-only'); END;
CREATE TRIGGER lifecycle_events_no_delete BEFORE DELETE ON lifecycle_events
    BEGIN SELECT RAISE(ABORT, 'lifecycle_events is append-only'); END;
INSERT INTO notification_outbox SELECT * FROM temp.kijo_outbox_v3;
DROP TABLE temp.kijo_outbox_v3;

-- The Deployment revision and the uid of the report last applied to each container (see the
-- PostgreSQL migration); the uid comes from the report versions of the scan last applied.
ALTER TABLE scanned_containers ADD COLUMN revision INTEGER;
ALTER TABLE scanned_containers ADD COLUMN report_uid TEXT NOT NULL DEFAULT '';
UPDATE scanned_containers SET report_uid = coalesce((
    SELECT rv.report_uid FROM report_versions rv
    WHERE rv.cluster_name = scanned_containers.cluster_name
      AND rv.namespace = scanned_containers.namespace
      AND rv.workload_kind = scanned_containers.workload_kind
      AND rv.workload = scanned_containers.workload
      AND rv.container = scanned_containers.container
      AND rv.update_timestamp = scanned_containers.last_scan_at
    ORDER BY rv.recorded_at DESC, rv.report_uid LIMIT 1), '')
WHERE removed_at IS NULL;
