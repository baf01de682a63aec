//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use signet_ca::{
    CaConfig, CertificateAuthority, IssuedX509Svid, KeyType, UpstreamConfig, X509SvidRequest,
};
use signet_spiffe::{SpiffeId, TrustDomain};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The decoded header and claims of a JWS compact serialization.
pub fn segments(token: &str) -> Vec<serde_json::Value> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    token
        .split('.')
        .take(2)
        .map(|s| serde_json::from_slice(&b64.decode(s).unwrap()).unwrap())
        .collect()
}

/// A fixed "now" for tests driven by a fake clock: 2030-03-17T17:46:40Z.
pub const T0: u64 = 1_900_000_000;
pub const HOUR: u64 = 3600;

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub fn id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org{path}")).unwrap()
}

pub fn key_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("data").join("ca")
}

pub fn config(dir: &Path, key_type: KeyType, ttl: Duration) -> CaConfig {
    CaConfig {
        trust_domain: td(),
        key_type,
        ttl,
        upstream: None,
        key_dir: dir.to_path_buf(),
    }
}

pub fn upstream_config(dir: &Path, ttl: Duration, cert: &Path, key: &Path) -> CaConfig {
    CaConfig {
        upstream: Some(UpstreamConfig {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        }),
        ..config(dir, KeyType::EcP256, ttl)
    }
}

/// Opens a fresh self-signed CA with a 6 hour TTL at `T0`.
pub fn fresh_ca(tmp: &tempfile::TempDir, key_type: KeyType) -> CertificateAuthority {
    CertificateAuthority::open(
        config(&key_dir(tmp), key_type, Duration::from_secs(6 * HOUR)),
        None,
        at(T0),
    )
    .unwrap()
}

/// A workload key pair (rcgen, aws-lc-rs backed).
pub fn workload_key(alg: &'static rcgen::SignatureAlgorithm) -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(alg).unwrap()
}

pub fn p256_spki() -> Vec<u8> {
    workload_key(&rcgen::PKCS_ECDSA_P256_SHA256).public_key_der()
}

pub fn sign(
    ca: &CertificateAuthority,
    path: &str,
    spki: &[u8],
    ttl: Duration,
    now: SystemTime,
) -> IssuedX509Svid {
    let spiffe_id = id(path);
    ca.sign_x509_svid(
        &X509SvidRequest {
            spiffe_id: &spiffe_id,
            public_key_spki_der: spki,
            ttl,
            dns_names: &[],
        },
        now,
    )
    .unwrap()
}

/// Verifies an SVID chain with rustls-webpki against `anchors` at `now`, for both client and
/// server authentication.
pub fn verify(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), webpki::Error> {
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let anchors: Vec<_> = anchor_ders
        .iter()
        .map(|a| webpki::anchor_from_trusted_cert(a).unwrap())
        .collect();
    let leaf = CertificateDer::from(chain[0].as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

pub fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

pub fn subject_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("subject key identifier present")
}

pub fn authority_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("authority key identifier present")
}

/// URI and DNS SANs of a certificate.
pub fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SAN present");
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (uris, dns)
}

pub fn to_pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// An upstream PKI made with rcgen: a root and an intermediate (both CAs).
pub struct UpstreamPki {
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    pub intermediate_key_pem: String,
    pub root_key_pem: String,
}

fn ca_params(cn: &str, not_after: u64) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Upstream Corp");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after as i64).unwrap();
    p.use_authority_key_identifier_extension = true;
    p
}

/// Root valid until `root_not_after`, intermediate until `intermediate_not_after`; the
/// intermediate key is `intermediate_alg`.
pub fn upstream_pki(
    root_not_after: u64,
    intermediate_not_after: u64,
    intermediate_alg: &'static rcgen::SignatureAlgorithm,
) -> UpstreamPki {
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let root_params = ca_params("Upstream Root", root_not_after);
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, &root_key);
    let int_key = rcgen::KeyPair::generate_for(intermediate_alg).unwrap();
    let int = ca_params("Upstream Intermediate", intermediate_not_after)
        .signed_by(&int_key, &issuer)
        .unwrap();
    UpstreamPki {
        root_der: root.der().to_vec(),
        intermediate_der: int.der().to_vec(),
        intermediate_key_pem: int_key.serialize_pem(),
        root_key_pem: root_key.serialize_pem(),
    }
}

/// SubjectPublicKeyInfo DER of an rcgen key pair.
pub trait SpkiDer {
    fn public_key_der(&self) -> Vec<u8>;
}

impl SpkiDer for rcgen::KeyPair {
    fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self)
    }
}
