//! Key types, key generation, signing keys and key files.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CaError;
use crate::der::alg;

/// Key algorithm of a Signet CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA on P-256, certificates signed with ecdsa-with-SHA256 (the default).
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on P-384, certificates signed with ecdsa-with-SHA384.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// RSA 2048, certificates signed with sha256WithRSAEncryption (PKCS#1 v1.5).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyType {
    /// The configuration spelling: `ec-p256`, `ec-p384` or `rsa-2048`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec-p256" => Ok(KeyType::EcP256),
            "ec-p384" => Ok(KeyType::EcP384),
            "rsa-2048" => Ok(KeyType::Rsa2048),
            other => Err(CaError::UnknownKeyType(other.to_string())),
        }
    }
}

/// A freshly generated private key.
pub struct GeneratedKey {
    /// The private key as unencrypted PKCS#8 DER (zeroized on drop).
    pub pkcs8_der: Zeroizing<Vec<u8>>,
    /// The public key as SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("pkcs8_der", &"<redacted>")
            .field("spki_der", &hex::encode(&self.spki_der))
            .finish()
    }
}

/// Generates a new private key of `key_type` with aws-lc-rs.
pub fn generate_key(key_type: KeyType) -> Result<GeneratedKey, CaError> {
    let failed = |_| CaError::KeyGeneration(key_type);
    let pkcs8_der = match key_type {
        KeyType::EcP256 | KeyType::EcP384 => {
            let alg = if key_type == KeyType::EcP256 {
                &ECDSA_P256_SHA256_ASN1_SIGNING
            } else {
                &ECDSA_P384_SHA384_ASN1_SIGNING
            };
            let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).map_err(failed)?;
            Zeroizing::new(doc.as_ref().to_vec())
        }
        KeyType::Rsa2048 => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = kp.as_der().map_err(failed)?;
            Zeroizing::new(der.as_ref().to_vec())
        }
    };
    let key = SigningKey::from_pkcs8(&pkcs8_der, Some(key_type))
        .map_err(|_| CaError::KeyGeneration(key_type))?;
    Ok(GeneratedKey {
        spki_der: key.spki_der()?,
        pkcs8_der,
    })
}

/// Parses an unencrypted PKCS#8 ECDSA key on `curve` (`P-256`, `P-384`) for `alg` (which also
/// fixes the signature encoding: ASN.1 for certificates, fixed-size for JWS).
pub(crate) fn ecdsa_from_pkcs8(
    alg: &'static EcdsaSigningAlgorithm,
    der: &[u8],
    curve: &str,
) -> Result<EcdsaKeyPair, String> {
    EcdsaKeyPair::from_pkcs8(alg, der)
        .map_err(|_| format!("not an unencrypted PKCS#8 ECDSA {curve} key"))
}

/// Parses an unencrypted PKCS#8 RSA key of exactly 2048 bits.
pub(crate) fn rsa2048_from_pkcs8(der: &[u8]) -> Result<RsaKeyPair, String> {
    let kp =
        RsaKeyPair::from_pkcs8(der).map_err(|_| "not an unencrypted PKCS#8 RSA key".to_string())?;
    if kp.public_modulus_len() != 256 {
        return Err(format!(
            "RSA key has {} bits, expected 2048",
            kp.public_modulus_len() * 8
        ));
    }
    Ok(kp)
}

/// Signs `msg` with ECDSA (in the key pair's signature encoding).
pub(crate) fn ecdsa_sign(kp: &EcdsaKeyPair, msg: &[u8]) -> Option<Vec<u8>> {
    kp.sign(&SystemRandom::new(), msg)
        .ok()
        .map(|s| s.as_ref().to_vec())
}

/// Signs `msg` with RSA PKCS#1 v1.5 and SHA-256.
pub(crate) fn rsa_sign(kp: &RsaKeyPair, msg: &[u8]) -> Option<Vec<u8>> {
    let mut sig = vec![0; kp.public_modulus_len()];
    kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
        .ok()?;
    Some(sig)
}

