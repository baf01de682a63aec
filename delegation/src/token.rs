//! Minting, hops, offline attenuation and reading the chain of a delegation token (layout in
//! [`crate::schema`]).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::{self, Fact, Rule, Term, date, int, set, string};
use biscuit_auth::{Authorizer, AuthorizerLimits, Biscuit, BlockBuilder, KeyPair, PublicKey};
use signet_spiffe::SpiffeId;

use crate::schema::{
    MAX_RIGHTS, MAX_SUBJECT_LEN, SCHEMA_VERSION, Subject, SubjectKind, check_right,
};

/// Why a token could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A request field is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Biscuit refused to build, sign, parse or evaluate.
    #[error("biscuit: {0}")]
    Biscuit(String),
    /// The token is not a Signet delegation token, or its trusted facts are inconsistent.
    #[error("not a valid Signet delegation token: {0}")]
    Malformed(String),
}

fn biscuit_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Biscuit(e.to_string())
}

/// What the issuer puts in a new token's authority block.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// The token id (see [`crate::schema::new_token_id`]).
    pub token_id: String,
    /// Who the work is for.
    pub subject: Subject,
    /// The first actor.
    pub actor: SpiffeId,
    /// The granted rights (at least one).
    pub rights: BTreeSet<String>,
    /// When the token was issued.
    pub issued_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// How many hops may follow the first actor.
    pub max_depth: u32,
}

/// What the issuer puts in a hop block.
#[derive(Debug, Clone)]
pub struct HopRequest {
    /// The new token's id.
    pub token_id: String,
    /// The next actor.
    pub next_actor: SpiffeId,
    /// The rights the next actor gets (a subset of the current ones; the caller checks).
    pub rights: BTreeSet<String>,
    /// When the hop happens.
    pub at: SystemTime,
    /// When the new token expires (not after the current expiry; the caller checks).
    pub expires_at: SystemTime,
}

/// An offline attenuation: each part, when given, narrows the token.
#[derive(Debug, Clone, Default)]
pub struct Attenuation {
    /// Only these operations remain usable.
    pub rights: Option<BTreeSet<String>>,
    /// The token is unusable after this time.
    pub expires_at: Option<SystemTime>,
}

/// One actor of a chain, as the trusted blocks say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    /// 0 for the first actor, then 1, 2, ...
    pub index: u32,
    /// The actor's SPIFFE ID.
    pub actor: String,
    /// Who delegated to it (`None` for the first actor, to whom the issuer minted the token).
    pub delegated_by: Option<String>,
    /// The id of the token that made it an actor.
    pub token_id: String,
    /// The token that one was derived from (`None` for the minted token).
    pub parent_token_id: Option<String>,
    /// The rights given to it.
    pub rights: BTreeSet<String>,
    /// When it was made an actor (Unix seconds).
    pub at: u64,
    /// The expiry set at that step (Unix seconds).
    pub expires_at: u64,
}

/// The trusted content of a delegation token: subject, chain, rights, limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Chain {
    /// Who the work is for.
    pub subject: Subject,
    /// The actors, first to last (the last one is the holder).
    pub hops: Vec<Hop>,
    /// The rights left after every hop (each hop can only narrow).
    pub rights: BTreeSet<String>,
    /// The earliest expiry along the chain (Unix seconds).
    pub expires_at: u64,
    /// Hops allowed after the first actor.
    pub max_depth: u32,
    /// The root key that signed the authority block.
    pub root_key_id: Option<u32>,
    /// Revocation ids of every block, hex, authority first (revoking one kills every token that
    /// contains that block).
    pub revocation_ids: Vec<String>,
}

impl Chain {
    /// The current holder: the last actor.
    pub fn holder(&self) -> &str {
        self.hops.last().map_or("", |h| h.actor.as_str())
    }

    /// The id of this token (the last hop's, or the minted one's).
    pub fn token_id(&self) -> &str {
        self.hops.last().map_or("", |h| h.token_id.as_str())
    }

