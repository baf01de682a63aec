//! One test per refusal of `verify_id_token`, the JWKS file and URL sources (with a local HTTPS
//! server and a test CA), and the refresh rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use signet_tests::idp::{JwksServer, TestIdp, TestKey, unix_now};
use signet_tests::pki::TestCa;

use super::*;
use crate::config::{DEFAULT_MAX_TOKEN_AGE, IdentityProviderSettings, JwksSource};

const ISSUER: &str = "https://idp.example.com";
const AUD: &str = "signet";
const HOUR: Duration = Duration::from_secs(3600);

fn settings(issuer: &str, jwks: JwksSource) -> IdentityProviderSettings {
    IdentityProviderSettings {
        issuer: issuer.to_owned(),
        audiences: vec![AUD.to_owned(), "signet-cli".to_owned()],
        jwks,
        subject_claim: "sub".to_owned(),
        max_token_age: DEFAULT_MAX_TOKEN_AGE,
    }
}

fn file_settings(idp: &TestIdp) -> IdentityProviderSettings {
    settings(
        idp.issuer(),
        JwksSource::Path(idp.jwks_path().to_path_buf()),
    )
}

async fn providers_for(idp: &TestIdp) -> IdentityProviders {
    providers_with(idp, |_| {}).await
}

/// The providers of `idp`'s JWKS file with `change` applied to its settings.
async fn providers_with(
    idp: &TestIdp,
    change: impl FnOnce(&mut IdentityProviderSettings),
) -> IdentityProviders {
    let mut s = file_settings(idp);
    change(&mut s);
    IdentityProviders::new(&[s]).await.unwrap()
}

/// A test IdP and its providers, from the JWKS file.
async fn setup() -> (TestIdp, IdentityProviders) {
    let idp = TestIdp::new(ISSUER).unwrap();
    let providers = providers_for(&idp).await;
    (idp, providers)
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The claims of a valid token with `changes` applied (a `null` member removes a claim).
fn claims_with(idp: &TestIdp, changes: Value) -> Value {
    let mut claims = idp.claims("alice", AUD, HOUR);
    for (k, v) in changes.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(&k);
        } else {
            claims[k] = v;
        }
    }
    claims
}

/// A token signed with the RSA key, with `changes` to the claims of a valid one.
fn token_with(idp: &TestIdp, changes: Value) -> String {
    idp.sign(TestKey::Rsa, Value::Null, &claims_with(idp, changes))
}

