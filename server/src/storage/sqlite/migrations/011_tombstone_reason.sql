-- A tombstone says why its space went: 0 erased by a device, 1 retired by a key rotation.
-- Tombstones are kept forever; they are a few dozen bytes each.
ALTER TABLE erased ADD COLUMN reason INTEGER NOT NULL DEFAULT 0;
