//! The federation RPCs: requests to [`Relationship`]s, views to messages, errors to statuses.

use signet_proto::admin as pb;
use signet_spiffe::TrustDomain;
use signet_spiffe::bundle::Bundle;
use tonic::Status;

use super::convert;
use crate::ca_sync::unix_secs;
use crate::federation::{EndpointUrl, FederationError, Profile, Relationship, RelationshipView};
use crate::state::Issuer;

/// Maps a federation error to a status.
pub(super) fn status(e: FederationError) -> Status {
    match e {
        FederationError::NotFound(_) => Status::not_found(e.to_string()),
        FederationError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        FederationError::DefinedInConfig(_) => Status::failed_precondition(e.to_string()),
        FederationError::Store(s) => convert::store_status(s),
        FederationError::Poll(p) => Status::unavailable(p.to_string()),
        other => Status::invalid_argument(other.to_string()),
    }
}

/// Parses a trust-domain argument (`partner.org` or `spiffe://partner.org`).
pub(super) fn trust_domain(value: &str) -> Result<TrustDomain, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument("trust_domain is required"));
    }
    TrustDomain::new(value.strip_prefix("spiffe://").unwrap_or(value))
        .map_err(|e| Status::invalid_argument(format!("trust domain {value:?}: {e}")))
}

fn bundle_arg(td: &TrustDomain, b: Option<pb::BootstrapBundle>) -> Result<Option<Bundle>, Status> {
    let Some(b) = b else { return Ok(None) };
    if b.content.is_empty() {
        return Ok(None);
    }
    let format = pb::BundleFormat::try_from(b.format).unwrap_or(pb::BundleFormat::Unspecified);
    let parsed = match format {
        pb::BundleFormat::Spiffe => Bundle::from_json(td, &b.content),
        pb::BundleFormat::Pem => Bundle::from_pem(td, &b.content),
        pb::BundleFormat::Unspecified => {
            return Err(Status::invalid_argument(
                "bundle format must be spiffe or pem",
            ));
        }
    };
    parsed
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("bundle of {td}: {e}")))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Builds the relationship and bootstrap bundle of a create request.
pub(super) fn create_args(
    r: pb::CreateFederationRelationshipRequest,
) -> Result<(Relationship, Option<Bundle>), Status> {
    let td = trust_domain(&r.trust_domain)?;
    if r.bundle_endpoint_url.is_empty() {
        return Err(Status::invalid_argument("bundle_endpoint_url is required"));
    }
    if r.profile.is_empty() {
        return Err(Status::invalid_argument(
            "profile is required (https_web or https_spiffe)",
        ));
    }
    let url = EndpointUrl::parse(&r.bundle_endpoint_url).map_err(status)?;
    let endpoint_id = non_empty(r.endpoint_spiffe_id);
    let profile = Profile::from_parts(
        &r.profile,
        endpoint_id.as_deref(),
        non_empty(r.ca_bundle_pem),
    )
    .map_err(status)?;
    let bundle = bundle_arg(&td, r.bundle)?;
    Ok((
        Relationship {
            trust_domain: td,
            url,
            profile,
        },
        bundle,
    ))
}

/// Applies an update request to the stored relationship.
pub(super) fn update_args(
    old: Relationship,
    r: pb::UpdateFederationRelationshipRequest,
) -> Result<(Relationship, Option<Bundle>), Status> {
    let url = match r.bundle_endpoint_url {
        Some(u) => EndpointUrl::parse(&u).map_err(status)?,
        None => old.url.clone(),
    };
    let profile_name = r.profile.unwrap_or_else(|| old.profile.name().to_owned());
    let same = profile_name == old.profile.name();
    let endpoint_id = match (r.endpoint_spiffe_id, &old.profile) {
        (Some(v), _) => non_empty(v),
        (None, Profile::HttpsSpiffe { endpoint_spiffe_id }) if same => {
            Some(endpoint_spiffe_id.to_string())
        }
        _ => None,
    };
    let ca_bundle_pem = match (r.ca_bundle_pem, &old.profile) {
        (Some(v), _) => non_empty(v),
        (None, Profile::HttpsWeb { ca_bundle_pem }) if same => ca_bundle_pem.clone(),
        _ => None,
    };
    let profile = Profile::from_parts(&profile_name, endpoint_id.as_deref(), ca_bundle_pem)
        .map_err(status)?;
    let bundle = bundle_arg(&old.trust_domain, r.bundle)?;
    Ok((
        Relationship {
            trust_domain: old.trust_domain,
            url,
            profile,
        },
        bundle,
    ))
}

/// The message of a relationship, with the stored bundle's sequence and time.
pub(super) async fn message(issuer: &Issuer, v: RelationshipView) -> pb::FederationRelationship {
    let td = v.relationship.trust_domain.clone();
    let stored = match issuer.store.get_bundle(td.name()).await {
        Ok(s) => s.filter(|b| !b.own),
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "cannot read a federated bundle");
            None
        }
    };
    let sequence = stored
        .as_ref()
        .and_then(|s| Bundle::from_json(&td, s.document.as_bytes()).ok())
        .map(|b| b.sequence);
    let (endpoint_spiffe_id, has_ca_bundle) = match &v.relationship.profile {
        Profile::HttpsSpiffe { endpoint_spiffe_id } => (endpoint_spiffe_id.to_string(), false),
        Profile::HttpsWeb { ca_bundle_pem } => (String::new(), ca_bundle_pem.is_some()),
    };
    let st = v.status;
    pb::FederationRelationship {
        trust_domain: td.name().to_owned(),
        bundle_endpoint_url: v.relationship.url.as_str().to_owned(),
        profile: v.relationship.profile.name().to_owned(),
        endpoint_spiffe_id,
        has_ca_bundle,
        source: v.source.name().to_owned(),
        created_at: v.created_at,
        updated_at: v.updated_at,
        last_attempt_at: st.last_attempt_at.map(unix_secs),
        last_success_at: st.last_success_at.map(unix_secs),
        last_error: st.last_error.unwrap_or_default(),
        last_error_at: st.last_error_at.map(unix_secs),
        next_poll_at: st.next_poll_at.map(unix_secs),
        consecutive_failures: st.consecutive_failures,
        bundle_sequence: sequence,
        bundle_updated_at: stored.map(|s| s.updated_at),
    }
}

/// Audit details of a relationship (never the CA bundle itself: only whether there is one).
pub(super) fn audit_details(rel: &Relationship, bundle: Option<&Bundle>) -> serde_json::Value {
    let (endpoint_id, ca_bundle) = match &rel.profile {
        Profile::HttpsSpiffe { endpoint_spiffe_id } => {
            (Some(endpoint_spiffe_id.to_string()), false)
        }
        Profile::HttpsWeb { ca_bundle_pem } => (None, ca_bundle_pem.is_some()),
    };
    serde_json::json!({
        "bundle_endpoint_url": rel.url.as_str(),
        "profile": rel.profile.name(),
        "endpoint_spiffe_id": endpoint_id,
        "ca_bundle": ca_bundle,
        "bundle_sequence": bundle.map(|b| b.sequence),
    })
}
