-- The outbox log: every event ever emitted, in commit order (seq).
CREATE TABLE messages (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    kind           TEXT    NOT NULL,
    partition_key  TEXT,
    tenant_id      TEXT,
    correlation_id TEXT    NOT NULL,
    causation_id   TEXT,
    actor          TEXT,
    schema_version INTEGER NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    headers        TEXT    NOT NULL, -- JSON array of [name, value] pairs
    payload        BLOB    NOT NULL,
    emitted_by     TEXT    NOT NULL  -- the plugin whose unit of work emitted it
);

-- One row per message and subscriber. `done` is the inbox mark: it commits together with the
-- subscriber's effects, so a delivery whose first run committed is never run again.
CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    message_seq        INTEGER NOT NULL REFERENCES messages (seq),
    subscriber         TEXT    NOT NULL,
    partition_key      TEXT,
    status             TEXT    NOT NULL CHECK (status IN ('pending', 'done', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error         TEXT,
    error_class        TEXT,
    first_failed_at_ms INTEGER,
    last_failed_at_ms  INTEGER,
    handled_by         TEXT,    -- plugin version that completed it
    completed_at_ms    INTEGER,
    UNIQUE (message_seq, subscriber)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_ms) WHERE status = 'pending';
-- Ordering: the earliest unfinished delivery of a (subscriber, key) holds back the later ones.
CREATE INDEX deliveries_by_key ON deliveries (subscriber, partition_key, message_seq)
    WHERE status <> 'done';

-- Each plugin's keyed state. A delete leaves a tombstone (value NULL) with a new version, so
-- optimistic version checks can never mistake a deleted-and-recreated key for an unchanged one.
CREATE TABLE state (
    plugin  TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB,
    version INTEGER NOT NULL,
    PRIMARY KEY (plugin, key)
) WITHOUT ROWID;

-- The first outcome of each idempotent command, replayed until it expires.
CREATE TABLE idempotency (
    key           TEXT    PRIMARY KEY,
    command_kind  TEXT    NOT NULL,
    request_hash  TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at_ms);
