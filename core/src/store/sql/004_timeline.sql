-- Version 4: timeline pages walk this index newest first and stop when the page is full,
-- instead of reading and sorting every envelope (10 ms on 10k records, more under a merge).
CREATE INDEX record_views_newest ON record_views (created_at, id);
