//! WIMSE Workload Proof Tokens (draft-ietf-wimse-wpt-02): the proof of possession that makes a
//! WIT-SVID acceptable.
//!
//! A WPT is a JWS compact serialization with header `{"alg", "typ": "wpt+jwt"}` (`alg` equal to
//! the WIT's `cnf.jwk.alg`), signed with the WIT key, and claims
//!
//! - `aud`: the target of the request (the HTTP target URI without query or fragment, or a
//!   deployment-specific value), exactly one;
//! - `exp` (short: at most [`DEFAULT_MAX_WPT_LIFETIME`] by default) and `iat`;
//! - `jti`: 128 random bits, base64url;
//! - `wth`: base64url(SHA-256(the WIT as sent));
//! - `tth`: the same hash of a Txn-Token sent with the request; `oth`: an object of such hashes of
//!   other tokens of the request, keyed by lower-case header field name (value trimmed of spaces
//!   and tabs); `ath`: the hash of an OAuth access token, a claim of draft -01 that -02 removed,
//!   checked only when the caller passes one ([`BoundTokens`]).
//!
//! [`mint_wpt`] makes one for a client; [`WptVerifier::verify`] checks a request's WIT-SVID and WPT
//! for a server, in this order, each failure its own [`WptError`]:
//!
//! 1. the WIT-SVID ([`signet_spiffe::wit::validate_wit_svid`]: `typ`, WIT authorities of the
//!    `sub`'s trust domain only, no `aud`, a `cnf.jwk` with `alg`, times);
//! 2. the WPT's JWS shape and algorithm allowlist, `typ` `wpt+jwt`, `alg` equal to `cnf.jwk.alg`,
//!    the signature with `cnf.jwk`;
//! 3. `aud` equal to the expected audience; `exp` present and not passed; the lifetime, from `iat`
//!    (when present) and from now, at most the configured maximum; `iat`/`nbf` not in the future;
//! 4. `jti` present; `wth` equal to the hash of the WIT; `tth`, `ath` and `oth` equal to the hashes
//!    of the tokens the caller passes, and present exactly when they are;
//! 5. the `jti` not seen before for this SPIFFE ID (the replay cache remembers it until its `exp`
//!    plus the leeway, and is bounded: a full cache refuses rather than forgets).
//!
//! WPTs are credentials for their short life: never log them.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use signet_spiffe::bundle::Bundle;
use signet_spiffe::jwt::{Algorithm, Jws, JwtSvidError, numeric_date};
use signet_spiffe::wit::{
    ConfirmationKey, ValidatedWitSvid, WitSvidError, is_media_type, validate_wit_svid,
};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::key::{KeyError, WitKey};

/// The `typ` of a WPT.
pub const WPT_TYPE: &str = "wpt+jwt";
/// The longest WPT lifetime a verifier accepts by default (and the longest [`mint_wpt`] makes).
pub const DEFAULT_MAX_WPT_LIFETIME: Duration = Duration::from_secs(300);
/// Default leeway for clock skew between client, server and issuer.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// Default number of `jti`s the replay cache holds.
pub const DEFAULT_REPLAY_CACHE_CAPACITY: usize = 100_000;
/// The longest `jti` accepted (bytes): a minted one is 22.
pub const MAX_JTI_LEN: usize = 256;
/// Random bytes of a minted `jti` (128 bits).
const JTI_BYTES: usize = 16;

