//! x509pop: proof that the agent holds the private key of a certificate that chains to a CA bundle
//! configured on the issuer.
//!
//! Exchange:
//! 1. The agent sends its certificate chain (leaf first) as the payload: the JSON object
//!    `{"certificates": ["<hex DER>", ...]}` ([`encode_payload`]).
//! 2. The issuer verifies the chain (RFC 5280 path validation with webpki; if the leaf has an
//!    extended key usage it must allow clientAuth) against [`ServerConfig::trust_anchors`] and sends
//!    a random 32-byte nonce.
//! 3. The agent signs `"signet-x509pop-v1" || nonce` ([`challenge_message`]) with the leaf's key:
//!    ECDSA P-256 (SHA-256) or P-384 (SHA-384) in ASN.1 DER form, RSA PKCS#1 v1.5 with SHA-256, or
//!    Ed25519.
//! 4. The issuer verifies the signature with the leaf's public key.
//!
//! Agent ID: `spiffe://<td>/signet/agent/x509pop/<SHA-256 of the leaf DER, lowercase hex>`.
//! Selectors (type `x509pop`): `subject:cn:<CN>`, `ca:fingerprint:<SHA-1 hex>` for every CA
//! certificate of the verified chain (intermediates and the root), `serialnumber:<hex>` (lowercase,
//! no leading zeros), `san:dns:<name>`, `san:uri:<uri>`, `san:ip:<address>`, `san:email:<address>`.
//! The agent may attest again with the same certificate (re-attestable).

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use signet_spiffe::{SpiffeId, TrustDomain};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::node::{
    AgentAttestor, AttestError, AttestationRequest, ChallengeChannel, NodeAttestation,
    NodeAttestor, Selector,
};

/// The attestor name, selector type and `attestor_type` on the wire.
pub const ATTESTOR_TYPE: &str = "x509pop";

/// Domain separation prefix of the signed challenge.
pub const SIGNATURE_CONTEXT: &[u8] = b"signet-x509pop-v1";

/// Length of the issuer's nonce.
pub const NONCE_LEN: usize = 32;

/// The most certificates accepted in the agent's chain.
pub const MAX_CHAIN_LEN: usize = 10;

/// Issuer-side configuration: the CA certificates that x509pop leaves must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// DER certificates of the trusted CAs.
    pub trust_anchors: Vec<Vec<u8>>,
}

impl ServerConfig {
    /// Reads the CA bundle from PEM text (one or more `CERTIFICATE` blocks; other blocks are an
    /// error). Each certificate must be usable as a trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, AttestError> {
        let mut anchors = Vec::new();
        for (i, block) in x509_parser::pem::Pem::iter_from_buffer(pem).enumerate() {
            let block =
                block.map_err(|e| AttestError::Config(format!("CA bundle PEM block {i}: {e}")))?;
            if block.label != "CERTIFICATE" {
                return Err(AttestError::Config(format!(
                    "CA bundle PEM block {i} is {:?}, expected CERTIFICATE",
                    block.label
                )));
            }
            let der = CertificateDer::from(block.contents.as_slice());
            webpki::anchor_from_trusted_cert(&der).map_err(|e| {
                AttestError::Config(format!("CA bundle certificate {i} is unusable: {e}"))
            })?;
            anchors.push(block.contents);
        }
        if anchors.is_empty() {
            return Err(AttestError::Config(
                "CA bundle contains no PEM CERTIFICATE block".into(),
            ));
        }
        Ok(Self {
            trust_anchors: anchors,
        })
    }

    /// Reads the CA bundle from a PEM file (see [`ServerConfig::from_pem`]).
    pub fn from_pem_file(path: &Path) -> Result<Self, AttestError> {
        let pem = std::fs::read(path).map_err(|e| {
            AttestError::Config(format!("cannot read CA bundle {}: {e}", path.display()))
        })?;
        Self::from_pem(&pem).map_err(|e| match e {
            AttestError::Config(m) => AttestError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    certificates: Vec<String>,
}

/// Encodes the agent's certificate chain (leaf first) as the x509pop payload.
pub fn encode_payload(chain: &[Vec<u8>]) -> Vec<u8> {
    let payload = Payload {
        certificates: chain.iter().map(hex::encode).collect(),
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Decodes the x509pop payload into DER certificates (leaf first).
pub fn decode_payload(payload: &[u8]) -> Result<Vec<Vec<u8>>, AttestError> {
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|e| AttestError::InvalidPayload(format!("x509pop payload: {e}")))?;
    if p.certificates.is_empty() {
        return Err(AttestError::InvalidPayload(
            "x509pop payload has no certificate".into(),
        ));
    }
    if p.certificates.len() > MAX_CHAIN_LEN {
        return Err(AttestError::InvalidPayload(format!(
            "x509pop payload has {} certificates, at most {MAX_CHAIN_LEN} are accepted",
            p.certificates.len()
        )));
    }
    p.certificates
        .iter()
        .enumerate()
        .map(|(i, h)| {
            hex::decode(h).map_err(|e| {
                AttestError::InvalidPayload(format!("x509pop certificate {i} is not hex: {e}"))
            })
        })
        .collect()
}

/// The bytes the agent signs: `"signet-x509pop-v1" || nonce`.
pub fn challenge_message(nonce: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + nonce.len());
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(nonce);
    m
}

/// Lowercase hex SHA-256 of `der`.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, der))
}

/// Lowercase hex SHA-1 of `der` (the `ca:fingerprint` selector, as in SPIRE).
pub fn sha1_hex(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der))
}

