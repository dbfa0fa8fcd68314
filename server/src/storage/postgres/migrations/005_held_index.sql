-- Pruned chunks whose payloads are still held, by when they were pruned: the periodic sweep
-- finds the expired ones across all spaces without scanning the log.
CREATE INDEX chunks_held ON chunks (pruned_at) WHERE pruned_at IS NOT NULL AND payload IS NOT NULL;
