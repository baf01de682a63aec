//! The SPIFFE trust bundle: a JWK Set with `spiffe_sequence` and `spiffe_refresh_hint`.
//!
//! Encoding follows the SPIFFE Trust Domain and Bundle standard (section 4) and the X509-SVID
//! standard (section 6); JWT authorities are represented as SPIRE and go-spiffe do:
//!
//! - an X.509 authority is a JWK with `use: "x509-svid"`, no `kid`, the key parameters of the
//!   certificate's public key (`kty` `EC` with `crv`/`x`/`y`, `RSA` with `n`/`e`, or `OKP` Ed25519
//!   with `crv`/`x`) and `x5c` holding exactly that one certificate (standard base64 DER);
//! - a JWT authority is a public JWK with `use: "jwt-svid"` and a non-empty `kid`;
//! - a WIT authority (the signing key of WIT-SVIDs, the incubating SPIFFE profile) is a public JWK
//!   with `use: "wit-svid"` and a non-empty `kid`, exactly like a JWT authority.
//!
//! Decoding is strict where a lenient reading could widen trust, and lenient where the standard says
//! to ignore:
//!
//! - elements with an unknown `use` or an unknown `kty` are ignored (standard 4.2.1, 4.2.2);
//! - an `x509-svid` element must carry exactly one `x5c` certificate whose public key equals the
//!   element's key parameters. (X509-SVID 6.2 would skip an element without `x5c` and ignore extra
//!   certificates; like go-spiffe and SPIRE we reject both, so that a malformed bundle is noticed.)
//! - a `jwt-svid` or `wit-svid` element must have a non-empty `kid` and well-formed public key
//!   parameters; key IDs are unique across all of them, JWT and WIT keys alike (WIT-SVID standard,
//!   section 6.1), so a verifier never picks a key of the wrong kind by `kid`;
//! - any private key parameter (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) is an error;
//! - an empty `keys` array is valid: it means every key of the trust domain has been revoked.
//!
//! Errors name the index of the offending element in `keys` and the offending parameter.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::id::TrustDomain;

/// The `use` value of an X.509 authority.
pub const USE_X509_SVID: &str = "x509-svid";
/// The `use` value of a JWT authority.
pub const USE_JWT_SVID: &str = "jwt-svid";
/// The `use` value of a WIT authority.
pub const USE_WIT_SVID: &str = "wit-svid";

/// JWK parameters that carry private key material; a bundle must never contain them (nor may a
/// WIT-SVID's `cnf.jwk`).
pub(crate) const PRIVATE_PARAMETERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A token signing authority (of JWT-SVIDs in [`Bundle::jwt_authorities`], of WIT-SVIDs in
/// [`Bundle::wit_authorities`]): a public JWK and its key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// The key ID (`kid`), never empty.
    pub key_id: String,
    /// The public JWK as a JSON object. It carries `kid` (equal to [`JwtAuthority::key_id`]) and,
    /// when decoded from a bundle, its `use` (`jwt-svid` or `wit-svid`); [`Bundle::to_json`] adds
    /// either when absent.
    pub jwk: Value,
}

/// The trust bundle of one trust domain.
///
/// The trust domain is not part of the JSON document: it is recorded next to it, as the standard
/// requires, and given to [`Bundle::from_json`] / [`Bundle::from_pem`] by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The trust domain whose keys these are.
    pub trust_domain: TrustDomain,
    /// X.509 authorities (CA certificates), DER, in document order.
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT authorities, in document order.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// WIT authorities (`use: "wit-svid"`), in document order. Their key IDs differ from every
    /// JWT authority's.
    pub wit_authorities: Vec<JwtAuthority>,
    /// `spiffe_sequence`; 0 when the document has none.
    pub sequence: u64,
    /// `spiffe_refresh_hint`, in seconds.
    pub refresh_hint: Option<u64>,
}