/// `spiffe://<td>/signet/agent/x509pop/<sha256 hex of the leaf DER>`.
pub fn agent_id(td: &TrustDomain, leaf_der: &[u8]) -> Result<SpiffeId, AttestError> {
    td.spiffe_id(&format!(
        "/signet/agent/{ATTESTOR_TYPE}/{}",
        sha256_hex(leaf_der)
    ))
    .map_err(|e| AttestError::Unavailable(format!("cannot build agent ID: {e}")))
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, AttestError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| AttestError::InvalidPayload(format!("x509pop certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(AttestError::InvalidPayload(
            "x509pop certificate has trailing data".into(),
        ));
    }
    Ok(cert)
}

/// Selectors of a verified leaf; `ca_ders` are the CA certificates of the verified chain.
pub fn selectors(leaf_der: &[u8], ca_ders: &[&[u8]]) -> Result<Vec<Selector>, AttestError> {
    let leaf = parse_cert(leaf_der)?;
    let mut out = Vec::new();
    if let Some(cn) = leaf.subject().iter_common_name().next() {
        let cn = cn
            .as_str()
            .map_err(|e| AttestError::InvalidPayload(format!("x509pop subject CN: {e}")))?;
        out.push(Selector::new(ATTESTOR_TYPE, format!("subject:cn:{cn}")));
    }
    for ca in ca_ders {
        out.push(Selector::new(
            ATTESTOR_TYPE,
            format!("ca:fingerprint:{}", sha1_hex(ca)),
        ));
    }
    let serial = hex::encode(leaf.raw_serial());
    let serial = serial.trim_start_matches('0');
    out.push(Selector::new(
        ATTESTOR_TYPE,
        format!(
            "serialnumber:{}",
            if serial.is_empty() { "0" } else { serial }
        ),
    ));
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| AttestError::InvalidPayload(format!("x509pop SAN extension: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            let v = match name {
                GeneralName::DNSName(d) => format!("san:dns:{d}"),
                GeneralName::URI(u) => format!("san:uri:{u}"),
                GeneralName::RFC822Name(e) => format!("san:email:{e}"),
                GeneralName::IPAddress(ip) => match ip_from_bytes(ip) {
                    Some(ip) => format!("san:ip:{ip}"),
                    None => continue,
                },
                _ => continue,
            };
            out.push(Selector::new(ATTESTOR_TYPE, v));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Verifies `signature` over `message` with the public key of the certificate `leaf_der`.
pub fn verify_signature(leaf_der: &[u8], message: &[u8], sig: &[u8]) -> Result<(), AttestError> {
    let leaf = parse_cert(leaf_der)?;
    let spki = leaf.public_key();
    let alg = key_algorithm(&leaf)?;
    let verify_alg: &dyn signature::VerificationAlgorithm = match alg {
        KeyAlg::P256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyAlg::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        KeyAlg::Rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
        KeyAlg::Ed25519 => &signature::ED25519,
    };
    signature::UnparsedPublicKey::new(verify_alg, &spki.subject_public_key.data)
        .verify(message, sig)
        .map_err(|_| AttestError::BadChallengeResponse)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlg {
    P256,
    P384,
    Rsa,
    Ed25519,
}

fn key_algorithm(cert: &X509Certificate<'_>) -> Result<KeyAlg, AttestError> {
    let alg = &cert.public_key().algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyAlg::P256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyAlg::P384),
            Some(c) => Err(AttestError::UnsupportedKey(format!(
                "elliptic curve {c} (P-256 and P-384 are supported)"
            ))),
            None => Err(AttestError::UnsupportedKey(
                "EC key without a named curve".into(),
            )),
        }
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        Ok(KeyAlg::Rsa)
    } else if alg.algorithm == OID_SIG_ED25519 {
        Ok(KeyAlg::Ed25519)
    } else {
        Err(AttestError::UnsupportedKey(format!(
            "public key algorithm {} (ECDSA P-256/P-384, RSA and Ed25519 are supported)",
            alg.algorithm
        )))
    }
}

