//! The state shared by every API of the issuer.

use std::sync::Arc;
use std::time::Duration;

use signet_ca::CertificateAuthority;
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::Store;

use crate::metrics::Metrics;

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
}

impl Issuer {
    /// `spiffe://<td>/signet/issuer`, the ID the issuer presents on the node API.
    pub fn issuer_id(&self) -> SpiffeId {
        issuer_id(&self.trust_domain)
    }
}

/// `spiffe://<td>/signet/issuer`.
pub fn issuer_id(td: &TrustDomain) -> SpiffeId {
    // The path is a constant that satisfies every rule, so this cannot fail for a valid trust domain.
    td.spiffe_id("/signet/issuer")
        .unwrap_or_else(|_| unreachable_id(td))
}

fn unreachable_id(td: &TrustDomain) -> SpiffeId {
    // Fallback that is never reached; kept to avoid a panic path.
    SpiffeId::parse(&td.id_string()).unwrap_or_else(|_| unreachable_id(td))
}
