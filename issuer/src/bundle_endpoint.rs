//! The SPIFFE bundle endpoint and OIDC discovery: one HTTPS listener (`[bundle_endpoint]`,
//! HTTP/1.1 over rustls with aws-lc-rs) serving
//!
//! - `GET /`: the own trust bundle (SPIFFE bundle JSON: X.509, JWT and WIT authorities,
//!   `spiffe_sequence`, `spiffe_refresh_hint`), `Content-Type: application/json`;
//! - `GET /.well-known/openid-configuration`: the OIDC discovery document, when `jwt_issuer` is
//!   configured (404 otherwise);
//! - `GET /keys`: its `jwks_uri`, the JWT authorities only, as a plain JWK Set (never a WIT
//!   authority: an OIDC relying party must not accept a WIT-SVID as an ID token).
//!
//! The bundle is built by [`CaSync::own_bundle`] at each request, so a CA (or JWT key) rotation
//! is served at once. TLS follows the profile: `https_spiffe` serves the issuer's own X509-SVID
//! (`spiffe://<td>/signet/issuer`), minted by the CA and renewed at half-life without a restart;
//! `https_web` serves a certificate and key read from files, reloaded when either file changes
//! (checked every [`RELOAD_CHECK_INTERVAL`]) or at once on `SIGHUP`; a reload that fails keeps
//! the previous certificate and logs the error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{Map, Value};
use signet_spiffe::bundle::JwtAuthority;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ca_sync::CaSync;
use crate::config::{BundleEndpointSettings, EndpointTlsSettings};
use crate::node::tls::{SvidResolver, mint_issuer_svid, renew_loop};
use crate::state::Issuer;
use crate::tls_accept::{Handshakes, accept_loop};

/// How often the `https_web` certificate and key files are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// TLS handshakes: 128 at once at most, 10 s each.
const HANDSHAKES: Handshakes = Handshakes {
    listener: "bundle endpoint",
    max_concurrent: 128,
    timeout: Duration::from_secs(10),
};
/// Path of the JWKS (`jwks_uri` is `<jwt_issuer>/keys`).
pub const JWKS_PATH: &str = "/keys";
/// Path of the OIDC discovery document.
pub const OIDC_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Why the bundle endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A certificate or key file could not be read.
    #[error("{key} {path}: {reason}")]
    File {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not form a usable pair.
    #[error("bundle_endpoint certificate and key: {0}")]
    KeyPair(String),
    /// The issuer SVID could not be minted.
    #[error("bundle endpoint SVID: {0}")]
    Svid(#[from] crate::node::tls::TlsSetupError),
    /// rustls refused the configuration.
    #[error("bundle endpoint TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server failed.
    #[error("bundle endpoint server: {0}")]
    Io(#[from] std::io::Error),
}

fn file_err(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> EndpointError {
    EndpointError::File {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Loads a PEM certificate chain and private key into a rustls [`CertifiedKey`], checking that
/// the key matches the leaf.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, EndpointError> {
    const CERT_KEY: &str = "bundle_endpoint.certificate_path";
    const KEY_KEY: &str = "bundle_endpoint.private_key_path";
    let cert_pem = std::fs::read(cert_path).map_err(|e| file_err(CERT_KEY, cert_path, e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(CERT_KEY, cert_path, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(
            CERT_KEY,
            cert_path,
            "contains no CERTIFICATE block",
        ));
    }
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(key_path).map_err(|e| file_err(KEY_KEY, key_path, e))?,
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        file_err(
            KEY_KEY,
            key_path,
            format!("no usable PEM private key (PKCS#8, SEC1 or PKCS#1): {e}"),
        )
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_err(KEY_KEY, key_path, e))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        EndpointError::KeyPair(format!("the key does not match the certificate: {e}"))
    })?;
    Ok(certified)
}

/// Serves the `https_web` certificate, swapped in place on reload.
#[derive(Debug)]
pub struct FileCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    stamp: std::sync::Mutex<Option<FileStamp>>,
}

/// What a change of the files is detected by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    cert: (Option<SystemTime>, u64),
    key: (Option<SystemTime>, u64),
}

impl FileStamp {
    /// The stamp of the certificate and key files now.
    fn of(cert_path: &Path, key_path: &Path) -> Self {
        let stamp_of = |path: &Path| match std::fs::metadata(path) {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(_) => (None, 0),
        };
        Self {
            cert: stamp_of(cert_path),
            key: stamp_of(key_path),
        }
    }
}

