//! CSRs: only the (verified) public key is used; everything the CSR asks for is ignored.

use std::time::Duration;

use signet_ca::{CaError, KeyType, X509SvidRequest, public_key_from_csr};

use crate::common::*;

fn csr(key: &rcgen::KeyPair, params: &rcgen::CertificateParams) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

/// A CSR that asks for everything an X509-SVID must not have.
fn greedy_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    ));
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://other.org/x".try_into().unwrap(),
    ));
    p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
        "root@example.org".try_into().unwrap(),
    ));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "I am a CA");
    p
}

#[test]
fn csr_public_key_is_returned_for_every_supported_key_type() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_ED25519,
    ] {
        let key = workload_key(alg);
        let der = csr(&key, &rcgen::CertificateParams::default());
        assert_eq!(public_key_from_csr(&der).unwrap(), key.public_key_der());
    }
}

#[test]
fn csr_requests_are_ignored_only_the_key_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let key = workload_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let der = csr(&key, &greedy_params());
    let spki = public_key_from_csr(&der).unwrap();
    assert_eq!(spki, key.public_key_der());
    let spiffe_id = id("/workload");
    let svid = ca
        .sign_x509_svid(
            &X509SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_spki_der: &spki,
                ttl: Duration::from_secs(60),
                dns_names: &[],
            },
            at(T0),
        )
        .unwrap();
    let leaf = parse(&svid.cert_chain_der[0]);
    let (uris, dns) = sans(&leaf);
    assert_eq!(uris, vec!["spiffe://example.org/workload".to_string()]);
    assert!(dns.is_empty());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    assert_eq!(leaf.subject().to_string(), "O=Signet");
    verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0)).unwrap();
}

#[test]
fn csr_with_a_bad_signature_is_rejected() {
    let key = workload_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut der = csr(&key, &rcgen::CertificateParams::default());
    // The signature is at the end: flip a bit of it.
    let n = der.len();
    der[n - 5] ^= 0x01;
    let err = public_key_from_csr(&der).unwrap_err();
    assert!(matches!(err, CaError::CsrSignature(_)), "{err}");

    // A CSR whose body was changed after signing (another public key spliced in).
    let good = csr(&key, &rcgen::CertificateParams::default());
    let other = workload_key(&rcgen::PKCS_ECDSA_P256_SHA256).public_key_der();
    let mine = key.public_key_der();
    let pos = good
        .windows(mine.len())
        .position(|w| w == &mine[..])
        .unwrap();
    let mut spliced = good.clone();
    spliced[pos..pos + mine.len()].copy_from_slice(&other);
    let err = public_key_from_csr(&spliced).unwrap_err();
    assert!(matches!(err, CaError::CsrSignature(_)), "{err}");
}

#[test]
fn garbage_and_truncated_csrs_are_rejected() {
    for bad in [&b""[..], b"garbage", &[0x30, 0x03, 0x02, 0x01, 0x00]] {
        let err = public_key_from_csr(bad).unwrap_err();
        assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    }
    let key = workload_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let der = csr(&key, &rcgen::CertificateParams::default());
    let err = public_key_from_csr(&der[..der.len() - 10]).unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    let mut trailing = der.clone();
    trailing.push(0);
    let err = public_key_from_csr(&trailing).unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    // A certificate is not a CSR.
    let tmp = tempfile::tempdir().unwrap();
    let ca = fresh_ca(&tmp, KeyType::EcP256);
    let err = public_key_from_csr(&ca.slots()[0].cert_der).unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
}

#[test]
fn csr_with_an_unsupported_key_is_rejected() {
    let key = workload_key(&rcgen::PKCS_ECDSA_P521_SHA512);
    let der = csr(&key, &rcgen::CertificateParams::default());
    let err = public_key_from_csr(&der).unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKeyAlgorithm(_)), "{err}");
}
