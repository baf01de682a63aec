//! Audit events written by the issuer's APIs (the store keeps them hash-chained), and what reads
//! them back: [`verify`] (the chain and its anchors), [`trace`] (delegation chains), [`list`]
//! (filtered listings) and [`publisher`] (the NATS JetStream stream, with the log as its outbox).

pub mod list;
pub mod publisher;
pub mod trace;
pub mod verify;

use std::time::SystemTime;

use signet_store::{NewAuditEvent, Store};
use tokio::sync::Notify;

/// Woken after every event [`record`] appends, so that the publisher sends it at once (it also
/// polls, for events appended by other processes).
static APPENDED: Notify = Notify::const_new();

/// Appends an audit event. The change it records is already done, so a failure is logged, not
/// returned.
pub async fn record(
    store: &dyn Store,
    kind: &str,
    actor: &str,
    subject: &str,
    outcome: &str,
    details: serde_json::Value,
) {
    let event = NewAuditEvent {
        time_ms: crate::ca_sync::unix_millis(SystemTime::now()),
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        subject: subject.to_owned(),
        outcome: outcome.to_owned(),
        details,
    };
    match store.append_audit_event(event).await {
        Ok(_) => APPENDED.notify_one(),
        Err(e) => tracing::error!(error = %e, kind, subject, "cannot append audit event"),
    }
}

/// Helpers of this module's tests.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use signet_store::Store;

    /// A fresh SQLite store in a temporary directory (kept alive by the returned guard).
    pub(crate) async fn temp_store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.sqlite3").display());
        (dir, signet_store::open(&url).await.unwrap())
    }
}
