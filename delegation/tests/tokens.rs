//! Delegation tokens end to end in-process: mint, hops, offline attenuation, verification, and
//! every refusal the model requires (not the holder, widened or tampered, revoked and derived,
//! expired, too deep, unknown key), plus property tests: no sequence of offline attenuations
//! widens rights, extends expiry or adds an actor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::Algorithm;
use proptest::prelude::*;
use signet_delegation::keys::Revoked;
use signet_delegation::{
    Attenuation, Biscuit, DelegationKeys, HopRequest, KeyPair, MintRequest, Request,
    RevocationList, Subject, SubjectKind, Verifier, VerifyError, append_hop, attenuate, mint,
    read_chain,
};
use signet_spiffe::SpiffeId;

const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";
const FLIGHTS: &str = "spiffe://example.org/flights";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn rights(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn alice() -> Subject {
    Subject {
        id: "https://idp.example.com#alice".into(),
        kind: SubjectKind::User,
        issuer: "https://idp.example.com".into(),
        name: "alice@example.com".into(),
    }
}

struct Issuer {
    root: KeyPair,
    root_id: u32,
}

impl Issuer {
    fn new() -> Self {
        Self {
            root: KeyPair::new_with_algorithm(Algorithm::Ed25519),
            root_id: 7,
        }
    }

    fn keys(&self) -> DelegationKeys {
        DelegationKeys::from_keys([(self.root_id, self.root.public())])
    }

    fn mint(&self, now: SystemTime, ttl: u64, max_depth: u32) -> Biscuit {
        mint(
            &self.root,
            self.root_id,
            &MintRequest {
                token_id: "t0".into(),
                subject: alice(),
                actor: id(PLANNER),
                rights: rights(&["flights:read", "flights:book"]),
                issued_at: now,
                expires_at: now + Duration::from_secs(ttl),
                max_depth,
            },
        )
        .unwrap()
    }

    fn hop(
        &self,
        token: &Biscuit,
        to: &str,
        r: &[&str],
        at: SystemTime,
        ttl: u64,
        tid: &str,
    ) -> Biscuit {
        let chain = read_chain(token, &[self.root.public()]).unwrap();
        append_hop(
            token,
            &chain,
            &self.root,
            &HopRequest {
                token_id: tid.into(),
                next_actor: id(to),
                rights: rights(r),
                at,
                expires_at: at + Duration::from_secs(ttl),
            },
        )
        .unwrap()
    }
}

fn verify(
    v: &Verifier,
    token: &Biscuit,
    presenter: &str,
    op: &str,
    now: SystemTime,
) -> Result<signet_delegation::Decision, VerifyError> {
    v.verify(
        &token.to_base64().unwrap(),
        &Request {
            presenter,
            operation: op,
            now,
        },
    )
}

#[test]
fn the_scenario_chain_is_verified_with_subject_actors_and_rights() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t0 = iss.mint(now, 600, 2);
    let t1 = iss.hop(&t0, SEARCH, &["flights:read"], now, 300, "t1");
    let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();

    let d = verify(&v, &t1, SEARCH, "flights:read", now).unwrap();
    assert_eq!(d.chain.subject, alice());
    assert_eq!(d.chain.actors(), [PLANNER, SEARCH]);
    assert_eq!(d.chain.rights, rights(&["flights:read"]));
    assert_eq!(d.chain.token_id(), "t1");
    assert_eq!(d.chain.depth(), 1);
    let hop = &d.chain.hops[1];
    assert_eq!(hop.delegated_by.as_deref(), Some(PLANNER));
    assert_eq!(hop.parent_token_id.as_deref(), Some("t0"));
    assert_eq!(d.chain.root_key_id, Some(7));
    assert_eq!(d.chain.revocation_ids.len(), 2);
    // The first actor can use the minted token for both rights.
    assert!(verify(&v, &t0, PLANNER, "flights:book", now).is_ok());
}

