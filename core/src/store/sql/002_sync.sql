-- Version 2: room for the sync engine.
-- Chunks this device has sealed but the relay has not acknowledged. They live in the same
-- database as the edit so an app killed mid-sync loses nothing and re-pushes idempotently.
CREATE TABLE outbox (
    space      TEXT NOT NULL,
    device_seq INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (space, device_seq)
) STRICT;

-- Where pulling resumes, per space; advanced in the transaction that stores what was pulled.
CREATE TABLE cursors (
    space     TEXT PRIMARY KEY,
    relay_seq INTEGER NOT NULL DEFAULT 0
) STRICT;

-- The highest sequence seen from each device, to refuse gaps and replays.
CREATE TABLE peer_seqs (
    space    TEXT NOT NULL,
    device   TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (space, device)
) STRICT;
