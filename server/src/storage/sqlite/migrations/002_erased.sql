-- Erased spaces stay erased: a device that still holds the secret (the other partner's phone,
-- after a separation) must not recreate the space on its next sync and upload it all again.
CREATE TABLE erased (
    space_id   BLOB    PRIMARY KEY,          -- 32 bytes
    erased_at  INTEGER NOT NULL              -- unix seconds
);
