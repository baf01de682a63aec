//! X509-SVID rules: one fixture and one test per rule, each asserting the exact `SvidError`.

use signet_spiffe::bundle::Bundle;
use signet_spiffe::svid::{
    SvidError, spiffe_id_from_cert, validate_signing_certificate, validate_x509_svid_leaf,
    verify_x509_svid,
};
use signet_spiffe::{IdError, SpiffeId, TrustDomain};

use crate::{fixture, jan_1};

fn svid(name: &str) -> Vec<u8> {
    fixture(&format!("x509svid/{name}"))
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn leaf(name: &str) -> Result<SpiffeId, SvidError> {
    validate_x509_svid_leaf(&svid(name))
}

fn ca(name: &str) -> Result<(), SvidError> {
    validate_signing_certificate(&svid(name))
}

fn example_bundle() -> Bundle {
    let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    bundle.x509_authorities.push(svid("ca-good.der"));
    bundle
}

// ----- spiffe_id_from_cert -----

#[test]
fn id_from_cert_reads_the_one_uri_san() {
    assert_eq!(
        spiffe_id_from_cert(&svid("leaf-good.der")),
        Ok(id("spiffe://example.org/workload"))
    );
    assert_eq!(
        spiffe_id_from_cert(&svid("ca-good.der")),
        Ok(id("spiffe://example.org"))
    );
    // DNS SANs next to the URI SAN are allowed.
    assert_eq!(
        spiffe_id_from_cert(&svid("leaf-good-with-dns-san.der")),
        Ok(id("spiffe://example.org/workload"))
    );
}

#[test]
fn id_from_cert_rejects_garbage() {
    assert!(matches!(
        spiffe_id_from_cert(b"not a certificate"),
        Err(SvidError::Malformed(_))
    ));
    assert!(matches!(
        spiffe_id_from_cert(&[]),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn trailing_data_after_the_certificate_is_rejected() {
    let mut der = svid("leaf-good.der");
    der.push(0);
    assert!(matches!(
        spiffe_id_from_cert(&der),
        Err(SvidError::Malformed(m)) if m.contains("trailing")
    ));
    assert!(matches!(leaf_bytes(&der), Err(SvidError::Malformed(_))));
}

fn leaf_bytes(der: &[u8]) -> Result<SpiffeId, SvidError> {
    validate_x509_svid_leaf(der)
}

#[test]
fn truncated_certificate_is_rejected() {
    let der = svid("leaf-good.der");
    for len in [1, 10, der.len() / 2, der.len() - 1] {
        assert!(
            matches!(leaf_bytes(&der[..len]), Err(SvidError::Malformed(_))),
            "{len}"
        );
    }
}

// ----- leaf rules: valid leaves -----

#[test]
fn good_leaves_pass() {
    for name in [
        "leaf-good.der",
        "leaf-good-no-eku.der",
        "leaf-good-no-basic-constraints.der",
        "leaf-good-empty-subject-critical-san.der",
        "leaf-good-with-dns-san.der",
        "leaf-good-rsa-key-encipherment.der",
    ] {
        assert_eq!(
            leaf(name),
            Ok(id("spiffe://example.org/workload")),
            "{name}"
        );
    }
    assert_eq!(
        leaf("leaf-good-via-intermediate.der"),
        Ok(id("spiffe://example.org/ns/prod/sa/api"))
    );
}

// ----- leaf rules: one broken rule each -----

#[test]
fn leaf_without_san_extension_is_rejected() {
    assert_eq!(leaf("leaf-no-san-extension.der"), Err(SvidError::NoUriSan));
}

#[test]
fn leaf_with_only_dns_san_is_rejected() {
    assert_eq!(leaf("leaf-no-uri-san.der"), Err(SvidError::NoUriSan));
    assert_eq!(
        spiffe_id_from_cert(&svid("leaf-no-uri-san.der")),
        Err(SvidError::NoUriSan)
    );
}

#[test]
fn leaf_with_two_uri_sans_is_rejected() {
    assert_eq!(
        leaf("leaf-two-uri-sans.der"),
        Err(SvidError::MultipleUriSans(2))
    );
    assert_eq!(
        spiffe_id_from_cert(&svid("leaf-two-uri-sans.der")),
        Err(SvidError::MultipleUriSans(2))
    );
}

#[test]
fn leaf_with_non_spiffe_uri_is_rejected() {
    assert_eq!(
        leaf("leaf-non-spiffe-uri.der"),
        Err(SvidError::InvalidSpiffeId {
            uri: "https://example.org/workload".to_owned(),
            reason: IdError::WrongScheme,
        })
    );
}

#[test]
fn leaf_with_invalid_spiffe_id_is_rejected() {
    assert_eq!(
        leaf("leaf-uppercase-trust-domain.der"),
        Err(SvidError::InvalidSpiffeId {
            uri: "spiffe://EXAMPLE.org/workload".to_owned(),
            reason: IdError::BadTrustDomainChar('E'),
        })
    );
}

#[test]
fn leaf_id_without_path_is_rejected() {
    assert_eq!(
        leaf("leaf-id-without-path.der"),
        Err(SvidError::LeafIdWithoutPath(id("spiffe://example.org")))
    );
}

#[test]
fn leaf_with_ca_true_is_rejected() {
    assert_eq!(leaf("leaf-ca-true.der"), Err(SvidError::LeafIsCa));
}

#[test]
fn leaf_without_key_usage_is_rejected() {
    assert_eq!(
        leaf("leaf-no-key-usage.der"),
        Err(SvidError::MissingKeyUsage)
    );
}

#[test]
fn leaf_with_non_critical_key_usage_is_rejected() {
    assert_eq!(
        leaf("leaf-key-usage-not-critical.der"),
        Err(SvidError::KeyUsageNotCritical)
    );
}

#[test]
fn leaf_without_digital_signature_is_rejected() {
    assert_eq!(
        leaf("leaf-no-digital-signature.der"),
        Err(SvidError::LeafMissingDigitalSignature)
    );
}

#[test]
fn leaf_with_key_cert_sign_is_rejected() {
    assert_eq!(
        leaf("leaf-keycertsign.der"),
        Err(SvidError::LeafKeyCertSign)
    );
}

#[test]
fn leaf_with_crl_sign_is_rejected() {
    assert_eq!(leaf("leaf-crlsign.der"), Err(SvidError::LeafCrlSign));
}

#[test]
fn leaf_eku_without_client_auth_is_rejected() {
    assert_eq!(
        leaf("leaf-eku-server-auth-only.der"),
        Err(SvidError::LeafEkuMissingClientAuth)
    );
}

#[test]
fn leaf_eku_without_server_auth_is_rejected() {
    assert_eq!(
        leaf("leaf-eku-client-auth-only.der"),
        Err(SvidError::LeafEkuMissingServerAuth)
    );
}

#[test]
fn leaf_with_empty_subject_needs_a_critical_san() {
    assert_eq!(
        leaf("leaf-empty-subject-san-not-critical.der"),
        Err(SvidError::SanNotCriticalWithEmptySubject)
    );
}

#[test]
fn duplicate_extension_is_rejected() {
    assert_eq!(
        leaf("leaf-duplicate-san-extension.der"),
        Err(SvidError::DuplicateExtension("2.5.29.17".to_owned()))
    );
    assert_eq!(
        spiffe_id_from_cert(&svid("leaf-duplicate-san-extension.der")),
        Err(SvidError::DuplicateExtension("2.5.29.17".to_owned()))
    );
}

#[test]
fn malformed_basic_constraints_do_not_read_as_absent() {
    let expected = Err(SvidError::MalformedExtension("2.5.29.19".to_owned()));
    assert_eq!(leaf("leaf-malformed-basic-constraints.der"), expected);
    assert_eq!(
        spiffe_id_from_cert(&svid("leaf-malformed-basic-constraints.der")),
        expected
    );
    assert_eq!(
        ca("leaf-malformed-basic-constraints.der"),
        Err(SvidError::MalformedExtension("2.5.29.19".to_owned()))
    );
}

#[test]
fn a_ca_certificate_is_not_a_leaf() {
    assert_eq!(
        leaf("ca-good.der"),
        Err(SvidError::LeafIdWithoutPath(id("spiffe://example.org")))
    );
}

// ----- signing certificate rules -----

#[test]
fn good_signing_certificates_pass() {
    for name in [
        "ca-good.der",
        "ca-untrusted.der",
        "intermediate-good.der",
        "ca-good-no-spiffe-id.der",
    ] {
        assert_eq!(ca(name), Ok(()), "{name}");
    }
}

#[test]
fn signing_certificate_with_ca_false_is_rejected() {
    assert_eq!(ca("ca-not-ca.der"), Err(SvidError::CaFlagNotSet));
}

#[test]
fn signing_certificate_without_basic_constraints_is_rejected() {
    assert_eq!(
        ca("ca-no-basic-constraints.der"),
        Err(SvidError::CaFlagNotSet)
    );
}

#[test]
fn signing_certificate_without_key_usage_is_rejected() {
    assert_eq!(ca("ca-no-key-usage.der"), Err(SvidError::MissingKeyUsage));
}

#[test]
fn signing_certificate_with_non_critical_key_usage_is_rejected() {
    assert_eq!(
        ca("ca-key-usage-not-critical.der"),
        Err(SvidError::KeyUsageNotCritical)
    );
}

#[test]
fn signing_certificate_without_key_cert_sign_is_rejected() {
    assert_eq!(
        ca("ca-no-keycertsign.der"),
        Err(SvidError::CaMissingKeyCertSign)
    );
}

#[test]
fn signing_certificate_id_with_path_is_rejected() {
    assert_eq!(
        ca("ca-id-with-path.der"),
        Err(SvidError::CaIdHasPath(id("spiffe://example.org/ca")))
    );
}

#[test]
fn signing_certificate_id_with_trailing_slash_is_rejected() {
    assert_eq!(
        ca("ca-id-trailing-slash.der"),
        Err(SvidError::InvalidSpiffeId {
            uri: "spiffe://example.org/".to_owned(),
            reason: IdError::TrailingSlash,
        })
    );
}

#[test]
fn signing_certificate_with_two_uri_sans_is_rejected() {
    assert_eq!(
        ca("ca-two-uri-sans.der"),
        Err(SvidError::MultipleUriSans(2))
    );
}

#[test]
fn signing_certificate_with_empty_subject_is_rejected() {
    assert_eq!(ca("ca-empty-subject.der"), Err(SvidError::CaEmptySubject));
}

#[test]
fn a_leaf_is_not_a_signing_certificate() {
    assert_eq!(ca("leaf-good.der"), Err(SvidError::CaFlagNotSet));
}

// ----- chain verification -----

#[test]
fn verify_good_leaf_signed_by_the_root() {
    assert_eq!(
        verify_x509_svid(&[svid("leaf-good.der")], &example_bundle(), jan_1(2030)),
        Ok(id("spiffe://example.org/workload"))
    );
}

#[test]
fn verify_good_leaves_of_every_kind() {
    for name in [
        "leaf-good-no-eku.der",
        "leaf-good-no-basic-constraints.der",
        "leaf-good-empty-subject-critical-san.der",
        "leaf-good-with-dns-san.der",
        "leaf-good-rsa-key-encipherment.der",
    ] {
        assert_eq!(
            verify_x509_svid(&[svid(name)], &example_bundle(), jan_1(2030)),
            Ok(id("spiffe://example.org/workload")),
            "{name}"
        );
    }
}

#[test]
fn verify_through_an_intermediate() {
    let chain = [
        svid("leaf-good-via-intermediate.der"),
        svid("intermediate-good.der"),
    ];
    assert_eq!(
        verify_x509_svid(&chain, &example_bundle(), jan_1(2030)),
        Ok(id("spiffe://example.org/ns/prod/sa/api"))
    );
}

#[test]
fn verify_needs_the_intermediate() {
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-good-via-intermediate.der")],
            &example_bundle(),
            jan_1(2030)
        ),
        Err(SvidError::UnknownIssuer)
    );
}

#[test]
fn verify_with_the_intermediate_as_anchor() {
    // An intermediate placed in the bundle is a trust anchor like any other.
    let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    bundle.x509_authorities.push(svid("intermediate-good.der"));
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-good-via-intermediate.der")],
            &bundle,
            jan_1(2030)
        ),
        Ok(id("spiffe://example.org/ns/prod/sa/api"))
    );
}

