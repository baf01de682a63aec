//! The node attestation traits shared by every attestor.
//!
//! One attestation is one exchange: the agent sends its evidence (`payload`, produced by an
//! [`AgentAttestor`]); the issuer's [`NodeAttestor`] may send challenges through a
//! [`ChallengeChannel`], each answered by [`AgentAttestor::answer_challenge`]; the issuer ends with a
//! [`NodeAttestation`] (the agent's SPIFFE ID and node selectors) or an [`AttestError`].

use std::time::SystemTime;

use async_trait::async_trait;
use signet_spiffe::{SpiffeId, TrustDomain};
use zeroize::Zeroizing;

/// A node selector, `type:value` (e.g. `x509pop:subject:cn:node-1` has type `x509pop`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// The selector type: the attestor's name.
    pub kind: String,
    /// Everything after the first `:`.
    pub value: String,
}

impl Selector {
    /// Builds a selector.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Why an attestation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The evidence is malformed (bad encoding, missing field).
    #[error("invalid attestation payload: {0}")]
    InvalidPayload(String),
    /// The join token is not of the form Signet issues.
    #[error("malformed join token")]
    MalformedJoinToken,
    /// No such join token.
    #[error("unknown join token")]
    UnknownJoinToken,
    /// The join token was already redeemed.
    #[error("join token already used")]
    JoinTokenSpent,
    /// The join token's TTL has passed (it is spent all the same).
    #[error("join token expired")]
    JoinTokenExpired,
    /// The x509pop certificate does not chain to a configured CA.
    #[error("x509pop certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    /// The key type of the certificate is not supported.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// The challenge answer does not verify.
    #[error("x509pop challenge signature does not verify with the certificate's public key")]
    BadChallengeResponse,
    /// The attestor expected no challenge but got one (agent side).
    #[error("unexpected challenge from the issuer for attestor {0}")]
    UnexpectedChallenge(&'static str),
    /// The challenge round trip failed (the peer went away or answered out of turn).
    #[error("challenge round trip failed: {0}")]
    Challenge(String),
    /// The agent's own material (certificate, key file) is unusable.
    #[error("attestor configuration: {0}")]
    Config(String),
    /// A dependency of the attestor (datastore, randomness) failed.
    #[error("attestor unavailable: {0}")]
    Unavailable(String),
}

impl AttestError {
    /// Whether the error means "refused" (the evidence is not good enough) rather than
    /// "could not decide" (an internal or transient failure).
    pub fn is_denial(&self) -> bool {
        !matches!(self, AttestError::Unavailable(_) | AttestError::Config(_))
    }
}

/// What a successful attestation establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAttestation {
    /// The agent's SPIFFE ID (`spiffe://<td>/signet/agent/<attestor>/<unique part>`).
    pub agent_id: SpiffeId,
    /// Node selectors; all of them have the attestor's name as their type.
    pub selectors: Vec<Selector>,
    /// Whether the agent may attest again by itself with the same evidence (x509pop yes, join token
    /// no).
    pub can_reattest: bool,
    /// SPIFFE IDs that become node aliases of this agent (join tokens generated with an alias).
    pub aliases: Vec<SpiffeId>,
}

/// The evidence of one attestation attempt, as the issuer receives it.
#[derive(Debug, Clone, Copy)]
pub struct AttestationRequest<'a> {
    /// The issuer's trust domain (agent IDs are built in it).
    pub trust_domain: &'a TrustDomain,
    /// The attestor-specific payload sent by the agent.
    pub payload: &'a [u8],
    /// The time of the attempt.
    pub now: SystemTime,
}

/// The issuer's side of the challenge round trips of one attestation.
#[async_trait]
pub trait ChallengeChannel: Send {
    /// Sends `challenge` to the agent and returns its answer.
    async fn round_trip(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError>;
}

/// Server side of a node attestor: checks the evidence, and returns who the agent is.
#[async_trait]
pub trait NodeAttestor: Send + Sync {
    /// The attestor's name, used as `attestor_type` on the wire and as the selector type.
    fn attestor_type(&self) -> &'static str;
    /// Checks one attempt. Challenges, if any, go through `channel`. Must not consume anything
    /// (see [`NodeAttestor::redeem`]).
    async fn attest(
        &self,
        request: AttestationRequest<'_>,
        channel: &mut dyn ChallengeChannel,
    ) -> Result<NodeAttestation, AttestError>;
    /// Makes a successful [`NodeAttestor::attest`] final. The issuer calls it after every other
    /// check that can fail and after signing the agent SVID, just before it records the agent, so
    /// that a single-use credential (a join token) is spent only when the attestation can complete;
    /// an error here discards the signed SVID. It may complete `attestation` with what only the
    /// redeemed credential tells (node aliases). The default has nothing to redeem.
    async fn redeem(
        &self,
        request: AttestationRequest<'_>,
        attestation: &mut NodeAttestation,
    ) -> Result<(), AttestError> {
        let _ = (request, attestation);
        Ok(())
    }
}

/// Agent side of a node attestor: produces the evidence and answers the issuer's challenges.
pub trait AgentAttestor: Send + Sync {
    /// The attestor's name (must match the issuer's [`NodeAttestor::attestor_type`]).
    fn attestor_type(&self) -> &'static str;
    /// The evidence sent with the attestation parameters. Zeroized on drop (it may be a secret).
    fn payload(&self) -> Result<Zeroizing<Vec<u8>>, AttestError>;
    /// Answers one challenge from the issuer.
    fn answer_challenge(&self, challenge: &[u8]) -> Result<Vec<u8>, AttestError>;
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
