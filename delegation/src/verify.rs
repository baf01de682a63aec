//! Verifying a delegation token for a request, as a resource server does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{date, fact, string};
use biscuit_auth::error::{FailedCheck, Logic, MatchedPolicy, Token as BiscuitError};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};

use crate::cache::{SignatureCache, Verified};
use crate::keys::{DelegationKeys, RevocationList};
use crate::token::{Chain, ChainQueries, TokenError, read_chain_from, trusting, unix};

/// Run limits of the verifier's Datalog evaluation, set explicitly: Biscuit's default of 1 ms
/// refuses valid requests in debug builds and on loaded machines.
pub const DEFAULT_LIMITS: AuthorizerLimits = AuthorizerLimits {
    max_facts: 10_000,
    max_iterations: 1_000,
    max_time: Duration::from_millis(50),
};

/// Why a token was refused. Each variant says what to log; none echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not base64, not a Biscuit, or not a Signet delegation token.
    #[error("malformed delegation token: {0}")]
    Malformed(String),
    /// The token names a root key that is not published (or none).
    #[error("unknown root key id {0:?}: not a published delegation key")]
    UnknownRootKey(Option<u32>),
    /// A signature does not verify (tampered or forged token).
    #[error("invalid delegation token signature: {0}")]
    Signature(String),
    /// One of the token's blocks is revoked.
    #[error("delegation token {token_id} is revoked (block revocation id {revocation_id})")]
    Revoked {
        /// The token's id.
        token_id: String,
        /// The revoked block's revocation id (hex).
        revocation_id: String,
    },
    /// Past its expiry.
    #[error("delegation token {token_id} expired at {expired_at} (Unix seconds; now {now})")]
    Expired {
        /// The token's id.
        token_id: String,
        /// The earliest expiry of the chain.
        expired_at: u64,
        /// Now.
        now: u64,
    },
    /// The presenter is not the token's current holder (a stolen or forwarded token).
    #[error("presented by {presenter}, but the token's holder (last actor) is {holder}")]
    NotTheHolder {
        /// Who presented it.
        presenter: String,
        /// The last actor.
        holder: String,
    },
    /// More hops than the token or the verifier allows.
    #[error("delegation chain of depth {depth} exceeds the limit of {max}")]
    TooDeep {
        /// The token's depth.
        depth: u32,
        /// The limit.
        max: u32,
    },
    /// The operation is not among the token's rights, a check (hop or attenuation) failed, or
    /// the resource server's policy denied it.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// Datalog evaluation hit the run limits.
    #[error("authorization exceeded the run limits: {0}")]
    Limits(String),
}

impl From<TokenError> for VerifyError {
    fn from(e: TokenError) -> Self {
        VerifyError::Malformed(e.to_string())
    }
}

/// A request to authorize.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The presenter's SPIFFE ID: the mTLS peer, or the subject of a verified proof token.
    pub presenter: &'a str,
    /// The operation asked for (a right name, e.g. `flights:read`).
    pub operation: &'a str,
    /// Now.
    pub now: SystemTime,
}

/// What a resource server learns from an authorized token (for its decision and its logs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// The token's trusted content: subject, every actor with who delegated and when, rights.
    pub chain: Chain,
    /// The authorized operation.
    pub operation: String,
}

/// A delegation token verifier: the published root keys, the revocation list, run limits and
/// the resource server's own policy. Cheap to share; keep one and replace keys and revocations
/// as they change.
///
/// Everything that does not depend on the request is prepared once: the chain queries and the
/// `chain_actor` rule (per key set), and the authorizer's rules, checks and policy (per policy and
/// limits); a request only adds its `time`, `operation` and `presenter` facts. With
/// [`Verifier::with_signature_cache`], a token seen before skips its signature checks and the
/// reading of its chain (see there).
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: DelegationKeys,
    /// Parsed once per key set.
    queries: ChainQueries,
    chain_actor: biscuit_auth::builder::Rule,
    revoked: HashSet<Vec<u8>>,
    limits: AuthorizerLimits,
    policy: String,
    max_depth: Option<u32>,
    /// The authorizer without the request facts: limits, `chain_actor`, the rights check and the
    /// policy, parsed once (rebuilt when any of them changes).
    template: AuthorizerBuilder,
    /// Tokens whose signatures verified and whose chain was read with `keys` (shared by clones;
    /// replaced with the keys).
    cache: Option<Arc<SignatureCache>>,
}

/// The mandatory check that the operation is one of the authority block's rights.
const RIGHTS_CHECK: &str = "check if operation($op), right($op)";

