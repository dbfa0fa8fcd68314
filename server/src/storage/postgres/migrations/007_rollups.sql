-- Rollups: one payload a device sealed again for a run of its own chunks (see the SQLite
-- backend's 008_rollups.sql). A deleted rollup keeps its row with a NULL payload.
CREATE TABLE rollups (
    space       bigint NOT NULL,               -- spaces.id
    seq         bigint NOT NULL,               -- relay sequence of its first chunk (its place)
    last_seq    bigint NOT NULL,               -- relay sequence of its last chunk
    device_id   bytea  NOT NULL,               -- 16 bytes
    first_dseq  bigint NOT NULL,               -- device sequences it stands for
    last_dseq   bigint NOT NULL,
    size        bigint NOT NULL,               -- payload bytes, kept after deletion
    payload     bytea,                         -- NULL once deleted
    pruned_at   bigint,                        -- unix seconds; NULL while live
    PRIMARY KEY (space, seq)
);
CREATE UNIQUE INDEX rollups_by_device ON rollups (space, device_id, first_dseq);
CREATE INDEX rollups_held ON rollups (pruned_at) WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
ALTER TABLE rollups ALTER COLUMN payload SET STORAGE EXTERNAL;
-- The relay sequence of the rollup that stands for the chunk (NULL: none); it stays after the
-- rollup is deleted, and pulls then serve the chunk itself again.
ALTER TABLE chunks ADD COLUMN rollup_seq bigint;
