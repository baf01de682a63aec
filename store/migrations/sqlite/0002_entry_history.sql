-- Signet datastore, SQLite schema v2: where deleted and moved entries were, so that a delta sync
-- names a removed entry only to the agents that could have held it.

-- Parent of the entry when it was deleted (NULL for tombstones written before this migration).
ALTER TABLE entry_tombstones ADD COLUMN parent_id TEXT;

-- One row per update that changed an entry's parent_id.
CREATE TABLE entry_moves (
    entry_id      TEXT NOT NULL,
    old_parent_id TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    PRIMARY KEY (entry_id, revision)
) WITHOUT ROWID;
CREATE INDEX entry_moves_revision ON entry_moves (revision);

-- The store revision at which the history above starts: changes after it are fully described.
CREATE TABLE entry_history (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    since_revision INTEGER NOT NULL
);
INSERT INTO entry_history (id, since_revision) SELECT 1, revision FROM store_revision WHERE id = 1;
