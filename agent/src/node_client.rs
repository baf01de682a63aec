//! The agent side of the node API: a gRPC client over TLS that authenticates the issuer by SPIFFE ID.
//!
//! - The issuer must present an X509-SVID for `spiffe://<td>/signet/issuer` that chains to the
//!   agent's trust bundle (read at each handshake). With `insecure_bootstrap` (first start, no
//!   bundle yet) the chain is not checked, but the SPIFFE ID still is; the bundle received at
//!   attestation is then pinned and returned so that the caller can persist it.
//! - [`NodeClient::attest`] (and the `attest_join_token` / `attest_x509pop` shortcuts) runs node
//!   attestation with a fresh P-256 key, and keeps the agent SVID it receives as the client
//!   identity. Every other call authenticates with that SVID (mutual TLS); after
//!   [`NodeClient::renew`] the connection is re-established with the new SVID, since the issuer
//!   refuses the old one.
//! - [`EntryCache`] applies [`NodeClient::sync_entries`] results (full listings and deltas);
//!   [`NodeClient::watch`] says when to sync (server push of the store revision and bundle
//!   revisions, see [`NodeClient::needs_sync`]).
//! - Bundles arrive as SPIFFE bundle documents: the own bundle (X.509 and JWT authorities,
//!   [`NodeClient::bundle`]) with every sync, renewal and attestation, and the bundles of the
//!   trust domains the agent's entries federate with ([`NodeClient::federated_bundles`]) with
//!   every complete sync.
//! - [`NodeClient::new_jwt_svid`] has the issuer mint a JWT-SVID for an authorized entry, and
//!   [`NodeClient::new_wit_svid`] a WIT-SVID binding a workload's public key (the private key
//!   stays with the agent).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use signet_attestors::join_token::JoinTokenAgent;
use signet_attestors::x509pop::X509PopAgent;
use signet_attestors::{AgentAttestor, AttestError, Selector};
use signet_proto::node as pb;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::svid::{validate_x509_svid_leaf, verify_x509_svid};
use signet_spiffe::tls::{Authorizer, PeerAuthenticator, SpiffeCertVerifier, authenticate_peer};
use signet_spiffe::{SpiffeId, TrustDomain};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use zeroize::Zeroizing;

/// The generated gRPC client of the node API.
pub type GrpcNodeClient = pb::node_client::NodeClient<Channel>;

/// Path of the issuer's SPIFFE ID.
pub const ISSUER_PATH: &str = "/signet/issuer";

/// Time allowed for TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the node client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeClientError {
    /// The client configuration is unusable.
    #[error("invalid node client configuration: {0}")]
    Config(String),
    /// The issuer could not be reached, or the TLS handshake failed (e.g. the issuer's certificate
    /// was refused).
    #[error("cannot connect to the issuer at {address}: {reason}")]
    Connect {
        /// The issuer address.
        address: String,
        /// The error and its causes.
        reason: String,
    },
    /// The issuer answered with an error status.
    #[error("issuer returned {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The issuer's answer is not what the protocol requires.
    #[error("invalid response from the issuer: {0}")]
    Protocol(String),
    /// The local attestor failed (e.g. cannot sign the challenge).
    #[error("attestor: {0}")]
    Attestor(#[from] AttestError),
    /// The call needs an agent SVID, and the client has none (attest first).
    #[error("the node client has no agent SVID: attest first")]
    NotAttested,
    /// Key or CSR generation failed.
    #[error("key generation failed: {0}")]
    Crypto(String),
}

impl NodeClientError {
    /// The gRPC status code, for errors returned by the issuer.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            NodeClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn rpc_error(s: tonic::Status) -> NodeClientError {
    NodeClientError::Rpc {
        code: s.code(),
        message: s.message().to_owned(),
    }
}

/// `e` and its causes, `: `-separated, skipping a cause whose message is already included.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// An agent's X509-SVID and private key.
#[derive(Clone)]
pub struct AgentIdentity {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub private_key_pkcs8: Zeroizing<Vec<u8>>,
    /// notAfter of the leaf.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("cert_chain_len", &self.cert_chain.len())
            .field("private_key_pkcs8", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The outcome of a node attestation.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// The agent SVID (now the client's identity).
    pub identity: AgentIdentity,
    /// The trust bundle received with it (now pinned by the client; persist it).
    pub bundle: Bundle,
    /// The node selectors the issuer derived.
    pub selectors: Vec<Selector>,
}

/// One page-complete result of [`NodeClient::sync_entries`].
#[derive(Debug, Clone, Default)]
pub struct EntrySync {
    /// Whether this is a full listing (replace) rather than a delta (apply).
    pub full: bool,
    /// Authorized entries created or updated since the requested revision.
    pub entries: Vec<pb::Entry>,
    /// Entry ids to drop.
    pub removed_entry_ids: Vec<String>,
    /// The revision to sync from next time.
    pub revision: i64,
}

/// A JWT-SVID minted by [`NodeClient::new_jwt_svid`].
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// The token's `sub`: the entry's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The token, JWS compact serialization: a bearer credential, never in Debug output or logs.
    pub token: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
    /// Its `iat`.
    pub issued_at: SystemTime,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_token_svid(
            f,
            "JwtSvid",
            &self.spiffe_id,
            self.expires_at,
            self.issued_at,
        )
    }
}

/// The `Debug` of a minted token SVID: everything but the token.
fn debug_token_svid(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    spiffe_id: &SpiffeId,
    expires_at: SystemTime,
    issued_at: SystemTime,
) -> std::fmt::Result {
    f.debug_struct(name)
        .field("spiffe_id", spiffe_id)
        .field("token", &"<redacted>")
        .field("expires_at", &expires_at)
        .field("issued_at", &issued_at)
        .finish()
}

/// A WIT-SVID minted by [`NodeClient::new_wit_svid`].
#[derive(Clone, PartialEq, Eq)]
pub struct WitSvid {
    /// The token's `sub`: the entry's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The token, JWS compact serialization (`typ: wit+jwt`). Worthless without its private key,
    /// but a credential all the same: never in Debug output or logs.
    pub token: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
    /// Its `iat`.
    pub issued_at: SystemTime,
}

impl std::fmt::Debug for WitSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_token_svid(
            f,
            "WitSvid",
            &self.spiffe_id,
            self.expires_at,
            self.issued_at,
        )
    }
}

/// The answers of the token mints of the node API (`NewJWTSVID`, `NewWITSVID`), whose SVID
/// messages have the same fields.
trait MintResponse {
    /// The SVID's `(spiffe_id, token, expires_at, issued_at)`, if the answer has one.
    fn into_parts(self) -> Option<(String, String, i64, i64)>;
}

impl MintResponse for pb::NewJwtsvidResponse {
    fn into_parts(self) -> Option<(String, String, i64, i64)> {
        self.svid
            .map(|s| (s.spiffe_id, s.token, s.expires_at, s.issued_at))
    }
}