/// Why a bundle could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document is not JSON.
    #[error("bundle is not valid JSON: {0}")]
    Json(String),
    /// The document is JSON but not an object.
    #[error("bundle document is not a JSON object")]
    NotAnObject,
    /// The document has no `keys` parameter.
    #[error("bundle document has no `keys` parameter")]
    MissingKeys,
    /// A top-level parameter (`keys`, `spiffe_sequence`, `spiffe_refresh_hint`) has a bad value.
    #[error("bundle parameter `{field}` {reason}")]
    InvalidParameter {
        /// The parameter.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An element of `keys` is not a JSON object.
    #[error("key {index}: not a JSON object")]
    KeyNotAnObject {
        /// Index in `keys`.
        index: usize,
    },
    /// An element of `keys` lacks a required parameter.
    #[error("key {index}: required parameter `{field}` is missing")]
    KeyMissingParameter {
        /// Index in `keys`.
        index: usize,
        /// The parameter.
        field: &'static str,
    },
    /// An element of `keys` has a parameter with a bad value.
    #[error("key {index}: parameter `{field}` {reason}")]
    KeyInvalidParameter {
        /// Index in `keys`.
        index: usize,
        /// The parameter.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An element of `keys` carries private key material.
    #[error("key {index}: contains the private key parameter `{field}`")]
    PrivateKeyParameter {
        /// Index in `keys`.
        index: usize,
        /// The parameter.
        field: &'static str,
    },
    /// An `x509-svid` element has no certificate or more than one in `x5c`.
    #[error(
        "key {index}: an x509-svid key must have exactly one certificate in `x5c`, found {count}"
    )]
    X5cCount {
        /// Index in `keys`.
        index: usize,
        /// How many certificates were found.
        count: usize,
    },
    /// The `x5c` certificate of an `x509-svid` element is not a DER X.509 certificate.
    #[error("key {index}: the `x5c` certificate is not a valid DER X.509 certificate: {reason}")]
    X5cCertificate {
        /// Index in `keys`.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// A key parameter of an `x509-svid` element differs from its `x5c` certificate's public key.
    #[error(
        "key {index}: parameter `{field}` does not match the public key of the `x5c` certificate"
    )]
    KeyMismatch {
        /// Index in `keys`.
        index: usize,
        /// The first parameter found to differ.
        field: &'static str,
    },
    /// A `jwt-svid` or `wit-svid` element has no `kid`, or an empty one.
    #[error("key {index}: a jwt-svid or wit-svid key must have a non-empty `kid`")]
    MissingKeyId {
        /// Index in `keys`.
        index: usize,
    },
    /// Two elements of the same `use` (`jwt-svid` or `wit-svid`) share a `kid`.
    #[error("key {index}: key ID {kid:?} is already used by an earlier key with the same `use`")]
    DuplicateKeyId {
        /// Index in `keys` of the second one.
        index: usize,
        /// The shared key ID.
        kid: String,
    },
    /// A `jwt-svid` and a `wit-svid` element share a `kid`: key IDs are unique across the whole
    /// bundle (WIT-SVID standard, section 6.1), whichever comes first.
    #[error(
        "key {index}: key ID {kid:?} of this {usage} key is already used by the {other_usage} key {other_index}"
    )]
    KeyIdSharedAcrossUses {
        /// Index in `keys` of the second one.
        index: usize,
        /// The shared key ID.
        kid: String,
        /// The `use` of the second one.
        usage: &'static str,
        /// Index in `keys` of the first one.
        other_index: usize,
        /// The `use` of the first one.
        other_usage: &'static str,
    },
    /// An X.509 authority cannot be encoded.
    #[error("X.509 authority {index}: {reason}")]
    X509Authority {
        /// Index in [`Bundle::x509_authorities`].
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JWT authority cannot be encoded.
    #[error("JWT authority {index}: {reason}")]
    JwtAuthority {
        /// Index in [`Bundle::jwt_authorities`].
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A WIT authority cannot be encoded (including a key ID that a JWT authority also uses).
    #[error("WIT authority {index}: {reason}")]
    WitAuthority {
        /// Index in [`Bundle::wit_authorities`].
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The PEM input is malformed.
    #[error("PEM input is malformed: {0}")]
    Pem(String),
    /// The PEM input has no block at all.
    #[error("PEM input contains no CERTIFICATE block")]
    NoCertificates,
    /// A PEM block is not a `CERTIFICATE` block.
    #[error("PEM block {index} is a {tag:?} block, only CERTIFICATE blocks are allowed")]
    PemNotCertificate {
        /// Index of the block.
        index: usize,
        /// Its label.
        tag: String,
    },
    /// A PEM `CERTIFICATE` block does not hold a DER X.509 certificate.
    #[error("PEM block {index} is not a valid DER X.509 certificate: {reason}")]
    PemCertificate {
        /// Index of the block.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
}

impl Bundle {
    /// An empty bundle for `trust_domain` (sequence 0, no refresh hint).
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            wit_authorities: Vec::new(),
            sequence: 0,
            refresh_hint: None,
        }
    }

    /// Encodes the SPIFFE bundle document (pretty-printed JSON).
    ///
    /// `spiffe_sequence` is always written, `spiffe_refresh_hint` when set. Fails if an X.509
    /// authority is not a parsable certificate with a supported public key (EC P-256/P-384/P-521,
    /// RSA, Ed25519), if a JWT or WIT authority is not a valid public JWK for its `key_id`, or if
    /// a key ID is used twice (by JWT and WIT authorities alike). The keys are written X.509
    /// authorities first, then JWT, then WIT authorities.
    pub fn to_json(&self) -> Result<String, BundleError> {
        let mut keys = Vec::with_capacity(
            self.x509_authorities.len() + self.jwt_authorities.len() + self.wit_authorities.len(),
        );
        for (index, der) in self.x509_authorities.iter().enumerate() {
            keys.push(Value::Object(
                x509_authority_jwk(der)
                    .map_err(|reason| BundleError::X509Authority { index, reason })?,
            ));
        }
        let (jwt, wit) = self.token_authority_jwks()?;
        keys.extend(jwt);
        keys.extend(wit);
        let mut doc = Map::new();
        doc.insert("keys".to_owned(), Value::Array(keys));
        doc.insert("spiffe_sequence".to_owned(), Value::from(self.sequence));
        if let Some(hint) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".to_owned(), Value::from(hint));
        }
        serde_json::to_string_pretty(&Value::Object(doc))
            .map_err(|e| BundleError::Json(e.to_string()))
    }

    /// The JWT authorities alone as a plain JWK Set (`{"keys": [...]}`, compact JSON): each key
    /// with its `kid` and `use: "jwt-svid"`, no X.509 authority and no `spiffe_*` parameter. This
    /// is what the Workload API's `FetchJWTBundles` sends (the standard forbids keys with other
    /// uses there). An empty set when the bundle has no JWT authority. The WIT authorities are
    /// checked too (a key ID they share with a JWT authority is an error) but never written.
    pub fn jwt_jwks_json(&self) -> Result<String, BundleError> {
        let (jwt, _) = self.token_authority_jwks()?;
        jwks_json(jwt)
    }

    /// The WIT authorities alone as a plain JWK Set (`{"keys": [...]}`, compact JSON): each key
    /// with its `kid` and `use: "wit-svid"`. This is what the Workload API's `FetchWITBundles`
    /// sends. An empty set when the bundle has no WIT authority (the trust domain does not issue
    /// WIT-SVIDs). The JWT authorities are checked but never written.
    pub fn wit_jwks_json(&self) -> Result<String, BundleError> {
        let (_, wit) = self.token_authority_jwks()?;
        jwks_json(wit)
    }

    /// The JWT and the WIT authorities as checked JWKs (with `kid` and `use`), refusing a key ID
    /// used twice, within one kind or across both.
    fn token_authority_jwks(&self) -> Result<(Vec<Value>, Vec<Value>), BundleError> {
        let mut kids = HashMap::new();
        let jwt = authority_jwks(
            &self.jwt_authorities,
            "JWT",
            USE_JWT_SVID,
            &mut kids,
            |index, reason| BundleError::JwtAuthority { index, reason },
        )?;
        let wit = authority_jwks(
            &self.wit_authorities,
            "WIT",
            USE_WIT_SVID,
            &mut kids,
            |index, reason| BundleError::WitAuthority { index, reason },
        )?;
        Ok((jwt, wit))
    }

    /// Decodes a SPIFFE bundle document for `trust_domain`.
    pub fn from_json(trust_domain: &TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let doc = doc.as_object().ok_or(BundleError::NotAnObject)?;
        let keys = match doc.get("keys") {
            None => return Err(BundleError::MissingKeys),
            Some(Value::Array(keys)) => keys,
            Some(_) => {
                return Err(BundleError::InvalidParameter {
                    field: "keys",
                    reason: "must be an array",
                });
            }
        };
        let sequence = optional_u64(doc, "spiffe_sequence")?.unwrap_or(0);
        let refresh_hint = optional_u64(doc, "spiffe_refresh_hint")?;

        let mut bundle = Bundle::new(trust_domain.clone());
        bundle.sequence = sequence;
        bundle.refresh_hint = refresh_hint;
        // Key ID -> (use, index) of the first element that has it.
        let mut kids: HashMap<String, (&'static str, usize)> = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            let key = key
                .as_object()
                .ok_or(BundleError::KeyNotAnObject { index })?;
            let usage = match key.get("use") {
                None => {
                    return Err(BundleError::KeyMissingParameter {
                        index,
                        field: "use",
                    });
                }
                Some(Value::String(u)) => u.as_str(),
                Some(_) => return Err(invalid(index, "use", "must be a string")),
            };
            let usage = match usage {
                USE_X509_SVID => USE_X509_SVID,
                USE_JWT_SVID => USE_JWT_SVID,
                USE_WIT_SVID => USE_WIT_SVID,
                // Standard 4.2.2: unknown `use` values MUST be ignored.
                _ => continue,
            };
            for field in PRIVATE_PARAMETERS {
                if key.contains_key(field) {
                    return Err(BundleError::PrivateKeyParameter { index, field });
                }
            }
            let kty = match key.get("kty") {
                None => {
                    return Err(BundleError::KeyMissingParameter {
                        index,
                        field: "kty",
                    });
                }
                Some(Value::String(k)) => k.as_str(),
                Some(_) => return Err(invalid(index, "kty", "must be a string")),
            };
            if !KNOWN_KTYS.contains(&kty) {
                // Standard 4.2.1: unknown key types MUST be ignored.
                continue;
            }
            if usage == USE_X509_SVID {
                bundle
                    .x509_authorities
                    .push(decode_x509_key(index, kty, key)?);
            } else {
                let key_id = match key.get("kid") {
                    Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
                    Some(Value::String(_)) | None => {
                        return Err(BundleError::MissingKeyId { index });
                    }
                    Some(_) => return Err(invalid(index, "kid", "must be a string")),
                };
                check_public_jwk(kty, key).map_err(|f| f.at(index))?;
                match kids.get(&key_id) {
                    Some((other_usage, _)) if *other_usage == usage => {
                        return Err(BundleError::DuplicateKeyId { index, kid: key_id });
                    }
                    Some((other_usage, other_index)) => {
                        return Err(BundleError::KeyIdSharedAcrossUses {
                            index,
                            kid: key_id,
                            usage,
                            other_index: *other_index,
                            other_usage,
                        });
                    }
                    None => {
                        kids.insert(key_id.clone(), (usage, index));
                    }
                }
                let authority = JwtAuthority {
                    key_id,
                    jwk: Value::Object(key.clone()),
                };
                if usage == USE_JWT_SVID {
                    bundle.jwt_authorities.push(authority);
                } else {
                    bundle.wit_authorities.push(authority);
                }
            }
        }
        Ok(bundle)
    }

    /// Decodes a sequence of PEM `CERTIFICATE` blocks as X.509 authorities (sequence 0, no refresh
    /// hint, no JWT or WIT authorities).
    ///
    /// Text between blocks is ignored (as `openssl` writes it); any other block type, an unterminated
    /// block, a block that is not a certificate, or input without any block is an error.
    pub fn from_pem(trust_domain: &TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        let blocks = pem::parse_many(pem).map_err(|e| BundleError::Pem(e.to_string()))?;
        let begins = pem.windows(11).filter(|w| *w == b"-----BEGIN ").count();
        if begins != blocks.len() {
            return Err(BundleError::Pem(format!(
                "found {begins} BEGIN lines but only {} complete blocks",
                blocks.len()
            )));
        }
        if blocks.is_empty() {
            return Err(BundleError::NoCertificates);
        }
        let mut bundle = Bundle::new(trust_domain.clone());
        for (index, block) in blocks.into_iter().enumerate() {
            if block.tag() != "CERTIFICATE" {
                return Err(BundleError::PemNotCertificate {
                    index,
                    tag: block.tag().to_owned(),
                });
            }
            let der = block.into_contents();
            parse_certificate(&der)
                .map_err(|reason| BundleError::PemCertificate { index, reason })?;
            bundle.x509_authorities.push(der);
        }
        Ok(bundle)
    }

    /// Encodes the X.509 authorities as PEM `CERTIFICATE` blocks (LF line endings), in order.
    pub fn to_pem(&self) -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        self.x509_authorities
            .iter()
            .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.clone()), config))
            .collect()
    }
}

