//! JWT-SVID and WIT-SVID signing keys and minting.
//!
//! - One [`JwtKeyManager`] signs one [`TokenKind`]: JWT-SVIDs ([`JwtKeyManager::open`]) or
//!   WIT-SVIDs ([`JwtKeyManager::open_for`] with [`TokenKind::WitSvid`]). The issuer runs one of
//!   each with its own key directory and journal (key separation: a WIT key never signs a
//!   JWT-SVID, nor the other way round, and each is published under its own bundle `use`).
//! - Key types `ec-p256` (JWS `ES256`, the default), `ec-p384` (`ES384`) and `rsa-2048`
//!   (`RS256`), the same [`KeyType`] as the X.509 CA. Keys live in their own key directory as
//!   PKCS#8 DER files `<kid>.key` with mode 0600 (directory 0700) and are zeroized in memory.
//! - The key ID (`kid`) is the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.
//! - Rotation with the CA's prepare/publish-before-use scheme
//!   ([`rotate_if_due`](crate::jwt::JwtKeyManager::rotate_if_due)): the next key is prepared at
//!   1/2 of the active key's lifetime and published in
//!   [`authorities`](crate::jwt::JwtKeyManager::authorities) at once, activated at 5/6, and the
//!   retired key stays published until every token it signed has expired:
//!   `retired_at + max_token_ttl +` [`RETIRED_KEY_GRACE_SECS`](crate::jwt::RETIRED_KEY_GRACE_SECS).
//! - Tokens: JWS compact, header `{"alg","kid","typ":"JWT"}`, claims `iss` (when configured),
//!   `sub`, `aud` (a string for one audience, an array for several), `exp`, `iat`, `jti`
//!   (128 random bits, base64url). `exp` is exactly `now + ttl`: it is not capped by the key's
//!   lifetime (a retired key stays published long enough), only `ttl <= max_token_ttl` is enforced.
//! - WIT-SVIDs ([`JwtKeyManager::mint_wit_svid`]): header `{"alg","kid","typ":"wit+jwt"}`, claims
//!   `sub`, `exp`, `iat`, `nbf` (= `iat`), `jti` and `cnf: {"jwk": ...}` binding the holder's
//!   public key (EC P-256 `ES256`, EC P-384 `ES384`, RSA 2048-8192 bits `RS256`); no `aud`, no
//!   `iss`.
//!
//! Like the CA, this module does no network or database I/O: the issuer stores
//! [`journal_bytes`](crate::jwt::JwtKeyManager::journal_bytes) and publishes
//! [`authorities`](crate::jwt::JwtKeyManager::authorities). Verification lives in
//! [`signet_spiffe::jwt`] so that verifiers need no CA.

mod keys;
mod manager;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use signet_spiffe::TrustDomain;
use signet_spiffe::jwt::Algorithm;
use signet_spiffe::wit::HolderKeyError;

pub use manager::JwtKeyManager;

use crate::{KeyType, SlotState};

/// How long a retired key stays published after the longest token it may have signed expired:
/// covers verifiers' leeway and clock skew between the issuer and them.
pub const RETIRED_KEY_GRACE_SECS: i64 = 300;

/// Default lifetime of a JWT signing key (it signs for about half of it).
pub const DEFAULT_JWT_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Default longest JWT-SVID TTL (the issuer's per-entry maximum).
pub const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Shortest accepted key lifetime: the schedule needs whole seconds at 1/2 and 5/6.
pub const MIN_JWT_KEY_TTL: Duration = Duration::from_secs(6);

/// The JWS algorithm a key type signs with: `ES256`, `ES384` or `RS256`.
pub fn jwt_algorithm(key_type: KeyType) -> Algorithm {
    match key_type {
        KeyType::EcP256 => Algorithm::Es256,
        KeyType::EcP384 => Algorithm::Es384,
        KeyType::Rsa2048 => Algorithm::Rs256,
    }
}

/// What a [`JwtKeyManager`] signs. Each kind has keys of its own (key separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TokenKind {
    /// JWT-SVIDs (`typ: JWT`), published in bundles as `use: "jwt-svid"`.
    #[default]
    JwtSvid,
    /// WIT-SVIDs (`typ: wit+jwt`), published in bundles as `use: "wit-svid"`.
    WitSvid,
}

