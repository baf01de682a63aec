//! OAuth 2.0 Token Exchange (RFC 8693) at `POST /token` on the issuer's HTTPS bundle endpoint.
//!
//! A request (`application/x-www-form-urlencoded`) carries:
//!
//! | parameter | value |
//! | --- | --- |
//! | `grant_type` | `urn:ietf:params:oauth:grant-type:token-exchange` |
//! | `subject_token` / `subject_token_type` | an OIDC ID token (`urn:ietf:params:oauth:token-type:id_token`), a JWT-SVID (`urn:ietf:params:oauth:token-type:jwt`) or a delegation token (`urn:signet:params:oauth:token-type:biscuit`) |
//! | `actor_token` / `actor_token_type` | the actor's JWT-SVID (`urn:ietf:params:oauth:token-type:jwt`), audience [`token_audience`] (the issuer's SPIFFE ID); required |
//! | `requested_token_type` | `urn:signet:params:oauth:token-type:biscuit` (default) or `urn:ietf:params:oauth:token-type:jwt` |
//! | `scope` | the rights asked for, space-separated (optional: all the policy grants) |
//! | `audience` | biscuit out of a biscuit: the next actor's SPIFFE ID (a hop, required); JWT out: its `aud` (required) |
//!
//! - An ID token or a JWT-SVID as subject **mints** a delegation token for that subject whose
//!   first actor is the actor token's SPIFFE ID, as the policy allows.
//! - A delegation token as subject must be **held by the actor** (its last actor); with
//!   `requested_token_type` biscuit the issuer appends a **hop** to `audience`.
//! - With `requested_token_type` jwt the result is an RFC 9068 access token (`typ: at+jwt`,
//!   signed with the JWT-SVID keys, so the OIDC discovery JWKS verifies it) for `audience`:
//!   `sub` is the subject, `act` nests the actors with the current one outermost (RFC 8693
//!   §4.1), `scope` the rights, `client_id` the actor, `jti` a token id the audit log knows.
//!   Its lifetime is at most the JWT-SVID default TTL and never past the chain's expiry.
//!
//! Every outcome is a `delegation.exchange` (or `delegation.denied`) audit event. Refusals are
//! OAuth error responses (RFC 6749 §5.2): `invalid_request`, `unsupported_grant_type`,
//! `invalid_grant`, `invalid_scope`, `invalid_target`, `server_error`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use signet_spiffe::SpiffeId;

use super::{DelegateInput, DelegationError, Issued, MintInput, SubjectProof};
use crate::audit::trace::KIND_EXCHANGE;
use crate::state::Issuer;

/// The token exchange path.
pub const TOKEN_PATH: &str = "/token";
/// `grant_type` of RFC 8693.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// An OIDC ID token.
pub const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// A JWT (JWT-SVID in, access token out).
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// A Signet delegation token (Biscuit).
pub const TYPE_BISCUIT: &str = "urn:signet:params:oauth:token-type:biscuit";
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The audience actor and subject JWT-SVIDs must carry: the issuer's SPIFFE ID.
pub fn token_audience(issuer: &Issuer) -> String {
    issuer.issuer_id.to_string()
}

/// An OAuth error (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status (400, or 500 for `server_error`).
    pub status: StatusCode,
    /// The `error` code.
    pub error: &'static str,
    /// The `error_description`.
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: if error == "server_error" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            },
            error,
            description: description.into(),
        }
    }

    fn request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
}

impl From<DelegationError> for OAuthError {
    fn from(e: DelegationError) -> Self {
        let code = match &e {
            DelegationError::InvalidRequest(_) => "invalid_request",
            DelegationError::Widening(_) => "invalid_scope",
            DelegationError::Internal(_) => "server_error",
            _ => "invalid_grant",
        };
        Self::new(code, e.to_string())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

/// The form parameters, each at most once.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.split(';').next().is_some_and(|m| {
        m.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return Err(OAuthError::request(
            "the request body must be application/x-www-form-urlencoded",
        ));
    }
    if body.len() > MAX_BODY {
        return Err(OAuthError::request(format!(
            "the request body is larger than {MAX_BODY} bytes"
        )));
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::request(format!(
                "parameter {k:?} appears more than once"
            )));
        }
    }
    Ok(out)
}

fn required<'a>(form: &'a HashMap<String, String>, key: &str) -> Result<&'a str, OAuthError> {
    form.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::request(format!("{key} is required")))
}

/// Verifies a JWT-SVID of the own trust domain for the token endpoint's audience.
fn verify_jwt_svid(issuer: &Issuer, token: &str, what: &str) -> Result<SpiffeId, OAuthError> {
    let bundle = issuer.own_bundle();
    let audience = token_audience(issuer);
    signet_spiffe::jwt::validate_jwt_svid(
        token,
        &audience,
        |td| (td == &issuer.trust_domain).then_some(&bundle),
        SystemTime::now(),
        Duration::from_secs(5),
    )
    .map(|v| v.spiffe_id)
    .map_err(|e| {
        OAuthError::new(
            "invalid_grant",
            format!("{what}: not a valid JWT-SVID for audience {audience}: {e}"),
        )
    })
}

