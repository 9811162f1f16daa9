-- kijo-agent schema, SQLite. Same tables and meanings as sql/postgres/0001_init.sql.
-- Timestamps are TEXT in RFC 3339 UTC with exactly six fractional digits
-- (2026-01-02T03:04:05.000000Z), so text order is time order.

CREATE TABLE vulnerability_history (
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
    state              TEXT    NOT NULL CHECK (state IN ('open', 'fixed', 'workload_removed')),
    reintroduced_count INTEGER NOT NULL DEFAULT 0,
    UNIQUE (cluster_name, namespace, workload_kind, workload, container, cve_id, package, package_path)
);
CREATE INDEX vulnerability_history_open ON vulnerability_history (cluster_name, severity)
    WHERE state = 'open';

CREATE TABLE clusters (
    cluster_name          TEXT PRIMARY KEY,
    baseline_completed_at TEXT NOT NULL
);

CREATE TABLE scanned_containers (
    cluster_name   TEXT NOT NULL,
    namespace      TEXT NOT NULL,
    workload_kind  TEXT NOT NULL,
    workload       TEXT NOT NULL,
    container      TEXT NOT NULL,
    image          TEXT NOT NULL DEFAULT '',
    last_scan_at   TEXT NOT NULL,
    removed_at     TEXT,
    PRIMARY KEY (cluster_name, namespace, workload_kind, workload, container)
);

CREATE TABLE report_versions (
    cluster_name      TEXT NOT NULL,
    report_uid        TEXT NOT NULL,
    resource_version  TEXT NOT NULL,
    update_timestamp  TEXT NOT NULL,
    namespace         TEXT NOT NULL,
    workload_kind     TEXT NOT NULL,
    workload          TEXT NOT NULL,
    container         TEXT NOT NULL,
    recorded_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    PRIMARY KEY (cluster_name, report_uid)
);

CREATE TABLE lifecycle_events (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id           TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN
                         ('new', 'fixed', 'reintroduced', 'severity_changed', 'workload_removed')),
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
    recorded_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX lifecycle_events_cluster ON lifecycle_events (cluster_name, seq);
CREATE TRIGGER lifecycle_events_no_update BEFORE UPDATE ON lifecycle_events
    BEGIN SELECT RAISE(ABORT, 'lifecycle_events is append-only'); END;
CREATE TRIGGER lifecycle_events_no_delete BEFORE DELETE ON lifecycle_events
    BEGIN SELECT RAISE(ABORT, 'lifecycle_events is append-only'); END;

CREATE TABLE notification_outbox (
    event_id        TEXT    NOT NULL REFERENCES lifecycle_events (event_id),
    target          TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    last_error      TEXT,
    delivered_at    TEXT,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE state = 'pending';
