-- An idempotency key being run by one host now, so the same key sent to two hosts at once runs
-- the handler once: the other host waits for the stored outcome. A claim ends when its owner
-- releases it, when the owner's database session ends (the owner holds the session advisory
-- lock `owner_lock` while it lives, so a host that dies frees its claims at once), or at its
-- expiry. UNLOGGED: a claim needs no durability (after a server crash the stored outcome still
-- decides), so taking one costs no WAL flush.
CREATE UNLOGGED TABLE idempotency_claims (
    key           TEXT   PRIMARY KEY,
    owner         TEXT   NOT NULL,
    owner_lock    BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