impl Verifier {
    /// A verifier trusting `keys` (as root keys and as hop signers), refusing the tokens of
    /// `revocations`; its policy allows any operation the token grants (`allow if true`, after
    /// the mandatory rights check).
    ///
    /// Fails only if Biscuit cannot parse back its own printing of a key (it always can).
    pub fn new(keys: DelegationKeys, revocations: &RevocationList) -> Result<Self, VerifyError> {
        let (queries, chain_actor) = Self::parsed(&keys)?;
        let policy = "allow if true;".to_owned();
        let template = Self::template(&chain_actor, &DEFAULT_LIMITS, &policy)?;
        Ok(Self {
            keys,
            queries,
            chain_actor,
            revoked: revocations.ids(),
            limits: DEFAULT_LIMITS,
            policy,
            max_depth: None,
            template,
            cache: None,
        })
    }

    /// Replaces the run limits.
    pub fn with_limits(mut self, limits: AuthorizerLimits) -> Self {
        self.template = self.template.set_limits(limits.clone());
        self.limits = limits;
        self
    }

    /// Refuses chains deeper than `max` hops, whatever the token allows.
    pub fn with_max_depth(mut self, max: u32) -> Self {
        self.max_depth = Some(max);
        self
    }

    /// The resource server's own policy: Biscuit Datalog with `allow if` / `deny if` policies
    /// (first match wins, no match denies), evaluated after the mandatory check that the
    /// operation is one of the token's rights. It sees `time($t)`, `operation($op)`,
    /// `presenter($id)`, `chain_actor($n, $id)` (the trusted chain), and the authority block's
    /// `subject`, `subject_type`, `subject_issuer`, `right` facts. Parsed now; a syntax error is
    /// returned with its position.
    pub fn with_policy(mut self, policy: &str) -> Result<Self, VerifyError> {
        self.template = Self::template(&self.chain_actor, &self.limits, policy)?;
        self.policy = policy.to_owned();
        Ok(self)
    }

