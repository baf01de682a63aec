//! Verifying Signet delegation tokens in a resource server.
//!
//! A delegation token (a Biscuit, see `signet_delegation`) says who a request is ultimately for
//! (the **subject**), which chain of attested workloads carried it (the **actors**, first to
//! last), and what it may still do (the **rights**). A resource server checks it with
//! [`Verifier::verify`]: root key by id, every signature, the chain, revocation, expiry, that the
//! presenter is the token's last actor, the depth, the rights, the checks of every block, and then
//! its own Datalog policy. The [`Decision`] carries the whole [`Chain`] for the server's logs.
//!
//! The verifier needs the issuer's published delegation keys and revocation list. With the
//! default `agent` feature, [`DelegationKeySource`] follows them from the node agent's Unix socket
//! (`FetchDelegationKeys` of the `signet.delegation.v1.Delegation` service) and keeps a shared
//! [`Verifier`] current, reconnecting when the agent restarts. Without it, build a verifier from
//! the JSON documents ([`DelegationKeys::from_json`], [`RevocationList::from_json`]) with
//! [`VerifierOptions::verifier`].
//!
//! The presenter is the SPIFFE ID of the peer that sent the request: for mutual TLS,
//! [`presenter_from_peer_certificate`] reads it from the peer's X509-SVID leaf after the TLS
//! handshake has verified the chain.
//!
//! ```no_run
//! # #[cfg(feature = "agent")]
//! # async fn handle(peer_leaf_der: &[u8], token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::{Duration, SystemTime};
//! use signet_sdk::delegation::{DelegationKeySource, Request, presenter_from_peer_certificate};
//!
//! // Once, at start-up: follow the agent at $SPIFFE_ENDPOINT_SOCKET.
//! let source = DelegationKeySource::builder()
//!     .policy(r#"allow if subject_type("user"), chain_actor(0, "spiffe://example.org/planner");"#)?
//!     .max_depth(2)
//!     .start()?;
//! source.wait_ready(Duration::from_secs(10)).await?;
//!
//! // Per request: who is on the other end of the mTLS connection, and what do they carry?
//! let presenter = presenter_from_peer_certificate(peer_leaf_der)?.to_string();
//! let decision = source.verifier().verify(
//!     token,
//!     &Request { presenter: &presenter, operation: "flights:read", now: SystemTime::now() },
//! )?;
//! println!("for {} via {:?}", decision.chain.subject.id, decision.chain.actors());
//! # Ok(())
//! # }
//! ```
//!
//! Tokens are bearer credentials: nothing here logs them, and [`VerifyError`] never echoes one.

pub use signet_delegation::keys::{KeyInfo, Revoked};
pub use signet_delegation::{
    AuthorizerLimits, Chain, DEFAULT_LIMITS, Decision, DelegationKeys, Hop, Request,
    RevocationList, Subject, SubjectKind, Verifier, VerifyError,
};
use signet_spiffe::SpiffeId;
pub use signet_spiffe::SvidError;

#[cfg(feature = "agent")]
mod source;
#[cfg(feature = "agent")]
pub use source::{
    AgentEndpoint, DEFAULT_AGENT_SOCKET, DelegationKeySource, DelegationKeySourceBuilder,
    ENDPOINT_ENV, SourceError,
};

/// How many verified tokens a verifier built by [`VerifierOptions`] keeps by default (see
/// [`Verifier::with_signature_cache`]).
pub const DEFAULT_SIGNATURE_CACHE: usize = 1024;

/// The resource server's own settings, applied to every [`Verifier`] it builds: its Datalog
/// policy, the Datalog run limits, a maximum chain depth and the size of the signature cache.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    policy: Option<String>,
    limits: Option<AuthorizerLimits>,
    max_depth: Option<u32>,
    signature_cache: usize,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            policy: None,
            limits: None,
            max_depth: None,
            signature_cache: DEFAULT_SIGNATURE_CACHE,
        }
    }
}

