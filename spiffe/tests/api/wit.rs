//! WIT-SVID validation: every rule with a named case, and the separation from JWT-SVIDs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use signet_spiffe::bundle::{Bundle, JwtAuthority};
use signet_spiffe::jwt::{Algorithm, JwtSvidError, validate_jwt_svid};
use signet_spiffe::wit::{
    ConfirmationKey, HolderKeyError, WitSvidError, is_media_type, validate_wit_svid,
};
use signet_spiffe::{SpiffeId, TrustDomain};

const NOW: u64 = 1_900_000_000;
const SUB: &str = "spiffe://example.org/ns/prod/agent";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An EC key and its public JWK (with `alg`).
struct EcKey {
    pair: EcdsaKeyPair,
    alg: &'static str,
}

impl EcKey {
    fn new(alg: &'static EcdsaSigningAlgorithm, name: &'static str) -> Self {
        EcKey {
            pair: EcdsaKeyPair::generate(alg).unwrap(),
            alg: name,
        }
    }

    fn p256() -> Self {
        Self::new(&ECDSA_P256_SHA256_FIXED_SIGNING, "ES256")
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        let len = (point.len() - 1) / 2;
        let crv = match len {
            32 => "P-256",
            48 => "P-384",
            _ => "P-521",
        };
        json!({
            "kty": "EC",
            "crv": crv,
            "x": b64(&point[1..=len]),
            "y": b64(&point[1 + len..]),
            "alg": self.alg,
        })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// An issuer with a WIT authority (`wit-1`) and a JWT authority (`jwt-1`, another key), and a
/// holder key.
struct Fixture {
    wit_key: EcKey,
    jwt_key: EcKey,
    holder: EcKey,
    bundle: Bundle,
}

impl Fixture {
    fn new() -> Self {
        let wit_key = EcKey::p256();
        let jwt_key = EcKey::p256();
        let mut bundle = Bundle::new(td());
        bundle.wit_authorities.push(JwtAuthority {
            key_id: "wit-1".into(),
            jwk: wit_key.jwk(),
        });
        bundle.jwt_authorities.push(JwtAuthority {
            key_id: "jwt-1".into(),
            jwk: jwt_key.jwk(),
        });
        Fixture {
            wit_key,
            jwt_key,
            holder: EcKey::p256(),
            bundle,
        }
    }

    fn header(&self) -> Value {
        json!({"alg": "ES256", "kid": "wit-1", "typ": "wit+jwt"})
    }

    fn claims(&self) -> Value {
        json!({
            "sub": SUB,
            "exp": NOW + 3600,
            "iat": NOW - 10,
            "nbf": NOW - 10,
            "jti": "wit-jti-1",
            "cnf": {"jwk": self.holder.jwk()},
        })
    }

    fn token(&self) -> String {
        self.wit_key.sign(&self.header(), &self.claims())
    }

    fn with_header(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut h = self.header();
        edit(&mut h);
        self.wit_key.sign(&h, &self.claims())
    }

    fn with_claims(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut c = self.claims();
        edit(&mut c);
        self.wit_key.sign(&self.header(), &c)
    }

    fn validate(&self, token: &str) -> Result<signet_spiffe::wit::ValidatedWitSvid, WitSvidError> {
        self.validate_at(token, now(), Duration::ZERO)
    }

    fn validate_at(
        &self,
        token: &str,
        at: SystemTime,
        leeway: Duration,
    ) -> Result<signet_spiffe::wit::ValidatedWitSvid, WitSvidError> {
        validate_wit_svid(
            token,
            |t: &TrustDomain| (t == &self.bundle.trust_domain).then_some(&self.bundle),
            at,
            leeway,
        )
    }
}

#[test]
fn valid_wit_svid_validates_and_names_its_holder_key() {
    let f = Fixture::new();
    let v = f.validate(&f.token()).unwrap();
    assert_eq!(v.spiffe_id, SpiffeId::parse(SUB).unwrap());
    assert_eq!(v.key_id, "wit-1");
    assert_eq!(v.algorithm, Algorithm::Es256);
    assert_eq!(v.expiry, UNIX_EPOCH + Duration::from_secs(NOW + 3600));
    assert_eq!(v.jti.as_deref(), Some("wit-jti-1"));
    assert_eq!(v.confirmation.algorithm, Algorithm::Es256);
    assert_eq!(v.confirmation.jwk, f.holder.jwk());
    assert_eq!(v.claims["cnf"]["jwk"], f.holder.jwk());
    // `application/wit+jwt` is the same media type (RFC 7515 4.1.9).
    let long = f.with_header(|h| h["typ"] = json!("application/wit+jwt"));
    assert!(f.validate(&long).is_ok());
    // No jti, nbf or iat: still valid (they are SHOULDs).
    let minimal = f.with_claims(|c| {
        let c = c.as_object_mut().unwrap();
        c.remove("jti");
        c.remove("nbf");
        c.remove("iat");
    });
    assert_eq!(f.validate(&minimal).unwrap().jti, None);
}

#[test]
fn missing_typ_is_refused() {
    let f = Fixture::new();
    let t = f.with_header(|h| {
        h.as_object_mut().unwrap().remove("typ");
    });
    assert_eq!(f.validate(&t), Err(WitSvidError::MissingType));
}

#[test]
fn typ_other_than_wit_jwt_is_refused() {
    let f = Fixture::new();
    for typ in ["JWT", "JOSE", "wpt+jwt", "at+jwt"] {
        let t = f.with_header(|h| h["typ"] = json!(typ));
        assert_eq!(
            f.validate(&t),
            Err(WitSvidError::UnsupportedType(typ.to_owned())),
            "{typ}"
        );
    }
}

#[test]
fn missing_or_empty_kid_is_refused() {
    let f = Fixture::new();
    let none = f.with_header(|h| {
        h.as_object_mut().unwrap().remove("kid");
    });
    assert_eq!(f.validate(&none), Err(WitSvidError::MissingKeyId));
    let empty = f.with_header(|h| h["kid"] = json!(""));
    assert_eq!(f.validate(&empty), Err(WitSvidError::MissingKeyId));
}

#[test]
fn a_jwt_authority_never_verifies_a_wit() {
    let f = Fixture::new();
    // Signed by the JWT authority's key and naming it.
    let mut h = f.header();
    h["kid"] = json!("jwt-1");
    let t = f.jwt_key.sign(&h, &f.claims());
    assert_eq!(
        f.validate(&t),
        Err(WitSvidError::UnknownKeyId {
            kid: "jwt-1".into(),
            trust_domain: "example.org".into()
        })
    );
}

#[test]
fn signed_by_another_key_is_refused() {
    let f = Fixture::new();
    let t = EcKey::p256().sign(&f.header(), &f.claims());
    assert_eq!(
        f.validate(&t),
        Err(WitSvidError::Token(JwtSvidError::BadSignature))
    );
}

#[test]
fn tampered_claims_are_refused() {
    let f = Fixture::new();
    let token = f.token();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = f.claims();
    claims["sub"] = json!("spiffe://example.org/ns/prod/admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        f.validate(&forged),
        Err(WitSvidError::Token(JwtSvidError::BadSignature))
    );
}

#[test]
fn aud_is_refused() {
    let f = Fixture::new();
    for aud in [json!("svc"), json!(["svc"]), json!([])] {
        let t = f.with_claims(|c| c["aud"] = aud.clone());
        assert_eq!(f.validate(&t), Err(WitSvidError::AudiencePresent), "{aud}");
    }
}

#[test]
fn missing_cnf_is_refused() {
    let f = Fixture::new();
    let t = f.with_claims(|c| {
        c.as_object_mut().unwrap().remove("cnf");
    });
    assert_eq!(f.validate(&t), Err(WitSvidError::MissingConfirmation));
}

#[test]
fn malformed_cnf_is_refused() {
    let f = Fixture::new();
    let cases = [
        (json!("key"), "must be a JSON object"),
        (json!({"jkt": "abc"}), "has no `jwk`"),
        (
            json!({"jwk": "abc"}),
            "has a `jwk` that is not a JSON object",
        ),
    ];
    for (cnf, reason) in cases {
        let t = f.with_claims(|c| c["cnf"] = cnf.clone());
        assert_eq!(
            f.validate(&t),
            Err(WitSvidError::InvalidConfirmation(reason)),
            "{cnf}"
        );
    }
}

#[test]
fn cnf_jwk_with_private_parameters_is_refused() {
    let f = Fixture::new();
    for field in ["d", "p", "k"] {
        let t = f.with_claims(|c| c["cnf"]["jwk"][field] = json!("AAAA"));
        assert_eq!(
            f.validate(&t),
            Err(WitSvidError::PrivateConfirmationKey(match field {
                "d" => "d",
                "p" => "p",
                _ => "k",
            })),
            "{field}"
        );
    }
}

#[test]
fn cnf_jwk_without_alg_is_refused() {
    let f = Fixture::new();
    let t = f.with_claims(|c| {
        c["cnf"]["jwk"].as_object_mut().unwrap().remove("alg");
    });
    assert_eq!(
        f.validate(&t),
        Err(WitSvidError::MissingConfirmationAlgorithm)
    );
    let t = f.with_claims(|c| c["cnf"]["jwk"]["alg"] = json!(256));
    assert!(matches!(
        f.validate(&t),
        Err(WitSvidError::InvalidConfirmation(_))
    ));
}

#[test]
fn cnf_jwk_alg_outside_the_allowlist_is_refused() {
    let f = Fixture::new();
    for alg in ["none", "HS256", "EdDSA", "es256"] {
        let t = f.with_claims(|c| c["cnf"]["jwk"]["alg"] = json!(alg));
        assert_eq!(
            f.validate(&t),
            Err(WitSvidError::DisallowedConfirmationAlgorithm(
                alg.to_owned()
            )),
            "{alg}"
        );
    }
}

#[test]
fn cnf_jwk_that_does_not_fit_its_alg_is_refused() {
    let f = Fixture::new();
    // A P-256 key marked ES384, or RS256.
    for alg in ["ES384", "RS256"] {
        let t = f.with_claims(|c| c["cnf"]["jwk"]["alg"] = json!(alg));
        assert!(
            matches!(
                f.validate(&t),
                Err(WitSvidError::InvalidConfirmationKey { .. })
            ),
            "{alg}"
        );
    }
    // A point off the curve.
    let t = f.with_claims(|c| c["cnf"]["jwk"]["y"] = c["cnf"]["jwk"]["x"].clone());
    assert_eq!(
        f.validate(&t),
        Err(WitSvidError::InvalidConfirmationKey {
            alg: Algorithm::Es256,
            reason: "(x, y) is not a point on P-256".into()
        })
    );
}

#[test]
fn expired_wit_is_refused_unless_within_leeway() {
    let f = Fixture::new();
    let t = f.token();
    let at = UNIX_EPOCH + Duration::from_secs(NOW + 3600);
    assert_eq!(
        f.validate_at(&t, at, Duration::ZERO),
        Err(WitSvidError::Token(JwtSvidError::Expired {
            exp: (NOW + 3600) as i64,
            now: (NOW + 3600) as i64,
            leeway_secs: 0
        }))
    );
    assert!(f.validate_at(&t, at, Duration::from_secs(5)).is_ok());
    let no_exp = f.with_claims(|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_eq!(
        f.validate(&no_exp),
        Err(WitSvidError::Token(JwtSvidError::MissingClaim("exp")))
    );
}

#[test]
fn not_yet_valid_wit_is_refused() {
    let f = Fixture::new();
    let t = f.with_claims(|c| c["nbf"] = json!(NOW + 60));
    assert!(matches!(
        f.validate(&t),
        Err(WitSvidError::Token(JwtSvidError::NotYetValid { .. }))
    ));
    assert!(f.validate_at(&t, now(), Duration::from_secs(60)).is_ok());
}

#[test]
fn iat_does_not_limit_validity_but_must_be_a_number() {
    let f = Fixture::new();
    // Standard 3.6: iat MUST NOT be used to limit the earliest validity.
    let future = f.with_claims(|c| c["iat"] = json!(NOW + 600));
    assert!(f.validate(&future).is_ok());
    let bad = f.with_claims(|c| c["iat"] = json!("yesterday"));
    assert!(matches!(
        f.validate(&bad),
        Err(WitSvidError::Token(JwtSvidError::InvalidClaim {
            name: "iat",
            ..
        }))
    ));
}

#[test]
fn untrusted_trust_domain_is_refused() {
    let f = Fixture::new();
    let t = f.with_claims(|c| c["sub"] = json!("spiffe://other.org/agent"));
    assert_eq!(
        f.validate(&t),
        Err(WitSvidError::Token(JwtSvidError::NoBundle(
            "other.org".into()
        )))
    );
}

#[test]
fn disallowed_algorithms_are_refused_before_any_key() {
    let f = Fixture::new();
    let header = b64(br#"{"alg":"none","kid":"wit-1","typ":"wit+jwt"}"#);
    let claims = b64(f.claims().to_string().as_bytes());
    assert_eq!(
        f.validate(&format!("{header}.{claims}.")),
        Err(WitSvidError::Token(JwtSvidError::DisallowedAlgorithm(
            "none".into()
        )))
    );
}

#[test]
fn empty_jti_is_refused() {
    let f = Fixture::new();
    for jti in [json!(""), json!(7)] {
        let t = f.with_claims(|c| c["jti"] = jti.clone());
        assert_eq!(f.validate(&t), Err(WitSvidError::InvalidJti), "{jti}");
    }
}

#[test]
fn a_jwt_svid_is_not_a_wit_svid() {
    let f = Fixture::new();
    let jwt_claims = json!({"sub": SUB, "aud": "svc", "exp": NOW + 300, "iat": NOW});
    // typ JWT, signed with the JWT authority.
    let typed = f.jwt_key.sign(
        &json!({"alg": "ES256", "kid": "jwt-1", "typ": "JWT"}),
        &jwt_claims,
    );
    assert_eq!(
        f.validate(&typed),
        Err(WitSvidError::UnsupportedType("JWT".into()))
    );
    // No typ at all.
    let untyped = f
        .jwt_key
        .sign(&json!({"alg": "ES256", "kid": "jwt-1"}), &jwt_claims);
    assert_eq!(f.validate(&untyped), Err(WitSvidError::MissingType));
    // Both are good JWT-SVIDs.
    for t in [&typed, &untyped] {
        validate_jwt_svid(
            t,
            "svc",
            |_: &TrustDomain| Some(&f.bundle),
            now(),
            Duration::ZERO,
        )
        .unwrap();
    }
}

#[test]
fn a_wit_svid_is_not_a_jwt_svid() {
    let f = Fixture::new();
    // Even with an `aud` and re-signed by the JWT authority: the `typ` gives it away.
    let mut claims = f.claims();
    claims["aud"] = json!("svc");
    let mut h = f.header();
    h["kid"] = json!("jwt-1");
    let t = f.jwt_key.sign(&h, &claims);
    assert_eq!(
        validate_jwt_svid(
            &t,
            "svc",
            |_: &TrustDomain| Some(&f.bundle),
            now(),
            Duration::ZERO
        ),
        Err(JwtSvidError::UnsupportedType("wit+jwt".into()))
    );
    // The WIT itself, as it is.
    assert_eq!(
        validate_jwt_svid(
            &f.token(),
            "svc",
            |_: &TrustDomain| Some(&f.bundle),
            now(),
            Duration::ZERO
        ),
        Err(JwtSvidError::UnsupportedType("wit+jwt".into()))
    );
}

#[test]
fn media_type_comparison() {
    assert!(is_media_type("wpt+jwt", "wpt+jwt"));
    assert!(is_media_type("application/WPT+JWT", "wpt+jwt"));
    assert!(!is_media_type("wit+jwt", "wpt+jwt"));
}

// ----- holder keys (SubjectPublicKeyInfo -> cnf.jwk) -----

fn ec_spki(alg: &'static EcdsaSigningAlgorithm) -> (Vec<u8>, Vec<u8>) {
    let pair = EcdsaKeyPair::generate(alg).unwrap();
    let der = pair.public_key().as_der().unwrap().as_ref().to_vec();
    (der, pair.public_key().as_ref().to_vec())
}

#[test]
fn ec_holder_keys_become_es256_and_es384_jwks() {
    for (alg, name, crv, len) in [
        (
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            Algorithm::Es256,
            "P-256",
            32,
        ),
        (
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            Algorithm::Es384,
            "P-384",
            48,
        ),
    ] {
        let (der, point) = ec_spki(alg);
        let key = ConfirmationKey::from_spki_der(&der).unwrap();
        assert_eq!(key.algorithm, name);
        assert_eq!(
            key.jwk,
            json!({
                "kty": "EC",
                "crv": crv,
                "x": b64(&point[1..=len]),
                "y": b64(&point[1 + len..]),
                "alg": name.as_str(),
            })
        );
    }
}

#[test]
fn rsa_holder_keys_become_rs256_jwks() {
    let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = pair.public_key().as_der().unwrap().as_ref().to_vec();
    let key = ConfirmationKey::from_spki_der(&der).unwrap();
    assert_eq!(key.algorithm, Algorithm::Rs256);
    assert_eq!(key.jwk["kty"], "RSA");
    assert_eq!(key.jwk["e"], "AQAB");
    assert_eq!(key.jwk["alg"], "RS256");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key.jwk["n"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );
}

#[test]
fn other_holder_keys_are_refused() {
    let (p521, _) = ec_spki(&ECDSA_P521_SHA512_FIXED_SIGNING);
    assert_eq!(
        ConfirmationKey::from_spki_der(&p521),
        Err(HolderKeyError::Unsupported("EC P-521".into()))
    );
    let ed = Ed25519KeyPair::generate().unwrap();
    let ed_der = ed.public_key().as_der().unwrap().as_ref().to_vec();
    assert_eq!(
        ConfirmationKey::from_spki_der(&ed_der),
        Err(HolderKeyError::Unsupported("Ed25519".into()))
    );
    assert!(matches!(
        ConfirmationKey::from_spki_der(b"garbage"),
        Err(HolderKeyError::Malformed(_))
    ));
    assert!(matches!(
        ConfirmationKey::from_spki_der(&[]),
        Err(HolderKeyError::Malformed(_))
    ));
    let (mut trailing, _) = ec_spki(&ECDSA_P256_SHA256_FIXED_SIGNING);
    trailing.push(0);
    assert_eq!(
        ConfirmationKey::from_spki_der(&trailing),
        Err(HolderKeyError::Malformed("1 bytes of trailing data".into()))
    );
}

#[test]
fn unusable_holder_keys_are_refused() {
    // A P-256 point with y replaced by x is (all but certainly) off the curve.
    let (mut der, point) = ec_spki(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let n = der.len();
    der[n - 32..].copy_from_slice(&point[1..33]);
    assert_eq!(
        ConfirmationKey::from_spki_der(&der),
        Err(HolderKeyError::Invalid(
            "(x, y) is not a point on P-256".into()
        ))
    );
    // RSA-1024: SubjectPublicKeyInfo { rsaEncryption, BIT STRING { SEQUENCE { n, e } } }.
    let mut n_bytes = vec![0x00];
    n_bytes.extend([0xc5u8; 128]);
    let tlv = |tag: u8, body: &[u8]| {
        let mut out = vec![tag];
        if body.len() < 128 {
            out.push(body.len() as u8);
        } else {
            out.push(0x81);
            out.push(body.len() as u8);
        }
        out.extend_from_slice(body);
        out
    };
    let rsa_key = tlv(
        0x30,
        &[tlv(0x02, &n_bytes), tlv(0x02, &[0x01, 0x00, 0x01])].concat(),
    );
    let alg_id = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let spki = tlv(
        0x30,
        &[alg_id.to_vec(), tlv(0x03, &[&[0u8][..], &rsa_key].concat())].concat(),
    );
    assert_eq!(
        ConfirmationKey::from_spki_der(&spki),
        Err(HolderKeyError::Invalid(
            "the RSA modulus has 1024 bits; 2048 to 8192 are accepted".into()
        ))
    );
}
