//! End-to-end tests of `signet-agent` with a real `signet-issuer`: node attestation, the Workload
//! API served to the Rust `spiffe` crate's `X509Source` and to a raw gRPC stream, rotation,
//! persistence across restarts, and issuer outages.
//!
//! Workloads are this test process: entries select `unix:uid:<our uid>`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use signet_agent::cli::client::{WorkloadEndpoint, x509_svid_request};
use signet_agent::runtime::identity::{JOIN_TOKEN_EXPIRED, JOIN_TOKEN_MISSING};
use signet_proto::workload as pb;
use signet_tests::agent::{Agent, AgentBuilder, Wait, create_entry, current_uid, free_port};
use signet_tests::{Issuer, IssuerBuilder, toml_str};
use spiffe::X509Source;
use tonic::Streaming;

/// Longest wait for anything the agent does on its own (sync, rotation, reconnection).
const WAIT: Duration = Duration::from_secs(90);

fn uid_selector() -> Result<String> {
    Ok(format!("unix:uid:{}", current_uid()?))
}

/// An issuer and an agent attested with a join token.
fn attested(issuer_builder: IssuerBuilder) -> Result<(Issuer, Agent, String)> {
    let issuer = issuer_builder.start()?;
    let token = issuer.join_token(None)?;
    let agent = AgentBuilder::new(&issuer).join_token(&token).start()?;
    let agent_id = agent
        .agent_id()
        .ok_or_else(|| anyhow!("no agent_id in the ready line"))?
        .to_owned();
    assert_eq!(
        agent_id,
        format!("spiffe://example.org/signet/agent/join_token/{token}")
    );
    Ok((issuer, agent, agent_id))
}

async fn x509_source(agent: &Agent) -> Result<X509Source> {
    X509Source::builder()
        .endpoint(agent.endpoint())
        .initial_sync_timeout(WAIT)
        .build()
        .await
        .map_err(|e| anyhow!("X509Source: {e}"))
}

fn leaf_facts(der: &[u8]) -> Result<(Vec<u8>, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp())?);
    Ok((cert.raw_serial().to_vec(), not_after))
}

/// A raw `FetchX509SVID` stream (the generated client, with the security header).
async fn open_stream(agent: &Agent) -> Result<Streaming<pb::X509svidResponse>> {
    let mut client = WorkloadEndpoint::parse(&agent.endpoint())?
        .connect()
        .await?;
    Ok(client
        .fetch_x509svid(x509_svid_request())
        .await
        .map_err(|s| anyhow!("FetchX509SVID: {s:?}"))?
        .into_inner())
}

