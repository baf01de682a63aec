//! Helpers shared by both backends: row types, JSON columns, the entry identity hash, error
//! mapping.

use crate::{
    AttestedAgent, FederationRelationship, JoinToken, NewEntry, RegistrationEntry, Selector,
    StoreError, StoredBundle,
};
use std::time::{SystemTime, UNIX_EPOCH};

/// Columns selected for an entry, in [`EntryRow`] order.
pub(crate) const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, x509_svid_ttl, \
     jwt_svid_ttl, dns_names, hint, admin, downstream, federates_with, expires_at, revision, \
     created_at";

/// Columns selected for an agent, in [`AgentRow`] order.
pub(crate) const AGENT_COLUMNS: &str = "spiffe_id, attestation_type, serial, expires_at, \
     selectors, banned, can_reattest, created_at, updated_at";

/// Columns selected for an audit event, in [`AuditRow`] order.
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, time_ms, kind, actor, subject, outcome, details, prev_hash, hash";

/// Columns selected for a join token, in [`JoinTokenRow`] order.
pub(crate) const JOIN_TOKEN_COLUMNS: &str =
    "token_hash, expires_at, alias_spiffe_id, created_at, used_at";

/// Columns selected for a bundle, in [`BundleRow`] order.
pub(crate) const BUNDLE_COLUMNS: &str = "trust_domain, document, own, updated_at";

/// Columns selected for a federation relationship, in [`RelationshipRow`] order.
pub(crate) const RELATIONSHIP_COLUMNS: &str = "trust_domain, bundle_endpoint_url, profile, \
     endpoint_spiffe_id, ca_bundle_pem, created_at, updated_at";

/// Binds per statement at most (SQLite allows 32766, PostgreSQL 65535).
pub(crate) const MAX_BINDS: usize = 30_000;

/// An `entries` row.
#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    id: String,
    spiffe_id: String,
    parent_id: String,
    selectors: String,
    x509_svid_ttl: i64,
    jwt_svid_ttl: i64,
    dns_names: String,
    hint: String,
    admin: bool,
    downstream: bool,
    federates_with: String,
    expires_at: Option<i64>,
    revision: i64,
    created_at: i64,
}

impl EntryRow {
    pub(crate) fn into_entry(self) -> Result<RegistrationEntry, StoreError> {
        let ttl = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| {
                StoreError::Corrupt(format!("entry {}: {what} {v} out of range", self.id))
            })
        };
        let x509_svid_ttl = ttl(self.x509_svid_ttl, "x509_svid_ttl")?;
        let jwt_svid_ttl = ttl(self.jwt_svid_ttl, "jwt_svid_ttl")?;
        let ctx = format!("entry {}", self.id);
        Ok(RegistrationEntry {
            fields: NewEntry {
                spiffe_id: self.spiffe_id,
                parent_id: self.parent_id,
                selectors: decode_json(&self.selectors, &ctx, "selectors")?,
                x509_svid_ttl,
                jwt_svid_ttl,
                dns_names: decode_json(&self.dns_names, &ctx, "dns_names")?,
                hint: self.hint,
                admin: self.admin,
                downstream: self.downstream,
                federates_with: decode_json(&self.federates_with, &ctx, "federates_with")?,
                expires_at: self.expires_at,
            },
            id: self.id,
            revision: self.revision,
            created_at: self.created_at,
        })
    }
}

pub(crate) fn entries_from_rows(rows: Vec<EntryRow>) -> Result<Vec<RegistrationEntry>, StoreError> {
    rows.into_iter().map(EntryRow::into_entry).collect()
}

/// A `join_tokens` row.
pub(crate) type JoinTokenRow = (String, i64, Option<String>, i64, Option<i64>);

pub(crate) fn token_from_row(row: JoinTokenRow) -> JoinToken {
    JoinToken {
        token_hash: row.0,
        expires_at: row.1,
        alias_spiffe_id: row.2,
        created_at: row.3,
        used_at: row.4,
    }
}

/// A `bundles` row.
pub(crate) type BundleRow = (String, String, bool, i64);

pub(crate) fn bundle_from_row(row: BundleRow) -> StoredBundle {
    StoredBundle {
        trust_domain: row.0,
        document: row.1,
        own: row.2,
        updated_at: row.3,
    }
}

/// A `federation_relationships` row.
pub(crate) type RelationshipRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

pub(crate) fn relationship_from_row(row: RelationshipRow) -> FederationRelationship {
    FederationRelationship {
        trust_domain: row.0,
        bundle_endpoint_url: row.1,
        profile: row.2,
        endpoint_spiffe_id: row.3,
        ca_bundle_pem: row.4,
        created_at: row.5,
        updated_at: row.6,
    }
}

