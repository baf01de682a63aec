//! The X509-SVID and CA certificate profiles, checked field by field on minted certificates.

use std::collections::HashSet;
use std::time::Duration;

use signet_ca::{CaError, KeyType, X509SvidRequest};
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Version;

use crate::common::*;

const ALL_CA_TYPES: [KeyType; 3] = [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048];

/// Checks every X509-SVID rule on `leaf_der`, minted at `now` by the CA `ca_der`.
fn assert_leaf_rules(leaf_der: &[u8], ca_der: &[u8], spiffe_id: &str, dns: &[String]) {
    let leaf = parse(leaf_der);
    let ca = parse(ca_der);
    assert_eq!(leaf.version(), X509Version::V3);

    // Exactly one URI SAN, the SPIFFE ID; DNS SANs as requested; SAN not critical because the
    // subject is not empty.
    let (uris, dns_names) = sans(&leaf);
    assert_eq!(uris, vec![spiffe_id.to_string()]);
    assert_eq!(dns_names, dns);
    assert_eq!(leaf.subject().to_string(), "O=Signet");
    let san_ext = leaf
        .extensions()
        .iter()
        .find(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::SubjectAlternativeName(_)
            )
        })
        .unwrap();
    assert!(!san_ext.critical);

    // Basic constraints present, critical, cA=false.
    let bc = leaf.basic_constraints().unwrap().expect("basicConstraints");
    assert!(bc.critical);
    assert!(!bc.value.ca);
    assert!(bc.value.path_len_constraint.is_none());

    // Key usage critical, digitalSignature, nothing a CA would have.
    let ku = leaf.key_usage().unwrap().expect("keyUsage");
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign());
    assert!(!ku.value.crl_sign());
    let allowed = 0b0000_0001 | 0b0000_0100 | 0b0001_0000; // digitalSignature, keyEncipherment, keyAgreement
    assert_eq!(ku.value.flags & !allowed, 0, "unexpected key usage bits");

    // EKU serverAuth + clientAuth.
    let eku = leaf.extended_key_usage().unwrap().expect("extKeyUsage");
    assert!(eku.value.server_auth);
    assert!(eku.value.client_auth);

    // Positive serial of at least 64 random bits.
    let serial = leaf.raw_serial();
    assert!(serial[0] & 0x80 == 0, "serial must be positive");
    assert!(serial.len() >= 9, "serial too short");

    // Key identifiers: SKI present, AKI = the CA's SKI; issuer = the CA's subject.
    assert!(!subject_key_id(&leaf).is_empty());
    assert_eq!(authority_key_id(&leaf), subject_key_id(&ca));
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());

    // Never past the CA.
    assert!(leaf.validity().not_after.timestamp() <= ca.validity().not_after.timestamp());
    // No extension we do not understand.
    for ext in leaf.extensions() {
        assert!(
            !matches!(
                ext.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. }
            ),
            "unexpected extension {}",
            ext.oid
        );
    }
}

#[test]
fn leaf_follows_every_x509_svid_rule_for_each_ca_key_type() {
    for kt in ALL_CA_TYPES {
        let tmp = tempfile::tempdir().unwrap();
        let ca = fresh_ca(&tmp, kt);
        let ca_der = ca.slots()[0].cert_der.clone();
        let spki = p256_spki();
        let now = at(T0 + 100);
        let svid = sign(&ca, "/workload/a", &spki, Duration::from_secs(HOUR), now);
        // Self-signed CA: the chain is the leaf alone (never the root).
        assert_eq!(svid.cert_chain_der.len(), 1);
        assert_leaf_rules(
            &svid.cert_chain_der[0],
            &ca_der,
            "spiffe://example.org/workload/a",
            &[],
        );
        let leaf = parse(&svid.cert_chain_der[0]);
        assert_eq!(leaf.public_key().raw, &spki[..]);
        // notBefore backdated 10 s, notAfter = now + ttl.
        assert_eq!(leaf.validity().not_before.timestamp() as u64, T0 + 100 - 10);
        assert_eq!(
            leaf.validity().not_after.timestamp() as u64,
            T0 + 100 + HOUR
        );
        assert_eq!(unix(svid.not_before), T0 + 90);
        assert_eq!(unix(svid.not_after), T0 + 100 + HOUR);
        assert_eq!(svid.serial_hex, hex::encode(leaf.raw_serial()));
        // The signature algorithm follows the CA key.
        let expected_sig = match kt {
            KeyType::EcP256 => "1.2.840.10045.4.3.2",
            KeyType::EcP384 => "1.2.840.10045.4.3.3",
            KeyType::Rsa2048 => "1.2.840.113549.1.1.11",
        };
        assert_eq!(
            leaf.signature_algorithm.algorithm.to_id_string(),
            expected_sig
        );
        verify(&svid.cert_chain_der, &ca.trust_anchors(), now)
            .unwrap_or_else(|e| panic!("{kt}: {e:?}"));
    }
}

