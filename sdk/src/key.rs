//! A workload's WIT key: the key pair whose public half a WIT-SVID binds (`cnf.jwk`) and whose
//! private half signs the Workload Proof Tokens that prove possession of it.
//!
//! Keys are ECDSA, `ES256` (P-256, the default, [`DEFAULT_ALGORITHM`]) or `ES384` (P-384): the
//! curves a Signet issuer binds. (The issuer also binds RSA keys, and a verifier accepts every
//! algorithm of the WIT-SVID profile; this type does not hold RSA keys.) The private key lives
//! in aws-lc-rs, which wipes it when the key is dropped; every copy made here (the private JWK
//! text, the scalar `d`) is zeroized, and `Debug` never shows it.

use std::fmt::{self, Write as _};

use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use signet_spiffe::jwt::Algorithm;
use zeroize::{Zeroize, Zeroizing};

/// The algorithm of [`WitKey::generate`] when the caller has no reason to choose: `ES256`, which
/// every WIT-SVID implementation must support.
pub const DEFAULT_ALGORITHM: Algorithm = Algorithm::Es256;

/// Why a WIT key cannot be made, read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm is not one this type holds keys for.
    #[error("WIT keys are ES256 or ES384 here; {0} is not supported")]
    UnsupportedAlgorithm(Algorithm),
    /// The random number generator or aws-lc-rs failed to make a key.
    #[error("cannot generate a {0} key")]
    Generation(Algorithm),
    /// The private JWK is not a JSON object.
    #[error("the private JWK is not a JSON object{0}")]
    NotJson(String),
    /// A required JWK member is missing.
    #[error("the private JWK has no `{0}`")]
    MissingParameter(&'static str),
    /// A JWK member has an unusable value.
    #[error("the private JWK's `{name}` {reason}")]
    InvalidParameter {
        /// The member.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// aws-lc-rs refused the key: `d` is not a private key of the curve, or it does not belong to
    /// the public key (`x`, `y`).
    #[error("the private JWK is not a consistent {0} key pair (d does not match x and y)")]
    Inconsistent(Algorithm),
    /// The key could not be serialized.
    #[error("cannot encode the key")]
    Encoding,
    /// A signature failed.
    #[error("signing failed")]
    Signing,
}

/// A workload's WIT key pair (ECDSA, `ES256` or `ES384`). `Debug` shows the algorithm only.
pub struct WitKey {
    algorithm: Algorithm,
    pair: EcdsaKeyPair,
}

impl fmt::Debug for WitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WitKey")
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The aws-lc-rs signing algorithm, the JWK `crv` and the coordinate length of `alg`.
fn curve(
    alg: Algorithm,
) -> Result<(&'static EcdsaSigningAlgorithm, &'static str, usize), KeyError> {
    match alg {
        Algorithm::Es256 => Ok((&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)),
        Algorithm::Es384 => Ok((&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)),
        other => Err(KeyError::UnsupportedAlgorithm(other)),
    }
}

fn string_member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, KeyError> {
    match jwk.get(name) {
        None => Err(KeyError::MissingParameter(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(KeyError::InvalidParameter {
            name,
            reason: "must be a string".into(),
        }),
    }
}

/// A base64url member of exactly `len` bytes, zeroized when dropped.
fn bytes_member(
    jwk: &Map<String, Value>,
    name: &'static str,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(string_member(jwk, name)?).map_err(
        |_| KeyError::InvalidParameter {
            name,
            reason: "is not unpadded base64url".into(),
        },
    )?);
    if bytes.len() != len {
        return Err(KeyError::InvalidParameter {
            name,
            reason: format!("must be {len} bytes"),
        });
    }
    Ok(bytes)
}

impl WitKey {
    /// A fresh key pair for `algorithm` (`ES256` or `ES384`; [`DEFAULT_ALGORITHM`] when in doubt).
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        let (signing, _, _) = curve(algorithm)?;
        let pair = EcdsaKeyPair::generate(signing).map_err(|_| KeyError::Generation(algorithm))?;
        Ok(WitKey { algorithm, pair })
    }

    /// Reads the private JWK (RFC 7517) that a Workload API `FetchWITSVID` answer carries as
    /// `wit_svid_key`: `kty` `EC`, `crv`, `x`, `y`, `d` and `alg` (`ES256` with `P-256`, `ES384`
    /// with `P-384`). Other members (`kid`, `use`, ...) are ignored. The parsed copy of `d` is
    /// zeroized; the caller owns (and should zeroize) `jwk`.
    pub fn from_private_jwk(jwk: &str) -> Result<Self, KeyError> {
        let mut value: Value =
            serde_json::from_str(jwk).map_err(|e| KeyError::NotJson(format!(": {e}")))?;
        let result = match &value {
            Value::Object(map) => Self::from_jwk_members(map),
            _ => Err(KeyError::NotJson(String::new())),
        };
        if let Some(Value::String(d)) = value.get_mut("d") {
            d.zeroize();
        }
        result
    }

    fn from_jwk_members(jwk: &Map<String, Value>) -> Result<Self, KeyError> {
        let kty = string_member(jwk, "kty")?;
        if kty != "EC" {
            return Err(KeyError::InvalidParameter {
                name: "kty",
                reason: format!("is {kty:?}; WIT keys here are EC keys"),
            });
        }
        let alg = string_member(jwk, "alg")?;
        let algorithm = Algorithm::from_name(alg).ok_or_else(|| KeyError::InvalidParameter {
            name: "alg",
            reason: format!("{alg:?} is not a JWS signature algorithm of the WIT-SVID profile"),
        })?;
        let (signing, crv, len) = curve(algorithm)?;
        let given_crv = string_member(jwk, "crv")?;
        if given_crv != crv {
            return Err(KeyError::InvalidParameter {
                name: "crv",
                reason: format!("is {given_crv:?}; {algorithm} needs {crv}"),
            });
        }
        let x = bytes_member(jwk, "x", len)?;
        let y = bytes_member(jwk, "y", len)?;
        let d = bytes_member(jwk, "d", len)?;
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(signing, &d, &point)
            .map_err(|_| KeyError::Inconsistent(algorithm))?;
        Ok(WitKey { algorithm, pair })
    }

    /// The private JWK (`kty`, `crv`, `alg`, `x`, `y`, `d`, compact JSON) in a string that is
    /// zeroized when dropped: what [`from_private_jwk`](Self::from_private_jwk) reads.
    pub fn to_private_jwk(&self) -> Result<Zeroizing<String>, KeyError> {
        let (_, crv, len) = curve(self.algorithm)?;
        let d: EcPrivateKeyBin<'static> = self
            .pair
            .private_key()
            .as_be_bytes()
            .map_err(|_| KeyError::Encoding)?;
        let (x, y) = self.coordinates();
        // Room for everything up front, so that no reallocation leaves a copy of `d` behind.
        let mut out = Zeroizing::new(String::with_capacity(96 + 6 * len));
        write!(
            out,
            r#"{{"kty":"EC","crv":"{crv}","alg":"{}","x":"{x}","y":"{y}","d":""#,
            self.algorithm
        )
        .map_err(|_| KeyError::Encoding)?;
        URL_SAFE_NO_PAD.encode_string(d.as_ref(), &mut out);
        out.push_str("\"}");
        Ok(out)
    }

    /// The algorithm of its proofs (the WIT-SVID's `cnf.jwk.alg`).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public key as DER SubjectPublicKeyInfo: what the agent sends the issuer to have it
    /// bound into a WIT-SVID (`NewWITSVID`'s `public_key`).
    pub fn public_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let der: PublicKeyX509Der<'static> = self
            .pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Encoding)?;
        Ok(der.as_ref().to_vec())
    }

    /// The public JWK `{"kty","crv","x","y","alg"}`: what a Signet issuer writes as `cnf.jwk`.
    pub fn public_jwk(&self) -> Value {
        let (x, y) = self.coordinates();
        let crv = curve(self.algorithm).map_or("", |(_, crv, _)| crv);
        json!({"kty": "EC", "crv": crv, "x": x, "y": y, "alg": self.algorithm.as_str()})
    }

    /// Whether `jwk` is this key's public key for this algorithm (`kty`, `crv`, `x`, `y` and
    /// `alg` equal; other members are not compared).
    pub fn is_public_jwk(&self, jwk: &Value) -> bool {
        let mine = self.public_jwk();
        ["kty", "crv", "x", "y", "alg"]
            .into_iter()
            .all(|m| jwk.get(m).is_some() && jwk.get(m) == mine.get(m))
    }

    /// base64url `x` and `y` of the public point.
    fn coordinates(&self) -> (String, String) {
        let point = self.pair.public_key().as_ref();
        let len = point.len().saturating_sub(1) / 2;
        let x = point.get(1..=len).unwrap_or_default();
        let y = point.get(1 + len..).unwrap_or_default();
        (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
    }

    /// A JWS compact serialization of `header` and `claims` signed with this key (fixed-size
    /// `R || S`, RFC 7518 section 3.4).
    pub(crate) fn sign_compact(&self, header: &Value, claims: &Value) -> Result<String, KeyError> {
        let header = serde_json::to_vec(header).map_err(|_| KeyError::Encoding)?;
        let claims = serde_json::to_vec(claims).map_err(|_| KeyError::Encoding)?;
        let mut token = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 140);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| KeyError::Signing)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_spiffe::jwt::verify_jws;

    fn jwk_of(key: &WitKey) -> Value {
        serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap()
    }

    fn with(mut jwk: Value, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        edit(jwk.as_object_mut().unwrap());
        jwk.to_string()
    }

    #[test]
    fn generated_keys_round_trip_through_their_private_jwk() {
        for alg in [Algorithm::Es256, Algorithm::Es384] {
            let key = WitKey::generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let jwk = jwk_of(&key);
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["alg"], alg.as_str());
            for m in ["x", "y", "crv"] {
                assert_eq!(jwk[m], key.public_jwk()[m]);
            }
            let again = WitKey::from_private_jwk(&key.to_private_jwk().unwrap()).unwrap();
            assert_eq!(again.public_jwk(), key.public_jwk());
            assert_eq!(
                again.public_spki_der().unwrap(),
                key.public_spki_der().unwrap()
            );
            assert!(again.is_public_jwk(&key.public_jwk()));
            // What one signs, the public JWK verifies.
            let t = again
                .sign_compact(&json!({"alg": alg.as_str()}), &json!({"a": 1}))
                .unwrap();
            assert_eq!(verify_jws(&t, &key.public_jwk()).unwrap().algorithm, alg);
        }
    }

    #[test]
    fn the_public_jwk_is_what_an_issuer_binds() {
        let key = WitKey::generate(DEFAULT_ALGORITHM).unwrap();
        let bound =
            signet_spiffe::wit::ConfirmationKey::from_spki_der(&key.public_spki_der().unwrap())
                .unwrap();
        assert_eq!(bound.jwk, key.public_jwk());
        assert_eq!(bound.algorithm, Algorithm::Es256);
        let mut other = key.public_jwk();
        other["alg"] = json!("ES384");
        assert!(!key.is_public_jwk(&other));
        let mut missing = key.public_jwk();
        missing.as_object_mut().unwrap().remove("y");
        assert!(!key.is_public_jwk(&missing));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = WitKey::generate(DEFAULT_ALGORITHM).unwrap();
        let d = jwk_of(&key)["d"].as_str().unwrap().to_owned();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&d), "{dbg}");
        assert!(dbg.contains("redacted") && dbg.contains("Es256"), "{dbg}");
    }

    #[test]
    fn other_algorithms_are_refused() {
        for alg in [Algorithm::Rs256, Algorithm::Ps256, Algorithm::Es512] {
            assert_eq!(
                WitKey::generate(alg).unwrap_err(),
                KeyError::UnsupportedAlgorithm(alg)
            );
        }
    }

    #[test]
    fn bad_private_jwks_are_refused_precisely() {
        let good = jwk_of(&WitKey::generate(Algorithm::Es256).unwrap());
        let other = jwk_of(&WitKey::generate(Algorithm::Es256).unwrap());
        let read = |s: &str| WitKey::from_private_jwk(s).unwrap_err();
        assert!(matches!(read("{not json"), KeyError::NotJson(_)));
        assert_eq!(read("[1]"), KeyError::NotJson(String::new()));
        for member in ["kty", "alg", "crv", "x", "y", "d"] {
            assert_eq!(
                read(&with(good.clone(), |j| {
                    j.remove(member);
                })),
                KeyError::MissingParameter(member),
                "{member}"
            );
        }
        assert!(matches!(
            read(&with(good.clone(), |j| {
                j.insert("kty".into(), json!("RSA"));
            })),
            KeyError::InvalidParameter { name: "kty", .. }
        ));
        assert!(matches!(
            read(&with(good.clone(), |j| {
                j.insert("alg".into(), json!("HS256"));
            })),
            KeyError::InvalidParameter { name: "alg", .. }
        ));
        assert_eq!(
            read(&with(good.clone(), |j| {
                j.insert("alg".into(), json!("RS256"));
            })),
            KeyError::UnsupportedAlgorithm(Algorithm::Rs256)
        );
        // ES384 with a P-256 key.
        assert!(matches!(
            read(&with(good.clone(), |j| {
                j.insert("alg".into(), json!("ES384"));
            })),
            KeyError::InvalidParameter { name: "crv", .. }
        ));
        assert!(matches!(
            read(&with(good.clone(), |j| {
                j.insert("d".into(), json!("AAAA"));
            })),
            KeyError::InvalidParameter { name: "d", .. }
        ));
        assert!(matches!(
            read(&with(good.clone(), |j| {
                j.insert("x".into(), json!("not base64url!"));
            })),
            KeyError::InvalidParameter { name: "x", .. }
        ));
        assert!(matches!(
            read(&with(good.clone(), |j| {
                j.insert("y".into(), json!(7));
            })),
            KeyError::InvalidParameter { name: "y", .. }
        ));
        // The private scalar of another key.
        assert_eq!(
            read(&with(good.clone(), |j| {
                j.insert("d".into(), other["d"].clone());
            })),
            KeyError::Inconsistent(Algorithm::Es256)
        );
        // Zero is no private key.
        assert_eq!(
            read(&with(good, |j| {
                j.insert("d".into(), json!(URL_SAFE_NO_PAD.encode([0u8; 32])));
            })),
            KeyError::Inconsistent(Algorithm::Es256)
        );
    }

    #[test]
    fn extra_jwk_members_are_ignored() {
        let key = WitKey::generate(Algorithm::Es384).unwrap();
        let jwk = with(jwk_of(&key), |j| {
            j.insert("kid".into(), json!("k1"));
            j.insert("use".into(), json!("sig"));
        });
        assert_eq!(
            WitKey::from_private_jwk(&jwk).unwrap().public_jwk(),
            key.public_jwk()
        );
    }
}
