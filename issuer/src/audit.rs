//! Audit events written by the issuer's APIs (the store keeps them hash-chained).

use std::time::SystemTime;

use signet_store::{NewAuditEvent, Store};

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
    if let Err(e) = store.append_audit_event(event).await {
        tracing::error!(error = %e, kind, subject, "cannot append audit event");
    }
}