const KNOWN_KTYS: [&str; 3] = ["EC", "RSA", "OKP"];

fn invalid(index: usize, field: &'static str, reason: &str) -> BundleError {
    BundleError::KeyInvalidParameter {
        index,
        field,
        reason: reason.to_owned(),
    }
}

fn optional_u64(doc: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, BundleError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(BundleError::InvalidParameter {
            field,
            reason: "must be a non-negative integer",
        }),
    }
}

/// A problem with one JWK, before it is tied to an index.
#[derive(Debug)]
pub(crate) enum KeyFault {
    Missing(&'static str),
    Invalid(&'static str, String),
}

impl KeyFault {
    fn at(self, index: usize) -> BundleError {
        match self {
            KeyFault::Missing(field) => BundleError::KeyMissingParameter { index, field },
            KeyFault::Invalid(field, reason) => BundleError::KeyInvalidParameter {
                index,
                field,
                reason,
            },
        }
    }
}

impl std::fmt::Display for KeyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFault::Missing(field) => write!(f, "required parameter `{field}` is missing"),
            KeyFault::Invalid(field, reason) => write!(f, "parameter `{field}` {reason}"),
        }
    }
}

/// The public key parameters of a JWK, decoded to bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyParams {
    Ec {
        crv: &'static str,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Okp {
        crv: &'static str,
        x: Vec<u8>,
    },
}

