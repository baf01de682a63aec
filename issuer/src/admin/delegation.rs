//! The admin API's delegation RPCs: revoke a token (and everything derived from it), show the
//! keys, revocations and policy files.

use std::sync::Arc;

use signet_proto::admin as pb;
use tonic::Status;

use crate::delegation::{Delegation, RevokeError};
use crate::node::delegation::enabled;
use crate::state::Issuer;

pub(super) async fn revoke(
    issuer: &Arc<Issuer>,
    actor: &str,
    r: pb::RevokeDelegationRequest,
) -> Result<pb::RevokeDelegationResponse, Status> {
    let d = enabled(issuer.delegation.as_ref())?;
    let token_id = r.token_id.trim();
    if token_id.is_empty() {
        return Err(Status::invalid_argument("token_id is required"));
    }
    if r.reason.len() > 1024 {
        return Err(Status::invalid_argument("reason is longer than 1024 bytes"));
    }
    let out = d
        .revoke(token_id, &r.reason, actor)
        .await
        .map_err(|e| match e {
            RevokeError::NotFound(m) => Status::not_found(m),
            RevokeError::Internal(m) => Status::unavailable(m),
        })?;
    // Agents fetch the new list at once and push it to the verifiers watching it.
    issuer.notifier.notify();
    Ok(pb::RevokeDelegationResponse {
        token_id: out.token_id,
        revocation_id: out.revocation_id,
        revoked_token_ids: out.revoked_token_ids,
        newly_revoked: out.newly_revoked,
        sequence: out.sequence,
    })
}

pub(super) fn status(d: Option<&Arc<Delegation>>) -> pb::DelegationStatus {
    let Some(d) = d else {
        return pb::DelegationStatus::default();
    };
    let sequence = d.sequence();
    let keys = d.published_keys();
    let revocations = d.revocations();
    pb::DelegationStatus {
        enabled: true,
        keys: keys
            .infos()
            .iter()
            .map(|k| pb::DelegationKeyStatus {
                root_key_id: k.root_key_id,
                algorithm: k.algorithm.clone(),
                public_key: k.public_key.clone(),
                state: k.state.clone(),
                not_after: k.not_after,
            })
            .collect(),
        revoked: u32::try_from(revocations.revoked.len()).unwrap_or(u32::MAX),
        policy_files: d
            .policy_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        keys_json: keys.to_json(),
        revocations_json: revocations.to_json(),
        sequence,
    }
}