#[test]
fn a_token_presented_by_anyone_but_its_holder_is_refused() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t1 = iss.hop(
        &iss.mint(now, 600, 2),
        SEARCH,
        &["flights:read"],
        now,
        300,
        "t1",
    );
    let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();
    // The previous holder and an unrelated workload.
    for presenter in [PLANNER, FLIGHTS] {
        let err = verify(&v, &t1, presenter, "flights:read", now).unwrap_err();
        assert_eq!(
            err,
            VerifyError::NotTheHolder {
                presenter: presenter.into(),
                holder: SEARCH.into()
            }
        );
    }
}

#[test]
fn hops_and_attenuations_only_narrow() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t1 = iss.hop(
        &iss.mint(now, 600, 2),
        SEARCH,
        &["flights:read"],
        now,
        300,
        "t1",
    );
    let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();
    // The hop dropped flights:book.
    let err = verify(&v, &t1, SEARCH, "flights:book", now).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Unauthorized(m) if m.contains("flights:read")),
        "{err}"
    );
    // An operation never granted.
    let err = verify(&v, &t1, SEARCH, "hotels:read", now).unwrap_err();
    assert!(matches!(&err, VerifyError::Unauthorized(_)), "{err}");

    // Offline: search narrows its own token to nothing it does not already have...
    let narrowed = attenuate(
        &t1,
        &Attenuation {
            rights: Some(rights(&["flights:read", "flights:book"])),
            expires_at: Some(now + Duration::from_secs(60)),
        },
    )
    .unwrap();
    assert!(verify(&v, &narrowed, SEARCH, "flights:read", now).is_ok());
    assert!(
        verify(&v, &narrowed, SEARCH, "flights:book", now).is_err(),
        "still no book"
    );
    assert!(
        verify(
            &v,
            &narrowed,
            SEARCH,
            "flights:read",
            now + Duration::from_secs(120)
        )
        .is_err(),
        "its own shorter expiry"
    );
}

