//! TLS of the node API: the issuer's own X509-SVID (rotated without a restart), the verifier of
//! agent SVIDs, and the accepted-connection type that carries the peer's identity to handlers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use signet_ca::{KeyType, X509SvidRequest};
use signet_spiffe::SpiffeId;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::tls::{
    Authorizer, PeerAuthenticator, PeerError, SpiffeCertVerifier, authenticate_peer,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::state::Issuer;
use crate::tls_accept::Handshakes;

/// Path prefix of agent IDs; only such SVIDs are accepted as client certificates.
pub const AGENT_PATH_PREFIX: &str = "/signet/agent";

/// TLS handshakes: 256 at once at most, 10 s each.
const HANDSHAKES: Handshakes = Handshakes {
    listener: "node API",
    max_concurrent: 256,
    timeout: Duration::from_secs(10),
};
/// Shortest wait between two renewals of the issuer SVID, and retry delay after a failure.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);
const RETRY_WAIT: Duration = Duration::from_secs(10);

/// Errors building the node API's TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA could not generate a key or sign the issuer SVID.
    #[error("cannot mint the issuer's node API SVID: {0}")]
    Mint(#[from] signet_ca::CaError),
    /// rustls refused the key or the configuration.
    #[error("node API TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The issuer's current SVID for the node API.
#[derive(Debug)]
pub(crate) struct MintedSvid {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// Mints an X509-SVID for `spiffe://<td>/signet/issuer` over a fresh P-256 key.
pub(crate) fn mint_issuer_svid(
    issuer: &Issuer,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<MintedSvid, TlsSetupError> {
    let key = signet_ca::generate_key(KeyType::EcP256)?;
    let started = Instant::now();
    let svid = issuer.ca.sign_x509_svid(
        &X509SvidRequest {
            spiffe_id: &issuer.issuer_id,
            public_key_spki_der: &key.spki_der,
            ttl: issuer.defaults.x509_svid_ttl,
            dns_names: &[],
        },
        now,
    )?;
    issuer
        .metrics
        .record_signature("x509_svid", started.elapsed().as_secs_f64());
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.pkcs8_der.to_vec(),
        )))?;
    let chain = svid
        .cert_chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    Ok(MintedSvid {
        key: Arc::new(CertifiedKey::new(chain, signing_key)),
        not_before: svid.not_before,
        not_after: svid.not_after,
    })
}

/// Serves the current issuer SVID to every handshake; swapped in place at renewal.
#[derive(Debug)]
pub(crate) struct SvidResolver {
    current: ArcSwap<MintedSvid>,
}

impl SvidResolver {
    pub(crate) fn new(svid: MintedSvid) -> Self {
        Self {
            current: ArcSwap::from_pointee(svid),
        }
    }

    /// When the current SVID reaches half of its lifetime.
    fn renew_at(&self) -> SystemTime {
        let cur = self.current.load();
        let life = cur
            .not_after
            .duration_since(cur.not_before)
            .unwrap_or(Duration::ZERO);
        cur.not_before + life / 2
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// Renews the issuer SVID at half-life, forever (the caller aborts the task).
pub(crate) async fn renew_loop(
    issuer: Arc<Issuer>,
    resolver: Arc<SvidResolver>,
    provider: Arc<CryptoProvider>,
) {
    loop {
        let wait = resolver
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(MIN_RENEW_WAIT);
        tokio::time::sleep(wait).await;
        match mint_issuer_svid(&issuer, &provider, SystemTime::now()) {
            Ok(svid) => {
                tracing::info!(
                    not_after = ?svid.not_after,
                    "renewed the issuer's node API SVID"
                );
                resolver.current.store(Arc::new(svid));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot renew the issuer's node API SVID; retrying");
                tokio::time::sleep(RETRY_WAIT).await;
            }
        }
    }
}

/// Authenticates agent SVIDs presented as client certificates, against the CA's current trust
/// anchors (read at each handshake, so a CA rotation needs no restart). A client certificate is
/// optional: attestation has none, and the handlers refuse authenticated calls without one.
pub(crate) struct AgentAuthenticator {
    issuer: Arc<Issuer>,
}

impl std::fmt::Debug for AgentAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAuthenticator")
            .field("trust_domain", &self.issuer.trust_domain)
            .finish_non_exhaustive()
    }
}

impl PeerAuthenticator for AgentAuthenticator {
    type Error = PeerError;

    fn authenticate(&self, chain_der: &[Vec<u8>], now: SystemTime) -> Result<SpiffeId, PeerError> {
        let mut bundle = Bundle::new(self.issuer.trust_domain.clone());
        bundle.x509_authorities = self.issuer.ca.trust_anchors();
        let authorizer = Authorizer::PathPrefix(
            self.issuer.trust_domain.clone(),
            AGENT_PATH_PREFIX.to_owned(),
        );
        authenticate_peer(chain_der, &bundle, now, &authorizer).inspect_err(|e| {
            tracing::debug!(error = %e, "refused a client certificate");
        })
    }
}

/// The rustls server configuration of the node API: TLS 1.3, ALPN `h2`, optional client certs.
pub(crate) fn server_config(
    issuer: Arc<Issuer>,
    resolver: Arc<SvidResolver>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let verifier = Arc::new(SpiffeCertVerifier::new(
        AgentAuthenticator { issuer },
        provider.clone(),
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// The authenticated agent of a connection, from its verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAgent {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The serial number of the presented SVID, lowercase hex without leading zeros.
    pub serial: String,
}

/// What handlers learn about a node API connection (a request extension).
#[derive(Debug, Clone)]
pub struct NodeConnectInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The agent, when the peer presented a (verified) agent SVID.
    pub peer: Option<Arc<PeerAgent>>,
}

/// Lowercase hex without leading zeros ("0" for zero): the canonical form of a serial number.
pub fn normalize_serial(hex: &str) -> String {
    let s = hex.trim_start_matches('0').to_ascii_lowercase();
    if s.is_empty() { "0".to_owned() } else { s }
}

fn peer_agent(certs: Option<&[CertificateDer<'static>]>) -> Option<Arc<PeerAgent>> {
    let leaf = certs?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let spiffe_id = signet_spiffe::svid::spiffe_id_from_cert(leaf.as_ref()).ok()?;
    Some(Arc::new(PeerAgent {
        spiffe_id,
        serial: normalize_serial(&hex::encode(cert.raw_serial())),
    }))
}

/// An accepted, handshaken node API connection.
pub struct NodeConn {
    inner: TlsStream<TcpStream>,
    info: NodeConnectInfo,
}

impl NodeConn {
    fn new(inner: TlsStream<TcpStream>, remote_addr: SocketAddr) -> Self {
        let peer = peer_agent(inner.get_ref().1.peer_certificates());
        Self {
            inner,
            info: NodeConnectInfo { remote_addr, peer },
        }
    }
}

impl Connected for NodeConn {
    type ConnectInfo = NodeConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for NodeConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections, runs TLS handshakes concurrently (bounded, with a timeout) and hands
/// the established connections to the gRPC server. Ends when the server stops listening.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<Result<NodeConn, std::io::Error>>,
) {
    crate::tls_accept::accept_loop(listener, acceptor, HANDSHAKES, tx, |tls, addr| {
        Ok(NodeConn::new(tls, addr))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalized() {
        assert_eq!(normalize_serial("00AB12"), "ab12");
        assert_eq!(normalize_serial("ab12"), "ab12");
        assert_eq!(normalize_serial("000"), "0");
        assert_eq!(normalize_serial(""), "0");
    }
}
