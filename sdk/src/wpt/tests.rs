//! Every refusal of [`WptVerifier::verify`] and [`mint_wpt`], each with a named case.

use std::sync::Arc;

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use signet_spiffe::bundle::JwtAuthority;

use super::*;

const NOW: u64 = 1_900_000_000;
const AUD: &str = "https://orders.example.org/v1/orders";
const SUB: &str = "spiffe://example.org/agents/planner";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn at(offset: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW.saturating_add_signed(offset))
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// An issuer (its WIT authority `wit-1` in the bundle, a JWT authority `jwt-1` of another key)
/// and a workload holding `holder`.
struct Fixture {
    issuer: WitKey,
    bundle: Arc<Bundle>,
    holder: WitKey,
}

impl Fixture {
    fn new() -> Self {
        let issuer = WitKey::generate(Algorithm::Es256).unwrap();
        let mut bundle = Bundle::new(td());
        bundle.wit_authorities.push(JwtAuthority {
            key_id: "wit-1".into(),
            jwk: issuer.public_jwk(),
        });
        bundle.jwt_authorities.push(JwtAuthority {
            key_id: "jwt-1".into(),
            jwk: WitKey::generate(Algorithm::Es256).unwrap().public_jwk(),
        });
        Fixture {
            issuer,
            bundle: Arc::new(bundle),
            holder: WitKey::generate(Algorithm::Es256).unwrap(),
        }
    }

    fn wit_claims(&self) -> Value {
        json!({
            "sub": SUB,
            "iat": NOW - 60,
            "nbf": NOW - 60,
            "exp": NOW + 3600,
            "jti": "wit-1-jti",
            "cnf": {"jwk": self.holder.public_jwk()},
        })
    }

    fn wit_with(&self, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header = json!({"alg": "ES256", "kid": "wit-1", "typ": "wit+jwt"});
        let mut claims = self.wit_claims();
        edit(&mut header, &mut claims);
        self.issuer.sign_compact(&header, &claims).unwrap()
    }

    fn wit(&self) -> String {
        self.wit_with(|_, _| {})
    }

    fn wpt(&self, wit: &str) -> String {
        mint_wpt(
            wit,
            &self.holder,
            AUD,
            Duration::from_secs(60),
            now(),
            &BoundTokens::default(),
        )
        .unwrap()
    }

    /// A WPT for `wit` with hand-made header and claims, signed by `key`.
    fn wpt_by(&self, key: &WitKey, wit: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header = json!({"alg": key.algorithm().as_str(), "typ": "wpt+jwt"});
        let mut claims = json!({
            "aud": AUD,
            "iat": NOW,
            "exp": NOW + 60,
            "jti": format!("jti-{}", token_hash(&format!("{:?}", std::time::Instant::now()))),
            "wth": token_hash(wit),
        });
        edit(&mut header, &mut claims);
        key.sign_compact(&header, &claims).unwrap()
    }

    fn wpt_with(&self, wit: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        self.wpt_by(&self.holder, wit, edit)
    }

    fn verify_with(
        &self,
        verifier: &WptVerifier,
        wit: &str,
        wpt: &str,
        bound: BoundTokens<'_>,
        when: SystemTime,
    ) -> Result<VerifiedCaller, WptError> {
        let request = WptRequest {
            wit,
            wpt,
            audience: AUD,
            bound,
        };
        verifier.verify(
            &request,
            |t: &TrustDomain| (*t == self.bundle.trust_domain).then(|| self.bundle.clone()),
            when,
        )
    }

    fn verify(&self, wit: &str, wpt: &str) -> Result<VerifiedCaller, WptError> {
        self.verify_with(&WptVerifier::new(), wit, wpt, BoundTokens::default(), now())
    }
}

#[test]
fn a_wit_with_its_fresh_wpt_verifies() {
    let f = Fixture::new();
    let wit = f.wit();
    let wpt = f.wpt(&wit);
    let caller = f.verify(&wit, &wpt).unwrap();
    assert_eq!(caller.spiffe_id.to_string(), SUB);
    assert_eq!(caller.wit.key_id, "wit-1");
    assert_eq!(caller.wit.jti.as_deref(), Some("wit-1-jti"));
    assert_eq!(caller.wpt_expiry, at(60));
    assert_eq!(caller.wpt_jti.len(), 22);
}

