-- When a snapshot pruned the chunk (unix seconds; NULL while live). Its payload stops counting
-- against the quota then, but is deleted only after the prune grace, so a garbage snapshot
-- cannot destroy the only copy of a chunk. Chunks pruned before this migration are already
-- deleted (NULL payload).
ALTER TABLE chunks ADD COLUMN pruned_at INTEGER;