/// Why a WPT could not be minted, or a WIT-SVID with its WPT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WptError {
    /// The audience (expected, or to mint for) is empty.
    #[error("the audience is empty")]
    EmptyAudience,
    /// The lifetime asked of [`mint_wpt`] is zero or above [`DEFAULT_MAX_WPT_LIFETIME`].
    #[error("a WPT lives between 1 s and {max_secs} s, not {requested_secs} s")]
    InvalidLifetime {
        /// Requested seconds.
        requested_secs: u64,
        /// The maximum.
        max_secs: u64,
    },
    /// The key given to [`mint_wpt`] is not the one the WIT-SVID binds.
    #[error("the key is not the WIT-SVID's `cnf.jwk`: the WPT would not verify")]
    KeyNotBound,
    /// The WIT key failed.
    #[error("WIT key: {0}")]
    Key(#[from] KeyError),
    /// The WIT-SVID was refused.
    #[error("WIT-SVID: {0}")]
    Wit(#[source] WitSvidError),
    /// The WPT is not a well-formed JWS with an allowed algorithm.
    #[error("WPT: {0}")]
    Malformed(#[source] JwtSvidError),
    /// The WPT has no `typ`.
    #[error("WPT: the header has no `typ`; a WPT carries `typ: wpt+jwt`")]
    MissingType,
    /// The WPT's `typ` is not `wpt+jwt`.
    #[error("WPT: token type {0:?} is not wpt+jwt")]
    UnsupportedType(String),
    /// The WPT's `alg` is not the WIT's `cnf.jwk.alg`.
    #[error("WPT: signed with {wpt}, but the WIT-SVID binds a {wit} key")]
    AlgorithmMismatch {
        /// The WPT's `alg`.
        wpt: Algorithm,
        /// The WIT's `cnf.jwk.alg`.
        wit: Algorithm,
    },
    /// The WPT's signature does not verify with the WIT's `cnf.jwk`.
    #[error("WPT: the signature does not verify with the WIT-SVID's key")]
    BadSignature,
    /// The WPT's payload is not a JSON object.
    #[error("WPT: the claims are not a JSON object")]
    ClaimsNotJson,
    /// A required WPT claim is missing.
    #[error("WPT: required claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// A WPT claim has an unusable value.
    #[error("WPT: claim `{name}` {reason}")]
    InvalidClaim {
        /// The claim.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The WPT is for another audience.
    #[error("WPT: audience {actual:?} is not {expected:?}")]
    AudienceMismatch {
        /// The expected audience.
        expected: String,
        /// The WPT's `aud`.
        actual: Vec<String>,
    },
    /// The WPT expired.
    #[error("WPT: expired at {exp} (Unix seconds; now {now}, leeway {leeway_secs} s)")]
    Expired {
        /// Its `exp`.
        exp: i64,
        /// Now.
        now: i64,
        /// The leeway.
        leeway_secs: u64,
    },
    /// The WPT's `nbf` has not come.
    #[error("WPT: not valid before {nbf} (Unix seconds; now {now}, leeway {leeway_secs} s)")]
    NotYetValid {
        /// Its `nbf`.
        nbf: i64,
        /// Now.
        now: i64,
        /// The leeway.
        leeway_secs: u64,
    },
    /// The WPT's `iat` is in the future.
    #[error(
        "WPT: issued in the future, at {iat} (Unix seconds; now {now}, leeway {leeway_secs} s)"
    )]
    IssuedInFuture {
        /// Its `iat`.
        iat: i64,
        /// Now.
        now: i64,
        /// The leeway.
        leeway_secs: u64,
    },
    /// The WPT lives longer than the verifier accepts.
    #[error("WPT: lives {lifetime_secs} s, at most {max_secs} s are accepted")]
    TooLongLived {
        /// From `iat` (or now, whichever says more) to `exp`.
        lifetime_secs: i64,
        /// The maximum.
        max_secs: u64,
    },
    /// The WPT's `wth` is not the hash of the WIT-SVID it came with.
    #[error("WPT: `wth` is not the hash of this WIT-SVID (it proves another one)")]
    WitHashMismatch,
    /// A token hash of the WPT differs from the hash of the token the request carries.
    #[error("WPT: `{claim}` is not the hash of the token the request carries")]
    BoundTokenMismatch {
        /// `tth`, `ath` or `oth.<header>`.
        claim: String,
    },
    /// The request carries a token the WPT does not bind.
    #[error("WPT: the request carries a token that `{claim}` should bind, and the WPT has none")]
    UnboundToken {
        /// `tth`, `ath` or `oth.<header>`.
        claim: String,
    },
    /// The WPT binds a token the request does not carry (or an `oth` entry not understood).
    #[error("WPT: `{claim}` binds a token the request does not carry")]
    UnexpectedBinding {
        /// `tth`, `ath` or `oth.<header>`.
        claim: String,
    },
    /// The caller's [`BoundTokens`] are unusable (an empty or repeated header name).
    #[error("bound tokens: {0}")]
    InvalidBoundTokens(String),
    /// The WPT's `jti` was used before.
    #[error("WPT: `jti` {jti:?} was already used (replay)")]
    Replayed {
        /// The `jti`.
        jti: String,
    },
    /// The replay cache is full of unexpired `jti`s: refused rather than forgotten.
    #[error("the WPT replay cache is full ({capacity} unexpired jtis); refusing")]
    ReplayCacheFull {
        /// Its capacity.
        capacity: usize,
    },
    /// Encoding or randomness failed.
    #[error("cannot mint the WPT: {0}")]
    Encoding(&'static str),
}

/// The other tokens of a request that a WPT binds by hash. Each is present in the WPT exactly when
/// it is given here.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundTokens<'a> {
    /// A Txn-Token (`Txn-Token` header) of the request: `tth`.
    pub txn_token: Option<&'a str>,
    /// An OAuth access token: `ath` (draft-ietf-wimse-wpt-01; draft -02 removed the claim, since
    /// the WPT takes the `Authorization` header). Leave `None` unless a peer needs it.
    pub access_token: Option<&'a str>,
    /// Other tokens conveying end-user identity or authorization context: `(header field name,
    /// header value)`, bound in `oth` under the lower-case name, the value trimmed of spaces and
    /// tabs. Names must be non-empty and distinct (case-insensitively).
    pub other: &'a [(&'a str, &'a str)],
}

/// base64url(SHA-256(`token`)): `wth`, `tth`, `ath` and `oth` values.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()))
}