/// Verifies `chain` (leaf first) against `anchors`; returns the DER of the CA certificates of the
/// verified path (intermediates, then the root).
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: SystemTime,
) -> Result<Vec<Vec<u8>>, AttestError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(AttestError::InvalidPayload(
            "x509pop payload has no certificate".into(),
        ));
    };
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let trust_anchors = anchor_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AttestError::Config(format!("x509pop CA bundle: {e}")))?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| AttestError::UntrustedCertificate(format!("leaf certificate: {e}")))?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| AttestError::Unavailable("clock is before 1970".into()))?;
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust_anchors,
            &inter,
            UnixTime::since_unix_epoch(since),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| AttestError::UntrustedCertificate(format!("{e:?}")))?;
    let mut cas: Vec<Vec<u8>> = path
        .intermediate_certificates()
        .map(|c| c.der().to_vec())
        .collect();
    let anchor = path.anchor();
    if let Some(i) = trust_anchors.iter().position(|t| {
        t.subject == anchor.subject && t.subject_public_key_info == anchor.subject_public_key_info
    }) && let Some(der) = anchors.get(i)
    {
        cas.push(der.clone());
    }
    Ok(cas)
}

/// Server side of x509pop.
#[derive(Debug, Clone)]
pub struct X509PopAttestor {
    config: ServerConfig,
}

impl X509PopAttestor {
    /// Builds the attestor; refuses an empty or unusable CA bundle.
    pub fn new(config: ServerConfig) -> Result<Self, AttestError> {
        if config.trust_anchors.is_empty() {
            return Err(AttestError::Config("x509pop CA bundle is empty".into()));
        }
        for (i, a) in config.trust_anchors.iter().enumerate() {
            let der = CertificateDer::from(a.as_slice());
            webpki::anchor_from_trusted_cert(&der).map_err(|e| {
                AttestError::Config(format!("x509pop CA bundle certificate {i}: {e}"))
            })?;
        }
        Ok(Self { config })
    }
}

#[async_trait]
impl NodeAttestor for X509PopAttestor {
    fn attestor_type(&self) -> &'static str {
        ATTESTOR_TYPE
    }

    async fn attest(
        &self,
        request: AttestationRequest<'_>,
        channel: &mut dyn ChallengeChannel,
    ) -> Result<NodeAttestation, AttestError> {
        let chain = decode_payload(request.payload)?;
        let leaf = chain.first().ok_or_else(|| {
            AttestError::InvalidPayload("x509pop payload has no certificate".into())
        })?;
        // Refuse unsupported keys before any challenge.
        key_algorithm(&parse_cert(leaf)?)?;
        let cas = verify_chain(&chain, &self.config.trust_anchors, request.now)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| AttestError::Unavailable("random number generator failed".into()))?;
        let answer = channel.round_trip(nonce.to_vec()).await?;
        verify_signature(leaf, &challenge_message(&nonce), &answer)?;
        let ca_refs: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
        Ok(NodeAttestation {
            agent_id: agent_id(request.trust_domain, leaf)?,
            selectors: selectors(leaf, &ca_refs)?,
            can_reattest: true,
            aliases: Vec::new(),
        })
    }
}

enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Agent side of x509pop: a certificate chain and the leaf's private key.
pub struct X509PopAgent {
    chain: Vec<Vec<u8>>,
    key: SigningKey,
}

