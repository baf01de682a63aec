//! The agent's own identity: node attestation, renewal of the agent SVID, re-attestation.
//!
//! - The agent SVID (and its key) is persisted after every attestation and renewal, so a restart
//!   reuses it while it is valid and never needs the (spent) join token again.
//! - It is renewed at a random point between 50 % and 60 % of its lifetime; failures are retried
//!   with exponential backoff and jitter (1 s to 30 s) until it expires.
//! - When it has expired (e.g. the issuer was unreachable for that long) or the issuer no longer
//!   accepts it (evicted, re-attested elsewhere), the agent re-attests by itself with x509pop. A
//!   join token is single-use: the agent uses a token given on its command line if it has not
//!   used it yet, and otherwise logs exactly what to do ([`JOIN_TOKEN_EXPIRED`]), keeps serving
//!   the workload SVIDs it still holds, and waits.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_attestors::x509pop::X509PopAgent;
use signet_spiffe::SpiffeId;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::NodeAttestorConfig;
use crate::node_client::{AgentIdentity, NodeClientError};
use crate::runtime::backoff::{Backoff, renew_at};
use crate::runtime::certs::{leaf_info, rfc3339};
use crate::runtime::{RunError, Shared};

/// What the agent says when its join-token SVID expired and it cannot attest again by itself.
pub const JOIN_TOKEN_EXPIRED: &str = "agent SVID expired; generate a new token with `signet-issuer token generate` and restart with --join-token";
/// What the agent says when it has no SVID and no join token.
pub const JOIN_TOKEN_MISSING: &str = "no agent SVID yet; generate a token with `signet-issuer token generate` and start with --join-token TOKEN";
/// What the agent says when the issuer no longer accepts its join-token SVID.
pub const JOIN_TOKEN_REFUSED: &str = "the issuer no longer accepts this agent's SVID (evicted?); generate a new token with `signet-issuer token generate` and restart with --join-token";

/// Retry delays of renewal and attestation.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// How often the join-token instruction is repeated while the agent waits.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// The agent identity as the other tasks see it.
#[derive(Debug, Clone, Default)]
pub struct IdentityState {
    /// The agent's SPIFFE ID, once attested (or loaded from disk).
    pub agent_id: Option<SpiffeId>,
    /// Bumped by every attestation in this process (the entry sync then starts over).
    pub epoch: u64,
}

/// Whether the issuer refused the agent's SVID in a way that only a new attestation fixes.
pub fn needs_reattestation(e: &NodeClientError) -> bool {
    match e {
        NodeClientError::Rpc { code, message } => {
            *code == tonic::Code::PermissionDenied
                && (message.contains("is not attested") || message.contains("not the current SVID"))
        }
        NodeClientError::NotAttested => true,
        _ => false,
    }
}