    /// The number of hops after the first actor.
    pub fn depth(&self) -> u32 {
        u32::try_from(self.hops.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// The actors' SPIFFE IDs, first to last.
    pub fn actors(&self) -> Vec<&str> {
        self.hops.iter().map(|h| h.actor.as_str()).collect()
    }
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rights_term(rights: &BTreeSet<String>) -> Term {
    set(rights.iter().map(|r| string(r)).collect())
}

fn check_rights(rights: &BTreeSet<String>) -> Result<(), TokenError> {
    if rights.is_empty() {
        return Err(TokenError::Invalid("at least one right is required".into()));
    }
    if rights.len() > MAX_RIGHTS {
        return Err(TokenError::Invalid(format!(
            "{} rights; at most {MAX_RIGHTS}",
            rights.len()
        )));
    }
    rights
        .iter()
        .try_for_each(|r| check_right(r))
        .map_err(TokenError::Invalid)
}

/// Whole seconds: Biscuit dates have no fraction, so a token must not claim more than it gives.
fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix(t))
}

fn expiry_check(expires_at: SystemTime) -> Result<builder::Check, TokenError> {
    builder::Check::try_from(
        format!("check if time($t), $t <= {}", date_literal(expires_at)).as_str(),
    )
    .map_err(biscuit_err)
}

fn rights_check(rights: &BTreeSet<String>) -> Result<builder::Check, TokenError> {
    let list: Vec<String> = rights
        .iter()
        .map(|r| serde_json::Value::String(r.clone()).to_string())
        .collect();
    builder::Check::try_from(
        format!(
            "check if operation($op), [{}].contains($op)",
            list.join(", ")
        )
        .as_str(),
    )
    .map_err(biscuit_err)
}

/// An RFC 3339 date literal as Biscuit Datalog writes it.
fn date_literal(t: SystemTime) -> String {
    match date(&whole_seconds(t)) {
        Term::Date(secs) => {
            let days = secs / 86_400;
            let rem = secs % 86_400;
            let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        }
        _ => "1970-01-01T00:00:00Z".to_owned(),
    }
}

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Mints a token signed by `root` (published as `root_key_id`).
pub fn mint(root: &KeyPair, root_key_id: u32, req: &MintRequest) -> Result<Biscuit, TokenError> {
    check_rights(&req.rights)?;
    if req.token_id.is_empty() {
        return Err(TokenError::Invalid("the token id is empty".into()));
    }
    let s = &req.subject;
    if s.id.is_empty() || s.id.len() > MAX_SUBJECT_LEN || s.name.len() > MAX_SUBJECT_LEN {
        return Err(TokenError::Invalid(
            "the subject id must be 1 to 2048 bytes (and its name at most 2048)".into(),
        ));
    }
    let issued = whole_seconds(req.issued_at);
    let expires = whole_seconds(req.expires_at);
    if expires <= issued {
        return Err(TokenError::Invalid(
            "the token must expire after it is issued".into(),
        ));
    }
    let mut b = Biscuit::builder()
        .root_key_id(root_key_id)
        .fact(fact("signet_delegation", &[int(SCHEMA_VERSION)]))
        .and_then(|b| b.fact(fact("token_id", &[string(&req.token_id)])))
        .and_then(|b| b.fact(fact("subject", &[string(&s.id)])))
        .and_then(|b| b.fact(fact("subject_type", &[string(s.kind.as_str())])))
        .and_then(|b| b.fact(fact("subject_issuer", &[string(&s.issuer)])))
        .and_then(|b| b.fact(fact("actor", &[int(0), string(&req.actor.to_string())])))
        .and_then(|b| b.fact(fact("max_depth", &[int(i64::from(req.max_depth))])))
        .and_then(|b| b.fact(fact("issued_at", &[date(&issued)])))
        .and_then(|b| b.fact(fact("expires_at", &[date(&expires)])))
        .map_err(biscuit_err)?;
    if !s.name.is_empty() {
        b = b
            .fact(fact("subject_name", &[string(&s.name)]))
            .map_err(biscuit_err)?;
    }
    for r in &req.rights {
        b = b.fact(fact("right", &[string(r)])).map_err(biscuit_err)?;
    }
    b = b.check(expiry_check(expires)?).map_err(biscuit_err)?;
    b.build(root).map_err(biscuit_err)
}

fn fact(name: &str, terms: &[Term]) -> Fact {
    builder::fact(name, terms)
}

/// Appends hop `index` (one more than the current depth) to `token`: a third-party block signed
/// by `signer`, naming the next actor and the narrowed rights and expiry.
///
/// The caller (the issuer) has verified the token, checked that the requester is its holder and
/// that the policy allows the hop, and computed `req` within the current rights and expiry.
pub fn append_hop(
    token: &Biscuit,
    current: &Chain,
    signer: &KeyPair,
    req: &HopRequest,
) -> Result<Biscuit, TokenError> {
    check_rights(&req.rights)?;
    let index = i64::from(current.depth()) + 1;
    let at = whole_seconds(req.at);
    let expires = whole_seconds(req.expires_at);
    let rights_only = rights_check(&req.rights)?;
    let until = expiry_check(expires)?;
    let block = BlockBuilder::new()
        .fact(fact(
            "hop",
            &[
                int(index),
                string(&req.token_id),
                string(current.token_id()),
            ],
        ))
        .and_then(|b| {
            b.fact(fact(
                "actor",
                &[int(index), string(&req.next_actor.to_string())],
            ))
        })
        .and_then(|b| {
            b.fact(fact(
                "delegated_by",
                &[int(index), string(current.holder())],
            ))
        })
        .and_then(|b| b.fact(fact("hop_rights", &[int(index), rights_term(&req.rights)])))
        .and_then(|b| b.fact(fact("hop_time", &[int(index), date(&at)])))
        .and_then(|b| b.fact(fact("hop_expires", &[int(index), date(&expires)])))
        .and_then(|b| b.check(rights_only))
        .and_then(|b| b.check(until))
        .map_err(biscuit_err)?;
    let request = token.third_party_request().map_err(biscuit_err)?;
    let signed = request
        .create_block(&signer.private(), block)
        .map_err(biscuit_err)?;
    token
        .append_third_party(signer.public(), signed)
        .map_err(biscuit_err)
}

/// Appends an offline attenuation block (any holder can; it only adds checks).
pub fn attenuate(token: &Biscuit, attenuation: &Attenuation) -> Result<Biscuit, TokenError> {
    let mut block = BlockBuilder::new();
    if let Some(rights) = &attenuation.rights {
        if rights.is_empty() {
            // No operation at all: a check no request satisfies.
            block = block.check("check if false").map_err(biscuit_err)?;
        } else {
            rights
                .iter()
                .try_for_each(|r| check_right(r))
                .map_err(TokenError::Invalid)?;
            block = block.check(rights_check(rights)?).map_err(biscuit_err)?;
        }
    }
    if let Some(t) = attenuation.expires_at {
        block = block.check(expiry_check(t)?).map_err(biscuit_err)?;
    }
    token.append(block).map_err(biscuit_err)
}

/// Parses a base64url token without verifying its root signature (for display and audit
/// look-ups only: never authorize from it).
pub fn parse_unverified(token: &str) -> Result<biscuit_auth::UnverifiedBiscuit, TokenError> {
    biscuit_auth::UnverifiedBiscuit::from_base64(token.trim()).map_err(biscuit_err)
}

/// Limits for reading the chain (the facts are few; generous against a loaded machine).
pub(crate) const READ_LIMITS: AuthorizerLimits = AuthorizerLimits {
    max_facts: 10_000,
    max_iterations: 1_000,
    max_time: Duration::from_millis(200),
};

/// A `trusting` clause naming the authority block and the issuer keys.
pub(crate) fn trusting(issuer_keys: &[PublicKey]) -> String {
    let mut out = String::from("trusting authority");
    for k in issuer_keys {
        out.push_str(", ");
        out.push_str(&k.print());
    }
    out
}

/// Reads the trusted chain of a verified `token`: facts of the authority block and of blocks
/// signed by one of `issuer_keys` only. Checks that the chain is consistent (actors 0..n without
/// gaps, each hop naming its predecessor and parent token), that the token is a schema
/// [`SCHEMA_VERSION`] token, and computes the remaining rights and the earliest expiry.
pub fn read_chain(token: &Biscuit, issuer_keys: &[PublicKey]) -> Result<Chain, TokenError> {
    let mut authorizer = biscuit_auth::AuthorizerBuilder::new()
        .set_limits(READ_LIMITS)
        .build(token)
        .map_err(biscuit_err)?;
    let queries = ChainQueries::new(issuer_keys)?;
    read_chain_from(&mut authorizer, token, &queries)
}

/// The queries that read a chain, parsed once for a set of issuer keys.
#[derive(Debug, Clone)]
pub(crate) struct ChainQueries {
    authority: Rule,
    names: Rule,
    rights: Rule,
    hops: Rule,
}

impl ChainQueries {
    pub(crate) fn new(issuer_keys: &[PublicKey]) -> Result<Self, TokenError> {
        let rule = |s: &str| Rule::try_from(s).map_err(biscuit_err);
        Ok(Self {
            // Authority facts: the default scope of an authorizer query is the authority block.
            authority: rule(&format!(
                "data($id, $s, $k, $i, $d, $iat, $exp, $a) <- signet_delegation({SCHEMA_VERSION}), \
                 token_id($id), subject($s), subject_type($k), subject_issuer($i), max_depth($d), \
                 issued_at($iat), expires_at($exp), actor(0, $a)"
            ))?,
            names: rule("data($n) <- subject_name($n)")?,
            rights: rule("data($r) <- right($r)")?,
            // Hops: from the third-party blocks signed by an issuer key only. `hop` first: only
            // hop blocks state it, so the join starts from the fewest facts (`actor` is also in
            // the authority block); the order does not change the result.
            hops: rule(&format!(
                "data($n, $a, $id, $p, $by, $r, $t, $e) <- hop($n, $id, $p), delegated_by($n, $by), \
                 hop_time($n, $t), hop_expires($n, $e), hop_rights($n, $r), actor($n, $a) {}",
                trusting(issuer_keys)
            ))?,
        })
    }
}

type HopRow = (
    i64,
    String,
    String,
    String,
    String,
    BTreeSet<String>,
    SystemTime,
    SystemTime,
);

pub(crate) fn read_chain_from(
    a: &mut Authorizer,
    token: &Biscuit,
    q: &ChainQueries,
) -> Result<Chain, TokenError> {
    let bad = |m: String| TokenError::Malformed(m);
    type AuthorityRow = (
        String,
        String,
        String,
        String,
        i64,
        SystemTime,
        SystemTime,
        String,
    );
    let rows: Vec<AuthorityRow> = a
        .query_with_limits(q.authority.clone(), READ_LIMITS)
        .map_err(biscuit_err)?;
    let (token_id, subject_id, kind, issuer, max_depth, issued, expiry, first) =
        match <[AuthorityRow; 1]>::try_from(rows) {
            Ok([row]) => row,
            Err(rows) if rows.is_empty() => {
                return Err(bad(
                    "the authority block lacks the Signet delegation facts (schema 1)".into(),
                ));
            }
            Err(_) => {
                return Err(bad(
                    "the authority block states its token id, subject, depth or expiry twice"
                        .into(),
                ));
            }
        };
    let kind =
        SubjectKind::parse(&kind).ok_or_else(|| bad(format!("unknown subject_type {kind:?}")))?;
    let max_depth = u32::try_from(max_depth).map_err(|_| bad("max_depth out of range".into()))?;
    let names: Vec<(String,)> = a
        .query_with_limits(q.names.clone(), READ_LIMITS)
        .map_err(biscuit_err)?;
    let name = names.into_iter().next().map(|(n,)| n).unwrap_or_default();
    let rights: Vec<(String,)> = a
        .query_with_limits(q.rights.clone(), READ_LIMITS)
        .map_err(biscuit_err)?;
    let mut remaining: BTreeSet<String> = rights.into_iter().map(|(r,)| r).collect();
    let mut hops: Vec<HopRow> = a
        .query_with_limits(q.hops.clone(), READ_LIMITS)
        .map_err(biscuit_err)?;
    hops.sort_by_key(|h| h.0);

    let (issued, expiry) = (unix(issued), unix(expiry));
    let mut chain = vec![Hop {
        index: 0,
        actor: first,
        delegated_by: None,
        token_id,
        parent_token_id: None,
        rights: remaining.clone(),
        at: issued,
        expires_at: expiry,
    }];
    let mut expires_at = expiry;
    for (pos, (n, actor, id, parent, delegated, rights, at, exp)) in hops.into_iter().enumerate() {
        let expected = i64::try_from(pos + 1).map_err(|_| bad("too many hops".into()))?;
        if n != expected {
            return Err(bad(format!(
                "hop {expected} is missing or stated twice (found hop {n})"
            )));
        }
        let prev = chain.last().ok_or_else(|| bad("empty chain".into()))?;
        if delegated != prev.actor {
            return Err(bad(format!(
                "hop {n} says it was delegated by {delegated}, but the holder before it is {}",
                prev.actor
            )));
        }
        if parent != prev.token_id {
            return Err(bad(format!(
                "hop {n} names parent token {parent}, but the token before it is {}",
                prev.token_id
            )));
        }
        remaining = remaining.intersection(&rights).cloned().collect();
        expires_at = expires_at.min(unix(exp));
        chain.push(Hop {
            index: u32::try_from(n).map_err(|_| bad("too many hops".into()))?,
            actor,
            delegated_by: Some(delegated),
            token_id: id,
            parent_token_id: Some(parent),
            rights,
            at: unix(at),
            expires_at: unix(exp),
        });
    }
    Ok(Chain {
        subject: Subject {
            id: subject_id,
            kind,
            issuer,
            name,
        },
        hops: chain,
        rights: remaining,
        expires_at,
        max_depth,
        root_key_id: token.root_key_id(),
        revocation_ids: token
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_148_530);
        assert_eq!(date_literal(t), "2026-12-01T18:08:50Z");
        assert_eq!(date_literal(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(date_literal(leap), "2000-02-29T00:00:00Z");
    }
}
