//! Delegation for AI agents: the issuer's side (docs/delegation.md).
//!
//! [`Delegation`] holds the delegation keys (rotated with the CA's schedule by
//! [`crate::ca_sync::CaSync`], persisted in the store journal [`KEYS_JOURNAL`]), the policy of
//! `[delegation] policies_dir` (hot-reloaded, the last good one kept) and the revocation list
//! (journal [`REVOCATIONS_JOURNAL`], re-read from the store so that every issuer sharing it
//! serves the same list). It mints tokens for a subject ([`Delegation::mint`]), appends hops for
//! the current holder ([`Delegation::delegate`]), revokes ([`Delegation::revoke`]) and records an
//! audit event for every one of them, refusals included (kinds in [`crate::audit::trace`]).
//!
//! The node API (agents, for their attested workloads), the admin API and the token exchange
//! endpoint call it; none of them decides anything itself.

pub mod exchange;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::Biscuit;
use serde_json::json;
use signet_ca::delegation::{DelegationKeyConfig, DelegationKeyManager};
use signet_delegation::keys::{DelegationKeys, KeyInfo, RevocationList, Revoked};
use signet_delegation::policy::{Operation, PolicyRequest, PolicySet};
use signet_delegation::schema::{MAX_RIGHTS, Subject, SubjectKind, check_right, new_token_id};
use signet_delegation::{
    self as token, Chain, HopRequest, MintRequest, Request, Verifier, VerifyError,
};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::Store;

use crate::audit::trace::{KIND_DENIED, KIND_REVOKE};
use crate::config::DelegationSettings;
use crate::idp::IdentityProviders;

/// Store journal of the delegation keys (no key material: the keys are files of the data dir).
pub const KEYS_JOURNAL: &str = "delegation";
/// Store journal of the revocation list.
pub const REVOCATIONS_JOURNAL: &str = "delegation_revocations";
/// Tokens whose verified signatures the issuer's own verifier keeps.
const VERIFIER_CACHE: usize = 256;
/// How often the policy files and the stored revocation list are looked at.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Why a delegation request was refused. The message says what to fix; none echoes a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// The request itself is malformed (a right, a SPIFFE ID, a TTL).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The ID token does not prove a subject (unknown provider, wrong audience, expired, ...).
    #[error("invalid ID token: {0}")]
    InvalidIdToken(String),
    /// The delegation token does not verify (signature, root key, revoked, expired, malformed).
    #[error("{0}")]
    InvalidToken(String),
    /// The caller is not the token's current holder.
    #[error("{0}")]
    NotTheHolder(String),
    /// The request would widen the token (a right it does not carry, a later expiry).
    #[error("refused, a delegation can only narrow: {0}")]
    Widening(String),
    /// The chain would be deeper than the token or the policy allows.
    #[error("{0}")]
    TooDeep(String),
    /// The policy refuses.
    #[error("denied by the delegation policy: {0}")]
    Denied(String),
    /// Something on the issuer's side failed (keys, store).
    #[error("internal error: {0}")]
    Internal(String),
}

impl DelegationError {
    /// `invalid_request`, `denied`, ... (the audit event's `details.error`).
    pub fn code(&self) -> &'static str {
        match self {
            DelegationError::InvalidRequest(_) => "invalid_request",
            DelegationError::InvalidIdToken(_) => "invalid_id_token",
            DelegationError::InvalidToken(_) => "invalid_token",
            DelegationError::NotTheHolder(_) => "not_the_holder",
            DelegationError::Widening(_) => "widening",
            DelegationError::TooDeep(_) => "too_deep",
            DelegationError::Denied(_) => "denied",
            DelegationError::Internal(_) => "internal",
        }
    }
}

/// Who the token is for, as the caller proves it.
#[derive(Debug, Clone, Copy)]
pub enum SubjectProof<'a> {
    /// An OpenID Connect ID token from a configured identity provider.
    IdToken(&'a str),
    /// A verified JWT-SVID or X509-SVID of this SPIFFE ID (the workload acts for itself or for
    /// the workload whose SVID the caller presents).
    Workload(&'a SpiffeId),
}

/// A mint request.
#[derive(Debug, Clone)]
pub struct MintInput<'a> {
    /// Who the token is for.
    pub subject: SubjectProof<'a>,
    /// The first actor (an attested workload).
    pub actor: &'a SpiffeId,
    /// Who asked (the agent or endpoint relaying it), for the audit log.
    pub requested_by: &'a str,
    /// Rights asked for; empty: every right the policy grants.
    pub rights: BTreeSet<String>,
    /// Lifetime asked for; `None`: the longest allowed.
    pub ttl: Option<Duration>,
    /// Hops asked for; `None`: the most allowed.
    pub max_depth: Option<u32>,
    /// `delegation.mint` or `delegation.exchange`.
    pub audit_kind: &'a str,
}