impl KeyParams {
    fn kty(&self) -> &'static str {
        match self {
            KeyParams::Ec { .. } => "EC",
            KeyParams::Rsa { .. } => "RSA",
            KeyParams::Okp { .. } => "OKP",
        }
    }

    /// Writes `kty` and the key parameters into `jwk`.
    pub(crate) fn write(&self, jwk: &mut Map<String, Value>) {
        let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
        jwk.insert("kty".to_owned(), Value::from(self.kty()));
        match self {
            KeyParams::Ec { crv, x, y } => {
                jwk.insert("crv".to_owned(), Value::from(*crv));
                jwk.insert("x".to_owned(), b64(x));
                jwk.insert("y".to_owned(), b64(y));
            }
            KeyParams::Rsa { n, e } => {
                jwk.insert("n".to_owned(), b64(n));
                jwk.insert("e".to_owned(), b64(e));
            }
            KeyParams::Okp { crv, x } => {
                jwk.insert("crv".to_owned(), Value::from(*crv));
                jwk.insert("x".to_owned(), b64(x));
            }
        }
    }
}

/// Coordinate length in bytes of the curves a JWK `EC` key may use.
fn ec_coordinate_len(crv: &str) -> Option<(&'static str, usize)> {
    match crv {
        "P-256" => Some(("P-256", 32)),
        "P-384" => Some(("P-384", 48)),
        "P-521" => Some(("P-521", 66)),
        _ => None,
    }
}

