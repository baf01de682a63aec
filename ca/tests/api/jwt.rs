//! JWT-SVIDs: minting with `signet_ca::jwt`, validation with `signet_spiffe::jwt`, every refused
//! input with its exact error, key persistence, and the rotation timeline on a fake clock.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair, RSA_PSS_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use signet_ca::jwt::{
    JwtError, JwtKeyConfig, JwtKeyManager, JwtRotationOutcome, RETIRED_KEY_GRACE_SECS,
};
use signet_ca::{KeyType, SlotState};
use signet_spiffe::jwt::{Algorithm, JwtSvidError, Segment, ValidatedJwtSvid, validate_jwt_svid};
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};

use crate::common::*;

const MIN: u64 = 60;

fn jwt_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("data").join("jwt")
}

fn jwt_config(dir: &Path, key_type: KeyType, key_ttl: u64, max_token_ttl: u64) -> JwtKeyConfig {
    JwtKeyConfig {
        trust_domain: td(),
        key_type,
        key_ttl: Duration::from_secs(key_ttl),
        max_token_ttl: Duration::from_secs(max_token_ttl),
        key_dir: dir.to_path_buf(),
    }
}

/// A fresh manager at `T0`: 6 h keys, tokens of at most 1 h.
fn fresh(tmp: &tempfile::TempDir, key_type: KeyType) -> JwtKeyManager {
    JwtKeyManager::open(
        jwt_config(&jwt_dir(tmp), key_type, 6 * HOUR, HOUR),
        None,
        at(T0),
    )
    .unwrap()
}

/// The bundle a verifier gets: the authorities encoded as a SPIFFE bundle and decoded again.
fn bundle_of(m: &JwtKeyManager) -> Bundle {
    let trust_domain = m.config().trust_domain.clone();
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.jwt_authorities = m.authorities();
    bundle.sequence = m.sequence();
    Bundle::from_json(&trust_domain, bundle.to_json().unwrap().as_bytes()).unwrap()
}

/// The bundle as an issuer that does not mark its keys with `alg` would publish it.
fn without_jwk_alg(mut bundle: Bundle) -> Bundle {
    for authority in &mut bundle.jwt_authorities {
        authority.jwk.as_object_mut().unwrap().remove("alg");
    }
    bundle
}

fn validate_at(
    token: &str,
    audience: &str,
    bundle: &Bundle,
    now: u64,
) -> Result<ValidatedJwtSvid, JwtSvidError> {
    validate_jwt_svid(
        token,
        audience,
        |td: &TrustDomain| (*td == bundle.trust_domain).then_some(bundle),
        at(now),
        Duration::ZERO,
    )
}

fn aud(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn mint(m: &JwtKeyManager, path: &str, audience: &[&str], ttl: u64, now: u64) -> String {
    m.mint_jwt_svid(
        &id(path),
        &aud(audience),
        Duration::from_secs(ttl),
        at(now),
        None,
    )
    .unwrap()
    .token
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWS compact serialization of `header` and `claims`, signed by `sign`.
fn compact(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(signature))
}

fn valid_claims() -> Value {
    json!({"sub": "spiffe://example.org/w", "aud": "svc", "exp": T0 + 300, "iat": T0})
}

fn active_kid(m: &JwtKeyManager) -> String {
    m.keys()
        .into_iter()
        .find(|k| k.state == SlotState::Active)
        .unwrap()
        .kid
}

/// The manager's active P-256 key, read from its key file (to sign forged headers with a key
/// the verifier trusts).
fn active_p256_key(tmp: &tempfile::TempDir, m: &JwtKeyManager) -> EcdsaKeyPair {
    let der = std::fs::read(jwt_dir(tmp).join(format!("{}.key", active_kid(m)))).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap()
}

fn ec_key(alg: &'static EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).unwrap()
}

fn ec_sign(key: &EcdsaKeyPair) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    |msg| {
        key.sign(&SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

/// A bundle callback for the tests proving that a token is refused before any key is looked at.
fn no_key_lookup(td: &TrustDomain) -> Option<&'static Bundle> {
    panic!("the bundle of {td} was looked up for a token that must be refused earlier")
}

// ---------------------------------------------------------------------------------------------
// Round trips

fn round_trip(key_type: KeyType, alg: Algorithm) {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, key_type);
    let kid = active_kid(&m);
    let issued = m
        .mint_jwt_svid(
            &id("/ns/prod/sa/api"),
            &aud(&["svc"]),
            Duration::from_secs(300),
            at(T0),
            None,
        )
        .unwrap();
    assert_eq!(issued.key_id, kid);
    assert_eq!(issued.expiry, at(T0 + 300));
    assert_eq!(issued.issued_at, at(T0));
    let [header, claims] = segments(&issued.token).try_into().unwrap();
    assert_eq!(
        header,
        json!({"alg": alg.as_str(), "kid": kid, "typ": "JWT"})
    );
    assert_eq!(
        claims,
        json!({
            "sub": "spiffe://example.org/ns/prod/sa/api",
            "aud": "svc",
            "exp": T0 + 300,
            "iat": T0,
            "jti": issued.jti,
        })
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(&issued.jti).unwrap().len(), 16);

    let bundle = bundle_of(&m);
    let jwk = &bundle.jwt_authorities[0].jwk;
    assert_eq!(jwk["use"], "jwt-svid");
    assert_eq!(jwk["alg"], alg.as_str());
    assert_eq!(jwk["kty"], alg.key_type());
    let v = validate_at(&issued.token, "svc", &bundle, T0 + 299).unwrap();
    assert_eq!(v.spiffe_id, id("/ns/prod/sa/api"));
    assert_eq!(v.expiry, at(T0 + 300));
    assert_eq!(v.audience, aud(&["svc"]));
    assert_eq!(v.key_id, kid);
    assert_eq!(v.algorithm, alg);
    assert_eq!(Value::Object(v.claims), claims);

    // Several audiences and an issuer.
    let issued = m
        .mint_jwt_svid(
            &id("/w"),
            &aud(&["a", "b"]),
            Duration::from_secs(60),
            at(T0),
            Some("https://oidc.example.org"),
        )
        .unwrap();
    let [_, claims] = segments(&issued.token).try_into().unwrap();
    assert_eq!(claims["aud"], json!(["a", "b"]));
    assert_eq!(claims["iss"], "https://oidc.example.org");
    for audience in ["a", "b"] {
        validate_at(&issued.token, audience, &bundle, T0).unwrap();
    }
}

#[test]
fn jwt_round_trip_es256() {
    round_trip(KeyType::EcP256, Algorithm::Es256);
}

#[test]
fn jwt_round_trip_es384() {
    round_trip(KeyType::EcP384, Algorithm::Es384);
}

#[test]
fn jwt_round_trip_rs256() {
    round_trip(KeyType::Rsa2048, Algorithm::Rs256);
}

#[test]
fn jwt_ids_are_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let issued = m
            .mint_jwt_svid(
                &id("/w"),
                &aud(&["a"]),
                Duration::from_secs(60),
                at(T0),
                None,
            )
            .unwrap();
        assert!(seen.insert(issued.jti));
    }
}