/// A hop request.
#[derive(Debug, Clone)]
pub struct DelegateInput<'a> {
    /// The held token (base64url).
    pub token: &'a str,
    /// The caller: must be the token's holder.
    pub holder: &'a SpiffeId,
    /// Who asked (the agent or endpoint relaying it), for the audit log.
    pub requested_by: &'a str,
    /// The next actor.
    pub next_actor: &'a SpiffeId,
    /// Rights for the next actor; empty: all the token's rights the policy grants it.
    pub rights: BTreeSet<String>,
    /// Lifetime asked for; `None`: the token's remaining lifetime (within the policy).
    pub ttl: Option<Duration>,
    /// `delegation.hop` or `delegation.exchange`.
    pub audit_kind: &'a str,
}

/// A token made by [`Delegation::mint`] or [`Delegation::delegate`].
#[derive(Debug, Clone)]
pub struct Issued {
    /// The token, base64url. A bearer credential: never log it.
    pub token: zeroize::Zeroizing<String>,
    /// Its trusted content.
    pub chain: Chain,
}

impl Issued {
    /// Hops still allowed after this token.
    pub fn remaining_depth(&self) -> u32 {
        self.chain.max_depth.saturating_sub(self.chain.depth())
    }
}

/// What [`Delegation::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// The revoked token.
    pub token_id: String,
    /// Its last block's revocation id (hex), now on the list.
    pub revocation_id: String,
    /// Tokens known from the audit log to contain that block (it and everything derived).
    pub revoked_token_ids: Vec<String>,
    /// False when it was on the list already.
    pub newly_revoked: bool,
    /// The list's sequence after the change.
    pub sequence: u64,
}

struct LoadedPolicy {
    set: Arc<PolicySet>,
    /// (file, modification time, length) of every policy file, to notice changes.
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    /// The error of the last failed reload (logged once per distinct error).
    last_error: Option<String>,
}

struct CachedVerifier {
    keys_sequence: u64,
    revocations_sequence: u64,
    verifier: Arc<Verifier>,
}

/// The issuer's delegation state and operations.
pub struct Delegation {
    trust_domain: TrustDomain,
    keys: Arc<DelegationKeyManager>,
    policies_dir: PathBuf,
    policy: RwLock<LoadedPolicy>,
    revocations: RwLock<Arc<RevocationList>>,
    verifier: RwLock<Option<CachedVerifier>>,
    /// The published keys and the key sequence they are for.
    published: RwLock<Option<(u64, DelegationKeys)>>,
    max_token_ttl: Duration,
    store: Arc<dyn Store>,
    identity_providers: Arc<IdentityProviders>,
    /// Serializes revocations (read, add, write the journal).
    revoke_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Delegation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegation")
            .field("policies_dir", &self.policies_dir)
            .field("keys_sequence", &self.keys.sequence())
            .finish_non_exhaustive()
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `*.datalog` files of `dir` with their modification time and length (name order).
fn policy_stamp(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "datalog"))
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let mtime = md.as_ref().and_then(|m| m.modified().ok());
            let len = md.map_or(0, |m| m.len());
            (p, mtime, len)
        })
        .collect();
    out.sort();
    out
}