/// Strips the leading zero octets of a big-endian unsigned integer (base64urlUInt is minimal).
fn minimal_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[start..];
    if trimmed.is_empty() {
        vec![0]
    } else {
        trimmed.to_vec()
    }
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes of trailing data", rest.len()));
    }
    Ok(cert)
}

/// The JWK key parameters of a certificate's subject public key.
fn cert_key_params(cert: &X509Certificate<'_>) -> Result<KeyParams, String> {
    spki_key_params(cert.public_key())
}

/// The JWK key parameters of a SubjectPublicKeyInfo (EC P-256/P-384/P-521 as an uncompressed
/// point, RSA, Ed25519). The shape is checked, not that an EC point is on its curve.
pub(crate) fn spki_key_params(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyParams, String> {
    let alg = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.as_ref();
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or("EC public key without a named curve")?;
        let (crv, len) = if curve == OID_EC_P256 {
            ("P-256", 32)
        } else if curve == OID_NIST_EC_P384 {
            ("P-384", 48)
        } else if curve == OID_NIST_EC_P521 {
            ("P-521", 66)
        } else {
            return Err(format!("unsupported EC curve {curve}"));
        };
        if key.len() != 1 + 2 * len || key[0] != 0x04 {
            return Err("EC public key is not an uncompressed point".to_owned());
        }
        Ok(KeyParams::Ec {
            crv,
            x: key[1..=len].to_vec(),
            y: key[1 + len..].to_vec(),
        })
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Ok(KeyParams::Rsa {
                n: minimal_uint(rsa.modulus),
                e: minimal_uint(rsa.exponent),
            }),
            _ => Err("malformed RSA public key".to_owned()),
        }
    } else if *alg == OID_SIG_ED25519 {
        if key.len() != 32 {
            return Err("malformed Ed25519 public key".to_owned());
        }
        Ok(KeyParams::Okp {
            crv: "Ed25519",
            x: key.to_vec(),
        })
    } else {
        Err(format!(
            "unsupported public key algorithm {alg} (supported: EC P-256/P-384/P-521, RSA, Ed25519)"
        ))
    }
}