#[test]
fn minted_wpts_have_the_draft_02_shape() {
    let f = Fixture::new();
    let wit = f.wit();
    let other = [("X-Request-Context", "  ctx-token\t")];
    let wpt = mint_wpt(
        &wit,
        &f.holder,
        AUD,
        Duration::from_secs(30),
        now(),
        &BoundTokens {
            txn_token: Some("txn"),
            access_token: None,
            other: &other,
        },
    )
    .unwrap();
    let jws = Jws::parse(&wpt).unwrap();
    assert_eq!(
        Value::Object(jws.header.clone()),
        json!({"alg": "ES256", "typ": "wpt+jwt"})
    );
    let claims: Value = serde_json::from_slice(&jws.payload).unwrap();
    let jti = claims["jti"].as_str().unwrap().to_owned();
    assert_eq!(jti.len(), 22);
    assert_eq!(
        claims,
        json!({
            "aud": AUD,
            "iat": NOW,
            "exp": NOW + 30,
            "jti": jti,
            "wth": token_hash(&wit),
            "tth": token_hash("txn"),
            "oth": {"x-request-context": token_hash("ctx-token")},
        })
    );
    // Two WPTs never share a jti.
    assert_ne!(Jws::parse(&f.wpt(&wit)).unwrap().payload, jws.payload);
    // wth is base64url SHA-256 of the WIT: 43 characters.
    assert_eq!(token_hash(&wit).len(), 43);
}

#[test]
fn wrong_typ_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    for typ in ["JWT", "wit+jwt", "dpop+jwt"] {
        let wpt = f.wpt_with(&wit, |h, _| h["typ"] = json!(typ));
        assert_eq!(
            f.verify(&wit, &wpt),
            Err(WptError::UnsupportedType(typ.into())),
            "{typ}"
        );
    }
    let wpt = f.wpt_with(&wit, |h, _| {
        h.as_object_mut().unwrap().remove("typ");
    });
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::MissingType));
    // The media type with its prefix is the same type.
    let wpt = f.wpt_with(&wit, |h, _| h["typ"] = json!("application/wpt+jwt"));
    assert!(f.verify(&wit, &wpt).is_ok());
}

#[test]
fn alg_other_than_the_cnf_alg_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let p384 = WitKey::generate(Algorithm::Es384).unwrap();
    let wpt = f.wpt_by(&p384, &wit, |_, _| {});
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::AlgorithmMismatch {
            wpt: Algorithm::Es384,
            wit: Algorithm::Es256
        })
    );
    // alg none or HS256 never get to the key.
    for alg in ["none", "HS256"] {
        let wpt = f.wpt_with(&wit, |h, _| h["alg"] = json!(alg));
        assert_eq!(
            f.verify(&wit, &wpt),
            Err(WptError::Malformed(JwtSvidError::DisallowedAlgorithm(
                alg.into()
            )))
        );
    }
}

#[test]
fn signed_by_another_key_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let thief = WitKey::generate(Algorithm::Es256).unwrap();
    let wpt = f.wpt_by(&thief, &wit, |_, _| {});
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::BadSignature));
    // A tampered WPT likewise.
    let good = f.wpt(&wit);
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(NOW + 120);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(f.verify(&wit, &forged), Err(WptError::BadSignature));
}

#[test]
fn wth_of_another_wit_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    // Another WIT of the same workload and key (a later one, say).
    let other = f.wit_with(|_, c| c["jti"] = json!("wit-2-jti"));
    let wpt = f.wpt(&other);
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::WitHashMismatch));
    let wpt = f.wpt_with(&wit, |_, c| {
        c.as_object_mut().unwrap().remove("wth");
    });
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::MissingClaim("wth")));
    let wpt = f.wpt_with(&wit, |_, c| c["wth"] = json!(7));
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::InvalidClaim { name: "wth", .. })
    ));
}

