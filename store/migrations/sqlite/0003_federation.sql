-- Signet datastore, SQLite schema v3: federation relationships created through the admin API.
-- The bundle of a federated trust domain stays in `bundles`; this table says where to fetch it.
CREATE TABLE federation_relationships (
    trust_domain        TEXT PRIMARY KEY NOT NULL,
    bundle_endpoint_url TEXT NOT NULL,
    profile             TEXT NOT NULL,    -- https_web | https_spiffe
    endpoint_spiffe_id  TEXT,             -- https_spiffe: the ID the endpoint must present
    ca_bundle_pem       TEXT,             -- https_web: roots to trust instead of the system ones
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
