//! The issuer's delegation keys: the Biscuit root keys that sign delegation tokens' authority
//! blocks, and sign hop blocks as a third party. Ed25519 by default, P-256 available.
//!
//! Each key has a small integer id (`root_key_id` in tokens, 1, 2, ...) and rotates on the
//! schedule shared with the CA and the JWT keys: the next key is prepared at 1/2 of the active
//! key's lifetime and published at once (verifiers fetch it long before it signs), activated at
//! 5/6; a retired key stays published until every token it may have signed expired
//! (`max_token_ttl` plus a grace), then is pruned. Key files `<key_dir>/<id>.key` hold the raw
//! private key (mode 0600, directory 0700, zeroized in memory); the journal holds everything
//! else and never key material.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::Algorithm;
use biscuit_auth::{KeyPair, PrivateKey};
use serde::{Deserialize, Serialize};

use crate::SlotState;
use crate::keys::{
    KeyFileError, delete_key_file, ensure_key_dir, read_key_file_bytes, write_key_file,
};
use crate::rotation::{
    Rotated, RotatingSlot, Rotation, RotationError, SlotMaker, Slots, check_journal_states,
    system_time, unix_secs,
};

const JOURNAL_VERSION: u32 = 1;

/// Seconds a retired key stays published beyond the longest token it may have signed.
pub const RETIRED_KEY_GRACE_SECS: i64 = 300;

/// Default key lifetime.
pub const DEFAULT_DELEGATION_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Default longest delegation token lifetime.
pub const DEFAULT_MAX_DELEGATION_TTL: Duration = Duration::from_secs(3600);

/// Shortest key lifetime accepted.
pub const MIN_DELEGATION_KEY_TTL: Duration = Duration::from_secs(6);

/// The algorithm of delegation keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DelegationKeyType {
    /// Ed25519 (Biscuit's default).
    #[default]
    Ed25519,
    /// ECDSA P-256 (`secp256r1` in Biscuit).
    EcP256,
}

impl DelegationKeyType {
    /// `ed25519` or `ec-p256` (the config spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationKeyType::Ed25519 => "ed25519",
            DelegationKeyType::EcP256 => "ec-p256",
        }
    }

    /// The type named `s` in the config.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ed25519" => Some(DelegationKeyType::Ed25519),
            "ec-p256" => Some(DelegationKeyType::EcP256),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            DelegationKeyType::Ed25519 => Algorithm::Ed25519,
            DelegationKeyType::EcP256 => Algorithm::Secp256r1,
        }
    }
}

impl fmt::Display for DelegationKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of the delegation keys.
#[derive(Debug, Clone)]
pub struct DelegationKeyConfig {
    /// Type of new keys.
    pub key_type: DelegationKeyType,
    /// Lifetime of each key (at least [`MIN_DELEGATION_KEY_TTL`]).
    pub key_ttl: Duration,
    /// Longest token lifetime: retired keys stay published this long (plus the grace).
    pub max_token_ttl: Duration,
    /// Directory of the key files (e.g. `<data_dir>/delegation`), created 0700.
    pub key_dir: PathBuf,
}

/// Errors of the delegation key manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationKeyError {
    /// The key TTL is too short.
    #[error("the delegation key TTL must be at least {}s", MIN_DELEGATION_KEY_TTL.as_secs())]
    InvalidKeyTtl,
    /// The clock is unusable.
    #[error("time is before 1970 or out of range")]
    InvalidTime,
    /// The journal cannot be used.
    #[error("delegation key journal is corrupt: {0}")]
    JournalCorrupt(String),
    /// A key file is missing, unreadable or unwritable.
    #[error("delegation key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A key file does not hold the key the journal names.
    #[error("delegation key file of root key {0} does not match the journal")]
    KeyMismatch(u32),
    /// No key can sign (none active, or past its lifetime).
    #[error("no active delegation key can sign")]
    NoActiveKey,
    /// Nothing is prepared (forced activation).
    #[error("no prepared delegation key to activate")]
    NoPreparedKey,
    /// A key expired before it could be used.
    #[error("delegation key {id} expired at {not_after}")]
    KeyExpired {
        /// The key.
        id: String,
        /// Its end of life (Unix seconds).
        not_after: i64,
    },
    /// Encoding failed.
    #[error("encoding: {0}")]
    Encoding(String),
}

