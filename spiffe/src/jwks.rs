//! A plain JWK Set (RFC 7517 section 5) of signature verification keys, for keys that are not
//! published in a SPIFFE bundle: the keys of an OpenID Connect identity provider.
//!
//! [`JwkSet::from_json`] keeps the keys that [`Jws::verify_signature`](crate::jwt::Jws) can use
//! and refuses a document that could widen trust or hide a mistake:
//!
//! - the document is a JSON object with a `keys` array of JSON objects;
//! - any private key parameter (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) in any element is an
//!   error, whatever the element's `use` or `kty`: a published private key is compromised;
//! - elements whose `use` is not `sig` (e.g. `enc`) are ignored, as are elements of a key type no
//!   allowed algorithm uses (`OKP`, `oct`, ...); an element without `use` is a signing key;
//! - every element kept has a non-empty `kid`, unique in the set (tokens name their key);
//! - its key parameters are well-formed: `EC` on P-256, P-384 or P-521 with a point on the curve,
//!   `RSA` with a modulus of 2048 to 8192 bits and a positive exponent; `alg`, when present, is a
//!   string (the verifier then accepts only that algorithm for the key);
//! - at least one key is kept ([`JwksError::NoSigningKeys`]).
//!
//! Errors name the index of the offending element in `keys` and the offending parameter.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::bundle::{
    JwtAuthority, KeyFault, KeyParams, PRIVATE_PARAMETERS, check_public_jwk, str_param,
};

/// The key types kept: those of the RS/ES/PS algorithms of [`crate::jwt::Algorithm`].
const SIGNING_KTYS: [&str; 2] = ["EC", "RSA"];

/// Why a JWK Set document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document is not JSON.
    #[error("the JWK Set is not valid JSON: {0}")]
    Json(String),
    /// The document is not a JSON object.
    #[error("the JWK Set is not a JSON object")]
    NotAnObject,
    /// The document has no `keys` member.
    #[error("the JWK Set has no `keys` member")]
    MissingKeys,
    /// `keys` is not an array.
    #[error("the JWK Set's `keys` member must be an array")]
    KeysNotAnArray,
    /// An element of `keys` is not a JSON object.
    #[error("key {index}: not a JSON object")]
    KeyNotAnObject {
        /// Index in `keys`.
        index: usize,
    },
    /// An element of `keys` carries private key material.
    #[error("key {index}: contains the private key parameter `{field}`")]
    PrivateKeyParameter {
        /// Index in `keys`.
        index: usize,
        /// The parameter.
        field: &'static str,
    },
    /// A signing key lacks a required parameter.
    #[error("key {index}: required parameter `{field}` is missing")]
    MissingParameter {
        /// Index in `keys`.
        index: usize,
        /// The parameter.
        field: &'static str,
    },
    /// A parameter has a bad value.
    #[error("key {index}: parameter `{field}` {reason}")]
    InvalidParameter {
        /// Index in `keys`.
        index: usize,
        /// The parameter.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A signing key has no `kid`, or an empty one.
    #[error("key {index}: a signing key must have a non-empty `kid` (tokens name their key)")]
    MissingKeyId {
        /// Index in `keys`.
        index: usize,
    },
    /// Two signing keys share a `kid`.
    #[error("key {index}: key ID {kid:?} is already used by an earlier signing key")]
    DuplicateKeyId {
        /// Index in `keys` of the second one.
        index: usize,
        /// The shared key ID.
        kid: String,
    },
    /// No element is a usable signing key.
    #[error(
        "the JWK Set holds no usable signing key (EC P-256/P-384/P-521 or RSA with `use` sig or no `use`); {ignored} key(s) ignored"
    )]
    NoSigningKeys {
        /// How many elements were ignored (other `use`, other key type).
        ignored: usize,
    },
}

/// The signing keys of a JWK Set document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwkSet {
    /// The keys kept, in document order; each `jwk` is the element as published.
    pub keys: Vec<JwtAuthority>,
    /// How many elements were ignored (another `use`, another key type).
    pub ignored: usize,
}

