//! `openssl verify -x509_strict` accepts minted chains (self-signed and upstream, every key type).
//!
//! Skipped with a message when `openssl` is not on PATH, unless `CI` is set (then it fails).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use signet_ca::{CertificateAuthority, KeyType};

use crate::common::*;

fn openssl_available() -> bool {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "openssl is not on PATH and CI is set: the openssl verification cannot be skipped"
            );
            println!("SKIP: openssl not found on PATH; openssl verification skipped");
            false
        }
    }
}

/// Runs `openssl verify -x509_strict -purpose <p> -CAfile root.pem [-untrusted int.pem] leaf.pem`
/// for both TLS purposes.
fn openssl_verify(dir: &Path, anchors: &[Vec<u8>], chain: &[Vec<u8>]) {
    let root = dir.join("root.pem");
    let leaf = dir.join("leaf.pem");
    let ints = dir.join("intermediates.pem");
    fs::write(
        &root,
        anchors
            .iter()
            .map(|a| to_pem("CERTIFICATE", a))
            .collect::<String>(),
    )
    .unwrap();
    fs::write(&leaf, to_pem("CERTIFICATE", &chain[0])).unwrap();
    for purpose in ["sslclient", "sslserver"] {
        let mut cmd = Command::new("openssl");
        cmd.arg("verify")
            .arg("-x509_strict")
            .args(["-purpose", purpose])
            .arg("-CAfile")
            .arg(&root);
        if chain.len() > 1 {
            fs::write(
                &ints,
                chain[1..]
                    .iter()
                    .map(|c| to_pem("CERTIFICATE", c))
                    .collect::<String>(),
            )
            .unwrap();
            cmd.arg("-untrusted").arg(&ints);
        }
        let out = cmd.arg(&leaf).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(": OK"),
            "openssl verify ({purpose}) failed:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn openssl_verifies_self_signed_chains_for_every_key_type() {
    if !openssl_available() {
        return;
    }
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = CertificateAuthority::open(
            config(&key_dir(&tmp), kt, Duration::from_secs(24 * HOUR)),
            None,
            now,
        )
        .unwrap();
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_RSA_SHA256] {
            let spki = workload_key(alg).public_key_der();
            let svid = sign(&ca, "/openssl", &spki, Duration::from_secs(HOUR), now);
            openssl_verify(tmp.path(), &ca.trust_anchors(), &svid.cert_chain_der);
        }
        // Also after a rotation, with both CAs in the bundle.
        ca.prepare(now).unwrap();
        ca.activate(now).unwrap();
        let svid = sign(
            &ca,
            "/openssl",
            &p256_spki(),
            Duration::from_secs(HOUR),
            now,
        );
        assert_eq!(ca.trust_anchors().len(), 2);
        openssl_verify(tmp.path(), &ca.trust_anchors(), &svid.cert_chain_der);
    }
}

#[test]
fn openssl_verifies_upstream_chains() {
    if !openssl_available() {
        return;
    }
    let now = SystemTime::now();
    let now_s = unix(now);
    let tmp = tempfile::tempdir().unwrap();
    let pki = upstream_pki(
        now_s + 100 * HOUR,
        now_s + 50 * HOUR,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let cert = tmp.path().join("up.pem");
    let key = tmp.path().join("up.key");
    fs::write(
        &cert,
        to_pem("CERTIFICATE", &pki.intermediate_der) + &to_pem("CERTIFICATE", &pki.root_der),
    )
    .unwrap();
    fs::write(&key, &pki.intermediate_key_pem).unwrap();
    let ca = CertificateAuthority::open(
        upstream_config(&key_dir(&tmp), Duration::from_secs(24 * HOUR), &cert, &key),
        None,
        now,
    )
    .unwrap();
    let svid = sign(
        &ca,
        "/openssl",
        &p256_spki(),
        Duration::from_secs(HOUR),
        now,
    );
    assert_eq!(svid.cert_chain_der.len(), 3);
    openssl_verify(tmp.path(), &ca.trust_anchors(), &svid.cert_chain_der);
}