/// A parsed private key that signs certificates: a Signet CA key or an upstream CA key.
pub(crate) enum SigningKey {
    /// ECDSA P-256, signs with SHA-256.
    P256(EcdsaKeyPair),
    /// ECDSA P-384, signs with SHA-384.
    P384(EcdsaKeyPair),
    /// RSA (2048 bits or more), signs with PKCS#1 v1.5 SHA-256.
    Rsa(RsaKeyPair),
    /// Ed25519 (accepted for upstream keys only).
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints key material, not even the public half: the algorithm is enough.
        f.write_str(match self {
            SigningKey::P256(_) => "SigningKey(P-256)",
            SigningKey::P384(_) => "SigningKey(P-384)",
            SigningKey::Rsa(_) => "SigningKey(RSA)",
            SigningKey::Ed25519(_) => "SigningKey(Ed25519)",
        })
    }
}

impl SigningKey {
    /// Parses an unencrypted PKCS#8 private key. With `expected`, the key must be of that type;
    /// without, any supported algorithm is accepted (upstream keys).
    pub(crate) fn from_pkcs8(der: &[u8], expected: Option<KeyType>) -> Result<Self, String> {
        let p256 = || EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der).ok();
        let p384 = || EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der).ok();
        let rsa = || RsaKeyPair::from_pkcs8(der).ok();
        match expected {
            Some(KeyType::EcP256) => {
                ecdsa_from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, "P-256")
                    .map(SigningKey::P256)
            }
            Some(KeyType::EcP384) => {
                ecdsa_from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der, "P-384")
                    .map(SigningKey::P384)
            }
            Some(KeyType::Rsa2048) => rsa2048_from_pkcs8(der).map(SigningKey::Rsa),
            None => {
                if let Some(kp) = p256() {
                    Ok(SigningKey::P256(kp))
                } else if let Some(kp) = p384() {
                    Ok(SigningKey::P384(kp))
                } else if let Some(kp) = rsa() {
                    if kp.public_modulus_len() < 256 {
                        return Err(format!(
                            "RSA key has {} bits, at least 2048 are required",
                            kp.public_modulus_len() * 8
                        ));
                    }
                    Ok(SigningKey::Rsa(kp))
                } else if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    Ok(SigningKey::Ed25519(kp))
                } else {
                    Err("not an unencrypted PKCS#8 key of a supported algorithm \
                         (ECDSA P-256/P-384, RSA >= 2048 bits, Ed25519)"
                        .to_string())
                }
            }
        }
    }

    /// The complete AlgorithmIdentifier of the signatures this key makes.
    pub(crate) fn signature_algorithm(&self) -> &'static [u8] {
        match self {
            SigningKey::P256(_) => alg::ECDSA_SHA256,
            SigningKey::P384(_) => alg::ECDSA_SHA384,
            SigningKey::Rsa(_) => alg::RSA_PKCS1_SHA256,
            SigningKey::Ed25519(_) => alg::ED25519,
        }
    }

    /// Signs `msg`.
    pub(crate) fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        match self {
            SigningKey::P256(kp) | SigningKey::P384(kp) => ecdsa_sign(kp, msg),
            SigningKey::Rsa(kp) => rsa_sign(kp, msg),
            SigningKey::Ed25519(kp) => Some(kp.sign(msg).as_ref().to_vec()),
        }
        .ok_or(CaError::Signing)
    }

    /// The contents of the SubjectPublicKeyInfo's BIT STRING (EC point, RSAPublicKey, or the
    /// raw Ed25519 key).
    pub(crate) fn public_key_bits(&self) -> &[u8] {
        match self {
            SigningKey::P256(kp) | SigningKey::P384(kp) => kp.public_key().as_ref(),
            SigningKey::Rsa(kp) => kp.public_key().as_ref(),
            SigningKey::Ed25519(kp) => kp.public_key().as_ref(),
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, CaError> {
        let der: Result<PublicKeyX509Der<'static>, _> = match self {
            SigningKey::P256(kp) | SigningKey::P384(kp) => kp.public_key().as_der(),
            SigningKey::Rsa(kp) => kp.public_key().as_der(),
            SigningKey::Ed25519(kp) => kp.public_key().as_der(),
        };
        der.map(|d| d.as_ref().to_vec())
            .map_err(|_| CaError::Encoding("cannot encode a public key".to_string()))
    }
}