impl FileCertResolver {
    /// Loads the certificate and key (an error stops start-up).
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, EndpointError> {
        let stamp = FileStamp::of(cert_path, key_path);
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: ArcSwap::from_pointee(key),
            stamp: std::sync::Mutex::new(Some(stamp)),
        })
    }

    /// Reloads the files; on failure the current certificate stays in use.
    pub fn reload(&self) -> Result<(), EndpointError> {
        let stamp = FileStamp::of(&self.cert_path, &self.key_path);
        let key = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        self.current.store(Arc::new(key));
        *self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stamp);
        Ok(())
    }

    /// Whether either file changed since the last (attempted) load.
    fn changed(&self) -> bool {
        let now = FileStamp::of(&self.cert_path, &self.key_path);
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_ref() == Some(&now) {
            false
        } else {
            // Remember the new stamp even if the reload fails, so that a broken file is reported
            // once, not every interval.
            *last = Some(now);
            true
        }
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                reason = why,
                certificate = %self.cert_path.display(),
                "bundle endpoint certificate reloaded"
            ),
            Err(e) => tracing::error!(
                reason = why,
                error = %e,
                "cannot reload the bundle endpoint certificate; keeping the previous one"
            ),
        }
    }

    /// Reloads on SIGHUP and when the files change, forever (the caller aborts the task).
    pub async fn watch(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; the bundle endpoint certificate is reloaded when its files change");
                None
            }
        };
        let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signalled = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = h.recv() => true,
                    _ = tick.tick() => false,
                },
                None => {
                    tick.tick().await;
                    false
                }
            };
            if signalled {
                // Re-read the stamp so that the next check does not reload again.
                let _ = self.changed();
                self.reload_and_log("SIGHUP");
            } else if self.changed() {
                self.reload_and_log("files changed");
            }
        }
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What the handlers need.
struct EndpointState {
    ca_sync: Arc<CaSync>,
    jwt_issuer: Option<String>,
}

/// The bundle endpoint, ready to serve.
pub struct BundleEndpoint {
    state: Arc<EndpointState>,
    tls: Arc<rustls::ServerConfig>,
    /// Background tasks (certificate renewal or reload), aborted with the endpoint.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for BundleEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEndpoint")
            .field("jwt_issuer", &self.state.jwt_issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for BundleEndpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl BundleEndpoint {
    /// Prepares the TLS identity of the profile (loads the `https_web` files, or mints the issuer
    /// SVID) and starts its renewal or reload task. Must run inside a Tokio runtime.
    pub fn new(
        issuer: Arc<Issuer>,
        ca_sync: Arc<CaSync>,
        settings: &BundleEndpointSettings,
        jwt_issuer: Option<String>,
    ) -> Result<Self, EndpointError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tasks = Vec::new();
        let resolver: Arc<dyn ResolvesServerCert> = match &settings.tls {
            EndpointTlsSettings::HttpsSpiffe => {
                let svid = mint_issuer_svid(&issuer, &provider, SystemTime::now())?;
                let resolver = Arc::new(SvidResolver::new(svid));
                tasks.push(tokio::spawn(renew_loop(
                    issuer.clone(),
                    resolver.clone(),
                    provider.clone(),
                )));
                resolver
            }
            EndpointTlsSettings::HttpsWeb {
                certificate_path,
                private_key_path,
            } => {
                let resolver = Arc::new(FileCertResolver::load(
                    certificate_path,
                    private_key_path,
                    provider.clone(),
                )?);
                tasks.push(tokio::spawn(resolver.clone().watch()));
                resolver
            }
        };
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            state: Arc::new(EndpointState {
                ca_sync,
                jwt_issuer,
            }),
            tls: Arc::new(tls),
            tasks,
        })
    }

    /// The HTTP routes (without TLS), for tests and embedding.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves HTTPS on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EndpointError> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let accept = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(self.tls.clone()),
            HANDSHAKES,
            tx,
            |tls, addr| (tls, addr),
        ));
        let result = axum::serve(TlsListener { rx, local }, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        accept.abort();
        result.map_err(EndpointError::Io)
    }
}