/// The hashes a WPT carries for `bound`.
#[derive(Debug, PartialEq, Eq)]
struct BoundHashes {
    tth: Option<String>,
    ath: Option<String>,
    oth: BTreeMap<String, String>,
}

impl BoundHashes {
    fn of(bound: &BoundTokens<'_>) -> Result<Self, WptError> {
        let mut oth = BTreeMap::new();
        for (name, value) in bound.other {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(WptError::InvalidBoundTokens(
                    "an `oth` header name is empty".into(),
                ));
            }
            let hash = token_hash(value.trim_matches([' ', '\t']));
            if oth.insert(name.clone(), hash).is_some() {
                return Err(WptError::InvalidBoundTokens(format!(
                    "header {name:?} is given twice"
                )));
            }
        }
        Ok(BoundHashes {
            tth: bound.txn_token.map(token_hash),
            ath: bound.access_token.map(token_hash),
            oth,
        })
    }

    fn write(self, claims: &mut Map<String, Value>) {
        if let Some(tth) = self.tth {
            claims.insert("tth".into(), Value::String(tth));
        }
        if let Some(ath) = self.ath {
            claims.insert("ath".into(), Value::String(ath));
        }
        if !self.oth.is_empty() {
            let oth = self
                .oth
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            claims.insert("oth".into(), Value::Object(oth));
        }
    }

    /// Compares with the WPT's claims (rule 4 of the module documentation, token hashes).
    fn check(&self, claims: &Map<String, Value>) -> Result<(), WptError> {
        for (name, expected) in [("tth", &self.tth), ("ath", &self.ath)] {
            let given = match claims.get(name) {
                None => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => {
                    return Err(WptError::InvalidClaim {
                        name: if name == "tth" { "tth" } else { "ath" },
                        reason: "must be a string",
                    });
                }
            };
            compare(name, expected.as_ref(), given)?;
        }
        let given = match claims.get("oth") {
            None => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => {
                return Err(WptError::InvalidClaim {
                    name: "oth",
                    reason: "must be a JSON object",
                });
            }
        };
        let names: BTreeSet<&str> = given
            .keys()
            .map(String::as_str)
            .chain(self.oth.keys().map(String::as_str))
            .collect();
        for name in names {
            let claim = format!("oth.{name}");
            let value = match given.get(name) {
                None => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => {
                    return Err(WptError::InvalidClaim {
                        name: "oth",
                        reason: "must map header names to strings",
                    });
                }
            };
            compare(&claim, self.oth.get(name), value)?;
        }
        Ok(())
    }
}

