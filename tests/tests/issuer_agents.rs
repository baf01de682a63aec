//! Node attestation and the agent admin commands against the real `signet-issuer` binary: the real
//! node client (`signet_agent::node_client::NodeClient`) attests over the issuer's TCP/TLS node
//! port with join tokens from `token generate` and x509pop certificates of a CA named in the
//! config file; `agent list/show/ban/unban/evict` are checked against what the client sees, and
//! every step against the audit log in the issuer's SQLite store.
//!
//! The tests run on a multi-threaded runtime: CLI calls and `terminate` block the test thread, and
//! the clients' connection tasks must keep answering the issuer meanwhile (on a current-thread
//! runtime an idle client cannot acknowledge the GOAWAY ping, and shutdown waits for its grace
//! period).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcIssuer,
    KeyPair, SanType,
};
use serde_json::Value;
use signet_agent::node_client::{
    AgentIdentity, ItemError, NodeClient, NodeClientConfig, NodeClientError, SvidRequest, X509Svid,
    generate_key_and_csr,
};
use signet_attestors::join_token;
use signet_attestors::x509pop::{self, X509PopAgent};
use signet_spiffe::TrustDomain;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::svid::verify_x509_svid;
use signet_tests::{Issuer, IssuerBuilder};
use x509_parser::prelude::{FromDer, X509Certificate};

const TD: &str = "example.org";

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

/// The issuer's own bundle, as printed by `bundle show --format pem`.
fn bundle(issuer: &Issuer) -> Bundle {
    Bundle::from_pem(&td(), issuer.bundle_pem().unwrap().as_bytes()).unwrap()
}

/// A node client that authenticates the issuer with the bundle printed by the CLI.
fn client(issuer: &Issuer) -> NodeClient {
    NodeClient::new(NodeClientConfig {
        address: issuer.node_addr().to_string(),
        trust_domain: td(),
        bundle: Some(bundle(issuer)),
        insecure_bootstrap: false,
    })
    .unwrap()
}

/// `token generate --output json` (with `extra` arguments).
fn generate_token(issuer: &Issuer, extra: &[&str]) -> Value {
    let mut args = vec!["token", "generate", "--output", "json"];
    args.extend_from_slice(extra);
    issuer.cli_json(&args).unwrap()
}

fn agents(issuer: &Issuer) -> Vec<Value> {
    issuer
        .cli_json(&["agent", "list", "--output", "json"])
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn show_agent(issuer: &Issuer, id: &str) -> Value {
    issuer
        .cli_json(&["agent", "show", "--spiffe-id", id, "--output", "json"])
        .unwrap()
}

/// `entry create` with one `unix:uid:1000` selector; returns the entry ID.
fn create_entry(issuer: &Issuer, spiffe_id: &str, parent_id: &str) -> String {
    let e = issuer
        .cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--parent-id",
            parent_id,
            "--selector",
            "unix:uid:1000",
            "--output",
            "json",
        ])
        .unwrap();
    e["id"].as_str().unwrap().to_owned()
}