impl JwkSet {
    /// Decodes a JWK Set document (see the module documentation for the rules).
    pub fn from_json(json: &[u8]) -> Result<Self, JwksError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let doc = doc.as_object().ok_or(JwksError::NotAnObject)?;
        let elements = match doc.get("keys") {
            None => return Err(JwksError::MissingKeys),
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err(JwksError::KeysNotAnArray),
        };
        let mut keys = Vec::new();
        let mut ignored = 0;
        let mut kids = HashSet::new();
        for (index, element) in elements.iter().enumerate() {
            let jwk = element
                .as_object()
                .ok_or(JwksError::KeyNotAnObject { index })?;
            if let Some(field) = PRIVATE_PARAMETERS
                .into_iter()
                .find(|f| jwk.contains_key(*f))
            {
                return Err(JwksError::PrivateKeyParameter { index, field });
            }
            match jwk.get("use") {
                None => {}
                Some(Value::String(u)) if u == "sig" => {}
                Some(Value::String(_)) => {
                    ignored += 1;
                    continue;
                }
                Some(_) => return Err(invalid(index, "use", "must be a string")),
            }
            let kty = str_param(jwk, "kty").map_err(|f| fault_at(index, f))?;
            if !SIGNING_KTYS.contains(&kty) {
                ignored += 1;
                continue;
            }
            let key_id = match jwk.get("kid") {
                Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
                Some(Value::String(_)) | None => return Err(JwksError::MissingKeyId { index }),
                Some(_) => return Err(invalid(index, "kid", "must be a string")),
            };
            if jwk.get("alg").is_some_and(|a| !a.is_string()) {
                return Err(invalid(index, "alg", "must be a string"));
            }
            check_signing_key(index, kty, jwk)?;
            if !kids.insert(key_id.clone()) {
                return Err(JwksError::DuplicateKeyId { index, kid: key_id });
            }
            keys.push(JwtAuthority {
                key_id,
                jwk: element.clone(),
            });
        }
        if keys.is_empty() {
            return Err(JwksError::NoSigningKeys { ignored });
        }
        Ok(Self { keys, ignored })
    }

    /// The key with ID `kid`.
    pub fn get(&self, kid: &str) -> Option<&JwtAuthority> {
        self.keys.iter().find(|k| k.key_id == kid)
    }

    /// The key IDs, in document order.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.key_id.as_str()).collect()
    }
}

fn invalid(index: usize, field: &'static str, reason: &str) -> JwksError {
    JwksError::InvalidParameter {
        index,
        field,
        reason: reason.to_owned(),
    }
}

/// A fault of the element `index`.
fn fault_at(index: usize, fault: KeyFault) -> JwksError {
    match fault {
        KeyFault::Missing(field) => JwksError::MissingParameter { index, field },
        KeyFault::Invalid(field, reason) => JwksError::InvalidParameter {
            index,
            field,
            reason,
        },
    }
}

