//! The records the store holds.

use serde::{Deserialize, Serialize};

/// A workload or node selector, `type:value` (e.g. `unix:uid:1000` has type `unix`, value `uid:1000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Selector {
    /// The selector type (the attestor), e.g. `unix`, `x509pop`, `join_token`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Everything after the first `:`.
    pub value: String,
}

impl Selector {
    /// Builds a selector.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The fields of a registration entry chosen by the operator (see [`RegistrationEntry`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewEntry {
    /// The SPIFFE ID issued to matching workloads.
    pub spiffe_id: String,
    /// The agent (or node alias) ID under which the workload must run.
    pub parent_id: String,
    /// Sorted, de-duplicated selectors; the workload must hold all of them.
    pub selectors: Vec<Selector>,
    /// X509-SVID TTL in seconds (0 = the issuer's default).
    pub x509_svid_ttl: u32,
    /// JWT-SVID TTL in seconds (0 = the issuer's default).
    pub jwt_svid_ttl: u32,
    /// DNS SANs added to the X509-SVID.
    pub dns_names: Vec<String>,
    /// Operator hint returned in the Workload API (empty = none).
    pub hint: String,
    /// Holders of this identity may use the admin API.
    pub admin: bool,
    /// The identity is a downstream issuer.
    pub downstream: bool,
    /// Trust domains (bare names) whose bundles the workload receives.
    pub federates_with: Vec<String>,
    /// Unix seconds after which the entry is no longer served (None = never).
    pub expires_at: Option<i64>,
}

/// A registration entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationEntry {
    /// UUID v4 assigned at creation.
    pub id: String,
    /// The operator-chosen fields.
    #[serde(flatten)]
    pub fields: NewEntry,
    /// Store revision of the last change to this entry.
    pub revision: i64,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// Filters for [`crate::Store::list_entries`]; all set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Exact SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Exact parent ID.
    pub parent_id: Option<String>,
    /// The entry's selectors must include all of these (superset match).
    pub selectors: Vec<Selector>,
}

/// Paging for list calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Maximum records (0 = no limit).
    pub size: u32,
    /// Cursor: return records whose key sorts strictly after this one.
    pub after: Option<String>,
}

/// Entry changes since a revision, for agent sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryChanges {
    /// Entries created or updated after the requested revision.
    pub updated: Vec<RegistrationEntry>,
    /// Entries deleted after the requested revision, in revision order.
    pub deleted: Vec<DeletedEntry>,
    /// Parent changes (updates that changed `parent_id`) after the requested revision, in
    /// revision order; an entry moved twice appears twice. Moves of entries deleted since are
    /// included.
    pub moved: Vec<EntryMove>,
    /// Whether `deleted` parents and `moved` describe every change after the requested revision:
    /// false when it predates the schema version that records them (migration 2), in which case
    /// a reader must assume any deleted or changed entry may have had any parent.
    pub history_complete: bool,
    /// The store revision these changes bring the reader up to.
    pub revision: i64,
}

impl EntryChanges {
    /// The ids of `deleted`.
    pub fn deleted_ids(&self) -> impl Iterator<Item = &str> {
        self.deleted.iter().map(|d| d.id.as_str())
    }
}

/// A deleted entry (its tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedEntry {
    /// The entry's id.
    pub id: String,
    /// Its `parent_id` when it was deleted (`None` for deletions recorded before migration 2).
    pub parent_id: Option<String>,
    /// The revision of the deletion.
    pub revision: i64,
}

/// An update that changed an entry's `parent_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMove {
    /// The entry's id.
    pub id: String,
    /// Its `parent_id` before the update.
    pub old_parent_id: String,
    /// The revision of the update.
    pub revision: i64,
}

/// An attested agent (node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedAgent {
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// The node attestor that admitted it (`join_token`, `x509pop`, ...).
    pub attestation_type: String,
    /// Serial number (lowercase hex) of its current SVID.
    pub serial: String,
    /// Expiry of its current SVID, Unix seconds.
    pub expires_at: i64,
    /// Node selectors produced by attestation.
    pub selectors: Vec<Selector>,
    /// Refused everywhere while true.
    pub banned: bool,
    /// Whether the attestor lets the agent attest again by itself (x509pop yes, join token no).
    pub can_reattest: bool,
    /// First attestation, Unix seconds.
    pub created_at: i64,
    /// Last attestation or renewal, Unix seconds.
    pub updated_at: i64,
}

/// A join token, stored by the SHA-256 (lowercase hex) of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// SHA-256 of the token, lowercase hex.
    pub token_hash: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// SPIFFE ID that becomes an alias of the agent that redeems the token.
    pub alias_spiffe_id: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// When it was spent, Unix seconds.
    pub used_at: Option<i64>,
}

/// A trust bundle as stored: the SPIFFE bundle JSON document of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBundle {
    /// Bare trust-domain name.
    pub trust_domain: String,
    /// The SPIFFE bundle (JWK Set) JSON.
    pub document: String,
    /// Whether this is the issuer's own trust domain (false = federated).
    pub own: bool,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

/// A federation relationship created through the admin API: where and how to fetch the bundle of
/// a federated trust domain. The bundle itself is a [`StoredBundle`] (`own = false`) of the same
/// trust domain. The store validates nothing here; the issuer does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationRelationship {
    /// Bare name of the federated trust domain (the key).
    pub trust_domain: String,
    /// URL of its bundle endpoint (`https://...`).
    pub bundle_endpoint_url: String,
    /// Endpoint profile: `https_web` or `https_spiffe`.
    pub profile: String,
    /// `https_spiffe`: the SPIFFE ID the endpoint must present.
    pub endpoint_spiffe_id: Option<String>,
    /// `https_web`: PEM roots to trust for the endpoint instead of the system roots.
    pub ca_bundle_pem: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

/// An audit event to append.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// Event time, Unix milliseconds.
    pub time_ms: i64,
    /// What happened (`entry.create`, `agent.attest`, `x509.mint`, ...).
    pub kind: String,
    /// Who did it (a SPIFFE ID, `admin-socket:uid=0`, ...).
    pub actor: String,
    /// What it was done to or for.
    pub subject: String,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// Kind-specific details (JSON object).
    pub details: serde_json::Value,
}

/// An audit event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: NewAuditEvent,
    /// Hash of the previous event (64 zeros for the first), lowercase hex.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and the canonical event, lowercase hex.
    pub hash: String,
}

/// Which audit events [`crate::Store::list_audit_events_matching`] returns; every set field must
/// match (the default matches every event).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only events of exactly this kind (`delegation.hop`).
    pub kind: Option<String>,
    /// Only events whose kind starts with this prefix (`delegation.`), compared bytewise.
    pub kind_prefix: Option<String>,
}
