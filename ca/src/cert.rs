//! Certificate builders: CA certificates and the X509-SVID fast path.
//!
//! Certificates are written directly in DER. The leaf profile is fixed, so everything that does
//! not depend on the request (issuer name, signature algorithm, basic constraints, key usage,
//! extended key usage, authority key identifier) is encoded once per CA in a [`LeafTemplate`];
//! signing an SVID then only encodes the serial, validity, public key, SAN and subject key
//! identifier and makes one signature.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::CaError;
use crate::der::{self, nested, oid, tlv};
use crate::keys::{SigningKey, key_identifier};

/// The subject of every X509-SVID: `O=Signet`.
const LEAF_SUBJECT: &[u8] = &[
    0x30, 0x11, 0x31, 0x0f, 0x30, 0x0d, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x06, b'S', b'i', b'g',
    b'n', b'e', b't',
];

/// Number of random bytes of a serial number (126 bits of entropy once the top bits are fixed).
pub(crate) const SERIAL_LEN: usize = 16;

/// A random positive serial number of exactly [`SERIAL_LEN`] bytes: the top bit is cleared (so
/// the INTEGER is positive) and the next one set (so its DER encoding is minimal and always 16
/// bytes long).
pub(crate) fn random_serial() -> Result<[u8; SERIAL_LEN], CaError> {
    let mut serial = [0u8; SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CaError::Random)?;
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Ok(serial)
}

/// A validated public key for a leaf.
pub(crate) struct LeafKey<'a> {
    /// The SubjectPublicKeyInfo DER, as given.
    pub(crate) spki_der: &'a [u8],
    /// Its key identifier (SHA-1 of the key bits).
    pub(crate) key_id: [u8; 20],
}

/// Parses and validates a SubjectPublicKeyInfo for an X509-SVID: ECDSA P-256 or P-384 (the
/// point must be on the curve), RSA 2048 to 8192 bits, or Ed25519.
pub(crate) fn validate_spki(spki_der: &[u8]) -> Result<LeafKey<'_>, CaError> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| CaError::InvalidPublicKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidPublicKey(
            "trailing data after the SubjectPublicKeyInfo".to_string(),
        ));
    }
    let alg_oid = spki.algorithm.algorithm.as_bytes();
    let bits: &[u8] = &spki.subject_public_key.data;
    let verification: &'static dyn aws_lc_rs::signature::VerificationAlgorithm =
        if alg_oid == oid::EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve.as_ref().map(|c| c.as_bytes()) {
                Some(c) if c == oid::P256 => &ECDSA_P256_SHA256_ASN1,
                Some(c) if c == oid::P384 => &ECDSA_P384_SHA384_ASN1,
                Some(_) => {
                    return Err(CaError::UnsupportedKeyAlgorithm(format!(
                        "EC key on curve {} (only P-256 and P-384 are supported)",
                        curve.map(|c| c.to_id_string()).unwrap_or_default()
                    )));
                }
                None => {
                    return Err(CaError::InvalidPublicKey(
                        "EC key without a named curve".to_string(),
                    ));
                }
            }
        } else if alg_oid == oid::RSA_ENCRYPTION {
            &RSA_PKCS1_2048_8192_SHA256
        } else if alg_oid == oid::ED25519 {
            &ED25519
        } else {
            return Err(CaError::UnsupportedKeyAlgorithm(
                spki.algorithm.algorithm.to_id_string(),
            ));
        };
    ParsedPublicKey::new(verification, bits)
        .map_err(|e| CaError::InvalidPublicKey(format!("public key rejected: {e}")))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bits);
    let mut key_id = [0u8; 20];
    key_id.copy_from_slice(digest.as_ref());
    Ok(LeafKey { spki_der, key_id })
}

