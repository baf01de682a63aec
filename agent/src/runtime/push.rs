//! [`PushTrigger`]: the entry sync runs when the issuer says something changed.
//!
//! A background task keeps a `WatchEntries` stream open (the node API's change notification: one
//! event at once, then one per change of the entry revision, the own bundle or the federated
//! bundles, bursts coalesced). Every event wakes the sync loop, which then runs a delta sync (after
//! 10 ms, so that a burst of changes is synced and signed together), so a new entry reaches its
//! workload within milliseconds of its creation. The stream is reopened when
//! the issuer ends it (at the latest when the SVID it was opened with expires, or after about ten
//! minutes), right after the agent SVID is renewed, and after a failure with backoff (1 s to 30 s).
//! While no stream is open the trigger falls back to polling every 500 ms (±10 %); while one is
//! open it still syncs every 30 s, as a safety net. Each event's `delegation_sequence` goes to
//! the delegation state task ([`crate::runtime::delegation`]), which refetches when it is new.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use rand::Rng;
use tokio::sync::{Notify, watch};

use crate::runtime::Shared;
use crate::runtime::backoff::Backoff;
use crate::runtime::sync::{DEFAULT_POLL_INTERVAL, SyncTrigger};

/// Sync interval while the change stream is open (a safety net).
const SAFETY_POLL: Duration = Duration::from_secs(30);
/// Pause after an event before syncing, to coalesce bursts.
const SETTLE: Duration = Duration::from_millis(10);
/// Reopen delays after a failed stream.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Wakes the sync loop on every change event of the issuer (see the module documentation).
pub(crate) struct PushTrigger {
    notify: Arc<Notify>,
    active: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PushTrigger {
    /// Starts the watch task; it stops when `shutdown` holds `true` or the trigger is dropped.
    pub(crate) fn spawn(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Self {
        let notify = Arc::new(Notify::new());
        let active = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(watch_loop(shared, notify.clone(), active.clone(), shutdown));
        Self {
            notify,
            active,
            task,
        }
    }
}

impl Drop for PushTrigger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl SyncTrigger for PushTrigger {
    async fn wait(&mut self) {
        let fallback = if self.active.load(Ordering::Acquire) {
            SAFETY_POLL
        } else {
            DEFAULT_POLL_INTERVAL.mul_f64(rand::rng().random_range(0.9..1.1))
        };
        tokio::select! {
            _ = self.notify.notified() => {
                // Let a burst of changes (e.g. entries registered by a script) settle, so that
                // they are synced and signed together rather than one pass each.
                tokio::time::sleep(SETTLE).await;
            }
            _ = tokio::time::sleep(fallback) => {}
        }
    }
}

/// How one stream ended.
enum Ended {
    /// The agent SVID changed: reopen with the new one.
    IdentityChanged,
    /// The issuer closed it after at least one event.
    Closed,
    /// It failed, or closed before any event.
    Failed(String),
}

async fn watch_loop(
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    active: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut identity = shared.identity.subscribe();
    let mut backoff = Backoff::new(REOPEN_BACKOFF.0, REOPEN_BACKOFF.1);
    let mut reported = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if identity.borrow_and_update().agent_id.is_none() {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = identity.changed() => {}
            }
            continue;
        }
        let mut stream = shared.client.watch();
        let mut events = 0u64;
        let ended = loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = identity.changed() => break Ended::IdentityChanged,
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        crate::runtime::delegation::announce(&shared, event.delegation_sequence);
                        events += 1;
                        if events == 1 {
                            active.store(true, Ordering::Release);
                            backoff.reset();
                            if reported {
                                tracing::info!("entry change stream open again");
                                reported = false;
                            }
                        }
                        notify.notify_one();
                    }
                    Some(Err(e)) => break Ended::Failed(e.to_string()),
                    None if events > 0 => break Ended::Closed,
                    None => break Ended::Failed("closed without an event".into()),
                }
            }
        };
        active.store(false, Ordering::Release);
        drop(stream);
        match ended {
            Ended::IdentityChanged | Ended::Closed => {}
            Ended::Failed(error) => {
                let delay = backoff.next_delay();
                if reported {
                    tracing::debug!(%error, "entry change stream failed again");
                } else {
                    tracing::info!(
                        %error,
                        "entry change stream unavailable; polling for changes every 500 ms meanwhile"
                    );
                    reported = true;
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
