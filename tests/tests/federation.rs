//! Bundle endpoint, OIDC discovery and SPIFFE federation between real `signet-issuer` processes.
//!
//! Two issuers of different trust domains federate both ways over `https_spiffe` (one through the
//! CLI, one through its config file), see each other's CA rotation, and refuse an endpoint that
//! presents the wrong SPIFFE ID. An `https_web` endpoint is served with a test CA (and reloaded
//! on SIGHUP). A fake endpoint run by the test serves garbage, a bundle of another trust domain,
//! an older `spiffe_sequence`, an HTTP error and nothing at all: each poll fails with a clear error
//! shown by `federation show`, and the last good bundle is kept.

// Integration tests: helpers may panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use signet_spiffe::tls::{Authorizer, BundleAuthenticator, SpiffeCertVerifier};
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};
use signet_tests::pki::TestCa;
use signet_tests::{Issuer, IssuerBuilder, toml_str};

const WAIT: Duration = Duration::from_secs(60);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An issuer of `td` with an `https_spiffe` bundle endpoint on a free port and a 1 s refresh
/// hint, after `f` adjusted the config.
fn start(td: &str, f: impl FnOnce(IssuerBuilder) -> IssuerBuilder) -> Issuer {
    f(IssuerBuilder::new()
        .set_str("trust_domain", td)
        .set_str("bundle_endpoint.bind_address", "127.0.0.1:0")
        .set_str("bundle_endpoint.profile", "https_spiffe")
        .set_str("bundle_endpoint.refresh_hint", "1s"))
    .start()
    .unwrap()
}

/// The bundle endpoint address from the `issuer ready` log line.
fn endpoint_addr(issuer: &Issuer) -> SocketAddr {
    let ready = issuer.wait_for_log("issuer ready", |_| true, WAIT).unwrap();
    ready["bundle_endpoint"]
        .as_str()
        .expect("bundle_endpoint in the ready line")
        .parse()
        .unwrap()
}

fn endpoint_url(issuer: &Issuer) -> String {
    format!("https://{}/", endpoint_addr(issuer))
}

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// `bundle show --format spiffe` of `issuer` written to a file in `dir`.
fn own_bundle_file(issuer: &Issuer, dir: &Path, name: &str) -> PathBuf {
    let doc = issuer
        .cli_ok(&["bundle", "show", "--format", "spiffe"])
        .unwrap();
    write(dir, name, &doc)
}

fn own_bundle(issuer: &Issuer, td: &str) -> Bundle {
    let doc = issuer
        .cli_ok(&["bundle", "show", "--format", "spiffe"])
        .unwrap();
    Bundle::from_json(&TrustDomain::new(td).unwrap(), doc.as_bytes()).unwrap()
}

/// The `bundle list --output json` row of `td`.
fn listed_bundle(issuer: &Issuer, td: &str) -> Option<Value> {
    let list = issuer
        .cli_json(&["bundle", "list", "--output", "json"])
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["trust_domain"] == td)
        .cloned()
}

fn show(issuer: &Issuer, td: &str) -> Value {
    issuer
        .cli_json(&[
            "federation",
            "show",
            "--trust-domain",
            td,
            "--output",
            "json",
        ])
        .unwrap()
}

fn refresh(issuer: &Issuer, td: &str) -> signet_tests::CliOutput {
    issuer
        .cli(&["federation", "refresh", "--trust-domain", td])
        .unwrap()
}

/// The `spiffe_sequence` the issuer publishes for its own bundle.
fn bundle_sequence(issuer: &Issuer) -> u64 {
    let list = issuer
        .cli_json(&["bundle", "list", "--output", "json"])
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["own"] == true)
        .unwrap()["sequence"]
        .as_u64()
        .unwrap()
}

// ---- a minimal HTTPS client -------------------------------------------------------------------

struct HttpsResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// The server's certificate chain (leaf first).
    peer: Vec<Vec<u8>>,
}

impl HttpsResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

fn https_get(addr: SocketAddr, path: &str, cfg: rustls::ClientConfig) -> HttpsResponse {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    if let Err(e) = tls.read_to_end(&mut raw) {
        // A server that closes without close_notify: what was read is complete.
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    let peer = tls
        .conn
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpsResponse {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
        peer,
    }
}

/// A client that accepts a server whose X509-SVID has exactly `id`, verified with `bundle`.
fn svid_client(bundle: Bundle, id: &str) -> rustls::ClientConfig {
    let authenticator = BundleAuthenticator {
        bundle,
        authorizer: Authorizer::Exact(SpiffeId::parse(id).unwrap()),
    };
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeCertVerifier::new(
            authenticator,
            provider(),
        )))
        .with_no_client_auth()
}