#[test]
fn jwt_mint_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let ttl = Duration::from_secs(60);
    let other = SpiffeId::parse("spiffe://other.org/w").unwrap();
    let err = |r: Result<_, JwtError>| r.unwrap_err().to_string();
    assert_eq!(
        err(m.mint_jwt_svid(&other, &aud(&["a"]), ttl, at(T0), None)),
        "spiffe://other.org/w is not in trust domain example.org"
    );
    assert!(matches!(
        m.mint_jwt_svid(
            &td().spiffe_id("").unwrap(),
            &aud(&["a"]),
            ttl,
            at(T0),
            None
        ),
        Err(JwtError::IdWithoutPath(_))
    ));
    assert!(matches!(
        m.mint_jwt_svid(&id("/w"), &[], ttl, at(T0), None),
        Err(JwtError::NoAudience)
    ));
    assert!(matches!(
        m.mint_jwt_svid(&id("/w"), &aud(&["a", ""]), ttl, at(T0), None),
        Err(JwtError::EmptyAudience)
    ));
    assert!(matches!(
        m.mint_jwt_svid(&id("/w"), &aud(&["a"]), ttl, at(T0), Some("")),
        Err(JwtError::EmptyIssuer)
    ));
    assert!(matches!(
        m.mint_jwt_svid(
            &id("/w"),
            &aud(&["a"]),
            Duration::from_millis(999),
            at(T0),
            None
        ),
        Err(JwtError::InvalidTokenTtl)
    ));
    assert!(matches!(
        m.mint_jwt_svid(
            &id("/w"),
            &aud(&["a"]),
            Duration::from_secs(HOUR + 1),
            at(T0),
            None
        ),
        Err(JwtError::TokenTtlTooLong {
            requested: 3601,
            max: 3600
        })
    ));
    // Exactly the maximum is fine, and `exp` is not capped by the key's lifetime.
    let issued = m
        .mint_jwt_svid(
            &id("/w"),
            &aud(&["a"]),
            Duration::from_secs(HOUR),
            at(T0 + 6 * HOUR - 1),
            None,
        )
        .unwrap();
    assert_eq!(issued.expiry, at(T0 + 7 * HOUR - 1));
    // A key past its lifetime (rotation did not run) never signs.
    assert!(matches!(
        m.mint_jwt_svid(&id("/w"), &aud(&["a"]), ttl, at(T0 + 6 * HOUR), None),
        Err(JwtError::KeyExpired { not_after, .. }) if not_after == (T0 + 6 * HOUR) as i64
    ));
}