async fn refusal(providers: &IdentityProviders, token: &str) -> IdTokenError {
    providers.verify_id_token(token, now()).await.unwrap_err()
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn a_valid_rs256_token_proves_its_subject() {
    let (idp, providers) = setup().await;
    let token = idp.id_token(
        "alice",
        AUD,
        HOUR,
        json!({"email": "alice@example.com", "email_verified": true, "name": "Alice"}),
    );
    let subject = providers.verify_id_token(&token, now()).await.unwrap();
    assert_eq!(subject.issuer, ISSUER);
    assert_eq!(subject.subject, "alice");
    assert_eq!(subject.sub, "alice");
    assert_eq!(subject.email.as_deref(), Some("alice@example.com"));
    assert_eq!(subject.name.as_deref(), Some("Alice"));
    assert_eq!(subject.id(), "https://idp.example.com#alice");
    assert_eq!(subject.claims["aud"], AUD);
    let exp = subject.claims["exp"].as_u64().unwrap();
    assert_eq!(
        subject.expires_at,
        UNIX_EPOCH + Duration::from_secs(exp),
        "expires_at is the token's exp"
    );
    assert_eq!(providers.issuers().collect::<Vec<_>>(), [ISSUER]);
    assert_eq!(providers.len(), 1);
    assert!(!providers.is_empty());
}

#[tokio::test]
async fn a_valid_es256_token_verifies_with_the_p256_key() {
    let (idp, providers) = setup().await;
    let token = idp.sign(TestKey::Ec, Value::Null, &idp.claims("bob", AUD, HOUR));
    let subject = providers.verify_id_token(&token, now()).await.unwrap();
    assert_eq!(subject.id(), "https://idp.example.com#bob");
    // Either configured audience is accepted.
    let token = idp.id_token("bob", "signet-cli", HOUR, Value::Null);
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
}

#[tokio::test]
async fn a_token_that_is_not_a_compact_jws_is_refused() {
    let (idp, providers) = setup().await;
    let valid = idp.id_token("alice", AUD, HOUR, Value::Null);
    let mut parts = valid.split('.');
    let (h, p) = (parts.next().unwrap(), parts.next().unwrap());
    for bad in [
        String::new(),
        "not-a-token".to_owned(),
        format!("{h}.{p}"),
        format!("{valid}.extra"),
        format!("{h}.{p}.not*base64"),
        format!("{}.{p}.AAAA", b64("[1]")),
        format!(
            "{}.{p}.AAAA",
            b64(r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#)
        ),
        "a".repeat(signet_spiffe::jwt::MAX_TOKEN_LEN + 1),
    ] {
        assert!(
            matches!(refusal(&providers, &bad).await, IdTokenError::Malformed(_)),
            "{bad:.40}"
        );
    }
}

#[tokio::test]
async fn none_and_hs256_are_refused_before_any_key_lookup() {
    let (idp, providers) = setup().await;
    // An unknown issuer and no kid: the algorithm is refused first.
    let claims = b64(&json!({"iss": "https://nobody.example", "sub": "x"}).to_string());
    let none = format!("{}.{claims}.", b64(r#"{"alg":"none"}"#));
    assert_eq!(
        refusal(&providers, &none).await,
        IdTokenError::DisallowedAlgorithm("none".to_owned())
    );
    // The classic confusion: HS256 keyed with the provider's public RSA key.
    let header = b64(&json!({"alg": "HS256", "kid": idp.kid(TestKey::Rsa)}).to_string());
    let claims = b64(&idp.claims("alice", AUD, HOUR).to_string());
    let input = format!("{header}.{claims}");
    let mac_key = hmac::Key::new(
        hmac::HMAC_SHA256,
        idp.jwk(TestKey::Rsa).to_string().as_bytes(),
    );
    let tag = hmac::sign(&mac_key, input.as_bytes());
    let hs256 = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(
        refusal(&providers, &hs256).await,
        IdTokenError::DisallowedAlgorithm("HS256".to_owned())
    );
    let eddsa = idp.sign(
        TestKey::Ec,
        json!({"alg": "EdDSA"}),
        &idp.claims("a", AUD, HOUR),
    );
    assert_eq!(
        refusal(&providers, &eddsa).await,
        IdTokenError::DisallowedAlgorithm("EdDSA".to_owned())
    );
}

#[tokio::test]
async fn an_access_token_type_is_refused() {
    let (idp, providers) = setup().await;
    let token = idp.sign(
        TestKey::Rsa,
        json!({"typ": "at+jwt"}),
        &idp.claims("alice", AUD, HOUR),
    );
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::UnsupportedType("at+jwt".to_owned())
    );
    // `JWT` in any case and no `typ` at all are fine.
    for typ in [json!({"typ": "jwt"}), json!({"typ": null})] {
        let token = idp.sign(TestKey::Rsa, typ, &idp.claims("alice", AUD, HOUR));
        assert!(providers.verify_id_token(&token, now()).await.is_ok());
    }
}

#[tokio::test]
async fn claims_that_are_not_an_object_are_refused() {
    let (idp, providers) = setup().await;
    let token = idp.sign(TestKey::Rsa, Value::Null, &json!(["alice"]));
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::ClaimsNotJson("not an object".to_owned())
    );
}

#[tokio::test]
async fn an_issuer_is_required() {
    let (idp, providers) = setup().await;
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"iss": null}))).await,
        IdTokenError::MissingClaim("iss")
    );
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"iss": 7}))).await,
        IdTokenError::InvalidClaim {
            name: "iss",
            reason: "must be a string"
        }
    );
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_naming_it() {
    let (idp, providers) = setup().await;
    let token = token_with(&idp, json!({"iss": "https://evil.example"}));
    let e = refusal(&providers, &token).await;
    assert_eq!(
        e,
        IdTokenError::UnknownProvider("https://evil.example".to_owned())
    );
    assert_eq!(
        e.to_string(),
        "ID token issuer \"https://evil.example\" is not a configured identity provider"
    );
    // The issuer is compared exactly: a trailing slash is another issuer.
    let token = token_with(&idp, json!({"iss": "https://idp.example.com/"}));
    assert!(matches!(
        refusal(&providers, &token).await,
        IdTokenError::UnknownProvider(_)
    ));
    // A huge value is cut in the error.
    let long = format!("https://{}", "a".repeat(5000));
    let IdTokenError::UnknownProvider(shown) =
        refusal(&providers, &token_with(&idp, json!({ "iss": long }))).await
    else {
        panic!("expected UnknownProvider");
    };
    assert_eq!(shown.chars().count(), MAX_SHOWN_LEN + 3);
    // No provider at all.
    let empty = IdentityProviders::empty();
    assert!(empty.is_empty());
    let token = idp.id_token("alice", AUD, HOUR, Value::Null);
    assert_eq!(
        refusal(&empty, &token).await,
        IdTokenError::UnknownProvider(ISSUER.to_owned())
    );
}

