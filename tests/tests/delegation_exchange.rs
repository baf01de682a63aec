//! End to end: RFC 8693 token exchange at the real issuer's `POST /token`, driven by an RFC
//! client in Python (`tests/python/token_exchange.py`, standard library + PyJWT): alice's ID token
//! and the planner's JWT-SVID make a delegation token, a hop gives it to search, and search gets
//! an `at+jwt` access token with nested `act` that PyJWT verifies through OIDC discovery. The
//! refusals come back as OAuth errors, and `audit trace` rebuilds the chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../python/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{python_command, run_json, venv_python};
use serde_json::json;
use signet_tests::agent::free_port;
use signet_tests::idp::TestIdp;
use signet_tests::pki::TestCa;
use signet_tests::{Issuer, IssuerBuilder};

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// The directory of the end-to-end policies.
pub fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn svid(issuer: &Issuer, id: &str) -> String {
    issuer
        .cli_ok(&[
            "jwt",
            "mint",
            "--spiffe-id",
            id,
            "--audience",
            "spiffe://example.org/signet/issuer",
        ])
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn token_exchange_mints_hops_and_issues_an_access_token_with_the_chain() {
    let Some(python) = venv_python() else { return };
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (chain, key, _) = ca.server();
    let cert = write(work.path(), "web.pem", &chain);
    let key = write(work.path(), "web.key", &key);
    let ca_file = write(work.path(), "ca.pem", &ca.pem);
    let idp = TestIdp::new("https://idp.example.com").unwrap();
    let port = free_port().unwrap();
    let issuer_url = format!("https://localhost:{port}");
    let issuer = IssuerBuilder::new()
        .set_str("jwt_issuer", &issuer_url)
        .set_str("bundle_endpoint.bind_address", &format!("127.0.0.1:{port}"))
        .set_str("bundle_endpoint.profile", "https_web")
        .set_str("bundle_endpoint.certificate_path", cert.to_str().unwrap())
        .set_str("bundle_endpoint.private_key_path", key.to_str().unwrap())
        .set_str("delegation.policies_dir", policies_dir().to_str().unwrap())
        .raw(&idp.provider_toml("signet"))
        .start()
        .unwrap();
    let id_token = idp.id_token(
        "alice",
        "signet",
        Duration::from_secs(300),
        json!({"email": "alice@example.com"}),
    );
    let planner = svid(&issuer, "spiffe://example.org/planner");
    let search = svid(&issuer, "spiffe://example.org/search");
    let intruder = svid(&issuer, "spiffe://example.org/intruder");

    let (status, doc, out) = run_json(python_command(
        &python,
        "unix:///nonexistent",
        "token_exchange.py",
        &[
            "--issuer-url",
            &issuer_url,
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--id-token",
            &id_token,
            "--planner-svid",
            &planner,
            "--search-svid",
            &search,
            "--intruder-svid",
            &intruder,
            "--search-id",
            "spiffe://example.org/search",
        ],
        None,
    ));
    assert!(status.success(), "token_exchange.py failed: {out:?}");

    // 1. The mint: a Biscuit for alice, planner first actor, the asked-for scope.
    let mint = &doc["mint"];
    assert_eq!(mint["status"], 200, "{mint}");
    assert_eq!(mint["cache_control"], "no-store");
    assert_eq!(
        mint["body"]["issued_token_type"],
        "urn:signet:params:oauth:token-type:biscuit"
    );
    assert_eq!(mint["body"]["token_type"], "N_A");
    assert_eq!(mint["body"]["scope"], "flights:read");
    let expires_in = mint["body"]["expires_in"].as_u64().unwrap();
    assert!(
        (590..=600).contains(&expires_in),
        "{expires_in}: the policy's max_ttl"
    );
    // 2. The hop to search.
    assert_eq!(doc["hop"]["status"], 200, "{}", doc["hop"]);
    // 3. The access token: PyJWT verified it through OIDC discovery (iss, aud, signature).
    assert_eq!(doc["jwt"]["status"], 200, "{}", doc["jwt"]);
    assert_eq!(doc["jwt"]["body"]["token_type"], "Bearer");
    let claims = &doc["verified_claims"];
    assert_eq!(claims["sub"], "https://idp.example.com#alice", "{claims}");
    assert_eq!(claims["aud"], "flights-api");
    assert_eq!(claims["iss"], issuer_url.as_str());
    assert_eq!(claims["scope"], "flights:read");
    assert_eq!(claims["client_id"], "spiffe://example.org/search");
    assert_eq!(
        claims["act"],
        json!({"sub": "spiffe://example.org/search",
               "act": {"sub": "spiffe://example.org/planner"}}),
        "RFC 8693 §4.1: the current actor outermost"
    );
    assert_eq!(doc["verified_header"]["typ"], "at+jwt");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 300);

    // Refusals: OAuth error responses.
    let error = |name: &str| {
        let r = &doc[name];
        assert_eq!(r["status"], 400, "{name}: {r}");
        assert!(
            r["body"]["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name}: {r}"
        );
        r["body"]["error"].as_str().unwrap().to_owned()
    };
    assert_eq!(error("wrong_grant"), "unsupported_grant_type");
    assert_eq!(error("not_the_holder"), "invalid_grant");
    assert!(
        doc["not_the_holder"]["body"]["error_description"]
            .as_str()
            .unwrap()
            .contains("holder"),
        "{}",
        doc["not_the_holder"]
    );
    assert_eq!(error("widening"), "invalid_scope");
    assert_eq!(error("no_actor"), "invalid_request");
    assert_eq!(error("forged_actor"), "invalid_grant");

    // The audit log knows the access token and the chain behind it.
    let jti = claims["jti"].as_str().unwrap();
    let trace = issuer
        .cli_json(&["audit", "trace", "--token-id", jti, "--output", "json"])
        .unwrap();
    assert_eq!(trace["complete"], true, "{trace}");
    let hops = trace["hops"].as_array().unwrap();
    let kinds: Vec<_> = hops.iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "delegation.exchange",
            "delegation.exchange",
            "delegation.exchange"
        ]
    );
    assert_eq!(hops[0]["subject"], "https://idp.example.com#alice");
    assert_eq!(
        hops[2]["chain"],
        json!([
            "spiffe://example.org/planner",
            "spiffe://example.org/search"
        ])
    );
    assert!(trace["warnings"].as_array().unwrap().is_empty(), "{trace}");
}
