//! The delegation state the agent keeps for `FetchDelegationKeys` (and to read token holders):
//! the issuer's delegation keys and revocation list, from `GetDelegationState` on the node API.
//!
//! Fetched once the agent has its SVID, again whenever a `WatchEntries` event announces a
//! `delegation_sequence` other than the one held (the entry change stream carries it, so a
//! revocation at the issuer reaches the agent's verifiers within moments), and every 30 s as a
//! safety net. A failed fetch is retried with backoff (1 s to 30 s) and the state held so far is
//! kept. `FailedPrecondition` (delegation not configured) or `Unimplemented` (an issuer without
//! delegation) publishes [`DelegationStatus::Disabled`]; a document the agent cannot parse is
//! refused and logged, the previous state kept.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::node_client::NodeClientError;
use crate::runtime::Shared;
use crate::runtime::backoff::Backoff;
use crate::workload_api::{DelegationSnapshot, DelegationStatus};

/// Refresh interval while nothing is announced (a safety net).
const SAFETY_POLL: Duration = Duration::from_secs(30);
/// Retry delays after a failed fetch.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Records the `delegation_sequence` of a `WatchEntries` event (wakes the refresh task when it
/// is new).
pub(crate) fn announce(shared: &Shared, sequence: u64) {
    shared.delegation_announced.send_if_modified(|cur| {
        if *cur == Some(sequence) {
            false
        } else {
            *cur = Some(sequence);
            true
        }
    });
}

/// Keeps `shared.delegation` up to date until `stop` holds `true`.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut identity = shared.identity.subscribe();
    let mut announced = shared.delegation_announced.subscribe();
    let mut backoff = Backoff::new(RETRY_BACKOFF.0, RETRY_BACKOFF.1);
    let mut due = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        if identity.borrow_and_update().agent_id.is_none() {
            tokio::select! {
                r = stop.changed() => if r.is_err() { return },
                _ = identity.changed() => {}
            }
            continue;
        }
        if Instant::now() < due {
            tokio::select! {
                r = stop.changed() => if r.is_err() { return } else { continue },
                _ = identity.changed() => continue,
                changed = announced.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let sequence = *announced.borrow_and_update();
                    if sequence.is_none() || sequence == shared.delegation.borrow().sequence() {
                        continue;
                    }
                    tracing::debug!(sequence = ?sequence, "the issuer announces a new delegation state");
                }
                () = tokio::time::sleep_until(due) => {}
            }
        }
        match fetch(&shared).await {
            Ok(()) => {
                if backoff.failures() > 0 {
                    tracing::info!("delegation state fetched again");
                }
                backoff.reset();
                due = Instant::now() + SAFETY_POLL;
            }
            Err(e) => {
                if backoff.failures() == 0 {
                    tracing::warn!(error = %e, "cannot fetch the delegation state; retrying");
                } else {
                    tracing::debug!(error = %e, "cannot fetch the delegation state");
                }
                due = Instant::now() + backoff.next_delay();
            }
        }
    }
}

/// One `GetDelegationState`; publishes what it learns.
async fn fetch(shared: &Shared) -> Result<(), NodeClientError> {
    let answer = {
        let _gate = shared.rpc_gate.read().await;
        shared.client.get_delegation_state().await
    };
    let status = match answer {
        Ok(state) => {
            let snapshot =
                DelegationSnapshot::parse(state.keys_json, state.revocations_json, state.sequence)
                    .map_err(|e| NodeClientError::Protocol(format!("the delegation state: {e}")))?;
            DelegationStatus::Available(Arc::new(snapshot))
        }
        Err(NodeClientError::Rpc { code, message })
            if matches!(
                code,
                tonic::Code::FailedPrecondition | tonic::Code::Unimplemented
            ) =>
        {
            DelegationStatus::Disabled(if code == tonic::Code::Unimplemented {
                format!("the issuer does not support delegation ({message})")
            } else {
                message
            })
        }
        Err(e) => return Err(e),
    };
    publish(&shared.delegation, status);
    Ok(())
}

/// Replaces the held state if it differs, and logs the change.
fn publish(tx: &watch::Sender<DelegationStatus>, status: DelegationStatus) {
    tx.send_if_modified(|cur| {
        let same = match (&*cur, &status) {
            (DelegationStatus::Available(a), DelegationStatus::Available(b)) => {
                a.sequence == b.sequence
                    && a.keys_json == b.keys_json
                    && a.revocations_json == b.revocations_json
            }
            (a, b) => a == b,
        };
        if same {
            return false;
        }
        match &status {
            DelegationStatus::Available(s) => tracing::info!(
                sequence = s.sequence,
                keys = s.keys.infos().len(),
                revoked = s.revoked,
                "delegation state updated"
            ),
            DelegationStatus::Disabled(reason) => {
                tracing::info!(%reason, "delegation is off at the issuer")
            }
            DelegationStatus::Unknown => {}
        }
        *cur = status.clone();
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(sequence: u64, revoked: &str) -> DelegationStatus {
        DelegationStatus::Available(Arc::new(
            DelegationSnapshot::parse(
                format!("{{\"keys\":[],\"sequence\":{sequence}}}"),
                format!("{{\"revoked\":[{revoked}],\"sequence\":{sequence}}}"),
                sequence,
            )
            .unwrap(),
        ))
    }

    #[test]
    fn only_a_changed_state_is_published() {
        let (tx, mut rx) = watch::channel(DelegationStatus::Unknown);
        rx.borrow_and_update();
        publish(&tx, state(1, ""));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().sequence(), Some(1));
        publish(&tx, state(1, ""));
        assert!(!rx.has_changed().unwrap());
        let revoked = r#"{"revocation_id":"ab","token_id":"t","revoked_at":1}"#;
        publish(&tx, state(2, revoked));
        assert_eq!(rx.borrow_and_update().sequence(), Some(2));
        publish(&tx, DelegationStatus::Disabled("off".into()));
        assert_eq!(rx.borrow_and_update().sequence(), Some(0));
        publish(&tx, DelegationStatus::Disabled("off".into()));
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn a_bad_document_is_refused() {
        assert!(DelegationSnapshot::parse("{".into(), "{\"revoked\":[]}".into(), 1).is_err());
        assert!(
            DelegationSnapshot::parse(
                "{\"keys\":[]}".into(),
                r#"{"revoked":[{"revocation_id":"zz","token_id":"t","revoked_at":1}]}"#.into(),
                1
            )
            .is_err()
        );
    }
}
