//! Signet's datastore: one [`Store`] trait with two implementations, SQLite (embedded default, WAL)
//! and PostgreSQL, each with its own migrations and both held to one shared test suite.
//!
//! The store persists registration entries, attested agents, join tokens, trust bundles (own and
//! federated), the CA journal and an append-only, hash-chained audit log. It validates nothing about
//! SPIFFE semantics (the issuer does that before calling it) but guarantees atomicity: every method
//! either fully applies or leaves the store unchanged.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod audit;
mod common;
mod model;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod testsuite;

pub use audit::{
    AuditChainError, GENESIS_HASH, audit_hash, canonical_event_json, canonical_json,
    verify_audit_chain, verify_audit_chain_after,
};
pub use model::*;

/// Errors returned by a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The requested record does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What kind of record (`entry`, `agent`, `bundle`, ...).
        kind: &'static str,
        /// The key that was looked up.
        id: String,
    },
    /// A record with the same identity already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrent change won (optimistic concurrency on revisions).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The datastore URL is malformed or names an unsupported backend.
    #[error("invalid datastore url: {0}")]
    InvalidUrl(String),
    /// The database could not be reached or refused the operation.
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded (a bug or manual tampering).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Result type of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage trait. Implemented by [`sqlite::SqliteStore`] and [`postgres::PostgresStore`].
///
/// Times are Unix seconds (`i64`). Every mutation of an entry bumps a store-wide monotonically
/// increasing revision so that agents can sync deltas.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    // ---- registration entries ----

    /// Creates an entry; assigns `id` (UUID v4), `revision` and `created_at`.
    /// Fails with [`StoreError::AlreadyExists`] when an entry with the same `spiffe_id`, `parent_id`
    /// and selector set exists.
    async fn create_entry(&self, entry: NewEntry) -> Result<RegistrationEntry>;
    /// Replaces every mutable field of the entry with `entry.id`; bumps its revision.
    /// A non-zero `entry.revision` must equal the stored one (else [`StoreError::Conflict`]);
    /// `0` updates unconditionally. Unknown id: [`StoreError::NotFound`].
    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry>;
    /// Deletes an entry and records a tombstone so agents learn of the deletion.
    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry>;
    /// Fetches one entry.
    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>>;
    /// Lists entries matching `filter`, ordered by id, `page.size` at most (0 = all) after
    /// `page.after` (an entry id). Returns the page and the cursor of the next page, if any.
    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &Page,
    ) -> Result<(Vec<RegistrationEntry>, Option<String>)>;
    /// All entries whose `parent_id` is one of `parent_ids`.
    async fn list_entries_by_parents(
        &self,
        parent_ids: &[String],
    ) -> Result<Vec<RegistrationEntry>>;
    /// Entries created or updated, and ids deleted, with a revision strictly greater than `since`,
    /// plus the current store revision.
    async fn entry_changes_since(&self, since: i64) -> Result<EntryChanges>;
    /// The current store-wide revision (0 for an empty store).
    async fn current_revision(&self) -> Result<i64>;
    /// Number of registration entries.
    async fn count_entries(&self) -> Result<u64>;

    // ---- attested agents ----

    /// Records a newly attested agent and, in the same transaction, creates `alias_entries`.
    /// Re-attestation of an existing, non-banned agent replaces its record (keeping `created_at`
    /// and `banned`); alias entries that already exist with the same identity are left as they are.
    /// Fails with [`StoreError::Conflict`] if the agent exists and is banned.
    async fn create_agent(&self, agent: AttestedAgent, alias_entries: Vec<NewEntry>) -> Result<()>;
    /// Updates an agent's SVID serial and expiry after renewal (and `updated_at` to now).
    /// Fails with [`StoreError::NotFound`] or, for a banned agent, [`StoreError::Conflict`].
    async fn update_agent_svid(&self, spiffe_id: &str, serial: &str, expires_at: i64)
    -> Result<()>;
    /// Fetches one agent.
    async fn get_agent(&self, spiffe_id: &str) -> Result<Option<AttestedAgent>>;
    /// Lists every agent, ordered by SPIFFE ID.
    async fn list_agents(&self) -> Result<Vec<AttestedAgent>>;
    /// Deletes an agent (evict): it must attest again.
    async fn delete_agent(&self, spiffe_id: &str) -> Result<()>;
    /// Bans (or unbans) an agent: a banned agent is refused everywhere until evicted.
    async fn set_agent_banned(&self, spiffe_id: &str, banned: bool) -> Result<()>;
    /// Number of agents.
    async fn count_agents(&self) -> Result<u64>;

    // ---- join tokens ----

    /// Stores a new join token (by hash).
    async fn create_join_token(&self, token: JoinToken) -> Result<()>;
    /// Atomically marks the token spent at `now` and returns it; a token is usable once.
    /// Expiry is the caller's decision (compare `expires_at`), but an expired token is still spent.
    /// Attestation uses [`Store::redeem_join_token`], which also records the agent.
    async fn consume_join_token(&self, token_hash: &str, now: i64) -> Result<JoinTokenUse>;
    /// Redeems a join token for `agent`, in one transaction, so that the token is spent if and
    /// only if the agent is recorded (except an expired token, which is spent alone):
    ///
    /// - unknown hash: [`JoinTokenRedemption::Unknown`]; already spent:
    ///   [`JoinTokenRedemption::AlreadySpent`]; nothing changes;
    /// - expired at `now` (`now > expires_at`): the token is marked spent and nothing else is
    ///   recorded; [`JoinTokenRedemption::Expired`];
    /// - otherwise the agent is recorded as by [`Store::create_agent`] and, when the token carries
    ///   an `alias_spiffe_id`, the alias entry `{spiffe_id: alias, parent_id: issuer_id,
    ///   selectors: alias_selectors}` is created (left alone if it exists); the token is marked
    ///   spent at `now`: [`JoinTokenRedemption::Redeemed`] with the spent token.
    ///
    /// A banned agent fails with [`StoreError::Conflict`] and then nothing is changed: the token
    /// stays unspent. Of concurrent redemptions of one token exactly one is `Redeemed`.
    async fn redeem_join_token(
        &self,
        token_hash: &str,
        now: i64,
        agent: AttestedAgent,
        issuer_id: &str,
        alias_selectors: Vec<Selector>,
    ) -> Result<JoinTokenRedemption>;
    /// Deletes tokens that expired before `before`; returns how many.
    async fn prune_join_tokens(&self, before: i64) -> Result<u64>;

    // ---- trust bundles ----

    /// Inserts or replaces the bundle of a trust domain (`trust_domain` is the bare name).
    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()>;
    /// Fetches one bundle.
    async fn get_bundle(&self, trust_domain: &str) -> Result<Option<StoredBundle>>;
    /// Lists every bundle, ordered by trust domain.
    async fn list_bundles(&self) -> Result<Vec<StoredBundle>>;
    /// Deletes a bundle ([`StoreError::NotFound`] if there is none).
    async fn delete_bundle(&self, trust_domain: &str) -> Result<()>;

    // ---- federation relationships ----

    /// Creates a federation relationship and, in the same transaction, stores `bundle` (the
    /// bootstrap bundle of the federated trust domain, replacing any stored one) when given.
    /// Fails with [`StoreError::AlreadyExists`] when a relationship with the same trust domain
    /// exists; then nothing is stored.
    async fn create_federation_relationship(
        &self,
        relationship: FederationRelationship,
        bundle: Option<StoredBundle>,
    ) -> Result<()>;
    /// Replaces the relationship of `relationship.trust_domain` (keeping its `created_at`) and,
    /// in the same transaction, stores `bundle` when given. Unknown trust domain:
    /// [`StoreError::NotFound`], and nothing is stored.
    async fn update_federation_relationship(
        &self,
        relationship: FederationRelationship,
        bundle: Option<StoredBundle>,
    ) -> Result<()>;
    /// Fetches one relationship.
    async fn get_federation_relationship(
        &self,
        trust_domain: &str,
    ) -> Result<Option<FederationRelationship>>;
    /// Lists every relationship, ordered by trust domain.
    async fn list_federation_relationships(&self) -> Result<Vec<FederationRelationship>>;
    /// Deletes a relationship ([`StoreError::NotFound`] if there is none). The trust domain's
    /// bundle is kept (delete it with [`Store::delete_bundle`]).
    async fn delete_federation_relationship(&self, trust_domain: &str) -> Result<()>;

    // ---- CA journal ----

    /// Loads the named journal blob (the CA's slot state), if any.
    async fn load_journal(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Stores the named journal blob, replacing the previous one.
    async fn save_journal(&self, name: &str, data: &[u8]) -> Result<()>;

    // ---- audit log ----

    /// Appends an event. The store assigns `seq`, `prev_hash` and `hash`
    /// (`hash = SHA-256(prev_hash || canonical JSON of the event fields)`), serialized so that two
    /// concurrent appends never share a `prev_hash`.
    async fn append_audit_event(&self, event: NewAuditEvent) -> Result<AuditEvent>;
    /// Events with `seq > after`, in order, at most `limit` (0 = all).
    async fn list_audit_events(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>>;
    /// Events with `seq > after` that match `filter`, in order, at most `limit` (0 = all).
    async fn list_audit_events_matching(
        &self,
        after: i64,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>>;
    /// The newest event (the head of the chain), if the log is not empty.
    async fn last_audit_event(&self) -> Result<Option<AuditEvent>>;
}

/// The result of [`Store::consume_join_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinTokenUse {
    /// The token was unspent; it is now spent.
    Consumed(JoinToken),
    /// The token had already been used.
    AlreadySpent,
    /// No such token.
    Unknown,
}

/// The result of [`Store::redeem_join_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinTokenRedemption {
    /// The token was valid: it is now spent (returned with `used_at` set), the agent is recorded
    /// and the token's alias entry, if any, exists.
    Redeemed(JoinToken),
    /// No such token; nothing changed.
    Unknown,
    /// The token had already been used; nothing changed.
    AlreadySpent,
    /// The token had expired: it is now spent, and nothing else was recorded.
    Expired,
}

/// Opens a store from a datastore URL: `sqlite://PATH` (created if missing, WAL mode) or
/// `postgres://...`. Runs the migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(url).await?,
        ))
    } else {
        // Name only the scheme: the rest of a URL may hold a password.
        let scheme = url
            .split_once("://")
            .map_or_else(|| "no scheme".to_owned(), |(s, _)| format!("scheme {s:?}"));
        Err(StoreError::InvalidUrl(format!(
            "unsupported datastore URL ({scheme}): expected sqlite://PATH or postgres://..."
        )))
    }
}
