//! JWT-SVID verification, usable without the CA: JWS compact parsing with an algorithm allowlist,
//! signature verification against the JWT authorities of a trust bundle, and the JWT-SVID claim
//! rules of the SPIFFE JWT-SVID standard.
//!
//! [`validate_jwt_svid`](crate::jwt::validate_jwt_svid) checks, in this order, and fails with a
//! precise [`JwtSvidError`](crate::jwt::JwtSvidError):
//!
//! 1. the token is at most [`MAX_TOKEN_LEN`](crate::jwt::MAX_TOKEN_LEN) bytes and has exactly
//!    three `.`-separated segments of unpadded, canonical base64url;
//! 2. the JOSE header is a JSON object whose `alg` is one of RS/ES/PS 256/384/512
//!    ([`Algorithm`](crate::jwt::Algorithm)): `none`, `HS*`, `EdDSA` and anything else are
//!    refused here, before any key is looked at; `crit` is refused (no extension is understood);
//!    `typ`, if present, is `JWT` or `JOSE` (so a `wit+jwt` WIT-SVID is refused); `kid` is a
//!    non-empty string;
//! 3. the claims are a JSON object whose `sub` is a valid SPIFFE ID;
//! 4. the bundle of the `sub`'s trust domain (and only that one) holds a JWT authority with that
//!    `kid`, of the type the algorithm needs (`ES256` an EC P-256 key, `ES384` P-384, `ES512`
//!    P-521, `RS*`/`PS*` an RSA key of 2048 to 8192 bits; a JWK `alg`, when present, must equal the
//!    token's);
//! 5. the signature verifies (aws-lc-rs; ECDSA signatures in the fixed-size `R || S` form of
//!    RFC 7518 section 3.4);
//! 6. `exp` is present and in the future, `nbf` and `iat` (when present) are not in the future,
//!    each with the caller's leeway;
//! 7. `aud` (a string or an array of strings) contains the expected audience.
//!
//! [`verify_jws`](crate::jwt::verify_jws) is the lower layer (steps 1, 2 without the `typ`/`kid`
//! rules, and 5) for a key given directly; it checks no claim.

use std::borrow::Borrow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED,
    EcdsaVerificationAlgorithm, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
    RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512, RSA_PSS_2048_8192_SHA256,
    RSA_PSS_2048_8192_SHA384, RSA_PSS_2048_8192_SHA512, RsaParameters, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::bundle::{Bundle, JwtAuthority};
use crate::id::{IdError, SpiffeId, TrustDomain};

/// The longest token accepted, in bytes (a JWT-SVID is a few hundred bytes).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The `typ` values a JWT-SVID may carry.
pub const ACCEPTED_TYPES: [&str; 2] = ["JWT", "JOSE"];

/// A JWS algorithm allowed for JWT-SVIDs: RS/ES/PS with SHA-256/384/512, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// ECDSA on P-521 with SHA-512.
    Es512,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, 32-byte salt).
    Ps256,
    /// RSASSA-PSS with SHA-384 (MGF1 SHA-384, 48-byte salt).
    Ps384,
    /// RSASSA-PSS with SHA-512 (MGF1 SHA-512, 64-byte salt).
    Ps512,
}