/// Reads the stream until a message satisfies `pred`; every message must arrive without error.
async fn next_matching(
    stream: &mut Streaming<pb::X509svidResponse>,
    mut pred: impl FnMut(&pb::X509svidResponse) -> bool,
) -> Result<pb::X509svidResponse> {
    tokio::time::timeout(WAIT, async {
        loop {
            let msg = stream
                .message()
                .await
                .map_err(|s| anyhow!("the stream failed: {s:?}"))?
                .ok_or_else(|| anyhow!("the stream ended"))?;
            if pred(&msg) {
                return Ok(msg);
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no matching message within {}s", WAIT.as_secs()))?
}

fn ids(msg: &pb::X509svidResponse) -> BTreeSet<String> {
    msg.svids.iter().map(|s| s.spiffe_id.clone()).collect()
}

/// Serial of the first certificate of the SVID of `id` in `msg`.
fn serial_of(msg: &pb::X509svidResponse, id: &str) -> Result<(Vec<u8>, SystemTime)> {
    let svid = msg
        .svids
        .iter()
        .find(|s| s.spiffe_id == id)
        .ok_or_else(|| anyhow!("{id} not in the message"))?;
    let chain = signet_agent::cache::split_der_chain(&svid.x509_svid)
        .ok_or_else(|| anyhow!("bad chain"))?;
    leaf_facts(chain.first().ok_or_else(|| anyhow!("empty chain"))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attested_agent_serves_the_x509_source_and_the_cli() -> Result<()> {
    let (issuer, agent, agent_id) = attested(IssuerBuilder::new())?;
    let id = "spiffe://example.org/e2e/web";
    create_entry(&issuer, id, &agent_id, &[&uid_selector()?], &[])?;

    let source = x509_source(&agent).await?;
    let svid = source.svid().map_err(|e| anyhow!("{e}"))?;
    assert_eq!(svid.spiffe_id().to_string(), id);
    let bundles = source.bundle_set().map_err(|e| anyhow!("{e}"))?;
    let td = spiffe::TrustDomain::new("example.org").map_err(|e| anyhow!("{e}"))?;
    let bundle = bundles
        .get(&td)
        .ok_or_else(|| anyhow!("no bundle for example.org"))?;
    // The bundle served is the issuer's own.
    let issuer_pem = issuer.bundle_pem()?;
    let issuer_ders: Vec<Vec<u8>> = pem_certs(&issuer_pem)?;
    let served: Vec<Vec<u8>> = bundle
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(served, issuer_ders);
    source.shutdown().await;

    // The CLI: fetch with --write, healthcheck, health endpoints.
    let out = tempfile::tempdir()?;
    let dir = out.path().join("svid");
    let socket = agent.socket_path().display().to_string();
    let text = agent
        .cli(&[
            "api",
            "fetch",
            "x509",
            "--socket-path",
            &socket,
            "--write",
            &dir.display().to_string(),
        ])?
        .ok()?;
    assert!(text.contains(&format!("SPIFFE ID:         {id}")), "{text}");
    for f in ["svid.0.pem", "svid.0.key", "bundle.0.pem"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let mode = std::fs::metadata(dir.join("svid.0.key"))?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        pem_certs(&std::fs::read_to_string(dir.join("bundle.0.pem"))?)?,
        issuer_ders
    );
    let key_pem = std::fs::read_to_string(dir.join("svid.0.key"))?;
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    let health = agent
        .cli(&["healthcheck", "--socket-path", &format!("unix://{socket}")])?
        .ok()?;
    assert!(health.contains("Agent is healthy"), "{health}");
    let (status, body) = agent.http_get("/ready")?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\":true"), "{body}");
    assert_eq!(agent.http_get("/live")?.0, 200);

    // The persisted files have the promised modes.
    let data = agent.data_dir();
    assert_eq!(
        std::fs::metadata(&data)?.permissions().mode() & 0o777,
        0o700
    );
    for f in ["agent_svid.pem", "bundle.json", "state.bin"] {
        let m = std::fs::metadata(data.join(f))
            .with_context(|| f.to_owned())?
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
    let sock_mode = std::fs::metadata(agent.socket_path())?.permissions().mode() & 0o777;
    assert_eq!(sock_mode, 0o777);
    Ok(())
}

fn pem_certs(text: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let block = block?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_svid_is_rotated_on_the_open_stream_before_it_expires() -> Result<()> {
    let (issuer, agent, agent_id) = attested(IssuerBuilder::new())?;
    let id = "spiffe://example.org/e2e/rotating";
    create_entry(
        &issuer,
        id,
        &agent_id,
        &[&uid_selector()?],
        &["--x509-svid-ttl", "20s"],
    )?;
    let source = x509_source(&agent).await?;
    let first = source.svid().map_err(|e| anyhow!("{e}"))?;
    let (serial, not_after) = leaf_facts(first.leaf().as_bytes())?;
    let mut updates = source.updated();
    let rotated = tokio::time::timeout(WAIT, async {
        loop {
            updates.changed().await.map_err(|e| anyhow!("{e}"))?;
            let now = SystemTime::now();
            let svid = source.svid().map_err(|e| anyhow!("{e}"))?;
            let (s, na) = leaf_facts(svid.leaf().as_bytes())?;
            if s != serial {
                return Ok::<_, anyhow::Error>((s, na, now));
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no rotation within {}s", WAIT.as_secs()))??;
    let (new_serial, new_not_after, received) = rotated;
    assert_ne!(new_serial, serial);
    assert!(new_not_after > not_after);
    assert!(
        received < not_after,
        "the new SVID must arrive before the old one expires"
    );
    source.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_deleted_entries_reach_an_open_stream() -> Result<()> {
    let (issuer, agent, agent_id) = attested(IssuerBuilder::new())?;
    let sel = uid_selector()?;
    let a = "spiffe://example.org/e2e/a";
    let b = "spiffe://example.org/e2e/b";
    create_entry(&issuer, a, &agent_id, &[&sel], &[])?;
    // The X509Source waits (and retries) until the agent serves `a`.
    let source = x509_source(&agent).await?;
    source.shutdown().await;
    let mut stream = open_stream(&agent).await?;
    let first = next_matching(&mut stream, |_| true).await?;
    assert_eq!(ids(&first), BTreeSet::from([a.to_owned()]));

    let b_id = create_entry(&issuer, b, &agent_id, &[&sel], &["--hint", "second"])?;
    let both = next_matching(&mut stream, |m| ids(m).len() == 2).await?;
    assert_eq!(ids(&both), BTreeSet::from([a.to_owned(), b.to_owned()]));
    // The default SVID stays first (SPIFFE ID order), the hint is carried.
    assert_eq!(both.svids[0].spiffe_id, a);
    assert_eq!(both.svids[1].hint, "second");

    issuer.cli_ok(&["entry", "delete", "--id", &b_id])?;
    let after = next_matching(&mut stream, |m| ids(m).len() == 1).await?;
    assert_eq!(ids(&after), BTreeSet::from([a.to_owned()]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_serves_its_persisted_svids_without_token_or_issuer() -> Result<()> {
    let (mut issuer, mut agent, agent_id) = attested(IssuerBuilder::new())?;
    let id = "spiffe://example.org/e2e/persisted";
    create_entry(&issuer, id, &agent_id, &[&uid_selector()?], &[])?;
    let source = x509_source(&agent).await?;
    let before = source.svid().map_err(|e| anyhow!("{e}"))?;
    source.shutdown().await;

    agent.terminate()?;
    issuer.terminate()?;
    // No join token, no issuer: the agent is ready from data_dir alone.
    agent.restart(None, Wait::Ready)?;
    let logs = agent.logs().join("\n");
    assert!(logs.contains("restored the synced state"), "{logs}");
    assert!(!logs.contains("node attested"), "{logs}");
    let fetched = agent.fetch_x509_json()?;
    assert_eq!(fetched["svids"][0]["spiffe_id"], id);
    let source = x509_source(&agent).await?;
    let after = source.svid().map_err(|e| anyhow!("{e}"))?;
    assert_eq!(after.spiffe_id(), before.spiffe_id());
    source.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_outage_keeps_the_stream_open_and_rotation_resumes() -> Result<()> {
    // A fixed node API port, so that the restarted issuer is where the agent looks.
    let port = free_port()?;
    let (mut issuer, agent, agent_id) = attested(
        IssuerBuilder::new().set("bind_address", &toml_str(&format!("127.0.0.1:{port}"))),
    )?;
    let id = "spiffe://example.org/e2e/outage";
    create_entry(
        &issuer,
        id,
        &agent_id,
        &[&uid_selector()?],
        &["--x509-svid-ttl", "30s"],
    )?;
    let source = x509_source(&agent).await?;
    let mut stream = open_stream(&agent).await?;
    let first = next_matching(&mut stream, |m| ids(m).contains(id)).await?;
    let (serial, _) = serial_of(&first, id)?;

    // Kill the issuer; the agent notices and keeps serving.
    let from = agent.log_position();
    let pid = issuer.pid().ok_or_else(|| anyhow!("issuer not running"))?;
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    agent.wait_for_log(
        from,
        "entry sync failed; cached SVIDs are still served",
        WAIT,
    )?;
    let during = agent.fetch_x509_json()?;
    assert_eq!(during["svids"][0]["spiffe_id"], id);
    let expires_at = during["svids"][0]["expires_at"]
        .as_i64()
        .ok_or_else(|| anyhow!("no expires_at"))?;
    assert!(
        expires_at
            > i64::try_from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)?
                    .as_secs()
            )?,
        "the served SVID is valid"
    );
    assert!(source.svid().is_ok(), "the X509Source still holds its SVID");

    // Back: the agent reconnects by itself and rotation resumes on the same stream.
    let from = agent.log_position();
    issuer.restart()?;
    agent.wait_for_log(from, "issuer reachable again; entry sync resumed", WAIT)?;
    // The serial served when the issuer came back: the next one is a rotation made after it.
    let serial_back = agent.fetch_x509_json()?["svids"][0]["serial"]
        .as_str()
        .ok_or_else(|| anyhow!("no serial"))?
        .to_owned();
    let rotated = next_matching(&mut stream, |m| {
        serial_of(m, id).is_ok_and(|(s, _)| {
            let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
            s != serial && hex != serial_back
        })
    })
    .await?;
    assert!(ids(&rotated).contains(id));
    source.shutdown().await;
    Ok(())
}

#[test]
fn a_join_token_agent_without_a_valid_svid_says_what_to_do() -> Result<()> {
    let issuer = IssuerBuilder::new()
        .set("defaults.agent_ttl", &toml_str("2s"))
        .start()?;
    // Never attested and no token.
    let out = AgentBuilder::new(&issuer).run_expecting_exit()?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(JOIN_TOKEN_MISSING), "{}", out.stderr);

    // Attested, stopped until its SVID expired, started again without a token.
    let token = issuer.join_token(None)?;
    let mut agent = AgentBuilder::new(&issuer).join_token(&token).start()?;
    agent.terminate()?;
    let pem_text = std::fs::read_to_string(agent.data_dir().join("agent_svid.pem"))?;
    let leaf = pem_certs(&pem_text)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no agent certificate"))?;
    let (_, not_after) = leaf_facts(&leaf)?;
    // Nothing signals the passing of time: wait for the expiry itself.
    if let Ok(left) = not_after.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_secs(1));
    }
    let out = agent.run_expecting_exit(None)?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(JOIN_TOKEN_EXPIRED), "{}", out.stderr);
    // The spent token does not help either.
    let out = agent.run_expecting_exit(Some(&token))?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("token generate"), "{}", out.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x509pop_agent_reattests_by_itself_after_its_svid_expired() -> Result<()> {
    let pki = tempfile::tempdir()?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate()?;
    let mut node_params = rcgen::CertificateParams::new(vec!["node1.example.org".to_owned()])?;
    node_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node1");
    node_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let node_cert = node_params.signed_by(&node_key, &ca_issuer)?;
    let ca_path = pki.path().join("ca.pem");
    let cert_path = pki.path().join("node.pem");
    let key_path = pki.path().join("node.key");
    std::fs::write(&ca_path, ca_cert.pem())?;
    std::fs::write(&cert_path, node_cert.pem())?;
    std::fs::write(&key_path, node_key.serialize_pem())?;

    let issuer = IssuerBuilder::new()
        .set("defaults.agent_ttl", &toml_str("2s"))
        .set(
            "node_attestors.x509pop.ca_bundle_path",
            &toml_str(&ca_path.display().to_string()),
        )
        .start()?;
    let bundle_path = pki.path().join("bundle.pem");
    std::fs::write(&bundle_path, issuer.bundle_pem()?)?;
    let mut agent = AgentBuilder::new(&issuer)
        .unset("insecure_bootstrap")
        .set_str("trust_bundle_path", &bundle_path.display().to_string())
        .set_str("node_attestor.type", "x509pop")
        .set_str(
            "node_attestor.certificate_path",
            &cert_path.display().to_string(),
        )
        .set_str(
            "node_attestor.private_key_path",
            &key_path.display().to_string(),
        )
        .start()?;
    let agent_id = agent
        .agent_id()
        .ok_or_else(|| anyhow!("no agent id"))?
        .to_owned();
    assert!(agent_id.starts_with("spiffe://example.org/signet/agent/x509pop/"));
    let id = "spiffe://example.org/e2e/pop";
    create_entry(&issuer, id, &agent_id, &[&uid_selector()?], &[])?;

    agent.terminate()?;
    let pem_text = std::fs::read_to_string(agent.data_dir().join("agent_svid.pem"))?;
    let leaf = pem_certs(&pem_text)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no agent certificate"))?;
    let (_, not_after) = leaf_facts(&leaf)?;
    if let Ok(left) = not_after.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_secs(1));
    }
    agent.restart(None, Wait::Started)?;
    let line = agent.wait_for_log(0, "node attested", WAIT)?;
    assert_eq!(line["agent_id"], agent_id.as_str());
    let source = x509_source(&agent).await?;
    let svid = source.svid().map_err(|e| anyhow!("{e}"))?;
    assert_eq!(svid.spiffe_id().to_string(), id);
    source.shutdown().await;
    Ok(())
}

#[test]
fn an_invalid_config_stops_the_agent_naming_the_key() -> Result<()> {
    let out = AgentBuilder::for_address("127.0.0.1:1")
        .set_str("socket_pth", "/tmp/x.sock")
        .run_expecting_exit()?;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("socket_pth"), "{}", out.stderr);
    let out = AgentBuilder::for_address("127.0.0.1:1")
        .set_str("node_attestor.type", "tpm")
        .run_expecting_exit()?;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("node_attestor.type: expected one of join_token, x509pop"),
        "{}",
        out.stderr
    );
    if out.stderr.is_empty() {
        bail!("no error message");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_reach_workloads_and_survive_a_restart() -> Result<()> {
    let (mut issuer, mut agent, agent_id) = attested(IssuerBuilder::new())?;
    // A foreign trust domain's CA, registered as a federated bundle.
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let partner_ca = params.self_signed(&key)?;
    let pki = tempfile::tempdir()?;
    let pem_path = pki.path().join("partner.pem");
    std::fs::write(&pem_path, partner_ca.pem())?;
    issuer.cli_ok(&[
        "bundle",
        "set",
        "--trust-domain",
        "partner.example",
        "--format",
        "pem",
        "--path",
        &pem_path.display().to_string(),
    ])?;
    let id = "spiffe://example.org/e2e/federating";
    create_entry(
        &issuer,
        id,
        &agent_id,
        &[&uid_selector()?],
        &["--federates-with", "partner.example"],
    )?;
    let partner = spiffe::TrustDomain::new("partner.example").map_err(|e| anyhow!("{e}"))?;
    let has_partner = |source: &X509Source| -> bool {
        source.bundle_set().is_ok_and(|set| {
            set.get(&partner).is_some_and(|b| {
                b.authorities()
                    .iter()
                    .any(|c| c.as_bytes() == partner_ca.der().as_ref())
            })
        })
    };
    let source = x509_source(&agent).await?;
    let mut updates = source.updated();
    tokio::time::timeout(WAIT, async {
        while !has_partner(&source) {
            updates.changed().await.map_err(|e| anyhow!("{e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .map_err(|_| anyhow!("the federated bundle never arrived"))??;
    source.shutdown().await;

    // Restarted with the issuer down, the agent still serves it from data_dir.
    agent.terminate()?;
    issuer.terminate()?;
    agent.restart(None, Wait::Ready)?;
    let source = x509_source(&agent).await?;
    assert!(
        has_partner(&source),
        "federated bundle lost across the restart"
    );
    source.shutdown().await;
    Ok(())
}

#[test]
fn an_agent_that_cannot_reach_its_issuer_is_not_ready_and_says_so() -> Result<()> {
    // Nothing listens there: attestation is retried, the Workload API answers Unavailable.
    let port = free_port()?;
    let agent = AgentBuilder::for_address(&format!("127.0.0.1:{port}"))
        .join_token("0123456789abcdef0123456789abcdef01234567")
        .start_unready()?;
    let (status, body) = agent.http_get("/ready")?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"ready\":false"), "{body}");
    assert_eq!(agent.http_get("/live")?.0, 200);
    let socket = agent.socket_path().display().to_string();
    let out = agent.cli(&["healthcheck", "--socket-path", &socket])?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("unavailable"), "{}", out.stderr);
    let out = agent.cli(&["api", "fetch", "x509", "--socket-path", &socket])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.starts_with("api fetch x509: "), "{}", out.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_watch_prints_each_update() -> Result<()> {
    use std::io::BufRead;
    let (issuer, agent, agent_id) = attested(IssuerBuilder::new())?;
    let a = "spiffe://example.org/e2e/watched-a";
    let b = "spiffe://example.org/e2e/watched-b";
    create_entry(&issuer, a, &agent_id, &[&uid_selector()?], &[])?;
    // Once the X509Source has it, `api watch` starts with it.
    x509_source(&agent).await?.shutdown().await;
    let socket = agent.socket_path().display().to_string();
    let mut child = Command::new(signet_tests::agent::agent_binary()?)
        .args(["api", "watch", "--socket-path", &socket, "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |rx: &std::sync::mpsc::Receiver<String>| -> Result<serde_json::Value> {
        let line = rx.recv_timeout(WAIT).context("no update printed")?;
        Ok(serde_json::from_str(&line)?)
    };
    let first = next(&rx)?;
    assert_eq!(first["update"], 1);
    assert_eq!(first["svids"][0]["spiffe_id"], a);
    create_entry(&issuer, b, &agent_id, &[&uid_selector()?], &[])?;
    let second = next(&rx)?;
    assert_eq!(second["update"], 2);
    let ids: Vec<&str> = second["svids"]
        .as_array()
        .ok_or_else(|| anyhow!("no svids"))?
        .iter()
        .filter_map(|s| s["spiffe_id"].as_str())
        .collect();
    assert_eq!(ids, [a, b]);
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