impl VerifierOptions {
    /// No policy of its own (any operation the token grants is allowed), [`DEFAULT_LIMITS`], the
    /// depth the token allows, a cache of [`DEFAULT_SIGNATURE_CACHE`] verified tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps up to `capacity` verified tokens (0: none), so that a token presented again skips
    /// its signature checks; revocation, expiry, presenter, depth, rights, checks and policy are
    /// checked on every request all the same (see [`Verifier::with_signature_cache`]).
    pub fn signature_cache(mut self, capacity: usize) -> Self {
        self.signature_cache = capacity;
        self
    }

    /// The resource server's policy (see [`Verifier::with_policy`] for what it sees). Checked
    /// now: a syntax error is returned with its position.
    pub fn policy(mut self, policy: &str) -> Result<Self, VerifyError> {
        Verifier::new(DelegationKeys::default(), &RevocationList::default())?
            .with_policy(policy)?;
        self.policy = Some(policy.to_owned());
        Ok(self)
    }

    /// Datalog run limits (default [`DEFAULT_LIMITS`]).
    pub fn limits(mut self, limits: AuthorizerLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Refuses chains of more than `max` hops, whatever the token allows.
    pub fn max_depth(mut self, max: u32) -> Self {
        self.max_depth = Some(max);
        self
    }

    /// A verifier for these keys and revocations, with these options.
    pub fn verifier(
        &self,
        keys: DelegationKeys,
        revocations: &RevocationList,
    ) -> Result<Verifier, VerifyError> {
        let mut v = Verifier::new(keys, revocations)?.with_signature_cache(self.signature_cache);
        if let Some(limits) = &self.limits {
            v = v.with_limits(limits.clone());
        }
        if let Some(max) = self.max_depth {
            v = v.with_max_depth(max);
        }
        if let Some(policy) = &self.policy {
            v = v.with_policy(policy)?;
        }
        Ok(v)
    }
}

/// The SPIFFE ID of a mutual TLS peer, for [`Request::presenter`]: the one URI SAN of its
/// X509-SVID leaf (`der`, the first certificate the peer sent), which must follow every leaf rule
/// of the X509-SVID standard.
///
/// Call it only after the TLS handshake has verified the peer's chain against the trust bundle
/// (e.g. with `signet_spiffe::tls`): this reads the identity, it does not authenticate it.
pub fn presenter_from_peer_certificate(der: &[u8]) -> Result<SpiffeId, SvidError> {
    signet_spiffe::svid::validate_x509_svid_leaf(der)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn leaf(uri: &str, ca: bool) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "workload");
        p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        } else {
            p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_presenter_is_the_uri_san_of_the_peer_leaf() {
        let id =
            presenter_from_peer_certificate(&leaf("spiffe://example.org/search", false)).unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/search");
        // A CA certificate is no workload, an https URI no SPIFFE ID, garbage no certificate.
        assert!(presenter_from_peer_certificate(&leaf("spiffe://example.org/ca", true)).is_err());
        assert!(matches!(
            presenter_from_peer_certificate(&leaf("https://example.org/x", false)),
            Err(SvidError::InvalidSpiffeId { .. })
        ));
        assert!(matches!(
            presenter_from_peer_certificate(b"not a certificate"),
            Err(SvidError::Malformed(_))
        ));
    }

    #[test]
    fn options_are_applied_and_a_bad_policy_is_refused_up_front() {
        assert!(VerifierOptions::new().policy("allow if (").is_err());
        let opts = VerifierOptions::new()
            .policy("allow if true;")
            .unwrap()
            .max_depth(1)
            .limits(DEFAULT_LIMITS);
        let v = opts
            .verifier(DelegationKeys::default(), &RevocationList::default())
            .unwrap();
        // No keys: every token is refused.
        let err = v
            .verify(
                "not a token",
                &Request {
                    presenter: "spiffe://example.org/x",
                    operation: "read",
                    now: std::time::SystemTime::now(),
                },
            )
            .unwrap_err();
        assert!(matches!(err, VerifyError::Malformed(_)), "{err}");
    }
}