impl Algorithm {
    /// Every allowed algorithm.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Es512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
    ];

    /// The algorithm named exactly `name` (case-sensitive, as RFC 7515 requires), if allowed.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The JWS name, e.g. `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es512 => "ES512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
        }
    }

    /// The JWK `kty` of the keys this algorithm uses: `EC` or `RSA`.
    pub fn key_type(self) -> &'static str {
        match self.curve() {
            Some(_) => "EC",
            None => "RSA",
        }
    }

    /// The JWK `crv` an ECDSA algorithm requires (`P-256`, `P-384`, `P-521`); `None` for RSA.
    pub fn curve(self) -> Option<&'static str> {
        match self {
            Algorithm::Es256 => Some("P-256"),
            Algorithm::Es384 => Some("P-384"),
            Algorithm::Es512 => Some("P-521"),
            _ => None,
        }
    }

    fn ecdsa(self) -> Option<(&'static EcdsaVerificationAlgorithm, usize)> {
        match self {
            Algorithm::Es256 => Some((&ECDSA_P256_SHA256_FIXED, 32)),
            Algorithm::Es384 => Some((&ECDSA_P384_SHA384_FIXED, 48)),
            Algorithm::Es512 => Some((&ECDSA_P521_SHA512_FIXED, 66)),
            _ => None,
        }
    }

    fn rsa(self) -> Option<&'static RsaParameters> {
        match self {
            Algorithm::Rs256 => Some(&RSA_PKCS1_2048_8192_SHA256),
            Algorithm::Rs384 => Some(&RSA_PKCS1_2048_8192_SHA384),
            Algorithm::Rs512 => Some(&RSA_PKCS1_2048_8192_SHA512),
            Algorithm::Ps256 => Some(&RSA_PSS_2048_8192_SHA256),
            Algorithm::Ps384 => Some(&RSA_PSS_2048_8192_SHA384),
            Algorithm::Ps512 => Some(&RSA_PSS_2048_8192_SHA512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A segment of a JWS compact serialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The protected header.
    Header,
    /// The payload (the claims).
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Header => "header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        })
    }
}

/// Why a JWS or a JWT-SVID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes long; at most {MAX_TOKEN_LEN} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The token does not have exactly three `.`-separated segments.
    #[error("a JWS compact serialization has 3 segments separated by '.', this token has {0}")]
    SegmentCount(usize),
    /// A segment is not unpadded, canonical base64url.
    #[error("the {0} segment is not unpadded base64url")]
    Base64(Segment),
    /// The header is not a JSON object.
    #[error("the JOSE header is not a JSON object: {0}")]
    HeaderNotJson(String),
    /// A required header parameter is missing.
    #[error("the JOSE header has no `{0}` parameter")]
    MissingHeader(&'static str),
    /// A header parameter has a value of the wrong type.
    #[error("JOSE header parameter `{name}` {reason}")]
    InvalidHeader {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `alg` is not one of the allowed algorithms (`none`, `HS256`, ... are refused).
    #[error(
        "algorithm {0:?} is not allowed (only RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512)"
    )]
    DisallowedAlgorithm(String),
    /// The header lists critical extensions, none of which is understood.
    #[error("critical header parameters {0:?} are not understood")]
    UnsupportedCritical(Vec<String>),
    /// The `typ` is neither `JWT` nor `JOSE`.
    #[error("token type {0:?} is not a JWT-SVID type (expected JWT or JOSE)")]
    UnsupportedType(String),
    /// The header has no `kid`, or an empty one.
    #[error("the token has no key ID (`kid`); a JWT-SVID must name its signing key")]
    MissingKeyId,
    /// The payload is not a JSON object.
    #[error("the claims are not a JSON object: {0}")]
    ClaimsNotJson(String),
    /// A required claim is missing.
    #[error("required claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// A claim has an unusable value.
    #[error("claim `{name}` {reason}")]
    InvalidClaim {
        /// The claim.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `sub` is not a valid SPIFFE ID.
    #[error("claim `sub` is not a valid SPIFFE ID: {0}")]
    InvalidSubject(#[source] IdError),
    /// No bundle is known for the trust domain of `sub`.
    #[error("no trust bundle for trust domain {0:?} (the token's subject belongs to it)")]
    NoBundle(String),
    /// The bundle handed over belongs to another trust domain than the one asked for.
    #[error("asked for the bundle of trust domain {expected:?}, got the bundle of {actual:?}")]
    BundleTrustDomainMismatch {
        /// The trust domain of `sub`.
        expected: String,
        /// The trust domain of the bundle handed over.
        actual: String,
    },
    /// The bundle has no JWT authority with the token's `kid`.
    #[error("key ID {kid:?} is not a JWT authority of trust domain {trust_domain:?}")]
    UnknownKeyId {
        /// The token's `kid`.
        kid: String,
        /// The trust domain whose bundle was searched.
        trust_domain: String,
    },
    /// The key cannot verify the token's algorithm (algorithm confusion).
    #[error("key {kid:?} cannot verify a {alg} signature: {reason}")]
    KeyAlgorithmMismatch {
        /// The key ID.
        kid: String,
        /// The token's algorithm.
        alg: Algorithm,
        /// What does not fit.
        reason: String,
    },
    /// The key's JWK is not a usable public key.
    #[error("key {kid:?} is not a usable public key: {reason}")]
    InvalidKey {
        /// The key ID.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token expired at {exp} (Unix seconds; now {now}, leeway {leeway_secs} s)")]
    Expired {
        /// The `exp` claim.
        exp: i64,
        /// The current time.
        now: i64,
        /// The leeway granted.
        leeway_secs: u64,
    },
    /// `nbf` has not been reached yet.
    #[error(
        "the token is not valid before {nbf} (Unix seconds; now {now}, leeway {leeway_secs} s)"
    )]
    NotYetValid {
        /// The `nbf` claim.
        nbf: i64,
        /// The current time.
        now: i64,
        /// The leeway granted.
        leeway_secs: u64,
    },
    /// `iat` is in the future.
    #[error(
        "the token was issued in the future, at {iat} (Unix seconds; now {now}, leeway {leeway_secs} s)"
    )]
    IssuedInFuture {
        /// The `iat` claim.
        iat: i64,
        /// The current time.
        now: i64,
        /// The leeway granted.
        leeway_secs: u64,
    },
    /// The expected audience is empty.
    #[error("the expected audience is empty")]
    EmptyAudience,
    /// The expected audience is not among the token's.
    #[error("audience {expected:?} is not among the token's audiences {actual:?}")]
    AudienceMismatch {
        /// The audience the caller expects.
        expected: String,
        /// The token's `aud`.
        actual: Vec<String>,
    },
}

