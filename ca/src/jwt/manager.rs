//! The JWT key manager: key slots, rotation, journal and JWT-SVID / WIT-SVID minting.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use signet_spiffe::wit::ConfirmationKey;
use signet_spiffe::{Bundle, JwtAuthority, SpiffeId};

use super::keys::{self, JwtSigningKey};
use super::{
    IssuedJwtSvid, IssuedToken, IssuedWitSvid, JwtError, JwtKeyConfig, JwtKeyInfo,
    JwtRotationOutcome, MIN_JWT_KEY_TTL, RETIRED_KEY_GRACE_SECS, TokenKind, jwt_algorithm,
};
use crate::rotation::{
    Rotated, RotatingSlot, Rotation, RotationError, SlotMaker, Slots, check_journal_states,
    system_time, unix_secs,
};
use crate::{KeyType, SlotState, generate_key};

const JOURNAL_VERSION: u32 = 1;
/// Random bytes of a `jti` (128 bits).
const JTI_BYTES: usize = 16;

fn unix(t: SystemTime) -> Result<i64, JwtError> {
    unix_secs(t).ok_or(JwtError::InvalidTime("time is before 1970 or out of range"))
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// What minting needs from one key, prepared once.
struct Signer {
    kid: String,
    key: JwtSigningKey,
    /// The base64url JOSE header `{"alg":…,"kid":…,"typ":…}` (`JWT` or `wit+jwt`).
    header_b64: String,
    /// The JOSE `alg` of the key.
    alg: &'static str,
    not_after: i64,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

impl Signer {
    fn new(
        kid: &str,
        key: JwtSigningKey,
        key_type: KeyType,
        not_after: i64,
        kind: TokenKind,
    ) -> Result<Self, JwtError> {
        let header = serde_json::to_vec(&Header {
            alg: jwt_algorithm(key_type).as_str(),
            kid,
            typ: kind.typ(),
        })
        .map_err(|e| JwtError::Encoding(e.to_string()))?;
        Ok(Signer {
            kid: kid.to_owned(),
            key,
            header_b64: URL_SAFE_NO_PAD.encode(header),
            alg: jwt_algorithm(key_type).as_str(),
            not_after,
        })
    }
}

/// `aud`: a string for one audience, an array for several.
#[derive(Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    sub: &'a str,
    aud: Audience<'a>,
    exp: i64,
    iat: i64,
    jti: &'a str,
}

/// The claims of a WIT-SVID: no `aud`, no `iss`; `cnf` binds the holder's key.
#[derive(Serialize)]
struct WitClaims<'a> {
    sub: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: &'a str,
    cnf: Confirmation<'a>,
}

#[derive(Serialize)]
struct Confirmation<'a> {
    jwk: &'a Value,
}

/// A token being minted: the subject, times and `jti`, and the key that signs it.
struct Minting {
    signer: Arc<Signer>,
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// One JWT key generation.
pub(crate) struct Slot {
    kid: String,
    state: SlotState,
    key_type: KeyType,
    created_at: i64,
    not_after: i64,
    /// The longest token TTL in force while this key could sign (seconds).
    max_token_ttl: u64,
    retired_at: Option<i64>,
    publish_until: Option<i64>,
    /// The public JWK (`kty`, key parameters, `kid`, `alg`).
    jwk: Map<String, Value>,
    /// Loaded for prepared and active keys; retired keys never sign again.
    signer: Option<Arc<Signer>>,
}

impl RotatingSlot for Slot {
    type Info = JwtKeyInfo;

    fn id(&self) -> &str {
        &self.kid
    }

    fn state(&self) -> SlotState {
        self.state
    }

    fn activate(&mut self) {
        self.state = SlotState::Active;
    }

    /// Stops signing at `now`; stays published until every token it may have signed expired.
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

    /// A retired key goes once every token it may have signed expired.
    fn prunable(&self, now: i64) -> bool {
        self.publish_until.is_some_and(|until| now >= until)
    }

    fn published(&self) -> &[u8] {
        self.kid.as_bytes()
    }