/// SHA-1 of the subject public key bits: the key identifier of RFC 5280 4.2.1.2 method (1).
pub(crate) fn key_identifier(public_key_bits: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        public_key_bits,
    )
    .as_ref()
    .to_vec()
}

/// A failure of a key directory or key file, turned into the caller's error ([`CaError`] or
/// [`JwtError`](crate::jwt::JwtError)) with `?`.
#[derive(Debug)]
pub(crate) enum KeyFileError {
    /// The directory cannot be created or secured.
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file named `name` does not exist.
    Missing { name: String, path: PathBuf },
    /// The key file cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file cannot be written.
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<KeyFileError> for CaError {
    fn from(e: KeyFileError) -> Self {
        match e {
            KeyFileError::Dir { path, source } => CaError::KeyDir { path, source },
            KeyFileError::Missing { name, path } => CaError::KeyFileMissing { slot: name, path },
            KeyFileError::Read { path, source } => CaError::KeyFileRead { path, source },
            KeyFileError::Write { path, source } => CaError::KeyFileWrite { path, source },
        }
    }
}

/// Creates `dir` (and parents) with mode 0700, or tightens an existing one to 0700.
pub(crate) fn ensure_key_dir(dir: &Path) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = fs::metadata(dir).map_err(err)?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Path of the key file `<name>.key`.
pub(crate) fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// Writes a key file atomically with mode 0600: a temporary file, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_key_file(dir: &Path, name: &str, pkcs8_der: &[u8]) -> Result<(), KeyFileError> {
    let path = key_path(dir, name);
    let tmp = dir.join(format!(".{name}.key.tmp"));
    let err = |source| KeyFileError::Write {
        path: path.clone(),
        source,
    };
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pkcs8_der)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Reads a key file (zeroized on drop), warning when group or others can access it. `what`
/// names the key in the warning (`CA`, `JWT`).
pub(crate) fn read_key_file_bytes(
    dir: &Path,
    name: &str,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let path = key_path(dir, name);
    let bytes = match fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing {
                name: name.to_string(),
                path,
            });
        }
        Err(source) => return Err(KeyFileError::Read { path, source }),
    };
    if let Ok(meta) = fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "{what} key file is accessible by group or others; expected mode 0600");
    }
    Ok(bytes)
}

/// Reads and parses a CA slot's key file.
pub(crate) fn read_key_file(
    dir: &Path,
    slot_id: &str,
    key_type: KeyType,
) -> Result<SigningKey, CaError> {
    let bytes = read_key_file_bytes(dir, slot_id, "CA")?;
    SigningKey::from_pkcs8(&bytes, Some(key_type)).map_err(|reason| CaError::InvalidKeyFile {
        path: key_path(dir, slot_id),
        reason,
    })
}

/// Deletes a retired key's file; a missing file is not an error. `what` names the key in the
/// warning (`CA`, `JWT`).
pub(crate) fn delete_key_file(dir: &Path, name: &str, what: &str) {
    let path = key_path(dir, name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a retired {what} key file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_strings_round_trip() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            assert_eq!(kt.to_string().parse::<KeyType>().unwrap(), kt);
        }
        assert_eq!(KeyType::default(), KeyType::EcP256);
        let err = "ed25519".parse::<KeyType>().unwrap_err();
        assert!(err.to_string().contains("ed25519"), "{err}");
    }

    #[test]
    fn generated_keys_load_and_debug_redacts() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let k = generate_key(kt).unwrap();
            let key = SigningKey::from_pkcs8(&k.pkcs8_der, Some(kt)).unwrap();
            assert_eq!(key.spki_der().unwrap(), k.spki_der);
            let dbg = format!("{k:?} {key:?}");
            assert!(dbg.contains("<redacted>"));
            assert!(!dbg.contains(&hex::encode(&k.pkcs8_der[..])));
            // A key of another type is refused.
            let other = if kt == KeyType::EcP256 {
                KeyType::EcP384
            } else {
                KeyType::EcP256
            };
            assert!(SigningKey::from_pkcs8(&k.pkcs8_der, Some(other)).is_err());
        }
    }
}