#[test]
fn verify_with_several_authorities_finds_the_right_one() {
    let mut bundle = example_bundle();
    bundle.x509_authorities.insert(0, svid("ca-untrusted.der"));
    assert_eq!(
        verify_x509_svid(&[svid("leaf-good.der")], &bundle, jan_1(2030)),
        Ok(id("spiffe://example.org/workload"))
    );
    assert_eq!(
        verify_x509_svid(&[svid("leaf-untrusted.der")], &bundle, jan_1(2030)),
        Ok(id("spiffe://example.org/workload"))
    );
}

#[test]
fn verify_rejects_an_empty_chain() {
    assert_eq!(
        verify_x509_svid(&[], &example_bundle(), jan_1(2030)),
        Err(SvidError::EmptyChain)
    );
}

#[test]
fn verify_applies_the_leaf_rules_first() {
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-keycertsign.der")],
            &example_bundle(),
            jan_1(2030)
        ),
        Err(SvidError::LeafKeyCertSign)
    );
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-two-uri-sans.der")],
            &example_bundle(),
            jan_1(2030)
        ),
        Err(SvidError::MultipleUriSans(2))
    );
    // A CA presented as a leaf.
    assert_eq!(
        verify_x509_svid(&[svid("ca-good.der")], &example_bundle(), jan_1(2030)),
        Err(SvidError::LeafIdWithoutPath(id("spiffe://example.org")))
    );
}

