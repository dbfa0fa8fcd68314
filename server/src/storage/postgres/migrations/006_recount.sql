-- Pruned chunks used to stop counting when they were pruned; they now count until the sweep
-- deletes them. Recount every space (its held payloads and its snapshot) and the relay total
-- from the rows, so chunks pruned before the upgrade are not given back a second time.
UPDATE spaces SET bytes_used =
    COALESCE((SELECT SUM(length(c.payload)) FROM chunks c
               WHERE c.space = spaces.id AND c.payload IS NOT NULL), 0)
  + COALESCE((SELECT length(s.payload) FROM snapshots s WHERE s.space = spaces.id), 0);
UPDATE relay_usage SET bytes_used = CASE WHEN shard = 0
    THEN (SELECT COALESCE(SUM(bytes_used), 0) FROM spaces) ELSE 0 END;
