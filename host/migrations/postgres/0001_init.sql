-- The same schema as the SQLite backend's migrations, in PostgreSQL's types: every integer is
-- BIGINT (read as i64 by both backends), blobs are BYTEA.

-- The outbox log: every event ever emitted, in commit order (seq).
CREATE TABLE messages (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT   NOT NULL UNIQUE,
    kind           TEXT   NOT NULL,
    partition_key  TEXT,
    tenant_id      TEXT,
    correlation_id TEXT   NOT NULL,
    causation_id   TEXT,
    actor          TEXT,
    schema_version BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    headers        TEXT   NOT NULL, -- JSON array of [name, value] pairs
    payload        BYTEA  NOT NULL,
    emitted_by     TEXT   NOT NULL  -- the plugin whose unit of work emitted it
);

-- One row per message and subscriber. `done` is the inbox mark: it commits together with the
-- subscriber's effects, so a delivery whose first run committed is never run again.
CREATE TABLE deliveries (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_seq        BIGINT NOT NULL REFERENCES messages (seq),
    subscriber         TEXT   NOT NULL,
    partition_key      TEXT,
    status             TEXT   NOT NULL CHECK (status IN ('pending', 'done', 'dead')),
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error         TEXT,
    error_class        TEXT,
    first_failed_at_ms BIGINT,
    last_failed_at_ms  BIGINT,
    handled_by         TEXT,    -- plugin version that completed it
    completed_at_ms    BIGINT,
    UNIQUE (message_seq, subscriber)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_ms) WHERE status = 'pending';
-- Ordering: the earliest unfinished delivery of a (subscriber, key) holds back the later ones.
CREATE INDEX deliveries_by_key ON deliveries (subscriber, partition_key, message_seq)
    WHERE status <> 'done';
-- Retention: finished deliveries (inbox marks) are deleted in batches by completion time.
CREATE INDEX deliveries_done ON deliveries (completed_at_ms) WHERE status = 'done';
-- The dispatcher's scan walks pending deliveries in commit order and stops at its limit.
CREATE INDEX deliveries_pending_by_seq ON deliveries (message_seq) WHERE status = 'pending';

-- Each plugin's keyed state. A delete leaves a tombstone (value NULL) with a new version, so
-- optimistic version checks can never mistake a deleted-and-recreated key for an unchanged one.
CREATE TABLE state (
    plugin  TEXT   NOT NULL,
    key     TEXT   NOT NULL,
    value   BYTEA,
    version BIGINT NOT NULL,
    PRIMARY KEY (plugin, key)
);

-- The first outcome of each idempotent command, replayed until it expires.
CREATE TABLE idempotency (
    key           TEXT   PRIMARY KEY,
    command_kind  TEXT   NOT NULL,
    request_hash  TEXT   NOT NULL,
    status        BIGINT NOT NULL,
    body          BYTEA  NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at_ms);
