//! WIT-SVIDs: minting with a WIT key manager (its own keys, directory and journal), validation
//! with `signet_spiffe::wit`, every refused mint request, and key separation from JWT-SVIDs.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use signet_ca::KeyType;
use signet_ca::jwt::{JwtError, JwtKeyConfig, JwtKeyManager, TokenKind};
use signet_spiffe::jwt::{Algorithm, validate_jwt_svid};
use signet_spiffe::wit::{HolderKeyError, ValidatedWitSvid, WitSvidError, validate_wit_svid};
use signet_spiffe::{Bundle, TrustDomain};

use crate::common::*;

fn wit_config(tmp: &tempfile::TempDir, name: &str, key_type: KeyType) -> JwtKeyConfig {
    JwtKeyConfig {
        trust_domain: td(),
        key_type,
        key_ttl: Duration::from_secs(6 * HOUR),
        max_token_ttl: Duration::from_secs(HOUR),
        key_dir: tmp.path().join("data").join(name),
    }
}

fn fresh_wit(tmp: &tempfile::TempDir, key_type: KeyType) -> JwtKeyManager {
    JwtKeyManager::open_for(
        TokenKind::WitSvid,
        wit_config(tmp, "wit", key_type),
        None,
        at(T0),
    )
    .unwrap()
}

/// The bundle a verifier gets: the manager's keys as WIT authorities, encoded and decoded.
fn wit_bundle(m: &JwtKeyManager) -> Bundle {
    let mut bundle = Bundle::new(td());
    bundle.wit_authorities = m.authorities();
    Bundle::from_json(&td(), bundle.to_json().unwrap().as_bytes()).unwrap()
}

fn validate(token: &str, bundle: &Bundle, now: u64) -> Result<ValidatedWitSvid, WitSvidError> {
    validate_wit_svid(
        token,
        |t: &TrustDomain| (*t == bundle.trust_domain).then_some(bundle),
        at(now),
        Duration::ZERO,
    )
}

fn holder(alg: &'static rcgen::SignatureAlgorithm) -> (Vec<u8>, rcgen::KeyPair) {
    let key = workload_key(alg);
    (key.public_key_der(), key)
}

#[test]
fn wit_svid_has_the_profile_header_and_claims_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh_wit(&tmp, KeyType::EcP256);
    assert_eq!(m.kind(), TokenKind::WitSvid);
    let (spki, key) = holder(&rcgen::PKCS_ECDSA_P256_SHA256);
    let issued = m
        .mint_wit_svid(&id("/agent"), &spki, Duration::from_secs(HOUR), at(T0))
        .unwrap();
    let [header, claims] = <[Value; 2]>::try_from(segments(&issued.token)).unwrap();
    let kid = m.authorities()[0].key_id.clone();
    assert_eq!(
        header,
        json!({"alg": "ES256", "kid": kid, "typ": "wit+jwt"})
    );
    let raw = key.public_key_raw();
    assert_eq!(
        claims,
        json!({
            "sub": "spiffe://example.org/agent",
            "exp": T0 + HOUR,
            "iat": T0,
            "nbf": T0,
            "jti": issued.jti,
            "cnf": {"jwk": {
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
                "alg": "ES256",
            }},
        })
    );
    assert_eq!(issued.key_id, kid);
    assert_eq!(issued.expiry, at(T0 + HOUR));
    assert_eq!(issued.issued_at, at(T0));
    assert!(!format!("{issued:?}").contains(&issued.token));

    let v = validate(&issued.token, &wit_bundle(&m), T0 + 10).unwrap();
    assert_eq!(v.spiffe_id, id("/agent"));
    assert_eq!(v.key_id, kid);
    assert_eq!(v.jti.as_deref(), Some(issued.jti.as_str()));
    assert_eq!(v.confirmation.algorithm, Algorithm::Es256);
}

#[test]
fn holder_keys_set_the_confirmation_algorithm() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh_wit(&tmp, KeyType::EcP256);
    let bundle = wit_bundle(&m);
    for (alg, expected) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "ES256"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "ES384"),
        (&rcgen::PKCS_RSA_SHA256, "RS256"),
    ] {
        let (spki, _) = holder(alg);
        let t = m
            .mint_wit_svid(&id("/w"), &spki, Duration::from_secs(60), at(T0))
            .unwrap()
            .token;
        let v = validate(&t, &bundle, T0).unwrap();
        assert_eq!(v.confirmation.algorithm.as_str(), expected);
        assert_eq!(v.claims["cnf"]["jwk"]["alg"], expected);
    }
}