impl TokenKind {
    /// The JOSE `typ` of its tokens: `JWT` or `wit+jwt`.
    pub fn typ(self) -> &'static str {
        match self {
            TokenKind::JwtSvid => "JWT",
            TokenKind::WitSvid => signet_spiffe::wit::WIT_TYPE,
        }
    }

    /// What its keys are called in logs: `JWT key` or `WIT key`.
    pub fn key_noun(self) -> &'static str {
        match self {
            TokenKind::JwtSvid => "JWT key",
            TokenKind::WitSvid => "WIT key",
        }
    }
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenKind::JwtSvid => "JWT-SVID",
            TokenKind::WitSvid => "WIT-SVID",
        })
    }
}

/// Configuration of the JWT (or WIT) signing keys.
#[derive(Debug, Clone)]
pub struct JwtKeyConfig {
    /// The trust domain whose workloads the tokens identify.
    pub trust_domain: TrustDomain,
    /// Key type of new keys (existing keys keep theirs until rotated out).
    pub key_type: KeyType,
    /// Lifetime of each key: the next key is prepared at 1/2 and activated at 5/6 of it. At least
    /// [`MIN_JWT_KEY_TTL`].
    pub key_ttl: Duration,
    /// Longest TTL [`JwtKeyManager::mint_jwt_svid`] (or [`JwtKeyManager::mint_wit_svid`])
    /// accepts; retired keys stay published this long (plus [`RETIRED_KEY_GRACE_SECS`]). At least
    /// one second.
    pub max_token_ttl: Duration,
    /// Directory of the key files (e.g. `<data_dir>/jwt`, or `<data_dir>/wit` for the WIT keys;
    /// never shared with the CA or with the other token kind); created 0700, key files 0600.
    pub key_dir: PathBuf,
}