#[test]
fn jwt_config_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = jwt_dir(&tmp);
    assert!(matches!(
        JwtKeyManager::open(jwt_config(&dir, KeyType::EcP256, 5, 60), None, at(T0)),
        Err(JwtError::InvalidKeyTtl)
    ));
    assert!(matches!(
        JwtKeyManager::open(jwt_config(&dir, KeyType::EcP256, 60, 0), None, at(T0)),
        Err(JwtError::InvalidMaxTokenTtl)
    ));
}

// ---------------------------------------------------------------------------------------------
// Refused tokens, each with its exact error

#[test]
fn jwt_alg_none_is_refused_before_any_key_lookup() {
    let header = json!({"alg": "none", "kid": "k", "typ": "JWT"});
    let token = compact(&header, &valid_claims(), |_| Vec::new());
    assert!(token.ends_with('.'));
    assert_eq!(
        validate_jwt_svid(&token, "svc", no_key_lookup, at(T0), Duration::ZERO),
        Err(JwtSvidError::DisallowedAlgorithm("none".to_owned()))
    );
}

#[test]
fn jwt_hs256_signed_with_the_public_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let bundle = bundle_of(&m);
    let kid = active_kid(&m);
    // The classic confusion: an HMAC keyed with the public key, as a verifier that feeds "the
    // key" to whatever `alg` says would check it.
    for secret in [
        bundle.jwt_authorities[0].jwk.to_string().into_bytes(),
        bundle.to_json().unwrap().into_bytes(),
    ] {
        let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
        let token = compact(&header, &valid_claims(), |msg| {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
            aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
        });
        assert_eq!(
            validate_jwt_svid(&token, "svc", no_key_lookup, at(T0), Duration::ZERO),
            Err(JwtSvidError::DisallowedAlgorithm("HS256".to_owned()))
        );
        assert_eq!(
            validate_at(&token, "svc", &bundle, T0),
            Err(JwtSvidError::DisallowedAlgorithm("HS256".to_owned()))
        );
    }
}

#[test]
fn jwt_ec_token_against_an_rsa_key_with_the_same_kid_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::Rsa2048);
    let kid = active_kid(&m);
    let attacker = ec_key(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let header = json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
    let token = compact(&header, &valid_claims(), ec_sign(&attacker));
    // With and without the `alg` member in the published JWK: the key type alone decides.
    for bundle in [bundle_of(&m), without_jwk_alg(bundle_of(&m))] {
        assert_eq!(
            validate_at(&token, "svc", &bundle, T0),
            Err(JwtSvidError::KeyAlgorithmMismatch {
                kid: kid.clone(),
                alg: Algorithm::Es256,
                reason: "it is an RSA key; ES256 needs an EC P-256 key".to_owned()
            })
        );
    }
}

#[test]
fn jwt_es384_token_for_a_p256_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let kid = active_kid(&m);
    let attacker = ec_key(&ECDSA_P384_SHA384_FIXED_SIGNING);
    let header = json!({"alg": "ES384", "kid": kid, "typ": "JWT"});
    let token = compact(&header, &valid_claims(), ec_sign(&attacker));
    for bundle in [bundle_of(&m), without_jwk_alg(bundle_of(&m))] {
        assert_eq!(
            validate_at(&token, "svc", &bundle, T0),
            Err(JwtSvidError::KeyAlgorithmMismatch {
                kid: kid.clone(),
                alg: Algorithm::Es384,
                reason: "it is an EC P-256 key; ES384 needs P-384".to_owned()
            })
        );
    }
}

#[test]
fn jwt_ps256_token_for_an_rs256_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::Rsa2048);
    let kid = active_kid(&m);
    // Signed with the real RSA key, but PSS: the published JWK says `alg: RS256`.
    let der = std::fs::read(jwt_dir(&tmp).join(format!("{kid}.key"))).unwrap();
    let key = RsaKeyPair::from_pkcs8(&der).unwrap();
    let header = json!({"alg": "PS256", "kid": kid, "typ": "JWT"});
    let token = compact(&header, &valid_claims(), |msg| {
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(&RSA_PSS_SHA256, &SystemRandom::new(), msg, &mut sig)
            .unwrap();
        sig
    });
    assert_eq!(
        validate_at(&token, "svc", &bundle_of(&m), T0),
        Err(JwtSvidError::KeyAlgorithmMismatch {
            kid,
            alg: Algorithm::Ps256,
            reason: "the key is restricted to RS256".to_owned()
        })
    );
}

#[test]
fn jwt_missing_kid_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let key = active_p256_key(&tmp, &m);
    for header in [
        json!({"alg": "ES256", "typ": "JWT"}),
        json!({"alg": "ES256", "kid": "", "typ": "JWT"}),
    ] {
        let token = compact(&header, &valid_claims(), ec_sign(&key));
        assert_eq!(
            validate_jwt_svid(&token, "svc", no_key_lookup, at(T0), Duration::ZERO),
            Err(JwtSvidError::MissingKeyId)
        );
    }
}

