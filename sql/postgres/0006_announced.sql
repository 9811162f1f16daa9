-- Which findings were announced: opened as news (a "new" event), not recorded silently by the
-- cluster's baseline, a coverage baseline (a namespace or report kind newly covered, a workload
-- scanned late that existed before) or a container rename. The oldest-announced gauge
-- (kijo_findings_open_oldest_first_seen_timestamp_seconds) and the alert built on it count only
-- these. Before this column the gauge took "first seen after the cluster's baseline", which
-- counts a coverage baseline's findings as announced, and misses news whose scan predates the
-- baseline's end (first_seen is the scan time).
--
-- Rows from before are announced exactly when the event log has their "new" event.
ALTER TABLE vulnerability_history ADD COLUMN announced BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE vulnerability_history h SET announced = TRUE
    FROM (SELECT DISTINCT cluster_name, namespace, workload_kind, workload, container, cve_id,
                 package
          FROM lifecycle_events WHERE kind = 'new') e
    WHERE e.cluster_name = h.cluster_name AND e.namespace = h.namespace
      AND e.workload_kind = h.workload_kind AND e.workload = h.workload
      AND e.container = h.container AND e.cve_id = h.cve_id AND e.package = h.package;