#[test]
fn leaf_keys_of_every_supported_type_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let ca_der = ca.slots()[0].cert_der.clone();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_ED25519,
    ] {
        let spki = workload_key(alg).public_key_der();
        let svid = sign(&ca, "/k", &spki, Duration::from_secs(60), at(T0));
        assert_leaf_rules(
            &svid.cert_chain_der[0],
            &ca_der,
            "spiffe://example.org/k",
            &[],
        );
        verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0)).unwrap();
    }
}

#[test]
fn dns_names_are_added_after_the_single_uri_san() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let ca_der = ca.slots()[0].cert_der.clone();
    let spiffe_id = id("/web");
    let dns = vec![
        "web.example.org".to_string(),
        "*.web.example.org".to_string(),
    ];
    let spki = p256_spki();
    let svid = ca
        .sign_x509_svid(
            &X509SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_spki_der: &spki,
                ttl: Duration::from_secs(60),
                dns_names: &dns,
            },
            at(T0),
        )
        .unwrap();
    assert_leaf_rules(
        &svid.cert_chain_der[0],
        &ca_der,
        "spiffe://example.org/web",
        &dns,
    );
}

#[test]
fn serials_are_random_positive_and_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let spki = p256_spki();
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let svid = sign(&ca, "/s", &spki, Duration::from_secs(60), at(T0));
        let leaf = parse(&svid.cert_chain_der[0]);
        let serial = leaf.raw_serial().to_vec();
        assert_eq!(serial.len(), 16);
        assert_eq!(serial[0] & 0x80, 0);
        assert!(seen.insert(serial), "serial repeated");
    }
}

#[test]
fn not_after_is_capped_by_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let ca_not_after = unix(ca.slots()[0].not_after);
    assert_eq!(ca_not_after, T0 + 6 * HOUR);
    let now = at(T0 + 5 * HOUR);
    let svid = sign(
        &ca,
        "/long",
        &p256_spki(),
        Duration::from_secs(24 * HOUR),
        now,
    );
    assert_eq!(unix(svid.not_after), ca_not_after);
    let leaf = parse(&svid.cert_chain_der[0]);
    assert_eq!(leaf.validity().not_after.timestamp() as u64, ca_not_after);
    // Past the CA's notAfter nothing is signed.
    let spiffe_id = id("/late");
    let spki = p256_spki();
    let err = ca
        .sign_x509_svid(
            &X509SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_spki_der: &spki,
                ttl: Duration::from_secs(60),
                dns_names: &[],
            },
            at(ca_not_after),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::CaExpired { .. }), "{err}");
}