#[test]
fn wit_keys_of_every_key_type_sign() {
    for (kt, alg) in [
        (KeyType::EcP256, "ES256"),
        (KeyType::EcP384, "ES384"),
        (KeyType::Rsa2048, "RS256"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let m = fresh_wit(&tmp, kt);
        let (spki, _) = holder(&rcgen::PKCS_ECDSA_P256_SHA256);
        let t = m
            .mint_wit_svid(&id("/w"), &spki, Duration::from_secs(60), at(T0))
            .unwrap()
            .token;
        assert_eq!(segments(&t)[0]["alg"], alg);
        assert_eq!(
            validate(&t, &wit_bundle(&m), T0)
                .unwrap()
                .algorithm
                .as_str(),
            alg
        );
    }
}

#[test]
fn refused_wit_mint_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh_wit(&tmp, KeyType::EcP256);
    let (spki, _) = holder(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mint = |path: &str, key: &[u8], ttl: u64| {
        m.mint_wit_svid(&id(path), key, Duration::from_secs(ttl), at(T0))
            .unwrap_err()
    };
    let other_td = signet_spiffe::SpiffeId::parse("spiffe://other.org/w").unwrap();
    assert!(matches!(
        m.mint_wit_svid(&other_td, &spki, Duration::from_secs(60), at(T0)),
        Err(JwtError::WrongTrustDomain { .. })
    ));
    let root = signet_spiffe::SpiffeId::parse("spiffe://example.org").unwrap();
    assert!(matches!(
        m.mint_wit_svid(&root, &spki, Duration::from_secs(60), at(T0)),
        Err(JwtError::IdWithoutPath(_))
    ));
    assert!(matches!(mint("/w", &spki, 0), JwtError::InvalidTokenTtl));
    assert!(matches!(
        mint("/w", &spki, HOUR + 1),
        JwtError::TokenTtlTooLong {
            requested: 3601,
            max: 3600
        }
    ));
    assert!(matches!(
        mint("/w", &[], 60),
        JwtError::HolderKey(HolderKeyError::Malformed(_))
    ));
    assert!(matches!(
        mint("/w", b"not a key", 60),
        JwtError::HolderKey(HolderKeyError::Malformed(_))
    ));
    let (ed, _) = holder(&rcgen::PKCS_ED25519);
    assert_eq!(
        mint("/w", &ed, 60).to_string(),
        "the holder's public key: unsupported public key: Ed25519 (WIT-SVIDs bind EC P-256, EC \
         P-384 or RSA 2048-8192 keys)"
    );
    // A P-256 point moved off the curve.
    let mut bad = spki.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x01;
    assert!(matches!(
        mint("/w", &bad, 60),
        JwtError::HolderKey(HolderKeyError::Invalid(_))
    ));
    // A WIT manager mints no JWT-SVID.
    assert!(matches!(
        m.mint_jwt_svid(
            &id("/w"),
            &["svc".into()],
            Duration::from_secs(60),
            at(T0),
            None
        ),
        Err(JwtError::WrongTokenKind {
            manager: TokenKind::WitSvid,
            requested: TokenKind::JwtSvid
        })
    ));
}

#[test]
fn a_jwt_manager_mints_no_wit_svid() {
    let tmp = tempfile::tempdir().unwrap();
    let jwt = JwtKeyManager::open(wit_config(&tmp, "jwt", KeyType::EcP256), None, at(T0)).unwrap();
    assert_eq!(jwt.kind(), TokenKind::JwtSvid);
    let (spki, _) = holder(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(
        jwt.mint_wit_svid(&id("/w"), &spki, Duration::from_secs(60), at(T0))
            .unwrap_err()
            .to_string(),
        "these keys sign JWT-SVIDs, not WIT-SVIDs (each kind has its own keys)"
    );
}

#[test]
fn wit_and_jwt_keys_are_separate_and_never_verify_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let wit = fresh_wit(&tmp, KeyType::EcP256);
    let jwt = JwtKeyManager::open(wit_config(&tmp, "jwt", KeyType::EcP256), None, at(T0)).unwrap();
    let (wk, jk) = (wit.authorities(), jwt.authorities());
    assert_ne!(wk[0].key_id, jk[0].key_id);
    let mut bundle = Bundle::new(td());
    bundle.jwt_authorities = jk;
    bundle.wit_authorities = wk;
    let bundle = Bundle::from_json(&td(), bundle.to_json().unwrap().as_bytes()).unwrap();

    let (spki, _) = holder(&rcgen::PKCS_ECDSA_P256_SHA256);
    let w = wit
        .mint_wit_svid(&id("/w"), &spki, Duration::from_secs(60), at(T0))
        .unwrap()
        .token;
    let j = jwt
        .mint_jwt_svid(
            &id("/w"),
            &["svc".into()],
            Duration::from_secs(60),
            at(T0),
            None,
        )
        .unwrap()
        .token;
    assert!(validate(&w, &bundle, T0).is_ok());
    assert!(matches!(
        validate(&j, &bundle, T0),
        Err(WitSvidError::UnsupportedType(_))
    ));
    let jwt_of = |t: &str| {
        validate_jwt_svid(
            t,
            "svc",
            |_: &TrustDomain| Some(&bundle),
            at(T0),
            Duration::ZERO,
        )
    };
    assert!(jwt_of(&j).is_ok());
    assert!(jwt_of(&w).is_err());

    // A bundle that (wrongly) published the WIT keys as JWT authorities still verifies no WIT.
    let mut confused = Bundle::new(td());
    confused.jwt_authorities = wit.authorities();
    assert!(matches!(
        validate(&w, &confused, T0),
        Err(WitSvidError::UnknownKeyId { .. })
    ));
}

#[test]
fn wit_keys_rotate_with_publish_before_use() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh_wit(&tmp, KeyType::EcP256);
    let (spki, _) = holder(&rcgen::PKCS_ECDSA_P256_SHA256);
    let first = m
        .mint_wit_svid(&id("/w"), &spki, Duration::from_secs(HOUR), at(T0))
        .unwrap();
    let seq = m.sequence();
    // At 1/2 of 6 h the next key is prepared and published, signing nothing yet.
    let half = T0 + 3 * HOUR;
    assert!(matches!(
        m.rotate_if_due(at(half)).unwrap(),
        signet_ca::jwt::JwtRotationOutcome::Prepared(_)
    ));
    assert!(m.sequence() > seq);
    assert_eq!(m.authorities().len(), 2);
    let before = wit_bundle(&m);
    let still_old = m
        .mint_wit_svid(&id("/w"), &spki, Duration::from_secs(60), at(half))
        .unwrap();
    assert_eq!(still_old.key_id, first.key_id);
    // At 5/6 it signs; a verifier holding the bundle from 1/2 already knows it.
    let five_sixths = T0 + 5 * HOUR;
    assert!(matches!(
        m.rotate_if_due(at(five_sixths)).unwrap(),
        signet_ca::jwt::JwtRotationOutcome::Activated(_)
    ));
    let next = m
        .mint_wit_svid(&id("/w"), &spki, Duration::from_secs(60), at(five_sixths))
        .unwrap();
    assert_ne!(next.key_id, first.key_id);
    assert!(validate(&next.token, &before, five_sixths).is_ok());
    assert!(validate(&still_old.token, &wit_bundle(&m), half + 30).is_ok());
}