/// A JWS compact serialization, parsed and checked against the algorithm allowlist, with its
/// signature not verified yet.
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    /// The `alg`, one of the allowed algorithms.
    pub algorithm: Algorithm,
    /// The whole JOSE header.
    pub header: Map<String, Value>,
    /// The decoded payload.
    pub payload: Vec<u8>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    /// Splits and decodes `token`, checks that the header is a JSON object with an allowed `alg`,
    /// no `crit`, and string `kid`/`typ` when present. Touches no key.
    pub fn parse(token: &'a str) -> Result<Self, JwtSvidError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtSvidError::TooLong { len: token.len() });
        }
        let segments = token.split('.').count();
        let mut parts = token.splitn(3, '.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), 3) =
            (parts.next(), parts.next(), parts.next(), segments)
        else {
            return Err(JwtSvidError::SegmentCount(segments));
        };
        let decode = |s: &str, segment| {
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| JwtSvidError::Base64(segment))
        };
        let header_bytes = decode(header_b64, Segment::Header)?;
        let header = match serde_json::from_slice::<Value>(&header_bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(JwtSvidError::HeaderNotJson("not an object".to_owned())),
            Err(e) => return Err(JwtSvidError::HeaderNotJson(e.to_string())),
        };
        let algorithm = match header.get("alg") {
            None => return Err(JwtSvidError::MissingHeader("alg")),
            Some(Value::String(name)) => Algorithm::from_name(name)
                .ok_or_else(|| JwtSvidError::DisallowedAlgorithm(name.clone()))?,
            Some(_) => {
                return Err(JwtSvidError::InvalidHeader {
                    name: "alg",
                    reason: "must be a string",
                });
            }
        };
        if let Some(crit) = header.get("crit") {
            let names = match crit {
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect(),
                other => vec![other.to_string()],
            };
            return Err(JwtSvidError::UnsupportedCritical(names));
        }
        for name in ["kid", "typ"] {
            if header.get(name).is_some_and(|v| !v.is_string()) {
                return Err(JwtSvidError::InvalidHeader {
                    name,
                    reason: "must be a string",
                });
            }
        }
        let payload = decode(payload_b64, Segment::Payload)?;
        let signature = decode(signature_b64, Segment::Signature)?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Jws {
            algorithm,
            header,
            payload,
            signing_input,
            signature,
        })
    }

    /// The `kid` header parameter, if present.
    pub fn key_id(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// The `typ` header parameter, if present.
    pub fn token_type(&self) -> Option<&str> {
        self.header.get("typ").and_then(Value::as_str)
    }

    /// The payload as a JSON object of claims ([`JwtSvidError::ClaimsNotJson`] otherwise). The
    /// claims are not trusted before [`Jws::verify_signature`] succeeds.
    pub fn claims(&self) -> Result<Map<String, Value>, JwtSvidError> {
        match serde_json::from_slice::<Value>(&self.payload) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(JwtSvidError::ClaimsNotJson("not an object".to_owned())),
            Err(e) => Err(JwtSvidError::ClaimsNotJson(e.to_string())),
        }
    }

    /// Verifies the signature with the public JWK `jwk`; `kid` only names the key in errors.
    ///
    /// The key must fit the algorithm ([`JwtSvidError::KeyAlgorithmMismatch`] otherwise) before
    /// any cryptography runs.
    pub fn verify_signature(&self, kid: &str, jwk: &Value) -> Result<(), JwtSvidError> {
        let key = public_key(self.algorithm, kid, jwk)?;
        key.verify_sig(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtSvidError::BadSignature)
    }
}

