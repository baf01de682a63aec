//! A test OpenID Connect identity provider: signing keys made for one test, its JWK Set as a file
//! or served over HTTPS, and ID tokens signed with them.
//!
//! ```no_run
//! use std::time::Duration;
//! use signet_tests::idp::TestIdp;
//!
//! let idp = TestIdp::new("https://idp.example.com").unwrap();
//! // For the issuer's config: a [[delegation.identity_providers]] table with jwks_path.
//! let table = idp.provider_toml("signet");
//! let token = idp.id_token("alice", "signet", Duration::from_secs(300), serde_json::json!({
//!     "email": "alice@example.com",
//!     "email_verified": true,
//! }));
//! # let _ = (table, token);
//! ```
//!
//! [`TestIdp::new`] generates an RSA-2048 key (RS256, the default of ID tokens) and a P-256 key
//! (ES256), each with a random `kid`, and writes their public JWK Set to `jwks.json` in a temporary
//! directory ([`TestIdp::jwks_path`]). [`TestIdp::id_token`] signs a valid ID token;
//! [`TestIdp::sign`] signs any header and claims, for tokens that must be refused.
//! [`JwksServer`] serves a JWK Set over HTTPS with a [`TestCa`] certificate (for `jwks_url`), and
//! its document can be replaced while it runs.

// Only tests use it: failing to make a key or to sign must abort the test.
#![allow(clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::pki::TestCa;
use crate::toml_str;

/// One of the two signing keys of a [`TestIdp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    /// The RSA-2048 key, signing RS256.
    Rsa,
    /// The P-256 key, signing ES256.
    Ec,
}

impl TestKey {
    /// The JWS algorithm the key signs with.
    pub fn alg(self) -> &'static str {
        match self {
            TestKey::Rsa => "RS256",
            TestKey::Ec => "ES256",
        }
    }
}

/// A test identity provider (see the module documentation).
pub struct TestIdp {
    issuer: String,
    dir: tempfile::TempDir,
    jwks_path: PathBuf,
    rsa: RsaKeyPair,
    rsa_kid: String,
    ec: EcdsaKeyPair,
    ec_kid: String,
}