/// One token binding: the hash of the token the request carries (`expected`) against the WPT's.
fn compare(claim: &str, expected: Option<&String>, given: Option<&String>) -> Result<(), WptError> {
    match (expected, given) {
        (None, None) => Ok(()),
        (Some(e), Some(g)) if e == g => Ok(()),
        (Some(_), Some(_)) => Err(WptError::BoundTokenMismatch {
            claim: claim.to_owned(),
        }),
        (Some(_), None) => Err(WptError::UnboundToken {
            claim: claim.to_owned(),
        }),
        (None, Some(_)) => Err(WptError::UnexpectedBinding {
            claim: claim.to_owned(),
        }),
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `cnf` key of `wit`, read without verifying the WIT (the client trusts the token its agent
/// gave it; the server verifies it).
fn unverified_confirmation(wit: &str) -> Result<ConfirmationKey, WptError> {
    let jws = Jws::parse(wit).map_err(|e| WptError::Wit(WitSvidError::Token(e)))?;
    let claims = match serde_json::from_slice::<Value>(&jws.payload) {
        Ok(Value::Object(claims)) => claims,
        _ => {
            return Err(WptError::Wit(WitSvidError::Token(
                JwtSvidError::ClaimsNotJson("not an object".into()),
            )));
        }
    };
    ConfirmationKey::from_claims(&claims).map_err(WptError::Wit)
}

/// Mints a WPT for `wit` (the WIT-SVID as it will be sent) with its key `key`, for `audience`
/// (the target URI without query or fragment, or the value the server expects), valid `ttl`
/// (1 s to [`DEFAULT_MAX_WPT_LIFETIME`]; seconds or less are best) from `now`, binding the
/// request's other tokens `bound`.
///
/// Refuses a key that is not the WIT's `cnf.jwk` ([`WptError::KeyNotBound`]): such a WPT never
/// verifies.
pub fn mint_wpt(
    wit: &str,
    key: &WitKey,
    audience: &str,
    ttl: Duration,
    now: SystemTime,
    bound: &BoundTokens<'_>,
) -> Result<String, WptError> {
    if audience.is_empty() {
        return Err(WptError::EmptyAudience);
    }
    let max = DEFAULT_MAX_WPT_LIFETIME.as_secs();
    if ttl.as_secs() == 0 || ttl.as_secs() > max {
        return Err(WptError::InvalidLifetime {
            requested_secs: ttl.as_secs(),
            max_secs: max,
        });
    }
    let confirmation = unverified_confirmation(wit)?;
    if confirmation.algorithm != key.algorithm() || !key.is_public_jwk(&confirmation.jwk) {
        return Err(WptError::KeyNotBound);
    }
    let mut jti = [0u8; JTI_BYTES];
    SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| WptError::Encoding("the random number generator failed"))?;
    let iat = unix_secs(now);
    let exp = iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let mut claims = Map::new();
    claims.insert("aud".into(), Value::from(audience));
    claims.insert("exp".into(), Value::from(exp));
    claims.insert("iat".into(), Value::from(iat));
    claims.insert("jti".into(), Value::from(URL_SAFE_NO_PAD.encode(jti)));
    claims.insert("wth".into(), Value::from(token_hash(wit)));
    BoundHashes::of(bound)?.write(&mut claims);
    let header = json!({"alg": key.algorithm().as_str(), "typ": WPT_TYPE});
    Ok(key.sign_compact(&header, &Value::Object(claims))?)
}

/// A request's credentials, as a server received them.
#[derive(Debug, Clone, Copy)]
pub struct WptRequest<'a> {
    /// The WIT-SVID (e.g. the `Workload-Identity-Token` header).
    pub wit: &'a str,
    /// The WPT (e.g. the credentials of `Authorization: WPT ...`).
    pub wpt: &'a str,
    /// The audience the WPT must name: this request's target URI without query or fragment, or
    /// the deployment's value, from the server's own configuration (never from request headers
    /// such as `Host` or `X-Forwarded-Host`).
    pub audience: &'a str,
    /// The other tokens of the request, bound by `tth`/`ath`/`oth`.
    pub bound: BoundTokens<'a>,
}

/// A caller that proved its identity: a valid WIT-SVID and a fresh WPT made with its key.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCaller {
    /// The caller's SPIFFE ID (the WIT-SVID's `sub`).
    pub spiffe_id: SpiffeId,
    /// The validated WIT-SVID (claims, key ID, holder key).
    pub wit: ValidatedWitSvid,
    /// The WPT's `jti` (for audit logs; it is in the replay cache now).
    pub wpt_jti: String,
    /// The WPT's `exp`.
    pub wpt_expiry: SystemTime,
}