impl MintResponse for pb::NewWitsvidResponse {
    fn into_parts(self) -> Option<(String, String, i64, i64)> {
        self.svid
            .map(|s| (s.spiffe_id, s.token, s.expires_at, s.issued_at))
    }
}

/// One event of [`NodeClient::watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchEvent {
    /// The issuer's store-wide entry revision.
    pub revision: i64,
    /// The `sequence` of the issuer's own bundle.
    pub bundle_sequence: u64,
    /// The issuer's federated bundles revision (opaque; compare for equality).
    pub bundles_revision: u64,
    /// The `sequence` of the issuer's delegation state (0 when delegation is off): call
    /// [`NodeClient::get_delegation_state`] when it differs from the one held.
    pub delegation_sequence: u64,
}

/// What the agent asks the issuer to mint ([`NodeClient::mint_delegation`]). `Debug` never
/// prints the ID token.
#[derive(Clone, Default)]
pub struct DelegationMint {
    /// The first actor's registration entry (authorized for this agent).
    pub entry_id: String,
    /// An OpenID Connect ID token proving the subject; empty: the workload itself is the subject.
    /// A bearer credential, wiped when dropped.
    pub id_token: Zeroizing<String>,
    /// The rights asked for; empty: every right the policy grants.
    pub rights: Vec<String>,
    /// Seconds; 0: the longest the policy allows.
    pub ttl_seconds: u32,
    /// Hops allowed after the first actor; 0: the most the policy allows.
    pub max_depth: u32,
}

impl std::fmt::Debug for DelegationMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationMint")
            .field("entry_id", &self.entry_id)
            .field(
                "id_token",
                &if self.id_token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("rights", &self.rights)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

/// A hop the agent asks the issuer to append ([`NodeClient::delegate`]). `Debug` never prints
/// the token.
#[derive(Clone, Default)]
pub struct DelegationHop {
    /// The current holder's registration entry (authorized for this agent).
    pub entry_id: String,
    /// The held delegation token (base64url): a bearer credential, wiped when dropped.
    pub token: Zeroizing<String>,
    /// The next actor's SPIFFE ID.
    pub next_actor: String,
    /// A subset of the token's rights; empty keeps them all.
    pub rights: Vec<String>,
    /// Seconds; 0 keeps the token's expiry.
    pub ttl_seconds: u32,
}

impl std::fmt::Debug for DelegationHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationHop")
            .field("entry_id", &self.entry_id)
            .field("token", &"<redacted>")
            .field("next_actor", &self.next_actor)
            .field("rights", &self.rights)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

/// A delegation token minted or extended by the issuer. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct DelegationToken {
    /// The token (Biscuit, base64url): a bearer credential, wiped when dropped.
    pub token: Zeroizing<String>,
    /// Its id (`signet-issuer audit trace --token-id`).
    pub token_id: String,
    /// The subject id (`<idp issuer>#<sub>` for users, the SPIFFE ID for workloads).
    pub subject: String,
    /// The actors, first to current holder.
    pub chain: Vec<String>,
    /// The rights it carries.
    pub rights: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// Hops still allowed.
    pub remaining_depth: u32,
}

impl std::fmt::Debug for DelegationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationToken")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("subject", &self.subject)
            .field("chain", &self.chain)
            .field("rights", &self.rights)
            .field("expires_at", &self.expires_at)
            .field("remaining_depth", &self.remaining_depth)
            .finish()
    }
}

impl DelegationToken {
    /// Checks and takes the issuer's answer (the token moves into a zeroizing string).
    fn from_proto(mut t: pb::DelegationToken) -> Result<Self, NodeClientError> {
        let token = Zeroizing::new(std::mem::take(&mut t.token));
        if token.is_empty() {
            return Err(NodeClientError::Protocol(
                "the delegation token is empty".into(),
            ));
        }
        if t.token_id.is_empty() || t.chain.is_empty() {
            return Err(NodeClientError::Protocol(
                "the delegation token comes without its id or chain".into(),
            ));
        }
        Ok(Self {
            token,
            token_id: t.token_id,
            subject: t.subject,
            chain: t.chain,
            rights: t.rights,
            expires_at: t.expires_at,
            remaining_depth: t.remaining_depth,
        })
    }
}

/// The issuer's published delegation keys and revocation list
/// ([`NodeClient::get_delegation_state`]), as JSON documents (see `signet_delegation::keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationState {
    /// The keys document.
    pub keys_json: String,
    /// The revocation list document.
    pub revocations_json: String,
    /// Grows whenever keys or revocations change.
    pub sequence: u64,
}

/// The federated bundles of the last complete sync, by trust domain.
pub type FederatedBundles = BTreeMap<TrustDomain, Bundle>;

/// One item of [`NodeClient::batch_new_x509_svid`].
#[derive(Debug, Clone)]
pub struct SvidRequest {
    /// The registration entry.
    pub entry_id: String,
    /// PKCS#10 CSR (DER); only its public key is used by the issuer.
    pub csr: Vec<u8>,
}

/// A minted X509-SVID.
#[derive(Debug, Clone)]
pub struct X509Svid {
    /// The SVID's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// notAfter of the leaf.
    pub expires_at: SystemTime,
}

/// A per-item failure of [`NodeClient::batch_new_x509_svid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ItemError {
    /// gRPC-style code of the failure.
    pub code: tonic::Code,
    /// What went wrong.
    pub message: String,
}

/// Node client configuration.
#[derive(Debug, Clone)]
pub struct NodeClientConfig {
    /// `host:port` of the issuer's node API (`[v6addr]:port` for IPv6).
    pub address: String,
    /// The trust domain; the issuer must present `spiffe://<td>/signet/issuer`.
    pub trust_domain: TrustDomain,
    /// The trust bundle that authenticates the issuer. Required unless `insecure_bootstrap`.
    pub bundle: Option<Bundle>,
    /// Accept the issuer's certificate without checking its chain until the first attestation
    /// (its SPIFFE ID is still checked). The bundle received then is pinned.
    pub insecure_bootstrap: bool,
}

/// Generates a P-256 key (PKCS#8 DER) and a CSR (DER) over it, with an empty subject.
pub fn generate_key_and_csr() -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), NodeClientError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| NodeClientError::Crypto(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| NodeClientError::Crypto(e.to_string()))?;
    Ok((Zeroizing::new(key.serialize_der()), csr.der().to_vec()))
}

fn unix_to_system(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    }
}

/// What the issuer verifier reads at each handshake.
#[derive(Debug)]
struct TrustState {
    issuer_id: SpiffeId,
    bundle: ArcSwap<Bundle>,
    insecure: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("issuer presented SPIFFE ID {got}, expected {want}")]
struct WrongIssuerId {
    got: SpiffeId,
    want: SpiffeId,
}

