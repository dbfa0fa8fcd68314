-- Pairing mailboxes (see the SQLite backend's 009_pairings.sql). Rows are locked FOR UPDATE by
-- every write, and allocation takes an advisory lock, so several instances agree on them.
CREATE TABLE pairings (
    mailbox     text PRIMARY KEY,
    number      bigint,                -- the short mailbox as a number; NULL for a long id
    host_hash   bytea NOT NULL,
    guest_hash  bytea,
    state       smallint NOT NULL,     -- 0 open, 1 claimed, 2 closed, 3 burned, 4 expired
    expires_at  bigint NOT NULL,       -- unix seconds
    created_at  bigint NOT NULL
);
CREATE UNIQUE INDEX pairings_number ON pairings (number) WHERE number IS NOT NULL;
CREATE INDEX pairings_expiry ON pairings (expires_at);
CREATE TABLE pairing_messages (
    mailbox  text NOT NULL,
    side     smallint NOT NULL,        -- 0 host, 1 guest
    seq      bigint NOT NULL,
    body     bytea NOT NULL,
    PRIMARY KEY (mailbox, side, seq)
);