fn b64url_param(jwk: &Map<String, Value>, field: &'static str) -> Result<Vec<u8>, KeyFault> {
    match jwk.get(field) {
        None => Err(KeyFault::Missing(field)),
        Some(Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| KeyFault::Invalid(field, "is not unpadded base64url".to_owned())),
        Some(_) => Err(KeyFault::Invalid(field, "must be a string".to_owned())),
    }
}

pub(crate) fn str_param<'a>(
    jwk: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, KeyFault> {
    match jwk.get(field) {
        None => Err(KeyFault::Missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(KeyFault::Invalid(field, "must be a string".to_owned())),
    }
}

/// Reads the key parameters of a JWK of type `kty` (one of [`KNOWN_KTYS`]) and checks their shape.
pub(crate) fn read_key_params(kty: &str, jwk: &Map<String, Value>) -> Result<KeyParams, KeyFault> {
    match kty {
        "EC" => {
            let crv = str_param(jwk, "crv")?;
            let (crv, len) = ec_coordinate_len(crv).ok_or_else(|| {
                KeyFault::Invalid("crv", format!("names an unsupported curve {crv:?}"))
            })?;
            let x = b64url_param(jwk, "x")?;
            let y = b64url_param(jwk, "y")?;
            if x.len() != len {
                return Err(KeyFault::Invalid(
                    "x",
                    format!("must be {len} bytes for {crv}"),
                ));
            }
            if y.len() != len {
                return Err(KeyFault::Invalid(
                    "y",
                    format!("must be {len} bytes for {crv}"),
                ));
            }
            Ok(KeyParams::Ec { crv, x, y })
        }
        "RSA" => {
            let n = b64url_param(jwk, "n")?;
            let e = b64url_param(jwk, "e")?;
            if n.is_empty() || n.iter().all(|b| *b == 0) {
                return Err(KeyFault::Invalid(
                    "n",
                    "must be a positive integer".to_owned(),
                ));
            }
            if e.is_empty() || e.iter().all(|b| *b == 0) {
                return Err(KeyFault::Invalid(
                    "e",
                    "must be a positive integer".to_owned(),
                ));
            }
            Ok(KeyParams::Rsa {
                n: minimal_uint(&n),
                e: minimal_uint(&e),
            })
        }
        "OKP" => {
            let crv = str_param(jwk, "crv")?;
            if crv != "Ed25519" {
                return Err(KeyFault::Invalid(
                    "crv",
                    format!("names an unsupported curve {crv:?} (only Ed25519 signs)"),
                ));
            }
            let x = b64url_param(jwk, "x")?;
            if x.len() != 32 {
                return Err(KeyFault::Invalid(
                    "x",
                    "must be 32 bytes for Ed25519".to_owned(),
                ));
            }
            Ok(KeyParams::Okp { crv: "Ed25519", x })
        }
        other => Err(KeyFault::Invalid(
            "kty",
            format!("{other:?} is not supported (EC, RSA, OKP)"),
        )),
    }
}

/// Checks that a JWT authority's JWK holds a usable public key: parameters present, well-formed,
/// and (for EC and Ed25519) a point that aws-lc accepts. Returns the decoded parameters.
pub(crate) fn check_public_jwk(kty: &str, jwk: &Map<String, Value>) -> Result<KeyParams, KeyFault> {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED, ED25519,
        ParsedPublicKey,
    };
    let params = read_key_params(kty, jwk)?;
    match &params {
        KeyParams::Ec { crv, x, y } => {
            let alg = match *crv {
                "P-256" => &ECDSA_P256_SHA256_FIXED,
                "P-384" => &ECDSA_P384_SHA384_FIXED,
                _ => &ECDSA_P521_SHA512_FIXED,
            };
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            ParsedPublicKey::new(alg, &point)
                .map_err(|_| KeyFault::Invalid("x", format!("(x, y) is not a point on {crv}")))?;
        }
        KeyParams::Okp { x, .. } => {
            ParsedPublicKey::new(&ED25519, x)
                .map_err(|_| KeyFault::Invalid("x", "is not an Ed25519 public key".to_owned()))?;
        }
        KeyParams::Rsa { .. } => {}
    }
    Ok(params)
}

