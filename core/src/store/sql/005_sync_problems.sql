-- Version 5: problems sync reported in a space and not yet over (JSON array, newest last), so
-- `status` shows them until a clean round or a healing snapshot ends them.
ALTER TABLE sync_state ADD COLUMN problems TEXT;
