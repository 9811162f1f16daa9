-- Coverage baselines: since when the agent covers each scope, one row per cluster, namespace
-- ('' for cluster-scoped reports, '*' for KIJO_NAMESPACES=all) and report kind. A row is written
-- at the end of the first cycle that covered its scope and never deleted: narrowing
-- KIJO_NAMESPACES keeps it, so widening again compares with what the agent saw before.
--
-- No row is written here: the migration cannot know which namespaces an existing agent covers.
-- A cluster whose baseline completed but that has no coverage row (a store upgraded from
-- schema 3) gets rows for the scopes of its first cycle after the upgrade, dated at its
-- baseline completion: that agent has covered its configured namespaces since then. No event
-- is written.
CREATE TABLE coverage (
    cluster_name  TEXT        NOT NULL,
    namespace     TEXT        NOT NULL,
    report_kind   TEXT        NOT NULL,
    covered_since TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cluster_name, namespace, report_kind)
);
