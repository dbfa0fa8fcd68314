-- Version 9: rollups.
-- A proof may be a group's: one signature over many changes' hashes (a rollup of a device's
-- own chunks). `grp` = 1 says the row's proof is the signature of the group stored under it
-- in proof_groups.
ALTER TABLE change_proofs ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;
ALTER TABLE held_changes ADD COLUMN grp INTEGER NOT NULL DEFAULT 0;

CREATE TABLE proof_groups (
    space     TEXT NOT NULL,
    signature BLOB NOT NULL,
    signer    BLOB NOT NULL,
    -- The relay device id and numbers of the chunks the rollup stood for (signed too).
    device    BLOB NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    -- The hashes it covers, 32 bytes each, increasing.
    hashes    BLOB NOT NULL,
    PRIMARY KEY (space, signature)
) STRICT, WITHOUT ROWID;

-- This device's chunks the relay acknowledged and no rollup stands for yet: the hashes of
-- the changes each carried, to seal a run of them again as one.
CREATE TABLE own_chunks (
    space      TEXT NOT NULL,
    device_seq INTEGER NOT NULL,
    relay_seq  INTEGER NOT NULL,
    hashes     BLOB NOT NULL,
    PRIMARY KEY (space, device_seq)
) STRICT, WITHOUT ROWID;