fn web_client(ca_der: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

// ---- test PKI ---------------------------------------------------------------------------------

/// A self-signed CA certificate naming `spiffe://<td>` (a stand-in SPIFFE CA).
fn spiffe_ca(td: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{td}").try_into().unwrap(),
    )];
    params.self_signed(&key).unwrap().der().to_vec()
}

fn bundle_doc(td: &str, certs: Vec<Vec<u8>>, sequence: u64) -> String {
    let mut bundle = Bundle::new(TrustDomain::new(td).unwrap());
    bundle.x509_authorities = certs;
    bundle.sequence = sequence;
    bundle.refresh_hint = Some(3600);
    bundle.to_json().unwrap()
}

// ---- a fake bundle endpoint -------------------------------------------------------------------

#[derive(Clone)]
enum Reply {
    Ok(String),
    Status(u16),
    /// Accept, read the request, then say nothing for this long.
    Hang(Duration),
}

/// An HTTPS server (web PKI, test CA) that answers every request with the current [`Reply`].
struct FakeEndpoint {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
}

impl FakeEndpoint {
    fn start(ca: &TestCa) -> Self {
        let (chain_pem, key_pem, _) = ca.server();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(Reply::Status(503)));
        let shared = reply.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let cfg = cfg.clone();
                let reply = shared.lock().unwrap().clone();
                std::thread::spawn(move || serve_one(tcp, cfg, reply));
            }
        });
        Self { addr, reply }
    }

    fn set(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/bundle", self.addr.port())
    }
}

