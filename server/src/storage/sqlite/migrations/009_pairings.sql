-- Pairing mailboxes: where two devices meet to pair. The relay keeps only the SHA-256 of each
-- side's token, the state (0 open, 1 claimed, 2 closed, 3 burned, 4 expired) and the expiry
-- (unix seconds); the row outlives the expiry by an hour so late callers learn what happened.
CREATE TABLE pairings (
    mailbox     TEXT PRIMARY KEY,
    number      INTEGER,              -- the short mailbox as a number; NULL for a long id
    host_hash   BLOB NOT NULL,
    guest_hash  BLOB,
    state       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX pairings_number ON pairings (number) WHERE number IS NOT NULL;
CREATE INDEX pairings_expiry ON pairings (expires_at);
-- Opaque messages, at most 8 per side, numbered from 1 per side (0 host, 1 guest).
CREATE TABLE pairing_messages (
    mailbox  TEXT NOT NULL,
    side     INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    body     BLOB NOT NULL,
    PRIMARY KEY (mailbox, side, seq)
) WITHOUT ROWID;