/// A JWS whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJws {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Parses `token` ([`Jws::parse`]) and verifies its signature with the public JWK `jwk`. Checks no
/// claim and neither `kid` nor `typ`: the building block for JWT-SVIDs, WIT-SVIDs and tests
/// against published vectors.
pub fn verify_jws(token: &str, jwk: &Value) -> Result<VerifiedJws, JwtSvidError> {
    let jws = Jws::parse(token)?;
    let kid = jws.key_id().unwrap_or("").to_owned();
    jws.verify_signature(&kid, jwk)?;
    Ok(VerifiedJws {
        algorithm: jws.algorithm,
        header: jws.header,
        payload: jws.payload,
    })
}

/// A JWT-SVID that passed [`validate_jwt_svid`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwtSvid {
    /// The `sub`.
    pub spiffe_id: SpiffeId,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// The `exp`.
    pub expiry: SystemTime,
    /// The `aud`, as a list.
    pub audience: Vec<String>,
    /// The `kid` of the key that signed it.
    pub key_id: String,
    /// The algorithm it was signed with.
    pub algorithm: Algorithm,
}

/// Validates a JWT-SVID for `audience` at `now` (see the module documentation for every rule).
///
/// `bundles` is asked once, for the trust domain of the token's `sub`, and returns that trust
/// domain's bundle (`&Bundle`, `Arc<Bundle>`, ...) or `None` if it is not trusted. `leeway`
/// tolerates clock skew on `exp`, `nbf` and `iat` (a few seconds; zero is exact).
pub fn validate_jwt_svid<B: Borrow<Bundle>>(
    token: &str,
    audience: &str,
    bundles: impl FnOnce(&TrustDomain) -> Option<B>,
    now: SystemTime,
    leeway: Duration,
) -> Result<ValidatedJwtSvid, JwtSvidError> {
    if audience.is_empty() {
        return Err(JwtSvidError::EmptyAudience);
    }
    let jws = Jws::parse(token)?;
    if let Some(typ) = jws.token_type()
        && !ACCEPTED_TYPES.contains(&typ)
    {
        return Err(JwtSvidError::UnsupportedType(typ.to_owned()));
    }
    let signed = verify_signed_claims(
        &jws,
        |b| &b.jwt_authorities,
        bundles,
        now,
        leeway,
        IatRule::NotInFuture,
    )?;
    let token_audience = audiences(&signed.claims)?;
    if !token_audience.iter().any(|a| a == audience) {
        return Err(JwtSvidError::AudienceMismatch {
            expected: audience.to_owned(),
            actual: token_audience,
        });
    }
    Ok(ValidatedJwtSvid {
        spiffe_id: signed.spiffe_id,
        expiry: signed.expiry,
        audience: token_audience,
        key_id: signed.key_id,
        algorithm: jws.algorithm,
        claims: signed.claims,
    })
}

