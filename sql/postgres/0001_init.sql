-- kijo-agent schema, PostgreSQL. Applied once, inside a transaction holding an advisory lock.
-- Every row carries cluster_name: agents of several clusters may share one database and only
-- ever read or write rows of their own KIJO_CLUSTER_NAME.

-- One row per finding per workload container: the original README's table, extended.
-- `fixed_at` is when the finding stopped being open; `state` says why (fixed or workload_removed).
CREATE TABLE vulnerability_history (
    id                 BIGSERIAL PRIMARY KEY,
    cluster_name       TEXT        NOT NULL,
    namespace          TEXT        NOT NULL,            -- '' for cluster-scoped reports
    workload           TEXT        NOT NULL,
    cve_id             TEXT        NOT NULL,            -- CVE, GHSA, DLA … as Trivy reports it
    severity           TEXT        NOT NULL,
    first_seen         TIMESTAMPTZ NOT NULL,
    last_seen          TIMESTAMPTZ NOT NULL,
    fixed_at           TIMESTAMPTZ,
    workload_kind      TEXT        NOT NULL,
    container          TEXT        NOT NULL,
    package            TEXT        NOT NULL,
    package_path       TEXT        NOT NULL DEFAULT '',
    installed_version  TEXT        NOT NULL DEFAULT '',
    fixed_version      TEXT        NOT NULL DEFAULT '',
    title              TEXT        NOT NULL DEFAULT '',
    link               TEXT        NOT NULL DEFAULT '',
    image              TEXT        NOT NULL DEFAULT '',
    state              TEXT        NOT NULL CHECK (state IN ('open', 'fixed', 'workload_removed')),
    reintroduced_count INTEGER     NOT NULL DEFAULT 0,
    CONSTRAINT vulnerability_history_finding UNIQUE
        (cluster_name, namespace, workload_kind, workload, container, cve_id, package, package_path)
) WITH (fillfactor = 80); -- room for in-page (HOT) updates: every rescan moves last_seen
CREATE INDEX vulnerability_history_open ON vulnerability_history (cluster_name, severity)
    WHERE state = 'open';

-- Per cluster: when its first complete cycle (the baseline) finished. Until then every finding is
-- recorded without a "new" event, even if the first cycle was interrupted and is being repeated.
CREATE TABLE clusters (
    cluster_name          TEXT        PRIMARY KEY,
    baseline_completed_at TIMESTAMPTZ NOT NULL
);

-- One row per workload container ever scanned: the newest scan applied (older or equal scans are
-- ignored) and whether the workload is gone. Its existence for a cluster ends the baseline.
CREATE TABLE scanned_containers (
    cluster_name   TEXT        NOT NULL,
    namespace      TEXT        NOT NULL,
    workload_kind  TEXT        NOT NULL,
    workload       TEXT        NOT NULL,
    container      TEXT        NOT NULL,
    image          TEXT        NOT NULL DEFAULT '',
    last_scan_at   TIMESTAMPTZ NOT NULL,
    removed_at     TIMESTAMPTZ,
    PRIMARY KEY (cluster_name, namespace, workload_kind, workload, container)
);

-- The version of every report already applied, so a cycle can skip unchanged reports without
-- reading them (uid changes on TTL re-creation and rollouts, resource_version on every update).
CREATE TABLE report_versions (
    cluster_name      TEXT        NOT NULL,
    report_uid        TEXT        NOT NULL,
    resource_version  TEXT        NOT NULL,
    update_timestamp  TIMESTAMPTZ NOT NULL,
    namespace         TEXT        NOT NULL,
    workload_kind     TEXT        NOT NULL,
    workload          TEXT        NOT NULL,
    container         TEXT        NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_name, report_uid)
);

-- Append-only: what happened, with everything a notification needs to be rendered later.
-- event_id is derived from the change itself, so a second writer of the same change collides.
CREATE TABLE lifecycle_events (
    seq                BIGSERIAL PRIMARY KEY,
    event_id           TEXT        NOT NULL UNIQUE,
    kind               TEXT        NOT NULL CHECK (kind IN
                         ('new', 'fixed', 'reintroduced', 'severity_changed', 'workload_removed')),
    cluster_name       TEXT        NOT NULL,
    namespace          TEXT        NOT NULL,
    workload_kind      TEXT        NOT NULL,
    workload           TEXT        NOT NULL,
    container          TEXT        NOT NULL,
    image              TEXT        NOT NULL,
    cve_id             TEXT        NOT NULL,
    package            TEXT        NOT NULL,
    package_path       TEXT        NOT NULL,
    installed_version  TEXT        NOT NULL,
    fixed_version      TEXT        NOT NULL,
    severity           TEXT        NOT NULL,
    previous_severity  TEXT,
    title              TEXT        NOT NULL,
    link               TEXT        NOT NULL,
    reintroduced_count INTEGER     NOT NULL,
    occurred_at        TIMESTAMPTZ NOT NULL,
    recorded_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX lifecycle_events_cluster ON lifecycle_events (cluster_name, seq);

CREATE FUNCTION kijo_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lifecycle_events is append-only';
END;
$$;
CREATE TRIGGER lifecycle_events_append_only BEFORE UPDATE OR DELETE ON lifecycle_events
    FOR EACH ROW EXECUTE FUNCTION kijo_events_append_only();

-- Delivery work per event and notification target, written in the same transaction as the event.
CREATE TABLE notification_outbox (
    event_id        TEXT        NOT NULL REFERENCES lifecycle_events (event_id),
    target          TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE state = 'pending';