#[test]
fn wrong_aud_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let other = "https://payments.example.org/v1/orders";
    let wpt = f.wpt_with(&wit, |_, c| c["aud"] = json!(other));
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::AudienceMismatch {
            expected: AUD.into(),
            actual: vec![other.into()]
        })
    );
    // Several audiences: not scoped to this target.
    let wpt = f.wpt_with(&wit, |_, c| c["aud"] = json!([AUD, other]));
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::AudienceMismatch { .. })
    ));
    // One audience in an array is the same audience.
    let wpt = f.wpt_with(&wit, |_, c| c["aud"] = json!([AUD]));
    assert!(f.verify(&wit, &wpt).is_ok());
    let wpt = f.wpt_with(&wit, |_, c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::MissingClaim("aud")));
    let wpt = f.wpt_with(&wit, |_, c| c["aud"] = json!(1));
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::InvalidClaim { name: "aud", .. })
    ));
    // The expected audience must be set.
    let request = WptRequest {
        wit: &wit,
        wpt: &f.wpt(&wit),
        audience: "",
        bound: BoundTokens::default(),
    };
    assert_eq!(
        WptVerifier::new().verify(&request, |_: &TrustDomain| Some(f.bundle.clone()), now()),
        Err(WptError::EmptyAudience)
    );
}

#[test]
fn expired_wpt_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let wpt = f.wpt(&wit);
    let v = WptVerifier::new().with_leeway(Duration::ZERO);
    assert_eq!(
        f.verify_with(&v, &wit, &wpt, BoundTokens::default(), at(60)),
        Err(WptError::Expired {
            exp: (NOW + 60) as i64,
            now: (NOW + 60) as i64,
            leeway_secs: 0
        })
    );
    // Within the default leeway of 5 s it still verifies (once).
    assert!(
        f.verify_with(
            &WptVerifier::new(),
            &wit,
            &wpt,
            BoundTokens::default(),
            at(64)
        )
        .is_ok()
    );
    let wpt = f.wpt_with(&wit, |_, c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::MissingClaim("exp")));
    let wpt = f.wpt_with(&wit, |_, c| c["exp"] = json!("soon"));
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::InvalidClaim { name: "exp", .. })
    ));
}

#[test]
fn too_long_lived_wpt_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    // 10 minutes from iat: twice the default maximum.
    let wpt = f.wpt_with(&wit, |_, c| c["exp"] = json!(NOW + 600));
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::TooLongLived {
            lifetime_secs: 600,
            max_secs: 300
        })
    );
    // An iat close to exp does not hide a far exp: measured from now as well.
    let wpt = f.wpt_with(&wit, |_, c| {
        c["iat"] = json!(NOW + 3);
        c["exp"] = json!(NOW + 3600);
    });
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::TooLongLived { .. })
    ));
    let wpt = f.wpt_with(&wit, |_, c| {
        c.as_object_mut().unwrap().remove("iat");
        c["exp"] = json!(NOW + 400);
    });
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::TooLongLived {
            lifetime_secs: 400,
            max_secs: 300
        })
    );
    // A stricter verifier refuses a 60 s WPT.
    let strict = WptVerifier::new().with_max_lifetime(Duration::from_secs(30));
    assert!(matches!(
        f.verify_with(&strict, &wit, &f.wpt(&wit), BoundTokens::default(), now()),
        Err(WptError::TooLongLived {
            lifetime_secs: 60,
            max_secs: 30
        })
    ));
}

#[test]
fn wpt_from_the_future_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let wpt = f.wpt_with(&wit, |_, c| {
        c["iat"] = json!(NOW + 60);
        c["exp"] = json!(NOW + 90);
    });
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::IssuedInFuture { iat, .. }) if iat == (NOW + 60) as i64
    ));
    let wpt = f.wpt_with(&wit, |_, c| c["nbf"] = json!(NOW + 30));
    assert!(matches!(
        f.verify(&wit, &wpt),
        Err(WptError::NotYetValid { .. })
    ));
}