fn decode_x509_key(
    index: usize,
    kty: &str,
    key: &Map<String, Value>,
) -> Result<Vec<u8>, BundleError> {
    let certs = match key.get("x5c") {
        None => return Err(BundleError::X5cCount { index, count: 0 }),
        Some(Value::Array(certs)) => certs,
        Some(_) => return Err(invalid(index, "x5c", "must be an array of strings")),
    };
    let [cert] = certs.as_slice() else {
        return Err(BundleError::X5cCount {
            index,
            count: certs.len(),
        });
    };
    let Value::String(cert) = cert else {
        return Err(invalid(index, "x5c", "must be an array of strings"));
    };
    let der = STANDARD
        .decode(cert)
        .map_err(|_| invalid(index, "x5c", "does not hold standard (padded) base64"))?;
    let parsed =
        parse_certificate(&der).map_err(|reason| BundleError::X5cCertificate { index, reason })?;
    let Ok(expected) = cert_key_params(&parsed) else {
        // The certificate's key has no JWK form we know, so no `kty` we know can describe it.
        return Err(BundleError::KeyMismatch {
            index,
            field: "kty",
        });
    };
    if expected.kty() != kty {
        return Err(BundleError::KeyMismatch {
            index,
            field: "kty",
        });
    }
    if let KeyParams::Ec { crv, .. } | KeyParams::Okp { crv, .. } = &expected
        && str_param(key, "crv").map_err(|f| f.at(index))? != *crv
    {
        return Err(BundleError::KeyMismatch {
            index,
            field: "crv",
        });
    }
    let given = read_key_params(kty, key).map_err(|f| f.at(index))?;
    let mismatch = |field| Err(BundleError::KeyMismatch { index, field });
    match (&expected, &given) {
        (
            KeyParams::Ec { crv, x, y },
            KeyParams::Ec {
                crv: c,
                x: gx,
                y: gy,
            },
        ) => {
            if crv != c {
                return mismatch("crv");
            }
            if x != gx {
                return mismatch("x");
            }
            if y != gy {
                return mismatch("y");
            }
        }
        (KeyParams::Rsa { n, e }, KeyParams::Rsa { n: gn, e: ge }) => {
            if n != gn {
                return mismatch("n");
            }
            if e != ge {
                return mismatch("e");
            }
        }
        (KeyParams::Okp { crv, x }, KeyParams::Okp { crv: c, x: gx }) => {
            if crv != c {
                return mismatch("crv");
            }
            if x != gx {
                return mismatch("x");
            }
        }
        _ => return mismatch("kty"),
    }
    Ok(der)
}