#[test]
fn an_untrusted_block_cannot_add_an_actor_or_a_right() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t0 = iss.mint(now, 600, 2);
    // A holder appends facts claiming a new actor and right (first-party block).
    let forged = t0
        .append(
            biscuit_auth::BlockBuilder::new()
                .code(format!(
                    r#"actor(1, "{FLIGHTS}"); hop(1, "evil", "t0"); delegated_by(1, "{PLANNER}");
                       hop_rights(1, ["admin"]); hop_time(1, 2026-01-01T00:00:00Z);
                       hop_expires(1, 2099-01-01T00:00:00Z); right("admin");"#
                ))
                .unwrap(),
        )
        .unwrap();
    let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();
    let d = verify(&v, &forged, PLANNER, "flights:read", now).unwrap();
    assert_eq!(d.chain.actors(), [PLANNER], "the forged actor is ignored");
    assert!(verify(&v, &forged, FLIGHTS, "flights:read", now).is_err());
    assert!(verify(&v, &forged, PLANNER, "admin", now).is_err());

    // The same as a third-party block signed by a key the verifier does not trust.
    let attacker = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let req = t0.third_party_request().unwrap();
    let block = biscuit_auth::BlockBuilder::new()
        .code(format!(r#"actor(1, "{FLIGHTS}"); hop(1, "evil", "t0");"#))
        .unwrap();
    let signed = req.create_block(&attacker.private(), block).unwrap();
    let forged = t0.append_third_party(attacker.public(), signed).unwrap();
    let d = verify(&v, &forged, PLANNER, "flights:read", now).unwrap();
    assert_eq!(d.chain.actors(), [PLANNER]);
    assert!(matches!(
        verify(&v, &forged, FLIGHTS, "flights:read", now),
        Err(VerifyError::NotTheHolder { .. })
    ));
}

#[test]
fn tampered_forged_and_unknown_key_tokens_are_refused() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let token = iss.mint(now, 600, 2).to_base64().unwrap();
    let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();
    let req = Request {
        presenter: PLANNER,
        operation: "flights:read",
        now,
    };
    // Flip one byte of the signed payload.
    let mut bytes = base64_decode(&token);
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    let tampered = base64_encode(&bytes);
    let err = v.verify(&tampered, &req).unwrap_err();
    assert!(
        matches!(err, VerifyError::Signature(_) | VerifyError::Malformed(_)),
        "{err}"
    );
    // Minted by another key under the same id: the signature does not verify.
    let other = Issuer {
        root: KeyPair::new_with_algorithm(Algorithm::Ed25519),
        root_id: 7,
    };
    let err = v
        .verify(&other.mint(now, 600, 2).to_base64().unwrap(), &req)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Signature(_)), "{err}");
    // A root key id nobody published.
    let stranger = Issuer {
        root: KeyPair::new_with_algorithm(Algorithm::Ed25519),
        root_id: 99,
    };
    let err = v
        .verify(&stranger.mint(now, 600, 2).to_base64().unwrap(), &req)
        .unwrap_err();
    assert_eq!(err, VerifyError::UnknownRootKey(Some(99)));
    assert!(matches!(
        v.verify("not a token", &req),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn revoking_a_token_revokes_everything_derived_from_it() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t0 = iss.mint(now, 600, 3);
    let t1 = iss.hop(&t0, SEARCH, &["flights:read"], now, 300, "t1");
    let t2 = iss.hop(&t1, FLIGHTS, &["flights:read"], now, 300, "t2");
    let offline = attenuate(&t1, &Attenuation::default()).unwrap();
    let c1 = read_chain(&t1, &[iss.root.public()]).unwrap();
    // Revoke t1: its own (last) block.
    let list = RevocationList {
        revoked: vec![Revoked {
            revocation_id: c1.revocation_ids.last().unwrap().clone(),
            token_id: "t1".into(),
            revoked_at: 0,
        }],
        sequence: 1,
    };
    let v = Verifier::new(iss.keys(), &list).unwrap();
    for (t, who, tid) in [
        (&t1, SEARCH, "t1"),
        (&t2, FLIGHTS, "t2"),
        (&offline, SEARCH, "t1"),
    ] {
        let err = verify(&v, t, who, "flights:read", now).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Revoked { token_id, .. } if token_id == tid),
            "{err}"
        );
    }
    // The parent is untouched.
    assert!(verify(&v, &t0, PLANNER, "flights:read", now).is_ok());
}

#[test]
fn expired_tokens_and_chains_deeper_than_allowed_are_refused() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t0 = iss.mint(now, 60, 1);
    let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();
    let later = now + Duration::from_secs(120);
    let err = verify(&v, &t0, PLANNER, "flights:read", later).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
    // A hop's shorter expiry applies to the derived token only.
    let t1 = iss.hop(&t0, SEARCH, &["flights:read"], now, 10, "t1");
    assert!(matches!(
        verify(
            &v,
            &t1,
            SEARCH,
            "flights:read",
            now + Duration::from_secs(30)
        ),
        Err(VerifyError::Expired { .. })
    ));
    // Depth: max_depth 1 allows one hop; a second one (the issuer would refuse it) is refused.
    let t2 = iss.hop(&t1, FLIGHTS, &["flights:read"], now, 10, "t2");
    assert_eq!(
        verify(&v, &t2, FLIGHTS, "flights:read", now).unwrap_err(),
        VerifyError::TooDeep { depth: 2, max: 1 }
    );
    // The resource server's own limit.
    let strict = Verifier::new(iss.keys(), &RevocationList::default())
        .unwrap()
        .with_max_depth(0);
    assert_eq!(
        verify(&strict, &t1, SEARCH, "flights:read", now).unwrap_err(),
        VerifyError::TooDeep { depth: 1, max: 0 }
    );
}

