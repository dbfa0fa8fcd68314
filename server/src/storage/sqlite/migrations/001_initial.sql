-- Spaces: the token hash and the counters the writer keeps exact.
CREATE TABLE spaces (
    id           INTEGER PRIMARY KEY,
    space_id     BLOB    NOT NULL UNIQUE,   -- 32 bytes
    token_hash   BLOB    NOT NULL,          -- SHA-256 of the bearer token
    next_seq     INTEGER NOT NULL,          -- next relay sequence to assign (head + 1)
    bytes_used   INTEGER NOT NULL,          -- live chunk payloads + snapshot payload
    covers       INTEGER NOT NULL,          -- relay sequence the snapshot covers (0: none)
    created_at   INTEGER NOT NULL           -- unix seconds
);

-- The log. Rows are appended in commit order (the rowid), so concurrent pushes to many spaces
-- fill table pages sequentially instead of rewriting one page per space per commit; the two
-- indexes give each space its order and its dedup key. A pruned chunk keeps its row with a
-- NULL payload, so a replayed push of it is still answered with its original relay sequence.
CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY,
    space        INTEGER NOT NULL,          -- spaces.id
    seq          INTEGER NOT NULL,          -- relay sequence
    device_id    BLOB    NOT NULL,          -- 16 bytes
    device_seq   INTEGER NOT NULL,
    payload      BLOB                       -- NULL once pruned
);

CREATE UNIQUE INDEX chunks_by_seq ON chunks (space, seq);
CREATE UNIQUE INDEX chunks_by_device ON chunks (space, device_id, device_seq);

-- At most one snapshot per space.
CREATE TABLE snapshots (
    space        INTEGER PRIMARY KEY,       -- spaces.id
    covers       INTEGER NOT NULL,
    payload      BLOB    NOT NULL
);
