-- Spaces erased whose chunks and rollups are still being deleted, in bounded batches by the
-- periodic sweep: an erase itself stays a short transaction however large the space was (a
-- single delete of millions of rows would outlast the statement timeout, for ever). Space ids
-- are never reused, so nothing can read what is left in the meantime.
CREATE TABLE erasing (
    space bigint PRIMARY KEY                   -- the erased spaces.id
);
