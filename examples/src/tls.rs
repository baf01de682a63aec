//! Mutual TLS with X509-SVIDs: rustls configurations whose peers are authenticated by SPIFFE ID
//! ([`signet_spiffe::tls::SpiffeCertVerifier`]), not by DNS name.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use signet_spiffe::tls::{
    Authorizer, BundleAuthenticator, PeerAuthenticator, SpiffeCertVerifier, authenticate_peer,
};
use signet_spiffe::{SpiffeId, TrustDomain};
use spiffe::{X509Source, X509Svid};

use crate::workload::{Identity, bundle_of};

/// The crypto provider: aws-lc-rs, as everywhere in Signet.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client presenting `identity` and accepting only a server whose X509-SVID, verified against
/// the bundle of `identity`'s trust domain, is `server`.
pub fn client_config(identity: &Identity, server: SpiffeId) -> Result<ClientConfig> {
    let provider = provider();
    let verifier = SpiffeCertVerifier::new(
        BundleAuthenticator {
            bundle: identity.bundle.clone(),
            authorizer: Authorizer::Exact(server),
        },
        provider.clone(),
    );
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.cert_chain(), identity.private_key())
        .context("the X509-SVID is not usable as a TLS client certificate")
}

/// A server presenting the current X509-SVID of `source` and **requiring** a client X509-SVID
/// of `trust_domain`, verified against that trust domain's current bundle from `source`. Both
/// are read at each handshake, so a rotation by the agent needs no restart.
pub fn server_config(source: X509Source, trust_domain: TrustDomain) -> Result<ServerConfig> {
    let provider = provider();
    let verifier = SpiffeCertVerifier::new(
        SourceAuthenticator {
            source: source.clone(),
            authorizer: Authorizer::MemberOf(trust_domain.clone()),
            trust_domain,
        },
        provider.clone(),
    )
    .require_client_cert();
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SourceCert {
            source,
            provider,
            current: Mutex::new(None),
        }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Authenticates clients against the current bundle of an [`X509Source`].
#[derive(Debug)]
struct SourceAuthenticator {
    source: X509Source,
    trust_domain: TrustDomain,
    authorizer: Authorizer,
}

impl PeerAuthenticator for SourceAuthenticator {
    type Error = String;

    fn authenticate(&self, chain_der: &[Vec<u8>], now: SystemTime) -> Result<SpiffeId, String> {
        let bundles = self.source.bundle_set().map_err(|e| e.to_string())?;
        let bundle = bundle_of(&bundles, &self.trust_domain).map_err(|e| e.to_string())?;
        authenticate_peer(chain_der, &bundle, now, &self.authorizer).map_err(|e| e.to_string())
    }
}

/// The server certificate: the source's current SVID (the rustls key is made once per SVID).
#[derive(Debug)]
struct SourceCert {
    source: X509Source,
    provider: Arc<CryptoProvider>,
    current: Mutex<Option<(Arc<X509Svid>, Arc<CertifiedKey>)>>,
}

impl ResolvesServerCert for SourceCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let svid = self.source.svid().ok()?;
        let mut current = self.current.lock().ok()?;
        if let Some((s, k)) = current.as_ref()
            && Arc::ptr_eq(s, &svid)
        {
            return Some(k.clone());
        }
        let bundles = self.source.bundle_set().ok()?;
        let identity = Identity::from_svid(&svid, &bundles).ok()?;
        let key = Arc::new(
            CertifiedKey::from_der(
                identity.cert_chain(),
                identity.private_key(),
                &self.provider,
            )
            .ok()?,
        );
        *current = Some((svid, key.clone()));
        Some(key)
    }
}
