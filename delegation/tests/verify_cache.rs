//! The verifier's signature cache changes no decision: a verifier with a cache answers exactly
//! as one without, for the same token presented again and again while the revocation list, the
//! time, the presenter, the operation and the policy change; a key change empties it; a tampered
//! copy of a cached token is verified afresh (and refused).

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

fn rights(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| s.to_string()).collect()
}

/// t0 (planner, read+book, 600 s, depth 2) -> t1 (search, read, 300 s) -> t2 (flights, read).
fn chain(root: &KeyPair, now: SystemTime) -> Vec<Biscuit> {
    let t0 = mint(
        root,
        3,
        &MintRequest {
            token_id: "t0".into(),
            subject: Subject {
                id: "https://idp.example.com#alice".into(),
                kind: SubjectKind::User,
                issuer: "https://idp.example.com".into(),
                name: "alice@example.com".into(),
            },
            actor: SpiffeId::parse(PLANNER).unwrap(),
            rights: rights(&["flights:read", "flights:book"]),
            issued_at: now,
            expires_at: now + Duration::from_secs(600),
            max_depth: 2,
        },
    )
    .unwrap();
    let mut out = vec![t0];
    for (to, tid, ttl) in [(SEARCH, "t1", 300), (FLIGHTS, "t2", 200)] {
        let last = out.last().unwrap();
        let c = read_chain(last, &[root.public()]).unwrap();
        let next = append_hop(
            last,
            &c,
            root,
            &HopRequest {
                token_id: tid.into(),
                next_actor: SpiffeId::parse(to).unwrap(),
                rights: rights(&["flights:read"]),
                at: now,
                expires_at: now + Duration::from_secs(ttl),
            },
        )
        .unwrap();
        out.push(next);
    }
    out
}

fn check(
    v: &Verifier,
    token: &str,
    presenter: &str,
    op: &str,
    now: SystemTime,
) -> Result<signet_delegation::Decision, VerifyError> {
    v.verify(
        token,
        &Request {
            presenter,
            operation: op,
            now,
        },
    )
}

/// Asserts that both verifiers give the same answer, twice (the second from the cache).
fn same(a: &Verifier, cached: &Verifier, token: &str, presenter: &str, op: &str, now: SystemTime) {
    let want = check(a, token, presenter, op, now);
    for round in 0..2 {
        assert_eq!(
            check(cached, token, presenter, op, now),
            want,
            "round {round}: {presenter} {op}"
        );
    }
}

