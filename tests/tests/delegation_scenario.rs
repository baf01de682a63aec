//! End to end, the scenario of issue 5 with the real binaries: alice's ID token (from a test IdP
//! the issuer trusts), the `planner` workload mints through its node agent's delegation service
//! (`signet-agent api delegation mint`), delegates to `search`, and the `flights` resource server
//! verifies with the SDK's `DelegationKeySource`, which follows the agent's `FetchDelegationKeys`
//! stream. Then every refusal of the issue, revocation reaching the verifier within seconds, and
//! the auditor's `audit trace`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../python/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use harness::{Registration, agent_with_entries, python_command, run_json, venv_python};
use serde_json::{Value, json};
use signet_sdk::delegation::{DelegationKeySource, Request, VerifyError};
use signet_tests::agent::{Agent, current_uid};
use signet_tests::idp::TestIdp;
use signet_tests::{Issuer, IssuerBuilder};

const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";
const FLIGHTS: &str = "spiffe://example.org/flights";
const SCRAPER: &str = "spiffe://example.org/scraper";

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// `signet-agent api delegation ARGS --socket-path S --output json` (its status and output).
fn delegation(agent: &Agent, args: &[&str]) -> signet_tests::CliOutput {
    let socket = agent.socket_path().display().to_string();
    let mut all = vec!["api", "delegation"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--socket-path", &socket, "--output", "json"]);
    agent.cli(&all).unwrap()
}

fn ok(agent: &Agent, args: &[&str]) -> Value {
    delegation(agent, args).json().unwrap()
}

fn refused(agent: &Agent, args: &[&str]) -> String {
    let out = delegation(agent, args);
    assert!(!out.success(), "{args:?} should be refused: {}", out.stdout);
    out.stderr
}

fn setup() -> (TestIdp, Issuer, Agent) {
    let idp = TestIdp::new("https://idp.example.com").unwrap();
    let issuer = IssuerBuilder::new()
        .set_str("delegation.policies_dir", policies_dir().to_str().unwrap())
        .raw(&idp.provider_toml("signet"))
        .start()
        .unwrap();
    let uid = current_uid().unwrap();
    // One uid runs every workload here: `--spiffe-id` picks the identity each one acts as.
    let agent = agent_with_entries(
        &issuer,
        "example.org",
        &[
            Registration::uid(PLANNER, uid),
            Registration::uid(SEARCH, uid),
            Registration::uid(FLIGHTS, uid),
        ],
        &[],
        |b| b,
    );
    (idp, issuer, agent)
}

fn verify(
    source: &DelegationKeySource,
    token: &str,
    presenter: &str,
    operation: &str,
) -> Result<signet_sdk::delegation::Decision, VerifyError> {
    source.verify(
        token,
        &Request {
            presenter,
            operation,
            now: SystemTime::now(),
        },
    )
}

/// `token` with a block that claims hop 2 to the scraper with `flights:book`: once as a
/// first-party block, once as a third-party block signed by a key the issuer never published.
fn widened_copies(token: &str) -> Vec<String> {
    use biscuit_auth::builder::BlockBuilder;
    use biscuit_auth::{KeyPair, UnverifiedBiscuit};
    let claims = format!(
        "actor(2, \"{SCRAPER}\"); hop(2, \"forged\", \"x\"); delegated_by(2, \"{SEARCH}\"); \
         hop_rights(2, [\"flights:book\"]); right(\"flights:book\"); \
         hop_time(2, 2026-01-01T00:00:00Z); hop_expires(2, 2099-01-01T00:00:00Z);"
    );
    let u = UnverifiedBiscuit::from_base64(token).unwrap();
    let first = u
        .append(BlockBuilder::new().code(&claims).unwrap())
        .unwrap()
        .to_base64()
        .unwrap();
    let attacker = KeyPair::new();
    let block = u
        .third_party_request()
        .unwrap()
        .create_block(
            &attacker.private(),
            BlockBuilder::new().code(&claims).unwrap(),
        )
        .unwrap();
    let third = u
        .append_third_party(&block.serialize().unwrap())
        .unwrap()
        .to_base64()
        .unwrap();
    vec![first, third]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_planner_search_flights() {
    let (idp, issuer, agent) = setup();
    let work = tempfile::tempdir().unwrap();
    let id_token_file = work.path().join("alice.jwt");
    std::fs::write(
        &id_token_file,
        idp.id_token(
            "alice",
            "signet",
            Duration::from_secs(300),
            json!({"email": "alice@example.com", "email_verified": true}),
        ),
    )
    .unwrap();
    let id_token_path = id_token_file.to_str().unwrap();

    // The planner mints for alice, the planner delegates to search.
    let minted = ok(
        &agent,
        &[
            "mint",
            "--spiffe-id",
            PLANNER,
            "--id-token-file",
            id_token_path,
            "--right",
            "flights:read",
            "--ttl",
            "10m",
        ],
    );
    assert_eq!(
        minted["subject"], "https://idp.example.com#alice",
        "{minted}"
    );
    assert_eq!(minted["chain"], json!([PLANNER]));
    let t0 = minted["token"].as_str().unwrap().to_owned();
    let hop = ok(
        &agent,
        &[
            "delegate",
            "--spiffe-id",
            PLANNER,
            "--token",
            &t0,
            "--to",
            SEARCH,
        ],
    );
    assert_eq!(hop["chain"], json!([PLANNER, SEARCH]), "{hop}");
    let t1 = hop["token"].as_str().unwrap().to_owned();

    // The flights API: keys and revocations from its agent, kept current.
    let source = DelegationKeySource::builder()
        .endpoint(agent.endpoint())
        .start()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !source.is_ready() {
        assert!(
            Instant::now() < deadline,
            "the key source never got the keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What the flights API sees: for alice, carried by planner then search, flights:read,
    // expiring within 10 minutes.
    let d = verify(&source, &t1, SEARCH, "flights:read").unwrap();
    assert_eq!(d.chain.subject.id, "https://idp.example.com#alice");
    assert_eq!(d.chain.subject.name, "alice@example.com");
    assert_eq!(d.chain.actors(), vec![PLANNER, SEARCH]);
    assert_eq!(d.chain.hops[1].delegated_by.as_deref(), Some(PLANNER));
    assert_eq!(
        d.chain.rights.iter().collect::<Vec<_>>(),
        vec!["flights:read"]
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(d.chain.expires_at <= now + 600, "{}", d.chain.expires_at);

    // biscuit-python reads the same from the token with only the published keys (as the agent
    // serves them), and authorizes flights:read for search.
    if let Some(python) = venv_python() {
        let keys = ok(&agent, &["keys"]);
        let keys_file = work.path().join("keys.json");
        std::fs::write(&keys_file, keys["keys"].to_string()).unwrap();
        let (status, doc, out) = run_json(python_command(
            &python,
            &agent.endpoint(),
            "biscuit_verify.py",
            &[
                &t1,
                "--keys",
                keys_file.to_str().unwrap(),
                "--operation",
                "flights:read",
                "--presenter",
                SEARCH,
            ],
            None,
        ));
        assert!(status.success(), "biscuit_verify.py: {out:?}");
        assert_eq!(doc["subject"], "https://idp.example.com#alice", "{doc}");
        assert_eq!(doc["actors"], json!([PLANNER, SEARCH]));
        assert_eq!(doc["rights"], json!(["flights:read"]));
        assert_eq!(doc["hops"][1]["delegated_by"], PLANNER);
    }

    // Refused: presented by another workload (the planner itself, or flights).
    for presenter in [PLANNER, FLIGHTS] {
        let e = verify(&source, &t1, presenter, "flights:read").unwrap_err();
        assert!(matches!(e, VerifyError::NotTheHolder { .. }), "{e}");
    }
    // Refused: a right the chain does not carry.
    let e = verify(&source, &t1, SEARCH, "flights:book").unwrap_err();
    assert!(matches!(e, VerifyError::Unauthorized(_)), "{e}");
    // Refused: a tampered copy.
    let mut bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE, t1.as_bytes()).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    let tampered = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, &bytes);
    assert!(verify(&source, &tampered, SEARCH, "flights:read").is_err());
    // Refused: widened copies. A block appended offline (first-party, or third-party signed by
    // the attacker's own key) claiming a next actor and a new right changes nothing: verifiers
    // trust only the authority block and issuer-signed blocks, so neither the scraper nor
    // flights:book gets through.
    for widened in widened_copies(&t1) {
        let e = verify(&source, &widened, SCRAPER, "flights:read").unwrap_err();
        assert!(matches!(e, VerifyError::NotTheHolder { .. }), "{e}");
        let e = verify(&source, &widened, SEARCH, "flights:book").unwrap_err();
        assert!(matches!(e, VerifyError::Unauthorized(_)), "{e}");
        // It still is search's flights:read token: forging did not break what was there.
        verify(&source, &widened, SEARCH, "flights:read").unwrap();
    }

    // Refused at the issuer: the chain would be deeper than the policy allows (max_depth 1).
    let err = refused(
        &agent,
        &[
            "delegate",
            "--spiffe-id",
            SEARCH,
            "--token",
            &t1,
            "--to",
            SCRAPER,
        ],
    );
    assert!(err.contains("hop"), "{err}");
    // Refused at the issuer: search is not the holder of the planner's token.
    let err = refused(
        &agent,
        &[
            "delegate",
            "--spiffe-id",
            SEARCH,
            "--token",
            &t0,
            "--to",
            FLIGHTS,
        ],
    );
    assert!(err.contains("holder"), "{err}");
    // Refused at the issuer: an actor the policy does not allow for alice.
    let err = refused(
        &agent,
        &[
            "mint",
            "--spiffe-id",
            SEARCH,
            "--id-token-file",
            id_token_path,
        ],
    );
    assert!(err.contains("denied"), "{err}");
    // Refused at the issuer: an ID token with a wrong audience, or from an unknown provider.
    let wrong_aud = idp.id_token("alice", "not-signet", Duration::from_secs(300), Value::Null);
    let err = refused(
        &agent,
        &["mint", "--spiffe-id", PLANNER, "--id-token", &wrong_aud],
    );
    assert!(err.contains("aud"), "{err}");
    let stranger = TestIdp::new("https://stranger.example.com").unwrap();
    let foreign = stranger.id_token("alice", "signet", Duration::from_secs(300), Value::Null);
    let err = refused(
        &agent,
        &["mint", "--spiffe-id", PLANNER, "--id-token", &foreign],
    );
    assert!(err.contains("stranger.example.com"), "{err}");
    // Refused: expired.
    let short = ok(
        &agent,
        &[
            "mint",
            "--spiffe-id",
            PLANNER,
            "--id-token-file",
            id_token_path,
            "--ttl",
            "1s",
        ],
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = verify(
        &source,
        short["token"].as_str().unwrap(),
        PLANNER,
        "flights:read",
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::Expired { .. }), "{e}");

    // Revocation of the planner's token reaches the flights API through the agent within seconds,
    // and kills the token derived from it.
    let t0_id = minted["token_id"].as_str().unwrap();
    let before = source.sequence();
    let revoked_at = Instant::now();
    issuer
        .cli_ok(&[
            "delegation",
            "revoke",
            "--token-id",
            t0_id,
            "--reason",
            "test",
        ])
        .unwrap();
    loop {
        match verify(&source, &t1, SEARCH, "flights:read") {
            Err(VerifyError::Revoked { .. }) => break,
            Ok(_) => {}
            Err(e) => panic!("unexpected refusal: {e}"),
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "the revocation did not reach the verifier in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "revocation reached the verifier in {} ms",
        revoked_at.elapsed().as_millis()
    );
    assert!(source.sequence() > before);
    let e = verify(&source, &t0, PLANNER, "flights:read").unwrap_err();
    assert!(matches!(e, VerifyError::Revoked { .. }), "{e}");
    let err = refused(
        &agent,
        &[
            "delegate",
            "--spiffe-id",
            PLANNER,
            "--token",
            &t0,
            "--to",
            SEARCH,
        ],
    );
    assert!(err.contains("revoked"), "{err}");

    // The auditor: who acted for alice on this request?
    let trace = issuer
        .cli_json(&["audit", "trace", "--token", &t1, "--output", "json"])
        .unwrap();
    assert_eq!(trace["complete"], true, "{trace}");
    assert_eq!(trace["subject"], "https://idp.example.com#alice");
    assert_eq!(trace["holder"], SEARCH);
    let hops = trace["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 2, "{trace}");
    assert_eq!(hops[0]["kind"], "delegation.mint");
    assert_eq!(hops[0]["authorized_by"], PLANNER);
    assert_eq!(hops[1]["kind"], "delegation.hop");
    assert_eq!(hops[1]["authorized_by"], PLANNER);
    assert_eq!(hops[1]["chain"], json!([PLANNER, SEARCH]));
    assert!(hops[1]["time_ms"].as_i64().unwrap() >= hops[0]["time_ms"].as_i64().unwrap());
    // The revocation is on the record of both tokens' chain.
    assert!(
        hops[0]["related"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "delegation.revoke"),
        "{trace}"
    );
    let text = issuer
        .cli_ok(&[
            "audit",
            "trace",
            "--token-id",
            hop["token_id"].as_str().unwrap(),
        ])
        .unwrap();
    for needle in ["alice", PLANNER, SEARCH] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
    // Every refusal above is in the log too.
    let denied = issuer
        .cli_json(&[
            "audit",
            "list",
            "--kind",
            "delegation.denied",
            "--limit",
            "0",
            "--output",
            "json",
        ])
        .unwrap();
    assert!(denied.as_array().unwrap().len() >= 6, "{denied}");
    let verified = issuer.cli(&["audit", "verify"]).unwrap();
    assert!(verified.success(), "{}", verified.stderr);
}
