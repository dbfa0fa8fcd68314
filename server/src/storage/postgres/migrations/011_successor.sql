-- The announcement that ends a space's epoch: the first one a device offered, kept for good
-- (32 opaque bytes; NULL until offered).
ALTER TABLE spaces ADD COLUMN successor bytea;