#[test]
fn jwt_unknown_kid_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let other_tmp = tempfile::tempdir().unwrap();
    let other = fresh(&other_tmp, KeyType::EcP256);
    let token = mint(&m, "/w", &["svc"], 300, T0);
    assert_eq!(
        validate_at(&token, "svc", &bundle_of(&other), T0),
        Err(JwtSvidError::UnknownKeyId {
            kid: active_kid(&m),
            trust_domain: "example.org".to_owned()
        })
    );
}

#[test]
fn jwt_expired_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let bundle = bundle_of(&m);
    let token = mint(&m, "/w", &["svc"], 300, T0);
    validate_at(&token, "svc", &bundle, T0 + 299).unwrap();
    assert_eq!(
        validate_at(&token, "svc", &bundle, T0 + 300),
        Err(JwtSvidError::Expired {
            exp: (T0 + 300) as i64,
            now: (T0 + 300) as i64,
            leeway_secs: 0
        })
    );
    // A leeway tolerates a little clock skew, no more.
    let with_leeway = |now| {
        validate_jwt_svid(
            &token,
            "svc",
            |_: &TrustDomain| Some(&bundle),
            at(now),
            Duration::from_secs(5),
        )
    };
    with_leeway(T0 + 304).unwrap();
    assert!(matches!(
        with_leeway(T0 + 305),
        Err(JwtSvidError::Expired { leeway_secs: 5, .. })
    ));
    // A token without `exp`, signed by the trusted key, is refused too.
    let key = active_p256_key(&tmp, &m);
    let header = json!({"alg": "ES256", "kid": active_kid(&m), "typ": "JWT"});
    let claims = json!({"sub": "spiffe://example.org/w", "aud": "svc"});
    let token = compact(&header, &claims, ec_sign(&key));
    assert_eq!(
        validate_at(&token, "svc", &bundle, T0),
        Err(JwtSvidError::MissingClaim("exp"))
    );
}

#[test]
fn jwt_wrong_audience_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let token = mint(&m, "/w", &["svc", "db"], 300, T0);
    assert_eq!(
        validate_at(&token, "other", &bundle_of(&m), T0),
        Err(JwtSvidError::AudienceMismatch {
            expected: "other".to_owned(),
            actual: aud(&["svc", "db"])
        })
    );
    assert_eq!(
        validate_at(&token, "", &bundle_of(&m), T0),
        Err(JwtSvidError::EmptyAudience)
    );
}

#[test]
fn jwt_subject_of_an_untrusted_trust_domain_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = fresh(&tmp, KeyType::EcP256);
    let other_tmp = tempfile::tempdir().unwrap();
    let mut cfg = jwt_config(&jwt_dir(&other_tmp), KeyType::EcP256, 6 * HOUR, HOUR);
    cfg.trust_domain = TrustDomain::new("other.org").unwrap();
    let theirs = JwtKeyManager::open(cfg, None, at(T0)).unwrap();
    let token = theirs
        .mint_jwt_svid(
            &SpiffeId::parse("spiffe://other.org/w").unwrap(),
            &aud(&["svc"]),
            Duration::from_secs(300),
            at(T0),
            None,
        )
        .unwrap()
        .token;
    assert_eq!(
        validate_at(&token, "svc", &bundle_of(&ours), T0),
        Err(JwtSvidError::NoBundle("other.org".to_owned()))
    );
    // A lookup that hands over the wrong trust domain's bundle is caught, not trusted.
    let ours_bundle = bundle_of(&ours);
    assert_eq!(
        validate_jwt_svid(
            &token,
            "svc",
            |_: &TrustDomain| Some(&ours_bundle),
            at(T0),
            Duration::ZERO
        ),
        Err(JwtSvidError::BundleTrustDomainMismatch {
            expected: "other.org".to_owned(),
            actual: "example.org".to_owned()
        })
    );
    // With their bundle, it validates.
    validate_at(&token, "svc", &bundle_of(&theirs), T0).unwrap();
}

#[test]
fn jwt_tampered_payload_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let token = mint(&m, "/w", &["svc"], 300, T0);
    let parts: Vec<&str> = token.split('.').collect();
    let [_, mut claims] = segments(&token).try_into().unwrap();
    claims["sub"] = json!("spiffe://example.org/admin");
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_eq!(
        validate_at(&forged, "svc", &bundle_of(&m), T0),
        Err(JwtSvidError::BadSignature)
    );
    // Extending the lifetime the same way fails the same way.
    let [_, mut claims] = segments(&token).try_into().unwrap();
    claims["exp"] = json!(T0 + 10 * HOUR);
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_eq!(
        validate_at(&forged, "svc", &bundle_of(&m), T0),
        Err(JwtSvidError::BadSignature)
    );
}

