//! The rotation timeline, driven by a fake clock: prepare at 1/2, publish before use, activate at
//! 5/6, keep the retired CA until it expires, then prune it.

use std::time::Duration;

use signet_ca::{CaError, CertificateAuthority, KeyType, RotationOutcome, SlotState};

use crate::common::*;

fn states(ca: &CertificateAuthority) -> Vec<(String, SlotState)> {
    ca.slots().into_iter().map(|s| (s.id, s.state)).collect()
}

fn issuer_slot(ca: &CertificateAuthority, leaf: &[u8]) -> String {
    let leaf = parse(leaf);
    let aki = authority_key_id(&leaf);
    ca.slots()
        .into_iter()
        .find(|s| subject_key_id(&parse(&s.cert_der)) == aki)
        .map(|s| s.id)
        .expect("issuer among the slots")
}

#[test]
fn rotation_timeline_publishes_before_use_and_keeps_retired_until_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256); // TTL 6h, created at T0
    let a = ca.slots()[0].id.clone();
    assert_eq!(states(&ca), vec![(a.clone(), SlotState::Active)]);
    assert_eq!(ca.bundle_sequence(), 1);
    let spki = p256_spki();
    let ttl = Duration::from_secs(HOUR);
    // Every SVID minted, with the bundle a client held when it was minted.
    let mut minted = Vec::new();

    // Before 1/2: nothing to do.
    assert_eq!(
        ca.rotate_if_due(at(T0 + 3 * HOUR - 1)).unwrap(),
        RotationOutcome::Unchanged
    );

    // At 1/2: B is prepared and published at once, but A keeps signing.
    let client_bundle_before_prepare = ca.trust_anchors();
    let b = match ca.rotate_if_due(at(T0 + 3 * HOUR)).unwrap() {
        RotationOutcome::Prepared(info) => info,
        other => panic!("expected Prepared, got {other:?}"),
    };
    assert_eq!(b.state, SlotState::Prepared);
    assert!(dir.join(format!("{}.key", b.id)).exists());
    assert_eq!(
        states(&ca),
        vec![
            (a.clone(), SlotState::Active),
            (b.id.clone(), SlotState::Prepared)
        ]
    );
    assert_eq!(ca.trust_anchors().len(), 2);
    assert!(ca.trust_anchors().contains(&b.cert_der));
    assert_eq!(ca.bundle_sequence(), 2);
    let svid = sign(&ca, "/w", &spki, ttl, at(T0 + 3 * HOUR));
    assert_eq!(issuer_slot(&ca, &svid.cert_chain_der[0]), a);
    // Still verifiable by a client that has not refreshed since before the preparation.
    verify(
        &svid.cert_chain_der,
        &client_bundle_before_prepare,
        at(T0 + 3 * HOUR),
    )
    .unwrap();
    minted.push((svid, T0 + 3 * HOUR));

    // Idempotent.
    assert_eq!(
        ca.rotate_if_due(at(T0 + 3 * HOUR)).unwrap(),
        RotationOutcome::Unchanged
    );
    assert_eq!(
        ca.rotate_if_due(at(T0 + 5 * HOUR - 1)).unwrap(),
        RotationOutcome::Unchanged
    );
    assert_eq!(ca.bundle_sequence(), 2);

    // Just before 5/6 A still signs; its SVIDs are capped at A's notAfter.
    let late_a = sign(
        &ca,
        "/w",
        &spki,
        Duration::from_secs(2 * HOUR),
        at(T0 + 5 * HOUR - 1),
    );
    assert_eq!(issuer_slot(&ca, &late_a.cert_chain_der[0]), a);
    assert_eq!(unix(late_a.not_after), T0 + 6 * HOUR);
    minted.push((late_a.clone(), T0 + 5 * HOUR - 1));

    // At 5/6: B is activated; the bundle does not change (B was already in it).
    let client_bundle_at_prepare = ca.trust_anchors();
    match ca.rotate_if_due(at(T0 + 5 * HOUR)).unwrap() {
        RotationOutcome::Activated(info) => assert_eq!(info.id, b.id),
        other => panic!("expected Activated, got {other:?}"),
    }
    assert_eq!(
        states(&ca),
        vec![
            (a.clone(), SlotState::Retired),
            (b.id.clone(), SlotState::Active)
        ]
    );
    assert_eq!(ca.bundle_sequence(), 2);
    assert_eq!(ca.trust_anchors(), client_bundle_at_prepare);
    let svid_b = sign(&ca, "/w", &spki, ttl, at(T0 + 5 * HOUR));
    assert_eq!(issuer_slot(&ca, &svid_b.cert_chain_der[0]), b.id);
    // Publish-before-use: a client holding the bundle from the preparation verifies B's SVIDs.
    verify(
        &svid_b.cert_chain_der,
        &client_bundle_at_prepare,
        at(T0 + 5 * HOUR),
    )
    .unwrap();
    minted.push((svid_b, T0 + 5 * HOUR));
    // A's last SVID still verifies against the current bundle until it expires.
    verify(
        &late_a.cert_chain_der,
        &ca.trust_anchors(),
        at(T0 + 6 * HOUR - 1),
    )
    .unwrap();

    // A stays published until its notAfter.
    assert_eq!(
        ca.rotate_if_due(at(T0 + 6 * HOUR - 1)).unwrap(),
        RotationOutcome::Unchanged
    );
    assert!(ca.trust_anchors().contains(&ca.slots()[0].cert_der));
    assert!(dir.join(format!("{a}.key")).exists());

    // At 6h: B reaches 1/2 of its lifetime (created at 3h, expires at 9h) -> C is prepared;
    // A expires -> pruned by the next call, with its key file.
    let c = match ca.rotate_if_due(at(T0 + 6 * HOUR)).unwrap() {
        RotationOutcome::Prepared(info) => info,
        other => panic!("expected Prepared, got {other:?}"),
    };
    assert_eq!(ca.bundle_sequence(), 3);
    assert_eq!(
        ca.rotate_if_due(at(T0 + 6 * HOUR)).unwrap(),
        RotationOutcome::Pruned(vec![a.clone()])
    );
    assert_eq!(ca.bundle_sequence(), 4);
    assert!(!dir.join(format!("{a}.key")).exists());
    assert_eq!(
        states(&ca),
        vec![
            (b.id.clone(), SlotState::Active),
            (c.id.clone(), SlotState::Prepared)
        ]
    );
    assert_eq!(
        ca.rotate_if_due(at(T0 + 6 * HOUR)).unwrap(),
        RotationOutcome::Unchanged
    );

    // Every SVID minted verifies, at its minting time, against the bundle a client held then;
    // and against the current bundle while it is still valid.
    for (svid, when) in &minted {
        verify(&svid.cert_chain_der, &ca.trust_anchors(), at(*when))
            .or_else(|_| {
                // Signed by A (pruned now): check against a bundle that still had A.
                verify(&svid.cert_chain_der, &client_bundle_at_prepare, at(*when))
            })
            .unwrap();
    }
}