#[tokio::test]
async fn a_key_id_is_required() {
    let (idp, providers) = setup().await;
    for header in [json!({"kid": null}), json!({"kid": ""})] {
        let token = idp.sign(TestKey::Rsa, header, &idp.claims("alice", AUD, HOUR));
        assert_eq!(
            refusal(&providers, &token).await,
            IdTokenError::MissingKeyId
        );
    }
}

#[tokio::test]
async fn an_unknown_key_id_is_refused() {
    let (idp, providers) = setup().await;
    let token = idp.sign(
        TestKey::Rsa,
        json!({"kid": "rotated-away"}),
        &idp.claims("alice", AUD, HOUR),
    );
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::UnknownKeyId {
            issuer: ISSUER.to_owned(),
            kid: "rotated-away".to_owned()
        }
    );
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let (idp, providers) = setup().await;
    // Another key, claiming to be the provider's.
    let impostor = TestIdp::new(ISSUER).unwrap();
    let token = impostor.sign(
        TestKey::Rsa,
        json!({"kid": idp.kid(TestKey::Rsa)}),
        &idp.claims("alice", AUD, HOUR),
    );
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::BadSignature
    );
    // A valid token whose claims were changed.
    let valid = idp.id_token("alice", AUD, HOUR, Value::Null);
    let mut parts: Vec<&str> = valid.split('.').collect();
    let forged = b64(&idp.claims("mallory", AUD, HOUR).to_string());
    parts[1] = &forged;
    assert_eq!(
        refusal(&providers, &parts.join(".")).await,
        IdTokenError::BadSignature
    );
}

#[tokio::test]
async fn a_key_that_does_not_fit_the_algorithm_is_refused() {
    let (idp, providers) = setup().await;
    // ES256 with the kid of the RSA key.
    let token = idp.sign(
        TestKey::Ec,
        json!({"kid": idp.kid(TestKey::Rsa)}),
        &idp.claims("alice", AUD, HOUR),
    );
    let e = refusal(&providers, &token).await;
    assert!(
        matches!(&e, IdTokenError::UnusableKey { kid, reason, .. }
            if kid == idp.kid(TestKey::Rsa) && reason.contains("needs an EC P-256 key")),
        "{e}"
    );
    // PS256 with the RSA key restricted to RS256 by its `alg`.
    let token = idp.sign(
        TestKey::Rsa,
        json!({"alg": "PS256"}),
        &idp.claims("alice", AUD, HOUR),
    );
    let e = refusal(&providers, &token).await;
    assert!(
        matches!(&e, IdTokenError::UnusableKey { reason, .. } if reason.contains("restricted to RS256")),
        "{e}"
    );
}

