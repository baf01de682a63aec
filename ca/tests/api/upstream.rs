//! Upstream mode: every Signet CA is an intermediate signed by an upstream CA from PEM files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use signet_ca::{CaError, CertificateAuthority, RotationOutcome};

use crate::common::*;

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

fn write_files(dir: &Path, certs: &[&[u8]], key_pem: &str) -> Files {
    let cert = dir.join("upstream.pem");
    let key = dir.join("upstream.key");
    let pem: String = certs.iter().map(|c| to_pem("CERTIFICATE", c)).collect();
    fs::write(&cert, pem).unwrap();
    fs::write(&key, key_pem).unwrap();
    Files { cert, key }
}

fn open(
    tmp: &tempfile::TempDir,
    files: &Files,
    ttl: Duration,
) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::open(
        upstream_config(&key_dir(tmp), ttl, &files.cert, &files.key),
        None,
        at(T0),
    )
}

#[test]
fn upstream_intermediate_with_root_in_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(
        T0 + 100 * HOUR,
        T0 + 50 * HOUR,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let files = write_files(
        tmp.path(),
        &[&pki.intermediate_der, &pki.root_der],
        &pki.intermediate_key_pem,
    );
    let ca = open(&tmp, &files, Duration::from_secs(6 * HOUR)).unwrap();
    // The trust anchor is the upstream root, not the Signet CA.
    assert_eq!(ca.trust_anchors(), vec![pki.root_der.clone()]);
    let slot = &ca.slots()[0];
    let signet = parse(&slot.cert_der);
    let upstream_int = parse(&pki.intermediate_der);
    assert_eq!(signet.issuer().as_raw(), upstream_int.subject().as_raw());
    assert_eq!(authority_key_id(&signet), subject_key_id(&upstream_int));
    assert!(signet.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(sans(&signet).0, vec!["spiffe://example.org".to_string()]);

    // Chain: leaf, Signet intermediate, upstream intermediate; never the root.
    let svid = sign(&ca, "/up", &p256_spki(), Duration::from_secs(HOUR), at(T0));
    assert_eq!(svid.cert_chain_der.len(), 3);
    assert_eq!(svid.cert_chain_der[1], slot.cert_der);
    assert_eq!(svid.cert_chain_der[2], pki.intermediate_der);
    assert!(!svid.cert_chain_der.contains(&pki.root_der));
    verify(
        &svid.cert_chain_der,
        std::slice::from_ref(&pki.root_der),
        at(T0),
    )
    .unwrap();

    // Rotation under the same upstream: the anchors (the root) do not change, so neither does
    // the bundle sequence; the new intermediate signs valid chains.
    let seq = ca.bundle_sequence();
    assert!(matches!(
        ca.rotate_if_due(at(T0 + 3 * HOUR)).unwrap(),
        RotationOutcome::Prepared(_)
    ));
    assert_eq!(ca.bundle_sequence(), seq);
    assert!(matches!(
        ca.rotate_if_due(at(T0 + 5 * HOUR)).unwrap(),
        RotationOutcome::Activated(_)
    ));
    let svid = sign(
        &ca,
        "/up",
        &p256_spki(),
        Duration::from_secs(HOUR),
        at(T0 + 5 * HOUR),
    );
    assert_eq!(svid.cert_chain_der[1], ca.slots()[1].cert_der);
    verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0 + 5 * HOUR)).unwrap();

    // Reopen from the journal (upstream chains are in it).
    let journal = ca.journal_bytes().unwrap();
    let reopened = CertificateAuthority::open(
        upstream_config(
            &key_dir(&tmp),
            Duration::from_secs(6 * HOUR),
            &files.cert,
            &files.key,
        ),
        Some(&journal),
        at(T0 + 5 * HOUR),
    )
    .unwrap();
    assert_eq!(reopened.trust_anchors(), vec![pki.root_der.clone()]);
    let svid = sign(
        &reopened,
        "/up",
        &p256_spki(),
        Duration::from_secs(60),
        at(T0 + 5 * HOUR),
    );
    verify(
        &svid.cert_chain_der,
        std::slice::from_ref(&pki.root_der),
        at(T0 + 5 * HOUR),
    )
    .unwrap();
}

#[test]
fn upstream_not_after_caps_the_signet_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(T0 + 100 * HOUR, T0 + 2 * HOUR, &rcgen::PKCS_RSA_SHA256);
    let files = write_files(
        tmp.path(),
        &[&pki.intermediate_der, &pki.root_der],
        &pki.intermediate_key_pem,
    );
    let ca = open(&tmp, &files, Duration::from_secs(24 * HOUR)).unwrap();
    assert_eq!(unix(ca.slots()[0].not_after), T0 + 2 * HOUR);
    let svid = sign(
        &ca,
        "/cap",
        &p256_spki(),
        Duration::from_secs(10 * HOUR),
        at(T0),
    );
    assert_eq!(unix(svid.not_after), T0 + 2 * HOUR);
    // Signed by an RSA upstream key.
    let signet = parse(&svid.cert_chain_der[1]);
    assert_eq!(
        signet.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11"
    );
    verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0)).unwrap();
}

