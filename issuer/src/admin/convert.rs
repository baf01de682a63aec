//! Conversions between store/CA records and admin API messages, and error mapping.

use signet_ca::jwt::JwtError;
use signet_ca::{SlotInfo, SlotState};
use signet_proto::admin as pb;
use signet_store::{AttestedAgent, RegistrationEntry, Selector, StoreError};
use tonic::Status;

use crate::ca_sync::unix_secs;

pub(super) fn selector(s: &Selector) -> pb::Selector {
    pb::Selector {
        r#type: s.kind.clone(),
        value: s.value.clone(),
    }
}

pub(super) fn entry(e: RegistrationEntry) -> pb::Entry {
    let f = e.fields;
    pb::Entry {
        id: e.id,
        selectors: f.selectors.iter().map(selector).collect(),
        spiffe_id: f.spiffe_id,
        parent_id: f.parent_id,
        x509_svid_ttl: f.x509_svid_ttl,
        jwt_svid_ttl: f.jwt_svid_ttl,
        dns_names: f.dns_names,
        hint: f.hint,
        admin: f.admin,
        downstream: f.downstream,
        federates_with: f.federates_with,
        expires_at: f.expires_at,
        revision: e.revision,
        created_at: e.created_at,
    }
}

pub(super) fn agent(a: AttestedAgent) -> pb::Agent {
    pb::Agent {
        selectors: a.selectors.iter().map(selector).collect(),
        spiffe_id: a.spiffe_id,
        attestation_type: a.attestation_type,
        serial: a.serial,
        expires_at: a.expires_at,
        banned: a.banned,
        can_reattest: a.can_reattest,
        created_at: a.created_at,
        updated_at: a.updated_at,
    }
}

pub(super) fn slot_state(s: SlotState) -> &'static str {
    match s {
        SlotState::Prepared => "prepared",
        SlotState::Active => "active",
        SlotState::Retired => "retired",
    }
}

pub(super) fn slot(s: &SlotInfo) -> pb::CaSlot {
    pb::CaSlot {
        id: s.id.clone(),
        state: slot_state(s.state).to_owned(),
        not_before: unix_secs(s.not_before),
        not_after: unix_secs(s.not_after),
        subject: s.subject.clone(),
        key_type: s.key_type.to_string(),
        fingerprint_sha256: s.fingerprint_sha256.clone(),
    }
}

pub(super) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        StoreError::Conflict(_) => Status::aborted(e.to_string()),
        StoreError::Unavailable(_) | StoreError::InvalidUrl(_) => {
            Status::unavailable(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// A refused JWT-SVID mint: the request's fault (`InvalidArgument`), no key that may sign
/// (`FailedPrecondition`), or the issuer's (`Internal`).
pub(super) fn jwt_status(e: JwtError) -> Status {
    match e {
        JwtError::WrongTrustDomain { .. }
        | JwtError::IdWithoutPath(_)
        | JwtError::NoAudience
        | JwtError::EmptyAudience
        | JwtError::InvalidTokenTtl
        | JwtError::TokenTtlTooLong { .. } => Status::invalid_argument(e.to_string()),
        JwtError::NoActiveKey | JwtError::KeyExpired { .. } => {
            Status::failed_precondition(format!("cannot mint the JWT-SVID: {e}"))
        }
        _ => Status::internal(format!("cannot mint the JWT-SVID: {e}")),
    }
}
