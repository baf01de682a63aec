//! Keeps the store in step with the CA: after every change of the CA's slots (start-up, automatic
//! rotation, `ca prepare|activate`) the CA journal and the own trust bundle are written to the store.

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

/// Why the CA state could not be persisted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The CA failed.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    /// The JWT key manager failed.
    #[error("JWT keys: {0}")]
    Jwt(#[from] JwtError),
    /// The bundle could not be encoded.
    #[error("own trust bundle: {0}")]
    Bundle(#[from] BundleError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Serializes writes of the CA journal and own bundle so that an older snapshot never overwrites a
/// newer one.
pub struct CaSync {
    issuer: Arc<Issuer>,
    ca_ttl: Duration,
    refresh_hint: u64,
    jwt: Option<Arc<JwtKeyManager>>,
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
    pub fn new(issuer: Arc<Issuer>, ca_ttl: Duration) -> Self {
        Self {
            issuer,
            ca_ttl,
            refresh_hint: refresh_hint(ca_ttl),
            jwt: None,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Publishes the JWT authorities of `jwt` in the own bundle, persists its journal with the
    /// CA's and rotates its keys with the CA's.
    pub fn with_jwt(mut self, jwt: Arc<JwtKeyManager>) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// The JWT key manager, when there is one.
    pub fn jwt(&self) -> Option<&Arc<JwtKeyManager>> {
        self.jwt.as_ref()
    }

    /// Publishes `hint` (whole seconds, at least 1) as the own bundle's `spiffe_refresh_hint`
    /// instead of the one derived from the CA TTL (`[bundle_endpoint] refresh_hint`).
    pub fn with_refresh_hint(mut self, hint: Option<Duration>) -> Self {
        if let Some(h) = hint {
            self.refresh_hint = h.as_secs().max(1);
        }
        self
    }

    /// The own trust bundle as the issuer publishes it now: in the store (hence to agents), on
    /// the bundle endpoint and in `bundle show`. The one place that assembles it.
    pub fn own_bundle(&self) -> Bundle {
        let ca = &self.issuer.ca;
        Bundle {
            trust_domain: self.issuer.trust_domain.clone(),
            x509_authorities: ca.trust_anchors(),
            jwt_authorities: self
                .jwt
                .as_ref()
                .map(|j| j.authorities())
                .unwrap_or_default(),
            // Both counters only grow, so their sum grows whenever either set of authorities
            // changes.
            sequence: ca
                .bundle_sequence()
                .saturating_add(self.jwt.as_ref().map_or(0, |j| j.sequence())),
            refresh_hint: Some(self.refresh_hint),
        }
    }

    /// Writes the CA journal and the own bundle to the store.
    pub async fn persist(&self) -> Result<(), SyncError> {
        let _guard = self.lock.lock().await;
        let journal = self.issuer.ca.journal_bytes()?;
        let document = self.own_bundle().to_json()?;
        self.issuer.store.save_journal(CA_JOURNAL, &journal).await?;
        if let Some(jwt) = &self.jwt {
            let journal = jwt.journal_bytes()?;
            self.issuer
                .store
                .save_journal(JWT_JOURNAL, &journal)
                .await?;
        }
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

    /// One automatic rotation step of the JWT keys: persists and audits any change.
    async fn rotate_jwt_once(&self, now: SystemTime) -> Result<(), SyncError> {
        let Some(jwt) = &self.jwt else {
            return Ok(());
        };
        let (what, details) = match jwt.rotate_if_due(now)? {
            JwtRotationOutcome::Unchanged => return Ok(()),
            JwtRotationOutcome::Prepared(k) => ("prepared", serde_json::json!({"kid": k.kid})),
            JwtRotationOutcome::Activated(k) => ("activated", serde_json::json!({"kid": k.kid})),
            JwtRotationOutcome::Pruned(kids) => ("pruned", serde_json::json!({"kids": kids})),
        };
        self.persist().await?;
        tracing::info!(change = what, details = %details, "JWT key rotation");
        crate::audit::record(
            self.issuer.store.as_ref(),
            "jwt.rotate",
            "issuer",
            what,
            "ok",
            details,
        )
        .await;
        Ok(())
    }

    /// One automatic rotation step: asks the CA and the JWT key manager, persists and audits any
    /// change. Returns the CA's outcome.
    pub async fn rotate_once(&self, now: SystemTime) -> Result<RotationOutcome, SyncError> {
        self.rotate_jwt_once(now).await?;
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
