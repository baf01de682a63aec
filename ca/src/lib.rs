//! Signet's certificate authority: CA keys, X509-SVID minting and CA rotation.
//!
//! - A self-signed root per CA generation by default, or an intermediate signed by an upstream
//!   CA loaded from PEM files ([`UpstreamConfig`]).
//! - Key types `ec-p256` (default), `ec-p384`, `rsa-2048` ([`KeyType`]); keys live in
//!   `key_dir` as PKCS#8 DER files with mode 0600 and are zeroized in memory.
//! - Rotation without an outage ([`CertificateAuthority::rotate_if_due`]): prepare at 1/2 of the
//!   active CA's lifetime (published in the bundle before it signs anything), activate at 5/6,
//!   keep the retired CA in the bundle until it expires.
//! - X509-SVIDs that follow the standard exactly, built from a pre-encoded template so that
//!   signing costs little more than the signature itself.
//!
//! This crate does no network or database I/O: the issuer stores the journal
//! ([`CertificateAuthority::journal_bytes`]) and publishes [`CertificateAuthority::trust_anchors`].
//! It never logs or prints key material.

mod authority;
mod cert;
mod csr;
mod der;
mod keys;
mod rotation;
mod upstream;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use signet_spiffe::{SpiffeId, TrustDomain};

pub use authority::{CA_BACKDATE_SECS, CertificateAuthority, SVID_BACKDATE_SECS};
pub use csr::public_key_from_csr;
pub use keys::{GeneratedKey, KeyType, generate_key};

/// Upstream CA files: every Signet CA becomes an intermediate signed by this CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// PEM file with the upstream CA certificate first, optionally followed by its chain in
    /// order. The last certificate of the file is the trust anchor that gets published.
    pub cert_path: PathBuf,
    /// PEM file with the unencrypted PKCS#8 private key (`PRIVATE KEY`) of the first certificate.
    pub key_path: PathBuf,
}

/// Configuration of the certificate authority.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The trust domain the CA issues for.
    pub trust_domain: TrustDomain,
    /// Key type of new CA keys (existing CAs keep theirs until rotated out).
    pub key_type: KeyType,
    /// CA certificate lifetime (default 24h in the issuer configuration).
    pub ttl: Duration,
    /// Upstream CA, if any; self-signed roots otherwise.
    pub upstream: Option<UpstreamConfig>,
    /// Directory of the CA key files (`<data_dir>/ca`); created 0700, key files 0600.
    pub key_dir: PathBuf,
}

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A key type string is not one of the supported ones.
    #[error("unknown CA key type {0:?} (expected ec-p256, ec-p384 or rsa-2048)")]
    UnknownKeyType(String),
    /// The CA TTL is shorter than one second.
    #[error("the CA TTL must be at least one second")]
    InvalidCaTtl,
    /// The SVID TTL is shorter than one second.
    #[error("the X509-SVID TTL must be at least one second")]
    InvalidSvidTtl,
    /// A time cannot be represented.
    #[error("invalid time: {0}")]
    InvalidTime(String),
    /// The key directory cannot be created or secured.
    #[error("cannot create or secure the CA key directory {}: {source}", path.display())]
    KeyDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file of a CA that must sign is missing.
    #[error("the key file of CA {slot} is missing: {}", path.display())]
    KeyFileMissing {
        /// The CA slot id.
        slot: String,
        /// The expected key file.
        path: PathBuf,
    },
    /// A key file cannot be read.
    #[error("cannot read the CA key file {}: {source}", path.display())]
    KeyFileRead {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file cannot be written.
    #[error("cannot write the CA key file {}: {source}", path.display())]
    KeyFileWrite {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file does not hold a usable key of the expected type.
    #[error("invalid CA key file {}: {reason}", path.display())]
    InvalidKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file does not belong to its CA certificate.
    #[error("the key file of CA {slot} does not match its certificate")]
    KeyMismatch {
        /// The CA slot id.
        slot: String,
    },
    /// Key generation failed.
    #[error("cannot generate a {0} key")]
    KeyGeneration(KeyType),
    /// The random number generator failed.
    #[error("the random number generator failed")]
    Random,
    /// A signature operation failed.
    #[error("signing failed")]
    Signing,
    /// Encoding failed.
    #[error("encoding failed: {0}")]
    Encoding(String),
    /// The journal cannot be used.
    #[error("corrupt CA journal: {0}")]
    JournalCorrupt(String),
    /// The journal belongs to another trust domain.
    #[error(
        "the CA journal belongs to trust domain {journal:?}, the configuration says {config:?}"
    )]
    JournalTrustDomainMismatch {
        /// Trust domain in the journal.
        journal: String,
        /// Configured trust domain.
        config: String,
    },
    /// An upstream file cannot be read.
    #[error("cannot read upstream CA file {}: {source}", path.display())]
    UpstreamRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The upstream certificate file is unusable.
    #[error("invalid upstream CA certificate file {}: {reason}", path.display())]
    Upstream {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The upstream key file is unusable.
    #[error("invalid upstream CA key file {}: {reason}", path.display())]
    UpstreamKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The upstream key does not belong to the upstream certificate.
    #[error("the upstream key {} does not match the first certificate of {}", key_path.display(), cert_path.display())]
    UpstreamKeyMismatch {
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        cert_path: PathBuf,
    },
    /// The upstream CA certificate expired.
    #[error("the upstream CA certificate {} has expired", path.display())]
    UpstreamExpired {
        /// The certificate file.
        path: PathBuf,
    },
    /// `activate` was asked with nothing prepared.
    #[error("no CA is prepared; run `ca prepare` first")]
    NoPreparedCa,
    /// There is no active CA.
    #[error("no active CA")]
    NoActiveCa,
    /// The CA that would sign has expired.
    #[error("CA {slot} expired at {} (Unix seconds)", unix_secs(*not_after))]
    CaExpired {
        /// The CA slot id.
        slot: String,
        /// Its notAfter.
        not_after: SystemTime,
    },
    /// The CA that would sign is not valid yet (the clock went backwards).
    #[error("CA {slot} is not valid before {} (Unix seconds)", unix_secs(*not_before))]
    CaNotYetValid {
        /// The CA slot id.
        slot: String,
        /// Its notBefore.
        not_before: SystemTime,
    },
    /// The SPIFFE ID is not in the CA's trust domain.
    #[error("{spiffe_id} is not in trust domain {trust_domain}")]
    WrongTrustDomain {
        /// The requested ID.
        spiffe_id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// An X509-SVID's SPIFFE ID must have a path.
    #[error("{0} has no path; an X509-SVID needs a workload path")]
    SvidIdWithoutPath(String),
    /// A DNS name is invalid.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidDnsName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The public key is malformed.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// The public key algorithm is not supported for X509-SVIDs.
    #[error(
        "unsupported public key algorithm: {0} (supported: ECDSA P-256/P-384, RSA 2048-8192, Ed25519)"
    )]
    UnsupportedKeyAlgorithm(String),
    /// The CSR is not a DER PKCS#10 request.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The CSR's signature does not verify or uses an unsupported algorithm.
    #[error("CSR signature rejected: {0}")]
    CsrSignature(String),
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// State of a CA slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Published in the trust bundle, not signing yet.
    Prepared,
    /// Signing.
    Active,
    /// No longer signing; stays published until its certificate expires.
    Retired,
}

