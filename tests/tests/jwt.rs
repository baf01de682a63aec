//! JWT-SVIDs end to end, between real `signet-issuer` and `signet-agent` processes and clients
//! nobody here wrote:
//!
//! - py-spiffe's `JwtSource` fetches a JWT-SVID that PyJWT verifies with the JWT authority from
//!   `FetchJWTBundles`, and again with the key found through the issuer's OIDC discovery document
//!   (served with a test web CA on the bundle endpoint); the agent's `ValidateJWTSVID` (through
//!   `signet-agent api validate jwt`) accepts the same token and refuses it for another audience.
//! - Two issuers of different trust domains, federated both ways over `https_spiffe`: a workload
//!   of each validates the other's JWT-SVID through `ValidateJWTSVID` (the Rust `spiffe` crate as
//!   the client), and the two complete mutual TLS with their X509-SVIDs (Python `spiffe-tls`).
//! - WIT-SVIDs from the real agent: the token validates with the WIT bundle of `FetchWITBundles`,
//!   its key proves possession through a Workload Proof Token that signet-sdk verifies, and PyJWT
//!   checks the same token and signs a WPT with the served key that signet-sdk accepts too.
//! - JWT key rotation with a 12 s key lifetime and 6 s tokens: for half a minute a workload keeps
//!   fetching tokens and two agents keep validating them; no valid token ever fails, while the
//!   signing key changes several times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../python/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{
    Registration, agent_with_entries, python_command, run_client, run_json, start_server,
    venv_python,
};
use serde_json::Value;
use signet_spiffe::{Bundle, TrustDomain};
use signet_tests::agent::{Agent, AgentBuilder, current_uid, free_port};
use signet_tests::pki::TestCa;
use signet_tests::{Issuer, IssuerBuilder};

const WAIT: Duration = Duration::from_secs(60);

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// The issuer's own bundle as it publishes it (`bundle show --format spiffe`).
fn own_bundle(issuer: &Issuer, td: &str) -> Bundle {
    let doc = issuer
        .cli_ok(&["bundle", "show", "--format", "spiffe"])
        .unwrap();
    Bundle::from_json(&TrustDomain::new(td).unwrap(), doc.as_bytes()).unwrap()
}

fn jwt_kids(bundle: &Bundle) -> BTreeSet<String> {
    bundle
        .jwt_authorities
        .iter()
        .map(|a| a.key_id.clone())
        .collect()
}

/// The `kid` of a token's header (read without verification).
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(agent: &Agent) -> spiffe::WorkloadApiClient {
    spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap()
}

/// `signet-agent api validate jwt` against `agent`.
fn cli_validate(agent: &Agent, audience: &str, token: &str) -> signet_tests::CliOutput {
    let socket = agent.socket_path().display().to_string();
    agent
        .cli(&[
            "api",
            "validate",
            "jwt",
            "--socket-path",
            &socket,
            "--audience",
            audience,
            "--token",
            token,
            "--output",
            "json",
        ])
        .unwrap()
}

