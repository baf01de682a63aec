//! Peer authentication for (mutual) TLS by SPIFFE ID, the logic behind Signet's rustls verifiers.
//!
//! A TLS peer is authenticated as SPIRE and go-spiffe do: its certificate chain must be a valid
//! X509-SVID of the expected trust domain, verified against that trust domain's bundle only (no DNS
//! name check; see [`crate::svid::verify_x509_svid`]), and its SPIFFE ID must then pass an
//! [`Authorizer`].
//!
//! This module holds no rustls types (this crate does not depend on rustls): the rustls
//! `ServerCertVerifier` / `ClientCertVerifier` adapters of the node API call [`authenticate_peer`]
//! from their `verify_*_cert` methods, reading the current bundle at each handshake so that a CA
//! rotation needs no restart.

use std::time::SystemTime;

use crate::bundle::Bundle;
use crate::id::{SpiffeId, TrustDomain};
use crate::svid::{SvidError, verify_x509_svid};

/// Which SPIFFE IDs a peer may present.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authorizer {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID of this trust domain.
    MemberOf(TrustDomain),
    /// Any ID of this trust domain whose path starts with this prefix (at a segment boundary),
    /// e.g. `/signet/agent` admits `/signet/agent/x509pop/abc` but not `/signet/agentx`.
    PathPrefix(TrustDomain, String),
}

impl Authorizer {
    /// Whether `id` is allowed.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Authorizer::Exact(want) => id == want,
            Authorizer::MemberOf(td) => id.is_member_of(td),
            Authorizer::PathPrefix(td, prefix) => {
                id.is_member_of(td)
                    && id
                        .path()
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

impl std::fmt::Display for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorizer::Exact(id) => write!(f, "{id}"),
            Authorizer::MemberOf(td) => write!(f, "any ID of trust domain {td}"),
            Authorizer::PathPrefix(td, p) => write!(f, "spiffe://{td}{p}/..."),
        }
    }
}

/// Why a TLS peer was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The chain is not a valid X509-SVID for the bundle.
    #[error("peer certificate is not a valid X509-SVID: {0}")]
    Svid(#[from] SvidError),
    /// The chain is a valid X509-SVID, but its ID is not allowed.
    #[error("peer SPIFFE ID {id} is not authorized (expected {expected})")]
    Unauthorized {
        /// The ID the peer presented.
        id: SpiffeId,
        /// What was expected.
        expected: String,
    },
}

/// Authenticates a peer: `chain_der` (leaf first, then intermediates) must verify as an X509-SVID
/// against `bundle` at `now`, and its SPIFFE ID must pass `authorizer`. Returns the peer's ID.
pub fn authenticate_peer(
    chain_der: &[Vec<u8>],
    bundle: &Bundle,
    now: SystemTime,
    authorizer: &Authorizer,
) -> Result<SpiffeId, PeerError> {
    let id = verify_x509_svid(chain_der, bundle, now)?;
    if !authorizer.allows(&id) {
        return Err(PeerError::Unauthorized {
            id,
            expected: authorizer.to_string(),
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn authorizers() {
        let td = TrustDomain::new("example.org").unwrap();
        let exact = Authorizer::Exact(id("spiffe://example.org/signet/issuer"));
        assert!(exact.allows(&id("spiffe://example.org/signet/issuer")));
        assert!(!exact.allows(&id("spiffe://example.org/signet/issuer2")));
        assert!(!exact.allows(&id("spiffe://other.org/signet/issuer")));

        let member = Authorizer::MemberOf(td.clone());
        assert!(member.allows(&id("spiffe://example.org/a")));
        assert!(!member.allows(&id("spiffe://other.org/a")));

        let prefix = Authorizer::PathPrefix(td, "/signet/agent".into());
        assert!(prefix.allows(&id("spiffe://example.org/signet/agent/x509pop/ab")));
        assert!(prefix.allows(&id("spiffe://example.org/signet/agent")));
        assert!(!prefix.allows(&id("spiffe://example.org/signet/agentx/a")));
        assert!(!prefix.allows(&id("spiffe://other.org/signet/agent/a")));
        assert_eq!(prefix.to_string(), "spiffe://example.org/signet/agent/...");
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/x509svid")
            .join(name);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn authenticate_peer_verifies_the_chain_then_authorizes_the_id() {
        let td = TrustDomain::new("example.org").unwrap();
        let mut bundle = Bundle::new(td.clone());
        bundle.x509_authorities = vec![fixture("ca-good.der")];
        // 2030-01-01T00:00:00Z, inside the fixtures' validity.
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000);
        let chain = vec![fixture("leaf-good.der")];
        let workload = id("spiffe://example.org/workload");

        let ok = authenticate_peer(&chain, &bundle, at, &Authorizer::Exact(workload.clone()));
        assert_eq!(ok, Ok(workload.clone()));
        assert_eq!(
            authenticate_peer(&chain, &bundle, at, &Authorizer::MemberOf(td)),
            Ok(workload.clone())
        );

        let other = Authorizer::Exact(id("spiffe://example.org/signet/issuer"));
        let err = authenticate_peer(&chain, &bundle, at, &other).unwrap_err();
        assert_eq!(
            err,
            PeerError::Unauthorized {
                id: workload,
                expected: "spiffe://example.org/signet/issuer".into()
            }
        );

        let untrusted = vec![fixture("leaf-untrusted.der")];
        let err = authenticate_peer(&untrusted, &bundle, at, &other).unwrap_err();
        assert!(matches!(err, PeerError::Svid(_)), "{err}");
    }
}