/// Everything about an X509-SVID that depends only on the CA that signs it, pre-encoded.
#[derive(Debug)]
pub(crate) struct LeafTemplate {
    /// The signature AlgorithmIdentifier of the CA key.
    sig_alg: &'static [u8],
    /// The CA's subject Name DER (the leaf's issuer), byte for byte.
    issuer: Vec<u8>,
    /// Basic constraints (cA=false, critical), key usage (digitalSignature, critical), extended
    /// key usage (serverAuth, clientAuth) and authority key identifier, encoded as Extensions.
    fixed_extensions: Vec<u8>,
}

impl LeafTemplate {
    /// Builds the template for a CA with subject `issuer_name_der` whose subject key identifier
    /// is `ca_key_id`, signing with `key`.
    pub(crate) fn new(key: &SigningKey, issuer_name_der: &[u8], ca_key_id: &[u8]) -> Self {
        let mut ext = Vec::with_capacity(96);
        // basicConstraints: critical, cA=false (the DEFAULT FALSE is omitted in DER).
        der::extension(&mut ext, oid::BASIC_CONSTRAINTS, true, |o| {
            nested(o, der::SEQUENCE, |_| {});
        });
        // keyUsage: critical, digitalSignature only.
        der::extension(&mut ext, oid::KEY_USAGE, true, |o| {
            tlv(o, der::BIT_STRING, &[0x07, 0x80]);
        });
        // extKeyUsage: serverAuth, clientAuth.
        der::extension(&mut ext, oid::EXT_KEY_USAGE, false, |o| {
            nested(o, der::SEQUENCE, |o| {
                tlv(o, der::OID, oid::SERVER_AUTH);
                tlv(o, der::OID, oid::CLIENT_AUTH);
            });
        });
        der::extension(&mut ext, oid::AUTHORITY_KEY_ID, false, |o| {
            nested(o, der::SEQUENCE, |o| tlv(o, der::IMPLICIT_0, ca_key_id));
        });
        LeafTemplate {
            sig_alg: key.signature_algorithm(),
            issuer: issuer_name_der.to_vec(),
            fixed_extensions: ext,
        }
    }
}

/// The variable part of an X509-SVID.
pub(crate) struct LeafParams<'a> {
    pub(crate) serial: &'a [u8; SERIAL_LEN],
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) key: &'a LeafKey<'a>,
    pub(crate) uri: &'a str,
    pub(crate) dns_names: &'a [String],
}

/// Builds and signs an X509-SVID.
pub(crate) fn sign_leaf(
    template: &LeafTemplate,
    key: &SigningKey,
    p: &LeafParams<'_>,
) -> Result<Vec<u8>, CaError> {
    let dns_len: usize = p.dns_names.iter().map(|d| d.len() + 4).sum();
    let mut out = Vec::with_capacity(
        400 + template.issuer.len() + p.key.spki_der.len() + p.uri.len() + dns_len,
    );
    let mut result = Ok(());
    nested(&mut out, der::SEQUENCE, |out| {
        let tbs_start = out.len();
        let tbs = nested(out, der::SEQUENCE, |out| -> Result<(), CaError> {
            tlv(out, der::EXPLICIT_0, &[der::INTEGER, 1, 2]);
            der::unsigned_integer(out, p.serial);
            out.extend_from_slice(template.sig_alg);
            out.extend_from_slice(&template.issuer);
            nested(out, der::SEQUENCE, |out| {
                der::time(out, p.not_before)?;
                der::time(out, p.not_after)
            })?;
            out.extend_from_slice(LEAF_SUBJECT);
            out.extend_from_slice(p.key.spki_der);
            nested(out, der::EXPLICIT_3, |out| {
                nested(out, der::SEQUENCE, |out| {
                    out.extend_from_slice(&template.fixed_extensions);
                    der::extension(out, oid::SUBJECT_KEY_ID, false, |o| {
                        tlv(o, der::OCTET_STRING, &p.key.key_id);
                    });
                    // The subject is not empty, so the SAN extension is not critical.
                    der::extension(out, oid::SUBJECT_ALT_NAME, false, |o| {
                        nested(o, der::SEQUENCE, |o| {
                            tlv(o, der::GN_URI, p.uri.as_bytes());
                            for dns in p.dns_names {
                                tlv(o, der::GN_DNS, dns.as_bytes());
                            }
                        });
                    });
                });
            });
            Ok(())
        });
        result = tbs.and_then(|()| {
            let sig = key.sign(&out[tbs_start..])?;
            out.extend_from_slice(template.sig_alg);
            der::bit_string(out, &sig);
            Ok(())
        });
    });
    result.map(|()| out)
}