#[test]
fn a_python_jwt_source_token_verifies_with_pyjwt_through_the_bundles_and_oidc_discovery() {
    let Some(python) = venv_python() else { return };
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (chain, key, _) = ca.server();
    let cert = write(work.path(), "web.pem", &chain);
    let key = write(work.path(), "web.key", &key);
    let ca_file = write(work.path(), "ca.pem", &ca.pem);
    // OIDC: `iss` is where the discovery document lives, so the port is chosen up front.
    let port = free_port().unwrap();
    let issuer_url = format!("https://localhost:{port}");
    let issuer = IssuerBuilder::new()
        .set_str("jwt_issuer", &issuer_url)
        .set_str("bundle_endpoint.bind_address", &format!("127.0.0.1:{port}"))
        .set_str("bundle_endpoint.profile", "https_web")
        .set_str("bundle_endpoint.certificate_path", cert.to_str().unwrap())
        .set_str("bundle_endpoint.private_key_path", key.to_str().unwrap())
        .start()
        .unwrap();
    let id = "spiffe://example.org/py/jwt-client";
    let agent = agent_with_entries(
        &issuer,
        "example.org",
        &[Registration::uid(id, current_uid().unwrap())],
        &[],
        |b| b,
    );

    let discovery = format!("{issuer_url}/.well-known/openid-configuration");
    let (status, doc, out) = run_json(python_command(
        &python,
        &agent.endpoint(),
        "jwt_verify.py",
        &[
            "--audience",
            "svc",
            "--discovery",
            &discovery,
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--issuer",
            &issuer_url,
        ],
        None,
    ));
    assert!(status.success(), "jwt_verify.py failed: {out:?}");
    assert_eq!(doc["spiffe_id"], id, "{doc}");
    assert_eq!(doc["audience"], serde_json::json!(["svc"]));
    assert_eq!(
        doc["bundle_trust_domains"],
        serde_json::json!(["example.org"])
    );
    let header = &doc["header"];
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["typ"], "JWT", "{header}");
    let kid = header["kid"].as_str().unwrap();
    assert!(
        jwt_kids(&own_bundle(&issuer, "example.org")).contains(kid),
        "{kid} is not a published JWT authority"
    );

    // The claims PyJWT verified with the bundle's key: SPIFFE's and ours (iss, jti).
    let claims = &doc["bundle_claims"];
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["aud"], "svc");
    assert_eq!(claims["iss"], issuer_url.as_str());
    assert_eq!(claims["jti"].as_str().unwrap().len(), 22, "{claims}");
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 300, "the default JWT-SVID TTL");
    assert_eq!(doc["expiry"], claims["exp"]);
    // The same key found through OIDC discovery (and `iss` checked by PyJWT).
    assert_eq!(doc["oidc_claims"], *claims);
    let d = &doc["discovery"];
    assert_eq!(d["issuer"], issuer_url.as_str());
    assert_eq!(d["jwks_uri"], format!("{issuer_url}/keys"));
    assert_eq!(doc["discovery_content_type"], "application/json");
    assert_eq!(doc["bundle_wrong_audience_refused"], true);
    assert_eq!(doc["oidc_wrong_audience_refused"], true);

    // The agent's ValidateJWTSVID agrees, and refuses the token for another audience.
    let token = doc["token"].as_str().unwrap();
    let validated = cli_validate(&agent, "svc", token).json().unwrap();
    assert_eq!(validated["spiffe_id"], id);
    assert_eq!(validated["claims"], *claims);
    let refused = cli_validate(&agent, "other", token);
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("audience \"other\" is not among"),
        "{}",
        refused.stderr
    );
    // The CLI's own fetch gives a cached token for the same identity and audience.
    let socket = agent.socket_path().display().to_string();
    let fetched = agent
        .cli(&[
            "api",
            "fetch",
            "jwt",
            "--socket-path",
            &socket,
            "--audience",
            "svc",
            "--output",
            "json",
        ])
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(fetched["svids"][0]["token"], token, "served from the cache");
    assert_eq!(fetched["svids"][0]["spiffe_id"], id);
}

/// An issuer of `td` with an `https_spiffe` bundle endpoint on a free port and a 1 s refresh hint.
fn federating_issuer(td: &str) -> Issuer {
    IssuerBuilder::new()
        .set_str("trust_domain", td)
        .set_str("bundle_endpoint.bind_address", "127.0.0.1:0")
        .set_str("bundle_endpoint.profile", "https_spiffe")
        .set_str("bundle_endpoint.refresh_hint", "1s")
        .start()
        .unwrap()
}

/// `issuer` federates with `other` (of trust domain `td`) over `https_spiffe`, bootstrapped with
/// `other`'s current bundle, and fetches it once.
fn federate(issuer: &Issuer, other: &Issuer, td: &str, work: &Path) {
    let ready = other.wait_for_log("issuer ready", |_| true, WAIT).unwrap();
    let url = format!("https://{}/", ready["bundle_endpoint"].as_str().unwrap());
    let doc = other
        .cli_ok(&["bundle", "show", "--format", "spiffe"])
        .unwrap();
    let bootstrap = write(work, &format!("{td}.json"), &doc);
    let endpoint_id = format!("spiffe://{td}/signet/issuer");
    issuer
        .cli_ok(&[
            "federation",
            "create",
            "--trust-domain",
            td,
            "--bundle-endpoint-url",
            &url,
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            &endpoint_id,
            "--bundle",
            bootstrap.to_str().unwrap(),
        ])
        .unwrap();
    issuer
        .cli_ok(&["federation", "refresh", "--trust-domain", td])
        .unwrap();
}