#[test]
fn cached_decisions_are_the_uncached_ones_as_state_and_requests_change() {
    let root = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let now = SystemTime::now();
    let tokens = chain(&root, now);
    let keys = DelegationKeys::from_keys([(3, root.public())]);
    let mut plain = Verifier::new(keys.clone(), &RevocationList::default()).unwrap();
    let mut cached = Verifier::new(keys, &RevocationList::default())
        .unwrap()
        .with_signature_cache(16);
    let texts: Vec<String> = tokens.iter().map(|t| t.to_base64().unwrap()).collect();
    let attenuated = attenuate(
        &tokens[1],
        &Attenuation {
            rights: Some(rights(&["flights:read"])),
            expires_at: Some(now + Duration::from_secs(30)),
        },
    )
    .unwrap()
    .to_base64()
    .unwrap();
    let all = [texts[0].as_str(), &texts[1], &texts[2], &attenuated];
    let probe = |plain: &Verifier, cached: &Verifier| {
        for token in all {
            for presenter in [PLANNER, SEARCH, FLIGHTS] {
                for op in ["flights:read", "flights:book", "hotels:read"] {
                    for at in [0, 60, 250, 400, 700] {
                        let when = now + Duration::from_secs(at);
                        same(plain, cached, token, presenter, op, when);
                    }
                }
            }
        }
    };
    probe(&plain, &cached);
    let d = check(&cached, &texts[2], FLIGHTS, "flights:read", now).unwrap();
    assert_eq!(d.chain.actors(), [PLANNER, SEARCH, FLIGHTS]);

    // Revoking t1 after it was cached: t1, t2 and the attenuated t1 are refused from now on.
    let c1 = read_chain(&tokens[1], &[root.public()]).unwrap();
    let list = RevocationList {
        revoked: vec![Revoked {
            revocation_id: c1.revocation_ids.last().unwrap().clone(),
            token_id: "t1".into(),
            revoked_at: 0,
        }],
        sequence: 1,
    };
    plain.set_revocations(&list);
    cached.set_revocations(&list);
    assert!(matches!(
        check(&cached, &texts[2], FLIGHTS, "flights:read", now),
        Err(VerifyError::Revoked { .. })
    ));
    probe(&plain, &cached);

    // A policy and a depth limit of the resource server apply to cached tokens too; a clone
    // with them shares the cache.
    let policy = format!(r#"allow if chain_actor(1, "{SEARCH}");"#);
    let plain = plain.with_policy(&policy).unwrap().with_max_depth(1);
    let cached = cached.with_policy(&policy).unwrap().with_max_depth(1);
    probe(&plain, &cached);
    assert!(matches!(
        check(&cached, &texts[0], PLANNER, "flights:read", now),
        Err(VerifyError::Unauthorized(_))
    ));
}

#[test]
fn new_keys_empty_the_cache_and_tampered_copies_are_verified_afresh() {
    let root = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let now = SystemTime::now();
    let t0 = chain(&root, now).remove(0).to_base64().unwrap();
    let mut v = Verifier::new(
        DelegationKeys::from_keys([(3, root.public())]),
        &RevocationList::default(),
    )
    .unwrap()
    .with_signature_cache(4);
    assert!(check(&v, &t0, PLANNER, "flights:read", now).is_ok());
    assert!(check(&v, &t0, PLANNER, "flights:read", now).is_ok());

    // One byte flipped: another cache key, a fresh check, refused.
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE;
    let mut bytes = engine.decode(&t0).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    let tampered = engine.encode(&bytes);
    assert!(matches!(
        check(&v, &tampered, PLANNER, "flights:read", now),
        Err(VerifyError::Signature(_) | VerifyError::Malformed(_))
    ));

    // The root key is rotated to another key under the same id: the cached token no longer
    // verifies.
    let other = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    v.set_keys(DelegationKeys::from_keys([(3, other.public())]))
        .unwrap();
    assert!(matches!(
        check(&v, &t0, PLANNER, "flights:read", now),
        Err(VerifyError::Signature(_))
    ));
    v.set_keys(DelegationKeys::from_keys([(4, root.public())]))
        .unwrap();
    assert_eq!(
        check(&v, &t0, PLANNER, "flights:read", now).unwrap_err(),
        VerifyError::UnknownRootKey(Some(3))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random offline attenuations, random probes: the cached verifier agrees with the plain one.
    #[test]
    fn a_cache_never_changes_an_answer(
        cuts in prop::collection::vec((prop::collection::vec(prop::sample::select(vec!["flights:read", "flights:book", "admin"]), 0..3), 0u64..900), 0..3),
        probes in prop::collection::vec((0usize..3, 0usize..3, 0u64..900), 1..12),
    ) {
        let root = KeyPair::new_with_algorithm(Algorithm::Ed25519);
        let now = SystemTime::now();
        let mut token = chain(&root, now).remove(1);
        for (r, secs) in &cuts {
            token = attenuate(&token, &Attenuation {
                rights: Some(r.iter().map(|s| s.to_string()).collect()),
                expires_at: Some(now + Duration::from_secs(*secs)),
            }).unwrap();
        }
        let text = token.to_base64().unwrap();
        let keys = DelegationKeys::from_keys([(3, root.public())]);
        let plain = Verifier::new(keys.clone(), &RevocationList::default()).unwrap();
        let cached = Verifier::new(keys, &RevocationList::default()).unwrap().with_signature_cache(2);
        for (p, o, at) in probes {
            let presenter = [PLANNER, SEARCH, FLIGHTS][p];
            let op = ["flights:read", "flights:book", "admin"][o];
            let when = now + Duration::from_secs(at);
            prop_assert_eq!(check(&cached, &text, presenter, op, when), check(&plain, &text, presenter, op, when));
        }
    }
}