fn scope(form: &HashMap<String, String>) -> BTreeSet<String> {
    form.get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Handles one exchange request: the token response, or an OAuth error response.
pub async fn exchange(issuer: &Arc<Issuer>, headers: &HeaderMap, body: &[u8]) -> Response {
    match exchange_inner(issuer, headers, body).await {
        Ok(v) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            v.to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = e.error, reason = %e.description, "token exchange refused");
            e.into_response()
        }
    }
}

async fn exchange_inner(
    issuer: &Arc<Issuer>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let form = parse_form(headers, body)?;
    let grant = required(&form, "grant_type")?;
    if grant != GRANT_TYPE {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type must be {GRANT_TYPE}"),
        ));
    }
    let Some(d) = issuer.delegation.as_ref() else {
        return Err(OAuthError::new(
            "invalid_request",
            "token exchange needs delegation, which is not configured on this issuer",
        ));
    };
    let subject_token = required(&form, "subject_token")?;
    let subject_type = required(&form, "subject_token_type")?;
    let actor_token = form.get("actor_token").map(String::as_str).unwrap_or("");
    if actor_token.is_empty() {
        return Err(OAuthError::request(
            "actor_token is required: the actor's JWT-SVID (audience: the issuer's SPIFFE ID)",
        ));
    }
    let actor_type = required(&form, "actor_token_type")?;
    if actor_type != TYPE_JWT {
        return Err(OAuthError::request(format!(
            "actor_token_type must be {TYPE_JWT} (a JWT-SVID)"
        )));
    }
    let requested = form
        .get("requested_token_type")
        .map_or(TYPE_BISCUIT, String::as_str);
    if requested != TYPE_BISCUIT && requested != TYPE_JWT {
        return Err(OAuthError::request(format!(
            "requested_token_type must be {TYPE_BISCUIT} or {TYPE_JWT}"
        )));
    }
    if form.contains_key("resource") {
        return Err(OAuthError::new(
            "invalid_target",
            "resource is not supported: name the target with audience",
        ));
    }
    let audience = form.get("audience").map(String::as_str).unwrap_or("");
    let rights = scope(&form);
    for r in &rights {
        signet_delegation::schema::check_right(r)
            .map_err(|e| OAuthError::new("invalid_scope", e))?;
    }
    let actor = verify_jwt_svid(issuer, actor_token, "actor_token")?;
    let requested_by = format!("token-exchange:{actor}");

    // 1. A delegation token for the right actor.
    let (issued, produced) = match subject_type {
        TYPE_ID_TOKEN | TYPE_JWT => {
            let workload;
            let subject = if subject_type == TYPE_ID_TOKEN {
                SubjectProof::IdToken(subject_token)
            } else {
                workload = verify_jwt_svid(issuer, subject_token, "subject_token")?;
                SubjectProof::Workload(&workload)
            };
            let issued = d
                .mint(MintInput {
                    subject,
                    actor: &actor,
                    requested_by: &requested_by,
                    rights: rights.clone(),
                    ttl: None,
                    max_depth: None,
                    audit_kind: KIND_EXCHANGE,
                })
                .await?;
            (issued, true)
        }
        TYPE_BISCUIT if requested == TYPE_BISCUIT => {
            if audience.is_empty() {
                return Err(OAuthError::new(
                    "invalid_target",
                    "audience is required: the SPIFFE ID of the next actor",
                ));
            }
            let next = SpiffeId::parse(audience).map_err(|e| {
                OAuthError::new("invalid_target", format!("audience {audience:?}: {e}"))
            })?;
            let issued = d
                .delegate(DelegateInput {
                    token: subject_token,
                    holder: &actor,
                    requested_by: &requested_by,
                    next_actor: &next,
                    rights: rights.clone(),
                    ttl: None,
                    audit_kind: KIND_EXCHANGE,
                })
                .await?;
            (issued, true)
        }
        TYPE_BISCUIT => {
            let chain = d
                .verify_held(subject_token, &actor, SystemTime::now())
                .map_err(OAuthError::from)?;
            (
                Issued {
                    token: zeroize::Zeroizing::new(subject_token.to_owned()),
                    chain,
                },
                false,
            )
        }
        other => {
            return Err(OAuthError::request(format!(
                "subject_token_type {other:?} is not supported ({TYPE_ID_TOKEN}, {TYPE_JWT} or {TYPE_BISCUIT})"
            )));
        }
    };

    if requested == TYPE_BISCUIT {
        let c = &issued.chain;
        return Ok(json!({
            "access_token": issued.token.as_str(),
            "issued_token_type": TYPE_BISCUIT,
            "token_type": "N_A",
            "expires_in": c.expires_at.saturating_sub(super::unix(SystemTime::now())),
            "scope": c.rights.iter().cloned().collect::<Vec<_>>().join(" "),
        }));
    }
    // 2. A JWT access token carrying the chain.
    jwt_out(
        issuer,
        &issued,
        &actor,
        audience,
        &rights,
        produced,
        &requested_by,
    )
    .await
}

