-- Retention: finished deliveries (inbox marks) are deleted in batches by completion time.
CREATE INDEX deliveries_done ON deliveries (completed_at_ms) WHERE status = 'done';
