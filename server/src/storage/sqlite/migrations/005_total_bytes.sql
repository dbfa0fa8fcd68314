-- The bytes of all spaces together, kept beside the per-space counters in the same transaction
-- so the relay-wide quota costs no SUM per push. One row.
CREATE TABLE relay_usage (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    bytes_used  INTEGER NOT NULL
);
INSERT INTO relay_usage (id, bytes_used) SELECT 1, COALESCE(SUM(bytes_used), 0) FROM spaces;
