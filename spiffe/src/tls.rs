//! Peer authentication for (mutual) TLS by SPIFFE ID, the logic behind Signet's rustls verifiers.
//!
//! A TLS peer is authenticated as SPIRE and go-spiffe do: its certificate chain must be a valid
//! X509-SVID of the expected trust domain, verified against that trust domain's bundle only (no DNS
//! name check; see [`crate::svid::verify_x509_svid`]), and its SPIFFE ID must then pass an
//! [`Authorizer`].
//!
//! [`SpiffeCertVerifier`] is the rustls adapter: a `ServerCertVerifier` (a client authenticating
//! its server) and a `ClientCertVerifier` (a server authenticating its clients) that ask a
//! [`PeerAuthenticator`] at each handshake, so that an authenticator reading the current bundle
//! follows a CA rotation without a restart. [`BundleAuthenticator`] is the plain one: a bundle and
//! an [`Authorizer`], through [`authenticate_peer`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

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

/// Decides, at each TLS handshake, whether a peer's certificate chain is acceptable.
pub trait PeerAuthenticator: Send + Sync + fmt::Debug {
    /// Why a peer was refused; its `Display` becomes the reason of the TLS error.
    type Error: fmt::Display;

    /// Authenticates `chain_der` (leaf first, then intermediates) at `now` and returns the peer's
    /// SPIFFE ID.
    fn authenticate(&self, chain_der: &[Vec<u8>], now: SystemTime)
    -> Result<SpiffeId, Self::Error>;
}

impl<A: PeerAuthenticator + ?Sized> PeerAuthenticator for Arc<A> {
    type Error = A::Error;

    fn authenticate(
        &self,
        chain_der: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<SpiffeId, Self::Error> {
        (**self).authenticate(chain_der, now)
    }
}

/// The plain authenticator: the peer's chain must verify against `bundle`, and its ID pass
/// `authorizer` ([`authenticate_peer`]).
#[derive(Debug, Clone)]
pub struct BundleAuthenticator {
    /// The bundle of the peer's trust domain.
    pub bundle: Bundle,
    /// Which IDs are allowed.
    pub authorizer: Authorizer,
}

impl PeerAuthenticator for BundleAuthenticator {
    type Error = PeerError;

    fn authenticate(&self, chain_der: &[Vec<u8>], now: SystemTime) -> Result<SpiffeId, PeerError> {
        authenticate_peer(chain_der, &self.bundle, now, &self.authorizer)
    }
}

/// A rustls certificate verifier that authenticates the peer by SPIFFE ID with a
/// [`PeerAuthenticator`], for either side of a connection:
///
/// - as a `ServerCertVerifier` (a client checking its server) it ignores the server name: the
///   SPIFFE ID is the identity, not a DNS name;
/// - as a `ClientCertVerifier` (a server checking its clients) it offers client authentication
///   without root hints; a client certificate is optional unless
///   [`require_client_cert`](Self::require_client_cert) is set, and when presented it must
///   pass.
///
/// Handshake signatures are checked with the given crypto provider's algorithms.
pub struct SpiffeCertVerifier<A> {
    authenticator: A,
    provider: Arc<CryptoProvider>,
    client_cert_required: bool,
}

impl<A> SpiffeCertVerifier<A> {
    /// A verifier asking `authenticator`; client certificates are optional.
    pub fn new(authenticator: A, provider: Arc<CryptoProvider>) -> Self {
        Self {
            authenticator,
            provider,
            client_cert_required: false,
        }
    }

    /// As a client verifier, refuses clients without a certificate.
    pub fn require_client_cert(mut self) -> Self {
        self.client_cert_required = true;
        self
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &A {
        &self.authenticator
    }
}

impl<A: PeerAuthenticator> SpiffeCertVerifier<A> {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        self.authenticator
            .authenticate(&chain, now)
            .map_err(certificate_error)
    }
}

/// The handshake-signature methods, the same in both rustls verifier traits: checked with the
/// crypto provider's algorithms.
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.provider.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.provider.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl<A: fmt::Debug> fmt::Debug for SpiffeCertVerifier<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeCertVerifier")
            .field("authenticator", &self.authenticator)
            .field("client_cert_required", &self.client_cert_required)
            .finish_non_exhaustive()
    }
}

impl<A: PeerAuthenticator> ServerCertVerifier for SpiffeCertVerifier<A> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signature_methods!();
}

impl<A: PeerAuthenticator> ClientCertVerifier for SpiffeCertVerifier<A> {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client_cert_required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signature_methods!();
}

/// A rustls "invalid certificate" error carrying `reason`, readable in connection errors.
pub fn certificate_error(reason: impl fmt::Display) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(
        reason.to_string(),
    )))))
}

/// A refusal whose `Debug` is its message: rustls prints the `Debug` form of
/// [`CertificateError::Other`], and the reason must stay readable.
#[derive(thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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

    #[test]
    fn rustls_verifier_asks_the_authenticator_on_both_sides() {
        let td = TrustDomain::new("example.org").unwrap();
        let mut bundle = Bundle::new(td);
        bundle.x509_authorities = vec![fixture("ca-good.der")];
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = SpiffeCertVerifier::new(
            BundleAuthenticator {
                bundle,
                authorizer: Authorizer::Exact(id("spiffe://example.org/workload")),
            },
            provider,
        );
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_893_456_000));
        let name = ServerName::try_from("ignored.example").unwrap();
        let good = CertificateDer::from(fixture("leaf-good.der"));
        verifier
            .verify_server_cert(&good, &[], &name, &[], at)
            .unwrap();
        verifier.verify_client_cert(&good, &[], at).unwrap();
        assert!(!verifier.client_auth_mandatory());
        assert!(verifier.require_client_cert().client_auth_mandatory());

        let verifier = SpiffeCertVerifier::new(
            BundleAuthenticator {
                bundle: Bundle::new(TrustDomain::new("example.org").unwrap()),
                authorizer: Authorizer::Exact(id("spiffe://example.org/workload")),
            },
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
        let err = verifier.verify_client_cert(&good, &[], at).unwrap_err();
        // The reason is readable in the rustls error (its Debug form is what clients print).
        let shown = format!("{err:?}");
        assert!(
            shown.contains("peer certificate is not a valid X509-SVID"),
            "{shown}"
        );
        assert!(!shown.contains("Refusal"), "{shown}");
    }
}