fn serve_one(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>, reply: Reply) {
    let _ = tcp.set_read_timeout(Some(WAIT));
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut reader = BufReader::new(&mut tls);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let (status, body) = match reply {
        Reply::Ok(body) => (200, body),
        Reply::Status(s) => (s, "{\"error\":\"nope\"}".to_owned()),
        Reply::Hang(d) => {
            std::thread::sleep(d);
            return;
        }
    };
    let _ = write!(
        tls,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

// ---- tests -------------------------------------------------------------------------------------

#[test]
fn bundle_endpoint_serves_the_own_bundle_and_oidc_discovery() {
    let issuer = start("example.org", |b| {
        b.set_str("jwt_issuer", "https://oidc.example.org/")
    });
    let addr = endpoint_addr(&issuer);
    let own = own_bundle(&issuer, "example.org");
    let client = || svid_client(own.clone(), "spiffe://example.org/signet/issuer");

    let r = https_get(addr, "/", client());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served =
        Bundle::from_json(&TrustDomain::new("example.org").unwrap(), r.body.as_bytes()).unwrap();
    assert_eq!(served.x509_authorities, own.x509_authorities);
    assert_eq!(served.sequence, bundle_sequence(&issuer));
    assert_eq!(served.refresh_hint, Some(1));
    let doc = r.json();
    assert!(doc["spiffe_sequence"].is_u64(), "{doc}");
    assert_eq!(doc["spiffe_refresh_hint"], 1);
    // The server presented the issuer's own X509-SVID (the client verified it).
    assert_eq!(
        signet_spiffe::svid::spiffe_id_from_cert(&r.peer[0])
            .unwrap()
            .to_string(),
        "spiffe://example.org/signet/issuer"
    );

    let r = https_get(addr, "/.well-known/openid-configuration", client());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let d = r.json();
    assert_eq!(d["issuer"], "https://oidc.example.org");
    assert_eq!(d["jwks_uri"], "https://oidc.example.org/keys");
    assert_eq!(
        d["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(d["subject_types_supported"], serde_json::json!(["public"]));
    let algs = d["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(!algs.is_empty(), "{d}");

    // jwks_uri: JWT authorities only, never the X.509 ones.
    let r = https_get(addr, "/keys", client());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert!(!keys.is_empty());
    assert_eq!(keys.len(), own.jwt_authorities.len());
    for k in &keys {
        assert!(k.get("x5c").is_none(), "{k}");
        assert_eq!(k["use"], "sig");
        assert!(
            own.jwt_authorities
                .iter()
                .any(|a| a.key_id == k["kid"].as_str().unwrap()),
            "{k}"
        );
        assert!(algs.contains(&k["alg"]), "{k} {d}");
    }
    // The bundle served at / carries the same JWT authorities, and WIT authorities that /keys
    // never shows (an OIDC relying party must not learn WIT-SVID keys).
    assert_eq!(served.jwt_authorities.len(), keys.len());
    assert!(!served.wit_authorities.is_empty());
    for w in &served.wit_authorities {
        assert!(
            keys.iter()
                .all(|k| k["kid"].as_str() != Some(w.key_id.as_str())),
            "{w:?}"
        );
    }

    let r = https_get(addr, "/nothing-here", client());
    assert_eq!(r.status, 404);

    // A client that expects another SPIFFE ID refuses the endpoint.
    let tcp = TcpStream::connect(addr).unwrap();
    let cfg = svid_client(own.clone(), "spiffe://example.org/someone-else");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("x").unwrap()).unwrap();
    let mut tcp = tcp;
    let err = conn.complete_io(&mut tcp).unwrap_err().to_string();
    assert!(err.contains("is not authorized"), "{err}");
}

#[test]
fn two_issuers_federate_both_ways_over_https_spiffe() {
    let a = start("a.test", |b| b);
    let work = tempfile::tempdir().unwrap();
    let a_bundle = own_bundle_file(&a, work.path(), "a.json");
    // B learns A from its config file.
    let b = start("b.test", |b| {
        b.raw(&format!(
            "[[federation]]\ntrust_domain = \"a.test\"\nbundle_endpoint_url = {}\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://a.test/signet/issuer\"\nbundle_path = {}\n",
            toml_str(&endpoint_url(&a)),
            toml_str(&a_bundle.display().to_string())
        ))
    });
    // A learns B through the CLI, with B's bundle as bootstrap.
    let b_bundle = own_bundle_file(&b, work.path(), "b.json");
    let created = a
        .cli_json(&[
            "federation",
            "create",
            "--trust-domain",
            "b.test",
            "--bundle-endpoint-url",
            &endpoint_url(&b),
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            "spiffe://b.test/signet/issuer",
            "--bundle",
            b_bundle.to_str().unwrap(),
            "--output",
            "json",
        ])
        .unwrap();
    assert_eq!(created["source"], "api");
    assert_eq!(created["profile"], "https_spiffe");

    // Each ends up with the other's bundle, polled over https_spiffe.
    let out = refresh(&a, "b.test").ok().unwrap();
    assert!(out.starts_with("Bundle of b.test"), "{out}");
    let out = refresh(&b, "a.test").ok().unwrap();
    assert!(out.starts_with("Bundle of a.test"), "{out}");
    for (issuer, other, seq) in [
        (&a, "b.test", bundle_sequence(&b)),
        (&b, "a.test", bundle_sequence(&a)),
    ] {
        let row = listed_bundle(issuer, other).expect("federated bundle listed");
        assert_eq!(row["own"], false);
        assert_eq!(row["sequence"], seq);
        let s = show(issuer, other);
        assert!(s["last_success_at"].is_i64(), "{s}");
        assert!(s["last_error"].is_null(), "{s}");
    }
    assert_eq!(show(&b, "a.test")["source"], "config");
    let listed = b
        .cli_json(&["federation", "list", "--output", "json"])
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // Never merged: each trust domain keeps its own bundle.
    let a_seen_by_b = b
        .cli_ok(&[
            "bundle",
            "show",
            "--trust-domain",
            "a.test",
            "--format",
            "pem",
        ])
        .unwrap();
    assert_eq!(a_seen_by_b, a.bundle_pem().unwrap());
    assert_ne!(a_seen_by_b, b.bundle_pem().unwrap());

    // A CA rotation on B reaches A at B's refresh hint (1 s), and on A reaches B.
    b.cli_ok(&["ca", "prepare"]).unwrap();
    let seq = bundle_sequence(&b);
    a.wait_for_log(
        "federated bundle updated",
        |v| v["trust_domain"] == "b.test" && v["sequence"] == seq,
        WAIT,
    )
    .unwrap();
    let row = listed_bundle(&a, "b.test").unwrap();
    assert_eq!(row["sequence"], seq);
    assert_eq!(row["x509_authorities"], 2);
    a.cli_ok(&["ca", "prepare"]).unwrap();
    let seq = bundle_sequence(&a);
    b.wait_for_log(
        "federated bundle updated",
        |v| v["trust_domain"] == "a.test" && v["sequence"] == seq,
        WAIT,
    )
    .unwrap();
    // After B activates its new CA, its endpoint SVID is still accepted by A.
    b.cli_ok(&["ca", "activate"]).unwrap();
    refresh(&a, "b.test").ok().unwrap();

    // An endpoint that presents another SPIFFE ID than configured is refused; the bundle stays.
    let kept = a
        .cli_ok(&[
            "bundle",
            "show",
            "--trust-domain",
            "b.test",
            "--format",
            "spiffe",
        ])
        .unwrap();
    a.cli_ok(&[
        "federation",
        "update",
        "--trust-domain",
        "b.test",
        "--endpoint-spiffe-id",
        "spiffe://b.test/not-the-issuer",
    ])
    .unwrap();
    let err = refresh(&a, "b.test").err().unwrap();
    assert!(
        err.contains("bundle of b.test not refreshed (the last good bundle is kept)")
            && err.contains("peer SPIFFE ID spiffe://b.test/signet/issuer is not authorized"),
        "{err}"
    );
    let s = show(&a, "b.test");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("is not authorized"),
        "{s}"
    );
    assert!(s["last_success_at"].is_i64(), "{s}");
    assert!(s["consecutive_failures"].as_u64().unwrap() >= 1, "{s}");
    let text = a
        .cli_ok(&["federation", "show", "--trust-domain", "b.test"])
        .unwrap();
    assert!(
        text.contains("Last error") && text.contains("Last success"),
        "{text}"
    );
    assert_eq!(
        a.cli_ok(&[
            "bundle",
            "show",
            "--trust-domain",
            "b.test",
            "--format",
            "spiffe"
        ])
        .unwrap(),
        kept
    );
    a.cli_ok(&[
        "federation",
        "update",
        "--trust-domain",
        "b.test",
        "--endpoint-spiffe-id",
        "spiffe://b.test/signet/issuer",
    ])
    .unwrap();
    refresh(&a, "b.test").ok().unwrap();
    assert!(show(&a, "b.test")["last_error"].is_null());

    // The config's relationship is read-only; the API's can be deleted (its bundle stays).
    let err = b
        .cli_err(&["federation", "delete", "--trust-domain", "a.test"])
        .unwrap();
    assert!(err.contains("is defined in the config file"), "{err}");
    a.cli_ok(&["federation", "delete", "--trust-domain", "b.test"])
        .unwrap();
    let err = a
        .cli_err(&["federation", "show", "--trust-domain", "b.test"])
        .unwrap();
    assert!(
        err.contains("no federation relationship with b.test"),
        "{err}"
    );
    assert!(listed_bundle(&a, "b.test").is_some());
}

#[test]
fn federation_create_refuses_bad_input() {
    let a = start("a.test", |b| b);
    let work = tempfile::tempdir().unwrap();
    let own = own_bundle_file(&a, work.path(), "own.json");
    let foreign = write(
        work.path(),
        "foreign.json",
        &bundle_doc("x.test", vec![spiffe_ca("evil.test")], 1),
    );
    let garbage = write(work.path(), "garbage.json", "{not json");
    let base = |td: &'static str, url: &'static str, profile: &'static str| {
        vec![
            "federation",
            "create",
            "--trust-domain",
            td,
            "--bundle-endpoint-url",
            url,
            "--profile",
            profile,
        ]
    };
    // https_spiffe with the right endpoint ID and this bootstrap bundle.
    let with_bundle = |bundle| {
        [
            base("x.test", "https://127.0.0.1:1/", "https_spiffe"),
            vec![
                "--endpoint-spiffe-id",
                "spiffe://x.test/signet/issuer",
                "--bundle",
                bundle,
            ],
        ]
        .concat()
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [base("a.test", "https://127.0.0.1:1/", "https_web")].concat(),
            "a.test is the issuer's own trust domain",
        ),
        (
            [base("x.test", "http://127.0.0.1:1/", "https_web")].concat(),
            "scheme \"http\" is not allowed",
        ),
        (
            [
                base("x.test", "https://127.0.0.1:1/", "https_spiffe"),
                vec!["--endpoint-spiffe-id", "spiffe://x.test/signet/issuer"],
            ]
            .concat(),
            "profile https_spiffe needs a bundle of x.test",
        ),
        (
            [base("x.test", "https://127.0.0.1:1/", "https_spiffe")].concat(),
            "needs the endpoint's SPIFFE ID",
        ),
        (
            [
                base("x.test", "https://127.0.0.1:1/", "https_spiffe"),
                vec!["--endpoint-spiffe-id", "spiffe://other.test/signet/issuer"],
            ]
            .concat(),
            "is not in trust domain x.test",
        ),
        (
            with_bundle(foreign.to_str().unwrap()),
            "its X.509 authority 0 is a CA of trust domain evil.test",
        ),
        (
            with_bundle(own.to_str().unwrap()),
            // The own bundle names a.test: it is not a bundle of x.test.
            "is a CA of trust domain a.test",
        ),
        (
            with_bundle(garbage.to_str().unwrap()),
            "bundle of x.test: bundle is not valid JSON",
        ),
    ];
    for (args, want) in cases {
        let err = a.cli_err(&args).unwrap();
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing was stored by any of them.
    let list = a
        .cli_json(&["federation", "list", "--output", "json"])
        .unwrap();
    assert_eq!(list, serde_json::json!([]));
    assert!(listed_bundle(&a, "x.test").is_none());

    let ok = [base("x.test", "https://127.0.0.1:1/", "https_web")].concat();
    a.cli_ok(&ok).unwrap();
    let err = a.cli_err(&ok).unwrap();
    assert!(
        err.contains("a federation relationship with x.test already exists"),
        "{err}"
    );
}

#[test]
fn https_web_bundle_endpoint_with_a_test_ca() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (chain, key, leaf1) = ca.server();
    let cert_path = write(work.path(), "web.pem", &chain);
    let key_path = write(work.path(), "web.key", &key);
    let ca_path = write(work.path(), "ca.pem", &ca.pem);
    let b = start("b.test", |b| {
        b.set_str("bundle_endpoint.profile", "https_web")
            .set_str(
                "bundle_endpoint.certificate_path",
                cert_path.to_str().unwrap(),
            )
            .set_str(
                "bundle_endpoint.private_key_path",
                key_path.to_str().unwrap(),
            )
    });
    let addr = endpoint_addr(&b);
    let r = https_get(addr, "/", web_client(&ca.der));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.peer[0], leaf1);
    let served =
        Bundle::from_json(&TrustDomain::new("b.test").unwrap(), r.body.as_bytes()).unwrap();
    assert_eq!(served, own_bundle(&b, "b.test"));
    // No jwt_issuer: no OIDC discovery.
    let r = https_get(
        addr,
        "/.well-known/openid-configuration",
        web_client(&ca.der),
    );
    assert_eq!(r.status, 404);

    let a = start("a.test", |b| b);
    let url = format!("https://localhost:{}/", addr.port());
    a.cli_ok(&[
        "federation",
        "create",
        "--trust-domain",
        "b.test",
        "--bundle-endpoint-url",
        &url,
        "--profile",
        "https_web",
        "--ca-bundle",
        ca_path.to_str().unwrap(),
    ])
    .unwrap();
    let out = refresh(&a, "b.test").ok().unwrap();
    // Updated by this refresh or already by the first background poll.
    assert!(out.starts_with("Bundle of b.test "), "{out}");
    assert_eq!(
        listed_bundle(&a, "b.test").unwrap()["sequence"],
        bundle_sequence(&b)
    );
    assert_eq!(show(&a, "b.test")["has_ca_bundle"], true);

    // Without the test CA (system roots) the endpoint is not trusted; the bundle stays.
    a.cli_ok(&[
        "federation",
        "update",
        "--trust-domain",
        "b.test",
        "--system-roots",
    ])
    .unwrap();
    let err = refresh(&a, "b.test").err().unwrap();
    assert!(err.contains("TLS handshake with localhost:"), "{err}");
    assert!(listed_bundle(&a, "b.test").is_some());
    a.cli_ok(&[
        "federation",
        "update",
        "--trust-domain",
        "b.test",
        "--ca-bundle",
        ca_path.to_str().unwrap(),
    ])
    .unwrap();
    refresh(&a, "b.test").ok().unwrap();

    // A new certificate is served after SIGHUP, without a restart.
    let (chain2, key2, leaf2) = ca.server();
    std::fs::write(&key_path, key2).unwrap();
    std::fs::write(&cert_path, chain2).unwrap();
    let pid = b.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    b.wait_for_log(
        "bundle endpoint certificate reloaded",
        |v| v["reason"] == "SIGHUP",
        WAIT,
    )
    .unwrap();
    let r = https_get(addr, "/", web_client(&ca.der));
    assert_eq!(r.peer[0], leaf2);
    refresh(&a, "b.test").ok().unwrap();
}