impl Delegation {
    /// Opens the delegation state: the keys (from the store journal and their files under
    /// `key_dir`; the first key is made on first start), the policy (an invalid policy stops
    /// start-up, naming file and line) and the revocation list. Persist with
    /// [`Delegation::persist_keys`] after opening.
    pub async fn open(
        settings: &DelegationSettings,
        policies_dir: &Path,
        key_dir: PathBuf,
        trust_domain: TrustDomain,
        store: Arc<dyn Store>,
        identity_providers: Arc<IdentityProviders>,
    ) -> Result<Self, String> {
        let journal = store
            .load_journal(KEYS_JOURNAL)
            .await
            .map_err(|e| format!("cannot load the delegation key journal: {e}"))?;
        let keys = DelegationKeyManager::open(
            DelegationKeyConfig {
                key_type: settings.key_type,
                key_ttl: settings.key_ttl,
                max_token_ttl: settings.max_token_ttl,
                key_dir,
            },
            journal.as_deref(),
            SystemTime::now(),
        )
        .map_err(|e| format!("cannot open the delegation keys: {e}"))?;
        let stamp = policy_stamp(policies_dir);
        let set = PolicySet::load_dir(policies_dir)
            .map_err(|e| format!("delegation.policies_dir: {e}"))?;
        let revocations = match store
            .load_journal(REVOCATIONS_JOURNAL)
            .await
            .map_err(|e| format!("cannot load the delegation revocation list: {e}"))?
        {
            Some(bytes) => RevocationList::from_json(&bytes)
                .map_err(|e| format!("stored delegation revocation list: {e}"))?,
            None => RevocationList::default(),
        };
        Ok(Self {
            trust_domain,
            keys: Arc::new(keys),
            policies_dir: policies_dir.to_owned(),
            policy: RwLock::new(LoadedPolicy {
                set: Arc::new(set),
                stamp,
                last_error: None,
            }),
            revocations: RwLock::new(Arc::new(revocations)),
            verifier: RwLock::new(None),
            published: RwLock::new(None),
            max_token_ttl: settings.max_token_ttl,
            store,
            identity_providers,
            revoke_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The key manager (rotated by the CA synchronizer).
    pub fn keys(&self) -> &Arc<DelegationKeyManager> {
        &self.keys
    }

    /// Writes the key journal to the store.
    pub async fn persist_keys(&self) -> Result<(), String> {
        let journal = self
            .keys
            .journal_bytes()
            .map_err(|e| format!("delegation key journal: {e}"))?;
        self.store
            .save_journal(KEYS_JOURNAL, &journal)
            .await
            .map_err(|e| format!("cannot save the delegation key journal: {e}"))
    }

    /// The published keys, as verifiers trust them.
    pub fn published_keys(&self) -> DelegationKeys {
        let sequence = self.keys.sequence();
        if let Some((seq, keys)) = read_lock(&self.published).as_ref()
            && *seq == sequence
        {
            return keys.clone();
        }
        let infos = self
            .keys
            .keys()
            .into_iter()
            .map(|k| KeyInfo {
                root_key_id: k.root_key_id,
                algorithm: k
                    .public_key
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                public_key: k.public_key,
                state: k.state.as_str().to_owned(),
                not_after: i64::try_from(unix(k.not_after)).unwrap_or(i64::MAX),
            })
            .collect();
        let keys = DelegationKeys::from_infos(infos, sequence).unwrap_or_else(|e| {
            // The key manager's own keys always parse; publish nothing rather than a wrong set.
            tracing::error!(error = %e, "cannot publish the delegation keys");
            DelegationKeys::default()
        });
        *write_lock(&self.published) = Some((sequence, keys.clone()));
        keys
    }

    /// The revocation list.
    pub fn revocations(&self) -> Arc<RevocationList> {
        read_lock(&self.revocations).clone()
    }

    /// Grows whenever the keys or the revocation list change (what agents watch).
    pub fn sequence(&self) -> u64 {
        self.keys
            .sequence()
            .saturating_add(read_lock(&self.revocations).sequence)
    }

    /// The policy files in use.
    pub fn policy_files(&self) -> Vec<PathBuf> {
        read_lock(&self.policy).set.files().to_vec()
    }

    /// A verifier for the current keys and revocations (rebuilt when either changed).
    pub fn verifier(&self) -> Result<Arc<Verifier>, DelegationError> {
        let keys_sequence = self.keys.sequence();
        let revocations = self.revocations();
        if let Some(c) = read_lock(&self.verifier).as_ref()
            && c.keys_sequence == keys_sequence
            && c.revocations_sequence == revocations.sequence
        {
            return Ok(c.verifier.clone());
        }
        let verifier = Arc::new(
            Verifier::new(self.published_keys(), &revocations)
                .map_err(|e| DelegationError::Internal(e.to_string()))?
                // A hop authorizes each of its rights on the same token: its signatures are
                // checked once.
                .with_signature_cache(VERIFIER_CACHE),
        );
        *write_lock(&self.verifier) = Some(CachedVerifier {
            keys_sequence,
            revocations_sequence: revocations.sequence,
            verifier: verifier.clone(),
        });
        Ok(verifier)
    }

    /// Reloads the policy when a file changed; a policy that does not load is logged (with file
    /// and line) and the last good one is kept. Returns whether a new policy is in use.
    pub fn reload_policy_if_changed(&self) -> bool {
        let stamp = policy_stamp(&self.policies_dir);
        if read_lock(&self.policy).stamp == stamp {
            return false;
        }
        match PolicySet::load_dir(&self.policies_dir) {
            Ok(set) => {
                tracing::info!(
                    dir = %self.policies_dir.display(),
                    files = set.files().len(),
                    "delegation policy reloaded"
                );
                let mut p = write_lock(&self.policy);
                *p = LoadedPolicy {
                    set: Arc::new(set),
                    stamp,
                    last_error: None,
                };
                true
            }
            Err(e) => {
                let msg = e.to_string();
                let mut p = write_lock(&self.policy);
                if p.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(
                        error = %msg,
                        "delegation policy not reloaded: keeping the last good policy"
                    );
                }
                p.stamp = stamp;
                p.last_error = Some(msg);
                false
            }
        }
    }

    /// Re-reads the revocation list from the store (another issuer may have revoked). Returns
    /// whether it changed.
    pub async fn refresh_revocations(&self) -> Result<bool, String> {
        let Some(bytes) = self
            .store
            .load_journal(REVOCATIONS_JOURNAL)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        let list = RevocationList::from_json(&bytes)?;
        let mut cur = write_lock(&self.revocations);
        if list.sequence > cur.sequence {
            *cur = Arc::new(list);
            return Ok(true);
        }
        Ok(false)
    }

    /// Polls the policy files and the stored revocation list every [`RELOAD_INTERVAL`] until the
    /// process ends, calling `changed` after a revocation list change.
    pub async fn run_reloader(self: Arc<Self>, changed: impl Fn() + Send + Sync + 'static) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_policy_if_changed();
            match self.refresh_revocations().await {
                Ok(true) => changed(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot re-read the revocation list"),
            }
        }
    }

    fn policy(&self) -> Arc<PolicySet> {
        read_lock(&self.policy).set.clone()
    }

    async fn subject(
        &self,
        proof: SubjectProof<'_>,
        now: SystemTime,
    ) -> Result<Subject, DelegationError> {
        match proof {
            SubjectProof::IdToken(t) => {
                if self.identity_providers.is_empty() {
                    return Err(DelegationError::InvalidIdToken(
                        "no identity provider is configured ([[delegation.identity_providers]])"
                            .into(),
                    ));
                }
                let v = self
                    .identity_providers
                    .verify_id_token(t, now)
                    .await
                    .map_err(|e| DelegationError::InvalidIdToken(e.to_string()))?;
                Ok(Subject {
                    id: v.id(),
                    kind: SubjectKind::User,
                    name: v
                        .email
                        .clone()
                        .or_else(|| v.name.clone())
                        .unwrap_or_default(),
                    issuer: v.issuer,
                })
            }
            SubjectProof::Workload(id) => Ok(Subject {
                id: id.to_string(),
                kind: SubjectKind::Workload,
                issuer: id.trust_domain().name().to_owned(),
                name: String::new(),
            }),
        }
    }

    fn check_rights(rights: &BTreeSet<String>) -> Result<(), DelegationError> {
        if rights.len() > MAX_RIGHTS {
            return Err(DelegationError::InvalidRequest(format!(
                "{} rights asked for; at most {MAX_RIGHTS}",
                rights.len()
            )));
        }
        for r in rights {
            check_right(r).map_err(DelegationError::InvalidRequest)?;
        }
        Ok(())
    }

    fn check_actor(&self, id: &SpiffeId, what: &str) -> Result<(), DelegationError> {
        if id.trust_domain() != &self.trust_domain {
            return Err(DelegationError::InvalidRequest(format!(
                "{what} {id} is not in the trust domain {}",
                self.trust_domain
            )));
        }
        Ok(())
    }

    /// Mints a token for a subject, first actor `input.actor`, as the policy allows. Every
    /// outcome is audited.
    pub async fn mint(&self, input: MintInput<'_>) -> Result<Issued, DelegationError> {
        let result = self.mint_inner(&input, SystemTime::now()).await;
        let actor = input.actor.to_string();
        match result {
            Ok((issued, reason)) => {
                self.audit_produced(
                    input.audit_kind,
                    input.requested_by,
                    &issued,
                    &actor,
                    &reason,
                )
                .await;
                tracing::info!(
                    token_id = issued.chain.token_id(),
                    subject = %issued.chain.subject.id,
                    actor = %input.actor,
                    "delegation token minted"
                );
                Ok(issued)
            }
            Err((subject, e)) => {
                let details = json!({
                    "operation": "mint",
                    "actor": actor,
                    "rights": input.rights,
                });
                self.audit_denied(input.requested_by, subject.as_deref(), details, &e)
                    .await;
                tracing::info!(actor = %input.actor, error = %e, "delegation mint refused");
                Err(e)
            }
        }
    }

    /// Audits a token made by a mint, hop or exchange.
    async fn audit_produced(
        &self,
        kind: &str,
        requested_by: &str,
        issued: &Issued,
        authorized_by: &str,
        policy: &str,
    ) {
        let chain = &issued.chain;
        crate::audit::record(
            self.store.as_ref(),
            kind,
            requested_by,
            &chain.subject.id,
            "ok",
            produced_details(chain, authorized_by, policy),
        )
        .await;
    }

    /// Audits a refusal (`delegation.denied`): `details` and the error.
    async fn audit_denied(
        &self,
        requested_by: &str,
        subject: Option<&str>,
        mut details: serde_json::Value,
        e: &DelegationError,
    ) {
        if let Some(o) = details.as_object_mut() {
            o.insert("error".into(), e.code().into());
            o.insert("reason".into(), e.to_string().into());
        }
        crate::audit::record(
            self.store.as_ref(),
            KIND_DENIED,
            requested_by,
            subject.unwrap_or_default(),
            "denied",
            details,
        )
        .await;
    }

    async fn mint_inner(
        &self,
        input: &MintInput<'_>,
        now: SystemTime,
    ) -> Result<(Issued, String), (Option<String>, DelegationError)> {
        let subject = self
            .subject(input.subject, now)
            .await
            .map_err(|e| (None, e))?;
        let sid = Some(subject.id.clone());
        let fail = |e: DelegationError| (sid.clone(), e);
        self.check_actor(input.actor, "the actor").map_err(fail)?;
        Self::check_rights(&input.rights).map_err(fail)?;
        let requested_ttl = input.ttl.unwrap_or(self.max_token_ttl).as_secs();
        if requested_ttl == 0 {
            return Err(fail(DelegationError::InvalidRequest(
                "the TTL must be at least 1 second".into(),
            )));
        }
        let actor = input.actor.to_string();
        let outcome = self
            .policy()
            .evaluate(&PolicyRequest {
                operation: Operation::Mint,
                subject: &subject,
                actor: &actor,
                next_actor: None,
                chain: &[],
                depth: 0,
                requested_rights: &input.rights,
                requested_ttl,
            })
            .map_err(|e| fail(DelegationError::Internal(format!("policy evaluation: {e}"))))?;
        if !outcome.allowed {
            return Err(fail(DelegationError::Denied(outcome.reason)));
        }
        let rights = granted(&input.rights, &outcome.grants, &actor).map_err(fail)?;
        let ttl = capped_ttl(requested_ttl, outcome.max_ttl, self.max_token_ttl);
        let policy_depth = outcome.max_depth.unwrap_or(0);
        let max_depth = match input.max_depth {
            Some(d) if d > policy_depth => {
                return Err(fail(DelegationError::TooDeep(format!(
                    "max depth {d} asked for; the policy allows at most {policy_depth}"
                ))));
            }
            Some(d) => d,
            None => policy_depth,
        };
        let signer = self
            .keys
            .signer(now)
            .map_err(|e| fail(DelegationError::Internal(e.to_string())))?;
        let biscuit = token::mint(
            &signer.key,
            signer.root_key_id,
            &MintRequest {
                token_id: new_token_id(),
                subject,
                actor: input.actor.clone(),
                rights,
                issued_at: now,
                expires_at: now + Duration::from_secs(ttl),
                max_depth,
            },
        )
        .map_err(|e| fail(DelegationError::Internal(e.to_string())))?;
        let issued = self.issued(&biscuit).map_err(fail)?;
        Ok((issued, outcome.reason))
    }

    fn issued(&self, biscuit: &Biscuit) -> Result<Issued, DelegationError> {
        let chain = token::read_chain(biscuit, &self.published_keys().public_keys())
            .map_err(|e| DelegationError::Internal(e.to_string()))?;
        let token = biscuit
            .to_base64()
            .map_err(|e| DelegationError::Internal(e.to_string()))?;
        Ok(Issued {
            token: zeroize::Zeroizing::new(token),
            chain,
        })
    }

    /// Verifies `token` for its holder and reads its chain: every signature, root key, the
    /// revocation list, expiry, holder = `presenter`.
    pub fn verify_held(
        &self,
        token: &str,
        presenter: &SpiffeId,
        now: SystemTime,
    ) -> Result<Chain, DelegationError> {
        self.verify_held_parsed(token, presenter, now)
            .map(|(_, chain)| chain)
    }

    /// [`Delegation::verify_held`], also returning the parsed token.
    fn verify_held_parsed(
        &self,
        token: &str,
        presenter: &SpiffeId,
        now: SystemTime,
    ) -> Result<(Biscuit, Chain), DelegationError> {
        let keys = self.published_keys();
        let (biscuit, chain) = parse_verified(token, &keys).map_err(|e| {
            DelegationError::InvalidToken(format!("the delegation token does not verify: {e}"))
        })?;
        let revoked = self.revocations().ids();
        if let Some(id) = biscuit
            .revocation_identifiers()
            .into_iter()
            .find(|id| revoked.contains(id))
        {
            return Err(DelegationError::InvalidToken(
                VerifyError::Revoked {
                    token_id: chain.token_id().to_owned(),
                    revocation_id: hex::encode(id),
                }
                .to_string(),
            ));
        }
        let now_s = unix(now);
        if chain.expires_at < now_s {
            return Err(DelegationError::InvalidToken(
                VerifyError::Expired {
                    token_id: chain.token_id().to_owned(),
                    expired_at: chain.expires_at,
                    now: now_s,
                }
                .to_string(),
            ));
        }
        if chain.holder() != presenter.to_string() {
            return Err(DelegationError::NotTheHolder(
                VerifyError::NotTheHolder {
                    presenter: presenter.to_string(),
                    holder: chain.holder().to_owned(),
                }
                .to_string(),
            ));
        }
        Ok((biscuit, chain))
    }

    /// Appends a hop for the token's holder, as the policy allows. Every outcome is audited.
    pub async fn delegate(&self, input: DelegateInput<'_>) -> Result<Issued, DelegationError> {
        let result = self.delegate_inner(&input, SystemTime::now());
        let holder = input.holder.to_string();
        match result {
            Ok((issued, reason)) => {
                self.audit_produced(
                    input.audit_kind,
                    input.requested_by,
                    &issued,
                    &holder,
                    &reason,
                )
                .await;
                tracing::info!(
                    token_id = issued.chain.token_id(),
                    subject = %issued.chain.subject.id,
                    holder = %input.holder,
                    next_actor = %input.next_actor,
                    "delegation hop appended"
                );
                Ok(issued)
            }
            Err((parent, e)) => {
                let details = json!({
                    "operation": "delegate",
                    "actor": holder,
                    "next_actor": input.next_actor.to_string(),
                    "parent_token_id": parent.as_ref().map(|c| c.token_id().to_owned()),
                    "chain": parent.as_ref().map(|c| c.actors()),
                    "rights": input.rights,
                });
                let subject = parent.as_ref().map(|c| c.subject.id.as_str());
                self.audit_denied(input.requested_by, subject, details, &e)
                    .await;
                tracing::info!(
                    holder = %input.holder,
                    next_actor = %input.next_actor,
                    error = %e,
                    "delegation hop refused"
                );
                Err(e)
            }
        }
    }

    fn delegate_inner(
        &self,
        input: &DelegateInput<'_>,
        now: SystemTime,
    ) -> Result<(Issued, String), HopRefusal> {
        Self::check_rights(&input.rights).map_err(|e| (None, e))?;
        let (biscuit, chain) = self
            .verify_held_parsed(input.token, input.holder, now)
            .map_err(|e| (None, e))?;
        let parent = Some(Box::new(chain.clone()));
        let fail = |e: DelegationError| (parent.clone(), e);
        self.check_actor(input.next_actor, "the next actor")
            .map_err(fail)?;
        let holder = input.holder.to_string();
        if input.next_actor.to_string() == chain.holder() {
            return Err(fail(DelegationError::InvalidRequest(
                "the next actor is the holder itself".into(),
            )));
        }
        let depth = chain.depth().saturating_add(1);
        if depth > chain.max_depth {
            return Err(fail(DelegationError::TooDeep(format!(
                "the token allows {} hop(s) after its first actor; this would be hop {depth}",
                chain.max_depth
            ))));
        }
        // The rights asked for must be the token's (any offline attenuation included): each is
        // authorized as an operation of the holder on the token as it is.
        let wanted = if input.rights.is_empty() {
            chain.rights.clone()
        } else {
            input.rights.clone()
        };
        let verifier = self.verifier().map_err(fail)?;
        let mut usable = BTreeSet::new();
        for r in &wanted {
            match verifier.verify(
                input.token,
                &Request {
                    presenter: &holder,
                    operation: r,
                    now,
                },
            ) {
                Ok(_) => {
                    usable.insert(r.clone());
                }
                Err(VerifyError::Unauthorized(why)) if !input.rights.is_empty() => {
                    return Err(fail(DelegationError::Widening(format!(
                        "right {r:?} is not usable with this token ({why})"
                    ))));
                }
                Err(VerifyError::Unauthorized(_)) => {}
                Err(e) => return Err(fail(DelegationError::InvalidToken(e.to_string()))),
            }
        }
        if usable.is_empty() {
            return Err(fail(DelegationError::Widening(
                "no right of the token is usable any more".into(),
            )));
        }
        let remaining = chain.expires_at.saturating_sub(unix(now));
        let requested_ttl = match input.ttl {
            Some(t) if t.as_secs() > remaining => {
                return Err(fail(DelegationError::Widening(format!(
                    "a TTL of {}s asked for, but the token expires in {remaining}s",
                    t.as_secs()
                ))));
            }
            Some(t) if t.as_secs() == 0 => {
                return Err(fail(DelegationError::InvalidRequest(
                    "the TTL must be at least 1 second".into(),
                )));
            }
            Some(t) => t.as_secs(),
            None => remaining,
        };
        let actors: Vec<String> = chain.actors().into_iter().map(str::to_owned).collect();
        let next = input.next_actor.to_string();
        let outcome = self
            .policy()
            .evaluate(&PolicyRequest {
                operation: Operation::Delegate,
                subject: &chain.subject,
                actor: &holder,
                next_actor: Some(&next),
                chain: &actors,
                depth,
                requested_rights: &input.rights,
                requested_ttl,
            })
            .map_err(|e| fail(DelegationError::Internal(format!("policy evaluation: {e}"))))?;
        if !outcome.allowed {
            return Err(fail(DelegationError::Denied(outcome.reason)));
        }
        let policy_depth = outcome.max_depth.unwrap_or(0);
        if depth > policy_depth {
            return Err(fail(DelegationError::TooDeep(format!(
                "the policy allows chains of at most {policy_depth} hop(s) after the first actor; this would be hop {depth}"
            ))));
        }
        let rights = if input.rights.is_empty() {
            usable
                .intersection(&outcome.grants)
                .cloned()
                .collect::<BTreeSet<_>>()
        } else {
            granted(&usable, &outcome.grants, &next).map_err(fail)?
        };
        if rights.is_empty() {
            return Err(fail(DelegationError::Denied(format!(
                "the policy grants {next} none of the token's rights"
            ))));
        }
        let ttl = capped_ttl(requested_ttl, outcome.max_ttl, self.max_token_ttl);
        let expires = (unix(now) + ttl).min(chain.expires_at);
        let signer = self
            .keys
            .signer(now)
            .map_err(|e| fail(DelegationError::Internal(e.to_string())))?;
        let appended = token::append_hop(
            &biscuit,
            &chain,
            &signer.key,
            &HopRequest {
                token_id: new_token_id(),
                next_actor: input.next_actor.clone(),
                rights,
                at: now,
                expires_at: UNIX_EPOCH + Duration::from_secs(expires),
            },
        )
        .map_err(|e| fail(DelegationError::Internal(e.to_string())))?;
        let issued = self.issued(&appended).map_err(fail)?;
        Ok((issued, outcome.reason))
    }

    /// Revokes `token_id` (found in the audit log) and so everything derived from it: its last
    /// block's revocation id joins the list, which is persisted and audited.
    pub async fn revoke(
        &self,
        token_id: &str,
        reason: &str,
        requested_by: &str,
    ) -> Result<RevokeOutcome, RevokeError> {
        let trace = crate::audit::trace::trace_token(self.store.as_ref(), token_id)
            .await
            .map_err(|e| match e {
                crate::audit::trace::TraceError::UnknownToken { .. }
                | crate::audit::trace::TraceError::InvalidTokenId(_) => {
                    RevokeError::NotFound(e.to_string())
                }
                other => RevokeError::Internal(other.to_string()),
            })?;
        let produced = trace
            .hops
            .last()
            .filter(|h| h.token_id == token_id)
            .ok_or_else(|| RevokeError::NotFound(format!("no event produced token {token_id}")))?;
        let revocation_id = produced.revocation_ids.last().cloned().ok_or_else(|| {
            RevokeError::Internal(format!(
                "the audit event of token {token_id} carries no revocation id"
            ))
        })?;
        let derived = derived_tokens(self.store.as_ref(), &revocation_id)
            .await
            .map_err(RevokeError::Internal)?;
        let _guard = self.revoke_lock.lock().await;
        self.refresh_revocations()
            .await
            .map_err(RevokeError::Internal)?;
        let mut list = (*self.revocations()).clone();
        let newly = !list
            .revoked
            .iter()
            .any(|r| r.revocation_id == revocation_id);
        if newly {
            list.revoked.push(Revoked {
                revocation_id: revocation_id.clone(),
                token_id: token_id.to_owned(),
                revoked_at: i64::try_from(unix(SystemTime::now())).unwrap_or(i64::MAX),
            });
            list.sequence = list.sequence.saturating_add(1);
            self.store
                .save_journal(REVOCATIONS_JOURNAL, list.to_json().as_bytes())
                .await
                .map_err(|e| {
                    RevokeError::Internal(format!("cannot save the revocation list: {e}"))
                })?;
            *write_lock(&self.revocations) = Arc::new(list.clone());
        }
        crate::audit::record(
            self.store.as_ref(),
            KIND_REVOKE,
            requested_by,
            &trace.subject,
            "ok",
            json!({
                "token_id": token_id,
                "revocation_ids": [revocation_id],
                "revoked_token_ids": derived,
                "newly_revoked": newly,
                "reason": reason,
            }),
        )
        .await;
        tracing::info!(token_id, revocation_id = %revocation_id, newly, "delegation token revoked");
        Ok(RevokeOutcome {
            token_id: token_id.to_owned(),
            revocation_id,
            revoked_token_ids: derived,
            newly_revoked: newly,
            sequence: list.sequence,
        })
    }
}

/// The id of `token` for an audit trace, and a warning when its signatures could not be checked
/// (delegation off here, or its key no longer published): the id is then read from the token's
/// last issuer-made block without verification, which is enough to look it up in the log.
pub fn token_id_of(
    token: &str,
    delegation: Option<&Delegation>,
) -> Result<(String, Option<String>), String> {
    let mut why = "delegation is not configured on this issuer".to_owned();
    if let Some(d) = delegation {
        match parse_verified(token, &d.published_keys()) {
            Ok((_, chain)) => return Ok((chain.token_id().to_owned(), None)),
            Err(e) => why = e,
        }
    }
    let unverified = token::parse_unverified(token).map_err(|e| e.to_string())?;
    let mut id = None;
    for i in 0..unverified.block_count() {
        let src = unverified
            .print_block_source(i)
            .map_err(|e| e.to_string())?;
        let found = if i == 0 {
            quoted_after(&src, "token_id(\"")
        } else {
            src.find("hop(").and_then(|at| {
                let rest = &src[at..];
                rest.find(", \"")
                    .and_then(|q| quoted_after(rest, &rest[..q + 3]))
            })
        };
        if let Some(f) = found {
            id = Some(f);
        }
    }
    let id = id.ok_or("no token id in the token")?;
    Ok((
        id,
        Some(format!(
            "the token's signatures were not verified ({why}); its id was read from it as is"
        )),
    ))
}

/// The text between `prefix` and the next `"` in `src`.
fn quoted_after(src: &str, prefix: &str) -> Option<String> {
    let start = src.find(prefix)? + prefix.len();
    let end = src[start..].find('"')?;
    Some(src[start..start + end].to_owned())
}

/// Parses `token` (base64url) with the root key it names among `keys`, checks every signature
/// and reads its trusted chain.
fn parse_verified(token: &str, keys: &DelegationKeys) -> Result<(Biscuit, Chain), String> {
    let biscuit = Biscuit::from_base64(token.trim(), |id: Option<u32>| {
        keys.root_key(id)
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    })
    .map_err(|e| e.to_string())?;
    let chain = token::read_chain(&biscuit, &keys.public_keys()).map_err(|e| e.to_string())?;
    Ok((biscuit, chain))
}

/// A refused hop: the parent's chain when the token verified (for the audit event), and why.
type HopRefusal = (Option<Box<Chain>>, DelegationError);

/// Why a revocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    /// No audit event produced that token.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("{0}")]
    Internal(String),
}

/// The rights of a new token: those asked for (all must be granted), or every granted right.
fn granted(
    requested: &BTreeSet<String>,
    grants: &BTreeSet<String>,
    to: &str,
) -> Result<BTreeSet<String>, DelegationError> {
    if requested.is_empty() {
        if grants.is_empty() {
            return Err(DelegationError::Denied(format!(
                "the policy grants {to} no right"
            )));
        }
        return Ok(grants.clone());
    }
    let missing: Vec<&String> = requested.difference(grants).collect();
    if !missing.is_empty() {
        return Err(DelegationError::Denied(format!(
            "the policy does not grant {to} {}",
            missing
                .iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(requested.clone())
}

/// The lifetime: the one asked for, within the policy's `max_ttl` and `max_token_ttl`.
fn capped_ttl(requested: u64, policy_max: Option<u64>, max_token_ttl: Duration) -> u64 {
    requested
        .min(policy_max.unwrap_or(u64::MAX))
        .min(max_token_ttl.as_secs())
        .max(1)
}

/// Details of a `delegation.mint` / `delegation.hop` / `delegation.exchange` event.
fn produced_details(chain: &Chain, authorized_by: &str, policy: &str) -> serde_json::Value {
    let last = chain.hops.last();
    json!({
        "token_id": chain.token_id(),
        "parent_token_id": last.and_then(|h| h.parent_token_id.clone()),
        "subject_type": chain.subject.kind.as_str(),
        "subject_issuer": chain.subject.issuer,
        "subject_name": chain.subject.name,
        "chain": chain.actors(),
        "authorized_by": authorized_by,
        "policy": policy,
        "rights": chain.rights,
        "revocation_ids": chain.revocation_ids,
        "expires_at": chain.expires_at,
        "max_depth": chain.max_depth,
        "root_key_id": chain.root_key_id,
    })
}

/// The tokens whose producing event lists `revocation_id` (the token and every token derived
/// from it that the issuer made).
async fn derived_tokens(store: &dyn Store, revocation_id: &str) -> Result<Vec<String>, String> {
    let filter = signet_store::AuditFilter {
        kind: None,
        kind_prefix: Some(crate::audit::trace::DELEGATION_KIND_PREFIX.to_owned()),
    };
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .list_audit_events_matching(after, 1000, &filter)
            .await
            .map_err(|e| e.to_string())?;
        let full = page.len() == 1000;
        for e in &page {
            after = e.seq;
            let d = &e.event.details;
            if e.event.outcome != "ok" || e.event.kind == KIND_REVOKE {
                continue;
            }
            let carries = d
                .get("revocation_ids")
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(revocation_id)));
            if carries
                && let Some(id) = d.get("token_id").and_then(|v| v.as_str())
                && !out.iter().any(|o: &String| o == id)
            {
                out.push(id.to_owned());
            }
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