#[test]
fn verify_rejects_a_leaf_of_another_trust_domain_even_if_the_ca_signed_it() {
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-other-trust-domain.der")],
            &example_bundle(),
            jan_1(2030)
        ),
        Err(SvidError::TrustDomainMismatch {
            id: id("spiffe://other.org/workload"),
            bundle: TrustDomain::new("example.org").unwrap(),
        })
    );
}

#[test]
fn verify_rejects_the_bundle_of_another_trust_domain() {
    // Same CA, but a bundle recorded for other.org never vouches for example.org.
    let mut bundle = Bundle::new(TrustDomain::new("other.org").unwrap());
    bundle.x509_authorities.push(svid("ca-good.der"));
    assert_eq!(
        verify_x509_svid(&[svid("leaf-good.der")], &bundle, jan_1(2030)),
        Err(SvidError::TrustDomainMismatch {
            id: id("spiffe://example.org/workload"),
            bundle: TrustDomain::new("other.org").unwrap(),
        })
    );
}

#[test]
fn verify_rejects_a_bundle_without_x509_authorities() {
    let bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    assert_eq!(
        verify_x509_svid(&[svid("leaf-good.der")], &bundle, jan_1(2030)),
        Err(SvidError::NoX509Authorities(
            TrustDomain::new("example.org").unwrap()
        ))
    );
}

