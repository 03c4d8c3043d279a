-- The dispatcher's scan walks pending deliveries in commit order and stops at its limit;
-- without this index it sorted every due delivery on each scan.
CREATE INDEX deliveries_pending_by_seq ON deliveries (message_seq) WHERE status = 'pending';