#[test]
fn svids_signed_across_rotation_verify_against_the_bundle_of_that_moment() {
    // Walk through three CA lifetimes in 20-minute steps. At each step the client refreshes its
    // bundle, then an SVID is minted; it must verify against the bundle of the *previous* step
    // (a client that is one refresh behind), and every earlier SVID that has not expired must
    // verify against the current bundle.
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let spki = p256_spki();
    let mut prev_bundle = ca.trust_anchors();
    let mut live: Vec<(Vec<Vec<u8>>, u64)> = Vec::new();
    let mut last_seq = ca.bundle_sequence();
    let mut activations = 0;
    let step = 20 * 60;
    let mut now = T0;
    while now <= T0 + 18 * HOUR {
        loop {
            match ca.rotate_if_due(at(now)).unwrap() {
                RotationOutcome::Unchanged => break,
                RotationOutcome::Activated(_) => activations += 1,
                _ => {}
            }
        }
        let bundle = ca.trust_anchors();
        if bundle != prev_bundle {
            assert!(
                ca.bundle_sequence() > last_seq,
                "bundle changed without a new sequence"
            );
        }
        last_seq = ca.bundle_sequence();
        let svid = sign(&ca, "/r", &spki, Duration::from_secs(HOUR), at(now));
        verify(&svid.cert_chain_der, &prev_bundle, at(now))
            .unwrap_or_else(|e| panic!("at +{}s: {e:?}", now - T0));
        live.retain(|(_, exp)| *exp > now);
        for (chain, _) in &live {
            verify(chain, &bundle, at(now)).unwrap();
        }
        live.push((svid.cert_chain_der, unix(svid.not_after)));
        prev_bundle = bundle;
        now += step;
    }
    assert!(
        activations >= 2,
        "expected at least two rotations, saw {activations}"
    );
}