#[test]
fn two_federated_trust_domains_validate_each_others_jwt_svids_and_complete_mtls() {
    let work = tempfile::tempdir().unwrap();
    let a = federating_issuer("a.test");
    let b = federating_issuer("b.test");
    federate(&a, &b, "b.test", work.path());
    federate(&b, &a, "a.test", work.path());
    let uid = current_uid().unwrap();
    let a_id = "spiffe://a.test/workload/client";
    let b_id = "spiffe://b.test/workload/server";
    let agent_a = agent_with_entries(
        &a,
        "a.test",
        &[Registration::uid(a_id, uid)],
        &["--federates-with", "b.test"],
        |c| c,
    );
    let agent_b = agent_with_entries(
        &b,
        "b.test",
        &[Registration::uid(b_id, uid)],
        &["--federates-with", "a.test"],
        |c| c,
    );

    runtime().block_on(async {
        let client_a = client(&agent_a).await;
        let client_b = client(&agent_b).await;
        // Each side's JWT bundles: its own and the federated trust domain's, never merged.
        for c in [&client_a, &client_b] {
            let set = c.fetch_jwt_bundles().await.unwrap();
            for (issuer, td) in [(&a, "a.test"), (&b, "b.test")] {
                let served: BTreeSet<String> = set
                    .get(&spiffe::TrustDomain::new(td).unwrap())
                    .unwrap_or_else(|| panic!("no JWT bundle for {td}"))
                    .jwt_authorities()
                    .map(|a| a.key_id().to_owned())
                    .collect();
                assert_eq!(served, jwt_kids(&own_bundle(issuer, td)), "{td}");
            }
        }

        // A's workload calls B's: B validates A's token through its own agent, and back.
        let token_a = client_a.fetch_jwt_token([b_id], None).await.unwrap();
        let seen_by_b = client_b.validate_jwt_token(b_id, &token_a).await.unwrap();
        assert_eq!(seen_by_b.spiffe_id().to_string(), a_id);
        let token_b = client_b.fetch_jwt_token([a_id], None).await.unwrap();
        let seen_by_a = client_a.validate_jwt_token(a_id, &token_b).await.unwrap();
        assert_eq!(seen_by_a.spiffe_id().to_string(), b_id);
        // The audience still matters across trust domains.
        let err = client_b
            .validate_jwt_token("spiffe://b.test/someone-else", &token_a)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("audience"), "{err}");
        // And an agent validates with the bundles the workload's entries federate with: the
        // agent of a.test has no bundle for a trust domain nobody federates with.
        let local = client_a.fetch_jwt_token([a_id], None).await.unwrap();
        assert_eq!(
            client_a
                .validate_jwt_token(a_id, &local)
                .await
                .unwrap()
                .spiffe_id()
                .to_string(),
            a_id
        );
    });

    // Mutual TLS with the X509-SVIDs, each side trusting the other's federated bundle, through
    // Python spiffe-tls.
    let Some(python) = venv_python() else { return };
    let (mut server, addr) = start_server(&python, &agent_b, b_id, a_id);
    let (status, doc, out) = run_client(&python, &agent_a, a_id, b_id, &addr);
    assert!(status.success(), "mTLS client failed: {out:?}");
    assert_eq!(doc["peer_spiffe_id"], b_id, "{doc}");
    let done = server.next_json();
    assert_eq!(done["peer_spiffe_id"], a_id, "{done}");
    // A client that expects another server ID refuses B.
    let (mut server, addr) = start_server(&python, &agent_b, b_id, a_id);
    let (status, doc, _) = run_client(
        &python,
        &agent_a,
        a_id,
        "spiffe://b.test/workload/not-the-server",
        &addr,
    );
    assert!(!status.success(), "{doc}");
    drop(server.finish());
}