    /// Keeps up to `capacity` verified tokens (0: none, the default), keyed by the SHA-256 of
    /// the token text, so that a token presented again skips the checks of its signatures and
    /// the reading of its chain, which only depend on the token and the keys: the cache is
    /// emptied when the keys change ([`Verifier::set_keys`]) and shared by clones of this
    /// verifier. Everything that depends on the request or on the current state is checked on
    /// every call, exactly as without a cache: revocation, expiry, presenter, depth, the rights,
    /// the checks of every block and the policy. Only tokens that verified are kept; the oldest
    /// entry is dropped when it is full.
    pub fn with_signature_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| Arc::new(SignatureCache::new(capacity)));
        self
    }

    /// Replaces the revocation list.
    pub fn set_revocations(&mut self, revocations: &RevocationList) {
        self.revoked = revocations.ids();
    }

    /// Replaces the keys (and empties the signature cache).
    pub fn set_keys(&mut self, keys: DelegationKeys) -> Result<(), VerifyError> {
        let (queries, chain_actor) = Self::parsed(&keys)?;
        self.template = Self::template(&chain_actor, &self.limits, &self.policy)?;
        (self.queries, self.chain_actor) = (queries, chain_actor);
        self.keys = keys;
        if let Some(cache) = &self.cache {
            self.cache = Some(Arc::new(SignatureCache::new(cache.capacity())));
        }
        Ok(())
    }

    /// The trusted keys.
    pub fn keys(&self) -> &DelegationKeys {
        &self.keys
    }

    /// The chain queries and the `chain_actor` rule for a key set, parsed once.
    fn parsed(
        keys: &DelegationKeys,
    ) -> Result<(ChainQueries, biscuit_auth::builder::Rule), VerifyError> {
        let issuer_keys = keys.public_keys();
        let queries = ChainQueries::new(&issuer_keys)?;
        let rule = biscuit_auth::builder::Rule::try_from(
            format!(
                "chain_actor($n, $a) <- actor($n, $a) {}",
                trusting(&issuer_keys)
            )
            .as_str(),
        )
        .map_err(|e| VerifyError::Malformed(format!("chain_actor rule: {e}")))?;
        Ok((queries, rule))
    }

    /// The authorizer without the request facts.
    fn template(
        chain_actor: &biscuit_auth::builder::Rule,
        limits: &AuthorizerLimits,
        policy: &str,
    ) -> Result<AuthorizerBuilder, VerifyError> {
        AuthorizerBuilder::new()
            .set_limits(limits.clone())
            .rule(chain_actor.clone())
            .and_then(|b| b.check(RIGHTS_CHECK))
            .map_err(|e| VerifyError::Malformed(e.to_string()))?
            .code(policy)
            .map_err(|e| VerifyError::Malformed(format!("resource server policy: {e}")))
    }

    /// Parses `token` and checks every signature against the keys.
    fn parse(&self, token: &str) -> Result<Biscuit, VerifyError> {
        Biscuit::from_base64(token, |id: Option<u32>| {
            self.keys
                .root_key(id)
                .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
        })
        .map_err(|e| match e {
            BiscuitError::Format(biscuit_auth::error::Format::UnknownPublicKey) => {
                VerifyError::UnknownRootKey(root_key_id_of(token))
            }
            BiscuitError::Format(
                f @ (biscuit_auth::error::Format::Signature(_)
                | biscuit_auth::error::Format::InvalidSignatureSize(_)),
            ) => VerifyError::Signature(f.to_string()),
            other => VerifyError::Malformed(other.to_string()),
        })
    }

    /// Verifies `token` (base64url) for `request`: root key by id, every signature, the chain,
    /// revocation, expiry, presenter binding, depth, rights and checks, then the policy.
    pub fn verify(&self, token: &str, request: &Request<'_>) -> Result<Decision, VerifyError> {
        let token = token.trim();
        let cached = self.cache.as_ref().map(|c| (c, c.key(token)));
        let hit = cached.as_ref().and_then(|(c, k)| c.get(k));
        let fresh;
        let biscuit = match &hit {
            Some(v) => &v.biscuit,
            None => {
                fresh = self.parse(token)?;
                &fresh
            }
        };
        let mut authorizer = self
            .template
            .clone()
            .fact(fact("time", &[date(&request.now)]))
            .and_then(|b| b.fact(fact("operation", &[string(request.operation)])))
            .and_then(|b| b.fact(fact("presenter", &[string(request.presenter)])))
            .map_err(|e| VerifyError::Malformed(e.to_string()))?
            .build(biscuit)
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let chain = match &hit {
            Some(v) => v.chain.clone(),
            None => {
                let chain = read_chain_from(&mut authorizer, biscuit, &self.queries)?;
                if let Some((cache, key)) = cached {
                    cache.insert(
                        key,
                        Verified {
                            biscuit: biscuit.clone(),
                            chain: chain.clone(),
                        },
                    );
                }
                chain
            }
        };
        self.decide(chain, &mut authorizer, biscuit, request)
    }

    /// The checks that depend on the request and the current state, in order.
    fn decide(
        &self,
        chain: Chain,
        authorizer: &mut biscuit_auth::Authorizer,
        biscuit: &Biscuit,
        request: &Request<'_>,
    ) -> Result<Decision, VerifyError> {
        let now = unix(request.now);
        let revoked = biscuit
            .revocation_identifiers()
            .into_iter()
            .find(|id| self.revoked.contains(id));
        if let Some(id) = revoked {
            return Err(VerifyError::Revoked {
                token_id: chain.token_id().to_owned(),
                revocation_id: hex::encode(id),
            });
        }
        if chain.expires_at < now {
            return Err(VerifyError::Expired {
                token_id: chain.token_id().to_owned(),
                expired_at: chain.expires_at,
                now,
            });
        }
        if chain.holder() != request.presenter {
            return Err(VerifyError::NotTheHolder {
                presenter: request.presenter.to_owned(),
                holder: chain.holder().to_owned(),
            });
        }
        let max = self
            .max_depth
            .map_or(chain.max_depth, |m| m.min(chain.max_depth));
        if chain.depth() > max {
            return Err(VerifyError::TooDeep {
                depth: chain.depth(),
                max,
            });
        }
        match authorizer.authorize_with_limits(self.limits.clone()) {
            Ok(_) => Ok(Decision {
                chain,
                operation: request.operation.to_owned(),
            }),
            Err(BiscuitError::FailedLogic(logic)) => Err(VerifyError::Unauthorized(
                describe_failure(&logic, request.operation),
            )),
            Err(BiscuitError::RunLimit(l)) => Err(VerifyError::Limits(l.to_string())),
            Err(other) => Err(VerifyError::Unauthorized(other.to_string())),
        }
    }
}

/// The `root_key_id` a token claims (read without verification, for the error message).
fn root_key_id_of(token: &str) -> Option<u32> {
    crate::token::parse_unverified(token)
        .ok()
        .and_then(|t| t.root_key_id())
}

fn describe_failure(logic: &Logic, operation: &str) -> String {
    let checks = |checks: &[FailedCheck]| -> String {
        checks
            .iter()
            .map(|c| match c {
                FailedCheck::Block(b) if b.block_id == 0 => {
                    format!("the token's own check `{}` failed", b.rule)
                }
                FailedCheck::Block(b) => {
                    format!("check `{}` of block {} failed", b.rule, b.block_id)
                }
                FailedCheck::Authorizer(a) if a.rule.contains("right($op)") => {
                    format!("operation {operation:?} is not one of the token's rights")
                }
                FailedCheck::Authorizer(a) => format!("check `{}` failed", a.rule),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match logic {
        Logic::Unauthorized { checks: c, .. } if !c.is_empty() => checks(c),
        Logic::Unauthorized {
            policy: MatchedPolicy::Deny(i),
            ..
        } => format!("the resource server's policy {i} denies it"),
        Logic::NoMatchingPolicy { checks: c } if !c.is_empty() => checks(c),
        Logic::NoMatchingPolicy { .. } => "no policy of the resource server allows it".into(),
        other => other.to_string(),
    }
}