#[tokio::test]
async fn the_audience_must_be_accepted() {
    let (idp, providers) = setup().await;
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"aud": "other-app"}))).await,
        IdTokenError::AudienceMismatch {
            issuer: ISSUER.to_owned(),
            expected: vec![AUD.to_owned(), "signet-cli".to_owned()],
            actual: vec!["other-app".to_owned()],
        }
    );
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"aud": null}))).await,
        IdTokenError::MissingClaim("aud")
    );
    assert!(matches!(
        refusal(&providers, &token_with(&idp, json!({"aud": [1]}))).await,
        IdTokenError::InvalidClaim { name: "aud", .. }
    ));
    // One accepted value among several is enough.
    let token = token_with(&idp, json!({"aud": ["other-app", AUD]}));
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
}

#[tokio::test]
async fn azp_is_checked_when_there_are_several_audiences() {
    let (idp, providers) = setup().await;
    let token = token_with(&idp, json!({"aud": [AUD, "other-app"], "azp": "other-app"}));
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::AuthorizedPartyMismatch {
            issuer: ISSUER.to_owned(),
            azp: "other-app".to_owned(),
            expected: vec![AUD.to_owned(), "signet-cli".to_owned()],
        }
    );
    let token = token_with(&idp, json!({"aud": [AUD, "other-app"], "azp": 3}));
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::InvalidClaim {
            name: "azp",
            reason: "must be a string"
        }
    );
    for ok in [
        json!({"aud": [AUD, "other-app"], "azp": AUD}),
        json!({"aud": [AUD, "other-app"]}),
        // A single audience: azp is not checked.
        json!({"aud": AUD, "azp": "other-app"}),
    ] {
        let token = token_with(&idp, ok.clone());
        assert!(
            providers.verify_id_token(&token, now()).await.is_ok(),
            "{ok}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (idp, providers) = setup().await;
    let t = unix_now();
    let e = refusal(&providers, &token_with(&idp, json!({"exp": t - 31}))).await;
    assert!(
        matches!(e, IdTokenError::Expired { exp, leeway_secs: 30, .. } if exp == t - 31),
        "{e}"
    );
    // Within the leeway.
    let token = token_with(&idp, json!({"exp": t - 20}));
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"exp": null}))).await,
        IdTokenError::MissingClaim("exp")
    );
    assert!(matches!(
        refusal(&providers, &token_with(&idp, json!({"exp": "tomorrow"}))).await,
        IdTokenError::InvalidClaim { name: "exp", .. }
    ));
    // The same token is refused when checked later.
    let token = idp.id_token("alice", AUD, Duration::from_secs(60), Value::Null);
    let later = now() + Duration::from_secs(120);
    assert!(matches!(
        providers.verify_id_token(&token, later).await,
        Err(IdTokenError::Expired { .. })
    ));
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let (idp, providers) = setup().await;
    let t = unix_now();
    let e = refusal(&providers, &token_with(&idp, json!({"iat": t + 120}))).await;
    assert!(
        matches!(e, IdTokenError::IssuedInFuture { iat, .. } if iat == t + 120),
        "{e}"
    );
    let token = token_with(&idp, json!({"iat": t + 10}));
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"iat": null}))).await,
        IdTokenError::MissingClaim("iat")
    );
}

#[tokio::test]
async fn a_token_older_than_max_token_age_is_refused() {
    let (idp, providers) = setup().await;
    let t = unix_now();
    let day = 24 * 3600;
    let e = refusal(
        &providers,
        &token_with(&idp, json!({"iat": t - day - 31, "exp": t + 60})),
    )
    .await;
    assert!(
        matches!(
            e,
            IdTokenError::TooOld {
                max_age_secs: 86_400,
                ..
            }
        ),
        "{e}"
    );
    let token = token_with(&idp, json!({"iat": t - day + 60, "exp": t + 60}));
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
    // A shorter max_token_age of the provider.
    let strict = providers_with(&idp, |s| s.max_token_age = Duration::from_secs(600)).await;
    let token = token_with(&idp, json!({"iat": t - 700}));
    assert!(matches!(
        refusal(&strict, &token).await,
        IdTokenError::TooOld {
            max_age_secs: 600,
            ..
        }
    ));
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let (idp, providers) = setup().await;
    let t = unix_now();
    let e = refusal(&providers, &token_with(&idp, json!({"nbf": t + 300}))).await;
    assert!(
        matches!(e, IdTokenError::NotYetValid { nbf, .. } if nbf == t + 300),
        "{e}"
    );
    let token = token_with(&idp, json!({"nbf": t - 5}));
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
    assert!(matches!(
        refusal(&providers, &token_with(&idp, json!({"nbf": "soon"}))).await,
        IdTokenError::InvalidClaim { name: "nbf", .. }
    ));
}

