-- Chunk and rollup rows outlive their payloads (a pruned chunk's hash answers replays), so the
-- relay-wide total now counts 150 bytes (`ROW_BYTES`) for each row kept, beside the payloads:
-- uncounted, rows let a client grow the file without bound. A space's own quota still counts
-- payloads alone, so no space is ever full for good. `rows` is each space's count of kept rows.
ALTER TABLE spaces ADD COLUMN rows INTEGER NOT NULL DEFAULT 0;
UPDATE spaces SET rows = (SELECT COUNT(*) FROM chunks c WHERE c.space = spaces.id)
                       + (SELECT COUNT(*) FROM rollups r WHERE r.space = spaces.id);
-- Each space itself counts 9750 bytes (`SPACE_BYTES`: its row and the 64 devices it may list
-- as seen), and each erased space's tombstone, kept for good, 150 (`TOMBSTONE_BYTES`), so
-- neither empty spaces nor erased ones grow the file past the limit.
UPDATE relay_usage SET bytes_used =
    (SELECT COALESCE(SUM(bytes_used + 150 * rows + 9750), 0) FROM spaces)
  + 150 * (SELECT COUNT(*) FROM erased);