/// The profile of a CA certificate to build.
pub(crate) struct CaCertParams<'a> {
    pub(crate) serial: &'a [u8; SERIAL_LEN],
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// Subject common name (`Signet CA <slot id>`).
    pub(crate) common_name: &'a str,
    /// The CA's URI SAN, `spiffe://<trust domain>`.
    pub(crate) uri: &'a str,
    /// SubjectPublicKeyInfo DER of the new CA key.
    pub(crate) spki_der: &'a [u8],
    /// Key identifier of the new CA key.
    pub(crate) key_id: &'a [u8],
}

/// The issuer of a CA certificate: itself (self-signed root) or an upstream CA.
pub(crate) struct CaIssuer<'a> {
    /// The issuer's subject Name DER; `None` for a self-signed certificate.
    pub(crate) name_der: Option<&'a [u8]>,
    /// The issuer's key identifier (for the authority key identifier).
    pub(crate) key_id: &'a [u8],
    /// The signing key.
    pub(crate) key: &'a SigningKey,
}

/// Encodes the subject Name of a Signet CA.
pub(crate) fn ca_subject(common_name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    der::name(
        &mut out,
        &[
            (oid::ORGANIZATION, "Signet"),
            (oid::COMMON_NAME, common_name),
        ],
    );
    out
}

/// Builds and signs a CA certificate: cA=true (critical), keyCertSign + cRLSign (critical), the
/// trust domain's URI SAN, subject and authority key identifiers, no name constraints.
pub(crate) fn sign_ca(p: &CaCertParams<'_>, issuer: &CaIssuer<'_>) -> Result<Vec<u8>, CaError> {
    let subject = ca_subject(p.common_name);
    let issuer_name = issuer.name_der.unwrap_or(&subject);
    let sig_alg = issuer.key.signature_algorithm();
    let mut out = Vec::with_capacity(1024);
    let mut result = Ok(());
    nested(&mut out, der::SEQUENCE, |out| {
        let tbs_start = out.len();
        let tbs = nested(out, der::SEQUENCE, |out| -> Result<(), CaError> {
            tlv(out, der::EXPLICIT_0, &[der::INTEGER, 1, 2]);
            der::unsigned_integer(out, p.serial);
            out.extend_from_slice(sig_alg);
            out.extend_from_slice(issuer_name);
            nested(out, der::SEQUENCE, |out| {
                der::time(out, p.not_before)?;
                der::time(out, p.not_after)
            })?;
            out.extend_from_slice(&subject);
            out.extend_from_slice(p.spki_der);
            nested(out, der::EXPLICIT_3, |out| {
                nested(out, der::SEQUENCE, |out| {
                    der::extension(out, oid::BASIC_CONSTRAINTS, true, |o| {
                        nested(o, der::SEQUENCE, |o| tlv(o, der::BOOLEAN, &[0xff]));
                    });
                    // keyCertSign (bit 5) and cRLSign (bit 6); one unused bit.
                    der::extension(out, oid::KEY_USAGE, true, |o| {
                        tlv(o, der::BIT_STRING, &[0x01, 0x06]);
                    });
                    der::extension(out, oid::SUBJECT_KEY_ID, false, |o| {
                        tlv(o, der::OCTET_STRING, p.key_id);
                    });
                    der::extension(out, oid::AUTHORITY_KEY_ID, false, |o| {
                        nested(o, der::SEQUENCE, |o| tlv(o, der::IMPLICIT_0, issuer.key_id));
                    });
                    der::extension(out, oid::SUBJECT_ALT_NAME, false, |o| {
                        nested(o, der::SEQUENCE, |o| tlv(o, der::GN_URI, p.uri.as_bytes()));
                    });
                });
            });
            Ok(())
        });
        result = tbs.and_then(|()| {
            let sig = issuer.key.sign(&out[tbs_start..])?;
            out.extend_from_slice(sig_alg);
            der::bit_string(out, &sig);
            Ok(())
        });
    });
    result.map(|()| out)
}