    fn info(&self) -> JwtKeyInfo {
        JwtKeyInfo {
            kid: self.kid.clone(),
            state: self.state,
            key_type: self.key_type,
            algorithm: jwt_algorithm(self.key_type),
            created_at: system_time(self.created_at),
            not_after: system_time(self.not_after),
            retired_at: self.retired_at.map(system_time),
            published_until: self.publish_until.map(system_time),
        }
    }
}

impl Slot {
    fn authority(&self) -> JwtAuthority {
        JwtAuthority {
            key_id: self.kid.clone(),
            jwk: Value::Object(self.jwk.clone()),
        }
    }
}

impl From<RotationError> for JwtError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::NoPrepared => JwtError::NoPreparedKey,
            RotationError::Expired { id, not_after } => JwtError::KeyExpired { kid: id, not_after },
        }
    }
}

impl From<Rotated<JwtKeyInfo>> for JwtRotationOutcome {
    fn from(r: Rotated<JwtKeyInfo>) -> Self {
        match r {
            Rotated::Unchanged => JwtRotationOutcome::Unchanged,
            Rotated::Prepared(info) => JwtRotationOutcome::Prepared(info),
            Rotated::Activated(info) => JwtRotationOutcome::Activated(info),
            Rotated::Pruned(kids) => JwtRotationOutcome::Pruned(kids),
        }
    }
}

/// The journal: everything about the keys except private key material.
#[derive(Serialize, Deserialize)]
struct Journal {
    version: u32,
    /// What the keys sign; journals written before WIT-SVIDs have none: JWT-SVIDs.
    #[serde(default)]
    kind: TokenKind,
    trust_domain: String,
    sequence: u64,
    keys: Vec<JournalKey>,
}

#[derive(Serialize, Deserialize)]
struct JournalKey {
    kid: String,
    state: SlotState,
    key_type: KeyType,
    created_at: i64,
    not_after: i64,
    max_token_ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publish_until: Option<i64>,
    /// The public JWK.
    jwk: Map<String, Value>,
}

/// The issuer's JWT (or WIT) signing keys: up to one prepared, one active and any number of
/// retired keys, all signing one [`TokenKind`].
///
/// `Send + Sync`; share it as `Arc<JwtKeyManager>`. Minting takes a read lock just long enough to
/// clone the active signer; rotation generates keys outside the lock.
pub struct JwtKeyManager {
    cfg: JwtKeyConfig,
    kind: TokenKind,
    /// The keys; the sequence counts changes of the published keys.
    rotation: Rotation<Slot>,
}

impl fmt::Debug for JwtKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.rotation.read();
        f.debug_struct("JwtKeyManager")
            .field("kind", &self.kind)
            .field("trust_domain", &self.cfg.trust_domain.name())
            .field("key_type", &self.cfg.key_type)
            .field(
                "keys",
                &st.slots
                    .iter()
                    .map(|s| (s.kid.as_str(), s.state))
                    .collect::<Vec<_>>(),
            )
            .field("sequence", &st.sequence)
            .finish_non_exhaustive()
    }
}

