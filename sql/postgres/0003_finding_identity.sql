-- Issue 10: a finding is (workload container, vulnerability id, package); package_path is an
-- attribute. Findings can be withdrawn (the scanner stopped reporting them on an unchanged image)
-- or closed because their container left the workload; events remember the peak severity.
-- Applied once, inside the migration transaction; no lifecycle event is written.

-- Rows that differ only in package_path were instances of one finding: merge each group into the
-- row seen most recently (ties: an open row, then the highest severity, then the newest id).
-- Paths and installed versions become the sorted (byte order, as the agent sorts them) distinct
-- non-empty values joined by ', '.
CREATE TEMP TABLE kijo_merge ON COMMIT DROP AS
SELECT (array_agg(id ORDER BY last_seen DESC, (state = 'open') DESC,
            CASE severity WHEN 'CRITICAL' THEN 4 WHEN 'HIGH' THEN 3 WHEN 'MEDIUM' THEN 2
                          WHEN 'LOW' THEN 1 ELSE 0 END DESC,
            id DESC))[1]                                              AS keep_id,
       cluster_name, namespace, workload_kind, workload, container, cve_id, package,
       bool_or(state = 'open')                                        AS any_open,
       min(first_seen)                                                AS first_seen,
       max(last_seen)                                                 AS last_seen,
       max(fixed_at)                                                  AS fixed_at,
       max(reintroduced_count)                                        AS reintroduced_count,
       coalesce(string_agg(DISTINCT NULLIF(package_path, '') COLLATE "C", ', '
                           ORDER BY NULLIF(package_path, '') COLLATE "C"), '') AS package_path,
       coalesce(string_agg(DISTINCT NULLIF(installed_version, '') COLLATE "C", ', '
                           ORDER BY NULLIF(installed_version, '') COLLATE "C"), '')
                                                                      AS installed_version
FROM vulnerability_history
GROUP BY cluster_name, namespace, workload_kind, workload, container, cve_id, package
HAVING count(*) > 1;

UPDATE vulnerability_history h SET
    state              = CASE WHEN m.any_open THEN 'open' ELSE h.state END,
    first_seen         = m.first_seen,
    last_seen          = m.last_seen,
    fixed_at           = CASE WHEN m.any_open THEN NULL ELSE m.fixed_at END,
    reintroduced_count = m.reintroduced_count,
    package_path       = m.package_path,
    installed_version  = m.installed_version
FROM kijo_merge m
WHERE h.id = m.keep_id;

DELETE FROM vulnerability_history h
USING kijo_merge m
WHERE h.cluster_name = m.cluster_name AND h.namespace = m.namespace
  AND h.workload_kind = m.workload_kind AND h.workload = m.workload
  AND h.container = m.container AND h.cve_id = m.cve_id AND h.package = m.package
  AND h.id <> m.keep_id;

-- The highest severity of the current open period; before 0003 only the current one was kept.
ALTER TABLE vulnerability_history ADD COLUMN peak_severity TEXT;
UPDATE vulnerability_history SET peak_severity = severity;
ALTER TABLE vulnerability_history ALTER COLUMN peak_severity SET NOT NULL;

ALTER TABLE vulnerability_history
    DROP CONSTRAINT vulnerability_history_finding,
    ADD CONSTRAINT vulnerability_history_finding UNIQUE
        (cluster_name, namespace, workload_kind, workload, container, cve_id, package),
    DROP CONSTRAINT vulnerability_history_state_check,
    ADD CONSTRAINT vulnerability_history_state_check CHECK (state IN
        ('open', 'fixed', 'withdrawn', 'workload_removed', 'container_removed'));

-- Append-only: changing a constraint and adding a column update no row, so the trigger stays.
-- peak_severity is NULL for events recorded before 0003 (read as their severity).
ALTER TABLE lifecycle_events
    ADD COLUMN peak_severity TEXT,
    DROP CONSTRAINT lifecycle_events_kind_check,
    ADD CONSTRAINT lifecycle_events_kind_check CHECK (kind IN
        ('new', 'fixed', 'withdrawn', 'reintroduced', 'reported_again', 'severity_changed',
         'workload_removed', 'container_removed'));

-- The Deployment revision and the uid of the report last applied to each container: a higher
-- revision applies even when its scan is older (a rollback), and the poll cycle sees which
-- known report is the current one. The uid is taken from the report versions of the scan last
-- applied, so a database upgraded in place knows it too.
ALTER TABLE scanned_containers
    ADD COLUMN revision BIGINT,
    ADD COLUMN report_uid TEXT NOT NULL DEFAULT '';
UPDATE scanned_containers sc SET report_uid = rv.report_uid
FROM (SELECT DISTINCT ON (cluster_name, namespace, workload_kind, workload, container,
                          update_timestamp)
             cluster_name, namespace, workload_kind, workload, container, update_timestamp,
             report_uid
      FROM report_versions
      ORDER BY cluster_name, namespace, workload_kind, workload, container, update_timestamp,
               recorded_at DESC, report_uid) rv
WHERE rv.cluster_name = sc.cluster_name AND rv.namespace = sc.namespace
  AND rv.workload_kind = sc.workload_kind AND rv.workload = sc.workload
  AND rv.container = sc.container AND rv.update_timestamp = sc.last_scan_at
  AND sc.removed_at IS NULL;