#[tokio::test]
async fn the_subject_claim_must_be_a_non_empty_string() {
    let (idp, providers) = setup().await;
    assert_eq!(
        refusal(&providers, &token_with(&idp, json!({"sub": null}))).await,
        IdTokenError::MissingSubject {
            claim: "sub".to_owned()
        }
    );
    for bad in [json!(""), json!(42), json!(["alice"])] {
        assert_eq!(
            refusal(&providers, &token_with(&idp, json!({ "sub": bad }))).await,
            IdTokenError::InvalidSubject {
                claim: "sub".to_owned()
            }
        );
    }
}

#[tokio::test]
async fn another_subject_claim_names_the_subject() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let providers = providers_with(&idp, |s| s.subject_claim = "preferred_username".into()).await;
    let token = token_with(&idp, json!({"preferred_username": "alice.smith"}));
    let subject = providers.verify_id_token(&token, now()).await.unwrap();
    assert_eq!(subject.subject, "alice.smith");
    assert_eq!(subject.sub, "alice");
    assert_eq!(subject.id(), "https://idp.example.com#alice.smith");
    assert_eq!(
        refusal(&providers, &idp.id_token("alice", AUD, HOUR, Value::Null)).await,
        IdTokenError::MissingSubject {
            claim: "preferred_username".to_owned()
        }
    );
    // `sub` stays required.
    let token = token_with(&idp, json!({"preferred_username": "a", "sub": null}));
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::MissingSubject {
            claim: "sub".to_owned()
        }
    );
}

#[tokio::test]
async fn an_email_subject_must_be_verified() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let providers = providers_with(&idp, |s| s.subject_claim = "email".into()).await;
    for unverified in [
        json!({"email": "alice@example.com"}),
        json!({"email": "alice@example.com", "email_verified": false}),
        json!({"email": "alice@example.com", "email_verified": "yes"}),
    ] {
        assert_eq!(
            refusal(&providers, &token_with(&idp, unverified)).await,
            IdTokenError::EmailNotVerified
        );
    }
    for verified in [json!(true), json!("true")] {
        let token = token_with(
            &idp,
            json!({"email": "alice@example.com", "email_verified": verified}),
        );
        let subject = providers.verify_id_token(&token, now()).await.unwrap();
        assert_eq!(subject.id(), "https://idp.example.com#alice@example.com");
        assert_eq!(subject.email.as_deref(), Some("alice@example.com"));
    }
}

#[tokio::test]
async fn an_unverified_email_is_not_reported() {
    let (idp, providers) = setup().await;
    let token = token_with(&idp, json!({"email": "alice@example.com"}));
    let subject = providers.verify_id_token(&token, now()).await.unwrap();
    assert_eq!(subject.email, None);
    assert_eq!(subject.claims["email"], "alice@example.com");
}

#[tokio::test]
async fn errors_never_repeat_the_token() {
    let (idp, providers) = setup().await;
    let token = token_with(&idp, json!({"aud": "other-app"}));
    let e = refusal(&providers, &token).await;
    for part in token.split('.') {
        assert!(!e.to_string().contains(part), "{e}");
        assert!(!format!("{e:?}").contains(part), "{e:?}");
    }
}