/// The established TLS connections, as an axum listener.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop is gone (only at shutdown): never yield another connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn router(state: Arc<EndpointState>) -> Router {
    Router::new()
        .route("/", get(bundle))
        .route(OIDC_DISCOVERY_PATH, get(discovery))
        .route(JWKS_PATH, get(jwks))
        .route(DELEGATION_KEYS_PATH, get(delegation_keys))
        .route(DELEGATION_REVOCATIONS_PATH, get(delegation_revocations))
        .route(
            crate::delegation::exchange::TOKEN_PATH,
            axum::routing::post(token_exchange),
        )
        .with_state(state)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "error": message }).to_string() + "\n",
    )
}

/// The published delegation keys (`signet_delegation::DelegationKeys` JSON), 404 when delegation
/// is off.
pub const DELEGATION_KEYS_PATH: &str = "/delegation/keys";
/// The delegation revocation list (`signet_delegation::RevocationList` JSON).
pub const DELEGATION_REVOCATIONS_PATH: &str = "/delegation/revocations";

async fn delegation_keys(State(state): State<Arc<EndpointState>>) -> Response {
    match &state.ca_sync.issuer().delegation {
        Some(d) => json_response(StatusCode::OK, d.published_keys().to_json() + "\n"),
        None => error_response(StatusCode::NOT_FOUND, "delegation is not configured"),
    }
}

async fn delegation_revocations(State(state): State<Arc<EndpointState>>) -> Response {
    match &state.ca_sync.issuer().delegation {
        Some(d) => json_response(StatusCode::OK, d.revocations().to_json() + "\n"),
        None => error_response(StatusCode::NOT_FOUND, "delegation is not configured"),
    }
}

async fn token_exchange(
    State(state): State<Arc<EndpointState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    crate::delegation::exchange::exchange(state.ca_sync.issuer(), &headers, &body).await
}

async fn bundle(State(state): State<Arc<EndpointState>>) -> Response {
    match state.ca_sync.own_bundle().to_json() {
        Ok(doc) => json_response(StatusCode::OK, doc + "\n"),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the own trust bundle");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the trust bundle",
            )
        }
    }
}

/// The JOSE algorithm of a public JWK: its `alg`, or the one its key type implies (EC P-256:
/// ES256, P-384: ES384, P-521: ES512, RSA: RS256).
pub fn jwk_algorithm(jwk: &Value) -> Option<String> {
    if let Some(alg) = jwk.get("alg").and_then(Value::as_str) {
        return Some(alg.to_owned());
    }
    match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("EC"), Some("P-256")) => Some("ES256".into()),
        (Some("EC"), Some("P-384")) => Some("ES384".into()),
        (Some("EC"), Some("P-521")) => Some("ES512".into()),
        (Some("RSA"), _) => Some("RS256".into()),
        _ => None,
    }
}

