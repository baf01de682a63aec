//! Node attestation: the AttestAgent stream, the join-token attestor and its redemption, and the
//! issuance of the agent SVID.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use signet_attestors::join_token;
use signet_attestors::node::AttestationRequest;
use signet_attestors::{AttestError, ChallengeChannel, NodeAttestation, NodeAttestor};
use signet_ca::X509SvidRequest;
use signet_proto::node as pb;
use signet_spiffe::SpiffeId;
use signet_store::{
    AttestedAgent, JoinToken, JoinTokenRedemption, NewEntry, Selector, Store, StoreError,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{NodeService, store_status, svid_proto};
use crate::ca_sync::unix_secs;
use crate::state::Issuer;

/// The join-token attestor, server side: the pure rules come from `signet_attestors::join_token`.
///
/// [`NodeAttestor::attest`] only checks the token's form and derives the agent ID. The token is
/// not consumed by [`NodeAttestor::redeem`] but by [`redeem_join_token`], which spends it, creates
/// its alias entry and records the agent in one store transaction
/// ([`Store::redeem_join_token`]), after the issuer has done every other check and signed the
/// agent SVID: the token is spent if and only if the agent is recorded (an expired token is spent
/// alone). No failure of the issuer's own (bad CSR, banned agent, signing error, datastore error)
/// spends a token; an unknown, spent or expired token is refused there and the SVID discarded.
pub(crate) struct JoinTokenAttestor;

#[async_trait]
impl NodeAttestor for JoinTokenAttestor {
    fn attestor_type(&self) -> &'static str {
        join_token::ATTESTOR_TYPE
    }

    async fn attest(
        &self,
        request: AttestationRequest<'_>,
        _channel: &mut dyn ChallengeChannel,
    ) -> Result<NodeAttestation, AttestError> {
        let token = join_token::parse_payload(request.payload)?;
        let agent_id = join_token::agent_id(request.trust_domain, &token)?;
        Ok(NodeAttestation {
            agent_id,
            selectors: vec![join_token::node_selector(&token)],
            can_reattest: false,
            aliases: Vec::new(),
        })
    }

    /// Refuses: a join token must be redeemed together with the agent record
    /// ([`redeem_join_token`]); spending it alone would let a later failure lose it.
    async fn redeem(
        &self,
        _request: AttestationRequest<'_>,
        _attestation: &mut NodeAttestation,
    ) -> Result<(), AttestError> {
        Err(AttestError::Config(
            "join tokens are redeemed by the store together with the agent record".into(),
        ))
    }
}

/// Redeems the join token of `payload` for `agent` in one store transaction: spends the token,
/// creates its alias entry (parent `issuer_id`, the agent's node selectors) and records the agent.
/// Returns the spent token; errors carry whether they are a denial.
async fn redeem_join_token(
    store: &dyn Store,
    payload: &[u8],
    now: i64,
    agent: AttestedAgent,
    issuer_id: &str,
) -> Result<JoinToken, (Status, bool)> {
    let token = join_token::parse_payload(payload).map_err(|e| (attest_status(&e), true))?;
    let hash = join_token::hash_join_token(&token);
    let agent_id = agent.spiffe_id.clone();
    let alias_selectors = agent.selectors.clone();
    let refused = |e: AttestError| (attest_status(&e), true);
    match store
        .redeem_join_token(&hash, now, agent, issuer_id, alias_selectors)
        .await
    {
        Ok(JoinTokenRedemption::Redeemed(t)) => Ok(t),
        Ok(JoinTokenRedemption::Unknown) => Err(refused(AttestError::UnknownJoinToken)),
        Ok(JoinTokenRedemption::AlreadySpent) => Err(refused(AttestError::JoinTokenSpent)),
        Ok(JoinTokenRedemption::Expired) => Err(refused(AttestError::JoinTokenExpired)),
        // Banned between the issuer's check and the transaction: nothing was spent.
        Err(StoreError::Conflict(_)) => Err((
            Status::permission_denied(format!("agent {agent_id} is banned")),
            true,
        )),
        Err(e) => Err((store_status(&e), false)),
    }
}

/// The issuer's end of the challenge round trips, over the AttestAgent stream.
struct StreamChallenges<'a> {
    inbound: &'a mut Streaming<pb::AttestAgentRequest>,
    outbound: &'a mpsc::Sender<Result<pb::AttestAgentResponse, Status>>,
}

#[async_trait]
impl ChallengeChannel for StreamChallenges<'_> {
    async fn round_trip(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
        use pb::attest_agent_request::Step;
        self.outbound
            .send(Ok(pb::AttestAgentResponse {
                step: Some(pb::attest_agent_response::Step::Challenge(challenge)),
            }))
            .await
            .map_err(|_| AttestError::Challenge("the agent went away".into()))?;
        match self.inbound.message().await {
            Ok(Some(pb::AttestAgentRequest {
                step: Some(Step::ChallengeResponse(answer)),
            })) => Ok(answer),
            Ok(Some(_)) => Err(AttestError::Challenge(
                "expected a challenge_response message".into(),
            )),
            Ok(None) => Err(AttestError::Challenge(
                "the agent closed the stream before answering the challenge".into(),
            )),
            Err(s) => Err(AttestError::Challenge(s.message().to_owned())),
        }
    }
}

