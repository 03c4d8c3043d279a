-- One row the host rewrites to learn whether commits work again after the database failed
-- (a server that went away), when no other write is waiting to tell it.
CREATE TABLE write_probe (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    at_ms BIGINT NOT NULL
);
