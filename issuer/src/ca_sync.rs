//! Keeps the store in step with the CA: after every change of the CA's slots (start-up, automatic
//! rotation, `ca prepare|activate`) or of the JWT or WIT signing keys, the CA, JWT key and WIT key
//! journals and the own trust bundle are written to the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_ca::jwt::{JwtError, JwtKeyManager, JwtRotationOutcome};
use signet_ca::{CaError, RotationOutcome};
use signet_spiffe::bundle::{Bundle, BundleError};
use signet_store::{StoreError, StoredBundle};

use crate::state::Issuer;

/// Name of the CA journal in the store.
pub const CA_JOURNAL: &str = "ca";
/// Name of the JWT key journal in the store.
pub const JWT_JOURNAL: &str = "jwt";
/// Name of the WIT key journal in the store.
pub const WIT_JOURNAL: &str = "wit";

/// Why the CA state could not be persisted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The CA failed.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    /// The JWT (or WIT) key manager failed.
    #[error("JWT/WIT keys: {0}")]
    Jwt(#[from] JwtError),
    /// The bundle could not be encoded.
    #[error("own trust bundle: {0}")]
    Bundle(#[from] BundleError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The delegation keys failed.
    #[error("delegation keys: {0}")]
    Delegation(String),
}

/// Serializes writes of the CA, JWT key and WIT key journals and of the own bundle so that an older
/// snapshot never overwrites a newer one, and rotates the CA, the JWT keys and the WIT keys of the
/// issuer ([`Issuer::ca`], [`Issuer::jwt`], [`Issuer::wit`]).
pub struct CaSync {
    issuer: Arc<Issuer>,
    ca_ttl: Duration,
    refresh_hint: u64,
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CaSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSync")
            .field("ca_ttl", &self.ca_ttl)
            .field("refresh_hint", &self.refresh_hint)
            .finish_non_exhaustive()
    }
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `spiffe_refresh_hint` of the own bundle: a tenth of the CA TTL, between 5 s and 5 min, so that a
/// prepared CA reaches clients well before it is activated.
pub fn refresh_hint(ca_ttl: Duration) -> u64 {
    (ca_ttl.as_secs() / 10).clamp(5, 300)
}

impl CaSync {
    /// Creates the synchronizer for `issuer`, whose CA has lifetime `ca_ttl`.
    /// The issuer state it persists.
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// A synchronizer of `issuer`'s CA and keys to its store.
    pub fn new(issuer: Arc<Issuer>, ca_ttl: Duration) -> Self {
        Self {
            issuer,
            ca_ttl,
            refresh_hint: refresh_hint(ca_ttl),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Publishes `hint` (whole seconds, at least 1) as the own bundle's `spiffe_refresh_hint`
    /// instead of the one derived from the CA TTL (`[bundle_endpoint] refresh_hint`).
    pub fn with_refresh_hint(mut self, hint: Option<Duration>) -> Self {
        if let Some(h) = hint {
            self.refresh_hint = h.as_secs().max(1);
        }
        self
    }

    /// The own trust bundle as the issuer publishes it now, in the store, on the bundle endpoint
    /// and in `bundle show`: [`Issuer::own_bundle`] (the one place that assembles the authorities
    /// and the sequence) with the `spiffe_refresh_hint`.
    pub fn own_bundle(&self) -> Bundle {
        let mut bundle = self.issuer.own_bundle();
        bundle.refresh_hint = Some(self.refresh_hint);
        bundle
    }

    /// Writes the CA, JWT key and WIT key journals and the own bundle to the store.
    pub async fn persist(&self) -> Result<(), SyncError> {
        let _guard = self.lock.lock().await;
        let journal = self.issuer.ca.journal_bytes()?;
        let document = self.own_bundle().to_json()?;
        self.issuer.store.save_journal(CA_JOURNAL, &journal).await?;
        let journal = self.issuer.jwt.journal_bytes()?;
        self.issuer
            .store
            .save_journal(JWT_JOURNAL, &journal)
            .await?;
        let journal = self.issuer.wit.journal_bytes()?;
        self.issuer
            .store
            .save_journal(WIT_JOURNAL, &journal)
            .await?;
        let stored = StoredBundle {
            trust_domain: self.issuer.trust_domain.name().to_owned(),
            document,
            own: true,
            updated_at: unix_secs(SystemTime::now()),
        };
        let unchanged = matches!(
            self.issuer.store.get_bundle(&stored.trust_domain).await?,
            Some(ref old) if old.own && old.document == stored.document
        );
        if !unchanged {
            self.issuer.store.set_bundle(stored).await?;
            // Agents watching for changes fetch the new bundle at once.
            self.issuer.notifier.notify();
        }
        Ok(())
    }

    /// One automatic rotation step of `keys` (the JWT or the WIT keys; `noun` names them in logs,
    /// `audit_kind` is the audit event kind): persists and audits any change.
    async fn rotate_keys_once(
        &self,
        keys: &JwtKeyManager,
        noun: &str,
        audit_kind: &str,
        now: SystemTime,
    ) -> Result<(), SyncError> {
        let (what, details) = match keys.rotate_if_due(now)? {
            JwtRotationOutcome::Unchanged => return Ok(()),
            JwtRotationOutcome::Prepared(k) => ("prepared", serde_json::json!({"kid": k.kid})),
            JwtRotationOutcome::Activated(k) => ("activated", serde_json::json!({"kid": k.kid})),
            JwtRotationOutcome::Pruned(kids) => ("pruned", serde_json::json!({"kids": kids})),
        };
        self.persist().await?;
        tracing::info!(change = what, details = %details, "{noun} rotation");
        crate::audit::record(
            self.issuer.store.as_ref(),
            audit_kind,
            "issuer",
            what,
            "ok",
            details,
        )
        .await;
        Ok(())
    }

    /// One automatic rotation step of the delegation keys (when delegation is on): persists the
    /// key journal, wakes the agents (their verifiers need the new key before it signs) and
    /// audits any change (`delegation.rotate`).
    async fn rotate_delegation_keys_once(&self, now: SystemTime) -> Result<(), SyncError> {
        use signet_ca::delegation::DelegationRotationOutcome as O;
        let Some(d) = &self.issuer.delegation else {
            return Ok(());
        };
        let outcome = d
            .keys()
            .rotate_if_due(now)
            .map_err(|e| SyncError::Delegation(e.to_string()))?;
        let (what, details) = match outcome {
            O::Unchanged => return Ok(()),
            O::Prepared(k) => (
                "prepared",
                serde_json::json!({"root_key_id": k.root_key_id, "public_key": k.public_key}),
            ),
            O::Activated(k) => (
                "activated",
                serde_json::json!({"root_key_id": k.root_key_id, "public_key": k.public_key}),
            ),
            O::Pruned(ids) => ("pruned", serde_json::json!({"keys": ids})),
        };
        d.persist_keys().await.map_err(SyncError::Delegation)?;
        self.issuer.notifier.notify();
        tracing::info!(change = what, details = %details, "delegation key rotation");
        crate::audit::record(
            self.issuer.store.as_ref(),
            "delegation.rotate",
            "issuer",
            what,
            "ok",
            details,
        )
        .await;
        Ok(())
    }

    /// One automatic rotation step: asks the JWT and WIT key managers and the CA, persists and
    /// audits any change (audit kinds `jwt.rotate`, `wit.rotate`, `ca.rotate`). Returns the CA's
    /// outcome.
    pub async fn rotate_once(&self, now: SystemTime) -> Result<RotationOutcome, SyncError> {
        self.rotate_keys_once(&self.issuer.jwt, "JWT key", "jwt.rotate", now)
            .await?;
        self.rotate_keys_once(&self.issuer.wit, "WIT key", "wit.rotate", now)
            .await?;
        self.rotate_delegation_keys_once(now).await?;
        let outcome = self.issuer.ca.rotate_if_due(now)?;
        let (what, details) = match &outcome {
            RotationOutcome::Unchanged => return Ok(outcome),
            RotationOutcome::Prepared(slot) => (
                "prepared",
                serde_json::json!({"slot": slot.id, "fingerprint_sha256": slot.fingerprint_sha256}),
            ),
            RotationOutcome::Activated(slot) => (
                "activated",
                serde_json::json!({"slot": slot.id, "fingerprint_sha256": slot.fingerprint_sha256}),
            ),
            RotationOutcome::Pruned(ids) => ("pruned", serde_json::json!({"slots": ids})),
        };
        self.persist().await?;
        tracing::info!(change = what, details = %details, "CA rotation");
        crate::audit::record(
            self.issuer.store.as_ref(),
            "ca.rotate",
            "issuer",
            what,
            "ok",
            details,
        )
        .await;
        Ok(outcome)
    }
}
