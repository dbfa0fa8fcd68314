-- Version 2: what the sync engine keeps.
-- Local changes not yet batched for the relay, written in the transaction of the edit itself,
-- so an app killed before it syncs loses nothing.
CREATE TABLE unsent (
    id    INTEGER PRIMARY KEY,
    space TEXT NOT NULL,
    bytes BLOB NOT NULL
) STRICT;

-- Batches numbered with this device's own sequence and awaiting the relay's acknowledgement.
-- After a crash they are pushed again under the same number; the relay deduplicates.
CREATE TABLE outbox (
    space      TEXT NOT NULL,
    device_seq INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    changes    INTEGER NOT NULL,
    PRIMARY KEY (space, device_seq)
) STRICT;

-- Per space: where pulling resumes (advanced in the transaction that stores what was pulled),
-- the next sequence number to give a batch, and what the relay last confirmed.
CREATE TABLE sync_state (
    space            TEXT PRIMARY KEY,
    cursor           INTEGER NOT NULL DEFAULT 0,
    next_seq         INTEGER NOT NULL DEFAULT 1,
    last_ack_relay   INTEGER NOT NULL DEFAULT 0,
    snapshot_covers  INTEGER NOT NULL DEFAULT 0,
    -- A chunk up to this relay sequence was refused: wait for a snapshot past it, and never
    -- upload one (it would be missing what was refused).
    heal_after       INTEGER NOT NULL DEFAULT 0,
    last_synced      INTEGER
) STRICT;

-- The highest sequence number applied (or refused as tampered) from each other device, so a
-- gap or a replay is noticed.
CREATE TABLE peer_seqs (
    space    TEXT NOT NULL,
    device   BLOB NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (space, device)
) STRICT;
