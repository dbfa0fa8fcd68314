-- The SHA-256 of each chunk's payload, kept after pruning, so a push that reuses a device's
-- sequence with another payload (a device rolled back or copied) is refused as a conflict
-- instead of being acknowledged as a duplicate. Rows from before this migration have none:
-- they are compared by payload while it is held, and count as duplicates once pruned.
ALTER TABLE chunks ADD COLUMN payload_hash BLOB;