#[test]
fn forced_prepare_and_activate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = key_dir(&tmp);
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let a = ca.slots()[0].id.clone();

    let err = ca.activate(at(T0 + 10)).unwrap_err();
    assert!(matches!(err, CaError::NoPreparedCa), "{err}");

    let p1 = ca.prepare(at(T0 + 10)).unwrap();
    assert_eq!(ca.bundle_sequence(), 2);
    // Preparing again replaces the prepared CA (its key is deleted, it leaves the bundle).
    let p2 = ca.prepare(at(T0 + 20)).unwrap();
    assert_ne!(p1.id, p2.id);
    assert!(!dir.join(format!("{}.key", p1.id)).exists());
    assert!(!ca.trust_anchors().contains(&p1.cert_der));
    assert!(ca.trust_anchors().contains(&p2.cert_der));
    assert_eq!(ca.bundle_sequence(), 3);

    let act = ca.activate(at(T0 + 30)).unwrap();
    assert_eq!(act.id, p2.id);
    assert_eq!(act.state, SlotState::Active);
    assert_eq!(
        states(&ca),
        vec![(a, SlotState::Retired), (p2.id.clone(), SlotState::Active)]
    );
    let svid = sign(
        &ca,
        "/f",
        &p256_spki(),
        Duration::from_secs(60),
        at(T0 + 30),
    );
    assert_eq!(issuer_slot(&ca, &svid.cert_chain_der[0]), p2.id);
    verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0 + 30)).unwrap();
    // The new active CA's own timeline starts at its creation.
    assert_eq!(
        ca.rotate_if_due(at(T0 + 30)).unwrap(),
        RotationOutcome::Unchanged
    );
}

#[test]
fn expired_active_ca_is_replaced_at_once() {
    // The issuer was down for longer than the CA lifetime: the first rotation check creates and
    // activates a new CA immediately.
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let a = ca.slots()[0].id.clone();
    let later = T0 + 7 * HOUR;
    let spiffe_id = id("/x");
    let spki = p256_spki();
    let req = signet_ca::X509SvidRequest {
        spiffe_id: &spiffe_id,
        public_key_spki_der: &spki,
        ttl: Duration::from_secs(60),
        dns_names: &[],
    };
    assert!(matches!(
        ca.sign_x509_svid(&req, at(later)).unwrap_err(),
        CaError::CaExpired { .. }
    ));
    let n = match ca.rotate_if_due(at(later)).unwrap() {
        RotationOutcome::Activated(info) => info,
        other => panic!("expected Activated, got {other:?}"),
    };
    assert_eq!(
        states(&ca),
        vec![
            (a.clone(), SlotState::Retired),
            (n.id.clone(), SlotState::Active)
        ]
    );
    assert_eq!(
        ca.rotate_if_due(at(later)).unwrap(),
        RotationOutcome::Pruned(vec![a])
    );
    let svid = ca.sign_x509_svid(&req, at(later)).unwrap();
    verify(&svid.cert_chain_der, &ca.trust_anchors(), at(later)).unwrap();
}

#[test]
fn certificate_authority_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
}

#[test]
fn signing_from_many_threads_while_rotating() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = std::sync::Arc::new(fresh_ca(&tmp, KeyType::EcP256));
    let spki = p256_spki();
    let now = T0 + 3 * HOUR;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let ca = ca.clone();
                let spki = spki.clone();
                s.spawn(move || {
                    (0..50)
                        .map(|_| sign(&ca, "/t", &spki, Duration::from_secs(60), at(now)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        assert!(matches!(
            ca.rotate_if_due(at(now)).unwrap(),
            RotationOutcome::Prepared(_)
        ));
        ca.activate(at(now)).unwrap();
        for w in workers {
            for svid in w.join().unwrap() {
                verify(&svid.cert_chain_der, &ca.trust_anchors(), at(now)).unwrap();
            }
        }
    });
}
