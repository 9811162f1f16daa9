-- Per-cluster progress that must survive restarts. The baseline (the first complete cycle,
-- which records what already exists without telling anyone) ends only when a cycle finished:
-- a first cycle interrupted half-way must not turn the rest of the cluster into "new" findings.
CREATE TABLE cluster_state (
    cluster_name           TEXT PRIMARY KEY,
    baseline_completed_at  TEXT NOT NULL
);
