-- Every kept chunk and rollup row now counts 150 bytes (`ROW_BYTES`) beside its payload, for as
-- long as the row is kept: rows outlive their payloads, and uncounted they let a space grow the
-- file without bound. Charge the rows already stored, then recount the relay total.
UPDATE spaces SET bytes_used = bytes_used
  + 150 * ((SELECT COUNT(*) FROM chunks c WHERE c.space = spaces.id)
         + (SELECT COUNT(*) FROM rollups r WHERE r.space = spaces.id));
UPDATE relay_usage SET bytes_used = (SELECT COALESCE(SUM(bytes_used), 0) FROM spaces);