#[tokio::test]
async fn an_unreadable_jwks_file_stops_start_up_naming_the_key() {
    let s = settings(ISSUER, JwksSource::Path("/nonexistent/jwks.json".into()));
    let e = IdentityProviders::new(&[s]).await.unwrap_err();
    assert!(matches!(e, IdpSetupError::Read { .. }), "{e}");
    assert!(
        e.to_string().starts_with(
            "delegation.identity_providers[0].jwks_path /nonexistent/jwks.json: cannot read:"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_invalid_jwks_file_stops_start_up_naming_the_key() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let other = TestIdp::new("https://other.example").unwrap();
    let path = idp.jwks_path().display().to_string();
    let mut private = idp.jwk(TestKey::Ec);
    private["d"] = json!("AAAA");
    for (jwks, why) in [
        (
            json!("garbage"),
            "the JWK Set is not a JSON object".to_owned(),
        ),
        (
            json!({"keys": []}),
            "holds no usable signing key".to_owned(),
        ),
        (
            json!({ "keys": [private] }),
            "key 0: contains the private key parameter `d`".to_owned(),
        ),
    ] {
        idp.write_jwks(&jwks).unwrap();
        // The second provider is the broken one.
        let e = IdentityProviders::new(&[file_settings(&other), file_settings(&idp)])
            .await
            .unwrap_err();
        assert!(matches!(e, IdpSetupError::InvalidJwks { .. }), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "delegation.identity_providers[1].jwks_path {path}: "
            )) && e.to_string().contains(&why),
            "{e}"
        );
    }
    std::fs::write(idp.jwks_path(), "{not json").unwrap();
    let e = IdentityProviders::new(&[file_settings(&idp)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not valid JSON"), "{e}");
}

#[tokio::test]
async fn a_duplicate_issuer_is_refused() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let e = IdentityProviders::new(&[file_settings(&idp), file_settings(&idp)])
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "delegation.identity_providers[1].issuer: \"https://idp.example.com\" is configured twice"
    );
}

#[tokio::test]
async fn several_providers_are_told_apart_by_issuer() {
    let a = TestIdp::new("https://a.example").unwrap();
    let b = TestIdp::new("https://b.example").unwrap();
    let providers = IdentityProviders::new(&[file_settings(&a), file_settings(&b)])
        .await
        .unwrap();
    let token = b.id_token("bob", AUD, HOUR, Value::Null);
    assert_eq!(
        providers.verify_id_token(&token, now()).await.unwrap().id(),
        "https://b.example#bob"
    );
    // B's key does not sign for A, even with A's kid.
    let token = b.sign(
        TestKey::Rsa,
        json!({"kid": a.kid(TestKey::Rsa)}),
        &a.claims("bob", AUD, HOUR),
    );
    assert_eq!(
        refusal(&providers, &token).await,
        IdTokenError::BadSignature
    );
    // A kid of B is unknown to A.
    let token = b.sign(TestKey::Rsa, Value::Null, &a.claims("bob", AUD, HOUR));
    assert!(matches!(
        refusal(&providers, &token).await,
        IdTokenError::UnknownKeyId { issuer, .. } if issuer == "https://a.example"
    ));
}

// --- jwks_url -------------------------------------------------------------------------------

/// A CA, its PEM written to a file, an HTTPS server serving `idp`'s JWKS.
struct Served {
    _dir: tempfile::TempDir,
    ca_path: PathBuf,
    server: JwksServer,
}

fn serve(idp: &TestIdp) -> Served {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let server = JwksServer::start(&ca, idp.jwks().to_string()).unwrap();
    Served {
        _dir: dir,
        ca_path,
        server,
    }
}

fn url_settings(issuer: &str, url: &str, ca_path: Option<&Path>) -> IdentityProviderSettings {
    settings(
        issuer,
        JwksSource::Url {
            url: EndpointUrl::parse(url).unwrap(),
            ca_bundle_path: ca_path.map(Path::to_path_buf),
        },
    )
}

async fn url_providers(idp: &TestIdp, served: &Served, policy: RefreshPolicy) -> IdentityProviders {
    IdentityProviders::with_policy(
        &[url_settings(
            idp.issuer(),
            &served.server.url(),
            Some(&served.ca_path),
        )],
        policy,
    )
    .await
    .unwrap()
}

const EAGER: RefreshPolicy = RefreshPolicy {
    interval: Duration::from_secs(3600),
    min_interval: Duration::ZERO,
};
const THROTTLED: RefreshPolicy = RefreshPolicy {
    interval: Duration::from_secs(3600),
    min_interval: Duration::from_secs(3600),
};