impl JwtKeyManager {
    /// Opens the JWT-SVID signing keys: [`open_for`](Self::open_for) with
    /// [`TokenKind::JwtSvid`].
    pub fn open(
        cfg: JwtKeyConfig,
        journal: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Self, JwtError> {
        Self::open_for(TokenKind::JwtSvid, cfg, journal, now)
    }

    /// Loads the keys signing `kind` from `journal` (bytes previously returned by
    /// [`journal_bytes`](Self::journal_bytes)) and their key files from the key directory; with
    /// no journal, creates and activates the first key. Persist
    /// [`journal_bytes`](Self::journal_bytes) after opening. Give each kind its own key
    /// directory and journal.
    ///
    /// Errors clearly on a corrupt journal, a journal of another trust domain or token kind, and
    /// missing, unreadable or mismatched key files.
    pub fn open_for(
        kind: TokenKind,
        cfg: JwtKeyConfig,
        journal: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Self, JwtError> {
        if cfg.key_ttl < MIN_JWT_KEY_TTL {
            return Err(JwtError::InvalidKeyTtl);
        }
        if cfg.max_token_ttl.as_secs() < 1 {
            return Err(JwtError::InvalidMaxTokenTtl);
        }
        let now_s = unix(now)?;
        crate::keys::ensure_key_dir(&cfg.key_dir)?;
        let state = match journal {
            Some(bytes) => Self::load_journal(kind, &cfg, bytes)?,
            None => Slots {
                slots: Vec::new(),
                sequence: 0,
            },
        };
        let manager = JwtKeyManager {
            cfg,
            kind,
            rotation: Rotation::new(state),
        };
        if journal.is_none() {
            manager
                .rotation
                .push(manager.create_slot(now_s, SlotState::Active)?);
        }
        Ok(manager)
    }

    fn load_journal(
        kind: TokenKind,
        cfg: &JwtKeyConfig,
        bytes: &[u8],
    ) -> Result<Slots<Slot>, JwtError> {
        let corrupt = |why: String| JwtError::JournalCorrupt(why);
        let j: Journal = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a JWT key journal: {e}")))?;
        if j.version != JOURNAL_VERSION {
            return Err(corrupt(format!(
                "unsupported journal version {} (expected {JOURNAL_VERSION})",
                j.version
            )));
        }
        if j.kind != kind {
            return Err(JwtError::JournalKindMismatch {
                journal: j.kind,
                config: kind,
            });
        }
        if j.trust_domain != cfg.trust_domain.name() {
            return Err(JwtError::JournalTrustDomainMismatch {
                journal: j.trust_domain,
                config: cfg.trust_domain.name().to_owned(),
            });
        }
        check_journal_states(j.keys.iter().map(|k| k.state), "key").map_err(corrupt)?;
        let mut slots: Vec<Slot> = Vec::with_capacity(j.keys.len());
        for jk in j.keys {
            if !keys::valid_kid(&jk.kid) || slots.iter().any(|s| s.kid == jk.kid) {
                return Err(corrupt(format!("invalid or duplicate key ID {:?}", jk.kid)));
            }
            if jk.jwk.get("kid").and_then(Value::as_str) != Some(jk.kid.as_str()) {
                return Err(corrupt(format!(
                    "the JWK of key {} has another `kid`",
                    jk.kid
                )));
            }
            let alg = jwt_algorithm(jk.key_type).as_str();
            if jk.jwk.get("alg").and_then(Value::as_str) != Some(alg) {
                return Err(corrupt(format!(
                    "the JWK of key {} is not marked `alg: {alg}`",
                    jk.kid
                )));
            }
            if jk.not_after <= jk.created_at {
                return Err(corrupt(format!("key {} ends before it starts", jk.kid)));
            }
            let mut max_token_ttl = jk.max_token_ttl_secs;
            let signer = match jk.state {
                SlotState::Retired => {
                    if jk.retired_at.is_none() || jk.publish_until.is_none() {
                        return Err(corrupt(format!(
                            "retired key {} has no retirement time",
                            jk.kid
                        )));
                    }
                    None
                }
                SlotState::Prepared | SlotState::Active => {
                    let key = keys::read_key_file(&cfg.key_dir, &jk.kid, jk.key_type)?;
                    if key.public_jwk(jk.key_type)? != jk.jwk {
                        return Err(JwtError::KeyMismatch { kid: jk.kid });
                    }
                    // Tokens minted before a restart may have used a longer maximum: keep the
                    // largest one ever in force for this key.
                    max_token_ttl = max_token_ttl.max(cfg.max_token_ttl.as_secs());
                    Some(Arc::new(Signer::new(
                        &jk.kid,
                        key,
                        jk.key_type,
                        jk.not_after,
                        kind,
                    )?))
                }
            };
            slots.push(Slot {
                kid: jk.kid,
                state: jk.state,
                key_type: jk.key_type,
                created_at: jk.created_at,
                not_after: jk.not_after,
                max_token_ttl,
                retired_at: jk.retired_at,
                publish_until: jk.publish_until,
                jwk: jk.jwk,
                signer,
            });
        }
        // Every public key must be one the bundle encoder accepts (no private parameters, a
        // valid point or modulus).
        let mut bundle = Bundle::new(cfg.trust_domain.clone());
        bundle.jwt_authorities = slots.iter().map(Slot::authority).collect();
        bundle
            .to_json()
            .map_err(|e| corrupt(format!("unusable public key: {e}")))?;
        Ok(Slots {
            slots,
            sequence: j.sequence,
        })
    }
}

impl SlotMaker for JwtKeyManager {
    type Slot = Slot;
    type Error = JwtError;
    fn noun(&self) -> &'static str {
        self.kind.key_noun()
    }

    /// Creates a new key (key file written) without touching the state.
    fn create_slot(&self, now: i64, state: SlotState) -> Result<Slot, JwtError> {
        let key_type = self.cfg.key_type;
        let generated = generate_key(key_type).map_err(|_| JwtError::KeyGeneration(key_type))?;
        let key = JwtSigningKey::from_pkcs8(&generated.pkcs8_der, key_type)
            .map_err(|_| JwtError::KeyGeneration(key_type))?;
        let jwk = key.public_jwk(key_type)?;
        let kid = jwk
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Encoding("the JWK has no kid".to_owned()))?
            .to_owned();
        let not_after = now.saturating_add(secs_i64(self.cfg.key_ttl));
        let signer = Signer::new(&kid, key, key_type, not_after, self.kind)?;
        // Last step: nothing is written unless everything before succeeded.
        crate::keys::write_key_file(&self.cfg.key_dir, &kid, &generated.pkcs8_der)?;
        tracing::info!(kid = %kid, state = %state, key_type = %key_type, "created {}", self.noun());
        Ok(Slot {
            kid,
            state,
            key_type,
            created_at: now,
            not_after,
            max_token_ttl: self.cfg.max_token_ttl.as_secs(),
            retired_at: None,
            publish_until: None,
            jwk,
            signer: Some(Arc::new(signer)),
        })
    }

