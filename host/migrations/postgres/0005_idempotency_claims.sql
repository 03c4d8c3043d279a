-- An idempotency key being run by one host now, so the same key sent to two hosts at once runs
-- the handler once: the other host waits for the stored outcome. A claim expires, so a host
-- that dies while running a key holds up the others only that long. UNLOGGED: a claim needs no
-- durability (after a server crash the stored outcome still decides), so taking one costs no
-- WAL flush.
CREATE UNLOGGED TABLE idempotency_claims (
    key           TEXT   PRIMARY KEY,
    owner         TEXT   NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
