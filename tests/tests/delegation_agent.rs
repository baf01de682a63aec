//! The agent side of delegation end to end, between real `signet-issuer` and `signet-agent`
//! processes: workloads mint and delegate through the agent's `signet.delegation.v1.Delegation`
//! service (the `signet-agent api delegation` CLI as the client), a verifier follows
//! `FetchDelegationKeys` and sees a revocation made with `signet-issuer delegation revoke`
//! within seconds, and the issuer's refusals reach the workload with their status codes.
//!
//! The workloads are told apart by their executable (`unix:path:` selectors), so no second uid
//! is needed: the planner runs the built `signet-agent`, search and scraper run copies of it, and
//! the verifier is this test process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../python/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use harness::{Registration, agent_with_entries};
use serde_json::{Value, json};
use signet_agent::cli::client::{WorkloadEndpoint, request};
use signet_delegation::{DelegationKeys, RevocationList, Verifier, VerifyError};
use signet_proto::delegation as pb;
use signet_tests::agent::{Agent, agent_binary};
use signet_tests::idp::TestIdp;
use signet_tests::{CliOutput, Issuer, IssuerBuilder, run_with_timeout};
use tonic::Code;

const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";
const SCRAPER: &str = "spiffe://example.org/scraper";
const VERIFIER: &str = "spiffe://example.org/flights-api";
const IDP: &str = "https://idp.example.com";
/// How long a revocation may take to reach a verifier (the goal: "within seconds").
const PROPAGATION: Duration = Duration::from_secs(5);

/// The travel scenario with a workload subject allowed, two hops deep.
const POLICY: &str = r#"
may_act_for("spiffe://example.org/planner", "https://idp.example.com");
may_act_for("spiffe://example.org/planner", "example.org");
ceiling("spiffe://example.org/planner", "flights:read");
ceiling("spiffe://example.org/planner", "flights:book");
may_delegate("spiffe://example.org/planner", "spiffe://example.org/search");
ceiling("spiffe://example.org/search", "flights:read");
may_delegate("spiffe://example.org/search", "spiffe://example.org/scraper");
ceiling("spiffe://example.org/scraper", "flights:read");

grant($r) <- operation("mint"), actor($a), ceiling($a, $r);
grant($r) <- operation("delegate"), next_actor($a), ceiling($a, $r);
max_ttl(600);
max_depth(2);

allow if operation("mint"), actor($a), subject_issuer($i), may_act_for($a, $i);
allow if operation("delegate"), actor($a), next_actor($n), may_delegate($a, $n);
deny if true;
"#;

/// The agent CLI as one workload: a binary of its own path.
struct Workload {
    binary: PathBuf,
}

impl Workload {
    fn selector(&self) -> String {
        format!("unix:path:{}", self.binary.display())
    }

    /// `signet-agent api delegation ARGS... --socket-path <agent>`.
    fn delegation(&self, agent: &Agent, args: &[&str]) -> CliOutput {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["api", "delegation"])
            .args(args)
            .arg("--socket-path")
            .arg(agent.socket_path())
            .env_remove("SPIFFE_ENDPOINT_SOCKET");
        run_with_timeout(cmd, harness::WORKLOAD_TIMEOUT).unwrap()
    }

    /// A successful call's JSON output.
    fn json(&self, agent: &Agent, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.delegation(agent, &all);
        assert!(
            out.success(),
            "{args:?} failed: {}\n{}",
            out.stderr,
            out.stdout
        );
        serde_json::from_str(out.stdout.trim()).unwrap()
    }

    /// A refused call's stderr.
    fn refused(&self, agent: &Agent, args: &[&str]) -> String {
        let out = self.delegation(agent, args);
        assert!(!out.success(), "{args:?} succeeded: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        out.stderr
    }
}

/// The scenario's processes and files.
struct Scene {
    work: tempfile::TempDir,
    idp: TestIdp,
    issuer: Issuer,
    agent: Agent,
    planner: Workload,
    search: Workload,
    scraper: Workload,
}

