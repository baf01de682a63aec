//! The HTTPS client of the federation pollers: one `GET` over TLS (rustls, aws-lc-rs) with the
//! verifier of the relationship's profile, HTTP/1.1 by hyper, a size limit and a deadline.
//!
//! [`https_get`] and [`web_client_config`] are the crate's one HTTPS client: the identity
//! providers' JWKS fetches ([`crate::idp`]) use them too.

use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, OtherError};
use signet_spiffe::TrustDomain;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::tls::{Authorizer, BundleAuthenticator, SpiffeCertVerifier};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{EndpointUrl, POLL_TIMEOUT, PollError, Profile, Relationship, parse_roots};

/// Largest bundle document accepted (1 MiB).
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Where the system's PEM roots are looked for when `SSL_CERT_FILE` is not set (Debian/Ubuntu,
/// Fedora/RHEL, openSUSE, Alpine and others).
const SYSTEM_ROOT_FILES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// The system's PEM roots: the file named by `SSL_CERT_FILE`, or the first of the usual
/// distribution files that exists.
pub fn system_roots_pem() -> Result<String, String> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        return std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the system roots from SSL_CERT_FILE={}: {e}",
                std::path::Path::new(&path).display()
            )
        });
    }
    for path in SYSTEM_ROOT_FILES {
        if let Ok(pem) = std::fs::read_to_string(path) {
            return Ok(pem);
        }
    }
    Err(format!(
        "no system CA roots found (looked at SSL_CERT_FILE and {})",
        SYSTEM_ROOT_FILES.join(", ")
    ))
}

/// The trust domain named by a SPIFFE URI SAN of `der` when it is not `td` (`None` when the
/// certificate names `td` or no SPIFFE ID at all, e.g. an upstream root).
pub(super) fn foreign_trust_domain(der: &[u8], td: &TrustDomain) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix("spiffe://")
        {
            let host = rest.split('/').next().unwrap_or_default();
            if host != td.name() {
                return Some(host.to_owned());
            }
        }
    }
    None
}

fn client_builder() -> Result<
    (
        rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
        Arc<rustls::crypto::CryptoProvider>,
    ),
    PollError,
> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PollError::Roots(format!("TLS configuration: {e}")))?;
    Ok((builder, provider))
}

/// The TLS client configuration of ordinary web PKI (HTTP/1.1): the server's certificate must
/// chain to `roots` and name the URL's host.
pub(crate) fn web_client_config(
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, PollError> {
    let (builder, _) = client_builder()?;
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The TLS client configuration of a relationship's profile. `current` is the stored bundle of the
/// relationship's trust domain (required for `https_spiffe`).
fn client_config(
    rel: &Relationship,
    current: Option<&Bundle>,
) -> Result<rustls::ClientConfig, PollError> {
    let mut cfg = match &rel.profile {
        Profile::HttpsWeb { ca_bundle_pem } => {
            let pem = match ca_bundle_pem {
                Some(p) => p.clone(),
                None => system_roots_pem().map_err(|e| {
                    PollError::Roots(format!(
                        "{e}: configure a CA bundle for this https_web relationship"
                    ))
                })?,
            };
            web_client_config(parse_roots(&pem).map_err(|e| PollError::Roots(e.to_string()))?)?
        }
        Profile::HttpsSpiffe { endpoint_spiffe_id } => {
            let (builder, provider) = client_builder()?;
            let bundle = current
                .filter(|b| !b.x509_authorities.is_empty())
                .ok_or_else(|| PollError::NoBundle(rel.trust_domain.name().to_owned()))?;
            // The endpoint's chain must be an X509-SVID of exactly `endpoint_spiffe_id`,
            // verified with the last known bundle of its trust domain.
            let authenticator = BundleAuthenticator {
                bundle: bundle.clone(),
                authorizer: Authorizer::Exact(endpoint_spiffe_id.clone()),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SpiffeCertVerifier::new(
                    authenticator,
                    provider,
                )))
                .with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The message of a handshake error, without the `Debug` wrapping rustls puts around a custom
/// verifier's refusal.
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => {
            format!("invalid peer certificate: {inner}")
        }
        _ => e.to_string(),
    }
}

/// `GET`s the bundle document of `rel` (within [`POLL_TIMEOUT`]) and returns the body.
pub(super) async fn fetch(
    rel: &Relationship,
    current: Option<&Bundle>,
) -> Result<Vec<u8>, PollError> {
    let cfg = client_config(rel, current)?;
    https_get(&rel.url, Arc::new(cfg)).await
}

/// `GET`s `url` over TLS with `cfg` (HTTP/1.1, `Accept: application/json`) within
/// [`POLL_TIMEOUT`] and returns the body of a `200` answer, at most [`MAX_BUNDLE_BYTES`].
pub(crate) async fn https_get(
    url: &EndpointUrl,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, PollError> {
    tokio::time::timeout(POLL_TIMEOUT, get(url, cfg))
        .await
        .map_err(|_| PollError::Timeout(POLL_TIMEOUT.as_secs()))?
}

async fn get(url: &EndpointUrl, cfg: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, PollError> {
    let addr = if url.host().contains(':') {
        format!("[{}]:{}", url.host(), url.port())
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let tcp = TcpStream::connect((url.host(), url.port()))
        .await
        .map_err(|e| PollError::Connect {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(url.host().to_owned()).map_err(|e| PollError::Tls {
        addr: addr.clone(),
        reason: format!("server name: {e}"),
    })?;
    let tls = TlsConnector::from(cfg)
        .connect(server_name, tcp)
        .await
        .map_err(|e| PollError::Tls {
            addr: addr.clone(),
            reason: tls_reason(&e),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| PollError::Http(e.to_string()))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "bundle endpoint connection ended with an error");
        }
    }));
    let host_header = if url.port() == 443 {
        url.host().to_owned()
    } else {
        addr.clone()
    };
    let request = hyper::Request::get(url.path_and_query())
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("signet-issuer/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| PollError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| PollError::Http(e.to_string()))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        return Err(PollError::Status(status.as_u16()));
    }
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                PollError::TooLarge
            } else {
                PollError::Http(e.to_string())
            }
        })?
        .to_bytes();
    Ok(body.to_vec())
}