/// Maps an attestation failure to a status; the message is the precise reason.
fn attest_status(e: &AttestError) -> Status {
    let msg = e.to_string();
    match e {
        AttestError::InvalidPayload(_) | AttestError::MalformedJoinToken => {
            Status::invalid_argument(msg)
        }
        AttestError::UnsupportedKey(_) => Status::invalid_argument(msg),
        AttestError::Challenge(_) => Status::aborted(msg),
        AttestError::Unavailable(_) => Status::unavailable(msg),
        AttestError::Config(_) | AttestError::UnexpectedChallenge(_) => Status::internal(msg),
        _ => Status::permission_denied(msg),
    }
}

/// The outcome of one attempt, for metrics and the audit log.
struct Attempt {
    attestor: String,
    agent_id: Option<SpiffeId>,
    token_hash: Option<String>,
}

impl NodeService {
    /// Runs one attestation over the stream; returns the result message or the refusal.
    pub(crate) async fn run_attestation(
        &self,
        inbound: &mut Streaming<pb::AttestAgentRequest>,
        outbound: &mpsc::Sender<Result<pb::AttestAgentResponse, Status>>,
        remote: Option<SocketAddr>,
    ) -> Result<pb::AttestationResult, Status> {
        let mut attempt = Attempt {
            attestor: "unknown".into(),
            agent_id: None,
            token_hash: None,
        };
        let result = tokio::time::timeout(
            super::ATTESTATION_TIMEOUT,
            self.attest_inner(inbound, outbound, &mut attempt),
        )
        .await
        .unwrap_or_else(|_| {
            Err((
                Status::deadline_exceeded(format!(
                    "attestation not completed within {}s",
                    super::ATTESTATION_TIMEOUT.as_secs()
                )),
                true,
            ))
        });
        let issuer = &self.issuer;
        let (outcome, reason) = match &result {
            Ok(_) => ("ok", None),
            Err((status, denied)) => (
                if *denied { "denied" } else { "error" },
                Some(status.message().to_owned()),
            ),
        };
        issuer
            .metrics
            .record_attestation(&attempt.attestor, outcome);
        let actor = remote.map_or_else(|| "node-api".to_owned(), |a| format!("node-api:{a}"));
        let subject = attempt
            .agent_id
            .as_ref()
            .map_or_else(|| "unknown agent".to_owned(), ToString::to_string);
        let mut details = serde_json::json!({ "attestor": attempt.attestor });
        if let Some(r) = &reason {
            details["reason"] = serde_json::Value::String(r.clone());
        }
        if let Some(h) = &attempt.token_hash
            && outcome != "ok"
        {
            details["token_sha256"] = serde_json::Value::String(h.clone());
        }
        crate::audit::record(
            issuer.store.as_ref(),
            "agent.attest",
            &actor,
            &subject,
            outcome,
            details,
        )
        .await;
        match &result {
            Ok(r) => {
                tracing::info!(agent_id = %r.spiffe_id, attestor = %attempt.attestor, "agent attested")
            }
            Err((s, _)) => tracing::info!(
                attestor = %attempt.attestor,
                reason = %s.message(),
                "agent attestation refused"
            ),
        }
        result.map_err(|(s, _)| s)
    }