/// How `iat` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IatRule {
    /// Refused when in the future (beyond the leeway): JWT-SVIDs.
    NotInFuture,
    /// Only its type is checked: WIT-SVIDs, whose standard forbids using `iat` to limit the
    /// earliest validity (that is `nbf`'s job).
    TypeOnly,
}

/// What the SVID token profiles (JWT-SVID, WIT-SVID) check alike once their `typ` rule passed.
pub(crate) struct SignedClaims {
    /// The `sub`.
    pub(crate) spiffe_id: SpiffeId,
    /// Every claim.
    pub(crate) claims: Map<String, Value>,
    /// The `exp`.
    pub(crate) expiry: SystemTime,
    /// The `kid` of the key that signed it.
    pub(crate) key_id: String,
}

/// Checks, in order: a non-empty `kid`; claims that are a JSON object whose `sub` is a SPIFFE ID;
/// the bundle of the `sub`'s trust domain (only that one) and, among its `authorities` (JWT or WIT
/// ones), the key with that `kid`, fitting the algorithm; the signature; `exp` (required), `nbf`
/// and `iat` (per `iat_rule`), each with `leeway`.
pub(crate) fn verify_signed_claims<B: Borrow<Bundle>>(
    jws: &Jws<'_>,
    authorities: fn(&Bundle) -> &[JwtAuthority],
    bundles: impl FnOnce(&TrustDomain) -> Option<B>,
    now: SystemTime,
    leeway: Duration,
    iat_rule: IatRule,
) -> Result<SignedClaims, JwtSvidError> {
    let kid = match jws.key_id() {
        Some(kid) if !kid.is_empty() => kid.to_owned(),
        _ => return Err(JwtSvidError::MissingKeyId),
    };
    let claims = jws.claims()?;
    let spiffe_id = match claims.get("sub") {
        None => return Err(JwtSvidError::MissingClaim("sub")),
        Some(Value::String(sub)) => SpiffeId::parse(sub).map_err(JwtSvidError::InvalidSubject)?,
        Some(_) => {
            return Err(JwtSvidError::InvalidClaim {
                name: "sub",
                reason: "must be a string",
            });
        }
    };
    let trust_domain = spiffe_id.trust_domain();
    let bundle = bundles(trust_domain)
        .ok_or_else(|| JwtSvidError::NoBundle(trust_domain.name().to_owned()))?;
    let bundle = bundle.borrow();
    if &bundle.trust_domain != trust_domain {
        return Err(JwtSvidError::BundleTrustDomainMismatch {
            expected: trust_domain.name().to_owned(),
            actual: bundle.trust_domain.name().to_owned(),
        });
    }
    let authority = authorities(bundle)
        .iter()
        .find(|a| a.key_id == kid)
        .ok_or_else(|| JwtSvidError::UnknownKeyId {
            kid: kid.clone(),
            trust_domain: trust_domain.name().to_owned(),
        })?;
    jws.verify_signature(&kid, &authority.jwk)?;

    // The signature holds: the claims are the issuer's.
    let now_s = unix_secs(now);
    let leeway_secs = leeway.as_secs();
    let leeway_i = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
    let exp = numeric_date(&claims, "exp")?.ok_or(JwtSvidError::MissingClaim("exp"))?;
    if now_s >= exp.saturating_add(leeway_i) {
        return Err(JwtSvidError::Expired {
            exp,
            now: now_s,
            leeway_secs,
        });
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && now_s.saturating_add(leeway_i) < nbf
    {
        return Err(JwtSvidError::NotYetValid {
            nbf,
            now: now_s,
            leeway_secs,
        });
    }
    if let Some(iat) = numeric_date(&claims, "iat")?
        && iat_rule == IatRule::NotInFuture
        && now_s.saturating_add(leeway_i) < iat
    {
        return Err(JwtSvidError::IssuedInFuture {
            iat,
            now: now_s,
            leeway_secs,
        });
    }
    Ok(SignedClaims {
        spiffe_id,
        claims,
        expiry: UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0)),
        key_id: kid,
    })
}

