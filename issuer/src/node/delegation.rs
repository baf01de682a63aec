//! The node API's delegation RPCs: an agent asks, for one of its attested workloads, for a new
//! delegation token ([`NodeService::mint_delegation`]) or a hop ([`NodeService::delegate_hop`]),
//! and fetches the delegation state its verifiers need ([`NodeService::delegation_state`]). The
//! workload is identified by its registration entry, authorized for the calling agent exactly as
//! for `NewJWTSVID`; [`crate::delegation::Delegation`] decides the rest.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_proto::node as pb;
use signet_spiffe::SpiffeId;
use tonic::Status;

use super::{NodeConnectInfo, NodeService};
use crate::delegation::{
    DelegateInput, Delegation, DelegationError, Issued, MintInput, SubjectProof,
};

/// Longest token accepted in a request, bytes.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The gRPC status of a refusal.
pub fn delegation_status(e: &DelegationError) -> Status {
    let msg = e.to_string();
    match e {
        DelegationError::InvalidRequest(_) => Status::invalid_argument(msg),
        DelegationError::InvalidIdToken(_) | DelegationError::InvalidToken(_) => {
            Status::unauthenticated(msg)
        }
        DelegationError::NotTheHolder(_)
        | DelegationError::Widening(_)
        | DelegationError::TooDeep(_)
        | DelegationError::Denied(_) => Status::permission_denied(msg),
        _ => Status::internal(msg),
    }
}

/// The delegation state, or FailedPrecondition when delegation is off.
pub fn enabled(d: Option<&Arc<Delegation>>) -> Result<&Arc<Delegation>, Status> {
    d.ok_or_else(|| {
        Status::failed_precondition(
            "delegation is not configured on this issuer ([delegation] policies_dir)",
        )
    })
}

/// The response message of a new token.
pub fn token_proto(issued: &Issued) -> pb::DelegationToken {
    let c = &issued.chain;
    pb::DelegationToken {
        token: issued.token.to_string(),
        token_id: c.token_id().to_owned(),
        subject: c.subject.id.clone(),
        chain: c.actors().into_iter().map(str::to_owned).collect(),
        rights: c.rights.iter().cloned().collect(),
        expires_at: i64::try_from(c.expires_at).unwrap_or(i64::MAX),
        remaining_depth: issued.remaining_depth(),
    }
}

fn rights(list: Vec<String>) -> BTreeSet<String> {
    list.into_iter().collect()
}

fn ttl(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

fn token_arg<'a>(name: &str, t: &'a str, required: bool) -> Result<&'a str, Status> {
    if t.len() > MAX_TOKEN_LEN {
        return Err(Status::invalid_argument(format!(
            "{name} is {} bytes; at most {MAX_TOKEN_LEN}",
            t.len()
        )));
    }
    if required && t.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{name} is required")));
    }
    Ok(t)
}

impl NodeService {
    pub(super) async fn mint_delegation(
        &self,
        info: Option<&NodeConnectInfo>,
        req: pb::MintDelegationRequest,
    ) -> Result<pb::DelegationToken, Status> {
        let caller = self.authenticate(info).await?;
        let d = enabled(self.issuer.delegation.as_ref())?;
        if req.entry_id.is_empty() {
            return Err(Status::invalid_argument("entry_id is required"));
        }
        let id_token = token_arg("id_token", &req.id_token, false)?;
        let (_, actor) = self
            .authorized_workload_entry(&caller, &req.entry_id, SystemTime::now())
            .await?;
        let subject = if id_token.is_empty() {
            SubjectProof::Workload(&actor)
        } else {
            SubjectProof::IdToken(id_token)
        };
        let issued = d
            .mint(MintInput {
                subject,
                actor: &actor,
                requested_by: &caller.id.to_string(),
                rights: rights(req.rights),
                ttl: ttl(req.ttl_seconds),
                max_depth: (req.max_depth > 0).then_some(req.max_depth),
                audit_kind: crate::audit::trace::KIND_MINT,
            })
            .await
            .map_err(|e| delegation_status(&e))?;
        Ok(token_proto(&issued))
    }

    pub(super) async fn delegate_hop(
        &self,
        info: Option<&NodeConnectInfo>,
        req: pb::DelegateRequest,
    ) -> Result<pb::DelegationToken, Status> {
        let caller = self.authenticate(info).await?;
        let d = enabled(self.issuer.delegation.as_ref())?;
        if req.entry_id.is_empty() {
            return Err(Status::invalid_argument("entry_id is required"));
        }
        let token = token_arg("token", &req.token, true)?;
        let next_actor = SpiffeId::parse(&req.next_actor)
            .map_err(|e| Status::invalid_argument(format!("next_actor: {e}")))?;
        let (_, holder) = self
            .authorized_workload_entry(&caller, &req.entry_id, SystemTime::now())
            .await?;
        let issued = d
            .delegate(DelegateInput {
                token,
                holder: &holder,
                requested_by: &caller.id.to_string(),
                next_actor: &next_actor,
                rights: rights(req.rights),
                ttl: ttl(req.ttl_seconds),
                audit_kind: crate::audit::trace::KIND_HOP,
            })
            .await
            .map_err(|e| delegation_status(&e))?;
        Ok(token_proto(&issued))
    }

    pub(super) async fn delegation_state(
        &self,
        info: Option<&NodeConnectInfo>,
    ) -> Result<pb::DelegationState, Status> {
        self.authenticate(info).await?;
        let d = enabled(self.issuer.delegation.as_ref())?;
        Ok(state_proto(d))
    }
}

/// The published keys and revocation list.
pub fn state_proto(d: &Delegation) -> pb::DelegationState {
    // The sequence first: should a change happen meanwhile, the documents are newer than it says
    // and the next notification makes the agent fetch them again.
    let sequence = d.sequence();
    pb::DelegationState {
        keys_json: d.published_keys().to_json(),
        revocations_json: d.revocations().to_json(),
        sequence,
    }
}
