-- Signet datastore, SQLite schema v1. Times are Unix seconds unless named *_ms.

-- Store-wide revision of registration entries; bumped in the transaction of every entry change.
CREATE TABLE store_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO store_revision (id, revision) VALUES (1, 0);

CREATE TABLE entries (
    id             TEXT PRIMARY KEY NOT NULL,
    spiffe_id      TEXT NOT NULL,
    parent_id      TEXT NOT NULL,
    -- SHA-256 (hex) of the JSON [spiffe_id, parent_id, sorted selectors]: the uniqueness rule.
    identity_hash  TEXT NOT NULL,
    -- Sorted JSON array of {"type","value"}; entry_selectors holds the same set, indexed.
    selectors      TEXT NOT NULL,
    x509_svid_ttl  INTEGER NOT NULL,
    jwt_svid_ttl   INTEGER NOT NULL,
    dns_names      TEXT NOT NULL,      -- JSON array of strings
    hint           TEXT NOT NULL,
    admin          BOOLEAN NOT NULL,
    downstream     BOOLEAN NOT NULL,
    federates_with TEXT NOT NULL,      -- JSON array of strings
    expires_at     INTEGER,
    revision       INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX entries_identity ON entries (identity_hash);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_revision ON entries (revision);

CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    type     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (entry_id, type, value)
) WITHOUT ROWID;
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value, entry_id);

CREATE TABLE entry_tombstones (
    entry_id TEXT PRIMARY KEY NOT NULL,
    revision INTEGER NOT NULL
);
CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision);

CREATE TABLE agents (
    spiffe_id        TEXT PRIMARY KEY NOT NULL,
    attestation_type TEXT NOT NULL,
    serial           TEXT NOT NULL,
    expires_at       INTEGER NOT NULL,
    selectors        TEXT NOT NULL,    -- JSON array of {"type","value"}
    banned           BOOLEAN NOT NULL,
    can_reattest     BOOLEAN NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- Join tokens by SHA-256 of their value; the value itself is never stored.
CREATE TABLE join_tokens (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    expires_at      INTEGER NOT NULL,
    alias_spiffe_id TEXT,
    created_at      INTEGER NOT NULL,
    used_at         INTEGER
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain TEXT PRIMARY KEY NOT NULL,
    document     TEXT NOT NULL,
    own          BOOLEAN NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE journals (
    name       TEXT PRIMARY KEY NOT NULL,
    data       BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Append-only, hash-chained audit log (see docs/datastore.md).
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY NOT NULL,
    time_ms   INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    details   TEXT NOT NULL,   -- canonical JSON, exactly as hashed
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