/// Seconds since the epoch, 0 before it.
fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A NumericDate claim (RFC 7519 section 2): a JSON number of seconds, fractions rounded down;
/// `None` when absent, [`JwtSvidError::InvalidClaim`] when not a number.
pub fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, JwtSvidError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let invalid = JwtSvidError::InvalidClaim {
        name,
        reason: "must be a number of seconds since the epoch",
    };
    let Value::Number(n) = value else {
        return Err(invalid);
    };
    if let Some(i) = n.as_i64() {
        Ok(Some(i))
    } else if n.as_u64().is_some() {
        Ok(Some(i64::MAX))
    } else {
        match n.as_f64() {
            // `as` saturates at the bounds of i64, which is what a date far off needs.
            Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(invalid),
        }
    }
}

/// The `aud` claim as a list: a non-empty string, or a non-empty array of non-empty strings.
pub fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, JwtSvidError> {
    let invalid = |reason| JwtSvidError::InvalidClaim {
        name: "aud",
        reason,
    };
    let list = match claims.get("aud") {
        None => return Err(JwtSvidError::MissingClaim("aud")),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("must be a string or an array of strings"))?,
        Some(_) => return Err(invalid("must be a string or an array of strings")),
    };
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(invalid("must not be empty or contain an empty audience"));
    }
    Ok(list)
}

