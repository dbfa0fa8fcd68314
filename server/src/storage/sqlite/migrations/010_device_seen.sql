-- When the relay last served each device of a space (unix seconds, rounded down to the hour):
-- what lets a partner see that a device still syncs. At most 64 rows a space.
CREATE TABLE device_seen (
    space      INTEGER NOT NULL,          -- spaces.id
    device_id  BLOB    NOT NULL,          -- 16 bytes
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (space, device_id)
) WITHOUT ROWID;
