-- Rollups: one payload a device sealed again for a run of its own chunks, served in place of
-- them to a device whose cursor is before the first. A deleted rollup keeps its row with a NULL
-- payload, so a replay is still answered as a duplicate and no other rollup can overlap it.
CREATE TABLE rollups (
    id          INTEGER PRIMARY KEY,
    space       INTEGER NOT NULL,          -- spaces.id
    seq         INTEGER NOT NULL,          -- relay sequence of its first chunk (its place)
    last_seq    INTEGER NOT NULL,          -- relay sequence of its last chunk
    device_id   BLOB    NOT NULL,          -- 16 bytes
    first_dseq  INTEGER NOT NULL,          -- device sequences it stands for, stored bit for bit
    last_dseq   INTEGER NOT NULL,
    size        INTEGER NOT NULL,          -- payload bytes, kept after deletion for the sums
    payload     BLOB,                      -- NULL once deleted
    pruned_at   INTEGER                    -- unix seconds; NULL while live
);
CREATE UNIQUE INDEX rollups_by_seq ON rollups (space, seq);
CREATE UNIQUE INDEX rollups_by_device ON rollups (space, device_id, first_dseq);
CREATE INDEX rollups_held ON rollups (pruned_at) WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
-- The relay sequence of the rollup that stands for the chunk (NULL: none). It stays after the
-- rollup is deleted; pulls then serve the chunk itself again.
ALTER TABLE chunks ADD COLUMN rollup_seq INTEGER;