/// Builds the aws-lc-rs public key for `alg` from a JWK, refusing any key that does not fit the
/// algorithm.
pub(crate) fn public_key(
    alg: Algorithm,
    kid: &str,
    jwk: &Value,
) -> Result<ParsedPublicKey, JwtSvidError> {
    let mismatch = |reason: String| JwtSvidError::KeyAlgorithmMismatch {
        kid: kid.to_owned(),
        alg,
        reason,
    };
    let invalid = |reason: String| JwtSvidError::InvalidKey {
        kid: kid.to_owned(),
        reason,
    };
    let Value::Object(jwk) = jwk else {
        return Err(invalid("the JWK is not a JSON object".to_owned()));
    };
    let kty = match jwk.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err(invalid("`kty` is not a string".to_owned())),
        None => return Err(invalid("`kty` is missing".to_owned())),
    };
    // After the key type (checked first, since not every bundle marks its keys with `alg`), a
    // JWK `alg` must name the token's algorithm (RFC 7517 section 4.4).
    let check_key_alg = || match jwk.get("alg") {
        None => Ok(()),
        Some(Value::String(key_alg)) if key_alg == alg.as_str() => Ok(()),
        Some(Value::String(key_alg)) => {
            Err(mismatch(format!("the key is restricted to {key_alg}")))
        }
        Some(_) => Err(invalid("`alg` is not a string".to_owned())),
    };
    let param = |name: &str| -> Result<Vec<u8>, JwtSvidError> {
        match jwk.get(name) {
            Some(Value::String(s)) => URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| invalid(format!("`{name}` is not unpadded base64url"))),
            Some(_) => Err(invalid(format!("`{name}` is not a string"))),
            None => Err(invalid(format!("`{name}` is missing"))),
        }
    };
    if let Some((ecdsa, coordinate_len)) = alg.ecdsa() {
        let need = alg.curve().unwrap_or_default();
        if kty != "EC" {
            return Err(mismatch(format!(
                "it is an {kty} key; {alg} needs an EC {need} key"
            )));
        }
        let crv = match jwk.get("crv") {
            Some(Value::String(crv)) => crv.as_str(),
            Some(_) => return Err(invalid("`crv` is not a string".to_owned())),
            None => return Err(invalid("`crv` is missing".to_owned())),
        };
        if crv != need {
            return Err(mismatch(format!(
                "it is an EC {crv} key; {alg} needs {need}"
            )));
        }
        check_key_alg()?;
        let x = param("x")?;
        let y = param("y")?;
        if x.len() != coordinate_len || y.len() != coordinate_len {
            return Err(invalid(format!(
                "`x` and `y` must be {coordinate_len} bytes each for {crv}"
            )));
        }
        let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        ParsedPublicKey::new(ecdsa, &point)
            .map_err(|_| invalid(format!("(x, y) is not a point on {crv}")))
    } else {
        let params = alg
            .rsa()
            .ok_or_else(|| mismatch("no key fits".to_owned()))?;
        if kty != "RSA" {
            return Err(mismatch(format!(
                "it is an {kty} key; {alg} needs an RSA key"
            )));
        }
        check_key_alg()?;
        let n = param("n")?;
        let e = param("e")?;
        let n = strip_leading_zeros(&n);
        let e = strip_leading_zeros(&e);
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=8192).contains(&bits) {
            return Err(invalid(format!(
                "the RSA modulus has {bits} bits; 2048 to 8192 are accepted"
            )));
        }
        if e.is_empty() {
            return Err(invalid("`e` is zero".to_owned()));
        }
        RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(params)
            .map_err(|_| invalid("not a valid RSA public key".to_owned()))
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // RFC 7515 Appendix A.1-A.4 share this payload: {"iss":"joe",\r\n "exp":1300819380,\r\n
    // "http://example.com/is_root":true}
    const RFC_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

    /// RFC 7515 Appendix A.3: ES256.
    fn rfc7515_a3() -> (String, Value) {
        let token = format!(
            "eyJhbGciOiJFUzI1NiJ9.{RFC_PAYLOAD}.\
             DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
        );
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        });
        (token, jwk)
    }

    #[test]
    fn rfc7515_a3_es256_vector_verifies() {
        let (token, jwk) = rfc7515_a3();
        // The key goes through the bundle decoder, as a published key would.
        let mut doc = jwk.clone();
        doc["use"] = json!("jwt-svid");
        doc["kid"] = json!("rfc7515-a3");
        let td = TrustDomain::new("example.org").unwrap();
        let bundle =
            Bundle::from_json(&td, json!({ "keys": [doc] }).to_string().as_bytes()).unwrap();
        let verified = verify_jws(&token, &bundle.jwt_authorities[0].jwk).unwrap();
        assert_eq!(verified.algorithm, Algorithm::Es256);
        assert_eq!(
            verified.header,
            json!({"alg": "ES256"}).as_object().cloned().unwrap()
        );
        let claims: Value = serde_json::from_slice(&verified.payload).unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(claims["exp"], 1_300_819_380);
        assert_eq!(claims["http://example.com/is_root"], true);
        // One bit flipped in the signature: refused.
        let bad = token.replacen("DtEhU3", "DtEhU4", 1);
        assert_eq!(verify_jws(&bad, &jwk), Err(JwtSvidError::BadSignature));
    }

    #[test]
    fn rfc7515_a2_rs256_vector_verifies() {
        let token = format!(
            "eyJhbGciOiJSUzI1NiJ9.{RFC_PAYLOAD}.\
             cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
        );
        let jwk = json!({
            "kty": "RSA",
            "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
            "e": "AQAB",
        });
        assert_eq!(
            verify_jws(&token, &jwk).unwrap().algorithm,
            Algorithm::Rs256
        );
        // The same key refuses a PS256 reading of the signature.
        let ps = token.replacen(
            "eyJhbGciOiJSUzI1NiJ9",
            &URL_SAFE_NO_PAD.encode(r#"{"alg":"PS256"}"#),
            1,
        );
        assert_eq!(verify_jws(&ps, &jwk), Err(JwtSvidError::BadSignature));
    }

    #[test]
    fn rfc7515_a4_es512_vector_verifies() {
        let token = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.\
             AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
        let jwk = json!({
            "kty": "EC",
            "crv": "P-521",
            "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
            "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2",
        });
        let verified = verify_jws(token, &jwk).unwrap();
        assert_eq!(verified.algorithm, Algorithm::Es512);
        assert_eq!(verified.payload, b"Payload");
    }

    #[test]
    fn algorithm_names_are_exact() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.as_str()), Some(alg));
            assert_eq!(Algorithm::from_name(&alg.as_str().to_lowercase()), None);
        }
        for refused in [
            "none", "None", "HS256", "HS384", "HS512", "EdDSA", "ES256K", "",
        ] {
            assert_eq!(Algorithm::from_name(refused), None, "{refused}");
        }
        assert_eq!(Algorithm::Es384.curve(), Some("P-384"));
        assert_eq!(Algorithm::Ps512.key_type(), "RSA");
    }

    #[test]
    fn header_rules() {
        let enc = |h: &str| format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode(h));
        assert_eq!(
            Jws::parse(&enc(r#"{"typ":"JWT"}"#)).unwrap_err(),
            JwtSvidError::MissingHeader("alg")
        );
        assert_eq!(
            Jws::parse(&enc(r#"{"alg":256}"#)).unwrap_err(),
            JwtSvidError::InvalidHeader {
                name: "alg",
                reason: "must be a string"
            }
        );
        assert_eq!(
            Jws::parse(&enc(r#"{"alg":"ES256","crit":["exp"]}"#)).unwrap_err(),
            JwtSvidError::UnsupportedCritical(vec!["exp".to_owned()])
        );
        assert_eq!(
            Jws::parse(&enc(r#"{"alg":"ES256","kid":7}"#)).unwrap_err(),
            JwtSvidError::InvalidHeader {
                name: "kid",
                reason: "must be a string"
            }
        );
        assert!(matches!(
            Jws::parse(&enc("[1]")).unwrap_err(),
            JwtSvidError::HeaderNotJson(_)
        ));
        assert_eq!(
            Jws::parse(&"a".repeat(MAX_TOKEN_LEN + 1)).unwrap_err(),
            JwtSvidError::TooLong {
                len: MAX_TOKEN_LEN + 1
            }
        );
    }

    #[test]
    fn rsa_keys_below_2048_bits_are_refused() {
        let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"});
        let token = format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#));
        assert_eq!(
            verify_jws(&token, &jwk),
            Err(JwtSvidError::InvalidKey {
                kid: String::new(),
                reason: "the RSA modulus has 1024 bits; 2048 to 8192 are accepted".to_owned()
            })
        );
    }

    #[test]
    fn claim_shapes() {
        let claims = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            numeric_date(&claims(json!({"exp": 10})), "exp"),
            Ok(Some(10))
        );
        assert_eq!(
            numeric_date(&claims(json!({"exp": 10.9})), "exp"),
            Ok(Some(10))
        );
        assert_eq!(
            numeric_date(&claims(json!({"exp": u64::MAX})), "exp"),
            Ok(Some(i64::MAX))
        );
        assert!(numeric_date(&claims(json!({"exp": "10"})), "exp").is_err());
        assert_eq!(
            audiences(&claims(json!({"aud": "a"}))),
            Ok(vec!["a".to_owned()])
        );
        assert_eq!(
            audiences(&claims(json!({"aud": ["a", "b"]}))),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        for bad in [
            json!({"aud": []}),
            json!({"aud": [""]}),
            json!({"aud": [1]}),
            json!({"aud": 1}),
        ] {
            assert!(matches!(
                audiences(&claims(bad)),
                Err(JwtSvidError::InvalidClaim { name: "aud", .. })
            ));
        }
        assert_eq!(
            audiences(&claims(json!({}))),
            Err(JwtSvidError::MissingClaim("aud"))
        );
    }
}
