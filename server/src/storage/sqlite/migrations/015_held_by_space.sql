-- Pruned rows whose payloads are still held, by space and by when they were pruned: a
-- snapshot finds and deletes its space's expired ones without reading the rest. Only rows
-- between their prune and their sweep are in it, so pushes do not maintain it.
CREATE INDEX chunks_held_by_space ON chunks (space, pruned_at)
    WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
CREATE INDEX rollups_held_by_space ON rollups (space, pruned_at)
    WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
-- Payload bytes of each space's pruned rows not yet deleted (part of `bytes_used`), kept as a
-- counter: a snapshot needs their sum, and reading them all at every snapshot let repeated
-- snapshots hold the writer for as long as a scan of days of pruned rows.
ALTER TABLE spaces ADD COLUMN pruned_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE spaces SET pruned_bytes =
    COALESCE((SELECT SUM(length(c.payload)) FROM chunks c
               WHERE c.space = spaces.id AND c.pruned_at IS NOT NULL AND c.payload IS NOT NULL), 0)
  + COALESCE((SELECT SUM(r.size) FROM rollups r
               WHERE r.space = spaces.id AND r.pruned_at IS NOT NULL AND r.payload IS NOT NULL), 0);
