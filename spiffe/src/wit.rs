//! WIT-SVID verification (the incubating SPIFFE profile of the WIMSE Workload Identity Token),
//! usable without the CA.
//!
//! A WIT-SVID is a JWS compact serialization like a JWT-SVID, but it binds a public key of the
//! workload (`cnf.jwk`) to its SPIFFE ID and is **never a bearer token**: a verifier accepts it
//! only together with a proof of possession of that key (e.g. a WIMSE Workload Proof Token,
//! checked by `signet-sdk`). [`validate_wit_svid`] checks the token itself, in this order, and
//! fails with a precise [`WitSvidError`]:
//!
//! 1. the JWS shape and the algorithm allowlist of [`crate::jwt`] (RS/ES/PS 256/384/512, before any
//!    key is looked at; no `crit`);
//! 2. `typ` is present and is `wit+jwt` (so a JWT-SVID, `typ` `JWT` or none, is refused; and
//!    [`crate::jwt::validate_jwt_svid`] refuses a WIT-SVID by its `typ`);
//! 3. `kid` is present and non-empty;
//! 4. the claims are a JSON object whose `sub` is a SPIFFE ID; the bundle of that trust domain
//!    (only that one) has a **WIT authority** (`use: "wit-svid"`, never a JWT authority) with that
//!    `kid`, fitting the algorithm; the signature verifies;
//! 5. `exp` is present and in the future, `nbf` (when present) not in the future, with the
//!    caller's leeway; `iat` must be a number but does not limit validity (standard 3.6);
//! 6. there is **no `aud`** (a WIT is not addressed to anyone; an `aud` would let it pass as a
//!    JWT elsewhere);
//! 7. `cnf.jwk` is a public JWK (no private parameter) whose `alg` is one of the allowed
//!    algorithms and fits the key (`ES256` an EC P-256 key, ..., `RS*`/`PS*` RSA 2048-8192 bits).
//!
//! [`ConfirmationKey::from_spki_der`] turns a holder's SubjectPublicKeyInfo into the `cnf.jwk` an
//! issuer writes (EC P-256 `ES256`, EC P-384 `ES384`, RSA 2048-8192 bits `RS256`).

use std::borrow::Borrow;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::bundle::{Bundle, KeyParams, PRIVATE_PARAMETERS, spki_key_params};
use crate::id::{SpiffeId, TrustDomain};
use crate::jwt::{Algorithm, IatRule, Jws, JwtSvidError, public_key, verify_signed_claims};

/// The `typ` of a WIT-SVID.
pub const WIT_TYPE: &str = "wit+jwt";

/// Why a WIT-SVID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitSvidError {
    /// A rule it shares with JWT-SVIDs failed: JWS shape, algorithm allowlist, claims, `sub`,
    /// bundle, key fit, signature, `exp`, `nbf`.
    #[error(transparent)]
    Token(JwtSvidError),
    /// The header has no `typ`.
    #[error("the token has no `typ`; a WIT-SVID carries `typ: wit+jwt`")]
    MissingType,
    /// The `typ` is not `wit+jwt`.
    #[error("token type {0:?} is not a WIT-SVID type (expected wit+jwt)")]
    UnsupportedType(String),
    /// The header has no `kid`, or an empty one.
    #[error("the token has no key ID (`kid`); a WIT-SVID must name its signing key")]
    MissingKeyId,
    /// The bundle has no WIT authority with the token's `kid` (JWT authorities never verify a
    /// WIT-SVID).
    #[error("key ID {kid:?} is not a WIT authority of trust domain {trust_domain:?}")]
    UnknownKeyId {
        /// The token's `kid`.
        kid: String,
        /// The trust domain whose bundle was searched.
        trust_domain: String,
    },
    /// The token carries an `aud` claim, which a WIT-SVID must not have.
    #[error("a WIT-SVID must not carry an `aud` claim")]
    AudiencePresent,
    /// There is no `cnf` claim.
    #[error("required claim `cnf` (the holder's key) is missing")]
    MissingConfirmation,
    /// `cnf` is not an object holding a `jwk` object.
    #[error("claim `cnf` {0}")]
    InvalidConfirmation(&'static str),
    /// `cnf.jwk` carries private key material.
    #[error("`cnf.jwk` contains the private key parameter `{0}`")]
    PrivateConfirmationKey(&'static str),
    /// `cnf.jwk` has no `alg`.
    #[error("`cnf.jwk` has no `alg`; a WIT-SVID names the algorithm of its proofs")]
    MissingConfirmationAlgorithm,
    /// `cnf.jwk.alg` is not one of the allowed algorithms.
    #[error(
        "`cnf.jwk.alg` {0:?} is not allowed (only RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512)"
    )]
    DisallowedConfirmationAlgorithm(String),
    /// `cnf.jwk` is not a usable public key for its `alg`.
    #[error("`cnf.jwk` is not a usable {alg} public key: {reason}")]
    InvalidConfirmationKey {
        /// Its `alg`.
        alg: Algorithm,
        /// What is wrong.
        reason: String,
    },
    /// `jti`, when present, is not a non-empty string.
    #[error("claim `jti` must be a non-empty string")]
    InvalidJti,
}