impl From<KeyFileError> for DelegationKeyError {
    fn from(e: KeyFileError) -> Self {
        let (path, reason) = match e {
            KeyFileError::Dir { path, source }
            | KeyFileError::Read { path, source }
            | KeyFileError::Write { path, source } => (path, source.to_string()),
            KeyFileError::Missing { path, .. } => (path, "missing".to_owned()),
        };
        DelegationKeyError::KeyFile { path, reason }
    }
}

impl From<RotationError> for DelegationKeyError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::NoPrepared => DelegationKeyError::NoPreparedKey,
            RotationError::Expired { id, not_after } => {
                DelegationKeyError::KeyExpired { id, not_after }
            }
        }
    }
}

/// Public information about a delegation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationKeyInfo {
    /// The id tokens carry as `root_key_id`.
    pub root_key_id: u32,
    /// The key type.
    pub key_type: DelegationKeyType,
    /// The public key in Biscuit's text form (`ed25519/<hex>`, `secp256r1/<hex>`).
    pub public_key: String,
    /// Prepared, active or retired.
    pub state: SlotState,
    /// When it was created.
    pub created_at: SystemTime,
    /// End of its signing life.
    pub not_after: SystemTime,
    /// Until when it stays published (retired keys).
    pub published_until: Option<SystemTime>,
}

/// Result of [`DelegationKeyManager::rotate_if_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelegationRotationOutcome {
    /// Nothing was due.
    Unchanged,
    /// A key was prepared (and published).
    Prepared(DelegationKeyInfo),
    /// A key was activated.
    Activated(DelegationKeyInfo),
    /// Retired keys were removed (their ids).
    Pruned(Vec<String>),
}

impl From<Rotated<DelegationKeyInfo>> for DelegationRotationOutcome {
    fn from(r: Rotated<DelegationKeyInfo>) -> Self {
        match r {
            Rotated::Unchanged => DelegationRotationOutcome::Unchanged,
            Rotated::Prepared(i) => DelegationRotationOutcome::Prepared(i),
            Rotated::Activated(i) => DelegationRotationOutcome::Activated(i),
            Rotated::Pruned(ids) => DelegationRotationOutcome::Pruned(ids),
        }
    }
}

/// The active signing key: its id and key pair. `Debug` shows the id only.
pub struct DelegationSigner {
    /// `root_key_id`.
    pub root_key_id: u32,
    /// The key pair (private key zeroized by Biscuit's key types when dropped).
    pub key: KeyPair,
    not_after: i64,
}