impl Scene {
    fn start() -> Self {
        let work = tempfile::tempdir().unwrap();
        let policies = work.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("travel.datalog"), POLICY).unwrap();
        let idp = TestIdp::new(IDP).unwrap();
        let issuer = IssuerBuilder::new()
            .set_str("delegation.policies_dir", policies.to_str().unwrap())
            .raw(&idp.provider_toml("signet"))
            .start()
            .unwrap();
        let built = std::fs::canonicalize(agent_binary().unwrap()).unwrap();
        let copy = |name: &str| {
            let dir = work.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let path = dir.join("signet-agent");
            std::fs::copy(&built, &path).unwrap();
            Workload { binary: path }
        };
        let search = copy("search");
        let scraper = copy("scraper");
        let planner = Workload { binary: built };
        let me = format!(
            "unix:path:{}",
            std::fs::canonicalize(std::env::current_exe().unwrap())
                .unwrap()
                .display()
        );
        let reg = |id: &'static str, selector: String| Registration {
            spiffe_id: id,
            selectors: vec![selector],
        };
        let agent = agent_with_entries(
            &issuer,
            "example.org",
            &[
                reg(PLANNER, planner.selector()),
                reg(SEARCH, search.selector()),
                reg(SCRAPER, scraper.selector()),
                reg(VERIFIER, me),
            ],
            &[],
            |b| b,
        );
        Self {
            work,
            idp,
            issuer,
            agent,
            planner,
            search,
            scraper,
        }
    }

    /// Writes a credential to a file of the scene (0600 by umask of a private temp dir).
    fn file(&self, name: &str, contents: &str) -> String {
        let p = self.work.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p.display().to_string()
    }

    fn alice(&self) -> String {
        self.idp.id_token(
            "alice",
            "signet",
            Duration::from_secs(300),
            json!({"email": "alice@example.com"}),
        )
    }

    fn endpoint(&self) -> WorkloadEndpoint {
        WorkloadEndpoint::Unix(self.agent.socket_path().to_path_buf())
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A verifier built from one `FetchDelegationKeys` message.
fn verifier(msg: &pb::DelegationKeysResponse) -> Verifier {
    let keys = DelegationKeys::from_json(msg.keys_json.as_bytes()).unwrap();
    let revocations = RevocationList::from_json(msg.revocations_json.as_bytes()).unwrap();
    Verifier::new(keys, &revocations).unwrap()
}

fn check(v: &Verifier, token: &str, presenter: &str) -> Result<(), VerifyError> {
    v.verify(
        token,
        &signet_delegation::Request {
            presenter,
            operation: "flights:read",
            now: SystemTime::now(),
        },
    )
    .map(|_| ())
}

#[test]
fn workloads_mint_and_delegate_through_the_agent_and_a_verifier_sees_revocations_within_seconds() {
    let s = Scene::start();
    let rt = runtime();

    // The verifier's stream: the state at once.
    let mut keys = rt.block_on(async {
        let mut c = s.endpoint().connect_delegation().await.unwrap();
        c.fetch_delegation_keys(request(pb::FetchDelegationKeysRequest {}))
            .await
            .unwrap()
            .into_inner()
    });
    let first = rt.block_on(keys.message()).unwrap().unwrap();
    assert!(first.sequence > 0, "{first:?}");
    let published = DelegationKeys::from_json(first.keys_json.as_bytes()).unwrap();
    assert!(!published.is_empty());

    // 1. The planner mints for itself (no ID token): the subject is the workload.
    let own = s
        .planner
        .json(&s.agent, &["mint", "--right", "flights:read"]);
    assert_eq!(own["subject"], PLANNER, "{own}");
    assert_eq!(strings(&own["chain"]), [PLANNER]);
    assert_eq!(strings(&own["rights"]), ["flights:read"]);
    assert_eq!(own["remaining_depth"], 2);

    // 2. For alice, with her ID token (from a file); text output is the token alone.
    let id_token = s.file("alice.jwt", &s.alice());
    let out = s.planner.delegation(
        &s.agent,
        &["mint", "--id-token-file", &id_token, "--ttl", "5m"],
    );
    assert!(out.success(), "{}", out.stderr);
    let minted = out.stdout.trim().to_owned();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let v = verifier(&first);
    check(&v, &minted, PLANNER).unwrap();
    let decision = v
        .verify(
            &minted,
            &signet_delegation::Request {
                presenter: PLANNER,
                operation: "flights:book",
                now: SystemTime::now(),
            },
        )
        .unwrap();
    assert_eq!(decision.chain.subject.id, format!("{IDP}#alice"));
    let left = decision.chain.expires_at - now_secs();
    assert!((290..=300).contains(&left), "{left}: --ttl 5m");

    // 3. The planner hands it to search (read only), which hands it on to scraper.
    let planner_token = s.file("planner.token", &minted);
    let to_search = s.planner.json(
        &s.agent,
        &[
            "delegate",
            "--token-file",
            &planner_token,
            "--to",
            SEARCH,
            "--right",
            "flights:read",
        ],
    );
    assert_eq!(strings(&to_search["chain"]), [PLANNER, SEARCH]);
    assert_eq!(to_search["subject"], format!("{IDP}#alice"));
    assert_eq!(to_search["remaining_depth"], 1);
    let search_token = to_search["token"].as_str().unwrap().to_owned();
    let to_scraper = s.search.json(
        &s.agent,
        &["delegate", "--token", &search_token, "--to", SCRAPER],
    );
    assert_eq!(strings(&to_scraper["chain"]), [PLANNER, SEARCH, SCRAPER]);
    assert_eq!(strings(&to_scraper["rights"]), ["flights:read"]);
    assert_eq!(to_scraper["remaining_depth"], 0);
    let scraper_token = to_scraper["token"].as_str().unwrap().to_owned();
    check(&v, &scraper_token, SCRAPER).unwrap();
    assert!(matches!(
        check(&v, &scraper_token, SEARCH),
        Err(VerifyError::NotTheHolder { .. })
    ));

    // `keys` prints the same state.
    let printed = s.scraper.json(&s.agent, &["keys"]);
    assert_eq!(printed["sequence"], first.sequence);
    assert_eq!(
        printed["keys"],
        serde_json::from_str::<Value>(&first.keys_json).unwrap()
    );

    // 4. Revoking search's token at the issuer: the verifier's stream brings the new list
    //    within seconds, and the token derived from it (scraper's) stops verifying.
    let search_id = to_search["token_id"].as_str().unwrap();
    let revoked_at = Instant::now();
    s.issuer
        .cli_ok(&[
            "delegation",
            "revoke",
            "--token-id",
            search_id,
            "--reason",
            "e2e",
        ])
        .unwrap();
    let update = rt.block_on(async {
        tokio::time::timeout(PROPAGATION, keys.message())
            .await
            .unwrap_or_else(|_| panic!("no update within {PROPAGATION:?} of the revocation"))
            .unwrap()
            .unwrap()
    });
    let took = revoked_at.elapsed();
    assert!(update.sequence > first.sequence, "{update:?}");
    let list = RevocationList::from_json(update.revocations_json.as_bytes()).unwrap();
    assert!(
        list.revoked.iter().any(|r| r.token_id == search_id),
        "{list:?}"
    );
    let v = verifier(&update);
    assert!(
        matches!(
            check(&v, &scraper_token, SCRAPER),
            Err(VerifyError::Revoked { .. })
        ),
        "{:?}",
        check(&v, &scraper_token, SCRAPER)
    );
    // The planner's own token is not derived from it.
    check(&v, &minted, PLANNER).unwrap();
    println!("revocation reached the verifier after {took:?}");

    // The issuer refuses to extend a revoked token, and says so.
    let stderr = s.search.refused(
        &s.agent,
        &["delegate", "--token", &search_token, "--to", SCRAPER],
    );
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains("revoked"),
        "{stderr}"
    );

    // Bearer tokens never reach the logs; the agent logged what it did without them.
    let logs = s.agent.logs().join("\n");
    let alice = std::fs::read_to_string(&id_token).unwrap();
    for secret in [&minted, &search_token, &scraper_token, &alice] {
        let probe = &secret[secret.len() - 40..];
        assert!(!logs.contains(probe), "a token is in the agent's logs");
        assert!(!s.issuer.logs().join("\n").contains(probe));
    }
    assert!(logs.contains("delegation token minted"), "{logs}");
    assert!(logs.contains("delegation state updated"), "{logs}");
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn refusals_reach_the_workload_with_the_issuers_status() {
    let s = Scene::start();
    let id_token = s.file("alice.jwt", &s.alice());
    let minted = s
        .planner
        .json(&s.agent, &["mint", "--id-token-file", &id_token]);
    assert_eq!(strings(&minted["rights"]), ["flights:book", "flights:read"]);
    let token = s.file("planner.token", minted["token"].as_str().unwrap());

    // The policy: search may not act for anyone.
    let stderr = s.search.refused(&s.agent, &["mint"]);
    assert!(stderr.contains("refused (PermissionDenied)"), "{stderr}");
    // Nor may the planner delegate straight to scraper.
    let stderr = s.planner.refused(
        &s.agent,
        &["delegate", "--token-file", &token, "--to", SCRAPER],
    );
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    // A right the policy does not grant.
    let stderr = s
        .planner
        .refused(&s.agent, &["mint", "--right", "hotels:book"]);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    // search does not hold the planner's token: the agent refuses before asking the issuer.
    let stderr = s.search.refused(
        &s.agent,
        &["delegate", "--token-file", &token, "--to", SCRAPER],
    );
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains(PLANNER),
        "{stderr}"
    );
    // ... and the issuer refuses too when search claims to be its holder.
    let stderr = s.search.refused(
        &s.agent,
        &[
            "delegate",
            "--token-file",
            &token,
            "--to",
            SCRAPER,
            "--spiffe-id",
            SEARCH,
        ],
    );
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    // Widening: scraper's hop cannot carry flights:book.
    let to_search = s.planner.json(
        &s.agent,
        &[
            "delegate",
            "--token-file",
            &token,
            "--to",
            SEARCH,
            "--right",
            "flights:read",
        ],
    );
    let stderr = s.search.refused(
        &s.agent,
        &[
            "delegate",
            "--token",
            to_search["token"].as_str().unwrap(),
            "--to",
            SCRAPER,
            "--right",
            "flights:book",
        ],
    );
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    // An ID token for another audience.
    let wrong = s.file(
        "wrong.jwt",
        &s.idp
            .id_token("alice", "someone-else", Duration::from_secs(300), json!({})),
    );
    let stderr = s
        .planner
        .refused(&s.agent, &["mint", "--id-token-file", &wrong]);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    // A token that is not one, and an identity the caller does not have.
    let stderr = s.planner.refused(
        &s.agent,
        &["delegate", "--token", "garbage", "--to", SEARCH],
    );
    assert!(stderr.contains("InvalidArgument"), "{stderr}");
    let stderr = s
        .planner
        .refused(&s.agent, &["mint", "--spiffe-id", SEARCH]);
    assert!(stderr.contains("issued no identity"), "{stderr}");
}