impl From<JwtSvidError> for WitSvidError {
    fn from(e: JwtSvidError) -> Self {
        match e {
            JwtSvidError::MissingKeyId => WitSvidError::MissingKeyId,
            JwtSvidError::UnknownKeyId { kid, trust_domain } => {
                WitSvidError::UnknownKeyId { kid, trust_domain }
            }
            other => WitSvidError::Token(other),
        }
    }
}

/// Why a holder's public key cannot be bound into a WIT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HolderKeyError {
    /// The bytes are not a DER SubjectPublicKeyInfo.
    #[error("the public key is not a DER SubjectPublicKeyInfo: {0}")]
    Malformed(String),
    /// The key type is not one a WIT-SVID is issued for.
    #[error(
        "unsupported public key: {0} (WIT-SVIDs bind EC P-256, EC P-384 or RSA 2048-8192 keys)"
    )]
    Unsupported(String),
    /// The key has the right type but is not usable (a point off its curve, an RSA modulus out of
    /// range).
    #[error("invalid public key: {0}")]
    Invalid(String),
}

/// The holder's key of a WIT-SVID: the public JWK of `cnf.jwk` and its `alg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationKey {
    /// The `alg` the holder's proofs are made with.
    pub algorithm: Algorithm,
    /// The public JWK (`kty`, key parameters, `alg`), as a JSON object.
    pub jwk: Value,
}

impl ConfirmationKey {
    /// The `cnf.jwk` for a holder's SubjectPublicKeyInfo (DER): EC P-256 gives `ES256`, EC P-384
    /// `ES384`, RSA of 2048 to 8192 bits `RS256`; every other key is refused. The key is checked
    /// with aws-lc-rs (point on the curve, usable modulus).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, HolderKeyError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| HolderKeyError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(HolderKeyError::Malformed(format!(
                "{} bytes of trailing data",
                rest.len()
            )));
        }
        let params = spki_key_params(&spki).map_err(HolderKeyError::Unsupported)?;
        let algorithm = match &params {
            KeyParams::Ec { crv: "P-256", .. } => Algorithm::Es256,
            KeyParams::Ec { crv: "P-384", .. } => Algorithm::Es384,
            KeyParams::Ec { crv, .. } => {
                return Err(HolderKeyError::Unsupported(format!("EC {crv}")));
            }
            KeyParams::Rsa { .. } => Algorithm::Rs256,
            KeyParams::Okp { crv, .. } => return Err(HolderKeyError::Unsupported((*crv).into())),
        };
        let mut jwk = Map::new();
        params.write(&mut jwk);
        jwk.insert("alg".to_owned(), Value::from(algorithm.as_str()));
        let jwk = Value::Object(jwk);
        public_key(algorithm, "", &jwk).map_err(|e| {
            HolderKeyError::Invalid(match e {
                JwtSvidError::InvalidKey { reason, .. } => reason,
                other => other.to_string(),
            })
        })?;
        Ok(ConfirmationKey { algorithm, jwk })
    }

    /// Reads and checks the `cnf.jwk` of WIT claims (rule 7 of the module documentation).
    pub fn from_claims(claims: &Map<String, Value>) -> Result<Self, WitSvidError> {
        let cnf = match claims.get("cnf") {
            None => return Err(WitSvidError::MissingConfirmation),
            Some(Value::Object(cnf)) => cnf,
            Some(_) => return Err(WitSvidError::InvalidConfirmation("must be a JSON object")),
        };
        let jwk = match cnf.get("jwk") {
            None => return Err(WitSvidError::InvalidConfirmation("has no `jwk`")),
            Some(Value::Object(jwk)) => jwk,
            Some(_) => {
                return Err(WitSvidError::InvalidConfirmation(
                    "has a `jwk` that is not a JSON object",
                ));
            }
        };
        if let Some(field) = PRIVATE_PARAMETERS
            .into_iter()
            .find(|f| jwk.contains_key(*f))
        {
            return Err(WitSvidError::PrivateConfirmationKey(field));
        }
        let algorithm = match jwk.get("alg") {
            None => return Err(WitSvidError::MissingConfirmationAlgorithm),
            Some(Value::String(name)) => Algorithm::from_name(name)
                .ok_or_else(|| WitSvidError::DisallowedConfirmationAlgorithm(name.clone()))?,
            Some(_) => {
                return Err(WitSvidError::InvalidConfirmation(
                    "has a `jwk.alg` that is not a string",
                ));
            }
        };
        let jwk = Value::Object(jwk.clone());
        public_key(algorithm, "cnf.jwk", &jwk).map_err(|e| {
            WitSvidError::InvalidConfirmationKey {
                alg: algorithm,
                reason: match e {
                    JwtSvidError::InvalidKey { reason, .. }
                    | JwtSvidError::KeyAlgorithmMismatch { reason, .. } => reason,
                    other => other.to_string(),
                },
            }
        })?;
        Ok(ConfirmationKey { algorithm, jwk })
    }
}

