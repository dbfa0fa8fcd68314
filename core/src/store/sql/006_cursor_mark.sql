-- Version 6: the mark the relay gave for the chunk at the cursor, and the cursor it belongs to
-- (a mark for another cursor is stale and unused). A relay that later shows another mark there
-- went back to an older copy and was filled up again.
ALTER TABLE sync_state ADD COLUMN cursor_mark BLOB;
ALTER TABLE sync_state ADD COLUMN mark_at INTEGER;
