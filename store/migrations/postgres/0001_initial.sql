-- Signet datastore, PostgreSQL schema v1. Times are Unix seconds unless named *_ms.
-- Keys use the "C" collation: bytewise order and equality, as in SQLite, whatever the database's
-- locale, and cheaper index comparisons.

-- Store-wide revision of registration entries; bumped in the transaction of every entry change.
-- Its row lock also serializes entry writers, so revisions commit in order.
CREATE TABLE store_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO store_revision (id, revision) VALUES (1, 0);

CREATE TABLE entries (
    id             TEXT COLLATE "C" PRIMARY KEY,
    spiffe_id      TEXT COLLATE "C" NOT NULL,
    parent_id      TEXT COLLATE "C" NOT NULL,
    -- SHA-256 (hex) of the JSON [spiffe_id, parent_id, sorted selectors]: the uniqueness rule.
    identity_hash  TEXT NOT NULL,
    -- Sorted JSON array of {"type","value"}; entry_selectors holds the same set, indexed.
    selectors      TEXT NOT NULL,
    x509_svid_ttl  BIGINT NOT NULL,
    jwt_svid_ttl   BIGINT NOT NULL,
    dns_names      TEXT NOT NULL,      -- JSON array of strings
    hint           TEXT NOT NULL,
    admin          BOOLEAN NOT NULL,
    downstream     BOOLEAN NOT NULL,
    federates_with TEXT NOT NULL,      -- JSON array of strings
    expires_at     BIGINT,
    revision       BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX entries_identity ON entries (identity_hash);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_revision ON entries (revision);

CREATE TABLE entry_selectors (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    type     TEXT COLLATE "C" NOT NULL,
    value    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (entry_id, type, value)
);
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value, entry_id);

CREATE TABLE entry_tombstones (
    entry_id TEXT COLLATE "C" PRIMARY KEY,
    revision BIGINT NOT NULL
);
CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision);

CREATE TABLE agents (
    spiffe_id        TEXT COLLATE "C" PRIMARY KEY,
    attestation_type TEXT NOT NULL,
    serial           TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    selectors        TEXT NOT NULL,    -- JSON array of {"type","value"}
    banned           BOOLEAN NOT NULL,
    can_reattest     BOOLEAN NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Join tokens by SHA-256 of their value; the value itself is never stored.
CREATE TABLE join_tokens (
    token_hash      TEXT COLLATE "C" PRIMARY KEY,
    expires_at      BIGINT NOT NULL,
    alias_spiffe_id TEXT,
    created_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain TEXT COLLATE "C" PRIMARY KEY,
    document     TEXT NOT NULL,
    own          BOOLEAN NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE journals (
    name       TEXT COLLATE "C" PRIMARY KEY,
    data       BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Append-only, hash-chained audit log (see docs/datastore.md).
CREATE TABLE audit_events (
    seq       BIGINT PRIMARY KEY,
    time_ms   BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    details   TEXT NOT NULL,   -- canonical JSON, exactly as hashed (not JSONB: it would reformat)
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE FUNCTION signet_audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION signet_audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION signet_audit_events_append_only();