impl std::fmt::Debug for X509PopAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509PopAgent")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl X509PopAgent {
    /// `chain`: DER certificates, leaf first; `key_pkcs8`: the leaf's private key (PKCS#8 DER).
    /// Refuses a key that does not match the leaf certificate.
    pub fn new(chain: Vec<Vec<u8>>, key_pkcs8: &[u8]) -> Result<Self, AttestError> {
        let leaf = chain
            .first()
            .ok_or_else(|| AttestError::Config("x509pop certificate chain is empty".into()))?;
        if chain.len() > MAX_CHAIN_LEN {
            return Err(AttestError::Config(format!(
                "x509pop certificate chain has {} certificates, at most {MAX_CHAIN_LEN}",
                chain.len()
            )));
        }
        let cert = parse_cert(leaf).map_err(|e| AttestError::Config(e.to_string()))?;
        let bad_key = |e: aws_lc_rs::error::KeyRejected| {
            AttestError::Config(format!("x509pop private key: {e}"))
        };
        let (key, public): (SigningKey, Vec<u8>) = match key_algorithm(&cert)? {
            KeyAlg::P256 => {
                let k =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, key_pkcs8)
                        .map_err(bad_key)?;
                let p = k.public_key().as_ref().to_vec();
                (SigningKey::Ecdsa(k), p)
            }
            KeyAlg::P384 => {
                let k =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, key_pkcs8)
                        .map_err(bad_key)?;
                let p = k.public_key().as_ref().to_vec();
                (SigningKey::Ecdsa(k), p)
            }
            KeyAlg::Rsa => {
                let k = RsaKeyPair::from_pkcs8(key_pkcs8).map_err(bad_key)?;
                let p = k.public_key().as_ref().to_vec();
                (SigningKey::Rsa(k), p)
            }
            KeyAlg::Ed25519 => {
                let k = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key_pkcs8).map_err(bad_key)?;
                let p = k.public_key().as_ref().to_vec();
                (SigningKey::Ed25519(k), p)
            }
        };
        if public.as_slice() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(AttestError::Config(
                "x509pop private key does not match the certificate".into(),
            ));
        }
        Ok(Self { chain, key })
    }

    /// Loads the chain (PEM certificates, leaf first) and the key (PEM `PRIVATE KEY`, PKCS#8).
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, AttestError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| AttestError::Config(format!("{}: {e}", p.display())))
        };
        let certs = read(cert_path)?;
        let mut chain = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(&certs) {
            let block =
                block.map_err(|e| AttestError::Config(format!("{}: {e}", cert_path.display())))?;
            if block.label == "CERTIFICATE" {
                chain.push(block.contents);
            }
        }
        let key_file = Zeroizing::new(read(key_path)?);
        let mut key = None;
        for block in x509_parser::pem::Pem::iter_from_buffer(&key_file) {
            let block =
                block.map_err(|e| AttestError::Config(format!("{}: {e}", key_path.display())))?;
            let contents = Zeroizing::new(block.contents);
            if block.label == "PRIVATE KEY" {
                key = Some(contents);
                break;
            }
        }
        let key = key.ok_or_else(|| {
            AttestError::Config(format!(
                "{}: no PKCS#8 `PRIVATE KEY` PEM block",
                key_path.display()
            ))
        })?;
        Self::new(chain, &key)
    }

    /// Signs the challenge message for `nonce`.
    fn sign(&self, nonce: &[u8]) -> Result<Vec<u8>, AttestError> {
        let msg = challenge_message(nonce);
        let rng = SystemRandom::new();
        let failed = |_| AttestError::Config("x509pop signing failed".into());
        match &self.key {
            SigningKey::Ecdsa(k) => Ok(k.sign(&rng, &msg).map_err(failed)?.as_ref().to_vec()),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, &msg, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            SigningKey::Ed25519(k) => Ok(k.sign(&msg).as_ref().to_vec()),
        }
    }
}

