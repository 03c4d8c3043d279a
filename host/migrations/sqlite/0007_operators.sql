-- The hosts serving HTTP on this database: `host bus` and `host trace` go through a running
-- host's admin API when one answers as the host its row names.
CREATE TABLE running_hosts (
    id            TEXT   PRIMARY KEY,
    address       TEXT   NOT NULL,   -- base URL of its HTTP server, e.g. http://127.0.0.1:7878
    started_at_ms BIGINT NOT NULL
);

-- Times operators set: `metrics_reset` (`host bus metrics --reset`), ms since the epoch.
CREATE TABLE operator_marks (
    name  TEXT   PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