/// An `agents` row.
#[derive(sqlx::FromRow)]
pub(crate) struct AgentRow {
    spiffe_id: String,
    attestation_type: String,
    serial: String,
    expires_at: i64,
    selectors: String,
    banned: bool,
    can_reattest: bool,
    created_at: i64,
    updated_at: i64,
}

impl AgentRow {
    pub(crate) fn into_agent(self) -> Result<AttestedAgent, StoreError> {
        let selectors = decode_json(
            &self.selectors,
            &format!("agent {:?}", self.spiffe_id),
            "selectors",
        )?;
        Ok(AttestedAgent {
            spiffe_id: self.spiffe_id,
            attestation_type: self.attestation_type,
            serial: self.serial,
            expires_at: self.expires_at,
            selectors,
            banned: self.banned,
            can_reattest: self.can_reattest,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// An `audit_events` row.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    time_ms: i64,
    kind: String,
    actor: String,
    subject: String,
    outcome: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    pub(crate) fn into_event(self) -> Result<crate::AuditEvent, StoreError> {
        let details = serde_json::from_str(&self.details)
            .map_err(|e| StoreError::Corrupt(format!("audit event {}: details: {e}", self.seq)))?;
        Ok(crate::AuditEvent {
            seq: self.seq,
            event: crate::NewAuditEvent {
                time_ms: self.time_ms,
                kind: self.kind,
                actor: self.actor,
                subject: self.subject,
                outcome: self.outcome,
                details,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// A normalized entry ready to be written: sorted, de-duplicated selectors and the JSON columns.
pub(crate) struct EntryWrite {
    pub(crate) fields: NewEntry,
    pub(crate) identity_hash: String,
    pub(crate) selectors_json: String,
    pub(crate) dns_names_json: String,
    pub(crate) federates_with_json: String,
}

impl EntryWrite {
    pub(crate) fn new(mut fields: NewEntry) -> Result<Self, StoreError> {
        fields.selectors.sort();
        fields.selectors.dedup();
        let selectors_json = encode_json(&fields.selectors)?;
        let identity = encode_json(&(&fields.spiffe_id, &fields.parent_id, &fields.selectors))?;
        Ok(Self {
            identity_hash: sha256_hex(identity.as_bytes()),
            selectors_json,
            dns_names_json: encode_json(&fields.dns_names)?,
            federates_with_json: encode_json(&fields.federates_with)?,
            fields,
        })
    }

    pub(crate) fn duplicate_error(&self, existing_id: &str) -> StoreError {
        StoreError::AlreadyExists(format!(
            "entry {existing_id} already registers spiffe_id {:?} under parent_id {:?} with the \
             same selectors",
            self.fields.spiffe_id, self.fields.parent_id
        ))
    }
}

/// Deduplicated selectors of a filter.
pub(crate) fn filter_selectors(selectors: &[Selector]) -> Vec<&Selector> {
    let mut out: Vec<&Selector> = selectors.iter().collect();
    out.sort();
    out.dedup();
    out
}

pub(crate) fn encode_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a JSON column: {e}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(
    text: &str,
    ctx: &str,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{ctx}: {column}: {e}")))
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn new_entry_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn count_to_u64(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

/// Maps a database error met while doing `what` to a [`StoreError`].
pub(crate) fn db_error(what: &str, err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::AlreadyExists(format!("{what}: already exists ({})", db.message()))
        }
        sqlx::Error::RowNotFound => StoreError::Corrupt(format!("{what}: row vanished")),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => {
            StoreError::Corrupt(format!("{what}: {err}"))
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "{what}: timed out waiting for a database connection"
        )),
        _ => StoreError::Unavailable(format!("{what}: {err}")),
    }
}

/// Maps a migration error.
pub(crate) fn migrate_error(target: &str, err: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::VersionMissing(v) => StoreError::Unavailable(format!(
            "{target}: the database has migration {v} applied, which this version of Signet does \
             not know (was it written by a newer version?)"
        )),
        MigrateError::VersionMismatch(v) => StoreError::Corrupt(format!(
            "{target}: migration {v} was applied with different content than this version ships"
        )),
        MigrateError::Dirty(v) => StoreError::Corrupt(format!(
            "{target}: migration {v} was left partially applied; repair the database by hand"
        )),
        other => StoreError::Unavailable(format!("{target}: running migrations failed: {other}")),
    }
}