#[test]
fn ca_certificate_profile() {
    for kt in ALL_CA_TYPES {
        let tmp = tempfile::tempdir().unwrap();
        let ca = fresh_ca(&tmp, kt);
        let slot = &ca.slots()[0];
        assert_eq!(slot.key_type, kt);
        let cert = parse(&slot.cert_der);
        assert_eq!(cert.version(), X509Version::V3);
        // Self-signed root.
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        assert_eq!(slot.subject, cert.subject().to_string());
        assert!(
            slot.subject.starts_with("O=Signet, CN=Signet CA "),
            "{}",
            slot.subject
        );
        assert_eq!(authority_key_id(&cert), subject_key_id(&cert));
        // cA=true critical, no path length.
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert!(bc.value.path_len_constraint.is_none());
        // keyCertSign + cRLSign critical, nothing else.
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        assert_eq!(ku.value.flags, (1 << 5) | (1 << 6));
        // URI SAN = the trust domain ID, nothing else; no name constraints.
        let (uris, dns) = sans(&cert);
        assert_eq!(uris, vec!["spiffe://example.org".to_string()]);
        assert!(dns.is_empty());
        assert!(cert.name_constraints().unwrap().is_none());
        // Validity: backdated 60 s, TTL as configured.
        assert_eq!(cert.validity().not_before.timestamp() as u64, T0 - 60);
        assert_eq!(cert.validity().not_after.timestamp() as u64, T0 + 6 * HOUR);
        assert_eq!(unix(slot.not_before), T0 - 60);
        assert_eq!(cert.raw_serial()[0] & 0x80, 0);
        // Fingerprint.
        let fp = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &slot.cert_der);
        assert_eq!(slot.fingerprint_sha256, hex::encode(fp));
        // The root verifies its own signature: a chain with it as anchor works (checked by
        // webpki in the leaf tests); here, the published anchor is this very certificate.
        assert_eq!(ca.trust_anchors(), vec![slot.cert_der.clone()]);
        assert_eq!(ca.bundle_sequence(), 1);
    }
}

#[test]
fn bad_requests_get_precise_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let spki = p256_spki();
    let good_id = id("/ok");
    let try_sign =
        |spiffe_id: &signet_spiffe::SpiffeId, spki: &[u8], ttl: Duration, dns: &[String]| {
            ca.sign_x509_svid(
                &X509SvidRequest {
                    spiffe_id,
                    public_key_spki_der: spki,
                    ttl,
                    dns_names: dns,
                },
                at(T0),
            )
            .unwrap_err()
        };
    let ttl = Duration::from_secs(60);

    let other = signet_spiffe::SpiffeId::parse("spiffe://other.org/x").unwrap();
    assert!(matches!(
        try_sign(&other, &spki, ttl, &[]),
        CaError::WrongTrustDomain { .. }
    ));
    let td_id = signet_spiffe::SpiffeId::parse("spiffe://example.org").unwrap();
    assert!(matches!(
        try_sign(&td_id, &spki, ttl, &[]),
        CaError::SvidIdWithoutPath(_)
    ));
    assert!(matches!(
        try_sign(&good_id, &spki, Duration::from_millis(500), &[]),
        CaError::InvalidSvidTtl
    ));
    let err = try_sign(&good_id, &spki, ttl, &["bad name".to_string()]);
    assert!(matches!(err, CaError::InvalidDnsName { .. }), "{err}");
    assert!(err.to_string().contains("bad name"));

    // Garbage, trailing data, a point off the curve, an unsupported algorithm.
    assert!(matches!(
        try_sign(&good_id, b"not a key", ttl, &[]),
        CaError::InvalidPublicKey(_)
    ));
    let mut trailing = spki.clone();
    trailing.push(0);
    assert!(matches!(
        try_sign(&good_id, &trailing, ttl, &[]),
        CaError::InvalidPublicKey(_)
    ));
    let mut off_curve = spki.clone();
    let n = off_curve.len();
    off_curve[n - 1] ^= 0x01;
    assert!(matches!(
        try_sign(&good_id, &off_curve, ttl, &[]),
        CaError::InvalidPublicKey(_)
    ));
    // X25519 (1.3.101.110) is a key-agreement key: not for an SVID.
    let mut x25519 = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
    ];
    x25519.extend_from_slice(&[9; 32]);
    let err = try_sign(&good_id, &x25519, ttl, &[]);
    assert!(matches!(err, CaError::UnsupportedKeyAlgorithm(_)), "{err}");
    assert!(err.to_string().contains("1.3.101.110"), "{err}");
    // P-521 is not supported.
    let p521 = workload_key(&rcgen::PKCS_ECDSA_P521_SHA512).public_key_der();
    let err = try_sign(&good_id, &p521, ttl, &[]);
    assert!(matches!(err, CaError::UnsupportedKeyAlgorithm(_)), "{err}");
}