/// The shape and size of an `EC` or `RSA` public key.
fn check_signing_key(index: usize, kty: &str, jwk: &Map<String, Value>) -> Result<(), JwksError> {
    if let KeyParams::Rsa { n, .. } = check_public_jwk(kty, jwk).map_err(|f| fault_at(index, f))? {
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=8192).contains(&bits) {
            return Err(JwksError::InvalidParameter {
                index,
                field: "n",
                reason: format!("is a {bits}-bit modulus; 2048 to 8192 bits are accepted"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    /// RFC 7515 Appendix A.3's P-256 key.
    fn ec_key(kid: &str) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "kid": kid,
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        })
    }

    fn rsa_key(kid: &str, modulus_bytes: usize) -> Value {
        let mut n = vec![0xc5u8; modulus_bytes];
        n[modulus_bytes - 1] = 0x01;
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
               "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"})
    }

    fn parse(keys: Value) -> Result<JwkSet, JwksError> {
        JwkSet::from_json(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn signing_keys_are_kept_others_ignored() {
        let set = parse(json!([
            ec_key("ec-1"),
            rsa_key("rsa-1", 256),
            {"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]))
        .unwrap();
        assert_eq!(set.key_ids(), ["ec-1", "rsa-1"]);
        assert_eq!(set.ignored, 2);
        assert_eq!(set.get("rsa-1").unwrap().jwk["alg"], "RS256");
        assert!(set.get("enc-1").is_none());
    }

    #[test]
    fn private_parameters_are_refused_in_any_element() {
        let mut ec = ec_key("ec-1");
        ec["d"] = json!("AAAA");
        assert_eq!(
            parse(json!([ec])),
            Err(JwksError::PrivateKeyParameter {
                index: 0,
                field: "d"
            })
        );
        // Even in an element that would be ignored.
        assert_eq!(
            parse(json!([ec_key("ec-1"), {"kty": "oct", "use": "enc", "k": "c2VjcmV0"}])),
            Err(JwksError::PrivateKeyParameter {
                index: 1,
                field: "k"
            })
        );
    }

    #[test]
    fn document_shape_is_checked() {
        assert!(matches!(JwkSet::from_json(b"{"), Err(JwksError::Json(_))));
        assert_eq!(JwkSet::from_json(b"[]"), Err(JwksError::NotAnObject));
        assert_eq!(JwkSet::from_json(b"{}"), Err(JwksError::MissingKeys));
        assert_eq!(
            JwkSet::from_json(br#"{"keys":{}}"#),
            Err(JwksError::KeysNotAnArray)
        );
        assert_eq!(
            parse(json!([1])),
            Err(JwksError::KeyNotAnObject { index: 0 })
        );
        assert_eq!(
            parse(json!([])),
            Err(JwksError::NoSigningKeys { ignored: 0 })
        );
        assert_eq!(
            parse(json!([{"kty": "EC", "use": "enc"}])),
            Err(JwksError::NoSigningKeys { ignored: 1 })
        );
    }

    #[test]
    fn key_ids_are_required_and_unique() {
        let mut no_kid = ec_key("");
        assert_eq!(
            parse(json!([no_kid.clone()])),
            Err(JwksError::MissingKeyId { index: 0 })
        );
        no_kid.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            parse(json!([no_kid])),
            Err(JwksError::MissingKeyId { index: 0 })
        );
        assert_eq!(
            parse(json!([ec_key("a"), rsa_key("a", 256)])),
            Err(JwksError::DuplicateKeyId {
                index: 1,
                kid: "a".to_owned()
            })
        );
    }

    #[test]
    fn key_parameters_are_checked() {
        assert_eq!(
            parse(json!([rsa_key("small", 128)])),
            Err(JwksError::InvalidParameter {
                index: 0,
                field: "n",
                reason: "is a 1024-bit modulus; 2048 to 8192 bits are accepted".to_owned()
            })
        );
        let mut off_curve = ec_key("ec-1");
        off_curve["y"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert!(matches!(
            parse(json!([off_curve])),
            Err(JwksError::InvalidParameter {
                index: 0,
                field: "x",
                ..
            })
        ));
        let mut other_curve = ec_key("ec-1");
        other_curve["crv"] = json!("secp256k1");
        assert!(matches!(
            parse(json!([other_curve])),
            Err(JwksError::InvalidParameter {
                index: 0,
                field: "crv",
                ..
            })
        ));
        let mut no_x = ec_key("ec-1");
        no_x.as_object_mut().unwrap().remove("x");
        assert_eq!(
            parse(json!([no_x])),
            Err(JwksError::MissingParameter {
                index: 0,
                field: "x"
            })
        );
        let mut alg = ec_key("ec-1");
        alg["alg"] = json!(7);
        assert!(matches!(
            parse(json!([alg])),
            Err(JwksError::InvalidParameter {
                index: 0,
                field: "alg",
                ..
            })
        ));
        assert!(matches!(
            parse(json!([{"kty": 1}])),
            Err(JwksError::InvalidParameter {
                index: 0,
                field: "kty",
                ..
            })
        ));
        assert!(matches!(
            parse(json!([{"kty": "EC", "use": 1}])),
            Err(JwksError::InvalidParameter {
                index: 0,
                field: "use",
                ..
            })
        ));
        assert_eq!(
            parse(json!([{"use": "sig"}])),
            Err(JwksError::MissingParameter {
                index: 0,
                field: "kty"
            })
        );
    }
}