impl SlotState {
    /// `prepared`, `active` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Prepared => "prepared",
            SlotState::Active => "active",
            SlotState::Retired => "retired",
        }
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Public information about a CA slot (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot id (16 hex digits); also the key file name `<id>.key`.
    pub id: String,
    /// State.
    pub state: SlotState,
    /// Certificate notBefore.
    pub not_before: SystemTime,
    /// Certificate notAfter.
    pub not_after: SystemTime,
    /// Certificate subject, e.g. `O=Signet, CN=Signet CA 0123456789abcdef`.
    pub subject: String,
    /// Key type.
    pub key_type: KeyType,
    /// SHA-256 fingerprint of the certificate DER, lowercase hex.
    pub fingerprint_sha256: String,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
}

/// Result of [`CertificateAuthority::rotate_if_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// Nothing was due.
    Unchanged,
    /// A new CA was prepared (and published).
    Prepared(SlotInfo),
    /// A CA was activated.
    Activated(SlotInfo),
    /// Expired retired CAs were removed (their ids).
    Pruned(Vec<String>),
}

/// A request to sign an X509-SVID.
#[derive(Debug, Clone, Copy)]
pub struct X509SvidRequest<'a> {
    /// The SPIFFE ID (must be in the CA's trust domain and have a path).
    pub spiffe_id: &'a SpiffeId,
    /// The subject public key, SubjectPublicKeyInfo DER.
    pub public_key_spki_der: &'a [u8],
    /// Requested lifetime (capped by the CA's notAfter).
    pub ttl: Duration,
    /// Extra DNS SANs.
    pub dns_names: &'a [String],
}

/// A signed X509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedX509Svid {
    /// Leaf first, then intermediates; never the trust anchor.
    pub cert_chain_der: Vec<Vec<u8>>,
    /// The serial number, lowercase hex.
    pub serial_hex: String,
    /// The leaf's notBefore.
    pub not_before: SystemTime,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

/// Delegation keys: the Biscuit root keys of delegation tokens, rotated like the CA.
pub mod delegation;
/// JWT-SVID signing keys (ES256/ES384/RS256), their rotation, and JWT-SVID minting.
pub mod jwt;