/// `act` of RFC 8693 §4.1 for `actors` (first to current): the current actor outermost, each
/// earlier one nested inside.
pub fn act_claim(actors: &[&str]) -> Option<Value> {
    let mut act: Option<Value> = None;
    for a in actors {
        let mut o = serde_json::Map::new();
        o.insert("sub".into(), Value::String((*a).to_owned()));
        if let Some(inner) = act.take() {
            o.insert("act".into(), inner);
        }
        act = Some(Value::Object(o));
    }
    act
}

#[allow(clippy::too_many_arguments)]
async fn jwt_out(
    issuer: &Arc<Issuer>,
    issued: &Issued,
    actor: &SpiffeId,
    audience: &str,
    rights: &BTreeSet<String>,
    produced: bool,
    requested_by: &str,
) -> Result<Value, OAuthError> {
    if audience.is_empty() {
        return Err(OAuthError::new(
            "invalid_target",
            "audience is required for a JWT: the resource server it is for",
        ));
    }
    let chain = &issued.chain;
    let now = SystemTime::now();
    let now_s = super::unix(now);
    // Rights: the chain's, narrowed by scope (a right it does not carry is widening).
    let scope: BTreeSet<String> = if rights.is_empty() {
        chain.rights.clone()
    } else {
        if let Some(r) = rights.difference(&chain.rights).next() {
            return Err(OAuthError::new(
                "invalid_scope",
                format!("refused, a delegation can only narrow: the token does not carry {r:?}"),
            ));
        }
        rights.clone()
    };
    let ttl = issuer.defaults.jwt_svid_ttl.as_secs().max(1);
    let exp = (now_s + ttl).min(chain.expires_at);
    if exp <= now_s {
        return Err(OAuthError::new(
            "invalid_grant",
            "the delegation token has expired",
        ));
    }
    let token_id = if produced {
        chain.token_id().to_owned()
    } else {
        signet_delegation::schema::new_token_id()
    };
    let actors = chain.actors();
    let mut claims = json!({
        "iss": issuer.jwt_issuer.clone().unwrap_or_else(|| issuer.issuer_id.to_string()),
        "sub": chain.subject.id,
        "aud": audience,
        "exp": exp,
        "iat": now_s,
        "jti": token_id,
        "client_id": actor.to_string(),
        "scope": scope.iter().cloned().collect::<Vec<_>>().join(" "),
        "subject_type": chain.subject.kind.as_str(),
        "delegation_token_id": chain.token_id(),
    });
    if let (Some(act), Some(o)) = (act_claim(&actors), claims.as_object_mut()) {
        o.insert("act".into(), act);
    }
    let (jwt, _kid) = issuer
        .jwt
        .sign_access_token(&claims, now)
        .map_err(|e| OAuthError::new("server_error", format!("cannot sign: {e}")))?;
    if !produced {
        // A new token of the chain: audited like every other.
        crate::audit::record(
            issuer.store.as_ref(),
            KIND_EXCHANGE,
            requested_by,
            &chain.subject.id,
            "ok",
            json!({
                "token_id": token_id,
                "parent_token_id": chain.token_id(),
                "token_type": "jwt",
                "audience": audience,
                "chain": actors,
                "authorized_by": actor.to_string(),
                "rights": scope,
                "revocation_ids": chain.revocation_ids,
                "expires_at": exp,
                "root_key_id": chain.root_key_id,
            }),
        )
        .await;
    }
    Ok(json!({
        "access_token": jwt,
        "issued_token_type": TYPE_JWT,
        "token_type": "Bearer",
        "expires_in": exp - now_s,
        "scope": scope.into_iter().collect::<Vec<_>>().join(" "),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn act_nests_the_current_actor_outermost() {
        let act = act_claim(&["spiffe://td/planner", "spiffe://td/search"]).unwrap();
        assert_eq!(
            act,
            json!({"sub": "spiffe://td/search", "act": {"sub": "spiffe://td/planner"}})
        );
        assert!(act_claim(&[]).is_none());
    }

    #[test]
    fn the_form_must_be_urlencoded_and_parameters_unique() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_form(&h, b"a=1").unwrap_err().error, "invalid_request");
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(parse_form(&h, b"a=1&b=x%20y").unwrap()["b"], "x y");
        let e = parse_form(&h, b"a=1&a=2").unwrap_err();
        assert!(e.description.contains("more than once"), "{e:?}");
    }
}
