//! The state shared by every API of the issuer.

use std::sync::Arc;
use std::time::Duration;

use signet_ca::CertificateAuthority;
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::Store;

use crate::metrics::Metrics;
use crate::node::notify::RevisionNotifier;

/// TTL defaults from the `[defaults]` config section.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Default X509-SVID TTL for entries with `x509_svid_ttl = 0`.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID TTL for entries with `jwt_svid_ttl = 0`.
    pub jwt_svid_ttl: Duration,
    /// TTL of agent SVIDs.
    pub agent_ttl: Duration,
}

/// Everything an API handler needs. Cheap to share behind an `Arc`.
pub struct Issuer {
    /// The issuer's trust domain.
    pub trust_domain: TrustDomain,
    /// The datastore.
    pub store: Arc<dyn Store>,
    /// The certificate authority.
    pub ca: Arc<CertificateAuthority>,
    /// TTL defaults.
    pub defaults: Defaults,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// `spiffe://<td>/signet/issuer` (see [`issuer_id`]).
    pub issuer_id: SpiffeId,
    /// Pushes entry and bundle changes to watching agents: call
    /// [`RevisionNotifier::notify`] after every in-process change of registration entries or of
    /// the own trust bundle (`RevisionNotifier::new()` when building an `Issuer`).
    pub notifier: Arc<RevisionNotifier>,
}

/// `spiffe://<td>/signet/issuer`, the ID the issuer presents on the node API.
pub fn issuer_id(td: &TrustDomain) -> Result<SpiffeId, signet_spiffe::IdError> {
    td.spiffe_id("/signet/issuer")
}