#[test]
fn the_default_refresh_policy_is_ten_minutes_and_thirty_seconds() {
    assert_eq!(
        RefreshPolicy::default(),
        RefreshPolicy {
            interval: Duration::from_secs(600),
            min_interval: Duration::from_secs(30),
        }
    );
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_up() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    let providers = url_providers(&idp, &served, RefreshPolicy::default()).await;
    assert_eq!(served.server.hits(), 1);
    let token = idp.id_token("alice", AUD, HOUR, Value::Null);
    let subject = providers.verify_id_token(&token, now()).await.unwrap();
    assert_eq!(subject.id(), "https://idp.example.com#alice");
    // A known kid needs no fetch.
    assert_eq!(served.server.hits(), 1);
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_jwks_url() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    let providers = url_providers(&idp, &served, EAGER).await;
    // The provider rotates to new keys.
    let rotated = TestIdp::new(ISSUER).unwrap();
    served.server.set_body(rotated.jwks().to_string());
    let token = rotated.id_token("alice", AUD, HOUR, Value::Null);
    let subject = providers.verify_id_token(&token, now()).await.unwrap();
    assert_eq!(subject.subject, "alice");
    assert_eq!(served.server.hits(), 2);
    // The old keys are gone with the old document.
    let old = idp.id_token("alice", AUD, HOUR, Value::Null);
    assert!(matches!(
        refusal(&providers, &old).await,
        IdTokenError::UnknownKeyId { .. }
    ));
    assert_eq!(served.server.hits(), 3);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    let providers = Arc::new(url_providers(&idp, &served, EAGER).await);
    let rotated = TestIdp::new(ISSUER).unwrap();
    served.server.set_body(rotated.jwks().to_string());
    let token = rotated.id_token("alice", AUD, HOUR, Value::Null);
    let calls = (0..8).map(|_| {
        let providers = providers.clone();
        let token = token.clone();
        tokio::spawn(async move { providers.verify_id_token(&token, now()).await })
    });
    for result in futures::future::join_all(calls).await {
        assert!(result.unwrap().is_ok());
    }
    assert_eq!(
        served.server.hits(),
        2,
        "one fetch at start, one on the new kid"
    );
}

#[tokio::test]
async fn unknown_kid_refreshes_are_throttled() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    let providers = url_providers(&idp, &served, THROTTLED).await;
    let rotated = TestIdp::new(ISSUER).unwrap();
    served.server.set_body(rotated.jwks().to_string());
    let token = rotated.id_token("alice", AUD, HOUR, Value::Null);
    // The start-up fetch was less than min_interval ago: no new fetch.
    for _ in 0..3 {
        assert_eq!(
            refusal(&providers, &token).await,
            IdTokenError::UnknownKeyId {
                issuer: ISSUER.to_owned(),
                kid: rotated.kid(TestKey::Rsa).to_owned()
            }
        );
    }
    assert_eq!(served.server.hits(), 1);
    // The scheduled refresh is not throttled.
    providers.refresh().await;
    assert_eq!(served.server.hits(), 2);
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_last_good_jwks() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    let providers = url_providers(&idp, &served, EAGER).await;
    let token = idp.id_token("alice", AUD, HOUR, Value::Null);
    let mut private = idp.jwk(TestKey::Rsa);
    private["d"] = json!("AAAA");
    for garbage in [
        "<html>oops</html>".to_owned(),
        json!({"keys": []}).to_string(),
        json!({ "keys": [private] }).to_string(),
    ] {
        served.server.set_body(garbage);
        let before = served.server.hits();
        providers.refresh().await;
        assert_eq!(served.server.hits(), before + 1);
        assert!(providers.verify_id_token(&token, now()).await.is_ok());
    }
    // An unknown kid fetches the garbage again and still keeps the old keys.
    let stranger = TestIdp::new(ISSUER).unwrap();
    let other = stranger.id_token("alice", AUD, HOUR, Value::Null);
    assert!(matches!(
        refusal(&providers, &other).await,
        IdTokenError::UnknownKeyId { .. }
    ));
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
}