/// The `jti`s seen, per SPIFFE ID, each until its WPT's `exp` plus the leeway.
struct ReplayCache {
    capacity: usize,
    seen: HashSet<(String, String)>,
    /// `(until, spiffe_id, jti)`, soonest first.
    by_expiry: BTreeSet<(i64, String, String)>,
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity,
            seen: HashSet::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Records `jti` of `id` until `until`, refusing one seen before; forgets those past `now`.
    fn insert(&mut self, id: &str, jti: &str, until: i64, now: i64) -> Result<(), WptError> {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, id, jti)) = self.by_expiry.pop_first() {
                self.seen.remove(&(id, jti));
            }
        }
        let key = (id.to_owned(), jti.to_owned());
        if self.seen.contains(&key) {
            return Err(WptError::Replayed {
                jti: jti.to_owned(),
            });
        }
        if self.seen.len() >= self.capacity {
            return Err(WptError::ReplayCacheFull {
                capacity: self.capacity,
            });
        }
        self.by_expiry.insert((until, key.0.clone(), key.1.clone()));
        self.seen.insert(key);
        Ok(())
    }
}

/// Verifies requests' WIT-SVIDs with their WPTs (see the module documentation), with one replay
/// cache shared by every call: keep one verifier per server (it is `Send + Sync`), not one per
/// request.
pub struct WptVerifier {
    max_lifetime: Duration,
    leeway: Duration,
    replay: Mutex<ReplayCache>,
}

