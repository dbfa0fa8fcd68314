-- Spaces erased whose chunks and rollups are still being deleted, a bounded batch per writer
-- transaction: an erase never holds the one writer (and every push behind it) for as long as
-- deleting a large space in one go would. Space ids are not reused while listed here (a new
-- space takes an id above every one in this table), so nothing reads what is left meanwhile.
CREATE TABLE erasing (
    space INTEGER PRIMARY KEY                  -- the erased spaces.id
);