/// Errors of the JWT key manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The key TTL is too short.
    #[error("the JWT key TTL must be at least {} seconds", MIN_JWT_KEY_TTL.as_secs())]
    InvalidKeyTtl,
    /// The maximum token TTL is shorter than one second.
    #[error("the maximum JWT-SVID TTL must be at least one second")]
    InvalidMaxTokenTtl,
    /// A time cannot be represented.
    #[error("invalid time: {0}")]
    InvalidTime(&'static str),
    /// The key directory cannot be created or secured.
    #[error("cannot create or secure the JWT key directory {}: {source}", path.display())]
    KeyDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file of a key that must sign is missing.
    #[error("the file of JWT key {kid} is missing: {}", path.display())]
    KeyFileMissing {
        /// The key ID.
        kid: String,
        /// The expected key file.
        path: PathBuf,
    },
    /// A key file cannot be read.
    #[error("cannot read the JWT key file {}: {source}", path.display())]
    KeyFileRead {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file cannot be written.
    #[error("cannot write the JWT key file {}: {source}", path.display())]
    KeyFileWrite {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file does not hold a usable key of the expected type.
    #[error("invalid JWT key file {}: {reason}", path.display())]
    InvalidKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file does not hold the key the journal records.
    #[error("the file of JWT key {kid} holds another key than the journal records")]
    KeyMismatch {
        /// The key ID.
        kid: String,
    },
    /// Key generation failed.
    #[error("cannot generate a {0} JWT key")]
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
    #[error("corrupt JWT key journal: {0}")]
    JournalCorrupt(String),
    /// The journal belongs to another trust domain.
    #[error(
        "the JWT key journal belongs to trust domain {journal:?}, the configuration says {config:?}"
    )]
    JournalTrustDomainMismatch {
        /// Trust domain in the journal.
        journal: String,
        /// Configured trust domain.
        config: String,
    },
    /// `activate` was asked with nothing prepared.
    #[error("no JWT key is prepared; prepare one first")]
    NoPreparedKey,
    /// There is no active key.
    #[error("no active JWT key")]
    NoActiveKey,
    /// The key that would sign is past its lifetime (rotation has not run).
    #[error("JWT key {kid} reached the end of its lifetime at {not_after} (Unix seconds)")]
    KeyExpired {
        /// The key ID.
        kid: String,
        /// End of its lifetime, Unix seconds.
        not_after: i64,
    },
    /// The SPIFFE ID is not in the trust domain.
    #[error("{spiffe_id} is not in trust domain {trust_domain}")]
    WrongTrustDomain {
        /// The requested ID.
        spiffe_id: String,
        /// The configured trust domain.
        trust_domain: String,
    },
    /// A JWT-SVID's or WIT-SVID's SPIFFE ID must have a path.
    #[error("{0} has no path; a JWT-SVID or WIT-SVID identifies a workload")]
    IdWithoutPath(String),
    /// The manager signs the other kind of token.
    #[error("these keys sign {manager}s, not {requested}s (each kind has its own keys)")]
    WrongTokenKind {
        /// What the manager signs.
        manager: TokenKind,
        /// What was asked for.
        requested: TokenKind,
    },
    /// The journal belongs to keys of the other token kind.
    #[error("the key journal holds {journal} keys; these keys sign {config}s")]
    JournalKindMismatch {
        /// The kind in the journal.
        journal: TokenKind,
        /// The kind the manager was opened for.
        config: TokenKind,
    },
    /// The holder's public key of a WIT-SVID is not usable.
    #[error("the holder's public key: {0}")]
    HolderKey(#[source] HolderKeyError),
    /// No audience was given.
    #[error("a JWT-SVID needs at least one audience")]
    NoAudience,
    /// An audience is the empty string.
    #[error("an audience must not be empty")]
    EmptyAudience,
    /// The issuer is the empty string.
    #[error("the issuer (`iss`), when given, must not be empty")]
    EmptyIssuer,
    /// The TTL is shorter than one second.
    #[error("the token TTL must be at least one second")]
    InvalidTokenTtl,
    /// The TTL exceeds the configured maximum.
    #[error("the token TTL of {requested} s exceeds the maximum of {max} s")]
    TokenTtlTooLong {
        /// Requested seconds.
        requested: u64,
        /// Maximum seconds.
        max: u64,
    },
}

/// Public information about a JWT key (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKeyInfo {
    /// The key ID: the RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// State.
    pub state: SlotState,
    /// Key type.
    pub key_type: KeyType,
    /// The JWS algorithm it signs with.
    pub algorithm: Algorithm,
    /// When it was created.
    pub created_at: SystemTime,
    /// The end of its lifetime: it never signs after this.
    pub not_after: SystemTime,
    /// When it stopped signing (retired keys).
    pub retired_at: Option<SystemTime>,
    /// Until when it stays published (retired keys).
    pub published_until: Option<SystemTime>,
}

/// Result of [`JwtKeyManager::rotate_if_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtRotationOutcome {
    /// Nothing was due.
    Unchanged,
    /// A new key was prepared (and published).
    Prepared(JwtKeyInfo),
    /// A key was activated.
    Activated(JwtKeyInfo),
    /// Retired keys whose tokens have all expired were removed (their key IDs).
    Pruned(Vec<String>),
}

/// A minted JWT-SVID ([`IssuedJwtSvid`]) or WIT-SVID ([`IssuedWitSvid`]).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token, JWS compact serialization.
    pub token: String,
    /// Its `exp`.
    pub expiry: SystemTime,
    /// Its `iat`.
    pub issued_at: SystemTime,
    /// The `kid` of the key that signed it.
    pub key_id: String,
    /// Its `jti`.
    pub jti: String,
}

/// A minted JWT-SVID.
pub type IssuedJwtSvid = IssuedToken;

/// A minted WIT-SVID.
pub type IssuedWitSvid = IssuedToken;

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A JWT-SVID is a bearer credential (and a WIT-SVID one half of a credential): never in
        // Debug output.
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expiry", &self.expiry)
            .field("issued_at", &self.issued_at)
            .field("key_id", &self.key_id)
            .field("jti", &self.jti)
            .finish()
    }
}