    /// The attestation proper; errors carry whether they are a denial (vs. an internal failure).
    async fn attest_inner(
        &self,
        inbound: &mut Streaming<pb::AttestAgentRequest>,
        outbound: &mpsc::Sender<Result<pb::AttestAgentResponse, Status>>,
        attempt: &mut Attempt,
    ) -> Result<pb::AttestationResult, (Status, bool)> {
        use pb::attest_agent_request::Step;
        let denied = |s: Status| (s, true);
        let issuer: &Issuer = &self.issuer;

        let first = inbound
            .message()
            .await
            .map_err(|s| denied(Status::invalid_argument(s.message().to_owned())))?
            .ok_or_else(|| {
                denied(Status::invalid_argument(
                    "the attestation stream closed before the parameters",
                ))
            })?;
        let Some(Step::Params(params)) = first.step else {
            return Err(denied(Status::invalid_argument(
                "the first attestation message must carry the parameters",
            )));
        };

        let Some(attestor) = self.attestors.get(params.attestor_type.as_str()).cloned() else {
            let known = self
                .attestors
                .keys()
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let status = if params.attestor_type == signet_attestors::x509pop::ATTESTOR_TYPE {
                attempt.attestor = params.attestor_type.clone();
                Status::failed_precondition("x509pop attestation is not enabled on this issuer")
            } else {
                Status::invalid_argument(format!(
                    "unknown node attestor type {:?} (enabled: {known})",
                    params.attestor_type
                ))
            };
            return Err(denied(status));
        };
        if attestor.attestor_type() == join_token::ATTESTOR_TYPE
            && let Ok(token) = join_token::parse_payload(&params.payload)
        {
            attempt.token_hash = Some(join_token::hash_join_token(&token));
        }
        attempt.attestor = attestor.attestor_type().to_owned();

        // Check the CSR first: a bad CSR must not spend a join token.
        let spki = signet_ca::public_key_from_csr(&params.csr)
            .map_err(|e| denied(Status::invalid_argument(format!("invalid CSR: {e}"))))?;

        let now = SystemTime::now();
        let request = AttestationRequest {
            trust_domain: &issuer.trust_domain,
            payload: &params.payload,
            now,
        };
        let mut channel = StreamChallenges { inbound, outbound };
        let mut attestation = attestor
            .attest(request, &mut channel)
            .await
            .map_err(|e| (attest_status(&e), e.is_denial()))?;
        let agent_id = attestation.agent_id.clone();
        let is_join_token = attestor.attestor_type() == join_token::ATTESTOR_TYPE;
        // A join-token agent ID contains the token: name it in the audit log only once the token
        // is spent (below), never for a refused, possibly still unspent token.
        if !is_join_token {
            attempt.agent_id = Some(agent_id.clone());
        }
        let id_str = agent_id.to_string();

        // Every check that can fail comes before the redemption (which spends join tokens).
        let existing = issuer
            .store
            .get_agent(&id_str)
            .await
            .map_err(|e| (store_status(&e), false))?;
        if let Some(a) = &existing {
            if a.banned {
                return Err(denied(Status::permission_denied(format!(
                    "agent {id_str} is banned"
                ))));
            }
            if !a.can_reattest {
                // A join-token agent exists only once its token was spent.
                let status = if is_join_token {
                    attest_status(&AttestError::JoinTokenSpent)
                } else {
                    Status::permission_denied(format!(
                        "agent {id_str} is already attested and its attestor does not allow \
                         re-attestation; evict it first"
                    ))
                };
                return Err(denied(status));
            }
        }

        let started = Instant::now();
        let svid = issuer
            .ca
            .sign_x509_svid(
                &X509SvidRequest {
                    spiffe_id: &agent_id,
                    public_key_spki_der: &spki,
                    ttl: issuer.defaults.agent_ttl,
                    dns_names: &[],
                },
                now,
            )
            .map_err(|e| {
                (
                    Status::internal(format!("cannot sign the agent SVID: {e}")),
                    false,
                )
            })?;
        issuer
            .metrics
            .record_signature("agent_svid", started.elapsed().as_secs_f64());

        // Spend the credential; on refusal the SVID above is dropped unsent. A join token is spent
        // below, in the transaction that records the agent.
        if !is_join_token {
            attestor
                .redeem(request, &mut attestation)
                .await
                .map_err(|e| (attest_status(&e), e.is_denial()))?;
        }

        let mut selectors: Vec<Selector> = attestation
            .selectors
            .iter()
            .map(|s| Selector::new(s.kind.clone(), s.value.clone()))
            .collect();
        selectors.sort();
        selectors.dedup();
        let now_s = unix_secs(now);
        let expires_at = unix_secs(svid.not_after);
        let record = AttestedAgent {
            spiffe_id: id_str.clone(),
            attestation_type: attempt.attestor.clone(),
            serial: super::tls::normalize_serial(&svid.serial_hex),
            expires_at,
            selectors: selectors.clone(),
            banned: false,
            can_reattest: attestation.can_reattest,
            created_at: existing.as_ref().map_or(now_s, |a| a.created_at),
            updated_at: now_s,
        };
        // Encoded before anything is stored: should it fail, the attestation leaves no trace.
        let bundle = self.own_bundle_proto().map_err(|s| (s, false))?;
        let issuer_id = issuer.issuer_id.to_string();
        let aliases_created = if is_join_token {
            let token = redeem_join_token(
                issuer.store.as_ref(),
                &params.payload,
                now_s,
                record,
                &issuer_id,
            )
            .await?;
            token.alias_spiffe_id.is_some()
        } else {
            let alias_entries = attestation
                .aliases
                .iter()
                .map(|alias| NewEntry {
                    spiffe_id: alias.to_string(),
                    parent_id: issuer_id.clone(),
                    selectors: selectors.clone(),
                    ..NewEntry::default()
                })
                .collect();
            issuer
                .store
                .create_agent(record, alias_entries)
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(_) => denied(Status::permission_denied(format!(
                        "agent {id_str} is banned"
                    ))),
                    other => (store_status(&other), false),
                })?;
            !attestation.aliases.is_empty()
        };
        attempt.agent_id = Some(agent_id.clone());
        if aliases_created {
            // Alias entries may have been created: tell watching agents.
            issuer.notifier.notify();
        }

        Ok(pb::AttestationResult {
            spiffe_id: id_str,
            svid: Some(svid_proto(&agent_id, svid.cert_chain_der, expires_at)),
            bundle: Some(bundle),
            selectors: selectors
                .into_iter()
                .map(|s| pb::Selector {
                    r#type: s.kind,
                    value: s.value,
                })
                .collect(),
        })
    }
}
