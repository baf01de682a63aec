//! OpenID Connect identity providers: verification of the ID tokens that prove the subject of a
//! delegation (the user an AI agent acts for).
//!
//! [`IdentityProviders`] is built at start-up from `[[delegation.identity_providers]]`
//! ([`IdentityProviderSettings`]): a `jwks_path` is read once (an unreadable or invalid file stops
//! start-up); a `jwks_url` is fetched at start-up, refreshed every [`REFRESH_INTERVAL`] by
//! [`IdentityProviders::run`], and on a token whose `kid` is unknown, at most once every
//! [`MIN_REFRESH_INTERVAL`]. A failed fetch (connection, TLS, HTTP status, garbage) keeps the last
//! good JWK Set. [`IdentityProviders::verify_id_token`] checks, in this order, each failure with
//! its own [`IdTokenError`]:
//!
//! 1. the token is a JWS compact serialization (at most 64 KiB, three base64url segments, a JSON
//!    header without `crit`) whose `alg` is RS/ES/PS 256/384/512: `none`, `HS*` and anything else
//!    are refused before any key is looked up; `typ`, when present, is `JWT` or `JOSE` (so an
//!    `at+jwt` access token of the same provider is refused);
//! 2. the claims are a JSON object whose `iss` is exactly the `issuer` of a configured provider;
//! 3. the header has a `kid`, and it names a key of that provider's JWK Set (refreshed first when
//!    unknown, for a `jwks_url`) that fits the algorithm (key type, curve, the key's `alg`);
//! 4. the signature verifies (aws-lc-rs, through [`signet_spiffe::jwt::Jws`]);
//! 5. `aud` contains one of the provider's audiences; when `aud` has several values and `azp` is
//!    present, `azp` is one of them too;
//! 6. `exp` is in the future, `iat` is present, not in the future and not older than the
//!    provider's `max_token_age`, `nbf` (when present) has passed, each with [`LEEWAY`];
//! 7. `sub` and the provider's `subject_claim` are non-empty strings; with `subject_claim =
//!    "email"`, `email_verified` must be `true`.
//!
//! Tokens are never logged, and the values an error repeats from an unverified token (`iss`,
//! `kid`, ...) are cut to [`MAX_SHOWN_LEN`] characters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};
use signet_spiffe::JwtAuthority;
use signet_spiffe::jwks::{JwkSet, JwksError};
use signet_spiffe::jwt::{ACCEPTED_TYPES, Jws, JwtSvidError, audiences, numeric_date};
use tokio::time::Instant;

use crate::config::{IdentityProviderSettings, JwksSource};
use crate::federation::{self, EndpointUrl};

/// Clock skew tolerated on `exp`, `iat`, `nbf` and `max_token_age`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// How often a `jwks_url` is fetched in the background.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// The shortest time between two fetches of a `jwks_url` when tokens name an unknown `kid`.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The longest value of an unverified token repeated in an error, in characters.
pub const MAX_SHOWN_LEN: usize = 200;

/// When the `jwks_url` providers are fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Background refresh period ([`REFRESH_INTERVAL`]).
    pub interval: Duration,
    /// An unknown `kid` triggers a fetch only when the last fetch (of any kind) started at least
    /// this long ago ([`MIN_REFRESH_INTERVAL`]).
    pub min_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            interval: REFRESH_INTERVAL,
            min_interval: MIN_REFRESH_INTERVAL,
        }
    }
}

/// The subject proven by a verified ID token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedSubject {
    /// The provider's `issuer`, equal to the token's `iss`.
    pub issuer: String,
    /// The value of the provider's `subject_claim` (`sub` by default).
    pub subject: String,
    /// The `sub` claim (the provider's stable ID of the user).
    pub sub: String,
    /// The `email` claim, only when `email_verified` is `true` (an unverified address proves
    /// nothing).
    pub email: Option<String>,
    /// The `name` claim, when it is a string.
    pub name: Option<String>,
    /// The token's `exp`.
    pub expires_at: SystemTime,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

