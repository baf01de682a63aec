//! `[[delegation.identity_providers]]` with the real `signet-issuer`: JWK Set files are read at
//! start-up (an invalid one stops it, naming the key), JWKS URLs are fetched at start-up (an
//! unreachable one does not stop it), and config errors name the table by index.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use signet_tests::idp::{JwksServer, TestIdp};
use signet_tests::pki::TestCa;
use signet_tests::{IssuerBuilder, toml_str};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn the_issuer_starts_with_a_jwks_file() {
    let idp = TestIdp::new("https://idp.example.com").unwrap();
    let issuer = IssuerBuilder::new()
        .raw(&idp.provider_toml("signet"))
        .start()
        .unwrap();
    let ready = issuer.wait_for_log("issuer ready", |_| true, WAIT).unwrap();
    assert_eq!(ready["identity_providers"], 1, "{ready}");
}

#[test]
fn an_invalid_jwks_file_stops_start_up_naming_the_key() {
    let idp = TestIdp::new("https://idp.example.com").unwrap();
    let mut jwk = idp.jwks()["keys"][0].clone();
    jwk["d"] = serde_json::json!("AAAA");
    idp.write_jwks(&serde_json::json!({ "keys": [jwk] }))
        .unwrap();
    let out = IssuerBuilder::new()
        .raw(&idp.provider_toml("signet"))
        .run_expecting_exit()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let expected = format!(
        "delegation.identity_providers[0].jwks_path {}: key 0: contains the private key parameter `d`",
        idp.jwks_path().display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);

    std::fs::remove_file(idp.jwks_path()).unwrap();
    let out = IssuerBuilder::new()
        .raw(&idp.provider_toml("signet"))
        .run_expecting_exit()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "delegation.identity_providers[0].jwks_path {}: cannot read",
            idp.jwks_path().display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn an_invalid_identity_provider_table_stops_start_up_naming_the_key() {
    let idp = TestIdp::new("https://idp.example.com").unwrap();
    let out = IssuerBuilder::new()
        .raw(&idp.provider_toml("signet"))
        .raw(
            "[[delegation.identity_providers]]\nissuer = \"https://other.example\"\naudience = \"signet\"\njwks_url = \"http://other.example/jwks\"\n",
        )
        .run_expecting_exit()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "invalid config: delegation.identity_providers[1].jwks_url: \"http://other.example/jwks\" must be an https:// URL"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_jwks_url_is_fetched_at_start_up() {
    let idp = TestIdp::new("https://idp.example.com").unwrap();
    let ca = TestCa::new();
    let server = JwksServer::start(&ca, idp.jwks().to_string()).unwrap();
    let ca_path = idp.dir().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let issuer = IssuerBuilder::new()
        .raw(&format!(
            "[[delegation.identity_providers]]\nissuer = {}\naudience = \"signet\"\njwks_url = {}\njwks_ca_bundle_path = {}\n",
            toml_str(idp.issuer()),
            toml_str(&server.url()),
            toml_str(&ca_path.display().to_string()),
        ))
        .start()
        .unwrap();
    // The fetch happens before the ready line.
    issuer.wait_for_log("issuer ready", |_| true, WAIT).unwrap();
    assert_eq!(server.hits(), 1);
    let loaded = issuer
        .wait_for_log(
            "loaded the signing keys of an identity provider",
            |v| v["issuer"] == "https://idp.example.com",
            WAIT,
        )
        .unwrap();
    let keys = loaded["keys"].as_str().unwrap();
    assert!(
        keys.contains(idp.kid(signet_tests::idp::TestKey::Rsa)),
        "{loaded}"
    );
}

#[test]
fn an_unreachable_jwks_url_does_not_stop_start_up() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    // Nothing listens on port 1.
    let issuer = IssuerBuilder::new()
        .raw(&format!(
            "[[delegation.identity_providers]]\nissuer = \"https://idp.example.com\"\naudience = \"signet\"\njwks_url = \"https://127.0.0.1:1/jwks\"\njwks_ca_bundle_path = {}\n",
            toml_str(&ca_path.display().to_string()),
        ))
        .start()
        .unwrap();
    let warning = issuer
        .wait_for_log(
            "cannot fetch the JWKS of an identity provider; keeping the last good one",
            |_| true,
            WAIT,
        )
        .unwrap();
    assert!(
        warning["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to 127.0.0.1:1"),
        "{warning}"
    );
    let ready = issuer.wait_for_log("issuer ready", |_| true, WAIT).unwrap();
    assert_eq!(ready["identity_providers"], 1);
}