#[test]
fn without_delegation_at_the_issuer_calls_fail_with_failed_precondition_then_unavailable() {
    let mut issuer = IssuerBuilder::new().start().unwrap();
    let planner = Workload {
        binary: std::fs::canonicalize(agent_binary().unwrap()).unwrap(),
    };
    let agent = agent_with_entries(
        &issuer,
        "example.org",
        &[Registration {
            spiffe_id: PLANNER,
            selectors: vec![planner.selector()],
        }],
        &[],
        |b| b,
    );
    let stderr = planner.refused(&agent, &["mint"]);
    assert!(stderr.contains("FailedPrecondition"), "{stderr}");
    let stderr = planner.refused(&agent, &["keys"]);
    assert!(stderr.contains("FailedPrecondition"), "{stderr}");

    // The header rule holds on this service too.
    let rt = runtime();
    let endpoint = WorkloadEndpoint::Unix(agent.socket_path().to_path_buf());
    let status = rt.block_on(async {
        let mut c = endpoint.connect_delegation().await.unwrap();
        c.mint(pb::MintRequest::default()).await.unwrap_err()
    });
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), signet_agent::workload_api::MISSING_HEADER);

    // The issuer gone: the agent still admits the caller, and says the issuer is unavailable.
    issuer.terminate().unwrap();
    let stderr = planner.refused(&agent, &["mint", "--timeout", "30s"]);
    assert!(stderr.contains("Unavailable"), "{stderr}");
}
