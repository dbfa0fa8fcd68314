-- Version 3: what each document says, kept beside it in the same transactions, so a journal
-- can be read as soon as it opens while Automerge loads in the background.
CREATE TABLE record_views (
    space     TEXT NOT NULL,
    id        TEXT NOT NULL,
    -- The record's winning values as a JSON object.
    fields    TEXT NOT NULL,
    -- Its concurrent values as a JSON array, NULL when there are none.
    conflicts TEXT,
    -- Envelope fields copied out of `fields`, so a timeline page is picked without JSON.
    kind       TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    removed    INTEGER NOT NULL,
    PRIMARY KEY (space, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE space_views (
    space          TEXT PRIMARY KEY,
    -- The document heads the rows reflect (hex, space separated).
    heads          TEXT NOT NULL,
    -- The partners map as a JSON array.
    partners       TEXT NOT NULL,
    schema_version INTEGER NOT NULL
) STRICT;
