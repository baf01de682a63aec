//! pkilint (RFC 5280 profile) on the CA certificates and X509-SVIDs, when `lint_pkix_cert` is
//! on PATH (`pip install pkilint`); skipped with a message otherwise.
//!
//! pkilint checks URIs with a fixed list of schemes (http, https, ftp, ...), so it reports every
//! `spiffe://` SAN as `pkix.invalid_uri_syntax` (SPIRE's certificates get the same finding).
//! That finding, and only for `spiffe://` URIs, is ignored here; anything else at WARNING or above
//! fails.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use signet_ca::{CertificateAuthority, KeyType, X509SvidRequest};

use crate::common::*;

fn available() -> bool {
    let ok = Command::new("lint_pkix_cert")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIP: lint_pkix_cert (pkilint) not on PATH; RFC 5280 lint skipped");
    }
    ok
}

fn findings(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.contains("(FATAL)") || l.contains("(ERROR)") || l.contains("(WARNING)"))
        .filter(|l| !(l.contains("pkix.invalid_uri_syntax") && l.contains("\"spiffe://")))
        .map(str::to_string)
        .collect()
}

fn lint(tool: &str, files: &[&Path]) {
    let out = Command::new(tool)
        .arg("lint")
        .args(["-s", "WARNING"])
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let bad = findings(&text);
    assert!(bad.is_empty(), "{tool} {files:?}:\n{text}");
}

fn write(dir: &Path, name: &str, der: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, to_pem("CERTIFICATE", der)).unwrap();
    path
}

#[test]
fn pkilint_reports_no_errors_for_cas_and_svids() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let dns = vec!["web.example.org".to_string()];
    let spiffe_id = id("/ns/default/sa/web");
    let spki = p256_spki();
    let req = X509SvidRequest {
        spiffe_id: &spiffe_id,
        public_key_spki_der: &spki,
        ttl: Duration::from_secs(HOUR),
        dns_names: &dns,
    };
    for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let dir = key_dir(&tmp).join(kt.to_string());
        let ca =
            CertificateAuthority::open(config(&dir, kt, Duration::from_secs(24 * HOUR)), None, now)
                .unwrap();
        let svid = ca.sign_x509_svid(&req, now).unwrap();
        let ca_pem = write(tmp.path(), &format!("ca-{kt}.pem"), &ca.trust_anchors()[0]);
        let leaf_pem = write(
            tmp.path(),
            &format!("leaf-{kt}.pem"),
            &svid.cert_chain_der[0],
        );
        lint("lint_pkix_cert", &[&ca_pem]);
        lint("lint_pkix_cert", &[&leaf_pem]);
        lint("lint_pkix_signer_signee_cert_chain", &[&ca_pem, &leaf_pem]);
    }

    // Upstream mode: the Signet intermediate and its leaf.
    let now_s = unix(now);
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
        upstream_config(
            &key_dir(&tmp).join("up"),
            Duration::from_secs(24 * HOUR),
            &cert,
            &key,
        ),
        None,
        now,
    )
    .unwrap();
    let svid = ca.sign_x509_svid(&req, now).unwrap();
    let int_pem = write(tmp.path(), "int.pem", &svid.cert_chain_der[1]);
    let leaf_pem = write(tmp.path(), "leaf-up.pem", &svid.cert_chain_der[0]);
    lint("lint_pkix_cert", &[&int_pem]);
    lint("lint_pkix_cert", &[&leaf_pem]);
    lint("lint_pkix_signer_signee_cert_chain", &[&int_pem, &leaf_pem]);
}

#[test]
fn the_spiffe_uri_exemption_is_narrow() {
    let out = "X @ y\n    pkix.invalid_uri_syntax (ERROR): Invalid URI syntax: \"spiffe://a/b\"\n\
               X @ z\n    pkix.invalid_uri_syntax (ERROR): Invalid URI syntax: \"htp:/x\"\n\
               X @ w\n    pkix.some_other (WARNING): thing\n    pkix.info_only (INFO)\n";
    let f = findings(out);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].contains("htp:/x"));
    assert!(f[1].contains("some_other"));
}