impl std::fmt::Debug for WptVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WptVerifier")
            .field("max_lifetime", &self.max_lifetime)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl Default for WptVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl WptVerifier {
    /// A verifier accepting WPTs of at most [`DEFAULT_MAX_WPT_LIFETIME`], with
    /// [`DEFAULT_LEEWAY`] and a replay cache of [`DEFAULT_REPLAY_CACHE_CAPACITY`] `jti`s.
    pub fn new() -> Self {
        WptVerifier {
            max_lifetime: DEFAULT_MAX_WPT_LIFETIME,
            leeway: DEFAULT_LEEWAY,
            replay: Mutex::new(ReplayCache::new(DEFAULT_REPLAY_CACHE_CAPACITY)),
        }
    }

    /// The longest WPT lifetime accepted (from `iat`, and from now).
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max;
        self
    }

    /// The clock skew tolerated on every time check, the WIT-SVID's included.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How many unexpired `jti`s the replay cache holds; when it is full, WPTs are refused
    /// ([`WptError::ReplayCacheFull`]) until some expire.
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.replay = Mutex::new(ReplayCache::new(capacity));
        self
    }

    /// Verifies `request` at `now`. `bundles` is asked once, for the trust domain of the WIT's
    /// `sub`, and returns that trust domain's bundle (`&Bundle`, `Arc<Bundle>`, ...) or `None`
    /// when it is not trusted; only its WIT authorities are used.
    pub fn verify<B: Borrow<Bundle>>(
        &self,
        request: &WptRequest<'_>,
        bundles: impl FnOnce(&TrustDomain) -> Option<B>,
        now: SystemTime,
    ) -> Result<VerifiedCaller, WptError> {
        if request.audience.is_empty() {
            return Err(WptError::EmptyAudience);
        }
        let hashes = BoundHashes::of(&request.bound)?;
        let wit =
            validate_wit_svid(request.wit, bundles, now, self.leeway).map_err(WptError::Wit)?;

        let jws = Jws::parse(request.wpt).map_err(WptError::Malformed)?;
        match jws.token_type() {
            None => return Err(WptError::MissingType),
            Some(typ) if !is_media_type(typ, WPT_TYPE) => {
                return Err(WptError::UnsupportedType(typ.to_owned()));
            }
            Some(_) => {}
        }
        if jws.algorithm != wit.confirmation.algorithm {
            return Err(WptError::AlgorithmMismatch {
                wpt: jws.algorithm,
                wit: wit.confirmation.algorithm,
            });
        }
        jws.verify_signature("cnf.jwk", &wit.confirmation.jwk)
            .map_err(|e| match e {
                JwtSvidError::BadSignature => WptError::BadSignature,
                other => WptError::Malformed(other),
            })?;
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&jws.payload) else {
            return Err(WptError::ClaimsNotJson);
        };

        self.check_audience(&claims, request.audience)?;
        let (exp, now_s) = self.check_times(&claims, now)?;
        let jti = match claims.get("jti") {
            None => return Err(WptError::MissingClaim("jti")),
            Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j.clone(),
            Some(_) => {
                return Err(WptError::InvalidClaim {
                    name: "jti",
                    reason: "must be a non-empty string of at most 256 bytes",
                });
            }
        };
        match claims.get("wth") {
            None => return Err(WptError::MissingClaim("wth")),
            Some(Value::String(wth)) if *wth == token_hash(request.wit) => {}
            Some(Value::String(_)) => return Err(WptError::WitHashMismatch),
            Some(_) => {
                return Err(WptError::InvalidClaim {
                    name: "wth",
                    reason: "must be a string",
                });
            }
        }
        hashes.check(&claims)?;

        let until = exp.saturating_add(self.leeway_secs());
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(&wit.spiffe_id.to_string(), &jti, until, now_s)?;
        Ok(VerifiedCaller {
            spiffe_id: wit.spiffe_id.clone(),
            wit,
            wpt_jti: jti,
            wpt_expiry: UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0)),
        })
    }

    fn leeway_secs(&self) -> i64 {
        i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX)
    }

    /// `aud`: one audience (a string, or an array of exactly one) equal to `expected`.
    fn check_audience(&self, claims: &Map<String, Value>, expected: &str) -> Result<(), WptError> {
        let actual: Vec<String> = match claims.get("aud") {
            None => return Err(WptError::MissingClaim("aud")),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or(WptError::InvalidClaim {
                    name: "aud",
                    reason: "must be a string or an array of strings",
                })?,
            Some(_) => {
                return Err(WptError::InvalidClaim {
                    name: "aud",
                    reason: "must be a string or an array of strings",
                });
            }
        };
        if actual.len() != 1 || actual[0] != expected {
            return Err(WptError::AudienceMismatch {
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// `exp` present and not passed, `iat`/`nbf` not in the future, the lifetime within the
    /// maximum. Returns `exp` and now, in Unix seconds.
    fn check_times(
        &self,
        claims: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<(i64, i64), WptError> {
        let invalid = |e: JwtSvidError| match e {
            JwtSvidError::InvalidClaim { name, reason } => WptError::InvalidClaim { name, reason },
            _ => WptError::InvalidClaim {
                name: "exp",
                reason: "must be a number of seconds since the epoch",
            },
        };
        let now_s = unix_secs(now);
        let leeway = self.leeway_secs();
        let leeway_secs = self.leeway.as_secs();
        let exp = numeric_date(claims, "exp")
            .map_err(invalid)?
            .ok_or(WptError::MissingClaim("exp"))?;
        if now_s >= exp.saturating_add(leeway) {
            return Err(WptError::Expired {
                exp,
                now: now_s,
                leeway_secs,
            });
        }
        let iat = numeric_date(claims, "iat").map_err(invalid)?;
        if let Some(iat) = iat
            && iat > now_s.saturating_add(leeway)
        {
            return Err(WptError::IssuedInFuture {
                iat,
                now: now_s,
                leeway_secs,
            });
        }
        if let Some(nbf) = numeric_date(claims, "nbf").map_err(invalid)?
            && nbf > now_s.saturating_add(leeway)
        {
            return Err(WptError::NotYetValid {
                nbf,
                now: now_s,
                leeway_secs,
            });
        }
        // The lifetime the WPT claims (from `iat`), and the one left (from now, which a client
        // cannot talk down with an `iat` of its own): neither may exceed the maximum.
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX);
        let too_long = |lifetime_secs| WptError::TooLongLived {
            lifetime_secs,
            max_secs: self.max_lifetime.as_secs(),
        };
        if let Some(iat) = iat
            && exp.saturating_sub(iat) > max
        {
            return Err(too_long(exp.saturating_sub(iat)));
        }
        if exp.saturating_sub(now_s) > max.saturating_add(leeway) {
            return Err(too_long(exp.saturating_sub(now_s)));
        }
        Ok((exp, now_s))
    }
}

#[cfg(test)]
mod tests;