/// Authenticates the issuer (see the module documentation): its chain against the current
/// bundle, or in insecure bootstrap only its leaf's form and ID.
impl PeerAuthenticator for TrustState {
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn authenticate(
        &self,
        chain_der: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<SpiffeId, Self::Error> {
        let want = &self.issuer_id;
        if self.insecure.load(Ordering::Acquire) {
            let leaf = chain_der
                .first()
                .ok_or("the issuer presented no certificate")?;
            let got = validate_x509_svid_leaf(leaf)?;
            if &got != want {
                return Err(Box::new(WrongIssuerId {
                    got,
                    want: want.clone(),
                }));
            }
            return Ok(got);
        }
        let bundle = self.bundle.load();
        Ok(authenticate_peer(
            chain_der,
            &bundle,
            now,
            &Authorizer::Exact(want.clone()),
        )?)
    }
}

/// The node API client. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct NodeClient {
    address: String,
    uri: String,
    server_name: ServerName<'static>,
    trust_domain: TrustDomain,
    trust: Arc<TrustState>,
    provider: Arc<CryptoProvider>,
    identity: ArcSwapOption<AgentIdentity>,
    /// The mutual-TLS channel of the current identity (dropped when the identity changes).
    channel: Mutex<Option<Channel>>,
    /// The federated bundles of the last complete sync.
    federated: ArcSwap<FederatedBundles>,
    /// The federated bundles revision of the last complete sync (`None` before the first).
    bundles_revision: Mutex<Option<u64>>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("address", &self.address)
            .field("issuer_id", &self.trust.issuer_id)
            .field(
                "identity",
                &self.identity.load().as_ref().map(|i| &i.spiffe_id),
            )
            .finish_non_exhaustive()
    }
}

/// Splits `host:port` (`[addr]:port` for IPv6) into the host, without brackets, and the port;
/// `None` unless both are there.
pub(crate) fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

fn split_host(address: &str) -> Result<(ServerName<'static>, String), NodeClientError> {
    let bad = || {
        NodeClientError::Config(format!(
            "issuer address {address:?} is not host:port (use [addr]:port for IPv6)"
        ))
    };
    let (host, _port) = split_host_port(address).ok_or_else(bad)?;
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| bad())?,
    };
    Ok((name, format!("http://{address}")))
}

/// Decodes the SPIFFE bundle document of a wire bundle for `td`.
fn decode_bundle(td: &TrustDomain, b: &pb::Bundle) -> Result<Bundle, NodeClientError> {
    if b.trust_domain != td.name() {
        return Err(NodeClientError::Protocol(format!(
            "bundle is for trust domain {:?}, expected {td}",
            b.trust_domain
        )));
    }
    if b.document.is_empty() {
        return Err(NodeClientError::Protocol(format!(
            "the bundle of {td} has no document"
        )));
    }
    Bundle::from_json(td, b.document.as_bytes())
        .map_err(|e| NodeClientError::Protocol(format!("the bundle of {td}: {e}")))
}

/// The own bundle: decoded, and with at least one X.509 authority.
fn bundle_from_proto(td: &TrustDomain, b: pb::Bundle) -> Result<Bundle, NodeClientError> {
    let bundle = decode_bundle(td, &b)?;
    if bundle.x509_authorities.is_empty() {
        return Err(NodeClientError::Protocol(
            "bundle has no X.509 authority".into(),
        ));
    }
    Ok(bundle)
}

/// The federated bundles of a sync's last page, by trust domain (the own one is refused).
fn federated_from_proto(
    own: &TrustDomain,
    bundles: Vec<pb::Bundle>,
) -> Result<FederatedBundles, NodeClientError> {
    let mut out = FederatedBundles::new();
    for b in bundles {
        let td = TrustDomain::new(&b.trust_domain).map_err(|e| {
            NodeClientError::Protocol(format!(
                "federated bundle trust domain {:?}: {e}",
                b.trust_domain
            ))
        })?;
        if &td == own {
            return Err(NodeClientError::Protocol(format!(
                "the own trust domain {own} is sent as a federated bundle"
            )));
        }
        let bundle = decode_bundle(&td, &b)?;
        if out.insert(td.clone(), bundle).is_some() {
            return Err(NodeClientError::Protocol(format!(
                "two federated bundles for {td}"
            )));
        }
    }
    Ok(out)
}

impl NodeClient {
    /// Builds a client; no connection is made until the first call.
    pub fn new(config: NodeClientConfig) -> Result<Self, NodeClientError> {
        let (server_name, uri) = split_host(&config.address)?;
        let issuer_id = config
            .trust_domain
            .spiffe_id(ISSUER_PATH)
            .map_err(|e| NodeClientError::Config(e.to_string()))?;
        let bundle = match config.bundle {
            Some(b) => {
                if b.trust_domain != config.trust_domain {
                    return Err(NodeClientError::Config(format!(
                        "the bundle is for trust domain {}, not {}",
                        b.trust_domain, config.trust_domain
                    )));
                }
                if b.x509_authorities.is_empty() && !config.insecure_bootstrap {
                    return Err(NodeClientError::Config(
                        "the trust bundle has no X.509 authority".into(),
                    ));
                }
                b
            }
            None if config.insecure_bootstrap => Bundle::new(config.trust_domain.clone()),
            None => {
                return Err(NodeClientError::Config(
                    "a trust bundle is required unless insecure_bootstrap is set".into(),
                ));
            }
        };
        Ok(Self {
            address: config.address,
            uri,
            server_name,
            trust_domain: config.trust_domain,
            trust: Arc::new(TrustState {
                issuer_id,
                bundle: ArcSwap::from_pointee(bundle),
                insecure: AtomicBool::new(config.insecure_bootstrap),
            }),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            identity: ArcSwapOption::empty(),
            channel: Mutex::new(None),
            federated: ArcSwap::from_pointee(FederatedBundles::new()),
            bundles_revision: Mutex::new(None),
        })
    }

    /// The issuer ID the client requires, `spiffe://<td>/signet/issuer`.
    pub fn issuer_id(&self) -> &SpiffeId {
        &self.trust.issuer_id
    }