/// Key identifier of a parsed certificate: its subject key identifier extension if present,
/// otherwise the SHA-1 of its key bits.
pub(crate) fn cert_key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<u8> {
    use x509_parser::extensions::ParsedExtension;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectKeyIdentifier(ki) = ext.parsed_extension() {
            return ki.0.to_vec();
        }
    }
    key_identifier(&cert.public_key().subject_public_key.data)
}

/// Verifies that `cert` was signed by the holder of `issuer_spki` (ECDSA, RSA PKCS#1 v1.5 with
/// SHA-256/384/512, Ed25519).
pub(crate) fn verify_cert_signature(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    issuer_spki: &SubjectPublicKeyInfo<'_>,
) -> Result<(), String> {
    let alg = verification_algorithm(cert.signature_algorithm.algorithm.as_bytes(), issuer_spki)?;
    aws_lc_rs::signature::UnparsedPublicKey::new(alg, &issuer_spki.subject_public_key.data)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| "signature does not verify".to_string())
}

/// Picks the aws-lc-rs verification algorithm for a signature algorithm OID and a signer key.
/// SHA-1 and RSA-PSS are not accepted.
pub(crate) fn verification_algorithm(
    sig_oid: &[u8],
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static dyn aws_lc_rs::signature::VerificationAlgorithm, String> {
    use aws_lc_rs::signature as s;
    let key_oid = spki.algorithm.algorithm.as_bytes();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let curve = curve.as_ref().map(|c| c.as_bytes());
    let is_rsa = key_oid == oid::RSA_ENCRYPTION;
    let p256 = key_oid == oid::EC_PUBLIC_KEY && curve == Some(oid::P256);
    let p384 = key_oid == oid::EC_PUBLIC_KEY && curve == Some(oid::P384);
    let alg: &'static dyn s::VerificationAlgorithm = match sig_oid {
        o if o == oid::ECDSA_SHA256 && p256 => &s::ECDSA_P256_SHA256_ASN1,
        o if o == oid::ECDSA_SHA256 && p384 => &s::ECDSA_P384_SHA256_ASN1,
        o if o == oid::ECDSA_SHA384 && p256 => &s::ECDSA_P256_SHA384_ASN1,
        o if o == oid::ECDSA_SHA384 && p384 => &s::ECDSA_P384_SHA384_ASN1,
        o if o == oid::SHA256_WITH_RSA && is_rsa => &s::RSA_PKCS1_2048_8192_SHA256,
        o if o == oid::SHA384_WITH_RSA && is_rsa => &s::RSA_PKCS1_2048_8192_SHA384,
        o if o == oid::SHA512_WITH_RSA && is_rsa => &s::RSA_PKCS1_2048_8192_SHA512,
        o if o == oid::ED25519 && key_oid == oid::ED25519 => &s::ED25519,
        o if o == oid::ECDSA_SHA256
            || o == oid::ECDSA_SHA384
            || o == oid::SHA256_WITH_RSA
            || o == oid::SHA384_WITH_RSA
            || o == oid::SHA512_WITH_RSA
            || o == oid::ED25519 =>
        {
            return Err("the signature algorithm does not match the signer's key type".to_string());
        }
        _ => {
            return Err(format!(
                "unsupported signature algorithm {}",
                oid_string(sig_oid)
            ));
        }
    };
    Ok(alg)
}

/// Dotted form of an encoded OID, for messages.
fn oid_string(oid_bytes: &[u8]) -> String {
    x509_parser::der_parser::oid::Oid::new(std::borrow::Cow::Borrowed(oid_bytes)).to_id_string()
}
