//! Change notification for `WatchEntries`: one [`RevisionNotifier`] per issuer publishes the store
//! revision, the own bundle sequence and the federated bundles revision on a `tokio::sync::watch`
//! channel; every watching agent holds one receiver.
//!
//! The published value is refreshed by one background task ([`RevisionNotifier::run`], started by
//! the node API server):
//! - at once when an in-process mutation calls [`RevisionNotifier::notify`] (the admin API after an
//!   entry or bundle change, the CA and JWT key rotation after an own bundle change, federation
//!   after storing a fetched bundle, node attestation after creating alias entries);
//! - and every poll interval (250 ms by default), so that changes made by another issuer sharing the
//!   PostgreSQL store are seen too.
//!
//! Each refresh is, for the whole issuer, one `current_revision()` query and one `list_bundles()`
//! query (the federated bundles are hashed into [`Revision::bundles_revision`]), plus in-memory
//! reads of the CA and JWT key sequences; idle watchers cost no query at all. A burst of changes
//! is coalesced: a watcher only ever sees the latest value.

use std::sync::Arc;
use std::time::Duration;

use signet_store::StoredBundle;
use tokio::sync::{Notify, watch};

use crate::state::Issuer;

/// The default interval between two reads of the store revision.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What `WatchEntries` publishes: the store revision, the own bundle's sequence number and the
/// federated bundles revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    /// The store-wide entry revision (`Store::current_revision`).
    pub revision: i64,
    /// The own trust bundle's `spiffe_sequence` ([`Issuer::own_bundle_sequence`]).
    pub bundle_sequence: u64,
    /// [`bundles_revision`] of the stored bundles.
    pub bundles_revision: u64,
    /// The delegation state's sequence (keys and revocations), 0 when delegation is off.
    pub delegation_sequence: u64,
}

/// The federated bundles revision: a digest of the trust domains and documents of the federated
/// (`own = false`) bundles among `bundles`, in trust-domain order; 0 when there is none. Opaque,
/// compared for equality only; the same on every issuer that reads the same store.
pub fn bundles_revision(bundles: &[StoredBundle]) -> u64 {
    let mut federated: Vec<&StoredBundle> = bundles.iter().filter(|b| !b.own).collect();
    if federated.is_empty() {
        return 0;
    }
    federated.sort_by(|a, b| a.trust_domain.cmp(&b.trust_domain));
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for b in federated {
        // Length-prefixed, so that no two different lists hash the same input.
        for part in [b.trust_domain.as_bytes(), b.document.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // Never 0, which means "no federated bundle".
    u64::from_be_bytes(first).max(1)
}

/// Publishes [`Revision`] changes to every watcher (see the module documentation).
#[derive(Debug)]
pub struct RevisionNotifier {
    /// `None` until the first read of the store.
    tx: watch::Sender<Option<Revision>>,
    wake: Notify,
    poll_interval: Duration,
}

impl Default for RevisionNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl RevisionNotifier {
    /// A notifier that reads the store every [`DEFAULT_POLL_INTERVAL`] (and on [`Self::notify`]).
    pub fn new() -> Self {
        Self::with_poll_interval(DEFAULT_POLL_INTERVAL)
    }

    /// A notifier with another poll interval (at least 10 ms).
    pub fn with_poll_interval(poll_interval: Duration) -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            tx,
            wake: Notify::new(),
            poll_interval: poll_interval.max(Duration::from_millis(10)),
        }
    }

    /// Tells the notifier that entries, the own bundle or a federated bundle may have changed: the
    /// store is read again at once and watchers are told if anything moved. Cheap and
    /// non-blocking; calls made while a read is under way lead to one more read, never get lost.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// A receiver of the published value (`None` until the first read of the store).
    pub fn subscribe(&self) -> watch::Receiver<Option<Revision>> {
        self.tx.subscribe()
    }

    /// The last published value.
    pub fn current(&self) -> Option<Revision> {
        *self.tx.borrow()
    }

    /// Number of open receivers (watching agents), for metrics and tests.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Reads the store revision, the own bundle sequence and the federated bundles once and
    /// publishes them if they changed.
    pub async fn refresh(&self, issuer: &Issuer) -> Result<Revision, signet_store::StoreError> {
        let revision = issuer.store.current_revision().await?;
        let bundles = issuer.store.list_bundles().await?;
        let value = Revision {
            revision,
            bundle_sequence: issuer.own_bundle_sequence(),
            bundles_revision: bundles_revision(&bundles),
            delegation_sequence: issuer.delegation_sequence(),
        };
        self.tx.send_if_modified(|cur| {
            if *cur == Some(value) {
                false
            } else {
                *cur = Some(value);
                true
            }
        });
        Ok(value)
    }

    /// The refresh loop: reads on every [`Self::notify`] and at every poll interval. Runs until
    /// dropped (the node API server aborts it when it stops). Store failures are logged and
    /// retried at the next tick; watchers keep the last value meanwhile.
    pub async fn run(self: Arc<Self>, issuer: Arc<Issuer>) {
        let mut failing = false;
        loop {
            match self.refresh(&issuer).await {
                Ok(_) if failing => {
                    tracing::info!("entry change notification: datastore readable again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "change notification: cannot read the store revision or bundles");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "store revision or bundles still unreadable"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll_interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(td: &str, doc: &str, own: bool) -> StoredBundle {
        StoredBundle {
            trust_domain: td.into(),
            document: doc.into(),
            own,
            updated_at: 1,
        }
    }

    #[test]
    fn bundles_revision_covers_federated_bundles_only() {
        let own = stored("example.org", "{own}", true);
        assert_eq!(bundles_revision(&[]), 0);
        assert_eq!(bundles_revision(std::slice::from_ref(&own)), 0);
        let a = stored("a.test", "{a}", false);
        let b = stored("b.test", "{b}", false);
        let base = bundles_revision(&[own.clone(), a.clone(), b.clone()]);
        assert_ne!(base, 0);
        // Order-independent, and blind to the own bundle and to timestamps.
        let mut own2 = own.clone();
        own2.document = "{own2}".into();
        let mut b_later = b.clone();
        b_later.updated_at = 99;
        assert_eq!(bundles_revision(&[b_later, own2, a.clone()]), base);
        // Any change of a document, an addition or a removal changes it.
        let b2 = stored("b.test", "{b2}", false);
        assert_ne!(bundles_revision(&[a.clone(), b2]), base);
        assert_ne!(bundles_revision(std::slice::from_ref(&a)), base);
        // The boundary between name and document is unambiguous.
        assert_ne!(
            bundles_revision(&[stored("ab", "c", false)]),
            bundles_revision(&[stored("a", "bc", false)])
        );
    }
}
