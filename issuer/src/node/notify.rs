//! Change notification for `WatchEntries`: one [`RevisionNotifier`] per issuer publishes the store
//! revision and the own bundle sequence on a `tokio::sync::watch` channel; every watching agent
//! holds one receiver.
//!
//! The published value is refreshed by one background task ([`RevisionNotifier::run`], started by
//! the node API server):
//! - at once when an in-process mutation calls [`RevisionNotifier::notify`] (the admin API after an
//!   entry change, the CA rotation after a bundle change, node attestation after creating alias
//!   entries);
//! - and every poll interval (250 ms by default), so that changes made by another issuer sharing the
//!   PostgreSQL store are seen too.
//!
//! Each refresh is one `current_revision()` query for the whole issuer (plus an in-memory read of
//! the bundle sequence); idle watchers cost no query at all. A burst of changes is coalesced: a
//! watcher only ever sees the latest value.

use std::sync::Arc;
use std::time::Duration;

use signet_ca::CertificateAuthority;
use signet_store::Store;
use tokio::sync::{Notify, watch};

/// The default interval between two reads of the store revision.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What `WatchEntries` publishes: the store revision and the own bundle's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    /// The store-wide entry revision (`Store::current_revision`).
    pub revision: i64,
    /// The own trust bundle's `spiffe_sequence`.
    pub bundle_sequence: u64,
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

    /// Tells the notifier that entries or the own bundle may have changed: the store revision is
    /// read again at once and watchers are told if it (or the bundle sequence) moved. Cheap and
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

    /// Reads the store revision and bundle sequence once and publishes them if they changed.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        ca: &CertificateAuthority,
    ) -> Result<Revision, signet_store::StoreError> {
        let revision = store.current_revision().await?;
        let value = Revision {
            revision,
            bundle_sequence: ca.bundle_sequence(),
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
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, ca: Arc<CertificateAuthority>) {
        let mut failing = false;
        loop {
            match self.refresh(store.as_ref(), &ca).await {
                Ok(_) if failing => {
                    tracing::info!("entry change notification: datastore readable again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "entry change notification: cannot read the store revision");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "store revision still unreadable"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll_interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}
