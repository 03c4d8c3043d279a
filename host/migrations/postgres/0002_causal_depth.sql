-- How deep in a causal chain each message lies: 0 for a command, and one more than its cause
-- for an event. The loop guard dead-letters a delivery past its subscriber's limit.
ALTER TABLE messages ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;
