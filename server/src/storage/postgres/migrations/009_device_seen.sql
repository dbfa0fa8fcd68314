-- When the relay last served each device of a space (see the SQLite backend's
-- 010_device_seen.sql): unix seconds rounded down to the hour, at most 64 rows a space.
CREATE TABLE device_seen (
    space      bigint NOT NULL,           -- spaces.id
    device_id  bytea  NOT NULL,           -- 16 bytes
    last_seen  bigint NOT NULL,
    PRIMARY KEY (space, device_id)
);