impl fmt::Debug for DelegationSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelegationSigner")
            .field("root_key_id", &self.root_key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

pub(crate) struct Slot {
    id: u32,
    name: String,
    state: SlotState,
    key_type: DelegationKeyType,
    created_at: i64,
    not_after: i64,
    max_token_ttl: u64,
    retired_at: Option<i64>,
    publish_until: Option<i64>,
    public_key: String,
    signer: Option<Arc<DelegationSigner>>,
}

impl RotatingSlot for Slot {
    type Info = DelegationKeyInfo;

    fn id(&self) -> &str {
        &self.name
    }
    fn state(&self) -> SlotState {
        self.state
    }
    fn activate(&mut self) {
        self.state = SlotState::Active;
    }
    fn retire(&mut self, now: i64) {
        self.state = SlotState::Retired;
        self.signer = None;
        self.retired_at = Some(now);
        let ttl = i64::try_from(self.max_token_ttl).unwrap_or(i64::MAX);
        self.publish_until = Some(
            now.saturating_add(ttl)
                .saturating_add(RETIRED_KEY_GRACE_SECS),
        );
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
    fn not_after(&self) -> i64 {
        self.not_after
    }
    fn prunable(&self, now: i64) -> bool {
        self.publish_until.is_some_and(|until| now >= until)
    }
    fn published(&self) -> &[u8] {
        self.public_key.as_bytes()
    }
    fn info(&self) -> DelegationKeyInfo {
        DelegationKeyInfo {
            root_key_id: self.id,
            key_type: self.key_type,
            public_key: self.public_key.clone(),
            state: self.state,
            created_at: system_time(self.created_at),
            not_after: system_time(self.not_after),
            published_until: self.publish_until.map(system_time),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Journal {
    version: u32,
    sequence: u64,
    next_id: u32,
    keys: Vec<JournalKey>,
}

#[derive(Serialize, Deserialize)]
struct JournalKey {
    root_key_id: u32,
    state: SlotState,
    key_type: DelegationKeyType,
    created_at: i64,
    not_after: i64,
    max_token_ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publish_until: Option<i64>,
    public_key: String,
}

/// The delegation keys: up to one prepared, one active and any number of retired keys.
/// `Send + Sync`; share it as `Arc<DelegationKeyManager>`.
pub struct DelegationKeyManager {
    cfg: DelegationKeyConfig,
    rotation: Rotation<Slot>,
    next_id: std::sync::Mutex<u32>,
}

impl fmt::Debug for DelegationKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.rotation.read();
        f.debug_struct("DelegationKeyManager")
            .field("key_type", &self.cfg.key_type)
            .field(
                "keys",
                &st.slots.iter().map(|s| (s.id, s.state)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> Result<i64, DelegationKeyError> {
    unix_secs(t).ok_or(DelegationKeyError::InvalidTime)
}

fn key_from_bytes(
    bytes: &[u8],
    key_type: DelegationKeyType,
) -> Result<KeyPair, biscuit_auth::error::Format> {
    PrivateKey::from_bytes(bytes, key_type.algorithm()).map(|k| KeyPair::from(&k))
}

impl DelegationKeyManager {
    /// Loads the keys from `journal` and their files; with no journal, creates and activates the
    /// first key. Persist [`journal_bytes`](Self::journal_bytes) after opening.
    pub fn open(
        cfg: DelegationKeyConfig,
        journal: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Self, DelegationKeyError> {
        if cfg.key_ttl < MIN_DELEGATION_KEY_TTL {
            return Err(DelegationKeyError::InvalidKeyTtl);
        }
        let now_s = unix(now)?;
        ensure_key_dir(&cfg.key_dir)?;
        let (slots, next_id) = match journal {
            Some(bytes) => Self::load_journal(&cfg, bytes)?,
            None => (
                Slots {
                    slots: Vec::new(),
                    sequence: 0,
                },
                1,
            ),
        };
        let manager = Self {
            cfg,
            rotation: Rotation::new(slots),
            next_id: std::sync::Mutex::new(next_id),
        };
        if journal.is_none() {
            manager
                .rotation
                .push(manager.create_slot(now_s, SlotState::Active)?);
        }
        Ok(manager)
    }

    fn load_journal(
        cfg: &DelegationKeyConfig,
        bytes: &[u8],
    ) -> Result<(Slots<Slot>, u32), DelegationKeyError> {
        let corrupt = DelegationKeyError::JournalCorrupt;
        let j: Journal = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a delegation key journal: {e}")))?;
        if j.version != JOURNAL_VERSION {
            return Err(corrupt(format!(
                "unsupported journal version {}",
                j.version
            )));
        }
        check_journal_states(j.keys.iter().map(|k| k.state), "key").map_err(corrupt)?;
        let mut slots = Vec::with_capacity(j.keys.len());
        for k in j.keys {
            if k.root_key_id == 0
                || k.root_key_id >= j.next_id
                || slots.iter().any(|s: &Slot| s.id == k.root_key_id)
            {
                return Err(corrupt(format!(
                    "invalid or duplicate root key id {}",
                    k.root_key_id
                )));
            }
            if k.not_after <= k.created_at {
                return Err(corrupt(format!(
                    "key {} ends before it starts",
                    k.root_key_id
                )));
            }
            let name = k.root_key_id.to_string();
            let mut max_token_ttl = k.max_token_ttl_secs;
            let signer = match k.state {
                SlotState::Retired => {
                    if k.retired_at.is_none() || k.publish_until.is_none() {
                        return Err(corrupt(format!(
                            "retired key {} has no retirement time",
                            k.root_key_id
                        )));
                    }
                    None
                }
                SlotState::Prepared | SlotState::Active => {
                    let bytes = read_key_file_bytes(&cfg.key_dir, &name, "delegation")?;
                    let key = key_from_bytes(&bytes, k.key_type).map_err(|e| {
                        DelegationKeyError::KeyFile {
                            path: crate::keys::key_path(&cfg.key_dir, &name),
                            reason: e.to_string(),
                        }
                    })?;
                    if key.public().print() != k.public_key {
                        return Err(DelegationKeyError::KeyMismatch(k.root_key_id));
                    }
                    max_token_ttl = max_token_ttl.max(cfg.max_token_ttl.as_secs());
                    Some(Arc::new(DelegationSigner {
                        root_key_id: k.root_key_id,
                        key,
                        not_after: k.not_after,
                    }))
                }
            };
            slots.push(Slot {
                id: k.root_key_id,
                name,
                state: k.state,
                key_type: k.key_type,
                created_at: k.created_at,
                not_after: k.not_after,
                max_token_ttl,
                retired_at: k.retired_at,
                publish_until: k.publish_until,
                public_key: k.public_key,
                signer,
            });
        }
        Ok((
            Slots {
                slots,
                sequence: j.sequence,
            },
            j.next_id,
        ))
    }

    /// The journal (JSON): ids, states, times, public keys; never private key material.
    pub fn journal_bytes(&self) -> Result<Vec<u8>, DelegationKeyError> {
        let st = self.rotation.read();
        let next_id = *self
            .next_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let j = Journal {
            version: JOURNAL_VERSION,
            sequence: st.sequence,
            next_id,
            keys: st
                .slots
                .iter()
                .map(|s| JournalKey {
                    root_key_id: s.id,
                    state: s.state,
                    key_type: s.key_type,
                    created_at: s.created_at,
                    not_after: s.not_after,
                    max_token_ttl_secs: s.max_token_ttl,
                    retired_at: s.retired_at,
                    publish_until: s.publish_until,
                    public_key: s.public_key.clone(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&j).map_err(|e| DelegationKeyError::Encoding(e.to_string()))
    }

    /// One automatic rotation step (see the JWT key manager: same schedule).
    pub fn rotate_if_due(
        &self,
        now: SystemTime,
    ) -> Result<DelegationRotationOutcome, DelegationKeyError> {
        self.rotation
            .rotate_if_due(self, unix(now)?)
            .map(Into::into)
    }

    /// Prepares the next key now (published at once, signs nothing until activated).
    pub fn prepare(&self, now: SystemTime) -> Result<DelegationKeyInfo, DelegationKeyError> {
        self.rotation.prepare(self, unix(now)?)
    }

    /// Activates the prepared key now.
    pub fn activate(&self, now: SystemTime) -> Result<DelegationKeyInfo, DelegationKeyError> {
        self.rotation.activate(self, unix(now)?)
    }

    /// Every published key, oldest first.
    pub fn keys(&self) -> Vec<DelegationKeyInfo> {
        self.rotation.read().slots.iter().map(Slot::info).collect()
    }

    /// Grows whenever the published keys change.
    pub fn sequence(&self) -> u64 {
        self.rotation.read().sequence
    }

    /// The configuration.
    pub fn config(&self) -> &DelegationKeyConfig {
        &self.cfg
    }

    /// The active key, if it may still sign at `now`.
    pub fn signer(&self, now: SystemTime) -> Result<Arc<DelegationSigner>, DelegationKeyError> {
        let now = unix(now)?;
        let st = self.rotation.read();
        let signer = st
            .active()
            .and_then(|s| s.signer.clone())
            .ok_or(DelegationKeyError::NoActiveKey)?;
        if now >= signer.not_after {
            return Err(DelegationKeyError::NoActiveKey);
        }
        Ok(signer)
    }
}

impl SlotMaker for DelegationKeyManager {
    type Slot = Slot;
    type Error = DelegationKeyError;

    fn noun(&self) -> &'static str {
        "delegation key"
    }

    fn create_slot(&self, now: i64, state: SlotState) -> Result<Slot, DelegationKeyError> {
        let key = KeyPair::new_with_algorithm(self.cfg.key_type.algorithm());
        let id = {
            let mut next = self
                .next_id
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = *next;
            *next = next.saturating_add(1);
            id
        };
        let name = id.to_string();
        let public_key = key.public().print();
        let not_after =
            now.saturating_add(i64::try_from(self.cfg.key_ttl.as_secs()).unwrap_or(i64::MAX));
        write_key_file(&self.cfg.key_dir, &name, &key.private().to_bytes())?;
        tracing::info!(root_key_id = id, state = %state, key_type = %self.cfg.key_type, "created delegation key");
        Ok(Slot {
            id,
            name,
            state,
            key_type: self.cfg.key_type,
            created_at: now,
            not_after,
            max_token_ttl: self.cfg.max_token_ttl.as_secs(),
            retired_at: None,
            publish_until: None,
            public_key,
            signer: Some(Arc::new(DelegationSigner {
                root_key_id: id,
                key,
                not_after,
            })),
        })
    }

    fn delete_key_file(&self, name: &str) {
        delete_key_file(&self.cfg.key_dir, name, "delegation");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn cfg(dir: &std::path::Path, key_type: DelegationKeyType) -> DelegationKeyConfig {
        DelegationKeyConfig {
            key_type,
            key_ttl: Duration::from_secs(600),
            max_token_ttl: Duration::from_secs(60),
            key_dir: dir.join("delegation"),
        }
    }

    #[test]
    fn keys_rotate_publish_before_use_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let m = DelegationKeyManager::open(cfg(dir.path(), DelegationKeyType::Ed25519), None, t0)
            .unwrap();
        let first = m.signer(t0).unwrap();
        assert_eq!(first.root_key_id, 1);
        let mode = std::fs::metadata(dir.path().join("delegation/1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Half-life: key 2 is published, key 1 still signs.
        let half = t0 + Duration::from_secs(300);
        assert!(matches!(
            m.rotate_if_due(half).unwrap(),
            DelegationRotationOutcome::Prepared(ref k) if k.root_key_id == 2
        ));
        assert_eq!(m.keys().len(), 2);
        assert_eq!(m.signer(half).unwrap().root_key_id, 1);
        let seq = m.sequence();
        // Five sixths: key 2 signs; key 1 stays published (retired).
        let late = t0 + Duration::from_secs(500);
        assert!(matches!(
            m.rotate_if_due(late).unwrap(),
            DelegationRotationOutcome::Activated(ref k) if k.root_key_id == 2
        ));
        assert_eq!(m.signer(late).unwrap().root_key_id, 2);
        assert_eq!(m.keys()[0].state, SlotState::Retired);
        assert!(m.sequence() >= seq);
        // Reopen from the journal.
        let journal = m.journal_bytes().unwrap();
        assert!(!String::from_utf8_lossy(&journal).contains(&hex_private(&m, late)));
        let again = DelegationKeyManager::open(
            cfg(dir.path(), DelegationKeyType::Ed25519),
            Some(&journal),
            late,
        )
        .unwrap();
        assert_eq!(again.keys(), m.keys());
        assert_eq!(
            again.signer(late).unwrap().key.public(),
            m.signer(late).unwrap().key.public()
        );
        // The retired key is pruned once its tokens have expired.
        let much_later = late + Duration::from_secs(60 + RETIRED_KEY_GRACE_SECS as u64 + 1);
        let mut pruned = false;
        for _ in 0..3 {
            if let DelegationRotationOutcome::Pruned(ids) = again.rotate_if_due(much_later).unwrap()
            {
                assert_eq!(ids, ["1"]);
                pruned = true;
            }
        }
        assert!(pruned);
        assert!(!dir.path().join("delegation/1.key").exists());
    }

    fn hex_private(m: &DelegationKeyManager, now: SystemTime) -> String {
        m.signer(now).unwrap().key.private().to_bytes_hex()
    }

    #[test]
    fn p256_keys_and_a_tampered_journal_or_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let m = DelegationKeyManager::open(cfg(dir.path(), DelegationKeyType::EcP256), None, now)
            .unwrap();
        assert!(m.keys()[0].public_key.starts_with("secp256r1/"));
        let journal = m.journal_bytes().unwrap();
        // Another key in the file: refused.
        let other = KeyPair::new_with_algorithm(Algorithm::Secp256r1);
        std::fs::write(
            dir.path().join("delegation/1.key"),
            other.private().to_bytes(),
        )
        .unwrap();
        let err = DelegationKeyManager::open(
            cfg(dir.path(), DelegationKeyType::EcP256),
            Some(&journal),
            now,
        )
        .unwrap_err();
        assert!(matches!(err, DelegationKeyError::KeyMismatch(1)), "{err}");
        assert!(matches!(
            DelegationKeyManager::open(
                cfg(dir.path(), DelegationKeyType::EcP256),
                Some(b"{}"),
                now
            ),
            Err(DelegationKeyError::JournalCorrupt(_))
        ));
        let mut short = cfg(dir.path(), DelegationKeyType::Ed25519);
        short.key_ttl = Duration::from_secs(1);
        assert!(matches!(
            DelegationKeyManager::open(short, None, now),
            Err(DelegationKeyError::InvalidKeyTtl)
        ));
    }
}