#[test]
fn bad_bundle_endpoints_are_refused_and_the_last_good_bundle_is_kept() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_path = write(work.path(), "ca.pem", &ca.pem);
    let fake = FakeEndpoint::start(&ca);
    let a = start("a.test", |b| b);
    a.cli_ok(&[
        "federation",
        "create",
        "--trust-domain",
        "fake.test",
        "--bundle-endpoint-url",
        &fake.url(),
        "--profile",
        "https_web",
        "--ca-bundle",
        ca_path.to_str().unwrap(),
    ])
    .unwrap();

    let authority = spiffe_ca("fake.test");
    fake.set(Reply::Ok(bundle_doc(
        "fake.test",
        vec![authority.clone()],
        5,
    )));
    let out = refresh(&a, "fake.test").ok().unwrap();
    assert!(out.ends_with("(sequence 5)\n"), "{out}");
    let good = a
        .cli_ok(&[
            "bundle",
            "show",
            "--trust-domain",
            "fake.test",
            "--format",
            "spiffe",
        ])
        .unwrap();
    let success_at = show(&a, "fake.test")["last_success_at"].as_i64().unwrap();

    let cases: Vec<(Reply, &str)> = vec![
        (
            Reply::Ok("<html>this is not a bundle</html>".into()),
            "the endpoint did not serve a valid SPIFFE bundle: bundle is not valid JSON",
        ),
        (
            Reply::Ok("{\"spiffe_sequence\": 9}".into()),
            "bundle document has no `keys` parameter",
        ),
        (
            Reply::Ok(bundle_doc("fake.test", vec![spiffe_ca("other.test")], 9)),
            "the bundle is not for trust domain fake.test: its X.509 authority 0 is a CA of trust domain other.test",
        ),
        (
            Reply::Ok(bundle_doc(
                "fake.test",
                vec![authority.clone(), spiffe_ca("fake.test")],
                3,
            )),
            "spiffe_sequence 3 is lower than the stored bundle's 5",
        ),
        (Reply::Status(500), "the endpoint answered HTTP status 500"),
        (
            Reply::Hang(Duration::from_secs(15)),
            "no complete answer within 10s",
        ),
    ];
    for (reply, want) in cases {
        fake.set(reply);
        let err = refresh(&a, "fake.test").err().unwrap();
        assert!(
            err.contains("bundle of fake.test not refreshed (the last good bundle is kept)")
                && err.contains(want),
            "{want}: {err}"
        );
        let s = show(&a, "fake.test");
        assert!(s["last_error"].as_str().unwrap().contains(want), "{s}");
        assert!(s["last_error_at"].as_i64().unwrap() >= success_at, "{s}");
        assert!(s["last_success_at"].as_i64().unwrap() >= success_at, "{s}");
        assert_eq!(s["bundle_sequence"], 5, "{s}");
        assert_eq!(
            a.cli_ok(&[
                "bundle",
                "show",
                "--trust-domain",
                "fake.test",
                "--format",
                "spiffe"
            ])
            .unwrap(),
            good
        );
    }

    // A TLS failure: the endpoint's certificate is not from the configured roots.
    let other_ca = TestCa::new();
    let other_path = write(work.path(), "other-ca.pem", &other_ca.pem);
    a.cli_ok(&[
        "federation",
        "update",
        "--trust-domain",
        "fake.test",
        "--ca-bundle",
        other_path.to_str().unwrap(),
    ])
    .unwrap();
    fake.set(Reply::Ok(bundle_doc(
        "fake.test",
        vec![authority.clone()],
        6,
    )));
    let err = refresh(&a, "fake.test").err().unwrap();
    assert!(err.contains("TLS handshake with 127.0.0.1:"), "{err}");
    assert_eq!(listed_bundle(&a, "fake.test").unwrap()["sequence"], 5);

    // Back to a good endpoint: the newer bundle is taken and the error cleared.
    a.cli_ok(&[
        "federation",
        "update",
        "--trust-domain",
        "fake.test",
        "--ca-bundle",
        ca_path.to_str().unwrap(),
    ])
    .unwrap();
    let out = refresh(&a, "fake.test").ok().unwrap();
    // The update restarted the poller, which may have fetched it first.
    assert!(out.ends_with("(sequence 6)\n"), "{out}");
    assert_eq!(listed_bundle(&a, "fake.test").unwrap()["sequence"], 6);
    let s = show(&a, "fake.test");
    assert!(s["last_error"].is_null(), "{s}");
    assert_eq!(s["consecutive_failures"], 0);
    let events = a.cli_ok(&["bundle", "list"]).unwrap();
    assert!(events.contains("fake.test"), "{events}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        s["next_poll_at"].as_u64().unwrap() >= now.saturating_sub(1),
        "{s}"
    );
}