#[test]
fn jwt_tampered_header_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let token = mint(&m, "/w", &["svc"], 300, T0);
    let parts: Vec<&str> = token.split('.').collect();
    let [mut header, _] = segments(&token).try_into().unwrap();
    header["typ"] = json!("JOSE");
    let forged = format!("{}.{}.{}", b64(header.to_string()), parts[1], parts[2]);
    assert_eq!(
        validate_at(&forged, "svc", &bundle_of(&m), T0),
        Err(JwtSvidError::BadSignature)
    );
    // A flipped signature bit.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64(signature));
    assert_eq!(
        validate_at(&forged, "svc", &bundle_of(&m), T0),
        Err(JwtSvidError::BadSignature)
    );
}

#[test]
fn jwt_malformed_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let bundle = bundle_of(&m);
    let token = mint(&m, "/w", &["svc"], 300, T0);
    let parts: Vec<&str> = token.split('.').collect();
    let check = |t: &str, expected: JwtSvidError| {
        assert_eq!(validate_at(t, "svc", &bundle, T0), Err(expected), "{t}");
    };
    check("", JwtSvidError::SegmentCount(1));
    check(parts[0], JwtSvidError::SegmentCount(1));
    check(&parts[..2].join("."), JwtSvidError::SegmentCount(2));
    check(&format!("{token}.x"), JwtSvidError::SegmentCount(4));
    check(&format!("{token}.x.y"), JwtSvidError::SegmentCount(5));
    // Padding, the standard alphabet, stray characters, non-canonical trailing bits.
    let seg = |i: usize, new: &str| {
        let mut p = parts.clone();
        p[i] = new;
        p.join(".")
    };
    let padded = format!("{}=", parts[0]);
    check(&seg(0, &padded), JwtSvidError::Base64(Segment::Header));
    let std_alphabet = parts[1].replace('-', "+").replace('_', "/") + "+";
    check(
        &seg(1, &std_alphabet),
        JwtSvidError::Base64(Segment::Payload),
    );
    check(&seg(1, "e30 "), JwtSvidError::Base64(Segment::Payload));
    // 64 bytes take 86 characters whose last 4 bits must be zero: "R" sets one.
    let non_canonical = format!("{}R", &parts[2][..85]);
    assert_ne!(non_canonical, parts[2]);
    check(
        &seg(2, &non_canonical),
        JwtSvidError::Base64(Segment::Signature),
    );
    assert!(matches!(
        validate_at(&seg(0, &b64("not json")), "svc", &bundle, T0),
        Err(JwtSvidError::HeaderNotJson(_))
    ));
    assert!(matches!(
        validate_at(&seg(1, &b64("[1,2]")), "svc", &bundle, T0),
        Err(JwtSvidError::ClaimsNotJson(_))
    ));
}

#[test]
fn jwt_wit_typ_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let bundle = bundle_of(&m);
    let key = active_p256_key(&tmp, &m);
    let kid = active_kid(&m);
    let token = compact(
        &json!({"alg": "ES256", "kid": kid, "typ": "wit+jwt"}),
        &valid_claims(),
        ec_sign(&key),
    );
    assert_eq!(
        validate_jwt_svid(&token, "svc", no_key_lookup, at(T0), Duration::ZERO),
        Err(JwtSvidError::UnsupportedType("wit+jwt".to_owned()))
    );
    // `JOSE` and no `typ` at all are accepted (JWT-SVID standard, section 2).
    for header in [
        json!({"alg": "ES256", "kid": kid, "typ": "JOSE"}),
        json!({"alg": "ES256", "kid": kid}),
    ] {
        let token = compact(&header, &valid_claims(), ec_sign(&key));
        validate_at(&token, "svc", &bundle, T0).unwrap();
    }
}

