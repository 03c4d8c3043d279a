-- Scale-out: deliveries are split into partitions, each leased by one live host at a time.

-- The server's clock in milliseconds: every lease time is the server's, so hosts whose clocks
-- disagree still agree on when a lease has expired.
CREATE FUNCTION server_now_ms() RETURNS BIGINT
LANGUAGE SQL VOLATILE PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;

-- A stable hash of a delivery's lane: (subscriber, partition key), or (subscriber, message id)
-- for a message without a key. Its partition is this hash modulo the partition count, so
-- every message of one key and subscriber lies in one partition. SHA-256 does not change
-- between server versions, as the built-in hash functions may.
CREATE FUNCTION partition_hash(subscriber TEXT, lane TEXT) RETURNS BIGINT
LANGUAGE SQL IMMUTABLE PARALLEL SAFE STRICT
AS $$
    SELECT ('x' || substr(encode(sha256(convert_to(subscriber || chr(31) || lane, 'UTF8')), 'hex'), 1, 8))::BIT(32)::BIGINT
$$;

ALTER TABLE deliveries ADD COLUMN partition_hash BIGINT NOT NULL DEFAULT 0;
-- The partition lease under which the delivery's outcome was last committed.
ALTER TABLE deliveries ADD COLUMN lease_epoch BIGINT;
UPDATE deliveries d SET partition_hash = partition_hash(d.subscriber, COALESCE(d.partition_key, m.id))
FROM messages m WHERE m.seq = d.message_seq AND d.status <> 'done';

-- How many partitions the deliveries are split into: one row, changed only by
-- `host bus partitions --set N` while no host holds a lease.
CREATE TABLE cluster (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    partitions BIGINT NOT NULL CHECK (partitions BETWEEN 1 AND 4096)
);
INSERT INTO cluster (id, partitions) VALUES (1, 32);

-- Every grant of a lease gets a new epoch; a commit that finishes a delivery checks that the
-- epoch it was claimed under is still the partition's (and holds it until it commits), so a
-- host that lost a partition can never commit one of its deliveries.
CREATE SEQUENCE lease_epochs;

CREATE TABLE partition_leases (
    partition      BIGINT PRIMARY KEY,
    owner          TEXT,             -- the host id; NULL: free
    epoch          BIGINT NOT NULL DEFAULT 0,
    expires_at_ms  BIGINT NOT NULL DEFAULT 0,
    acquired_at_ms BIGINT
);
INSERT INTO partition_leases (partition) SELECT generate_series(0, 31);

-- The hosts running on this database, each with its heartbeat's expiry.
CREATE TABLE hosts (
    id            TEXT   PRIMARY KEY,
    name          TEXT   NOT NULL,   -- machine name and process id, for people
    address       TEXT   NOT NULL,   -- where it serves HTTP
    started_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