    /// The trust bundle currently used to authenticate the issuer: the own trust domain's bundle,
    /// with its JWT authorities once received from the issuer.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.trust.bundle.load_full()
    }

    /// The bundles of the federated trust domains named in the `federates_with` of the agent's
    /// entries, as of the last complete [`NodeClient::sync_entries`] (empty before).
    pub fn federated_bundles(&self) -> Arc<FederatedBundles> {
        self.federated.load_full()
    }

    /// One federated bundle of the last complete sync.
    pub fn federated_bundle(&self, trust_domain: &TrustDomain) -> Option<Bundle> {
        self.federated.load().get(trust_domain).cloned()
    }

    /// The issuer's federated bundles revision at the last complete sync (`None` before it).
    pub fn bundles_revision(&self) -> Option<u64> {
        *self
            .bundles_revision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a [`NodeClient::watch`] event calls for a sync, given the revision of the last
    /// complete sync: the entry revision moved above it, the own bundle's sequence differs from
    /// the pinned bundle's, or the federated bundles revision differs from the last sync's.
    pub fn needs_sync(&self, event: &WatchEvent, synced_revision: i64) -> bool {
        event.revision > synced_revision
            || event.bundle_sequence != self.bundle().sequence
            || Some(event.bundles_revision) != self.bundles_revision()
    }

    /// Replaces the trust bundle (and ends insecure bootstrap).
    pub fn set_bundle(&self, bundle: Bundle) -> Result<(), NodeClientError> {
        if bundle.trust_domain != self.trust_domain {
            return Err(NodeClientError::Config(format!(
                "the bundle is for trust domain {}, not {}",
                bundle.trust_domain, self.trust_domain
            )));
        }
        if bundle.x509_authorities.is_empty() {
            return Err(NodeClientError::Config(
                "the trust bundle has no X.509 authority".into(),
            ));
        }
        self.trust.bundle.store(Arc::new(bundle));
        self.trust.insecure.store(false, Ordering::Release);
        Ok(())
    }

    /// The agent SVID used for authenticated calls, if any.
    pub fn identity(&self) -> Option<Arc<AgentIdentity>> {
        self.identity.load_full()
    }

    /// Sets the agent SVID used for authenticated calls (e.g. loaded from disk at start-up).
    pub fn set_identity(&self, identity: AgentIdentity) {
        self.identity.store(Some(Arc::new(identity)));
        self.drop_channel();
    }

    fn drop_channel(&self) {
        let mut guard = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }

    async fn connect(&self, identity: Option<&AgentIdentity>) -> Result<Channel, NodeClientError> {
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NodeClientError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeCertVerifier::new(
                self.trust.clone(),
                self.provider.clone(),
            )));
        let mut tls = match identity {
            Some(id) => {
                let chain = id
                    .cert_chain
                    .iter()
                    .map(|c| CertificateDer::from(c.clone()))
                    .collect();
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    id.private_key_pkcs8.as_slice().to_vec(),
                ));
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| NodeClientError::Config(format!("agent SVID: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let server_name = self.server_name.clone();
        let address = self.address.clone();
        let endpoint = Endpoint::from_shared(self.uri.clone())
            .map_err(|e| NodeClientError::Config(format!("issuer address: {e}")))?;
        let service = tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let connect = async {
                    let tcp = TcpStream::connect(address.as_str()).await?;
                    tcp.set_nodelay(true)?;
                    connector.connect(server_name, tcp).await
                };
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TCP connect and TLS handshake timed out",
                        )
                    })??;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        endpoint
            .connect_with_connector(service)
            .await
            .map_err(|e| NodeClientError::Connect {
                address: self.address.clone(),
                reason: error_chain(&e),
            })
    }

    /// A gRPC client on a connection authenticated with the agent SVID.
    async fn authed(&self) -> Result<GrpcNodeClient, NodeClientError> {
        let identity = self.identity().ok_or(NodeClientError::NotAttested)?;
        if let Some(ch) = self
            .channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(GrpcNodeClient::new(ch));
        }
        let ch = self.connect(Some(&identity)).await?;
        let mut guard = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        // Keep the channel only if the identity did not change meanwhile.
        if self
            .identity()
            .is_some_and(|cur| Arc::ptr_eq(&cur, &identity))
        {
            *guard = Some(ch.clone());
        }
        Ok(GrpcNodeClient::new(ch))
    }

    /// Low-level access to the generated gRPC client, on a new connection (`authenticated`: with
    /// the agent SVID). For tools and tests that drive the protocol by hand.
    pub async fn raw_client(&self, authenticated: bool) -> Result<GrpcNodeClient, NodeClientError> {
        let identity = if authenticated {
            Some(self.identity().ok_or(NodeClientError::NotAttested)?)
        } else {
            None
        };
        Ok(GrpcNodeClient::new(
            self.connect(identity.as_deref()).await?,
        ))
    }

    /// Attests with a join token.
    pub async fn attest_join_token(&self, token: &str) -> Result<Attestation, NodeClientError> {
        let agent = JoinTokenAgent::new(token)?;
        self.attest(&agent).await
    }

    /// Attests with x509pop.
    pub async fn attest_x509pop(
        &self,
        agent: &X509PopAgent,
    ) -> Result<Attestation, NodeClientError> {
        self.attest(agent).await
    }

    /// Runs node attestation with `attestor` over a fresh P-256 key. On success the received SVID
    /// becomes the client's identity and the received bundle is pinned.
    pub async fn attest(
        &self,
        attestor: &dyn AgentAttestor,
    ) -> Result<Attestation, NodeClientError> {
        use pb::attest_agent_request::Step as Req;
        use pb::attest_agent_response::Step as Resp;

        let (key, csr) = generate_key_and_csr()?;
        let payload = attestor.payload()?;
        let mut grpc = GrpcNodeClient::new(self.connect(None).await?);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let closed = || NodeClientError::Protocol("the attestation stream closed early".into());
        tx.send(pb::AttestAgentRequest {
            step: Some(Req::Params(pb::AttestationParams {
                attestor_type: attestor.attestor_type().to_owned(),
                payload: payload.to_vec(),
                csr,
            })),
        })
        .await
        .map_err(|_| closed())?;
        let mut responses = grpc
            .attest_agent(ReceiverStream::new(rx))
            .await
            .map_err(rpc_error)?
            .into_inner();
        loop {
            let msg = responses
                .message()
                .await
                .map_err(rpc_error)?
                .ok_or_else(|| {
                    NodeClientError::Protocol("attestation ended without a result".into())
                })?;
            match msg.step {
                Some(Resp::Challenge(challenge)) => {
                    let answer = attestor.answer_challenge(&challenge)?;
                    tx.send(pb::AttestAgentRequest {
                        step: Some(Req::ChallengeResponse(answer)),
                    })
                    .await
                    .map_err(|_| closed())?;
                }
                Some(Resp::Result(result)) => return self.finish_attestation(result, key),
                None => {
                    return Err(NodeClientError::Protocol(
                        "empty attestation response".into(),
                    ));
                }
            }
        }
    }

    fn finish_attestation(
        &self,
        result: pb::AttestationResult,
        key: Zeroizing<Vec<u8>>,
    ) -> Result<Attestation, NodeClientError> {
        let bundle = bundle_from_proto(
            &self.trust_domain,
            result.bundle.ok_or_else(|| {
                NodeClientError::Protocol("attestation result has no bundle".into())
            })?,
        )?;
        let svid = result
            .svid
            .ok_or_else(|| NodeClientError::Protocol("attestation result has no SVID".into()))?;
        let id = SpiffeId::parse(&result.spiffe_id)
            .map_err(|e| NodeClientError::Protocol(format!("agent SPIFFE ID: {e}")))?;
        let identity = self.checked_identity(svid, &bundle, key, Some(&id))?;
        self.set_bundle(bundle.clone())?;
        self.set_identity(identity.clone());
        Ok(Attestation {
            identity,
            bundle,
            selectors: result
                .selectors
                .into_iter()
                .map(|s| Selector::new(s.r#type, s.value))
                .collect(),
        })
    }

    /// Verifies a received agent SVID against `bundle` and pairs it with its key.
    fn checked_identity(
        &self,
        svid: pb::X509svid,
        bundle: &Bundle,
        key: Zeroizing<Vec<u8>>,
        expected: Option<&SpiffeId>,
    ) -> Result<AgentIdentity, NodeClientError> {
        let got = verify_x509_svid(&svid.cert_chain, bundle, SystemTime::now())
            .map_err(|e| NodeClientError::Protocol(format!("agent SVID: {e}")))?;
        if let Some(want) = expected
            && &got != want
        {
            return Err(NodeClientError::Protocol(format!(
                "agent SVID is for {got}, expected {want}"
            )));
        }
        if !got.path().starts_with("/signet/agent/") {
            return Err(NodeClientError::Protocol(format!(
                "agent SVID has ID {got}, outside /signet/agent/"
            )));
        }
        Ok(AgentIdentity {
            spiffe_id: got,
            cert_chain: svid.cert_chain,
            private_key_pkcs8: key,
            expires_at: unix_to_system(svid.expires_at),
        })
    }

    /// Renews the agent SVID over a fresh key; the new SVID becomes the client's identity (and the
    /// old one is refused by the issuer from then on).
    pub async fn renew(&self) -> Result<AgentIdentity, NodeClientError> {
        let current = self.identity().ok_or(NodeClientError::NotAttested)?;
        let (key, csr) = generate_key_and_csr()?;
        let resp = self
            .authed()
            .await?
            .renew_agent(pb::RenewAgentRequest { csr })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let bundle = match resp.bundle {
            Some(b) => bundle_from_proto(&self.trust_domain, b)?,
            None => (*self.bundle()).clone(),
        };
        let svid = resp
            .svid
            .ok_or_else(|| NodeClientError::Protocol("renewal response has no SVID".into()))?;
        let identity = self.checked_identity(svid, &bundle, key, Some(&current.spiffe_id))?;
        self.set_bundle(bundle)?;
        self.set_identity(identity.clone());
        Ok(identity)
    }

    /// Fetches one page of entry changes.
    pub async fn sync_entries_page(
        &self,
        since_revision: i64,
        page_size: u32,
        page_token: String,
    ) -> Result<pb::SyncEntriesResponse, NodeClientError> {
        self.authed()
            .await?
            .sync_entries(pb::SyncEntriesRequest {
                since_revision,
                page_size,
                page_token,
            })
            .await
            .map_err(rpc_error)
            .map(tonic::Response::into_inner)
    }

    /// Fetches every page of the entries authorized for this agent that changed since
    /// `since_revision` (0 = full listing); `page_size` 0 = the issuer's default. Updates the
    /// pinned bundle, and once every page was read, the federated bundles and their revision.
    pub async fn sync_entries(
        &self,
        since_revision: i64,
        page_size: u32,
    ) -> Result<EntrySync, NodeClientError> {
        let mut out = EntrySync::default();
        let mut token = String::new();
        let mut first = true;
        loop {
            let page = self
                .sync_entries_page(since_revision, page_size, token)
                .await?;
            if first {
                out.full = page.full;
                out.revision = page.revision;
                first = false;
            } else if page.full != out.full || page.revision != out.revision {
                return Err(NodeClientError::Protocol(
                    "sync pages disagree on revision or mode".into(),
                ));
            }
            out.entries.extend(page.entries);
            out.removed_entry_ids.extend(page.removed_entry_ids);
            if let Some(b) = page.bundle {
                self.set_bundle(bundle_from_proto(&self.trust_domain, b)?)?;
            }
            if page.next_page_token.is_empty() {
                let federated = federated_from_proto(&self.trust_domain, page.federated_bundles)?;
                self.federated.store(Arc::new(federated));
                *self
                    .bundles_revision
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(page.bundles_revision);
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// Asks the issuer to sign X509-SVIDs; one result per request, in order.
    pub async fn batch_new_x509_svid(
        &self,
        requests: Vec<SvidRequest>,
    ) -> Result<Vec<Result<X509Svid, ItemError>>, NodeClientError> {
        let n = requests.len();
        let resp = self
            .authed()
            .await?
            .batch_new_x509svid(pb::BatchNewX509svidRequest {
                params: requests
                    .into_iter()
                    .map(|r| pb::NewX509svidParams {
                        entry_id: r.entry_id,
                        csr: r.csr,
                    })
                    .collect(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        if resp.results.len() != n {
            return Err(NodeClientError::Protocol(format!(
                "{} results for {n} requests",
                resp.results.len()
            )));
        }
        resp.results
            .into_iter()
            .map(|r| match (r.svid, r.error) {
                (Some(svid), None) => {
                    let id = SpiffeId::parse(&svid.spiffe_id)
                        .map_err(|e| NodeClientError::Protocol(format!("SVID SPIFFE ID: {e}")))?;
                    Ok(Ok(X509Svid {
                        spiffe_id: id,
                        cert_chain: svid.cert_chain,
                        expires_at: unix_to_system(svid.expires_at),
                    }))
                }
                (None, Some(e)) => Ok(Err(ItemError {
                    code: tonic::Code::from_i32(e.code),
                    message: e.message,
                })),
                _ => Err(NodeClientError::Protocol(format!(
                    "result for entry {} has neither or both of svid and error",
                    r.entry_id
                ))),
            })
            .collect()
    }

    /// [`NodeClient::watch`] as `(revision, bundle_sequence)` pairs; an event that only changes
    /// the federated bundles revision repeats the previous pair (sync when
    /// [`NodeClient::needs_sync`] says so, or use [`NodeClient::watch`]).
    pub fn watch_entries(
        &self,
    ) -> impl futures::Stream<Item = Result<(i64, u64), NodeClientError>> + Send + Unpin + '_ {
        use futures::StreamExt;
        self.watch()
            .map(|r| r.map(|e| (e.revision, e.bundle_sequence)))
    }

    /// Watches for changes (server push): yields a [`WatchEvent`] at once (the issuer's current
    /// store revision, own bundle sequence and federated bundles revision), then again whenever
    /// any of them changes; bursts are coalesced. Call [`NodeClient::sync_entries`] (e.g. through
    /// [`EntryCache::refresh`]) when [`NodeClient::needs_sync`] says so: the sync brings the
    /// entries, the own bundle and the federated bundles.
    ///
    /// The connection or RPC failure, if any, is the last item. The stream also ends normally
    /// (`None`) when the issuer closes it: when the agent SVID it was opened with expires, after
    /// at most about ten minutes, or at issuer shutdown. Watch again then (with backoff after an
    /// error), and after [`NodeClient::renew`] so that the watch uses the new SVID; sync once on
    /// every (re)open, since changes may have happened in between.
    pub fn watch(
        &self,
    ) -> impl futures::Stream<Item = Result<WatchEvent, NodeClientError>> + Send + Unpin + '_ {
        enum State<'a> {
            Start(&'a NodeClient),
            Open(Box<tonic::Streaming<pb::WatchEntriesEvent>>),
            Done,
        }
        use futures::StreamExt;
        futures::stream::unfold(State::Start(self), |state| async move {
            let mut events = match state {
                State::Start(client) => {
                    let opened = match client.authed().await {
                        Ok(mut grpc) => grpc
                            .watch_entries(pb::WatchEntriesRequest {})
                            .await
                            .map_err(rpc_error),
                        Err(e) => Err(e),
                    };
                    match opened {
                        Ok(r) => Box::new(r.into_inner()),
                        Err(e) => return Some((Err(e), State::Done)),
                    }
                }
                State::Open(events) => events,
                State::Done => return None,
            };
            match events.message().await {
                Ok(Some(ev)) => Some((
                    Ok(WatchEvent {
                        revision: ev.revision,
                        bundle_sequence: ev.bundle_sequence,
                        bundles_revision: ev.bundles_revision,
                        delegation_sequence: ev.delegation_sequence,
                    }),
                    State::Open(events),
                )),
                Ok(None) => None,
                Err(s) => Some((Err(rpc_error(s)), State::Done)),
            }
        })
        .boxed()
    }

    /// Has the issuer mint a JWT-SVID for `entry_id` (an entry authorized for this agent, not a
    /// node alias) with the given audiences (at least one, none empty), valid for the entry's
    /// `jwt_svid_ttl` or the issuer's default.
    pub async fn new_jwt_svid(
        &self,
        entry_id: &str,
        audiences: &[String],
    ) -> Result<JwtSvid, NodeClientError> {
        let request = pb::NewJwtsvidRequest {
            entry_id: entry_id.to_owned(),
            audience: audiences.to_vec(),
        };
        let response = self.authed().await?.new_jwtsvid(request).await;
        let (spiffe_id, token, expires_at, issued_at) = self.minted_token("JWT-SVID", response)?;
        Ok(JwtSvid {
            spiffe_id,
            token,
            expires_at,
            issued_at,
        })
    }

    /// Has the issuer mint a WIT-SVID for `entry_id` (an entry authorized for this agent, not a
    /// node alias, exactly as for [`new_jwt_svid`](Self::new_jwt_svid)) that binds the workload
    /// key `spki_der` (its public key as DER SubjectPublicKeyInfo: EC P-256, EC P-384 or RSA
    /// 2048-8192 bits), valid for the issuer's `[defaults] wit_svid_ttl`. A key the issuer
    /// refuses comes back as [`NodeClientError::Rpc`] with `InvalidArgument`.
    pub async fn new_wit_svid(
        &self,
        entry_id: &str,
        spki_der: &[u8],
    ) -> Result<WitSvid, NodeClientError> {
        let request = pb::NewWitsvidRequest {
            entry_id: entry_id.to_owned(),
            public_key: spki_der.to_vec(),
        };
        let response = self.authed().await?.new_witsvid(request).await;
        let (spiffe_id, token, expires_at, issued_at) = self.minted_token("WIT-SVID", response)?;
        Ok(WitSvid {
            spiffe_id,
            token,
            expires_at,
            issued_at,
        })
    }

    /// Checks the answer of a token mint (`kind` is `JWT-SVID` or `WIT-SVID`): no RPC error, an
    /// SVID, a non-empty token and a SPIFFE ID in the agent's trust domain. Returns the ID, the
    /// token, `exp` and `iat`.
    fn minted_token<R: MintResponse>(
        &self,
        kind: &str,
        response: Result<tonic::Response<R>, tonic::Status>,
    ) -> Result<(SpiffeId, String, SystemTime, SystemTime), NodeClientError> {
        let (spiffe_id, token, expires_at, issued_at) = response
            .map_err(rpc_error)?
            .into_inner()
            .into_parts()
            .ok_or_else(|| NodeClientError::Protocol(format!("response has no {kind}")))?;
        if token.is_empty() {
            return Err(NodeClientError::Protocol(format!(
                "the {kind} token is empty"
            )));
        }
        let spiffe_id = SpiffeId::parse(&spiffe_id)
            .map_err(|e| NodeClientError::Protocol(format!("{kind} SPIFFE ID: {e}")))?;
        if !spiffe_id.is_member_of(&self.trust_domain) {
            return Err(NodeClientError::Protocol(format!(
                "{kind} for {spiffe_id}, outside trust domain {}",
                self.trust_domain
            )));
        }
        Ok((
            spiffe_id,
            token,
            unix_to_system(expires_at),
            unix_to_system(issued_at),
        ))
    }

    /// Has the issuer mint a delegation token whose first actor is the workload of
    /// `request.entry_id` (see [`DelegationMint`]). The issuer's refusals come back as
    /// [`NodeClientError::Rpc`]: `FailedPrecondition` when delegation is not configured,
    /// `PermissionDenied` with the policy's reason, `InvalidArgument` for a bad request or ID
    /// token.
    pub async fn mint_delegation(
        &self,
        request: &DelegationMint,
    ) -> Result<DelegationToken, NodeClientError> {
        let message = pb::MintDelegationRequest {
            entry_id: request.entry_id.clone(),
            id_token: request.id_token.to_string(),
            rights: request.rights.clone(),
            ttl_seconds: request.ttl_seconds,
            max_depth: request.max_depth,
        };
        let answer = self
            .authed()
            .await?
            .mint_delegation(message)
            .await
            .map_err(rpc_error)?;
        DelegationToken::from_proto(answer.into_inner())
    }

    /// Has the issuer append a hop to a token held by the workload of `request.entry_id` (see
    /// [`DelegationHop`]); refusals as for [`mint_delegation`](Self::mint_delegation).
    pub async fn delegate(
        &self,
        request: &DelegationHop,
    ) -> Result<DelegationToken, NodeClientError> {
        let message = pb::DelegateRequest {
            entry_id: request.entry_id.clone(),
            token: request.token.to_string(),
            next_actor: request.next_actor.clone(),
            rights: request.rights.clone(),
            ttl_seconds: request.ttl_seconds,
        };
        let answer = self
            .authed()
            .await?
            .delegate(message)
            .await
            .map_err(rpc_error)?;
        DelegationToken::from_proto(answer.into_inner())
    }

    /// The issuer's delegation keys and revocation list (`FailedPrecondition` when delegation
    /// is not configured).
    pub async fn get_delegation_state(&self) -> Result<DelegationState, NodeClientError> {
        let s = self
            .authed()
            .await?
            .get_delegation_state(pb::GetDelegationStateRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        Ok(DelegationState {
            keys_json: s.keys_json,
            revocations_json: s.revocations_json,
            sequence: s.sequence,
        })
    }

    /// Fetches the issuer's trust bundle (and pins it).
    pub async fn get_bundle(&self) -> Result<Bundle, NodeClientError> {
        let resp = self
            .authed()
            .await?
            .get_bundle(pb::GetBundleRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        let bundle = bundle_from_proto(
            &self.trust_domain,
            resp.bundle
                .ok_or_else(|| NodeClientError::Protocol("response has no bundle".into()))?,
        )?;
        self.set_bundle(bundle.clone())?;
        Ok(bundle)
    }
}

/// The agent's copy of its authorized entries, kept up to date with [`NodeClient::sync_entries`].
///
/// A full listing replaces the set; a delta upserts and removes. Then entries that have expired
/// and entries no longer connected to the agent (through its ID, its node aliases, or a chain of
/// parent entries) are dropped: the issuer reports changed entries, and this pruning removes the
/// descendants of an entry that was deleted or re-parented.
#[derive(Debug, Clone)]
pub struct EntryCache {
    agent_id: String,
    issuer_id: String,
    entries: HashMap<String, pb::Entry>,
    revision: i64,
}

impl EntryCache {
    /// An empty cache for `agent_id` of the trust domain whose issuer is `issuer_id`.
    pub fn new(agent_id: &SpiffeId, issuer_id: &SpiffeId) -> Self {
        Self {
            agent_id: agent_id.to_string(),
            issuer_id: issuer_id.to_string(),
            entries: HashMap::new(),
            revision: 0,
        }
    }

    /// The revision to sync from next time (0 before the first sync).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// One entry by id.
    pub fn get(&self, id: &str) -> Option<&pb::Entry> {
        self.entries.get(id)
    }

    /// Every cached entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &pb::Entry> {
        self.entries.values()
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies a sync result at time `now`.
    pub fn apply(&mut self, sync: EntrySync, now: SystemTime) {
        if sync.full {
            self.entries.clear();
        }
        for id in &sync.removed_entry_ids {
            self.entries.remove(id);
        }
        for e in sync.entries {
            self.entries.insert(e.id.clone(), e);
        }
        self.revision = sync.revision;
        self.prune(now);
    }

    /// Syncs from the cache's revision and applies the result.
    pub async fn refresh(
        &mut self,
        client: &NodeClient,
        page_size: u32,
    ) -> Result<(), NodeClientError> {
        let sync = client.sync_entries(self.revision, page_size).await?;
        self.apply(sync, SystemTime::now());
        Ok(())
    }

    fn prune(&mut self, now: SystemTime) {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.entries
            .retain(|_, e| e.expires_at == 0 || e.expires_at > now);
        let mut by_parent: HashMap<&str, Vec<&pb::Entry>> = HashMap::new();
        for e in self.entries.values() {
            by_parent.entry(e.parent_id.as_str()).or_default().push(e);
        }
        let mut reachable: HashSet<String> = HashSet::new();
        let mut seen_parents: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        queue.push_back(self.agent_id.as_str());
        queue.push_back(self.issuer_id.as_str());
        while let Some(parent) = queue.pop_front() {
            if !seen_parents.insert(parent) {
                continue;
            }
            for e in by_parent.get(parent).into_iter().flatten() {
                reachable.insert(e.id.clone());
                queue.push_back(e.spiffe_id.as_str());
            }
        }
        self.entries.retain(|id, _| reachable.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, spiffe_id: &str, parent: &str, revision: i64) -> pb::Entry {
        pb::Entry {
            id: id.into(),
            spiffe_id: spiffe_id.into(),
            parent_id: parent.into(),
            revision,
            ..Default::default()
        }
    }

    const AGENT: &str = "spiffe://td/signet/agent/join_token/t";
    const ISSUER: &str = "spiffe://td/signet/issuer";

    fn cache() -> EntryCache {
        EntryCache::new(
            &SpiffeId::parse(AGENT).unwrap(),
            &SpiffeId::parse(ISSUER).unwrap(),
        )
    }

    fn ids(c: &EntryCache) -> Vec<String> {
        let mut v: Vec<String> = c.entries().map(|e| e.id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn full_then_delta() {
        let mut c = cache();
        c.apply(
            EntrySync {
                full: true,
                entries: vec![
                    entry("a", "spiffe://td/a", AGENT, 1),
                    entry("b", "spiffe://td/b", AGENT, 2),
                ],
                removed_entry_ids: vec![],
                revision: 2,
            },
            SystemTime::now(),
        );
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.revision(), 2);
        c.apply(
            EntrySync {
                full: false,
                entries: vec![entry("c", "spiffe://td/c", AGENT, 3)],
                removed_entry_ids: vec!["a".into(), "unknown".into()],
                revision: 4,
            },
            SystemTime::now(),
        );
        assert_eq!(ids(&c), ["b", "c"]);
        assert_eq!(c.revision(), 4);
        // A full listing replaces everything.
        c.apply(
            EntrySync {
                full: true,
                entries: vec![entry("d", "spiffe://td/d", AGENT, 5)],
                removed_entry_ids: vec![],
                revision: 5,
            },
            SystemTime::now(),
        );
        assert_eq!(ids(&c), ["d"]);
    }

    #[test]
    fn descendants_of_removed_or_reparented_entries_are_pruned() {
        let mut c = cache();
        c.apply(
            EntrySync {
                full: true,
                entries: vec![
                    entry("alias", "spiffe://td/alias", ISSUER, 1),
                    entry("under-alias", "spiffe://td/w1", "spiffe://td/alias", 2),
                    entry("mid", "spiffe://td/mid", AGENT, 3),
                    entry("nested", "spiffe://td/n", "spiffe://td/mid", 4),
                    entry("orphan", "spiffe://td/o", "spiffe://td/nobody", 5),
                ],
                removed_entry_ids: vec![],
                revision: 5,
            },
            SystemTime::now(),
        );
        assert_eq!(ids(&c), ["alias", "mid", "nested", "under-alias"]);
        // The alias is removed and "mid" changes its SPIFFE ID: their descendants go too.
        c.apply(
            EntrySync {
                full: false,
                entries: vec![entry("mid", "spiffe://td/mid2", AGENT, 6)],
                removed_entry_ids: vec!["alias".into()],
                revision: 6,
            },
            SystemTime::now(),
        );
        assert_eq!(ids(&c), ["mid"]);
    }

    #[test]
    fn expired_entries_are_dropped() {
        let mut c = cache();
        let mut e = entry("a", "spiffe://td/a", AGENT, 1);
        e.expires_at = 100;
        let mut child = entry("b", "spiffe://td/b", "spiffe://td/a", 1);
        child.expires_at = 0;
        c.apply(
            EntrySync {
                full: true,
                entries: vec![e, child],
                removed_entry_ids: vec![],
                revision: 1,
            },
            UNIX_EPOCH + Duration::from_secs(50),
        );
        assert_eq!(c.len(), 2);
        c.apply(
            EntrySync {
                full: false,
                revision: 1,
                ..Default::default()
            },
            UNIX_EPOCH + Duration::from_secs(100),
        );
        assert!(c.is_empty());
    }

    #[test]
    fn addresses() {
        assert!(split_host("127.0.0.1:8081").is_ok());
        assert!(split_host("[::1]:8081").is_ok());
        assert!(split_host("issuer.example.org:443").is_ok());
        for bad in ["127.0.0.1", ":8081", "host:notaport", "a b:1"] {
            assert!(split_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_requires_bundle_unless_insecure() {
        let td = TrustDomain::new("example.org").unwrap();
        let cfg = |bundle, insecure| NodeClientConfig {
            address: "127.0.0.1:1".into(),
            trust_domain: td.clone(),
            bundle,
            insecure_bootstrap: insecure,
        };
        assert!(matches!(
            NodeClient::new(cfg(None, false)),
            Err(NodeClientError::Config(_))
        ));
        assert!(NodeClient::new(cfg(None, true)).is_ok());
        let other = Bundle::new(TrustDomain::new("other.org").unwrap());
        assert!(NodeClient::new(cfg(Some(other), true)).is_err());
        let c = NodeClient::new(cfg(None, true)).unwrap();
        assert_eq!(
            c.issuer_id().to_string(),
            "spiffe://example.org/signet/issuer"
        );
    }

    #[test]
    fn csr_carries_the_generated_key() {
        let (key, csr) = generate_key_and_csr().unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&csr.into()).unwrap();
        let kp = rcgen::KeyPair::try_from(key.as_slice()).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(parsed.public_key.der_bytes(), kp.der_bytes());
    }

    fn wire_bundle(td: &str, document: &str) -> pb::Bundle {
        pb::Bundle {
            trust_domain: td.into(),
            sequence: 0,
            document: document.into(),
        }
    }

    #[test]
    fn wire_bundles_are_checked() {
        let own = TrustDomain::new("example.org").unwrap();
        let empty_doc = r#"{"keys":[],"spiffe_sequence":3}"#;
        // A federated bundle may be empty; the own one needs an X.509 authority.
        let fed = federated_from_proto(&own, vec![wire_bundle("partner.test", empty_doc)]).unwrap();
        let partner = TrustDomain::new("partner.test").unwrap();
        assert_eq!(fed[&partner].sequence, 3);
        assert!(matches!(
            bundle_from_proto(&own, wire_bundle("example.org", empty_doc)),
            Err(NodeClientError::Protocol(_))
        ));
        for bad in [
            vec![wire_bundle("example.org", empty_doc)],
            vec![wire_bundle("Not A Domain", empty_doc)],
            vec![wire_bundle("partner.test", "")],
            vec![wire_bundle("partner.test", "{not json")],
            vec![
                wire_bundle("partner.test", empty_doc),
                wire_bundle("partner.test", empty_doc),
            ],
        ] {
            assert!(
                matches!(
                    federated_from_proto(&own, bad.clone()),
                    Err(NodeClientError::Protocol(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            bundle_from_proto(&own, wire_bundle("partner.test", empty_doc)),
            Err(NodeClientError::Protocol(_))
        ));
    }

    #[test]
    fn token_svid_debug_redacts_the_token() {
        let id = SpiffeId::parse("spiffe://td/w").unwrap();
        let token = "header.claims.signature".to_owned();
        let jwt = JwtSvid {
            spiffe_id: id.clone(),
            token: token.clone(),
            expires_at: UNIX_EPOCH,
            issued_at: UNIX_EPOCH,
        };
        let wit = WitSvid {
            spiffe_id: id,
            token,
            expires_at: UNIX_EPOCH,
            issued_at: UNIX_EPOCH,
        };
        for dbg in [format!("{jwt:?}"), format!("{wit:?}")] {
            assert!(!dbg.contains("claims") && dbg.contains("redacted"), "{dbg}");
        }
    }

    #[test]
    fn minted_token_svids_are_checked() {
        let c = NodeClient::new(NodeClientConfig {
            address: "127.0.0.1:1".into(),
            trust_domain: TrustDomain::new("example.org").unwrap(),
            bundle: None,
            insecure_bootstrap: true,
        })
        .unwrap();
        let wire = |spiffe_id: &str, token: &str| pb::Witsvid {
            spiffe_id: spiffe_id.into(),
            token: token.into(),
            expires_at: 20,
            issued_at: 10,
        };
        let answer = |svid| Ok(tonic::Response::new(pb::NewWitsvidResponse { svid }));
        let (id, token, exp, iat) = c
            .minted_token(
                "WIT-SVID",
                answer(Some(wire("spiffe://example.org/w", "a.b.c"))),
            )
            .unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/w");
        assert_eq!(token, "a.b.c");
        assert_eq!(exp, UNIX_EPOCH + Duration::from_secs(20));
        assert_eq!(iat, UNIX_EPOCH + Duration::from_secs(10));
        for (svid, why) in [
            (None, "response has no WIT-SVID"),
            (
                Some(wire("spiffe://example.org/w", "")),
                "the WIT-SVID token is empty",
            ),
            (Some(wire("not an id", "a.b.c")), "WIT-SVID SPIFFE ID"),
            (
                Some(wire("spiffe://other.org/w", "a.b.c")),
                "outside trust domain",
            ),
        ] {
            match c.minted_token("WIT-SVID", answer(svid)) {
                Err(NodeClientError::Protocol(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        assert!(matches!(
            c.minted_token::<pb::NewWitsvidResponse>(
                "WIT-SVID",
                Err(tonic::Status::invalid_argument("public_key: bad"))
            ),
            Err(NodeClientError::Rpc { .. })
        ));
    }

    #[test]
    fn own_bundle_with_wit_authorities_is_accepted() {
        let td = TrustDomain::new("example.org").unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let mut bundle = Bundle::new(td.clone());
        bundle.x509_authorities.push(ca.der().to_vec());
        bundle.wit_authorities.push(signet_spiffe::JwtAuthority {
            key_id: "wit-1".into(),
            // The P-256 key of RFC 7515 appendix A.3.
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            }),
        });
        bundle.sequence = 7;
        let doc = bundle.to_json().unwrap();
        assert!(doc.contains("wit-svid"), "{doc}");
        let parsed = bundle_from_proto(&td, wire_bundle("example.org", &doc)).unwrap();
        assert_eq!(parsed.wit_authorities.len(), 1);
        assert_eq!(parsed.wit_authorities[0].key_id, "wit-1");
        assert!(parsed.jwt_authorities.is_empty());
        assert_eq!(parsed.sequence, 7);
    }

    #[test]
    fn identity_debug_redacts_the_key() {
        let (key, _) = generate_key_and_csr().unwrap();
        let id = AgentIdentity {
            spiffe_id: SpiffeId::parse(AGENT).unwrap(),
            cert_chain: vec![],
            private_key_pkcs8: key,
            expires_at: UNIX_EPOCH,
        };
        assert!(format!("{id:?}").contains("redacted"));
    }

    #[tokio::test]
    async fn unauthenticated_calls_need_an_identity() {
        let c = NodeClient::new(NodeClientConfig {
            address: "127.0.0.1:1".into(),
            trust_domain: TrustDomain::new("example.org").unwrap(),
            bundle: None,
            insecure_bootstrap: true,
        })
        .unwrap();
        assert!(matches!(
            c.get_bundle().await,
            Err(NodeClientError::NotAttested)
        ));
        assert!(matches!(c.renew().await, Err(NodeClientError::NotAttested)));
        assert!(matches!(
            c.new_wit_svid("entry", b"key").await,
            Err(NodeClientError::NotAttested)
        ));
        // The watch reports it as its only item.
        let items: Vec<_> = futures::StreamExt::collect(c.watch_entries()).await;
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0], Err(NodeClientError::NotAttested)));
    }
}