#[test]
fn the_resource_server_policy_sees_the_chain_and_the_subject() {
    let iss = Issuer::new();
    let now = SystemTime::now();
    let t1 = iss.hop(
        &iss.mint(now, 600, 2),
        SEARCH,
        &["flights:read"],
        now,
        300,
        "t1",
    );
    let only_via_planner = Verifier::new(iss.keys(), &RevocationList::default())
        .unwrap()
        .with_policy(&format!(
            r#"allow if chain_actor(0, "{PLANNER}"), subject_type("user");"#
        ))
        .unwrap();
    assert!(verify(&only_via_planner, &t1, SEARCH, "flights:read", now).is_ok());
    let only_bob = Verifier::new(iss.keys(), &RevocationList::default())
        .unwrap()
        .with_policy(r#"allow if subject("https://idp.example.com#bob");"#)
        .unwrap();
    let err = verify(&only_bob, &t1, SEARCH, "flights:read", now).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Unauthorized(m) if m.contains("no policy")),
        "{err}"
    );
    assert!(
        Verifier::new(iss.keys(), &RevocationList::default())
            .unwrap()
            .with_policy("allow if (")
            .is_err()
    );
}

#[test]
fn p256_root_keys_work_too_and_keys_round_trip_through_json() {
    let iss = Issuer {
        root: KeyPair::new_with_algorithm(Algorithm::Secp256r1),
        root_id: 1,
    };
    let now = SystemTime::now();
    let t1 = iss.hop(
        &iss.mint(now, 600, 2),
        SEARCH,
        &["flights:read"],
        now,
        300,
        "t1",
    );
    let keys = DelegationKeys::from_json(iss.keys().to_json().as_bytes()).unwrap();
    assert_eq!(keys.infos()[0].algorithm, "secp256r1");
    let v = Verifier::new(keys, &RevocationList::default()).unwrap();
    assert!(verify(&v, &t1, SEARCH, "flights:read", now).is_ok());
    assert!(DelegationKeys::from_json(br#"{"keys":[{"root_key_id":1,"algorithm":"ed25519","public_key":"ed25519/zz","state":"active","not_after":0}]}"#).is_err());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(b)
}

/// An offline attenuation step a holder might try.
#[derive(Debug, Clone)]
enum Step {
    Rights(Vec<String>),
    Expiry(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let right = prop::sample::select(vec![
        "flights:read",
        "flights:book",
        "hotels:read",
        "admin",
        "*",
    ]);
    prop_oneof![
        prop::collection::vec(right, 0..4)
            .prop_map(|v| Step::Rights(v.into_iter().map(str::to_owned).collect())),
        (0u64..2000).prop_map(Step::Expiry),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever a holder appends offline, the token authorizes no operation it did not authorize
    /// before, at no time after its expiry, and for no presenter other than its holder.
    #[test]
    fn offline_attenuation_never_widens(steps in prop::collection::vec(step(), 1..5), probe in 0u64..1500) {
        let iss = Issuer::new();
        let now = SystemTime::now();
        let base = iss.hop(&iss.mint(now, 600, 2), SEARCH, &["flights:read"], now, 300, "t1");
        let v = Verifier::new(iss.keys(), &RevocationList::default()).unwrap();
        let mut token = base.clone();
        for s in &steps {
            let a = match s {
                Step::Rights(r) => Attenuation { rights: Some(r.iter().cloned().collect()), expires_at: None },
                Step::Expiry(secs) => Attenuation { rights: None, expires_at: Some(now + Duration::from_secs(*secs)) },
            };
            token = attenuate(&token, &a).unwrap();
        }
        let when = now + Duration::from_secs(probe);
        for op in ["flights:read", "flights:book", "hotels:read", "admin", "*"] {
            for presenter in [PLANNER, SEARCH, FLIGHTS] {
                let after = verify(&v, &token, presenter, op, when);
                if let Ok(d) = &after {
                    // Allowed now => allowed on the base token, with the same chain.
                    let before = verify(&v, &base, presenter, op, when);
                    prop_assert!(before.is_ok(), "{op} by {presenter} at +{probe}s widened");
                    prop_assert_eq!(d.chain.actors(), vec![PLANNER, SEARCH]);
                    prop_assert!(d.chain.expires_at <= before.unwrap().chain.expires_at);
                }
            }
        }
    }
}