    fn delete_key_file(&self, kid: &str) {
        crate::keys::delete_key_file(&self.cfg.key_dir, kid, "JWT");
    }
}

impl JwtKeyManager {
    /// Serialized journal (JSON): key IDs, states, times and public JWKs, and the sequence. It
    /// never contains private key material. Persist it whenever rotation changed something.
    pub fn journal_bytes(&self) -> Result<Vec<u8>, JwtError> {
        let st = self.rotation.read();
        let j = Journal {
            version: JOURNAL_VERSION,
            kind: self.kind,
            trust_domain: self.cfg.trust_domain.name().to_owned(),
            sequence: st.sequence,
            keys: st
                .slots
                .iter()
                .map(|s| JournalKey {
                    kid: s.kid.clone(),
                    state: s.state,
                    key_type: s.key_type,
                    created_at: s.created_at,
                    not_after: s.not_after,
                    max_token_ttl_secs: s.max_token_ttl,
                    retired_at: s.retired_at,
                    publish_until: s.publish_until,
                    jwk: s.jwk.clone(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&j).map_err(|e| JwtError::Encoding(e.to_string()))
    }

    /// Automatic rotation, at most one step per call (call it every few seconds; it is
    /// idempotent):
    ///
    /// 1. the active key reached the end of its lifetime: activate the prepared key if there is
    ///    one still within its own, otherwise create and activate a new one at once (only after a
    ///    long outage: verifiers learn that key only at their next bundle refresh);
    /// 2. at 5/6 of the active key's lifetime, activate the prepared key;
    /// 3. at 1/2, prepare the next key (published in [`authorities`](Self::authorities) at once,
    ///    long before it signs anything);
    /// 4. drop retired keys whose tokens have all expired (and delete their key files).
    ///
    /// The caller persists [`journal_bytes`](Self::journal_bytes) whenever the outcome is not
    /// [`JwtRotationOutcome::Unchanged`].
    pub fn rotate_if_due(&self, now: SystemTime) -> Result<JwtRotationOutcome, JwtError> {
        let now_s = unix(now)?;
        self.rotation.rotate_if_due(self, now_s).map(Into::into)
    }

    /// Prepares the next key now: it is published in [`authorities`](Self::authorities) at once
    /// and signs nothing until activated. An already prepared key is replaced.
    pub fn prepare(&self, now: SystemTime) -> Result<JwtKeyInfo, JwtError> {
        let now_s = unix(now)?;
        self.rotation.prepare(self, now_s)
    }

    /// Activates the prepared key now; the active one is retired and stays published until every
    /// token it may have signed expired. Errors if nothing is prepared. (Activating a key that
    /// verifiers have not fetched yet makes its tokens fail until they refresh their bundle.)
    pub fn activate(&self, now: SystemTime) -> Result<JwtKeyInfo, JwtError> {
        let now_s = unix(now)?;
        self.rotation.activate(self, now_s)
    }

    /// All keys, oldest first.
    pub fn keys(&self) -> Vec<JwtKeyInfo> {
        self.rotation.read().slots.iter().map(Slot::info).collect()
    }

    /// The JWT authorities to publish in the trust bundle (prepared, active and retired keys
    /// until pruned), oldest first. Each JWK carries `kty`, its key parameters, `kid` and `alg`;
    /// [`Bundle::to_json`] adds `use: "jwt-svid"`.
    pub fn authorities(&self) -> Vec<JwtAuthority> {
        self.rotation
            .read()
            .slots
            .iter()
            .map(Slot::authority)
            .collect()
    }

    /// Increases whenever [`authorities`](Self::authorities) changes. The issuer combines it with
    /// the CA's bundle sequence into the bundle's `spiffe_sequence`.
    pub fn sequence(&self) -> u64 {
        self.rotation.read().sequence
    }

    /// The configuration.
    pub fn config(&self) -> &JwtKeyConfig {
        &self.cfg
    }

    /// What these keys sign.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    fn active_signer(&self) -> Result<Arc<Signer>, JwtError> {
        self.rotation
            .read()
            .active()
            .and_then(|s| s.signer.clone())
            .ok_or(JwtError::NoActiveKey)
    }

    /// Refuses another token kind than the manager's, and a SPIFFE ID outside the trust domain or
    /// without a path.
    fn check_subject(&self, kind: TokenKind, spiffe_id: &SpiffeId) -> Result<(), JwtError> {
        if kind != self.kind {
            return Err(JwtError::WrongTokenKind {
                manager: self.kind,
                requested: kind,
            });
        }
        if !spiffe_id.is_member_of(&self.cfg.trust_domain) {
            return Err(JwtError::WrongTrustDomain {
                spiffe_id: spiffe_id.to_string(),
                trust_domain: self.cfg.trust_domain.name().to_owned(),
            });
        }
        if spiffe_id.path().is_empty() {
            return Err(JwtError::IdWithoutPath(spiffe_id.to_string()));
        }
        Ok(())
    }

    /// Checks the TTL (1 s to `max_token_ttl`) and takes the active key (within its lifetime):
    /// `iat` = `now`, `exp` = `now + ttl`, and a fresh `jti`.
    fn begin(
        &self,
        spiffe_id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Minting, JwtError> {
        let ttl = ttl.as_secs();
        if ttl == 0 {
            return Err(JwtError::InvalidTokenTtl);
        }
        let max = self.cfg.max_token_ttl.as_secs();
        if ttl > max {
            return Err(JwtError::TokenTtlTooLong {
                requested: ttl,
                max,
            });
        }
        let now_s = unix(now)?;
        let signer = self.active_signer()?;
        if now_s >= signer.not_after {
            return Err(JwtError::KeyExpired {
                kid: signer.kid.clone(),
                not_after: signer.not_after,
            });
        }
        let exp = now_s.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        let mut jti_bytes = [0u8; JTI_BYTES];
        SystemRandom::new()
            .fill(&mut jti_bytes)
            .map_err(|_| JwtError::Random)?;
        Ok(Minting {
            signer,
            sub: spiffe_id.to_string(),
            iat: now_s,
            exp,
            jti: URL_SAFE_NO_PAD.encode(jti_bytes),
        })
    }

    /// Encodes and signs `claims` with the key of `m`.
    fn finish(m: &Minting, claims: &impl Serialize) -> Result<IssuedToken, JwtError> {
        let claims = serde_json::to_vec(claims).map_err(|e| JwtError::Encoding(e.to_string()))?;
        let signer = &m.signer;
        let mut token = String::with_capacity(signer.header_b64.len() + claims.len() * 4 / 3 + 180);
        token.push_str(&signer.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = signer.key.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(IssuedToken {
            token,
            expiry: system_time(m.exp),
            issued_at: system_time(m.iat),
            key_id: signer.kid.clone(),
            jti: m.jti.clone(),
        })
    }

    /// Mints a JWT-SVID for `spiffe_id` (in the trust domain, with a path) with the active key.
    ///
    /// `audience` must be non-empty (each entry non-empty); one audience is written as a string,
    /// several as an array. `exp` is exactly `now + ttl` (whole seconds), `iat` is `now`; the TTL
    /// must be between one second and `max_token_ttl`. `iss` is written when `issuer` is given.
    /// Only the JWT-SVID keys mint them ([`JwtError::WrongTokenKind`] otherwise).
    pub fn mint_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
        issuer: Option<&str>,
    ) -> Result<IssuedJwtSvid, JwtError> {
        self.check_subject(TokenKind::JwtSvid, spiffe_id)?;
        let aud = match audience {
            [] => return Err(JwtError::NoAudience),
            _ if audience.iter().any(String::is_empty) => return Err(JwtError::EmptyAudience),
            [one] => Audience::One(one),
            many => Audience::Many(many),
        };
        if issuer == Some("") {
            return Err(JwtError::EmptyIssuer);
        }
        let m = self.begin(spiffe_id, ttl, now)?;
        let claims = Claims {
            iss: issuer,
            sub: &m.sub,
            aud,
            exp: m.exp,
            iat: m.iat,
            jti: &m.jti,
        };
        Self::finish(&m, &claims)
    }

    /// Signs an OAuth access token (RFC 9068, header `typ: at+jwt`) with the active JWT-SVID key,
    /// for the token exchange endpoint: `claims` is written as given (it must carry `exp`,
    /// `iat` and `jti`; the caller sets them), so that verifiers use the published JWT
    /// authorities. Only the JWT-SVID keys sign them ([`JwtError::WrongTokenKind`] otherwise).
    pub fn sign_access_token(
        &self,
        claims: &serde_json::Value,
        now: SystemTime,
    ) -> Result<(String, String), JwtError> {
        if self.kind != TokenKind::JwtSvid {
            return Err(JwtError::WrongTokenKind {
                manager: self.kind,
                requested: TokenKind::JwtSvid,
            });
        }
        let now_s = unix(now)?;
        let signer = self.active_signer()?;
        if now_s >= signer.not_after {
            return Err(JwtError::KeyExpired {
                kid: signer.kid.clone(),
                not_after: signer.not_after,
            });
        }
        let header = serde_json::to_vec(&Header {
            alg: signer.alg,
            kid: &signer.kid,
            typ: "at+jwt",
        })
        .map_err(|e| JwtError::Encoding(e.to_string()))?;
        let claims = serde_json::to_vec(claims).map_err(|e| JwtError::Encoding(e.to_string()))?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = signer.key.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok((token, signer.kid.clone()))
    }

    /// Mints a WIT-SVID for `spiffe_id` (in the trust domain, with a path) with the active key,
    /// binding `holder_public_key` (a DER SubjectPublicKeyInfo: EC P-256 gives `cnf.jwk.alg`
    /// `ES256`, EC P-384 `ES384`, RSA 2048-8192 bits `RS256`; any other key is refused with
    /// [`JwtError::HolderKey`]).
    ///
    /// Claims: `sub`, `exp` = `now + ttl`, `iat` = `nbf` = `now`, `jti`, `cnf: {"jwk": ...}`; no
    /// `aud` and no `iss`. The TTL must be between one second and `max_token_ttl`. Only the
    /// WIT-SVID keys mint them ([`JwtError::WrongTokenKind`] otherwise).
    pub fn mint_wit_svid(
        &self,
        spiffe_id: &SpiffeId,
        holder_public_key: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedWitSvid, JwtError> {
        self.check_subject(TokenKind::WitSvid, spiffe_id)?;
        let holder =
            ConfirmationKey::from_spki_der(holder_public_key).map_err(JwtError::HolderKey)?;
        let m = self.begin(spiffe_id, ttl, now)?;
        let claims = WitClaims {
            sub: &m.sub,
            exp: m.exp,
            iat: m.iat,
            nbf: m.iat,
            jti: &m.jti,
            cnf: Confirmation { jwk: &holder.jwk },
        };
        Self::finish(&m, &claims)
    }
}
