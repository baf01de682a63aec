//! The state shared by every API of the issuer.

use std::sync::Arc;
use std::time::Duration;

use signet_ca::CertificateAuthority;
use signet_ca::jwt::JwtKeyManager;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::Store;

use crate::idp::IdentityProviders;
use crate::metrics::Metrics;
use crate::node::notify::RevisionNotifier;

/// TTL defaults from the `[defaults]` config section.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Default X509-SVID TTL for entries with `x509_svid_ttl = 0`.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID TTL for entries with `jwt_svid_ttl = 0`.
    pub jwt_svid_ttl: Duration,
    /// TTL of WIT-SVIDs (entries have no WIT-SVID TTL of their own).
    pub wit_svid_ttl: Duration,
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
    /// The JWT-SVID signing keys, which the CA synchronizer ([`crate::ca_sync::CaSync`]) rotates
    /// and persists with the CA.
    pub jwt: Arc<JwtKeyManager>,
    /// The WIT-SVID signing keys ([`signet_ca::jwt::TokenKind::WitSvid`]), apart from the JWT
    /// keys; rotated and persisted by the CA synchronizer like them.
    pub wit: Arc<JwtKeyManager>,
    /// `jwt_issuer`: the `iss` claim of minted JWT-SVIDs (none when unset).
    pub jwt_issuer: Option<String>,
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
    /// The OpenID Connect identity providers of `[[delegation.identity_providers]]`, which verify
    /// the ID tokens that prove a delegation's subject (`IdentityProviders::empty()` when building
    /// an `Issuer` without them).
    pub identity_providers: Arc<IdentityProviders>,
    /// Delegation (tokens, policy, revocations) when `[delegation] policies_dir` is set.
    pub delegation: Option<Arc<crate::delegation::Delegation>>,
}

impl Issuer {
    /// The delegation state's sequence (keys and revocations), 0 when delegation is off.
    pub fn delegation_sequence(&self) -> u64 {
        self.delegation.as_ref().map_or(0, |d| d.sequence())
    }

    /// The own bundle's `spiffe_sequence`: the CA's bundle sequence plus the JWT keys' and the WIT
    /// keys' sequences (each only grows, so the sum grows whenever any set of authorities
    /// changes).
    pub fn own_bundle_sequence(&self) -> u64 {
        self.ca
            .bundle_sequence()
            .saturating_add(self.jwt.sequence())
            .saturating_add(self.wit.sequence())
    }

    /// The own trust bundle as it is now in memory: the CA's trust anchors, the JWT and WIT
    /// authorities and
    /// [`Self::own_bundle_sequence`], without a refresh hint. The one place that assembles it: the
    /// node API sends it to agents as is, [`crate::ca_sync::CaSync::own_bundle`] adds the refresh
    /// hint for the store, the bundle endpoint and `bundle show`.
    pub fn own_bundle(&self) -> Bundle {
        // The sequence first: should a rotation happen meanwhile, the authorities are newer than
        // the sequence says, and the next change notification makes agents fetch them again.
        let sequence = self.own_bundle_sequence();
        Bundle {
            trust_domain: self.trust_domain.clone(),
            x509_authorities: self.ca.trust_anchors(),
            jwt_authorities: self.jwt.authorities(),
            wit_authorities: self.wit.authorities(),
            sequence,
            refresh_hint: None,
        }
    }
}

/// `spiffe://<td>/signet/issuer`, the ID the issuer presents on the node API.
pub fn issuer_id(td: &TrustDomain) -> Result<SpiffeId, signet_spiffe::IdError> {
    td.spiffe_id("/signet/issuer")
}
