-- Version 8: signed changes in the couple's space.
-- Each merged change's signature, so a snapshot or a whole document pushed again carries
-- its device's proof (this device's own are kept when it signs them).
CREATE TABLE change_proofs (
    space  TEXT NOT NULL,
    hash   BLOB NOT NULL,
    signer BLOB NOT NULL,
    proof  BLOB NOT NULL,
    PRIMARY KEY (space, hash)
) STRICT, WITHOUT ROWID;

-- Devices introduced to this replica (a partner's identity key and its certificate for the
-- device's key), in the order they were admitted: older partners' ids are tied to the first
-- identity seen for them.
CREATE TABLE known_devices (
    id     INTEGER PRIMARY KEY,
    space  TEXT NOT NULL,
    key_id BLOB NOT NULL,
    intro  BLOB NOT NULL,
    UNIQUE (space, key_id)
) STRICT;

-- Signed changes waiting for a change they depend on.
CREATE TABLE held_changes (
    space  TEXT NOT NULL,
    hash   BLOB NOT NULL,
    bytes  BLOB NOT NULL,
    signer BLOB NOT NULL,
    proof  BLOB NOT NULL,
    PRIMARY KEY (space, hash)
) STRICT;

-- Changes refused for good: whatever depends on one is refused too.
CREATE TABLE refused_changes (
    space TEXT NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (space, hash)
) STRICT, WITHOUT ROWID;
