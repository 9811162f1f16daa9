-- Same as sql/postgres/0004_coverage.sql.
CREATE TABLE coverage (
    cluster_name  TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    report_kind   TEXT NOT NULL,
    covered_since TEXT NOT NULL,
    PRIMARY KEY (cluster_name, namespace, report_kind)
);