/// Whether an error is worth retrying (the issuer may come back), as opposed to a refusal.
fn transient(e: &NodeClientError) -> bool {
    match e {
        NodeClientError::Connect { .. } | NodeClientError::Protocol(_) => true,
        NodeClientError::Rpc { code, .. } => matches!(
            code,
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::ResourceExhausted
                | tonic::Code::Aborted
                | tonic::Code::Internal
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// The identity task.
pub(crate) struct IdentityManager {
    shared: Arc<Shared>,
    attestor: NodeAttestorConfig,
    join_token: Option<Zeroizing<String>>,
    /// Whether this process has held a valid identity (refusals before that are fatal).
    established: bool,
    /// The issuer refused the current identity: attest again.
    refused: bool,
    epoch: u64,
}

/// How an attestation attempt ended.
enum Attempt {
    Done,
    /// Nothing to attest with (join token spent); the message says what to do.
    Stuck(&'static str),
}

impl IdentityManager {
    pub(crate) fn new(
        shared: Arc<Shared>,
        attestor: NodeAttestorConfig,
        join_token: Option<Zeroizing<String>>,
    ) -> Self {
        Self {
            shared,
            attestor,
            join_token,
            established: false,
            refused: false,
            epoch: 0,
        }
    }

    fn publish(&self, id: &AgentIdentity) {
        self.shared.identity.send_replace(IdentityState {
            agent_id: Some(id.spiffe_id.clone()),
            epoch: self.epoch,
        });
        self.shared
            .health
            .set_agent_svid_expiry(Some(id.expires_at));
    }

    fn persist(&self, id: &AgentIdentity) {
        if let Err(e) = self.shared.data.save_agent_svid(id) {
            tracing::error!(error = %e, "cannot persist the agent SVID; a restart will need to attest again");
        }
        self.shared.publish_bundle();
    }

    /// Runs until `shutdown`; returns an error only for a refusal before the agent ever held a
    /// valid identity (bad or spent join token, x509pop certificate refused, ...).
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
        // Start-up decisions that need no network.
        let now = SystemTime::now();
        match self.shared.client.identity() {
            Some(id) if id.expires_at > now => {
                if self.join_token.is_some() {
                    tracing::info!(
                        agent_id = %id.spiffe_id,
                        "a valid agent SVID is on disk: the --join-token given is kept for a re-attestation only"
                    );
                }
                self.established = true;
                self.publish(&id);
            }
            Some(id) => {
                tracing::warn!(agent_id = %id.spiffe_id, expired_at = %rfc3339(id.expires_at), "the agent SVID on disk has expired");
                if self.attestor == NodeAttestorConfig::JoinToken && self.join_token.is_none() {
                    return Err(RunError::Attestation(JOIN_TOKEN_EXPIRED.into()));
                }
            }
            None => {
                if self.attestor == NodeAttestorConfig::JoinToken && self.join_token.is_none() {
                    return Err(RunError::Attestation(JOIN_TOKEN_MISSING.into()));
                }
            }
        }

        let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let now = SystemTime::now();
            let current = self
                .shared
                .client
                .identity()
                .filter(|id| id.expires_at > now && !self.refused);
            let Some(id) = current else {
                match self.attest(&mut backoff, &mut shutdown).await? {
                    Attempt::Done => continue,
                    Attempt::Stuck(msg) => {
                        tracing::error!("{msg}");
                        self.shared.health.set_agent_svid_expiry(None);
                        tokio::select! {
                            _ = shutdown.changed() => {}
                            _ = tokio::time::sleep(REMIND_EVERY) => {}
                            _ = self.shared.reattest.notified() => {}
                        }
                        continue;
                    }
                }
            };

            // Wait for the renewal point, a re-attestation request, or shutdown.
            let not_before = id
                .cert_chain
                .first()
                .and_then(|l| leaf_info(l).ok())
                .map_or(now, |i| i.not_before);
            let when = renew_at(not_before, id.expires_at);
            let sleep = when.duration_since(now).unwrap_or_default();
            tracing::debug!(renew_at = %rfc3339(when), expires_at = %rfc3339(id.expires_at), "agent SVID renewal scheduled");
            let check_only = tokio::select! {
                _ = shutdown.changed() => continue,
                _ = tokio::time::sleep(sleep) => false,
                _ = self.shared.reattest.notified() => true,
            };
            if check_only {
                // Another task saw a refusal: confirm it before attesting again.
                let probe = {
                    let _gate = self.shared.rpc_gate.read().await;
                    self.shared.client.get_bundle().await
                };
                match probe {
                    Ok(_) => {
                        self.shared.publish_bundle();
                        continue;
                    }
                    Err(e) if needs_reattestation(&e) => {
                        tracing::warn!(error = %e, "the issuer refused the agent SVID");
                        self.forget_identity();
                        continue;
                    }
                    Err(_) => {
                        // Unreachable: the regular renewal cycle handles it.
                        continue;
                    }
                }
            }
            self.renew(&id, &mut backoff, &mut shutdown).await;
        }
    }

    /// Marks the current identity as refused so that the loop attests again.
    fn forget_identity(&mut self) {
        self.refused = true;
    }

    /// Renews until success, a refusal that calls for attestation, expiry or shutdown.
    async fn renew(
        &mut self,
        id: &AgentIdentity,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = {
                let _gate = self.shared.rpc_gate.write().await;
                self.shared.client.renew().await
            };
            match result {
                Ok(new) => {
                    backoff.reset();
                    self.persist(&new);
                    self.publish(&new);
                    tracing::info!(
                        agent_id = %new.spiffe_id,
                        expires_at = %rfc3339(new.expires_at),
                        "agent SVID renewed"
                    );
                    return;
                }
                Err(e) if needs_reattestation(&e) => {
                    tracing::warn!(error = %e, "the issuer refused to renew the agent SVID");
                    self.forget_identity();
                    return;
                }
                Err(e) => {
                    let now = SystemTime::now();
                    if id.expires_at <= now {
                        tracing::warn!(error = %e, "agent SVID expired before it could be renewed");
                        return;
                    }
                    let delay = backoff
                        .next_delay()
                        .min(id.expires_at.duration_since(now).unwrap_or_default());
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        expires_at = %rfc3339(id.expires_at),
                        "agent SVID renewal failed; will retry"
                    );
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Attests (retrying transient failures) until it succeeds, is refused, or has nothing to
    /// attest with.
    async fn attest(
        &mut self,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Attempt, RunError> {
        loop {
            if *shutdown.borrow() {
                return Ok(Attempt::Done);
            }
            let result = match &self.attestor {
                NodeAttestorConfig::JoinToken => {
                    let Some(token) = self.join_token.clone() else {
                        return Ok(Attempt::Stuck(if self.refused {
                            JOIN_TOKEN_REFUSED
                        } else if self.shared.client.identity().is_some() {
                            JOIN_TOKEN_EXPIRED
                        } else {
                            JOIN_TOKEN_MISSING
                        }));
                    };
                    let _gate = self.shared.rpc_gate.write().await;
                    self.shared.client.attest_join_token(&token).await
                }
                NodeAttestorConfig::X509Pop {
                    certificate_path,
                    private_key_path,
                } => {
                    // Read at each attempt: the node certificate may have been rotated on disk.
                    let agent = X509PopAgent::from_pem_files(certificate_path, private_key_path)
                        .map_err(|e| {
                            RunError::Attestation(format!(
                                "node_attestor (x509pop) {} / {}: {e}",
                                certificate_path.display(),
                                private_key_path.display()
                            ))
                        });
                    let agent = match agent {
                        Ok(a) => a,
                        Err(e) if !self.established => return Err(e),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot load the x509pop certificate");
                            let delay = backoff.next_delay();
                            tokio::select! {
                                _ = shutdown.changed() => {}
                                _ = tokio::time::sleep(delay) => {}
                            }
                            continue;
                        }
                    };
                    let _gate = self.shared.rpc_gate.write().await;
                    self.shared.client.attest_x509pop(&agent).await
                }
            };
            match result {
                Ok(att) => {
                    backoff.reset();
                    // A join token is single-use.
                    self.join_token = None;
                    self.epoch += 1;
                    self.established = true;
                    self.refused = false;
                    self.persist(&att.identity);
                    self.publish(&att.identity);
                    tracing::info!(
                        agent_id = %att.identity.spiffe_id,
                        attestor = self.attestor.name(),
                        expires_at = %rfc3339(att.identity.expires_at),
                        selectors = att.selectors.len(),
                        "node attested"
                    );
                    return Ok(Attempt::Done);
                }
                Err(e) if transient(&e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "node attestation failed; will retry"
                    );
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    let msg = format!("node attestation ({}) refused: {e}", self.attestor.name());
                    if !self.established {
                        return Err(RunError::Attestation(match self.attestor {
                            NodeAttestorConfig::JoinToken => format!(
                                "{msg}; a join token is single-use and expires: generate a new one with `signet-issuer token generate`"
                            ),
                            _ => msg,
                        }));
                    }
                    // A spent token is dropped; x509pop is retried slowly.
                    self.join_token = None;
                    tracing::error!("{msg}");
                    let delay = BACKOFF.1;
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: tonic::Code, message: &str) -> NodeClientError {
        NodeClientError::Rpc {
            code,
            message: message.into(),
        }
    }

    #[test]
    fn refusals_that_call_for_a_new_attestation_are_recognised() {
        assert!(needs_reattestation(&rpc(
            tonic::Code::PermissionDenied,
            "agent spiffe://td/signet/agent/x is not attested (evicted or never attested); it must attest again"
        )));
        assert!(needs_reattestation(&rpc(
            tonic::Code::PermissionDenied,
            "the presented SVID (serial 01) is not the current SVID of agent spiffe://td/x: it was renewed or re-attested"
        )));
        assert!(needs_reattestation(&NodeClientError::NotAttested));
        // Banned: attesting again would not help.
        assert!(!needs_reattestation(&rpc(
            tonic::Code::PermissionDenied,
            "agent spiffe://td/x is banned"
        )));
        assert!(!needs_reattestation(&rpc(tonic::Code::Unavailable, "down")));
    }

    #[test]
    fn only_outages_are_retried_at_start_up() {
        assert!(transient(&NodeClientError::Connect {
            address: "127.0.0.1:1".into(),
            reason: "refused".into(),
        }));
        assert!(transient(&rpc(tonic::Code::Unavailable, "")));
        assert!(transient(&rpc(tonic::Code::Internal, "")));
        assert!(!transient(&rpc(
            tonic::Code::PermissionDenied,
            "join token unknown"
        )));
        assert!(!transient(&rpc(
            tonic::Code::InvalidArgument,
            "bad payload"
        )));
        assert!(!transient(&NodeClientError::NotAttested));
    }

    #[test]
    fn the_join_token_instructions_are_exact() {
        assert_eq!(
            JOIN_TOKEN_EXPIRED,
            "agent SVID expired; generate a new token with `signet-issuer token generate` and restart with --join-token"
        );
        assert!(JOIN_TOKEN_MISSING.contains("--join-token TOKEN"));
        assert!(JOIN_TOKEN_REFUSED.contains("token generate"));
    }
}
