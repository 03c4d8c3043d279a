-- `host trace`: every message of one request, found without scanning the log.
CREATE INDEX messages_by_correlation ON messages (correlation_id);
