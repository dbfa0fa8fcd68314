-- Version 1: the documents.
-- A space's document is its latest full save plus the change chunks written since.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE doc_snapshots (
    space    TEXT PRIMARY KEY,
    bytes    BLOB NOT NULL,
    saved_at INTEGER NOT NULL
) STRICT;

CREATE TABLE doc_changes (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    bytes BLOB NOT NULL
) STRICT;

CREATE INDEX doc_changes_by_space ON doc_changes (space, id);