#[test]
fn jwt_bad_subjects_and_times_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let bundle = bundle_of(&m);
    let key = active_p256_key(&tmp, &m);
    let header = json!({"alg": "ES256", "kid": active_kid(&m), "typ": "JWT"});
    let with = |patch: Value| {
        let mut claims = valid_claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let token = compact(&header, &claims, ec_sign(&key));
        validate_at(&token, "svc", &bundle, T0)
    };
    assert_eq!(
        with(json!({"sub": null})),
        Err(JwtSvidError::MissingClaim("sub"))
    );
    assert!(matches!(
        with(json!({"sub": "https://example.org/w"})),
        Err(JwtSvidError::InvalidSubject(_))
    ));
    assert_eq!(
        with(json!({"aud": null})),
        Err(JwtSvidError::MissingClaim("aud"))
    );
    assert_eq!(
        with(json!({"nbf": T0 + 10})),
        Err(JwtSvidError::NotYetValid {
            nbf: (T0 + 10) as i64,
            now: T0 as i64,
            leeway_secs: 0
        })
    );
    assert_eq!(
        with(json!({"iat": T0 + 10})),
        Err(JwtSvidError::IssuedInFuture {
            iat: (T0 + 10) as i64,
            now: T0 as i64,
            leeway_secs: 0
        })
    );
    assert!(matches!(
        with(json!({"exp": "tomorrow"})),
        Err(JwtSvidError::InvalidClaim { name: "exp", .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Rotation

#[test]
fn jwt_rotation_timeline_publishes_before_use_and_keeps_retired_keys_until_tokens_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = jwt_dir(&tmp);
    let m = fresh(&tmp, KeyType::EcP256); // keys of 6 h, tokens of at most 1 h
    let a = active_kid(&m);
    assert_eq!(m.sequence(), 1);
    assert_eq!(
        m.rotate_if_due(at(T0 + 3 * HOUR - 1)).unwrap(),
        JwtRotationOutcome::Unchanged
    );
    // 1/2: B prepared and published; A keeps signing.
    let b = match m.rotate_if_due(at(T0 + 3 * HOUR)).unwrap() {
        JwtRotationOutcome::Prepared(info) => info,
        other => panic!("expected Prepared, got {other:?}"),
    };
    assert!(dir.join(format!("{}.key", b.kid)).exists());
    assert_eq!(m.sequence(), 2);
    let kids: Vec<String> = m.authorities().into_iter().map(|a| a.key_id).collect();
    assert_eq!(kids, vec![a.clone(), b.kid.clone()]);
    assert_eq!(active_kid(&m), a);
    assert_eq!(
        m.rotate_if_due(at(T0 + 5 * HOUR - 1)).unwrap(),
        JwtRotationOutcome::Unchanged
    );
    // 5/6: B signs, A is retired but published until its last token (<= 1 h) expired + grace.
    let last_of_a = mint(&m, "/w", &["svc"], HOUR, T0 + 5 * HOUR - 1);
    match m.rotate_if_due(at(T0 + 5 * HOUR)).unwrap() {
        JwtRotationOutcome::Activated(info) => assert_eq!(info.kid, b.kid),
        other => panic!("expected Activated, got {other:?}"),
    }
    assert_eq!(m.sequence(), 2, "activation publishes nothing new");
    let retired = m.keys().into_iter().find(|k| k.kid == a).unwrap();
    assert_eq!(retired.state, SlotState::Retired);
    assert_eq!(retired.retired_at, Some(at(T0 + 5 * HOUR)));
    let until = T0 + 6 * HOUR + RETIRED_KEY_GRACE_SECS as u64;
    assert_eq!(retired.published_until, Some(at(until)));
    validate_at(&last_of_a, "svc", &bundle_of(&m), T0 + 6 * HOUR - 2).unwrap();
    // B's own schedule: prepared at T0+3h, so C is prepared at T0+6h.
    match m.rotate_if_due(at(T0 + 6 * HOUR)).unwrap() {
        JwtRotationOutcome::Prepared(_) => {}
        other => panic!("expected Prepared, got {other:?}"),
    }
    assert_eq!(
        m.rotate_if_due(at(until - 1)).unwrap(),
        JwtRotationOutcome::Unchanged
    );
    assert_eq!(
        m.rotate_if_due(at(until)).unwrap(),
        JwtRotationOutcome::Pruned(vec![a.clone()])
    );
    assert!(!dir.join(format!("{a}.key")).exists());
    assert!(!m.authorities().iter().any(|x| x.key_id == a));
    assert_eq!(m.sequence(), 4);
}

/// Every token minted at any moment validates with the authorities published at that moment,
/// with those a verifier fetched up to key_ttl/3 (minus one tick) earlier, and with the current
/// ones until it expires — across many rotations.
#[test]
fn jwt_rotation_never_fails_a_valid_token() {
    let tmp = tempfile::tempdir().unwrap();
    let key_ttl = 6 * HOUR;
    let tick = 5 * MIN;
    let m = JwtKeyManager::open(
        jwt_config(&jwt_dir(&tmp), KeyType::EcP256, key_ttl, HOUR),
        None,
        at(T0),
    )
    .unwrap();
    let stale_by = key_ttl / 3 - tick;
    let ttls = [MIN, 30 * MIN, HOUR, 17 * MIN];
    let mut snapshots: Vec<(u64, Bundle)> = Vec::new();
    let mut live: Vec<(String, u64)> = Vec::new();
    let mut activations = 0;
    let mut prunes = 0;
    let mut max_published = 0;
    for (i, now) in (T0..T0 + 48 * HOUR).step_by(tick as usize).enumerate() {
        loop {
            match m.rotate_if_due(at(now)).unwrap() {
                JwtRotationOutcome::Unchanged => break,
                JwtRotationOutcome::Activated(_) => activations += 1,
                JwtRotationOutcome::Pruned(_) => prunes += 1,
                JwtRotationOutcome::Prepared(_) => {}
            }
        }
        let bundle = bundle_of(&m);
        max_published = max_published.max(bundle.jwt_authorities.len());
        let ttl = ttls[i % ttls.len()];
        let token = mint(&m, "/w", &["svc"], ttl, now);
        validate_at(&token, "svc", &bundle, now).unwrap();
        if let Some((fetched, stale)) = snapshots.iter().rev().find(|(t, _)| *t + stale_by <= now) {
            validate_at(&token, "svc", stale, now)
                .unwrap_or_else(|e| panic!("bundle fetched at {fetched}, token at {now}: {e}"));
        }
        snapshots.push((now, bundle.clone()));
        live.push((token, now + ttl));
        live.retain(|(_, exp)| *exp > now);
        for (token, exp) in &live {
            validate_at(token, "svc", &bundle, now)
                .unwrap_or_else(|e| panic!("token expiring at {exp} refused at {now}: {e}"));
        }
    }
    assert!(activations >= 15, "{activations} activations");
    assert!(prunes >= 14, "{prunes} prunes");
    assert!(max_published <= 3, "{max_published} keys published at once");
}

#[test]
fn jwt_forced_prepare_and_activate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = jwt_dir(&tmp);
    let m = fresh(&tmp, KeyType::EcP256);
    assert!(matches!(m.activate(at(T0)), Err(JwtError::NoPreparedKey)));
    let first = m.prepare(at(T0 + 1)).unwrap();
    let second = m.prepare(at(T0 + 2)).unwrap();
    assert!(
        !dir.join(format!("{}.key", first.kid)).exists(),
        "replaced key file deleted"
    );
    assert_eq!(m.keys().len(), 2);
    assert_eq!(m.activate(at(T0 + 3)).unwrap().kid, second.kid);
    assert_eq!(active_kid(&m), second.kid);
    let token = mint(&m, "/w", &["svc"], 60, T0 + 3);
    let v = validate_at(&token, "svc", &bundle_of(&m), T0 + 3).unwrap();
    assert_eq!(v.key_id, second.kid);
}

#[test]
fn jwt_outlived_key_is_replaced_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let a = active_kid(&m);
    let late = T0 + 7 * HOUR;
    assert!(matches!(
        m.mint_jwt_svid(
            &id("/w"),
            &aud(&["a"]),
            Duration::from_secs(60),
            at(late),
            None
        ),
        Err(JwtError::KeyExpired { .. })
    ));
    let b = match m.rotate_if_due(at(late)).unwrap() {
        JwtRotationOutcome::Activated(info) => info.kid,
        other => panic!("expected Activated, got {other:?}"),
    };
    assert_ne!(a, b);
    let token = mint(&m, "/w", &["svc"], 60, late);
    validate_at(&token, "svc", &bundle_of(&m), late).unwrap();
    let old = m.keys().into_iter().find(|k| k.kid == a).unwrap();
    assert_eq!(old.state, SlotState::Retired);
}

// ---------------------------------------------------------------------------------------------
// Persistence

#[test]
fn jwt_keys_persist_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = jwt_dir(&tmp);
    let m = fresh(&tmp, KeyType::EcP256);
    m.rotate_if_due(at(T0 + 3 * HOUR)).unwrap(); // prepared
    let token = mint(&m, "/w", &["svc"], HOUR, T0 + 3 * HOUR);
    let journal = m.journal_bytes().unwrap();
    let before = m.keys();
    let sequence = m.sequence();
    drop(m);

    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No private key bytes in the journal.
        let der = std::fs::read(entry.path()).unwrap();
        assert!(!journal.windows(16).any(|w| der.windows(16).any(|d| d == w)));
        assert!(!String::from_utf8_lossy(&journal).contains(&hex::encode(&der)));
        files += 1;
    }
    assert_eq!(files, 2);
    let doc: Value = serde_json::from_slice(&journal).unwrap();
    for key in doc["keys"].as_array().unwrap() {
        assert!(key["jwk"].get("d").is_none());
    }

    let cfg = jwt_config(&dir, KeyType::EcP256, 6 * HOUR, HOUR);
    let m = JwtKeyManager::open(cfg.clone(), Some(&journal), at(T0 + 3 * HOUR)).unwrap();
    assert_eq!(m.keys(), before);
    assert_eq!(m.sequence(), sequence);
    validate_at(&token, "svc", &bundle_of(&m), T0 + 3 * HOUR).unwrap();
    let again = mint(&m, "/w", &["svc"], 60, T0 + 3 * HOUR);
    assert_eq!(
        validate_at(&again, "svc", &bundle_of(&m), T0 + 3 * HOUR)
            .unwrap()
            .key_id,
        before[0].kid
    );
    // Rotation continues where it stopped.
    assert!(matches!(
        m.rotate_if_due(at(T0 + 5 * HOUR)).unwrap(),
        JwtRotationOutcome::Activated(_)
    ));
}