/// The bundle JWK of one X.509 authority.
fn x509_authority_jwk(der: &[u8]) -> Result<Map<String, Value>, String> {
    let cert =
        parse_certificate(der).map_err(|e| format!("not a valid DER X.509 certificate: {e}"))?;
    let params = cert_key_params(&cert)?;
    let mut jwk = Map::new();
    jwk.insert("use".to_owned(), Value::from(USE_X509_SVID));
    params.write(&mut jwk);
    jwk.insert(
        "x5c".to_owned(),
        Value::Array(vec![Value::String(STANDARD.encode(der))]),
    );
    Ok(jwk)
}

/// The checked JWKs of `authorities` (of `kind` `JWT` or `WIT`, whose `use` is `usage`); `kids`
/// holds the key IDs of the authorities encoded before, each with its kind and index, and gets
/// these: a key ID seen before is refused with `error`.
fn authority_jwks<'a>(
    authorities: &'a [JwtAuthority],
    kind: &'static str,
    usage: &'static str,
    kids: &mut HashMap<&'a str, (&'static str, usize)>,
    error: fn(usize, String) -> BundleError,
) -> Result<Vec<Value>, BundleError> {
    let mut keys = Vec::with_capacity(authorities.len());
    for (index, authority) in authorities.iter().enumerate() {
        let jwk = authority_jwk(authority, usage).map_err(|reason| error(index, reason))?;
        if let Some((other_kind, other_index)) =
            kids.insert(authority.key_id.as_str(), (kind, index))
        {
            return Err(error(
                index,
                format!(
                    "key ID {:?} is also used by {other_kind} authority {other_index}",
                    authority.key_id
                ),
            ));
        }
        keys.push(Value::Object(jwk));
    }
    Ok(keys)
}

/// A plain JWK Set of `keys`, compact.
fn jwks_json(keys: Vec<Value>) -> Result<String, BundleError> {
    let mut doc = Map::new();
    doc.insert("keys".to_owned(), Value::Array(keys));
    serde_json::to_string(&Value::Object(doc)).map_err(|e| BundleError::Json(e.to_string()))
}

/// The bundle JWK of one JWT or WIT authority (`usage` is its `use`): its JWK with `use` and
/// `kid` filled in, checked.
fn authority_jwk(authority: &JwtAuthority, usage: &str) -> Result<Map<String, Value>, String> {
    if authority.key_id.is_empty() {
        return Err("key ID is empty".to_owned());
    }
    let Value::Object(jwk) = &authority.jwk else {
        return Err("jwk is not a JSON object".to_owned());
    };
    let mut jwk = jwk.clone();
    match jwk.get("kid") {
        None => {
            jwk.insert("kid".to_owned(), Value::from(authority.key_id.as_str()));
        }
        Some(Value::String(kid)) if *kid == authority.key_id => {}
        Some(_) => {
            return Err(format!(
                "jwk `kid` differs from key ID {:?}",
                authority.key_id
            ));
        }
    }
    match jwk.get("use") {
        None => {
            jwk.insert("use".to_owned(), Value::from(usage));
        }
        Some(Value::String(u)) if u == usage => {}
        Some(_) => return Err(format!("jwk `use` is not {usage:?}")),
    }
    for field in PRIVATE_PARAMETERS {
        if jwk.contains_key(field) {
            return Err(format!("jwk contains the private key parameter `{field}`"));
        }
    }
    let kty = str_param(&jwk, "kty").map_err(|f| f.to_string())?;
    if !KNOWN_KTYS.contains(&kty) {
        return Err(format!("jwk `kty` {kty:?} is not supported (EC, RSA, OKP)"));
    }
    check_public_jwk(kty, &jwk).map_err(|f| f.to_string())?;
    Ok(jwk)
}