/// Serial (lowercase hex, no leading zeros, as the issuer stores it) and notAfter of a leaf.
fn serial_and_expiry(der: &[u8]) -> (String, i64) {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    let hex: String = c.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    let serial = hex.trim_start_matches('0');
    (
        if serial.is_empty() { "0" } else { serial }.to_owned(),
        c.validity().not_after.timestamp(),
    )
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Checks the agent as the CLI shows it against the SVID the client holds.
fn assert_agent_matches(agent: &Value, identity: &AgentIdentity, attestation_type: &str) {
    let (serial, not_after) = serial_and_expiry(&identity.cert_chain[0]);
    assert_eq!(agent["spiffe_id"], identity.spiffe_id.to_string());
    assert_eq!(agent["attestation_type"], attestation_type);
    assert_eq!(agent["serial"], serial.as_str());
    assert_eq!(agent["expires_at"], not_after);
    assert_eq!(unix(identity.expires_at), not_after);
}

fn rpc(err: NodeClientError) -> (tonic::Code, String) {
    match err {
        NodeClientError::Rpc { code, message } => (code, message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn expect_denied(err: NodeClientError, needle: &str) {
    let (code, msg) = rpc(err);
    assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

/// Asks for an X509-SVID for one entry (fresh key).
async fn sign(
    client: &NodeClient,
    entry_id: &str,
) -> Result<Result<X509Svid, ItemError>, NodeClientError> {
    let (_, csr) = generate_key_and_csr().unwrap();
    let mut r = client
        .batch_new_x509_svid(vec![SvidRequest {
            entry_id: entry_id.to_owned(),
            csr,
        }])
        .await?;
    Ok(r.remove(0))
}

/// Stops the issuer and reads its audit log (verifying the hash chain).
async fn audit_log(issuer: &mut Issuer) -> Vec<signet_store::AuditEvent> {
    issuer.terminate().unwrap();
    // Connected agents (idle, but alive) do not hold the shutdown up to its deadline.
    let logs = issuer.logs().join("\n");
    assert!(!logs.contains("servers did not stop"), "{logs}");
    issuer.audit_log().await.unwrap()
}

/// `(kind, subject, outcome)` of the events of the given kinds, in order.
fn events_of<'a>(
    events: &'a [signet_store::AuditEvent],
    kinds: &[&str],
) -> Vec<(&'a str, &'a str, &'a str)> {
    events
        .iter()
        .filter(|e| kinds.contains(&e.event.kind.as_str()))
        .map(|e| {
            (
                e.event.kind.as_str(),
                e.event.subject.as_str(),
                e.event.outcome.as_str(),
            )
        })
        .collect()
}

fn admin_actor() -> String {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    format!("admin:uid={uid}")
}

// ---------------------------------------------------------------------------------------------
// join tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_attestation_is_listed_with_the_svid_the_agent_received() {
    let mut issuer = Issuer::start().unwrap();
    let generated = generate_token(&issuer, &[]);
    let token = generated["token"].as_str().unwrap().to_owned();
    let agent_id = generated["agent_spiffe_id"].as_str().unwrap().to_owned();
    assert_eq!(
        agent_id,
        format!("spiffe://{TD}/signet/agent/join_token/{token}")
    );

    let c = client(&issuer);
    let a = c.attest_join_token(&token).await.unwrap();
    assert_eq!(a.identity.spiffe_id.to_string(), agent_id);
    let pinned = bundle(&issuer);
    assert_eq!(a.bundle.x509_authorities, pinned.x509_authorities);
    verify_x509_svid(&a.identity.cert_chain, &pinned, SystemTime::now()).unwrap();
    // Authenticated calls work with the received SVID.
    c.get_bundle().await.unwrap();

    let list = agents(&issuer);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_agent_matches(&list[0], &a.identity, "join_token");
    assert_eq!(list[0]["banned"], false);
    assert_eq!(list[0]["can_reattest"], false);
    assert_eq!(
        list[0]["selectors"],
        serde_json::json!([{"type": "join_token", "value": token}])
    );
    assert_eq!(show_agent(&issuer, &agent_id), list[0]);
    let text = issuer
        .cli_ok(&["agent", "show", "--spiffe-id", &agent_id])
        .unwrap();
    assert!(text.contains(&agent_id), "{text}");
    assert!(text.contains("join_token"), "{text}");

    // The same token again, and a token the issuer never issued.
    expect_denied(
        client(&issuer).attest_join_token(&token).await.unwrap_err(),
        "join token already used",
    );
    let unknown = join_token::generate_join_token();
    expect_denied(
        client(&issuer)
            .attest_join_token(&unknown)
            .await
            .unwrap_err(),
        "unknown join token",
    );
    assert_eq!(agents(&issuer).len(), 1);

    // Insecure bootstrap: the issuer's chain is not checked at first, the bundle received at
    // attestation is pinned and then authenticates the issuer.
    let token2 = issuer.join_token(None).unwrap();
    let boot = NodeClient::new(NodeClientConfig {
        address: issuer.node_addr().to_string(),
        trust_domain: td(),
        bundle: None,
        insecure_bootstrap: true,
    })
    .unwrap();
    let b = boot.attest_join_token(&token2).await.unwrap();
    assert_eq!(boot.bundle().x509_authorities, pinned.x509_authorities);
    boot.sync_entries(0, 0).await.unwrap();
    let list = agents(&issuer);
    assert_eq!(list.len(), 2);
    let second = list
        .iter()
        .find(|v| v["spiffe_id"] == b.identity.spiffe_id.to_string())
        .unwrap();
    assert_agent_matches(second, &b.identity, "join_token");

    let events = audit_log(&mut issuer).await;
    let unknown_hash = join_token::hash_join_token(&unknown);
    let attests: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == "agent.attest")
        .collect();
    let summary: Vec<(&str, &str, Option<&str>)> = attests
        .iter()
        .map(|e| {
            (
                e.event.subject.as_str(),
                e.event.outcome.as_str(),
                e.event.details["reason"].as_str(),
            )
        })
        .collect();
    let second_id = b.identity.spiffe_id.to_string();
    assert_eq!(
        summary,
        vec![
            (agent_id.as_str(), "ok", None),
            ("unknown agent", "denied", Some("join token already used")),
            ("unknown agent", "denied", Some("unknown join token")),
            (second_id.as_str(), "ok", None),
        ]
    );
    assert_eq!(
        attests[2].event.details["token_sha256"],
        unknown_hash.as_str()
    );
    assert!(attests[0].event.actor.starts_with("node-api:127.0.0.1:"));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.kind == "join_token.generate" && e.event.actor == admin_actor())
            .count(),
        2
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains(unknown.as_str()),
        "an unknown token reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_join_token_is_refused() {
    let mut issuer = Issuer::start().unwrap();
    let generated = generate_token(&issuer, &["--ttl", "1s"]);
    let token = generated["token"].as_str().unwrap().to_owned();
    let expires_at = generated["expires_at"].as_i64().unwrap();
    // The expiry is inclusive: wait (bounded) until the clock has passed it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while unix(SystemTime::now()) <= expires_at {
        assert!(Instant::now() < deadline, "the clock does not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_denied(
        client(&issuer).attest_join_token(&token).await.unwrap_err(),
        "join token expired",
    );
    assert!(agents(&issuer).is_empty());

    let events = audit_log(&mut issuer).await;
    let attest: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == "agent.attest")
        .collect();
    assert_eq!(attest.len(), 1);
    assert_eq!(attest[0].event.outcome, "denied");
    assert_eq!(attest[0].event.details["reason"], "join token expired");
    assert_eq!(attest[0].event.details["attestor"], "join_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_alias_token_authorizes_the_entries_under_the_alias() {
    let mut issuer = Issuer::start().unwrap();
    let alias = format!("spiffe://{TD}/node-group/a");
    let generated = generate_token(&issuer, &["--spiffe-id", &alias]);
    assert_eq!(generated["alias_spiffe_id"], alias.as_str());
    let token = generated["token"].as_str().unwrap().to_owned();
    let c = client(&issuer);
    let a = c.attest_join_token(&token).await.unwrap();
    let agent_id = a.identity.spiffe_id.to_string();

    let web = create_entry(&issuer, &format!("spiffe://{TD}/web"), &alias);
    let other = create_entry(
        &issuer,
        &format!("spiffe://{TD}/db"),
        &format!("spiffe://{TD}/node-group/b"),
    );
    // The alias entry made at attestation is visible to the operator.
    let alias_entries = issuer
        .cli_json(&["entry", "show", "--spiffe-id", &alias, "--output", "json"])
        .unwrap();
    assert_eq!(
        alias_entries.as_array().unwrap().len(),
        1,
        "{alias_entries}"
    );
    assert_eq!(
        alias_entries[0]["parent_id"],
        format!("spiffe://{TD}/signet/issuer")
    );

    let sync = c.sync_entries(0, 0).await.unwrap();
    assert!(sync.full);
    assert!(
        sync.entries
            .iter()
            .any(|e| e.id == web && e.parent_id == alias)
    );
    assert!(
        sync.entries
            .iter()
            .any(|e| e.spiffe_id == alias && e.node_alias)
    );
    assert!(!sync.entries.iter().any(|e| e.id == other));

    let svid = sign(&c, &web).await.unwrap().unwrap();
    assert_eq!(svid.spiffe_id.to_string(), format!("spiffe://{TD}/web"));
    let verified = verify_x509_svid(&svid.cert_chain, &bundle(&issuer), SystemTime::now()).unwrap();
    assert_eq!(verified.to_string(), format!("spiffe://{TD}/web"));

    let refused = sign(&c, &other).await.unwrap().unwrap_err();
    assert_eq!(refused.code, tonic::Code::PermissionDenied);
    assert!(refused.message.contains(&agent_id), "{}", refused.message);

    let events = audit_log(&mut issuer).await;
    let generate = events
        .iter()
        .find(|e| e.event.kind == "join_token.generate")
        .unwrap();
    assert_eq!(generate.event.details["alias_spiffe_id"], alias.as_str());
    assert_eq!(
        events_of(&events, &["agent.attest"]),
        vec![("agent.attest", agent_id.as_str(), "ok")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_unban_and_evict_a_join_token_agent() {
    let mut issuer = Issuer::start().unwrap();
    let token = issuer.join_token(None).unwrap();
    let c = client(&issuer);
    let a = c.attest_join_token(&token).await.unwrap();
    let id = a.identity.spiffe_id.to_string();
    let entry = create_entry(&issuer, &format!("spiffe://{TD}/web"), &id);
    assert!(
        c.sync_entries(0, 0)
            .await
            .unwrap()
            .entries
            .iter()
            .any(|e| e.id == entry)
    );
    sign(&c, &entry).await.unwrap().unwrap();

    // Ban: every call of the agent is refused, and so is attesting again.
    let out = issuer
        .cli_ok(&["agent", "ban", "--spiffe-id", &id])
        .unwrap();
    assert_eq!(out, format!("Banned agent {id}\n"));
    assert_eq!(show_agent(&issuer, &id)["banned"], true);
    expect_denied(c.sync_entries(0, 0).await.unwrap_err(), "banned");
    expect_denied(c.renew().await.unwrap_err(), "banned");
    expect_denied(sign(&c, &entry).await.unwrap_err(), "banned");
    expect_denied(c.get_bundle().await.unwrap_err(), "banned");
    // Its token is spent, but the ban is what the node is told.
    expect_denied(
        client(&issuer).attest_join_token(&token).await.unwrap_err(),
        &format!("agent {id} is banned"),
    );

    // Unban: the same SVID works again; renewal is recorded on the agent.
    let out = issuer
        .cli_ok(&["agent", "unban", "--spiffe-id", &id])
        .unwrap();
    assert_eq!(out, format!("Unbanned agent {id}\n"));
    assert_eq!(show_agent(&issuer, &id)["banned"], false);
    c.sync_entries(0, 0).await.unwrap();
    sign(&c, &entry).await.unwrap().unwrap();
    let renewed = c.renew().await.unwrap();
    assert_ne!(
        serial_and_expiry(&renewed.cert_chain[0]).0,
        serial_and_expiry(&a.identity.cert_chain[0]).0
    );
    assert_agent_matches(&show_agent(&issuer, &id), &renewed, "join_token");
    c.sync_entries(0, 0).await.unwrap();

    // Evict: the agent is gone and refused; its spent token does not bring it back, a new one
    // attests a new agent.
    let out = issuer
        .cli_ok(&["agent", "evict", "--spiffe-id", &id])
        .unwrap();
    assert_eq!(out, format!("Evicted agent {id}\n"));
    assert!(agents(&issuer).is_empty());
    let err = issuer
        .cli_err(&["agent", "show", "--spiffe-id", &id])
        .unwrap();
    assert!(err.contains("not found"), "{err}");
    expect_denied(c.sync_entries(0, 0).await.unwrap_err(), "not attested");
    expect_denied(c.renew().await.unwrap_err(), "not attested");
    expect_denied(sign(&c, &entry).await.unwrap_err(), "not attested");
    expect_denied(
        client(&issuer).attest_join_token(&token).await.unwrap_err(),
        "join token already used",
    );
    let token2 = issuer.join_token(None).unwrap();
    let c2 = client(&issuer);
    let b = c2.attest_join_token(&token2).await.unwrap();
    c2.sync_entries(0, 0).await.unwrap();
    let list = agents(&issuer);
    assert_eq!(list.len(), 1);
    assert_agent_matches(&list[0], &b.identity, "join_token");

    let events = audit_log(&mut issuer).await;
    let actor = admin_actor();
    let admin: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind.starts_with("agent.") && e.event.actor == actor)
        .map(|e| (e.event.kind.as_str(), e.event.subject.as_str()))
        .collect();
    assert_eq!(
        admin,
        vec![
            ("agent.ban", id.as_str()),
            ("agent.unban", id.as_str()),
            ("agent.evict", id.as_str()),
        ]
    );
    let renew = events
        .iter()
        .find(|e| e.event.kind == "agent.renew")
        .unwrap();
    assert_eq!(renew.event.subject, id);
    assert_eq!(renew.event.outcome, "ok");
    assert_eq!(
        renew.event.details["serial"],
        serial_and_expiry(&renewed.cert_chain[0]).0.as_str()
    );
    let new_id = b.identity.spiffe_id.to_string();
    let attests: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .filter(|e| e.event.kind == "agent.attest")
        .map(|e| {
            (
                e.event.subject.as_str(),
                e.event.outcome.as_str(),
                e.event.details["reason"].as_str(),
            )
        })
        .collect();
    let banned = format!("agent {id} is banned");
    assert_eq!(
        attests,
        vec![
            (id.as_str(), "ok", None),
            ("unknown agent", "denied", Some(banned.as_str())),
            ("unknown agent", "denied", Some("join token already used")),
            (new_id.as_str(), "ok", None),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// x509pop

struct PopCa {
    pem: String,
    der: Vec<u8>,
    issuer: RcIssuer<'static, KeyPair>,
}

fn pop_ca(name: &str) -> PopCa {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    PopCa {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        issuer: RcIssuer::new(p, key),
    }
}

/// A node certificate (DER) and its key (PKCS#8 DER) issued by `ca`.
fn pop_leaf(ca: &PopCa, cn: &str) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = vec![SanType::DnsName(
        format!("{cn}.nodes.example.org").try_into().unwrap(),
    )];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509pop_from_the_config_file_ban_unban_evict_and_reattest() {
    let ca = pop_ca("node CA");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("x509pop-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let mut issuer = IssuerBuilder::new()
        .set_str(
            "node_attestors.x509pop.ca_bundle_path",
            &ca_path.display().to_string(),
        )
        .start()
        .unwrap();

    let (leaf, key) = pop_leaf(&ca, "node-1");
    let node = X509PopAgent::new(vec![leaf.clone()], &key).unwrap();
    let c = client(&issuer);
    let a = c.attest_x509pop(&node).await.unwrap();
    let id = a.identity.spiffe_id.to_string();
    assert_eq!(
        id,
        format!(
            "spiffe://{TD}/signet/agent/x509pop/{}",
            x509pop::sha256_hex(&leaf)
        )
    );
    let list = agents(&issuer);
    assert_eq!(list.len(), 1);
    assert_agent_matches(&list[0], &a.identity, "x509pop");
    assert_eq!(list[0]["can_reattest"], true);
    let selectors: Vec<String> = list[0]["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["type"].as_str().unwrap(),
                s["value"].as_str().unwrap()
            )
        })
        .collect();
    let (leaf_serial, _) = serial_and_expiry(&leaf);
    let mut want = vec![
        format!("x509pop:ca:fingerprint:{}", x509pop::sha1_hex(&ca.der)),
        "x509pop:san:dns:node-1.nodes.example.org".to_owned(),
        format!("x509pop:serialnumber:{leaf_serial}"),
        "x509pop:subject:cn:node-1".to_owned(),
    ];
    want.sort();
    assert_eq!(selectors, want);
    let received: Vec<String> = a.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(received, want);

    // An entry selecting on a node selector is authorized for the agent.
    let entry = issuer
        .cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/node-1-group"),
            "--parent-id",
            &format!("spiffe://{TD}/signet/issuer"),
            "--selector",
            "x509pop:subject:cn:node-1",
            "--output",
            "json",
        ])
        .unwrap();
    assert!(
        c.sync_entries(0, 0)
            .await
            .unwrap()
            .entries
            .iter()
            .any(|e| e.id == entry["id"].as_str().unwrap() && e.node_alias)
    );

    // A certificate of another CA is refused, and nothing is recorded.
    let other_ca = pop_ca("other CA");
    let (stranger, stranger_key) = pop_leaf(&other_ca, "node-1");
    expect_denied(
        client(&issuer)
            .attest_x509pop(&X509PopAgent::new(vec![stranger], &stranger_key).unwrap())
            .await
            .unwrap_err(),
        "x509pop certificate is not trusted",
    );
    assert_eq!(agents(&issuer).len(), 1);

    // Ban: calls and re-attestation refused. Unban: re-attestation works.
    issuer
        .cli_ok(&["agent", "ban", "--spiffe-id", &id])
        .unwrap();
    expect_denied(c.sync_entries(0, 0).await.unwrap_err(), "banned");
    expect_denied(
        client(&issuer).attest_x509pop(&node).await.unwrap_err(),
        &format!("agent {id} is banned"),
    );
    issuer
        .cli_ok(&["agent", "unban", "--spiffe-id", &id])
        .unwrap();
    c.sync_entries(0, 0).await.unwrap();
    let c2 = client(&issuer);
    let again = c2.attest_x509pop(&node).await.unwrap();
    assert_eq!(again.identity.spiffe_id, a.identity.spiffe_id);
    assert_agent_matches(&show_agent(&issuer, &id), &again.identity, "x509pop");
    // The re-attested SVID replaced the first one.
    expect_denied(
        c.sync_entries(0, 0).await.unwrap_err(),
        "not the current SVID",
    );
    c2.sync_entries(0, 0).await.unwrap();

    // Evict: refused until the node attests again, which x509pop allows.
    issuer
        .cli_ok(&["agent", "evict", "--spiffe-id", &id])
        .unwrap();
    assert!(agents(&issuer).is_empty());
    expect_denied(c2.sync_entries(0, 0).await.unwrap_err(), "not attested");
    let c3 = client(&issuer);
    let third = c3.attest_x509pop(&node).await.unwrap();
    c3.sync_entries(0, 0).await.unwrap();
    let list = agents(&issuer);
    assert_eq!(list.len(), 1);
    assert_agent_matches(&list[0], &third.identity, "x509pop");

    let events = audit_log(&mut issuer).await;
    let attests: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .filter(|e| e.event.kind == "agent.attest")
        .map(|e| {
            assert_eq!(e.event.details["attestor"], "x509pop");
            (
                e.event.subject.as_str(),
                e.event.outcome.as_str(),
                e.event.details["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(attests.len(), 5, "{attests:?}");
    assert_eq!(attests[0], (id.as_str(), "ok", None));
    // The stranger was refused before it had an agent ID.
    assert_eq!(attests[1].0, "unknown agent");
    assert_eq!(attests[1].1, "denied");
    assert!(
        attests[1]
            .2
            .unwrap()
            .starts_with("x509pop certificate is not trusted"),
        "{attests:?}"
    );
    let banned = format!("agent {id} is banned");
    assert_eq!(attests[2], (id.as_str(), "denied", Some(banned.as_str())));
    assert_eq!(attests[3], (id.as_str(), "ok", None));
    assert_eq!(attests[4], (id.as_str(), "ok", None));
    assert_eq!(
        events_of(&events, &["agent.ban", "agent.unban", "agent.evict"]),
        vec![
            ("agent.ban", id.as_str(), "ok"),
            ("agent.unban", id.as_str(), "ok"),
            ("agent.evict", id.as_str(), "ok"),
        ]
    );
}