impl VerifiedSubject {
    /// The stable subject ID `<issuer>#<subject>`. An issuer has no fragment, so the first `#`
    /// separates the two.
    pub fn id(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// Not a JWS compact serialization (length, segments, base64url, header, `crit`).
    #[error("the ID token is not a valid JWS compact serialization: {0}")]
    Malformed(String),
    /// The `alg` is not RS/ES/PS 256/384/512 (`none` and `HS*` are refused here).
    #[error(
        "ID token algorithm {0:?} is not allowed (only RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512)"
    )]
    DisallowedAlgorithm(String),
    /// The `typ` header is neither `JWT` nor `JOSE` (e.g. an `at+jwt` access token).
    #[error("token type {0:?} is not an ID token (expected JWT, JOSE or no typ)")]
    UnsupportedType(String),
    /// The payload is not a JSON object.
    #[error("the ID token's claims are not a JSON object: {0}")]
    ClaimsNotJson(String),
    /// A required claim is missing.
    #[error("the ID token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has a value of the wrong type.
    #[error("ID token claim `{name}` {reason}")]
    InvalidClaim {
        /// The claim.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `iss` is not the `issuer` of a configured identity provider.
    #[error("ID token issuer {0:?} is not a configured identity provider")]
    UnknownProvider(String),
    /// The header has no `kid` (or an empty one).
    #[error("the ID token has no key ID (`kid`): it must name its signing key")]
    MissingKeyId,
    /// The provider's JWK Set has no key with the token's `kid` (after a refresh, if allowed).
    #[error("key ID {kid:?} is not a signing key of identity provider {issuer}")]
    UnknownKeyId {
        /// The provider.
        issuer: String,
        /// The token's `kid`.
        kid: String,
    },
    /// No JWK Set of the provider could be fetched yet.
    #[error("the signing keys of identity provider {issuer} are not available: {reason}")]
    KeysUnavailable {
        /// The provider.
        issuer: String,
        /// Why the last fetch failed.
        reason: String,
    },
    /// The key named by `kid` cannot verify the token's algorithm (algorithm confusion).
    #[error("key {kid:?} of identity provider {issuer} cannot verify this ID token: {reason}")]
    UnusableKey {
        /// The provider.
        issuer: String,
        /// The key ID.
        kid: String,
        /// What does not fit.
        reason: String,
    },
    /// The signature does not verify.
    #[error("the ID token's signature does not verify")]
    BadSignature,
    /// No value of `aud` is an accepted audience.
    #[error(
        "the ID token's audience {actual:?} contains none of the audiences accepted for {issuer}: {expected:?}"
    )]
    AudienceMismatch {
        /// The provider.
        issuer: String,
        /// The provider's audiences.
        expected: Vec<String>,
        /// The token's `aud`.
        actual: Vec<String>,
    },
    /// `aud` has several values and `azp` is not an accepted audience.
    #[error(
        "the ID token's authorized party (azp) {azp:?} is not an audience accepted for {issuer}: {expected:?}"
    )]
    AuthorizedPartyMismatch {
        /// The provider.
        issuer: String,
        /// The token's `azp`.
        azp: String,
        /// The provider's audiences.
        expected: Vec<String>,
    },
    /// `exp` has passed.
    #[error("the ID token expired at {exp} (Unix seconds; now {now}, leeway {leeway_secs} s)")]
    Expired {
        /// The `exp` claim.
        exp: i64,
        /// The time of the check.
        now: i64,
        /// [`LEEWAY`].
        leeway_secs: u64,
    },
    /// `iat` is in the future.
    #[error(
        "the ID token was issued in the future, at {iat} (Unix seconds; now {now}, leeway {leeway_secs} s)"
    )]
    IssuedInFuture {
        /// The `iat` claim.
        iat: i64,
        /// The time of the check.
        now: i64,
        /// [`LEEWAY`].
        leeway_secs: u64,
    },
    /// `iat` is older than the provider's `max_token_age`.
    #[error(
        "the ID token was issued at {iat} (Unix seconds; now {now}): older than max_token_age {max_age_secs} s"
    )]
    TooOld {
        /// The `iat` claim.
        iat: i64,
        /// The time of the check.
        now: i64,
        /// The provider's `max_token_age`.
        max_age_secs: u64,
    },
    /// `nbf` has not been reached yet.
    #[error(
        "the ID token is not valid before {nbf} (Unix seconds; now {now}, leeway {leeway_secs} s)"
    )]
    NotYetValid {
        /// The `nbf` claim.
        nbf: i64,
        /// The time of the check.
        now: i64,
        /// [`LEEWAY`].
        leeway_secs: u64,
    },
    /// The subject claim (`sub`, or the provider's `subject_claim`) is missing.
    #[error("the ID token has no subject claim `{claim}`")]
    MissingSubject {
        /// The claim.
        claim: String,
    },
    /// The subject claim is not a non-empty string.
    #[error("the ID token's subject claim `{claim}` must be a non-empty string")]
    InvalidSubject {
        /// The claim.
        claim: String,
    },
    /// `subject_claim = "email"` and `email_verified` is not `true`.
    #[error(
        "the ID token's email address is not verified (`email_verified` is not true): it cannot name the subject"
    )]
    EmailNotVerified,
}