#[tokio::test]
async fn without_a_good_fetch_the_keys_are_unavailable_until_one_succeeds() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    served.server.set_body("not json");
    let providers = url_providers(&idp, &served, EAGER).await;
    let token = idp.id_token("alice", AUD, HOUR, Value::Null);
    let e = refusal(&providers, &token).await;
    assert!(
        matches!(&e, IdTokenError::KeysUnavailable { issuer, reason }
            if issuer == ISSUER && reason.contains("did not serve a usable JWK Set")),
        "{e}"
    );
    // The provider recovers: the next token fetches again.
    served.server.set_body(idp.jwks().to_string());
    assert!(providers.verify_id_token(&token, now()).await.is_ok());
}

#[tokio::test]
async fn a_server_with_an_untrusted_certificate_is_not_believed() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    // Roots of another CA.
    let other_ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let other_path = dir.path().join("other.pem");
    std::fs::write(&other_path, &other_ca.pem).unwrap();
    let providers = IdentityProviders::with_policy(
        &[url_settings(
            ISSUER,
            &served.server.url(),
            Some(&other_path),
        )],
        THROTTLED,
    )
    .await
    .unwrap();
    let token = idp.id_token("alice", AUD, HOUR, Value::Null);
    let e = refusal(&providers, &token).await;
    assert!(
        matches!(&e, IdTokenError::KeysUnavailable { reason, .. } if reason.contains("TLS handshake")),
        "{e}"
    );
    assert_eq!(served.server.hits(), 0);
}

#[tokio::test]
async fn a_bad_ca_bundle_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "no certificates here").unwrap();
    let s = url_settings(ISSUER, "https://127.0.0.1:1/jwks", Some(&bad));
    let e = IdentityProviders::new(&[s]).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "delegation.identity_providers[0].jwks_ca_bundle_path: not a usable PEM CA bundle: no CERTIFICATE block found"
    );
    let s = url_settings(
        ISSUER,
        "https://127.0.0.1:1/jwks",
        Some(Path::new("/nonexistent/ca.pem")),
    );
    let e = IdentityProviders::new(&[s]).await.unwrap_err();
    assert!(
        e.to_string().starts_with(
            "delegation.identity_providers[0].jwks_ca_bundle_path /nonexistent/ca.pem: cannot read:"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_jwks_url_does_not_stop_start_up() {
    // Nothing listens on port 1.
    let s = url_settings(ISSUER, "https://127.0.0.1:1/jwks", None);
    let providers = match IdentityProviders::with_policy(&[s], THROTTLED).await {
        Ok(p) => p,
        // A host without system roots cannot even try: that is a start-up error naming the key.
        Err(e) => {
            assert!(
                e.to_string()
                    .starts_with("delegation.identity_providers[0].jwks_url: no system CA roots"),
                "{e}"
            );
            return;
        }
    };
    let idp = TestIdp::new(ISSUER).unwrap();
    let e = refusal(&providers, &idp.id_token("alice", AUD, HOUR, Value::Null)).await;
    assert!(
        matches!(&e, IdTokenError::KeysUnavailable { reason, .. } if reason.contains("cannot connect")),
        "{e}"
    );
}

#[tokio::test]
async fn the_background_refresh_follows_the_interval() {
    let idp = TestIdp::new(ISSUER).unwrap();
    let served = serve(&idp);
    let providers = Arc::new(
        url_providers(
            &idp,
            &served,
            RefreshPolicy {
                interval: Duration::from_millis(50),
                min_interval: Duration::from_secs(3600),
            },
        )
        .await,
    );
    let rotated = TestIdp::new(ISSUER).unwrap();
    served.server.set_body(rotated.jwks().to_string());
    let task = tokio::spawn(providers.clone().run());
    let token = rotated.id_token("alice", AUD, HOUR, Value::Null);
    // Wait (bounded) for a background fetch to bring the rotated keys.
    let picked_up = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if providers.verify_id_token(&token, now()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    task.abort();
    assert!(picked_up.is_ok(), "the rotated keys were never fetched");
    assert!(served.server.hits() >= 2);
}

#[tokio::test]
async fn run_returns_at_once_without_a_jwks_url() {
    let (_idp, providers) = setup().await;
    tokio::time::timeout(Duration::from_secs(5), Arc::new(providers).run())
        .await
        .unwrap();
}