#[test]
fn jwt_key_rotation_with_short_ttls_never_fails_a_valid_token() {
    // Keys live 12 s: a new one is published at 6 s and signs from 10 s, so one rotation every
    // 6 s. Tokens live 6 s (the agent renews them after 3 s).
    let issuer = IssuerBuilder::new()
        .set_str("jwt.key_ttl", "12s")
        .set_str("defaults.jwt_svid_ttl", "6s")
        .start()
        .unwrap();
    let id = "spiffe://example.org/rotating/workload";
    let first = agent_with_entries(
        &issuer,
        "example.org",
        &[Registration::uid(id, current_uid().unwrap())],
        &[],
        |b| b,
    );
    // A second node serving the same identity (the entry is under the shared node alias).
    let token = issuer
        .join_token(Some("spiffe://example.org/node/python-e2e"))
        .unwrap();
    let second = AgentBuilder::new(&issuer)
        .join_token(&token)
        .start()
        .unwrap();

    let (kids, validated) = runtime().block_on(async {
        let fetcher = client(&first).await;
        let validators = [client(&first).await, client(&second).await];
        let mut kids = BTreeSet::new();
        let mut validated = 0usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let token = fetcher.fetch_jwt_token(["svc"], None).await.unwrap();
            kids.insert(kid_of(&token));
            for (n, v) in validators.iter().enumerate() {
                match v.validate_jwt_token("svc", &token).await {
                    Ok(svid) => assert_eq!(svid.spiffe_id().to_string(), id),
                    Err(e) => panic!(
                        "agent {n} refused a valid token signed by {} after {} validations: {e}",
                        kid_of(&token),
                        validated
                    ),
                }
                validated += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (kids, validated)
    });
    assert!(
        kids.len() >= 4,
        "tokens were signed by {} keys only: {kids:?}",
        kids.len()
    );
    assert!(validated > 100, "{validated}");
    // The issuer rotated on schedule (each activation is an audited, logged step).
    let activations = issuer
        .logs()
        .iter()
        .filter(|l| l.contains("JWT key rotation") && l.contains("activated"))
        .count();
    assert!(activations >= 3, "{activations} activations");
}

#[test]
fn wit_svids_from_the_real_agent_prove_possession_and_interoperate_with_pyjwt() {
    use signet_proto::workload as pb;
    let issuer = IssuerBuilder::new().start().unwrap();
    let id = "spiffe://example.org/agents/planner";
    let agent = agent_with_entries(
        &issuer,
        "example.org",
        &[Registration::uid(id, current_uid().unwrap())],
        &[],
        |b| b,
    );
    let audience = "https://flights.example.org/search";
    let (svid, jwks) = runtime().block_on(async {
        let endpoint =
            signet_agent::cli::client::WorkloadEndpoint::parse(&agent.endpoint()).unwrap();
        let mut c = endpoint.connect().await.unwrap();
        use signet_agent::cli::client::request;
        let mut svids = c
            .fetch_witsvid(request(pb::WitsvidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = svids.message().await.unwrap().unwrap();
        let mut bundles = c
            .fetch_wit_bundles(request(pb::WitBundlesRequest {}))
            .await
            .unwrap()
            .into_inner();
        let b = bundles.message().await.unwrap().unwrap();
        assert_eq!(first.svids.len(), 1);
        (
            first.svids.into_iter().next().unwrap(),
            b.bundles["spiffe://example.org"].clone(),
        )
    });
    assert_eq!(svid.spiffe_id, id);
    // The WIT bundle holds exactly the issuer's published WIT keys.
    let td = TrustDomain::new("example.org").unwrap();
    let served = Bundle::from_json(&td, jwks.as_bytes()).unwrap();
    let published = own_bundle(&issuer, "example.org");
    let kids = |b: &Bundle| -> BTreeSet<String> {
        b.wit_authorities.iter().map(|a| a.key_id.clone()).collect()
    };
    assert_eq!(kids(&served), kids(&published));
    assert!(!kids(&served).is_empty());
    assert!(
        kids(&served).is_disjoint(&jwt_kids(&published)),
        "separate key sets"
    );

    // signet-sdk: the WIT-SVID and a WPT made with the served key.
    let key = signet_sdk::WitKey::from_private_jwk(&svid.wit_svid_key).unwrap();
    let now = std::time::SystemTime::now();
    let wpt = signet_sdk::mint_wpt(
        &svid.wit_svid,
        &key,
        audience,
        Duration::from_secs(30),
        now,
        &signet_sdk::BoundTokens::default(),
    )
    .unwrap();
    let verifier = signet_sdk::WptVerifier::new();
    let verify = |wpt: &str| {
        verifier.verify(
            &signet_sdk::WptRequest {
                wit: &svid.wit_svid,
                wpt,
                audience,
                bound: signet_sdk::BoundTokens::default(),
            },
            |t| (*t == td).then_some(&served),
            std::time::SystemTime::now(),
        )
    };
    let caller = verify(&wpt).unwrap();
    assert_eq!(caller.spiffe_id.to_string(), id);
    // The same WPT again is a replay.
    assert!(matches!(
        verify(&wpt),
        Err(signet_sdk::WptError::Replayed { .. })
    ));

    // PyJWT: verifies the WIT-SVID and the Rust WPT, and signs its own WPT with the served key.
    let Some(python) = venv_python() else { return };
    let (status, doc, out) = run_json(python_command(
        &python,
        &agent.endpoint(),
        "wit_verify.py",
        &[
            "--wit",
            &svid.wit_svid,
            "--key",
            &svid.wit_svid_key,
            "--jwks",
            &jwks,
            "--audience",
            audience,
            "--wpt",
            &wpt,
        ],
        None,
    ));
    assert!(status.success(), "wit_verify.py failed: {out:?}");
    assert_eq!(doc["wit_header"]["typ"], "wit+jwt");
    assert_eq!(doc["wit_claims"]["sub"], id);
    assert!(
        doc["wit_claims"].get("aud").is_none(),
        "a WIT has no audience"
    );
    assert_eq!(doc["key_matches_cnf"], true);
    assert_eq!(doc["rust_wpt_header"]["typ"], "wpt+jwt");
    assert_eq!(doc["rust_wpt_claims"]["aud"], audience);
    assert_eq!(doc["rust_wpt_wth_ok"], true);
    let python_wpt = doc["python_wpt"].as_str().unwrap();
    let caller = verify(python_wpt).unwrap();
    assert_eq!(caller.spiffe_id.to_string(), id);
    // A WPT for another target is refused.
    let other = signet_sdk::mint_wpt(
        &svid.wit_svid,
        &key,
        "https://evil.example.org/",
        Duration::from_secs(30),
        std::time::SystemTime::now(),
        &signet_sdk::BoundTokens::default(),
    )
    .unwrap();
    assert!(verify(&other).is_err());
}