/// Why the identity providers could not be set up at start-up. The message names the config key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdpSetupError {
    /// A file (`jwks_path`, `jwks_ca_bundle_path`) cannot be read.
    #[error("{key} {}: cannot read: {reason}", path.display())]
    Read {
        /// The config key, e.g. `delegation.identity_providers[0].jwks_path`.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A `jwks_path` file is not a usable JWK Set.
    #[error("{key} {}: {source}", path.display())]
    InvalidJwks {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: JwksError,
    },
    /// The TLS roots of a `jwks_url` are unusable (an invalid `jwks_ca_bundle_path`, or no
    /// system roots).
    #[error("{key}: {reason}")]
    Roots {
        /// The config key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Two providers have the same issuer.
    #[error("{key}: {issuer:?} is configured twice")]
    DuplicateIssuer {
        /// The config key of the second one.
        key: String,
        /// The issuer.
        issuer: String,
    },
}

/// What a `jwks_url` provider remembers about its fetches. Its mutex makes fetches single-flight.
#[derive(Debug, Default)]
struct FetchState {
    /// When the last fetch started.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed (`None` after a success).
    last_error: Option<String>,
}

struct Remote {
    url: EndpointUrl,
    tls: Arc<rustls::ClientConfig>,
    state: tokio::sync::Mutex<FetchState>,
}

struct Provider {
    settings: IdentityProviderSettings,
    /// The last good JWK Set; `None` until a `jwks_url` was fetched once.
    keys: ArcSwapOption<JwkSet>,
    remote: Option<Remote>,
}

/// The configured identity providers, by issuer (see the module documentation).
pub struct IdentityProviders {
    providers: BTreeMap<String, Provider>,
    policy: RefreshPolicy,
}

impl std::fmt::Debug for IdentityProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProviders")
            .field("issuers", &self.providers.keys().collect::<Vec<_>>())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// At most [`MAX_SHOWN_LEN`] characters of a value taken from an unverified token.
fn shown(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN_LEN) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}...", &s[..end]),
    }
}

/// Seconds since the epoch (negative before it).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The claim errors of [`numeric_date`] and [`audiences`].
fn claim_error(e: JwtSvidError) -> IdTokenError {
    match e {
        JwtSvidError::MissingClaim(name) => IdTokenError::MissingClaim(name),
        JwtSvidError::InvalidClaim { name, reason } => IdTokenError::InvalidClaim { name, reason },
        other => IdTokenError::Malformed(other.to_string()),
    }
}

/// A required NumericDate claim.
fn required_date(claims: &Map<String, Value>, name: &'static str) -> Result<i64, IdTokenError> {
    numeric_date(claims, name)
        .map_err(claim_error)?
        .ok_or(IdTokenError::MissingClaim(name))
}

/// A claim that must be a non-empty string.
fn subject_value(claims: &Map<String, Value>, claim: &str) -> Result<String, IdTokenError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Err(IdTokenError::MissingSubject {
            claim: claim.to_owned(),
        }),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(IdTokenError::InvalidSubject {
            claim: claim.to_owned(),
        }),
    }
}

