//! Keeps the store in step with the CA: after every change of the CA's slots (start-up, automatic
//! rotation, `ca prepare|activate`) the CA journal and the own trust bundle are written to the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_ca::{CaError, RotationOutcome};
use signet_spiffe::bundle::{Bundle, BundleError};
use signet_store::{StoreError, StoredBundle};

use crate::state::Issuer;

/// Name of the CA journal in the store.
pub const CA_JOURNAL: &str = "ca";

/// Why the CA state could not be persisted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The CA failed.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
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
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CaSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSync")
            .field("ca_ttl", &self.ca_ttl)
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
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The own trust bundle as the CA publishes it now.
    pub fn own_bundle(&self) -> Bundle {
        let ca = &self.issuer.ca;
        Bundle {
            trust_domain: self.issuer.trust_domain.clone(),
            x509_authorities: ca.trust_anchors(),
            jwt_authorities: Vec::new(),
            sequence: ca.bundle_sequence(),
            refresh_hint: Some(refresh_hint(self.ca_ttl)),
        }
    }

    /// Writes the CA journal and the own bundle to the store.
    pub async fn persist(&self) -> Result<(), SyncError> {
        let _guard = self.lock.lock().await;
        let journal = self.issuer.ca.journal_bytes()?;
        let document = self.own_bundle().to_json()?;
        self.issuer.store.save_journal(CA_JOURNAL, &journal).await?;
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

    /// One automatic rotation step: asks the CA, persists and audits any change.
    pub async fn rotate_once(&self, now: SystemTime) -> Result<RotationOutcome, SyncError> {
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