#[test]
fn missing_or_bad_jti_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let wpt = f.wpt_with(&wit, |_, c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    assert_eq!(f.verify(&wit, &wpt), Err(WptError::MissingClaim("jti")));
    for bad in [json!(""), json!(5), json!("j".repeat(MAX_JTI_LEN + 1))] {
        let wpt = f.wpt_with(&wit, |_, c| c["jti"] = bad.clone());
        assert!(
            matches!(
                f.verify(&wit, &wpt),
                Err(WptError::InvalidClaim { name: "jti", .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn replayed_wpt_is_refused() {
    let f = Fixture::new();
    let verifier = WptVerifier::new();
    let wit = f.wit();
    let wpt = f.wpt(&wit);
    let first = f
        .verify_with(&verifier, &wit, &wpt, BoundTokens::default(), now())
        .unwrap();
    assert_eq!(
        f.verify_with(&verifier, &wit, &wpt, BoundTokens::default(), at(1)),
        Err(WptError::Replayed {
            jti: first.wpt_jti.clone()
        })
    );
    // A new WPT is fine.
    assert!(
        f.verify_with(&verifier, &wit, &f.wpt(&wit), BoundTokens::default(), at(1))
            .is_ok()
    );
    // The same jti from another workload is another WPT (replay is per sender).
    let other_wit = f.wit_with(|_, c| c["sub"] = json!("spiffe://example.org/agents/other"));
    let same_jti = f.wpt_with(&other_wit, |_, c| c["jti"] = json!(first.wpt_jti.clone()));
    assert!(
        f.verify_with(
            &verifier,
            &other_wit,
            &same_jti,
            BoundTokens::default(),
            at(1)
        )
        .is_ok()
    );
}

#[test]
fn the_replay_cache_is_bounded_and_forgets_expired_jtis() {
    let f = Fixture::new();
    let verifier = WptVerifier::new().with_replay_capacity(1);
    let wit = f.wit();
    let first = f.wpt(&wit);
    f.verify_with(&verifier, &wit, &first, BoundTokens::default(), now())
        .unwrap();
    let second = f.wpt(&wit);
    assert_eq!(
        f.verify_with(&verifier, &wit, &second, BoundTokens::default(), now()),
        Err(WptError::ReplayCacheFull { capacity: 1 })
    );
    // Once the first WPT expired (exp + leeway), its jti is forgotten and the cache has room; the
    // first WPT itself stays refused, as expired.
    let later = mint_wpt(
        &wit,
        &f.holder,
        AUD,
        Duration::from_secs(60),
        at(65),
        &BoundTokens::default(),
    )
    .unwrap();
    assert!(
        f.verify_with(&verifier, &wit, &later, BoundTokens::default(), at(65))
            .is_ok()
    );
    assert!(matches!(
        f.verify_with(&verifier, &wit, &first, BoundTokens::default(), at(66)),
        Err(WptError::Expired { .. })
    ));
}

#[test]
fn tampered_wit_is_refused() {
    let f = Fixture::new();
    let wit = f.wit();
    let parts: Vec<&str> = wit.split('.').collect();
    let mut claims = f.wit_claims();
    claims["sub"] = json!("spiffe://example.org/admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    // The holder signs a perfect WPT for the forged WIT: the WIT itself fails.
    let wpt = f.wpt(&forged);
    assert_eq!(
        f.verify(&forged, &wpt),
        Err(WptError::Wit(WitSvidError::Token(
            JwtSvidError::BadSignature
        )))
    );
}

#[test]
fn wit_from_an_untrusted_trust_domain_is_refused() {
    let f = Fixture::new();
    let wit = f.wit_with(|_, c| c["sub"] = json!("spiffe://evil.example/agents/planner"));
    let wpt = f.wpt(&wit);
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::Wit(WitSvidError::Token(JwtSvidError::NoBundle(
            "evil.example".into()
        ))))
    );
}

#[test]
fn wit_with_aud_is_refused() {
    let f = Fixture::new();
    let wit = f.wit_with(|_, c| c["aud"] = json!(AUD));
    let wpt = f.wpt(&wit);
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::Wit(WitSvidError::AudiencePresent))
    );
}

#[test]
fn wit_without_cnf_is_refused() {
    let f = Fixture::new();
    let wit = f.wit_with(|_, c| {
        c.as_object_mut().unwrap().remove("cnf");
    });
    // The client cannot even mint for it...
    assert_eq!(
        mint_wpt(
            &wit,
            &f.holder,
            AUD,
            Duration::from_secs(60),
            now(),
            &BoundTokens::default()
        ),
        Err(WptError::Wit(WitSvidError::MissingConfirmation))
    );
    // ...and a hand-made WPT does not help.
    let wpt = f.wpt_with(&wit, |_, _| {});
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::Wit(WitSvidError::MissingConfirmation))
    );
}

#[test]
fn jwt_svid_presented_as_a_wit_is_refused() {
    let f = Fixture::new();
    let wit = f.wit_with(|h, _| h["typ"] = json!("JWT"));
    let wpt = f.wpt(&wit);
    assert_eq!(
        f.verify(&wit, &wpt),
        Err(WptError::Wit(WitSvidError::UnsupportedType("JWT".into())))
    );
    // Signed by the JWT authority's kid: not a WIT authority.
    let wit = f.wit_with(|h, _| h["kid"] = json!("jwt-1"));
    assert!(matches!(
        f.verify(&wit, &f.wpt(&wit)),
        Err(WptError::Wit(WitSvidError::UnknownKeyId { .. }))
    ));
}

#[test]
fn expired_wit_is_refused_even_with_a_fresh_wpt() {
    let f = Fixture::new();
    let wit = f.wit_with(|_, c| c["exp"] = json!(NOW - 10));
    assert!(matches!(
        f.verify(&wit, &f.wpt(&wit)),
        Err(WptError::Wit(WitSvidError::Token(
            JwtSvidError::Expired { .. }
        )))
    ));
}

#[test]
fn txn_token_binding() {
    let f = Fixture::new();
    let wit = f.wit();
    let txn = BoundTokens {
        txn_token: Some("txn-token-value"),
        ..BoundTokens::default()
    };
    let good = mint_wpt(&wit, &f.holder, AUD, Duration::from_secs(60), now(), &txn).unwrap();
    assert!(
        f.verify_with(&WptVerifier::new(), &wit, &good, txn, now())
            .is_ok()
    );
    // The request carries a Txn-Token the WPT does not bind.
    assert_eq!(
        f.verify_with(&WptVerifier::new(), &wit, &f.wpt(&wit), txn, now()),
        Err(WptError::UnboundToken {
            claim: "tth".into()
        })
    );
    // The WPT binds a Txn-Token the request does not carry.
    assert_eq!(
        f.verify_with(
            &WptVerifier::new(),
            &wit,
            &good,
            BoundTokens::default(),
            now()
        ),
        Err(WptError::UnexpectedBinding {
            claim: "tth".into()
        })
    );
    // Another Txn-Token.
    let swapped = BoundTokens {
        txn_token: Some("another-txn-token"),
        ..BoundTokens::default()
    };
    assert_eq!(
        f.verify_with(&WptVerifier::new(), &wit, &good, swapped, now()),
        Err(WptError::BoundTokenMismatch {
            claim: "tth".into()
        })
    );
}

#[test]
fn access_token_binding_of_draft_01() {
    let f = Fixture::new();
    let wit = f.wit();
    let at_bound = BoundTokens {
        access_token: Some("access-token"),
        ..BoundTokens::default()
    };
    let wpt = mint_wpt(
        &wit,
        &f.holder,
        AUD,
        Duration::from_secs(60),
        now(),
        &at_bound,
    )
    .unwrap();
    assert!(
        f.verify_with(&WptVerifier::new(), &wit, &wpt, at_bound, now())
            .is_ok()
    );
    let wrong = BoundTokens {
        access_token: Some("stolen-token"),
        ..BoundTokens::default()
    };
    assert_eq!(
        f.verify_with(&WptVerifier::new(), &wit, &wpt, wrong, now()),
        Err(WptError::BoundTokenMismatch {
            claim: "ath".into()
        })
    );
    let wpt = f.wpt_with(&wit, |_, c| c["ath"] = json!(["x"]));
    assert!(matches!(
        f.verify_with(&WptVerifier::new(), &wit, &wpt, at_bound, now()),
        Err(WptError::InvalidClaim { name: "ath", .. })
    ));
}

#[test]
fn other_token_binding() {
    let f = Fixture::new();
    let wit = f.wit();
    let other = [("User-Context", "ctx")];
    let bound = BoundTokens {
        other: &other,
        ..BoundTokens::default()
    };
    let wpt = mint_wpt(&wit, &f.holder, AUD, Duration::from_secs(60), now(), &bound).unwrap();
    // The header name is case-insensitive, the value trimmed.
    let same = [("user-context", " ctx ")];
    assert!(
        f.verify_with(
            &WptVerifier::new(),
            &wit,
            &wpt,
            BoundTokens {
                other: &same,
                ..BoundTokens::default()
            },
            now()
        )
        .is_ok()
    );
    // An `oth` entry the request does not explain is not understood: refused.
    let extra =
        f.wpt_with(
            &wit,
            |_, c| {
                c["oth"] = json!({"user-context": token_hash("ctx"), "x-other": token_hash("y")})
            },
        );
    assert_eq!(
        f.verify_with(&WptVerifier::new(), &wit, &extra, bound, now()),
        Err(WptError::UnexpectedBinding {
            claim: "oth.x-other".into()
        })
    );
    // A token of the request the WPT does not bind.
    assert_eq!(
        f.verify_with(&WptVerifier::new(), &wit, &f.wpt(&wit), bound, now()),
        Err(WptError::UnboundToken {
            claim: "oth.user-context".into()
        })
    );
    let changed = [("User-Context", "other-ctx")];
    assert_eq!(
        f.verify_with(
            &WptVerifier::new(),
            &wit,
            &wpt,
            BoundTokens {
                other: &changed,
                ..BoundTokens::default()
            },
            now()
        ),
        Err(WptError::BoundTokenMismatch {
            claim: "oth.user-context".into()
        })
    );
    let bad = f.wpt_with(&wit, |_, c| c["oth"] = json!("x"));
    assert!(matches!(
        f.verify_with(&WptVerifier::new(), &wit, &bad, bound, now()),
        Err(WptError::InvalidClaim { name: "oth", .. })
    ));
    let bad = f.wpt_with(&wit, |_, c| c["oth"] = json!({"user-context": 1}));
    assert!(matches!(
        f.verify_with(&WptVerifier::new(), &wit, &bad, bound, now()),
        Err(WptError::InvalidClaim { name: "oth", .. })
    ));
    // Unusable bound tokens from the caller.
    for other in [[("A", "1"), ("a", "2")], [("", "1"), ("b", "2")]] {
        let bound = BoundTokens {
            other: &other,
            ..BoundTokens::default()
        };
        assert!(matches!(
            mint_wpt(&wit, &f.holder, AUD, Duration::from_secs(60), now(), &bound),
            Err(WptError::InvalidBoundTokens(_))
        ));
        assert!(matches!(
            f.verify_with(&WptVerifier::new(), &wit, &wpt, bound, now()),
            Err(WptError::InvalidBoundTokens(_))
        ));
    }
}

#[test]
fn mint_refuses_what_would_never_verify() {
    let f = Fixture::new();
    let wit = f.wit();
    let stranger = WitKey::generate(Algorithm::Es256).unwrap();
    let mint = |key: &WitKey, aud: &str, ttl: u64, wit: &str| {
        mint_wpt(
            wit,
            key,
            aud,
            Duration::from_secs(ttl),
            now(),
            &BoundTokens::default(),
        )
    };
    assert_eq!(mint(&stranger, AUD, 60, &wit), Err(WptError::KeyNotBound));
    assert_eq!(mint(&f.holder, "", 60, &wit), Err(WptError::EmptyAudience));
    for ttl in [0, 301] {
        assert_eq!(
            mint(&f.holder, AUD, ttl, &wit),
            Err(WptError::InvalidLifetime {
                requested_secs: ttl,
                max_secs: 300
            })
        );
    }
    assert!(matches!(
        mint(&f.holder, AUD, 60, "not.a.wit"),
        Err(WptError::Wit(WitSvidError::Token(_)))
    ));
    // The WIT binds the key with another alg: refused too.
    let relabelled = f.wit_with(|_, c| c["cnf"]["jwk"]["alg"] = json!("ES384"));
    assert!(mint(&f.holder, AUD, 60, &relabelled).is_err());
}

#[test]
fn rsa_bound_wits_verify_with_an_rs256_wpt() {
    // The verifier takes every algorithm of the profile; the issuer binds RSA keys as RS256.
    let f = Fixture::new();
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    let spki = rsa.public_key().as_der().unwrap();
    let cnf = ConfirmationKey::from_spki_der(spki.as_ref()).unwrap();
    assert_eq!(cnf.algorithm, Algorithm::Rs256);
    let wit = f.wit_with(|_, c| c["cnf"]["jwk"] = cnf.jwk.clone());
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"wpt+jwt"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({"aud": AUD, "iat": NOW, "exp": NOW + 60, "jti": "rsa-1", "wth": token_hash(&wit)})
                .to_string()
        )
    );
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let wpt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(f.verify(&wit, &wpt).unwrap().wpt_jti, "rsa-1");
    // An ES256 WPT for the RSA-bound WIT: wrong algorithm.
    assert_eq!(
        f.verify(&wit, &f.wpt_with(&wit, |_, _| {})),
        Err(WptError::AlgorithmMismatch {
            wpt: Algorithm::Es256,
            wit: Algorithm::Rs256
        })
    );
}

#[test]
fn the_verifier_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<WptVerifier>();
    shareable::<WitKey>();
    assert!(format!("{:?}", WptVerifier::new()).contains("max_lifetime"));
}