#[test]
fn jwt_a_lowered_max_token_ttl_does_not_shorten_publication() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = jwt_dir(&tmp);
    let m = fresh(&tmp, KeyType::EcP256); // max 1 h
    let a = active_kid(&m);
    let long = mint(&m, "/w", &["svc"], HOUR, T0 + 4 * HOUR);
    m.rotate_if_due(at(T0 + 3 * HOUR)).unwrap();
    let journal = m.journal_bytes().unwrap();
    drop(m);
    // Restarted with tokens of at most 5 min: A already signed 1 h tokens.
    let m = JwtKeyManager::open(
        jwt_config(&dir, KeyType::EcP256, 6 * HOUR, 5 * MIN),
        Some(&journal),
        at(T0 + 4 * HOUR),
    )
    .unwrap();
    m.rotate_if_due(at(T0 + 5 * HOUR)).unwrap(); // A retired
    let info = m.keys().into_iter().find(|k| k.kid == a).unwrap();
    assert_eq!(
        info.published_until,
        Some(at(T0 + 6 * HOUR + RETIRED_KEY_GRACE_SECS as u64))
    );
    validate_at(&long, "svc", &bundle_of(&m), T0 + 5 * HOUR - 1).unwrap();
}

#[test]
fn jwt_bad_journals_and_key_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = jwt_dir(&tmp);
    let m = fresh(&tmp, KeyType::EcP256);
    let kid = active_kid(&m);
    let journal = m.journal_bytes().unwrap();
    drop(m);
    let cfg = jwt_config(&dir, KeyType::EcP256, 6 * HOUR, HOUR);
    let open = |cfg: JwtKeyConfig, journal: &[u8]| {
        JwtKeyManager::open(cfg, Some(journal), at(T0)).unwrap_err()
    };

    assert!(matches!(
        open(cfg.clone(), b"{"),
        JwtError::JournalCorrupt(_)
    ));
    let mut other = cfg.clone();
    other.trust_domain = TrustDomain::new("other.org").unwrap();
    assert_eq!(
        open(other, &journal).to_string(),
        "the JWT key journal belongs to trust domain \"example.org\", the configuration says \"other.org\""
    );
    let mut doc: Value = serde_json::from_slice(&journal).unwrap();
    doc["keys"][0]["state"] = json!("retired");
    assert_eq!(
        open(cfg.clone(), doc.to_string().as_bytes()).to_string(),
        "corrupt JWT key journal: expected exactly one active key, found 0"
    );
    let mut doc: Value = serde_json::from_slice(&journal).unwrap();
    doc["keys"][0]["jwk"]["d"] = json!("AAAA");
    assert!(matches!(
        open(cfg.clone(), doc.to_string().as_bytes()),
        JwtError::KeyMismatch { .. }
    ));
    let mut doc: Value = serde_json::from_slice(&journal).unwrap();
    doc["keys"][0]["kid"] = json!("../../etc/passwd");
    assert!(matches!(
        open(cfg.clone(), doc.to_string().as_bytes()),
        JwtError::JournalCorrupt(_)
    ));

    // Another key in the file than the journal records.
    let key_file = dir.join(format!("{kid}.key"));
    let original = std::fs::read(&key_file).unwrap();
    let other = signet_ca::generate_key(KeyType::EcP256).unwrap();
    std::fs::write(&key_file, &other.pkcs8_der[..]).unwrap();
    assert!(matches!(
        open(cfg.clone(), &journal),
        JwtError::KeyMismatch { kid: k } if k == kid
    ));
    // A key of the wrong type.
    let rsa = signet_ca::generate_key(KeyType::Rsa2048).unwrap();
    std::fs::write(&key_file, &rsa.pkcs8_der[..]).unwrap();
    assert!(matches!(
        open(cfg.clone(), &journal),
        JwtError::InvalidKeyFile { .. }
    ));
    // No key file at all.
    std::fs::remove_file(&key_file).unwrap();
    assert!(matches!(
        open(cfg.clone(), &journal),
        JwtError::KeyFileMissing { kid: k, .. } if k == kid
    ));
    std::fs::write(&key_file, original).unwrap();
    JwtKeyManager::open(cfg, Some(&journal), at(T0)).unwrap();
}

#[test]
fn jwt_debug_output_holds_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh(&tmp, KeyType::EcP256);
    let issued = m
        .mint_jwt_svid(
            &id("/w"),
            &aud(&["a"]),
            Duration::from_secs(60),
            at(T0),
            None,
        )
        .unwrap();
    let debug = format!("{issued:?} {m:?}");
    assert!(!debug.contains(&issued.token));
    assert!(debug.contains("<redacted>"));
    let der = std::fs::read(jwt_dir(&tmp).join(format!("{}.key", active_kid(&m)))).unwrap();
    assert!(!debug.contains(&hex::encode(&der)));
    let public = active_p256_key(&tmp, &m);
    assert!(!debug.contains(&hex::encode(public.public_key().as_ref())));
}

#[test]
fn jwt_key_manager_is_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<JwtKeyManager>();
    let tmp = tempfile::tempdir().unwrap();
    let m = std::sync::Arc::new(fresh(&tmp, KeyType::EcP256));
    let bundle = bundle_of(&m);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || mint(&m, "/w", &["svc"], 60, T0))
        })
        .collect();
    for h in handles {
        validate_at(&h.join().unwrap(), "svc", &bundle, T0).unwrap();
    }
}