/// A WIT-SVID that passed [`validate_wit_svid`]. It proves nothing about the presenter until a
/// proof of possession of [`ValidatedWitSvid::confirmation`] is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedWitSvid {
    /// The `sub`.
    pub spiffe_id: SpiffeId,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// The `exp`.
    pub expiry: SystemTime,
    /// The `kid` of the WIT authority that signed it.
    pub key_id: String,
    /// The algorithm it was signed with.
    pub algorithm: Algorithm,
    /// The holder's key (`cnf.jwk`) and the algorithm of its proofs.
    pub confirmation: ConfirmationKey,
    /// The `jti`, when present.
    pub jti: Option<String>,
}

/// Whether the JOSE `typ` value `typ` names the media type `expected` (e.g. `wit+jwt`): compared
/// ASCII case-insensitively, with or without the `application/` prefix (RFC 7515 section 4.1.9).
pub fn is_media_type(typ: &str, expected: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(expected)
}

/// Validates a WIT-SVID at `now` (see the module documentation for every rule).
///
/// `bundles` is asked once, for the trust domain of the token's `sub`, and returns that trust
/// domain's bundle (`&Bundle`, `Arc<Bundle>`, ...) or `None` if it is not trusted; only its
/// [`Bundle::wit_authorities`] are used. `leeway` tolerates clock skew on `exp` and `nbf`.
pub fn validate_wit_svid<B: Borrow<Bundle>>(
    token: &str,
    bundles: impl FnOnce(&TrustDomain) -> Option<B>,
    now: SystemTime,
    leeway: Duration,
) -> Result<ValidatedWitSvid, WitSvidError> {
    let jws = Jws::parse(token)?;
    match jws.token_type() {
        None => return Err(WitSvidError::MissingType),
        Some(typ) if !is_media_type(typ, WIT_TYPE) => {
            return Err(WitSvidError::UnsupportedType(typ.to_owned()));
        }
        Some(_) => {}
    }
    let signed = verify_signed_claims(
        &jws,
        |b| &b.wit_authorities,
        bundles,
        now,
        leeway,
        IatRule::TypeOnly,
    )?;
    if signed.claims.contains_key("aud") {
        return Err(WitSvidError::AudiencePresent);
    }
    let confirmation = ConfirmationKey::from_claims(&signed.claims)?;
    let jti = match signed.claims.get("jti") {
        None => None,
        Some(Value::String(jti)) if !jti.is_empty() => Some(jti.clone()),
        Some(_) => return Err(WitSvidError::InvalidJti),
    };
    Ok(ValidatedWitSvid {
        spiffe_id: signed.spiffe_id,
        expiry: signed.expiry,
        key_id: signed.key_id,
        algorithm: jws.algorithm,
        confirmation,
        jti,
        claims: signed.claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for ok in [
            "wit+jwt",
            "WIT+JWT",
            "application/wit+jwt",
            "Application/Wit+Jwt",
        ] {
            assert!(is_media_type(ok, WIT_TYPE), "{ok}");
        }
        for bad in [
            "JWT",
            "wpt+jwt",
            "wit",
            "application/",
            "text/wit+jwt",
            "",
            "wit+jwt ",
        ] {
            assert!(!is_media_type(bad, WIT_TYPE), "{bad}");
        }
    }
}
