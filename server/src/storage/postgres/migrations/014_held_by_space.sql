-- Pruned rows whose payloads are still held, by space and sequence: a snapshot sums and
-- deletes what its space still holds without reading the rows whose payloads are gone (every
-- row is kept after its payload, so those are most of a long-lived space). Only rows between
-- their prune and their sweep are in it, so pushes do not maintain it.
CREATE INDEX chunks_held_by_space ON chunks (space, seq)
    WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
CREATE INDEX rollups_held_by_space ON rollups (space, seq)
    WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