impl std::fmt::Debug for TestIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIdp")
            .field("issuer", &self.issuer)
            .field("jwks_path", &self.jwks_path)
            .field("rsa_kid", &self.rsa_kid)
            .field("ec_kid", &self.ec_kid)
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).expect("test IdP: random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Sets the members of `overlay` (a JSON object) in `base`; a `null` member removes the key.
fn merge(base: &mut Map<String, Value>, overlay: Value) {
    if let Value::Object(overlay) = overlay {
        for (k, v) in overlay {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
    }
}

impl TestIdp {
    /// New keys for the identity provider `issuer_url` (the `iss` of its tokens, used as given),
    /// their JWK Set written to [`TestIdp::jwks_path`].
    pub fn new(issuer_url: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("signet-test-idp-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
        let idp = Self {
            issuer: issuer_url.to_owned(),
            jwks_path: dir.path().join("jwks.json"),
            dir,
            rsa,
            rsa_kid: format!("rsa-{}", random_hex()),
            ec,
            ec_kid: format!("ec-{}", random_hex()),
        };
        idp.write_jwks(&idp.jwks())?;
        Ok(idp)
    }

    /// The `iss` of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWK Set file (written by [`TestIdp::new`], replaced by [`TestIdp::write_jwks`]).
    pub fn jwks_path(&self) -> &Path {
        &self.jwks_path
    }

    /// The temporary directory that holds the JWK Set file (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `kid` of one of its keys.
    pub fn kid(&self, key: TestKey) -> &str {
        match key {
            TestKey::Rsa => &self.rsa_kid,
            TestKey::Ec => &self.ec_kid,
        }
    }

    /// The public JWK of one of its keys (`kid`, `use: sig`, `alg`).
    pub fn jwk(&self, key: TestKey) -> Value {
        match key {
            TestKey::Rsa => {
                let pk = PublicKeyComponents::<Vec<u8>>::from(self.rsa.public_key());
                json!({"kty": "RSA", "kid": self.rsa_kid, "use": "sig", "alg": "RS256",
                       "n": b64(&pk.n), "e": b64(&pk.e)})
            }
            TestKey::Ec => {
                // Uncompressed point: 0x04 || x || y.
                let point = self.ec.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.ec_kid, "use": "sig",
                       "alg": "ES256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
        }
    }

    /// Its public JWK Set: both keys.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk(TestKey::Rsa), self.jwk(TestKey::Ec)]})
    }

    /// Replaces the JWK Set file with `jwks` (any JSON, valid or not).
    pub fn write_jwks(&self, jwks: &Value) -> Result<()> {
        std::fs::write(&self.jwks_path, jwks.to_string())
            .with_context(|| format!("cannot write {}", self.jwks_path.display()))
    }

    /// The claims of a valid ID token: `iss`, `sub`, `aud`, `iat` (now) and `exp` (now + `ttl`).
    pub fn claims(&self, sub: &str, aud: &str, ttl: Duration) -> Value {
        let now = unix_now();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        json!({"iss": self.issuer, "sub": sub, "aud": aud, "iat": now,
               "exp": now.saturating_add(ttl)})
    }

    /// A valid ID token for `sub` and `aud`, valid for `ttl` from now, signed RS256; the members
    /// of `extra_claims` (a JSON object, or `null`) are added or replace the standard ones, and a
    /// `null` member removes a claim.
    pub fn id_token(&self, sub: &str, aud: &str, ttl: Duration, extra_claims: Value) -> String {
        let mut claims = match self.claims(sub, aud, ttl) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        merge(&mut claims, extra_claims);
        self.sign(TestKey::Rsa, Value::Null, &Value::Object(claims))
    }

    /// Signs `claims` (any JSON) with `key`. The header is `{"alg": <the key's>, "kid": <the
    /// key's>, "typ": "JWT"}` with the members of `header` (a JSON object, or `null`) set over it;
    /// a `null` member removes a parameter. The signature is always the key's own algorithm, so
    /// a header naming another `alg` makes a token that must be refused.
    pub fn sign(&self, key: TestKey, header: Value, claims: &Value) -> String {
        let mut h = Map::new();
        h.insert("alg".to_owned(), Value::from(key.alg()));
        h.insert("kid".to_owned(), Value::from(self.kid(key)));
        h.insert("typ".to_owned(), Value::from("JWT"));
        merge(&mut h, header);
        let signing_input = format!(
            "{}.{}",
            b64(Value::Object(h).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match key {
            TestKey::Rsa => {
                let mut sig = vec![0u8; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig)
                    .expect("test IdP: RSA signing");
                sig
            }
            TestKey::Ec => self
                .ec
                .sign(&rng, signing_input.as_bytes())
                .expect("test IdP: ECDSA signing")
                .as_ref()
                .to_vec(),
        };
        format!("{signing_input}.{}", b64(&signature))
    }

    /// A `[[delegation.identity_providers]]` table for the issuer's config: this issuer,
    /// `audience`, and `jwks_path` (append it with `IssuerBuilder::raw`).
    pub fn provider_toml(&self, audience: &str) -> String {
        format!(
            "[[delegation.identity_providers]]\nissuer = {}\naudience = {}\njwks_path = {}\n",
            toml_str(&self.issuer),
            toml_str(audience),
            toml_str(&self.jwks_path.display().to_string())
        )
    }
}

/// What a [`JwksServer`] answers and counts.
struct ServerState {
    body: Mutex<Vec<u8>>,
    hits: AtomicUsize,
    stop: AtomicBool,
}

/// A tiny HTTPS server that answers every request with `200` and one JSON document (a JWK Set),
/// with a certificate for `localhost` and `127.0.0.1` issued by a [`TestCa`]. It serves one
/// connection at a time on a thread of its own and stops on drop.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer")
            .field("addr", &self.addr)
            .field("hits", &self.hits())
            .finish_non_exhaustive()
    }
}

impl JwksServer {
    /// Starts serving `body` on a free port of 127.0.0.1.
    pub fn start(ca: &TestCa, body: impl Into<Vec<u8>>) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (chain_pem, key_pem, _) = ca.server();
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("test server certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("test server key")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("TLS server configuration")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState {
            body: Mutex::new(body.into()),
            hits: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let state = state.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if state.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        // A failed exchange only fails the client's request.
                        let _ = serve_one(&config, &state, stream);
                    }
                }
            })
        };
        Ok(Self {
            addr,
            state,
            thread: Some(thread),
        })
    }

    /// `https://127.0.0.1:<port>/jwks.json`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/jwks.json", self.addr.port())
    }

    /// Replaces the document served from now on (anything, JSON or garbage).
    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        if let Ok(mut b) = self.state.body.lock() {
            *b = body.into();
        }
    }

    /// How many requests it has answered.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    config: &Arc<rustls::ServerConfig>,
    state: &ServerState,
    mut tcp: TcpStream,
) -> Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = rustls::ServerConnection::new(config.clone())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf)?;
        if n == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let body = state
        .body
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(&body)?;
    tls.flush()?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    Ok(())
}