impl AgentAttestor for X509PopAgent {
    fn attestor_type(&self) -> &'static str {
        ATTESTOR_TYPE
    }

    fn payload(&self) -> Result<Zeroizing<Vec<u8>>, AttestError> {
        Ok(Zeroizing::new(encode_payload(&self.chain)))
    }

    fn answer_challenge(&self, challenge: &[u8]) -> Result<Vec<u8>, AttestError> {
        if challenge.len() != NONCE_LEN {
            return Err(AttestError::Challenge(format!(
                "x509pop challenge is {} bytes, expected {NONCE_LEN}",
                challenge.len()
            )));
        }
        self.sign(challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType, SerialNumber,
    };
    use std::time::Duration;

    struct Ca {
        cert_der: Vec<u8>,
        cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(ca: &Ca, alg: &'static rcgen::SignatureAlgorithm) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "node-1");
        p.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x0a, 0xbc]));
        p.subject_alt_names = vec![
            SanType::DnsName("node-1.example.org".try_into().unwrap()),
            SanType::URI("https://node-1.example.org/x".try_into().unwrap()),
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    struct Answering<'a>(&'a dyn AgentAttestor, usize);

    #[async_trait]
    impl ChallengeChannel for Answering<'_> {
        async fn round_trip(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
            self.1 += 1;
            self.0.answer_challenge(&challenge)
        }
    }

    struct Forging;

    #[async_trait]
    impl ChallengeChannel for Forging {
        async fn round_trip(&mut self, _challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
            Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
        }
    }

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    async fn run(
        attestor: &X509PopAttestor,
        agent: &dyn AgentAttestor,
    ) -> Result<(NodeAttestation, usize), AttestError> {
        let payload = agent.payload()?;
        let td = td();
        let mut ch = Answering(agent, 0);
        let r = attestor
            .attest(
                AttestationRequest {
                    trust_domain: &td,
                    payload: &payload,
                    now: SystemTime::now(),
                },
                &mut ch,
            )
            .await?;
        Ok((r, ch.1))
    }

    #[tokio::test]
    async fn happy_path_for_every_key_type() {
        let ca = ca("x509pop test CA");
        let attestor = X509PopAttestor::new(ServerConfig {
            trust_anchors: vec![ca.cert_der.clone()],
        })
        .unwrap();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let (leaf_der, key) = leaf(&ca, alg);
            let agent = X509PopAgent::new(vec![leaf_der.clone()], &key).unwrap();
            let (r, rounds) = run(&attestor, &agent).await.unwrap();
            assert_eq!(rounds, 1);
            assert!(r.can_reattest);
            assert_eq!(
                r.agent_id.to_string(),
                format!(
                    "spiffe://example.org/signet/agent/x509pop/{}",
                    sha256_hex(&leaf_der)
                )
            );
            let sel: Vec<String> = r.selectors.iter().map(ToString::to_string).collect();
            let fp = sha1_hex(&ca.cert_der);
            for want in [
                "x509pop:subject:cn:node-1".to_string(),
                format!("x509pop:ca:fingerprint:{fp}"),
                "x509pop:serialnumber:abc".to_string(),
                "x509pop:san:dns:node-1.example.org".to_string(),
                "x509pop:san:uri:https://node-1.example.org/x".to_string(),
                "x509pop:san:ip:10.0.0.1".to_string(),
                "x509pop:san:email:ops@example.org".to_string(),
            ] {
                assert!(sel.contains(&want), "{want} missing from {sel:?}");
            }
        }
    }

    #[tokio::test]
    async fn intermediate_fingerprint_is_a_selector() {
        let root = ca("root");
        let ikey = KeyPair::generate().unwrap();
        let mut ip = CertificateParams::default();
        ip.distinguished_name
            .push(DnType::CommonName, "intermediate");
        ip.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let icert = ip.signed_by(&ikey, &root.issuer).unwrap();
        let inter = Ca {
            cert_der: icert.der().to_vec(),
            cert_pem: icert.pem(),
            issuer: Issuer::new(ip, ikey),
        };
        let (leaf_der, key) = leaf(&inter, &rcgen::PKCS_ECDSA_P256_SHA256);
        let agent = X509PopAgent::new(vec![leaf_der, inter.cert_der.clone()], &key).unwrap();
        let attestor = X509PopAttestor::new(ServerConfig {
            trust_anchors: vec![root.cert_der.clone()],
        })
        .unwrap();
        let (r, _) = run(&attestor, &agent).await.unwrap();
        let sel: Vec<String> = r.selectors.iter().map(ToString::to_string).collect();
        for ca in [&root.cert_der, &inter.cert_der] {
            let want = format!("x509pop:ca:fingerprint:{}", sha1_hex(ca));
            assert!(sel.contains(&want), "{want} missing from {sel:?}");
        }
    }

    #[tokio::test]
    async fn certificate_from_another_ca_is_refused_before_any_challenge() {
        let good = ca("good");
        let other = ca("other");
        let (leaf_der, key) = leaf(&other, &rcgen::PKCS_ECDSA_P256_SHA256);
        let agent = X509PopAgent::new(vec![leaf_der], &key).unwrap();
        let attestor = X509PopAttestor::new(ServerConfig {
            trust_anchors: vec![good.cert_der],
        })
        .unwrap();
        let payload = agent.payload().unwrap();
        let td = td();
        let mut ch = Answering(&agent, 0);
        let err = attestor
            .attest(
                AttestationRequest {
                    trust_domain: &td,
                    payload: &payload,
                    now: SystemTime::now(),
                },
                &mut ch,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::UntrustedCertificate(_)), "{err}");
        assert_eq!(ch.1, 0);
    }

    #[tokio::test]
    async fn expired_certificate_is_refused() {
        let ca = ca("ca");
        let (leaf_der, key) = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let agent = X509PopAgent::new(vec![leaf_der], &key).unwrap();
        let attestor = X509PopAttestor::new(ServerConfig {
            trust_anchors: vec![ca.cert_der],
        })
        .unwrap();
        let payload = agent.payload().unwrap();
        let td = td();
        let err = attestor
            .attest(
                AttestationRequest {
                    trust_domain: &td,
                    payload: &payload,
                    // rcgen's default validity ends in 4096.
                    now: SystemTime::UNIX_EPOCH + Duration::from_secs(4_200_000_000 * 20),
                },
                &mut Answering(&agent, 0),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::UntrustedCertificate(_)), "{err}");
    }

    #[tokio::test]
    async fn wrong_signature_is_refused() {
        let ca = ca("ca");
        let (leaf_der, key) = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let agent = X509PopAgent::new(vec![leaf_der], &key).unwrap();
        let attestor = X509PopAttestor::new(ServerConfig {
            trust_anchors: vec![ca.cert_der],
        })
        .unwrap();
        let payload = agent.payload().unwrap();
        let td = td();
        let err = attestor
            .attest(
                AttestationRequest {
                    trust_domain: &td,
                    payload: &payload,
                    now: SystemTime::now(),
                },
                &mut Forging,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::BadChallengeResponse), "{err}");
    }

    #[test]
    fn signature_over_another_nonce_does_not_verify() {
        let ca = ca("ca");
        let (leaf_der, key) = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let agent = X509PopAgent::new(vec![leaf_der.clone()], &key).unwrap();
        let sig = agent.answer_challenge(&[1u8; NONCE_LEN]).unwrap();
        verify_signature(&leaf_der, &challenge_message(&[1u8; NONCE_LEN]), &sig).unwrap();
        assert!(matches!(
            verify_signature(&leaf_der, &challenge_message(&[2u8; NONCE_LEN]), &sig),
            Err(AttestError::BadChallengeResponse)
        ));
        // Without the context prefix the signature is not valid either.
        assert!(verify_signature(&leaf_der, &[1u8; NONCE_LEN], &sig).is_err());
    }

    #[test]
    fn key_must_match_certificate() {
        let ca = ca("ca");
        let (leaf_der, _) = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let other = KeyPair::generate().unwrap().serialize_der();
        let err = X509PopAgent::new(vec![leaf_der], &other).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn payload_round_trip_and_bad_payloads() {
        let chain = vec![vec![1, 2, 3], vec![4, 5]];
        assert_eq!(decode_payload(&encode_payload(&chain)).unwrap(), chain);
        for bad in [
            &b"not json"[..],
            br#"{"certificates":[]}"#,
            br#"{"certificates":["zz"]}"#,
            br#"{"certificates":["00"],"extra":1}"#,
        ] {
            assert!(
                matches!(decode_payload(bad), Err(AttestError::InvalidPayload(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = vec![vec![0u8]; MAX_CHAIN_LEN + 1];
        assert!(decode_payload(&encode_payload(&many)).is_err());
    }

    #[test]
    fn server_config_from_pem() {
        let a = ca("a");
        let b = ca("b");
        let pem = format!("{}{}", a.cert_pem, b.cert_pem);
        let cfg = ServerConfig::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(cfg.trust_anchors, vec![a.cert_der, b.cert_der]);
        assert!(ServerConfig::from_pem(b"").is_err());
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(ServerConfig::from_pem(key.as_bytes()).is_err());
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ServerConfig::from_pem(garbage.as_bytes()).is_err());
        let missing = ServerConfig::from_pem_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
    }

    #[test]
    fn debug_redacts_key() {
        let ca = ca("ca");
        let (leaf_der, key) = leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
        let agent = X509PopAgent::new(vec![leaf_der], &key).unwrap();
        assert!(format!("{agent:?}").contains("redacted"));
    }
}