#[test]
fn verify_rejects_an_unparsable_authority() {
    let mut bundle = example_bundle();
    bundle.x509_authorities.push(b"not a certificate".to_vec());
    assert!(matches!(
        verify_x509_svid(&[svid("leaf-good.der")], &bundle, jan_1(2030)),
        Err(SvidError::BadX509Authority { index: 1, .. })
    ));
}

#[test]
fn verify_rejects_a_leaf_from_an_unknown_ca() {
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-untrusted.der")],
            &example_bundle(),
            jan_1(2030)
        ),
        Err(SvidError::UnknownIssuer)
    );
}

#[test]
fn verify_rejects_a_bad_signature() {
    // The leaf rules pass (only the signature bits differ) ...
    assert!(leaf("leaf-bad-signature.der").is_ok());
    // ... but path validation does not.
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-bad-signature.der")],
            &example_bundle(),
            jan_1(2030)
        ),
        Err(SvidError::BadSignature)
    );
}

#[test]
fn verify_rejects_an_expired_leaf() {
    // Leaves expire on 2035-01-01; the CA lives until 2045.
    assert_eq!(
        verify_x509_svid(&[svid("leaf-good.der")], &example_bundle(), jan_1(2040)),
        Err(SvidError::Expired)
    );
}

#[test]
fn verify_rejects_a_leaf_not_yet_valid() {
    assert_eq!(
        verify_x509_svid(&[svid("leaf-good.der")], &example_bundle(), jan_1(2020)),
        Err(SvidError::NotYetValid)
    );
    // A clock before 1970 is treated as the epoch, which is before every certificate.
    assert_eq!(
        verify_x509_svid(
            &[svid("leaf-good.der")],
            &example_bundle(),
            std::time::UNIX_EPOCH - std::time::Duration::from_secs(1)
        ),
        Err(SvidError::NotYetValid)
    );
}

#[test]
fn verify_ignores_unneeded_extra_certificates_in_the_chain() {
    // Extra (even unrelated) intermediates are only candidates for path building.
    let chain = [svid("leaf-good.der"), svid("ca-untrusted.der")];
    assert_eq!(
        verify_x509_svid(&chain, &example_bundle(), jan_1(2030)),
        Ok(id("spiffe://example.org/workload"))
    );
}

#[test]
fn error_messages_are_precise() {
    let msg = leaf("leaf-two-uri-sans.der").unwrap_err().to_string();
    assert!(msg.contains("2 URI SANs"), "{msg}");
    let msg = leaf("leaf-uppercase-trust-domain.der")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("spiffe://EXAMPLE.org/workload") && msg.contains("'E'"),
        "{msg}"
    );
    let msg = verify_x509_svid(
        &[svid("leaf-other-trust-domain.der")],
        &example_bundle(),
        jan_1(2030),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("other.org") && msg.contains("example.org"),
        "{msg}"
    );
}
