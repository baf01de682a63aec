//! JWT signing keys: parsing, JWS signatures, public JWKs, thumbprints and key files.

use std::fmt;
use std::path::Path;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{JwtError, jwt_algorithm};
use crate::KeyType;
use crate::keys::{
    KeyFileError, ecdsa_from_pkcs8, ecdsa_sign, key_path, read_key_file_bytes, rsa_sign,
    rsa2048_from_pkcs8,
};

/// A parsed JWT signing key.
pub(super) enum JwtSigningKey {
    /// ECDSA P-256 (`ES256`) or P-384 (`ES384`), fixed-size `R || S` signatures.
    Ecdsa(EcdsaKeyPair),
    /// RSA 2048 (`RS256`, PKCS#1 v1.5 with SHA-256).
    Rsa(RsaKeyPair),
}

impl fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtSigningKey::Ecdsa(_) => "JwtSigningKey(ECDSA)",
            JwtSigningKey::Rsa(_) => "JwtSigningKey(RSA)",
        })
    }
}

impl JwtSigningKey {
    /// Parses an unencrypted PKCS#8 key of `key_type`.
    pub(super) fn from_pkcs8(der: &[u8], key_type: KeyType) -> Result<Self, String> {
        match key_type {
            KeyType::EcP256 => ecdsa_from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, "P-256")
                .map(JwtSigningKey::Ecdsa),
            KeyType::EcP384 => ecdsa_from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der, "P-384")
                .map(JwtSigningKey::Ecdsa),
            KeyType::Rsa2048 => rsa2048_from_pkcs8(der).map(JwtSigningKey::Rsa),
        }
    }

    /// Signs the JWS signing input.
    pub(super) fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, JwtError> {
        match self {
            JwtSigningKey::Ecdsa(kp) => ecdsa_sign(kp, msg),
            JwtSigningKey::Rsa(kp) => rsa_sign(kp, msg),
        }
        .ok_or(JwtError::Signing)
    }

    /// The public JWK: `kty`, the key parameters, `kid` (the RFC 7638 thumbprint) and `alg`.
    pub(super) fn public_jwk(&self, key_type: KeyType) -> Result<Map<String, Value>, JwtError> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = Map::new();
        let thumbprint_input = match self {
            JwtSigningKey::Ecdsa(kp) => {
                let point = kp.public_key().as_ref();
                let crv = match key_type {
                    KeyType::EcP384 => "P-384",
                    _ => "P-256",
                };
                let len = (point.len().saturating_sub(1)) / 2;
                if point.first() != Some(&0x04) || point.len() != 1 + 2 * len || len == 0 {
                    return Err(JwtError::Encoding(
                        "the EC public key is not an uncompressed point".to_owned(),
                    ));
                }
                let (x, y) = (b64(&point[1..=len]), b64(&point[1 + len..]));
                let input = ec_thumbprint_input(crv, &x, &y);
                jwk.insert("kty".to_owned(), Value::from("EC"));
                jwk.insert("crv".to_owned(), Value::from(crv));
                jwk.insert("x".to_owned(), Value::from(x));
                jwk.insert("y".to_owned(), Value::from(y));
                input
            }
            JwtSigningKey::Rsa(kp) => {
                let der: PublicKeyX509Der<'static> = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| JwtError::Encoding("cannot encode the RSA public key".into()))?;
                let (n, e) = rsa_components(der.as_ref())?;
                let (n, e) = (b64(&n), b64(&e));
                let input = rsa_thumbprint_input(&n, &e);
                jwk.insert("kty".to_owned(), Value::from("RSA"));
                jwk.insert("n".to_owned(), Value::from(n));
                jwk.insert("e".to_owned(), Value::from(e));
                input
            }
        };
        jwk.insert("kid".to_owned(), Value::from(thumbprint(&thumbprint_input)));
        jwk.insert(
            "alg".to_owned(),
            Value::from(jwt_algorithm(key_type).as_str()),
        );
        Ok(jwk)
    }
}

/// The RFC 7638 thumbprint input of an EC key: its required members in lexicographic order, no
/// whitespace (base64url values need no escaping).
fn ec_thumbprint_input(crv: &str, x: &str, y: &str) -> String {
    format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
}

/// The RFC 7638 thumbprint input of an RSA key.
fn rsa_thumbprint_input(n: &str, e: &str) -> String {
    format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#)
}

/// The RFC 7638 thumbprint: base64url SHA-256 of the thumbprint input.
fn thumbprint(input: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The minimal big-endian modulus and exponent of an RSA SubjectPublicKeyInfo.
fn rsa_components(spki_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), JwtError> {
    let bad = || JwtError::Encoding("malformed RSA public key".to_owned());
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| bad())?;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let strip = |b: &[u8]| {
                let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                b[start..].to_vec()
            };
            Ok((strip(rsa.modulus), strip(rsa.exponent)))
        }
        _ => Err(bad()),
    }
}

/// Whether `kid` can be a key ID we wrote (and a safe file name): 1 to 64 base64url characters.
pub(super) fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl From<KeyFileError> for JwtError {
    fn from(e: KeyFileError) -> Self {
        match e {
            KeyFileError::Dir { path, source } => JwtError::KeyDir { path, source },
            KeyFileError::Missing { name, path } => JwtError::KeyFileMissing { kid: name, path },
            KeyFileError::Read { path, source } => JwtError::KeyFileRead { path, source },
            KeyFileError::Write { path, source } => JwtError::KeyFileWrite { path, source },
        }
    }
}

/// Reads and parses a key file.
pub(super) fn read_key_file(
    dir: &Path,
    kid: &str,
    key_type: KeyType,
) -> Result<JwtSigningKey, JwtError> {
    let bytes = read_key_file_bytes(dir, kid, "JWT")?;
    JwtSigningKey::from_pkcs8(&bytes, key_type).map_err(|reason| JwtError::InvalidKeyFile {
        path: key_path(dir, kid),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_key;

    #[test]
    fn public_jwks_and_thumbprints() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let generated = generate_key(kt).unwrap();
            let key = JwtSigningKey::from_pkcs8(&generated.pkcs8_der, kt).unwrap();
            let jwk = key.public_jwk(kt).unwrap();
            let kid = jwk["kid"].as_str().unwrap();
            assert_eq!(kid.len(), 43);
            assert!(valid_kid(kid));
            assert_eq!(jwk["alg"], jwt_algorithm(kt).as_str());
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(!jwk.contains_key(private));
            }
            assert!(!format!("{key:?}").contains(&hex::encode(&generated.pkcs8_der[..])));
        }
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 section 3.1: the thumbprint of this RSA key is
        // NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(&rsa_thumbprint_input(n, "AQAB")),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn kids() {
        assert!(valid_kid("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
        for bad in ["", "../x", "a/b", "a.key", "a b", &"a".repeat(65)] {
            assert!(!valid_kid(bad), "{bad:?}");
        }
    }
}