/// `email_verified` is `true` (a few providers send the string `"true"`).
fn email_verified(claims: &Map<String, Value>) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

impl IdentityProviders {
    /// No identity provider: every ID token is refused with [`IdTokenError::UnknownProvider`].
    pub fn empty() -> Self {
        Self {
            providers: BTreeMap::new(),
            policy: RefreshPolicy::default(),
        }
    }

    /// Sets up the providers with the default [`RefreshPolicy`]: reads every `jwks_path` and
    /// `jwks_ca_bundle_path`, then fetches every `jwks_url` once (a failed fetch is logged and
    /// retried later; it does not stop start-up). Call [`IdentityProviders::run`] to refresh.
    pub async fn new(settings: &[IdentityProviderSettings]) -> Result<Self, IdpSetupError> {
        Self::with_policy(settings, RefreshPolicy::default()).await
    }

    /// [`IdentityProviders::new`] with another refresh policy.
    pub async fn with_policy(
        settings: &[IdentityProviderSettings],
        policy: RefreshPolicy,
    ) -> Result<Self, IdpSetupError> {
        let mut providers = BTreeMap::new();
        for (index, s) in settings.iter().enumerate() {
            let key = |name: &str| format!("delegation.identity_providers[{index}].{name}");
            if providers.contains_key(&s.issuer) {
                return Err(IdpSetupError::DuplicateIssuer {
                    key: key("issuer"),
                    issuer: s.issuer.clone(),
                });
            }
            let (keys, remote) = match &s.jwks {
                JwksSource::Path(path) => {
                    let read = |key: String| {
                        let data = std::fs::read(path).map_err(|e| IdpSetupError::Read {
                            key: key.clone(),
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                        JwkSet::from_json(&data).map_err(|source| IdpSetupError::InvalidJwks {
                            key,
                            path: path.clone(),
                            source,
                        })
                    };
                    (Some(Arc::new(read(key("jwks_path"))?)), None)
                }
                JwksSource::Url {
                    url,
                    ca_bundle_path,
                } => {
                    let tls = jwks_client_config(ca_bundle_path.as_ref(), &key)?;
                    let remote = Remote {
                        url: url.clone(),
                        tls: Arc::new(tls),
                        state: tokio::sync::Mutex::new(FetchState::default()),
                    };
                    (None, Some(remote))
                }
            };
            providers.insert(
                s.issuer.clone(),
                Provider {
                    settings: s.clone(),
                    keys: ArcSwapOption::new(keys),
                    remote,
                },
            );
        }
        let this = Self { providers, policy };
        this.refresh().await;
        Ok(this)
    }

    /// The configured issuers, sorted.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    /// How many providers are configured.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Fetches the JWK Set of every `jwks_url` provider now (concurrently), keeping the last good
    /// one of a provider whose fetch fails.
    pub async fn refresh(&self) {
        futures::future::join_all(self.providers.values().filter_map(|p| {
            let remote = p.remote.as_ref()?;
            Some(async move {
                let mut state = remote.state.lock().await;
                p.fetch_locked(remote, &mut state).await;
            })
        }))
        .await;
    }

    /// Refreshes the `jwks_url` providers every [`RefreshPolicy::interval`] (the first time one
    /// interval after the call). Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        if !self.providers.values().any(|p| p.remote.is_some()) {
            return;
        }
        let start = Instant::now() + self.policy.interval;
        let mut tick = tokio::time::interval_at(start, self.policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    /// Verifies an ID token at `now` (see the module documentation for every rule) and returns
    /// the subject it proves.
    pub async fn verify_id_token(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<VerifiedSubject, IdTokenError> {
        let jws = Jws::parse(token).map_err(|e| match e {
            JwtSvidError::DisallowedAlgorithm(alg) => {
                IdTokenError::DisallowedAlgorithm(shown(&alg))
            }
            other => IdTokenError::Malformed(other.to_string()),
        })?;
        if let Some(typ) = jws.token_type()
            && !ACCEPTED_TYPES.iter().any(|t| t.eq_ignore_ascii_case(typ))
        {
            return Err(IdTokenError::UnsupportedType(shown(typ)));
        }
        let claims = jws.claims().map_err(|e| match e {
            JwtSvidError::ClaimsNotJson(why) => IdTokenError::ClaimsNotJson(why),
            other => IdTokenError::Malformed(other.to_string()),
        })?;
        let issuer = match claims.get("iss") {
            None => return Err(IdTokenError::MissingClaim("iss")),
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => {
                return Err(IdTokenError::InvalidClaim {
                    name: "iss",
                    reason: "must be a string",
                });
            }
        };
        let provider = self
            .providers
            .get(issuer)
            .ok_or_else(|| IdTokenError::UnknownProvider(shown(issuer)))?;
        let kid = match jws.key_id() {
            Some(kid) if !kid.is_empty() => kid,
            _ => return Err(IdTokenError::MissingKeyId),
        };
        let key = provider.key(kid, &self.policy).await?;
        jws.verify_signature(kid, &key.jwk).map_err(|e| {
            let unusable = |reason: String| IdTokenError::UnusableKey {
                issuer: provider.settings.issuer.clone(),
                kid: key.key_id.clone(),
                reason,
            };
            match e {
                JwtSvidError::BadSignature => IdTokenError::BadSignature,
                JwtSvidError::KeyAlgorithmMismatch { reason, .. }
                | JwtSvidError::InvalidKey { reason, .. } => unusable(reason),
                other => unusable(other.to_string()),
            }
        })?;
        // The signature holds: the claims are the provider's.
        provider.check_claims(claims, now)
    }
}

/// The TLS client configuration of a `jwks_url`: the roots of `ca_bundle_path`, or the system
/// roots. `key` names a key of the provider's table.
fn jwks_client_config(
    ca_bundle_path: Option<&PathBuf>,
    key: &dyn Fn(&str) -> String,
) -> Result<rustls::ClientConfig, IdpSetupError> {
    let (pem, pem_key) = match ca_bundle_path {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| IdpSetupError::Read {
                key: key("jwks_ca_bundle_path"),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            (pem, key("jwks_ca_bundle_path"))
        }
        None => {
            let pem = federation::system_roots_pem().map_err(|reason| IdpSetupError::Roots {
                key: key("jwks_url"),
                reason: format!("{reason}: set jwks_ca_bundle_path"),
            })?;
            (pem, key("jwks_url"))
        }
    };
    let roots = federation::parse_roots(&pem).map_err(|e| IdpSetupError::Roots {
        key: pem_key.clone(),
        reason: match e {
            federation::FederationError::InvalidCaBundle(reason) => {
                format!("not a usable PEM CA bundle: {reason}")
            }
            other => other.to_string(),
        },
    })?;
    federation::web_client_config(roots).map_err(|e| IdpSetupError::Roots {
        key: pem_key,
        reason: e.to_string(),
    })
}

impl Provider {
    fn lookup(&self, kid: &str) -> Option<JwtAuthority> {
        self.keys
            .load()
            .as_ref()
            .and_then(|set| set.get(kid).cloned())
    }

    /// The key `kid`, fetching the JWK Set again first (for a `jwks_url`) when it is unknown and
    /// the last fetch is at least `policy.min_interval` old.
    async fn key(&self, kid: &str, policy: &RefreshPolicy) -> Result<JwtAuthority, IdTokenError> {
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        let issuer = &self.settings.issuer;
        if let Some(remote) = &self.remote {
            let mut state = remote.state.lock().await;
            // Another caller may have fetched it while this one waited.
            if let Some(key) = self.lookup(kid) {
                return Ok(key);
            }
            if state
                .last_attempt
                .is_none_or(|t| t.elapsed() >= policy.min_interval)
            {
                tracing::info!(issuer = %issuer, kid = %shown(kid), "an ID token names an unknown key ID: fetching the identity provider's JWKS");
                self.fetch_locked(remote, &mut state).await;
                if let Some(key) = self.lookup(kid) {
                    return Ok(key);
                }
            }
            if self.keys.load().is_none() {
                return Err(IdTokenError::KeysUnavailable {
                    issuer: issuer.clone(),
                    reason: state
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not fetched yet".to_owned()),
                });
            }
        }
        Err(IdTokenError::UnknownKeyId {
            issuer: issuer.clone(),
            kid: shown(kid),
        })
    }

    /// Fetches the JWK Set of `remote` (the caller holds its state lock) and keeps it when it is
    /// valid; otherwise keeps the last good one.
    async fn fetch_locked(&self, remote: &Remote, state: &mut FetchState) {
        state.last_attempt = Some(Instant::now());
        let issuer = &self.settings.issuer;
        let fetched = match federation::https_get(&remote.url, remote.tls.clone()).await {
            Ok(body) => JwkSet::from_json(&body)
                .map_err(|e| format!("{} did not serve a usable JWK Set: {e}", remote.url)),
            Err(e) => Err(format!("{}: {e}", remote.url)),
        };
        match fetched {
            Ok(set) => {
                if self.keys.load().as_deref() != Some(&set) {
                    tracing::info!(issuer = %issuer, url = %remote.url, keys = %set.key_ids().join(","), "loaded the signing keys of an identity provider");
                }
                state.last_error = None;
                self.keys.store(Some(Arc::new(set)));
            }
            Err(reason) => {
                tracing::warn!(issuer = %issuer, error = %reason, "cannot fetch the JWKS of an identity provider; keeping the last good one");
                state.last_error = Some(reason);
            }
        }
    }

    /// Steps 5 to 7 of the module documentation, on claims whose signature verified.
    fn check_claims(
        &self,
        claims: Map<String, Value>,
        now: SystemTime,
    ) -> Result<VerifiedSubject, IdTokenError> {
        let s = &self.settings;
        let token_audience = audiences(&claims).map_err(claim_error)?;
        if !token_audience.iter().any(|a| s.audiences.contains(a)) {
            return Err(IdTokenError::AudienceMismatch {
                issuer: s.issuer.clone(),
                expected: s.audiences.clone(),
                actual: token_audience.iter().map(|a| shown(a)).collect(),
            });
        }
        if token_audience.len() > 1 {
            match claims.get("azp") {
                None => {}
                Some(Value::String(azp)) if s.audiences.contains(azp) => {}
                Some(Value::String(azp)) => {
                    return Err(IdTokenError::AuthorizedPartyMismatch {
                        issuer: s.issuer.clone(),
                        azp: shown(azp),
                        expected: s.audiences.clone(),
                    });
                }
                Some(_) => {
                    return Err(IdTokenError::InvalidClaim {
                        name: "azp",
                        reason: "must be a string",
                    });
                }
            }
        }

        let now_s = unix_secs(now);
        let leeway_secs = LEEWAY.as_secs();
        let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
        let exp = required_date(&claims, "exp")?;
        if now_s >= exp.saturating_add(leeway) {
            return Err(IdTokenError::Expired {
                exp,
                now: now_s,
                leeway_secs,
            });
        }
        let iat = required_date(&claims, "iat")?;
        if now_s.saturating_add(leeway) < iat {
            return Err(IdTokenError::IssuedInFuture {
                iat,
                now: now_s,
                leeway_secs,
            });
        }
        let max_age_secs = s.max_token_age.as_secs();
        let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
        if now_s.saturating_sub(iat) > max_age.saturating_add(leeway) {
            return Err(IdTokenError::TooOld {
                iat,
                now: now_s,
                max_age_secs,
            });
        }
        if let Some(nbf) = numeric_date(&claims, "nbf").map_err(claim_error)?
            && now_s.saturating_add(leeway) < nbf
        {
            return Err(IdTokenError::NotYetValid {
                nbf,
                now: now_s,
                leeway_secs,
            });
        }

        let sub = subject_value(&claims, "sub")?;
        let subject = subject_value(&claims, &s.subject_claim)?;
        let verified = email_verified(&claims);
        if s.subject_claim == "email" && !verified {
            return Err(IdTokenError::EmailNotVerified);
        }
        let string_claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(VerifiedSubject {
            issuer: s.issuer.clone(),
            subject,
            sub,
            email: string_claim("email").filter(|_| verified),
            name: string_claim("name"),
            expires_at: UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0)),
            claims,
        })
    }
}

#[cfg(test)]
mod tests;