#[test]
fn wit_journal_is_of_its_kind_and_keys_are_private_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fresh_wit(&tmp, KeyType::EcP256);
    let journal = m.journal_bytes().unwrap();
    let doc: Value = serde_json::from_slice(&journal).unwrap();
    assert_eq!(doc["kind"], "wit-svid");
    let text = String::from_utf8(journal.clone()).unwrap();
    assert!(!text.contains("\"d\""), "no private key in the journal");
    let dir: PathBuf = tmp.path().join("data").join("wit");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let kid = &m.authorities()[0].key_id;
    let file = dir.join(format!("{kid}.key"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Reopened as WIT keys: the same key signs.
    let again = JwtKeyManager::open_for(
        TokenKind::WitSvid,
        wit_config(&tmp, "wit", KeyType::EcP256),
        Some(&journal),
        at(T0 + 60),
    )
    .unwrap();
    assert_eq!(again.authorities(), m.authorities());

    // Opened as JWT keys: refused, naming both kinds.
    let err = JwtKeyManager::open(
        wit_config(&tmp, "wit", KeyType::EcP256),
        Some(&journal),
        at(T0 + 60),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        JwtError::JournalKindMismatch {
            journal: TokenKind::WitSvid,
            config: TokenKind::JwtSvid
        }
    ));
    assert_eq!(
        err.to_string(),
        "the key journal holds WIT-SVID keys; these keys sign JWT-SVIDs"
    );
}

#[test]
fn journals_without_a_kind_are_jwt_journals() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = wit_config(&tmp, "jwt", KeyType::EcP256);
    let jwt = JwtKeyManager::open(cfg.clone(), None, at(T0)).unwrap();
    let mut doc: Value = serde_json::from_slice(&jwt.journal_bytes().unwrap()).unwrap();
    assert_eq!(doc["kind"], "jwt-svid");
    // A journal written before WIT-SVIDs existed.
    doc.as_object_mut().unwrap().remove("kind");
    let old = serde_json::to_vec(&doc).unwrap();
    assert!(JwtKeyManager::open(cfg.clone(), Some(&old), at(T0)).is_ok());
    assert!(matches!(
        JwtKeyManager::open_for(TokenKind::WitSvid, cfg, Some(&old), at(T0)),
        Err(JwtError::JournalKindMismatch {
            journal: TokenKind::JwtSvid,
            config: TokenKind::WitSvid
        })
    ));
}
