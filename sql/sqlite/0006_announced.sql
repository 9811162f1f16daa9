-- Same as sql/postgres/0006_announced.sql: whether a finding was opened as news (a "new"
-- event) rather than recorded silently. Rows from before are announced exactly when the event
-- log has their "new" event; a temporary index keeps that lookup from scanning the log once per
-- finding.
ALTER TABLE vulnerability_history ADD COLUMN announced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX lifecycle_events_new_0006 ON lifecycle_events
    (cluster_name, namespace, workload_kind, workload, container, cve_id, package)
    WHERE kind = 'new';
UPDATE vulnerability_history SET announced = 1
    WHERE EXISTS (
        SELECT 1 FROM lifecycle_events e
        WHERE e.kind = 'new' AND e.cluster_name = vulnerability_history.cluster_name
          AND e.namespace = vulnerability_history.namespace
          AND e.workload_kind = vulnerability_history.workload_kind
          AND e.workload = vulnerability_history.workload
          AND e.container = vulnerability_history.container
          AND e.cve_id = vulnerability_history.cve_id
          AND e.package = vulnerability_history.package);
DROP INDEX lifecycle_events_new_0006;
