-- One row the host rewrites to learn whether commits work again after the database failed
-- (a full disk), when no other write is waiting to tell it.
CREATE TABLE write_probe (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);
