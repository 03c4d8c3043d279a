-- Due time as an index. A delivery written with its next attempt in the future (a scheduled
-- event, a retry) is `waiting`. The dispatcher's scan walks the deliveries that are not waiting
-- in commit order, and reaches the waiting ones only through their due time, once they have
-- come due: a delivery that is not due yet is never read by a scan.
ALTER TABLE deliveries ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET waiting = 1
 WHERE status = 'pending'
   AND (attempts > 0
        OR next_attempt_at_ms > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
DROP INDEX deliveries_pending_by_seq;
CREATE INDEX deliveries_ready_by_seq ON deliveries (message_seq)
    WHERE status = 'pending' AND waiting = 0;
CREATE INDEX deliveries_waiting ON deliveries (next_attempt_at_ms)
    WHERE status = 'pending' AND waiting = 1;