/// The JWT authorities as a plain JWK Set for OIDC clients: each key keeps its parameters and
/// `kid`, with `use: "sig"` and its `alg`.
pub fn oidc_jwks(authorities: &[JwtAuthority]) -> Value {
    let keys: Vec<Value> = authorities
        .iter()
        .map(|a| {
            let mut jwk = match &a.jwk {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            jwk.insert("kid".into(), Value::String(a.key_id.clone()));
            jwk.insert("use".into(), Value::String("sig".into()));
            if let Some(alg) = jwk_algorithm(&Value::Object(jwk.clone())) {
                jwk.insert("alg".into(), Value::String(alg));
            }
            Value::Object(jwk)
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

/// The OIDC discovery document of `issuer` for these JWT authorities.
pub fn discovery_document(issuer: &str, authorities: &[JwtAuthority]) -> Value {
    let mut algs: Vec<String> = authorities
        .iter()
        .filter_map(|a| jwk_algorithm(&a.jwk))
        .collect();
    algs.sort();
    algs.dedup();
    if algs.is_empty() {
        // No key yet: announce the default JWT-SVID algorithm.
        algs.push("ES256".into());
    }
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
    })
}

/// An OIDC document made by `document` from `jwt_issuer` and the current JWT authorities, or
/// 404 when `jwt_issuer` is not configured.
fn oidc_response(
    state: &EndpointState,
    document: impl FnOnce(&str, &[JwtAuthority]) -> Value,
) -> Response {
    let Some(issuer) = &state.jwt_issuer else {
        return error_response(
            StatusCode::NOT_FOUND,
            "OIDC discovery is not enabled (set jwt_issuer)",
        );
    };
    let bundle = state.ca_sync.own_bundle();
    json_response(
        StatusCode::OK,
        document(issuer, &bundle.jwt_authorities).to_string() + "\n",
    )
}

async fn discovery(State(state): State<Arc<EndpointState>>) -> Response {
    oidc_response(&state, discovery_document)
}

async fn jwks(State(state): State<Arc<EndpointState>>) -> Response {
    oidc_response(&state, |_, authorities| oidc_jwks(authorities))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(kid: &str, jwk: Value) -> JwtAuthority {
        JwtAuthority {
            key_id: kid.into(),
            jwk,
        }
    }

    #[test]
    fn algorithms_follow_the_key_type() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"});
        assert_eq!(jwk_algorithm(&ec).as_deref(), Some("ES256"));
        let p384 = serde_json::json!({"kty": "EC", "crv": "P-384"});
        assert_eq!(jwk_algorithm(&p384).as_deref(), Some("ES384"));
        let rsa = serde_json::json!({"kty": "RSA", "n": "x", "e": "AQAB"});
        assert_eq!(jwk_algorithm(&rsa).as_deref(), Some("RS256"));
        let explicit = serde_json::json!({"kty": "RSA", "alg": "PS256"});
        assert_eq!(jwk_algorithm(&explicit).as_deref(), Some("PS256"));
        assert_eq!(jwk_algorithm(&serde_json::json!({"kty": "oct"})), None);
    }

    #[test]
    fn discovery_document_has_the_oidc_shape() {
        let doc = discovery_document("https://oidc.example.org", &[]);
        assert_eq!(
            doc,
            serde_json::json!({
                "issuer": "https://oidc.example.org",
                "jwks_uri": "https://oidc.example.org/keys",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
        );
        let keys = [
            authority("a", serde_json::json!({"kty": "EC", "crv": "P-384"})),
            authority(
                "b",
                serde_json::json!({"kty": "RSA", "n": "x", "e": "AQAB"}),
            ),
            authority("c", serde_json::json!({"kty": "EC", "crv": "P-384"})),
        ];
        let doc = discovery_document("https://i", &keys);
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            serde_json::json!(["ES384", "RS256"])
        );
    }

    #[test]
    fn oidc_jwks_marks_keys_for_signatures() {
        let jwks = oidc_jwks(&[authority(
            "k1",
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "use": "jwt-svid"}),
        )]);
        assert_eq!(
            jwks,
            serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "use": "sig", "kid": "k1", "alg": "ES256"}]})
        );
        assert_eq!(oidc_jwks(&[]), serde_json::json!({"keys": []}));
    }

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let c = dir.join(format!("{name}.pem"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().to_vec())
    }

    #[test]
    fn web_certificates_load_reload_and_refuse_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (c1, k1, der1) = write_pair(dir.path(), "one");
        let resolver = FileCertResolver::load(&c1, &k1, provider.clone()).unwrap();
        assert_eq!(resolver.current.load().cert[0].as_ref(), der1.as_slice());
        assert!(!resolver.changed());

        // A broken replacement is refused and the loaded certificate stays.
        std::fs::write(&c1, "garbage").unwrap();
        let e = resolver.reload().unwrap_err().to_string();
        assert!(e.contains("contains no CERTIFICATE block"), "{e}");
        assert_eq!(resolver.current.load().cert[0].as_ref(), der1.as_slice());

        // A key of another certificate is refused.
        let (c2, k2, der2) = write_pair(dir.path(), "two");
        std::fs::copy(&c2, &c1).unwrap();
        let e = resolver.reload().unwrap_err().to_string();
        assert!(e.contains("the key does not match the certificate"), "{e}");

        // The matching pair is taken.
        std::fs::copy(&k2, &k1).unwrap();
        resolver.reload().unwrap();
        assert_eq!(resolver.current.load().cert[0].as_ref(), der2.as_slice());

        let e = FileCertResolver::load(&dir.path().join("missing.pem"), &k1, provider.clone())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bundle_endpoint.certificate_path"), "{e}");
        std::fs::write(
            &k2,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = FileCertResolver::load(&c2, &k2, provider)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bundle_endpoint.private_key_path"), "{e}");
    }
}