#[test]
fn upstream_without_root_makes_the_upstream_cert_the_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(
        T0 + 100 * HOUR,
        T0 + 50 * HOUR,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    );
    let files = write_files(
        tmp.path(),
        &[&pki.intermediate_der],
        &pki.intermediate_key_pem,
    );
    let ca = open(&tmp, &files, Duration::from_secs(6 * HOUR)).unwrap();
    assert_eq!(ca.trust_anchors(), vec![pki.intermediate_der.clone()]);
    let svid = sign(&ca, "/x", &p256_spki(), Duration::from_secs(HOUR), at(T0));
    assert_eq!(svid.cert_chain_der.len(), 2);
    verify(&svid.cert_chain_der, &ca.trust_anchors(), at(T0)).unwrap();
}

#[test]
fn upstream_root_alone_works_too() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(
        T0 + 100 * HOUR,
        T0 + 50 * HOUR,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let files = write_files(tmp.path(), &[&pki.root_der], &pki.root_key_pem);
    let ca = open(&tmp, &files, Duration::from_secs(6 * HOUR)).unwrap();
    assert_eq!(ca.trust_anchors(), vec![pki.root_der.clone()]);
    let svid = sign(&ca, "/x", &p256_spki(), Duration::from_secs(HOUR), at(T0));
    verify(
        &svid.cert_chain_der,
        std::slice::from_ref(&pki.root_der),
        at(T0),
    )
    .unwrap();
}

fn expect_upstream_error(tmp: &tempfile::TempDir, files: &Files, needle: &str) -> CaError {
    let err = open(tmp, files, Duration::from_secs(6 * HOUR)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
    // Nothing was created.
    assert!(!key_dir(tmp).exists() || fs::read_dir(key_dir(tmp)).unwrap().next().is_none());
    err
}

#[test]
fn bad_upstream_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(
        T0 + 100 * HOUR,
        T0 + 50 * HOUR,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let good = write_files(
        tmp.path(),
        &[&pki.intermediate_der, &pki.root_der],
        &pki.intermediate_key_pem,
    );
    let cert_name = good.cert.display().to_string();
    let key_name = good.key.display().to_string();

    // Missing files.
    let missing = Files {
        cert: tmp.path().join("nope.pem"),
        key: good.key.clone(),
    };
    let err = expect_upstream_error(&tmp, &missing, "nope.pem");
    assert!(matches!(err, CaError::UpstreamRead { .. }));
    let missing_key = Files {
        cert: good.cert.clone(),
        key: tmp.path().join("nokey.pem"),
    };
    expect_upstream_error(&tmp, &missing_key, "nokey.pem");

    // Not PEM / no certificate.
    fs::write(&good.cert, "hello").unwrap();
    let err = expect_upstream_error(&tmp, &good, &cert_name);
    assert!(matches!(err, CaError::Upstream { .. }), "{err}");

    // Wrong order (root first).
    let reversed = write_files(
        tmp.path(),
        &[&pki.root_der, &pki.intermediate_der],
        &pki.intermediate_key_pem,
    );
    let err = expect_upstream_error(&tmp, &reversed, "not issued by");
    assert!(err.to_string().contains(&cert_name));

    // Key of another certificate.
    let wrong_key = write_files(
        tmp.path(),
        &[&pki.intermediate_der, &pki.root_der],
        &pki.root_key_pem,
    );
    let err = expect_upstream_error(&tmp, &wrong_key, &key_name);
    assert!(matches!(err, CaError::UpstreamKeyMismatch { .. }), "{err}");

    // Not a PKCS#8 key block.
    let sec1 = pki
        .intermediate_key_pem
        .replace("PRIVATE KEY", "EC PRIVATE KEY");
    let sec1_files = write_files(tmp.path(), &[&pki.intermediate_der, &pki.root_der], &sec1);
    let err = expect_upstream_error(&tmp, &sec1_files, "PKCS#8");
    assert!(matches!(err, CaError::UpstreamKey { .. }), "{err}");

    // Not a CA: a leaf certificate as "upstream".
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["leaf.example.org".to_string()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    let not_ca = write_files(tmp.path(), &[leaf.der()], &leaf_key.serialize_pem());
    let err = expect_upstream_error(&tmp, &not_ca, "not a CA");
    assert!(err.to_string().contains(&cert_name));

    // Expired upstream.
    let old = upstream_pki(T0 + 100 * HOUR, T0 - 1, &rcgen::PKCS_ECDSA_P256_SHA256);
    let expired = write_files(
        tmp.path(),
        &[&old.intermediate_der, &old.root_der],
        &old.intermediate_key_pem,
    );
    expect_upstream_error(&tmp, &expired, "expired");
}
