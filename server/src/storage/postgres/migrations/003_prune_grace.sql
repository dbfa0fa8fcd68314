-- When a snapshot pruned the chunk (unix seconds; NULL while live); see the SQLite backend's
-- 004_prune_grace.sql.
ALTER TABLE chunks ADD COLUMN pruned_at bigint;
