//! In-process tests of the node API: a real issuer (SQLite store in a tempdir, fresh CA) served on
//! 127.0.0.1:0, driven by the real agent client (`signet_agent::node_client::NodeClient`).

// Integration-test crate: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcIssuer,
    KeyPair, SanType,
};
use signet_agent::node_client::{
    AgentIdentity, EntryCache, NodeClient, NodeClientConfig, NodeClientError, SvidRequest,
    WatchEvent, generate_key_and_csr,
};
use signet_attestors::join_token;
use signet_attestors::x509pop::{self, X509PopAgent};
use signet_ca::jwt::{JwtKeyConfig, JwtKeyManager, TokenKind};
use signet_ca::{CaConfig, CertificateAuthority, KeyType};
use signet_issuer::idp::IdentityProviders;
use signet_issuer::metrics::Metrics;
use signet_issuer::node::notify::RevisionNotifier;
use signet_issuer::node::{NodeApiOptions, serve_with};
use signet_issuer::state::{Defaults, Issuer, issuer_id};
use signet_proto::node as pb;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::svid::{validate_x509_svid_leaf, verify_x509_svid};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::{JoinToken, NewEntry, RegistrationEntry, Selector};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const TD: &str = "example.org";
/// `[defaults] wit_svid_ttl` of the test issuers.
const WIT_TTL: Duration = Duration::from_secs(1800);

struct Env {
    _dir: tempfile::TempDir,
    issuer: Arc<Issuer>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Knobs of a test issuer.
struct EnvOptions {
    node: NodeApiOptions,
    agent_ttl: Duration,
    notifier: RevisionNotifier,
    jwt_issuer: Option<String>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            node: NodeApiOptions::default(),
            agent_ttl: Duration::from_secs(3600),
            notifier: RevisionNotifier::new(),
            jwt_issuer: None,
        }
    }
}

impl Env {
    async fn start(options: NodeApiOptions) -> Env {
        Env::start_with(EnvOptions {
            node: options,
            ..EnvOptions::default()
        })
        .await
    }

    async fn start_with(opts: EnvOptions) -> Env {
        let options = opts.node;
        let dir = tempfile::tempdir().unwrap();
        let store = signet_store::open(&format!("sqlite://{}/db.sqlite", dir.path().display()))
            .await
            .unwrap();
        let td = TrustDomain::new(TD).unwrap();
        let ca = CertificateAuthority::open(
            CaConfig {
                trust_domain: td.clone(),
                key_type: KeyType::EcP256,
                ttl: Duration::from_secs(24 * 3600),
                upstream: None,
                key_dir: dir.path().join("ca"),
            },
            None,
            SystemTime::now(),
        )
        .unwrap();
        let jwt = JwtKeyManager::open(
            JwtKeyConfig {
                trust_domain: td.clone(),
                key_type: KeyType::EcP256,
                key_ttl: signet_ca::jwt::DEFAULT_JWT_KEY_TTL,
                max_token_ttl: signet_issuer::config::MAX_JWT_SVID_TTL,
                key_dir: dir.path().join("jwt"),
            },
            None,
            SystemTime::now(),
        )
        .unwrap();
        let wit = JwtKeyManager::open_for(
            TokenKind::WitSvid,
            JwtKeyConfig {
                trust_domain: td.clone(),
                key_type: KeyType::EcP256,
                key_ttl: signet_ca::jwt::DEFAULT_JWT_KEY_TTL,
                max_token_ttl: signet_issuer::config::MAX_WIT_SVID_TTL,
                key_dir: dir.path().join("wit"),
            },
            None,
            SystemTime::now(),
        )
        .unwrap();
        let issuer = Arc::new(Issuer {
            issuer_id: issuer_id(&td).unwrap(),
            trust_domain: td,
            store,
            ca: Arc::new(ca),
            jwt: Arc::new(jwt),
            wit: Arc::new(wit),
            jwt_issuer: opts.jwt_issuer,
            defaults: Defaults {
                x509_svid_ttl: Duration::from_secs(3600),
                jwt_svid_ttl: Duration::from_secs(300),
                wit_svid_ttl: WIT_TTL,
                agent_ttl: opts.agent_ttl,
            },
            metrics: Arc::new(Metrics::new()),
            notifier: Arc::new(opts.notifier),
            identity_providers: Arc::new(IdentityProviders::empty()),
            delegation: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(issuer.clone(), options, listener, async {
            let _ = stopped.await;
        }));
        Env {
            _dir: dir,
            issuer,
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn td(&self) -> TrustDomain {
        self.issuer.trust_domain.clone()
    }

    fn bundle(&self) -> Bundle {
        let mut b = Bundle::new(self.td());
        b.x509_authorities = self.issuer.ca.trust_anchors();
        b
    }

    fn client(&self) -> NodeClient {
        NodeClient::new(NodeClientConfig {
            address: self.addr.to_string(),
            trust_domain: self.td(),
            bundle: Some(self.bundle()),
            insecure_bootstrap: false,
        })
        .unwrap()
    }

    fn client_with(&self, identity: AgentIdentity) -> NodeClient {
        let c = self.client();
        c.set_identity(identity);
        c
    }

    async fn token(&self, expires_in: i64, alias: Option<&str>) -> String {
        let token = join_token::generate_join_token();
        let now = now_s();
        self.issuer
            .store
            .create_join_token(JoinToken {
                token_hash: join_token::hash_join_token(&token),
                expires_at: now + expires_in,
                alias_spiffe_id: alias.map(str::to_owned),
                created_at: now,
                used_at: None,
            })
            .await
            .unwrap();
        token.to_string()
    }

    /// Attests a fresh agent with a join token.
    async fn agent(&self) -> (NodeClient, AgentIdentity) {
        let c = self.client();
        let token = self.token(600, None).await;
        let a = c.attest_join_token(&token).await.unwrap();
        (c, a.identity)
    }

    async fn entry(&self, spiffe_id: &str, parent_id: &str) -> RegistrationEntry {
        self.entry_with(NewEntry {
            spiffe_id: spiffe_id.into(),
            parent_id: parent_id.into(),
            selectors: vec![Selector::new("unix", "uid:1000")],
            ..NewEntry::default()
        })
        .await
    }

    async fn entry_with(&self, e: NewEntry) -> RegistrationEntry {
        self.issuer.store.create_entry(e).await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rpc(err: NodeClientError) -> (tonic::Code, String) {
    match err {
        NodeClientError::Rpc { code, message } => (code, message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn serial_of(der: &[u8]) -> String {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    hex::encode(c.raw_serial())
}

async fn audit_events(env: &Env, kind: &str) -> Vec<signet_store::AuditEvent> {
    env.issuer
        .store
        .list_audit_events(0, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == kind)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// join tokens

#[tokio::test]
async fn join_token_happy_path() {
    let env = Env::start(NodeApiOptions::default()).await;
    let client = env.client();
    let token = env.token(600, None).await;
    let a = client.attest_join_token(&token).await.unwrap();

    let want = format!("spiffe://{TD}/signet/agent/join_token/{token}");
    assert_eq!(a.identity.spiffe_id.to_string(), want);
    // A valid X509-SVID with that ID, verifying against the bundle.
    assert_eq!(
        validate_x509_svid_leaf(&a.identity.cert_chain[0])
            .unwrap()
            .to_string(),
        want
    );
    let verified =
        verify_x509_svid(&a.identity.cert_chain, &env.bundle(), SystemTime::now()).unwrap();
    assert_eq!(verified.to_string(), want);
    assert_eq!(a.bundle.x509_authorities, env.issuer.ca.trust_anchors());
    assert_eq!(
        a.selectors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![format!("join_token:{token}")]
    );

    // Stored as an agent with the SVID's serial; not re-attestable.
    let agent = env.issuer.store.get_agent(&want).await.unwrap().unwrap();
    assert_eq!(agent.attestation_type, "join_token");
    assert!(!agent.can_reattest);
    assert!(!agent.banned);
    assert_eq!(
        agent.serial.trim_start_matches('0'),
        serial_of(&a.identity.cert_chain[0]).trim_start_matches('0')
    );

    // Authenticated calls now work with the agent SVID.
    let b = client.get_bundle().await.unwrap();
    assert_eq!(b.x509_authorities, env.issuer.ca.trust_anchors());

    let events = audit_events(&env, "agent.attest").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.outcome, "ok");
    assert_eq!(events[0].event.subject, want);

    let metrics = env.issuer.metrics.encode().unwrap();
    assert!(metrics.contains("AttestAgent"), "{metrics}");
    env.stop().await;
}

#[tokio::test]
async fn spent_token_is_refused() {
    let env = Env::start(NodeApiOptions::default()).await;
    let token = env.token(600, None).await;
    env.client().attest_join_token(&token).await.unwrap();
    let (code, msg) = rpc(env.client().attest_join_token(&token).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(msg, "join token already used");
    env.stop().await;
}

#[tokio::test]
async fn expired_token_is_refused_and_spent() {
    let env = Env::start(NodeApiOptions::default()).await;
    let token = env.token(-10, None).await;
    let (code, msg) = rpc(env.client().attest_join_token(&token).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(msg, "join token expired");
    // Spent all the same.
    let (_, msg) = rpc(env.client().attest_join_token(&token).await.unwrap_err());
    assert_eq!(msg, "join token already used");
    let id = format!("spiffe://{TD}/signet/agent/join_token/{token}");
    assert!(env.issuer.store.get_agent(&id).await.unwrap().is_none());
    env.stop().await;
}

#[tokio::test]
async fn unknown_token_is_refused_and_audited_without_the_token() {
    let env = Env::start(NodeApiOptions::default()).await;
    let token = join_token::generate_join_token();
    let (code, msg) = rpc(env.client().attest_join_token(&token).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(msg, "unknown join token");
    let events = audit_events(&env, "agent.attest").await;
    assert_eq!(events.len(), 1);
    let e = &events[0].event;
    assert_eq!(e.outcome, "denied");
    assert_eq!(e.details["reason"], "unknown join token");
    assert_eq!(
        e.details["token_sha256"],
        join_token::hash_join_token(&token).as_str()
    );
    let json = serde_json::to_string(&events[0]).unwrap();
    assert!(!json.contains(token.as_str()), "the token leaked: {json}");
    assert!(env.issuer.store.list_agents().await.unwrap().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn bad_csr_at_attestation_is_refused_without_spending_the_token() {
    let env = Env::start(NodeApiOptions::default()).await;
    let token = env.token(600, None).await;
    let client = env.client();
    let (_, mut csr) = generate_key_and_csr().unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 0x01; // breaks the signature
    let mut raw = client.raw_client(false).await.unwrap();
    let (tx, rx) = mpsc::channel(2);
    tx.send(pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor_type: "join_token".into(),
                payload: token.as_bytes().to_vec(),
                csr,
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = raw
        .attest_agent(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid CSR"),
        "{}",
        err.message()
    );
    // The token still works.
    client.attest_join_token(&token).await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn failed_signing_leaves_the_token_unspent() {
    // An agent TTL of zero makes the CA refuse to sign the agent SVID.
    let env = Env::start_with(EnvOptions {
        agent_ttl: Duration::ZERO,
        ..EnvOptions::default()
    })
    .await;
    let token = env.token(600, Some(&format!("spiffe://{TD}/alias"))).await;
    let (code, msg) = rpc(env.client().attest_join_token(&token).await.unwrap_err());
    assert_eq!(code, tonic::Code::Internal);
    assert!(msg.starts_with("cannot sign the agent SVID"), "{msg}");
    // Nothing was recorded: no agent, no alias entry, and the token is still unspent.
    assert!(env.issuer.store.list_agents().await.unwrap().is_empty());
    assert_eq!(env.issuer.store.count_entries().await.unwrap(), 0);
    let e = &audit_events(&env, "agent.attest").await[0].event;
    assert_eq!(e.outcome, "error");
    assert_eq!(e.subject, "unknown agent");
    let used = env
        .issuer
        .store
        .consume_join_token(&join_token::hash_join_token(&token), now_s())
        .await
        .unwrap();
    assert!(
        matches!(used, signet_store::JoinTokenUse::Consumed(_)),
        "{used:?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn spent_token_of_an_evicted_agent_is_refused_and_nothing_recorded() {
    let env = Env::start(NodeApiOptions::default()).await;
    let token = env.token(600, None).await;
    let a = env.client().attest_join_token(&token).await.unwrap();
    let id = a.identity.spiffe_id.to_string();
    env.issuer.store.delete_agent(&id).await.unwrap();
    // The checks pass and an SVID is signed, but redeeming the token fails: the SVID is dropped.
    let (code, msg) = rpc(env.client().attest_join_token(&token).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(msg, "join token already used");
    assert!(env.issuer.store.get_agent(&id).await.unwrap().is_none());
    let events = audit_events(&env, "agent.attest").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event.outcome, "denied");
    env.stop().await;
}

#[tokio::test]
async fn unknown_attestor_type_is_refused() {
    let env = Env::start(NodeApiOptions::default()).await;
    let client = env.client();
    let (_, csr) = generate_key_and_csr().unwrap();
    let mut raw = client.raw_client(false).await.unwrap();
    let (tx, rx) = mpsc::channel(2);
    tx.send(pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor_type: "tpm".into(),
                payload: vec![],
                csr,
            },
        )),
    })
    .await
    .unwrap();
    let err = raw
        .attest_agent(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("unknown node attestor type"));
    env.stop().await;
}

#[tokio::test]
async fn alias_token_makes_entries_under_the_alias_authorized() {
    let env = Env::start(NodeApiOptions::default()).await;
    let alias = format!("spiffe://{TD}/cluster/prod");
    let token = env.token(600, Some(&alias)).await;
    let client = env.client();
    let a = client.attest_join_token(&token).await.unwrap();
    let agent_id = a.identity.spiffe_id.to_string();

    let under_alias = env.entry(&format!("spiffe://{TD}/web"), &alias).await;
    let other = env
        .entry(
            &format!("spiffe://{TD}/db"),
            &format!("spiffe://{TD}/cluster/staging"),
        )
        .await;

    let sync = client.sync_entries(0, 0).await.unwrap();
    assert!(sync.full);
    let alias_entry = sync
        .entries
        .iter()
        .find(|e| e.spiffe_id == alias)
        .expect("the node alias entry is listed");
    assert!(alias_entry.node_alias);
    assert_eq!(
        alias_entry.parent_id,
        format!("spiffe://{TD}/signet/issuer")
    );
    assert_eq!(alias_entry.selectors.len(), 1);
    assert_eq!(alias_entry.selectors[0].r#type, "join_token");
    assert_eq!(alias_entry.selectors[0].value, token);
    assert!(
        sync.entries
            .iter()
            .any(|e| e.id == under_alias.id && !e.node_alias)
    );
    assert!(!sync.entries.iter().any(|e| e.id == other.id));

    // Signing: the entry under the alias yes, the alias itself and the other entry no.
    let (_, csr) = generate_key_and_csr().unwrap();
    let results = client
        .batch_new_x509_svid(vec![
            SvidRequest {
                entry_id: under_alias.id.clone(),
                csr: csr.clone(),
            },
            SvidRequest {
                entry_id: alias_entry.id.clone(),
                csr: csr.clone(),
            },
            SvidRequest {
                entry_id: other.id.clone(),
                csr,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        results[0].as_ref().unwrap().spiffe_id.to_string(),
        format!("spiffe://{TD}/web")
    );
    let e1 = results[1].as_ref().unwrap_err();
    assert_eq!(e1.code, tonic::Code::PermissionDenied);
    assert!(e1.message.contains("node alias"), "{}", e1.message);
    let e2 = results[2].as_ref().unwrap_err();
    assert_eq!(e2.code, tonic::Code::PermissionDenied);
    assert!(e2.message.contains(&agent_id), "{}", e2.message);
    env.stop().await;
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

async fn pop_env(ca: &PopCa) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x509pop-ca.pem");
    std::fs::write(&path, &ca.pem).unwrap();
    let cfg = x509pop::ServerConfig::from_pem_file(&path).unwrap();
    Env::start(NodeApiOptions { x509pop: Some(cfg) }).await
}

#[tokio::test]
async fn x509pop_happy_path_and_reattestation() {
    let ca = pop_ca("node CA");
    let env = pop_env(&ca).await;
    let (leaf, key) = pop_leaf(&ca, "node-1");
    let agent = X509PopAgent::new(vec![leaf.clone()], &key).unwrap();
    let client = env.client();
    let a = client.attest_x509pop(&agent).await.unwrap();
    let want = format!(
        "spiffe://{TD}/signet/agent/x509pop/{}",
        x509pop::sha256_hex(&leaf)
    );
    assert_eq!(a.identity.spiffe_id.to_string(), want);
    verify_x509_svid(&a.identity.cert_chain, &env.bundle(), SystemTime::now()).unwrap();
    let sel: Vec<String> = a.selectors.iter().map(ToString::to_string).collect();
    for s in [
        "x509pop:subject:cn:node-1".to_string(),
        format!("x509pop:ca:fingerprint:{}", x509pop::sha1_hex(&ca.der)),
        "x509pop:san:dns:node-1.nodes.example.org".to_string(),
    ] {
        assert!(sel.contains(&s), "{s} missing from {sel:?}");
    }
    assert!(sel.iter().any(|s| s.starts_with("x509pop:serialnumber:")));
    let stored = env.issuer.store.get_agent(&want).await.unwrap().unwrap();
    assert!(stored.can_reattest);
    assert_eq!(stored.attestation_type, "x509pop");

    // Re-attestation: same ID, new SVID; the first one is refused from then on.
    let again = env.client();
    let b = again.attest_x509pop(&agent).await.unwrap();
    assert_eq!(b.identity.spiffe_id.to_string(), want);
    again.sync_entries(0, 0).await.unwrap();
    let (code, msg) = rpc(client.sync_entries(0, 0).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("not the current SVID"), "{msg}");
    env.stop().await;
}

#[tokio::test]
async fn x509pop_certificate_from_another_ca_is_refused() {
    let ca = pop_ca("node CA");
    let other = pop_ca("other CA");
    let env = pop_env(&ca).await;
    let (leaf, key) = pop_leaf(&other, "node-1");
    let agent = X509PopAgent::new(vec![leaf], &key).unwrap();
    let (code, msg) = rpc(env.client().attest_x509pop(&agent).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(
        msg.starts_with("x509pop certificate is not trusted"),
        "{msg}"
    );
    assert!(env.issuer.store.list_agents().await.unwrap().is_empty());
    let events = audit_events(&env, "agent.attest").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.outcome, "denied");
    env.stop().await;
}

#[tokio::test]
async fn x509pop_wrong_challenge_signature_is_refused() {
    let ca = pop_ca("node CA");
    let env = pop_env(&ca).await;
    let (leaf, _) = pop_leaf(&ca, "node-1");
    let client = env.client();
    let (_, csr) = generate_key_and_csr().unwrap();
    let mut raw = client.raw_client(false).await.unwrap();
    let (tx, rx) = mpsc::channel(2);
    tx.send(pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor_type: "x509pop".into(),
                payload: x509pop::encode_payload(&[leaf]),
                csr,
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = raw
        .attest_agent(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let challenge = match stream.message().await.unwrap().unwrap().step {
        Some(pb::attest_agent_response::Step::Challenge(c)) => c,
        other => panic!("expected a challenge, got {other:?}"),
    };
    assert_eq!(challenge.len(), x509pop::NONCE_LEN);
    // Signed by another key.
    let (other_leaf, other_key) = pop_leaf(&ca, "node-2");
    let forger = X509PopAgent::new(vec![other_leaf], &other_key).unwrap();
    use signet_attestors::AgentAttestor;
    let sig = forger.answer_challenge(&challenge).unwrap();
    tx.send(pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::ChallengeResponse(sig)),
    })
    .await
    .unwrap();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message()
            .contains("challenge signature does not verify"),
        "{}",
        err.message()
    );
    assert!(env.issuer.store.list_agents().await.unwrap().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn x509pop_is_refused_when_not_configured() {
    let env = Env::start(NodeApiOptions::default()).await;
    let ca = pop_ca("node CA");
    let (leaf, key) = pop_leaf(&ca, "node-1");
    let agent = X509PopAgent::new(vec![leaf], &key).unwrap();
    let (code, msg) = rpc(env.client().attest_x509pop(&agent).await.unwrap_err());
    assert_eq!(code, tonic::Code::FailedPrecondition);
    assert!(msg.contains("not enabled"), "{msg}");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// agent authentication

#[tokio::test]
async fn renew_works_and_the_old_svid_is_then_refused() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, old) = env.agent().await;
    let new = client.renew().await.unwrap();
    assert_eq!(new.spiffe_id, old.spiffe_id);
    assert_ne!(serial_of(&new.cert_chain[0]), serial_of(&old.cert_chain[0]));
    verify_x509_svid(&new.cert_chain, &env.bundle(), SystemTime::now()).unwrap();
    let stored = env
        .issuer
        .store
        .get_agent(&new.spiffe_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.serial.trim_start_matches('0'),
        serial_of(&new.cert_chain[0]).trim_start_matches('0')
    );
    // The client now uses the new SVID.
    client.sync_entries(0, 0).await.unwrap();
    // A client holding the old SVID is refused on every authenticated call.
    let stale = env.client_with(old);
    let (code, msg) = rpc(stale.sync_entries(0, 0).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("not the current SVID"), "{msg}");
    let (code, _) = rpc(stale.renew().await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    env.stop().await;
}

#[tokio::test]
async fn banned_agent_is_refused_everywhere() {
    let ca = pop_ca("node CA");
    let env = pop_env(&ca).await;
    let (leaf, key) = pop_leaf(&ca, "node-1");
    let agent = X509PopAgent::new(vec![leaf], &key).unwrap();
    let client = env.client();
    let a = client.attest_x509pop(&agent).await.unwrap();
    let id = a.identity.spiffe_id.to_string();
    let entry = env.entry(&format!("spiffe://{TD}/web"), &id).await;
    env.issuer.store.set_agent_banned(&id, true).await.unwrap();

    let expect_banned = |e: NodeClientError| {
        let (code, msg) = rpc(e);
        assert_eq!(code, tonic::Code::PermissionDenied);
        assert!(msg.contains("banned"), "{msg}");
    };
    expect_banned(client.sync_entries(0, 0).await.unwrap_err());
    expect_banned(client.renew().await.unwrap_err());
    expect_banned(client.get_bundle().await.unwrap_err());
    let (_, csr) = generate_key_and_csr().unwrap();
    expect_banned(
        client
            .batch_new_x509_svid(vec![SvidRequest {
                entry_id: entry.id,
                csr,
            }])
            .await
            .unwrap_err(),
    );
    expect_banned(client.watch_entries().next().await.unwrap().unwrap_err());
    // Attesting again is refused too.
    expect_banned(env.client().attest_x509pop(&agent).await.unwrap_err());
    let stored = env.issuer.store.get_agent(&id).await.unwrap().unwrap();
    assert!(stored.banned);
    env.stop().await;
}

#[tokio::test]
async fn evicted_agent_is_refused() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    env.issuer
        .store
        .delete_agent(&identity.spiffe_id.to_string())
        .await
        .unwrap();
    let (code, msg) = rpc(client.sync_entries(0, 0).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("not attested"), "{msg}");
    let (code, _) = rpc(client.renew().await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    env.stop().await;
}

#[tokio::test]
async fn client_without_certificate_is_unauthenticated() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, _) = env.agent().await;
    let mut raw = client.raw_client(false).await.unwrap();
    let err = raw
        .sync_entries(pb::SyncEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = raw.get_bundle(pb::GetBundleRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = raw
        .renew_agent(pb::RenewAgentRequest { csr: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = raw
        .watch_entries(pb::WatchEntriesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// entry sync

#[tokio::test]
async fn sync_full_then_delta() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let me = identity.spiffe_id.to_string();
    let a = env.entry(&format!("spiffe://{TD}/a"), &me).await;
    let b = env.entry(&format!("spiffe://{TD}/b"), &me).await;
    let moved = env.entry(&format!("spiffe://{TD}/moved"), &me).await;
    let nested = env
        .entry(
            &format!("spiffe://{TD}/nested"),
            &format!("spiffe://{TD}/a"),
        )
        .await;
    let expired = env
        .entry_with(NewEntry {
            spiffe_id: format!("spiffe://{TD}/expired"),
            parent_id: me.clone(),
            selectors: vec![Selector::new("unix", "uid:1")],
            expires_at: Some(now_s() - 1),
            ..NewEntry::default()
        })
        .await;
    let foreign = env
        .entry(
            &format!("spiffe://{TD}/foreign"),
            &format!("spiffe://{TD}/signet/agent/x"),
        )
        .await;

    let mut cache = EntryCache::new(&identity.spiffe_id, client.issuer_id());
    let full = client.sync_entries(0, 0).await.unwrap();
    assert!(full.full);
    let mut ids: Vec<&str> = full.entries.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    let mut want = vec![
        a.id.as_str(),
        b.id.as_str(),
        moved.id.as_str(),
        nested.id.as_str(),
    ];
    want.sort();
    assert_eq!(
        ids, want,
        "expired {} and foreign {} must be absent",
        expired.id, foreign.id
    );
    let r1 = full.revision;
    assert!(r1 >= nested.revision);
    cache.apply(full, SystemTime::now());
    assert_eq!(cache.len(), 4);

    // Nothing changed: an empty delta.
    let same = client.sync_entries(r1, 0).await.unwrap();
    assert!(!same.full);
    assert!(same.entries.is_empty());
    assert!(same.removed_entry_ids.is_empty());
    assert_eq!(same.revision, r1);

    // Create, update, delete, and move an entry away from this agent.
    let c = env.entry(&format!("spiffe://{TD}/c"), &me).await;
    let mut a2 = a.clone();
    a2.fields.hint = "updated".into();
    let a2 = env.issuer.store.update_entry(a2).await.unwrap();
    env.issuer.store.delete_entry(&b.id).await.unwrap();
    let mut m2 = moved.clone();
    m2.fields.parent_id = format!("spiffe://{TD}/signet/agent/other");
    env.issuer.store.update_entry(m2).await.unwrap();

    let delta = client.sync_entries(r1, 0).await.unwrap();
    assert!(!delta.full);
    assert!(delta.revision > r1);
    let up: Vec<&str> = delta.entries.iter().map(|e| e.id.as_str()).collect();
    assert!(up.contains(&c.id.as_str()), "{up:?}");
    assert!(up.contains(&a2.id.as_str()), "{up:?}");
    // `nested` is re-sent because its parent entry changed.
    assert!(up.contains(&nested.id.as_str()), "{up:?}");
    assert_eq!(up.len(), 3, "{up:?}");
    let updated = delta.entries.iter().find(|e| e.id == a.id).unwrap();
    assert_eq!(updated.hint, "updated");
    assert_eq!(updated.revision, a2.revision);
    assert!(delta.removed_entry_ids.contains(&b.id));
    assert!(delta.removed_entry_ids.contains(&moved.id));
    assert!(!delta.removed_entry_ids.contains(&a.id));
    cache.apply(delta, SystemTime::now());
    let mut cached: Vec<&str> = cache.entries().map(|e| e.id.as_str()).collect();
    cached.sort();
    let mut want = vec![a.id.as_str(), c.id.as_str(), nested.id.as_str()];
    want.sort();
    assert_eq!(cached, want);
    assert_eq!(cache.get(&a.id).unwrap().hint, "updated");

    // Deleting the parent entry of `nested`: the agent drops both.
    env.issuer.store.delete_entry(&a.id).await.unwrap();
    cache.refresh(&client, 0).await.unwrap();
    let cached: Vec<&str> = cache.entries().map(|e| e.id.as_str()).collect();
    assert_eq!(cached, vec![c.id.as_str()]);

    // A revision from the future (e.g. a restored store) gets a full listing.
    let future = client
        .sync_entries(cache.revision() + 1000, 0)
        .await
        .unwrap();
    assert!(future.full);
    env.stop().await;
}

#[tokio::test]
async fn sync_is_paged() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let me = identity.spiffe_id.to_string();
    let mut want = Vec::new();
    for i in 0..25 {
        want.push(env.entry(&format!("spiffe://{TD}/w{i}"), &me).await.id);
    }
    want.sort();

    let mut token = String::new();
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut revisions = Vec::new();
    loop {
        let page = client.sync_entries_page(0, 10, token).await.unwrap();
        sizes.push(page.entries.len());
        revisions.push(page.revision);
        assert!(page.full);
        assert!(page.bundle.is_some());
        got.extend(page.entries.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    assert!(revisions.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(got, want);
    let all = client.sync_entries(0, 7).await.unwrap();
    assert_eq!(all.entries.len(), 25);

    // Deltas are paged too, removed ids included.
    let r = all.revision;
    for id in &want[..12] {
        env.issuer.store.delete_entry(id).await.unwrap();
    }
    let delta = client.sync_entries(r, 5).await.unwrap();
    let mut removed = delta.removed_entry_ids.clone();
    removed.sort();
    assert_eq!(removed, want[..12].to_vec());

    let (code, _) = rpc(client
        .sync_entries_page(0, 10, "garbage".into())
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    let (code, _) = rpc(client
        .sync_entries_page(-1, 10, String::new())
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// batch signing

fn leaf_info(der: &[u8]) -> (Vec<String>, Vec<String>, Option<bool>, Duration, Vec<u8>) {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Some(san) = c.subject_alternative_name().unwrap() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    let ca = c.basic_constraints().unwrap().map(|b| b.value.ca);
    let life = Duration::from_secs(
        (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) as u64,
    );
    (uris, dns, ca, life, c.public_key().raw.to_vec())
}

#[tokio::test]
async fn batch_sign_authorized_entry() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let entry = env
        .entry_with(NewEntry {
            spiffe_id: format!("spiffe://{TD}/web"),
            parent_id: identity.spiffe_id.to_string(),
            selectors: vec![Selector::new("unix", "uid:1000")],
            x509_svid_ttl: 600,
            dns_names: vec!["web.example.org".into()],
            ..NewEntry::default()
        })
        .await;
    let (key, csr) = generate_key_and_csr().unwrap();
    let results = client
        .batch_new_x509_svid(vec![SvidRequest {
            entry_id: entry.id.clone(),
            csr,
        }])
        .await
        .unwrap();
    let svid = results[0].as_ref().unwrap();
    assert_eq!(svid.spiffe_id.to_string(), format!("spiffe://{TD}/web"));
    let leaf = &svid.cert_chain[0];
    validate_x509_svid_leaf(leaf).unwrap();
    verify_x509_svid(&svid.cert_chain, &env.bundle(), SystemTime::now()).unwrap();
    let (uris, dns, ca, life, spki) = leaf_info(leaf);
    assert_eq!(uris, vec![format!("spiffe://{TD}/web")]);
    assert_eq!(dns, vec!["web.example.org".to_string()]);
    assert_eq!(ca, Some(false));
    // The entry's TTL (plus the notBefore backdating).
    assert!(
        life >= Duration::from_secs(600) && life <= Duration::from_secs(660),
        "{life:?}"
    );
    // Over the CSR's key.
    let kp = KeyPair::try_from(key.as_slice()).unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(spki, kp.subject_public_key_info());
    let metrics = env.issuer.metrics.encode().unwrap();
    assert!(metrics.contains("x509_svid"), "{metrics}");
    env.stop().await;
}

#[tokio::test]
async fn batch_sign_refuses_unauthorized_entries_per_item() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let mine = env
        .entry(
            &format!("spiffe://{TD}/mine"),
            &identity.spiffe_id.to_string(),
        )
        .await;
    let theirs = env
        .entry(
            &format!("spiffe://{TD}/theirs"),
            &format!("spiffe://{TD}/signet/agent/other"),
        )
        .await;
    let (_, csr) = generate_key_and_csr().unwrap();
    let mut bad_csr = csr.clone();
    let last = bad_csr.len() - 1;
    bad_csr[last] ^= 0x01;
    let results = client
        .batch_new_x509_svid(vec![
            SvidRequest {
                entry_id: theirs.id.clone(),
                csr: csr.clone(),
            },
            SvidRequest {
                entry_id: "no-such-entry".into(),
                csr: csr.clone(),
            },
            SvidRequest {
                entry_id: mine.id.clone(),
                csr: bad_csr,
            },
            SvidRequest {
                entry_id: mine.id.clone(),
                csr,
            },
        ])
        .await
        .unwrap();
    for r in &results[..2] {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.code, tonic::Code::PermissionDenied);
        assert!(
            e.message.contains("is not authorized for agent"),
            "{}",
            e.message
        );
    }
    let e = results[2].as_ref().unwrap_err();
    assert_eq!(e.code, tonic::Code::InvalidArgument);
    assert!(e.message.starts_with("invalid CSR"), "{}", e.message);
    // One bad item does not fail the batch.
    assert!(results[3].is_ok());
    env.stop().await;
}

#[tokio::test]
async fn csr_requests_for_ca_and_extra_uris_are_ignored() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let entry = env
        .entry(
            &format!("spiffe://{TD}/web"),
            &identity.spiffe_id.to_string(),
        )
        .await;
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.subject_alt_names = vec![
        SanType::URI(format!("spiffe://{TD}/admin").try_into().unwrap()),
        SanType::URI(format!("spiffe://{TD}/root").try_into().unwrap()),
    ];
    let csr = p.serialize_request(&key).unwrap().der().to_vec();
    let results = client
        .batch_new_x509_svid(vec![SvidRequest {
            entry_id: entry.id,
            csr,
        }])
        .await
        .unwrap();
    let svid = results[0].as_ref().unwrap();
    let (uris, _, ca, _, _) = leaf_info(&svid.cert_chain[0]);
    assert_eq!(uris, vec![format!("spiffe://{TD}/web")]);
    assert_eq!(ca, Some(false));
    validate_x509_svid_leaf(&svid.cert_chain[0]).unwrap();
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// issuer authentication by the agent

/// A TLS server presenting `chain` + `key`, accepting connections until the test ends.
async fn fake_issuer(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn svid_for(env: &Env, id: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
    let key = signet_ca::generate_key(KeyType::EcP256).unwrap();
    let svid = env
        .issuer
        .ca
        .sign_x509_svid(
            &signet_ca::X509SvidRequest {
                spiffe_id: &SpiffeId::parse(id).unwrap(),
                public_key_spki_der: &key.spki_der,
                ttl: Duration::from_secs(600),
                dns_names: &[],
            },
            SystemTime::now(),
        )
        .unwrap();
    (svid.cert_chain_der, key.pkcs8_der.to_vec())
}

fn connect_reason(e: NodeClientError) -> String {
    match e {
        NodeClientError::Connect { reason, .. } => reason,
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn client_refuses_a_server_with_another_spiffe_id() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (chain, key) = svid_for(&env, &format!("spiffe://{TD}/not-the-issuer"));
    let addr = fake_issuer(chain, key).await;
    for insecure in [false, true] {
        let client = NodeClient::new(NodeClientConfig {
            address: addr.to_string(),
            trust_domain: env.td(),
            bundle: (!insecure).then(|| env.bundle()),
            insecure_bootstrap: insecure,
        })
        .unwrap();
        let token = env.token(600, None).await;
        let reason = connect_reason(client.attest_join_token(&token).await.unwrap_err());
        assert!(
            reason.contains("not-the-issuer") && reason.contains("signet/issuer"),
            "{reason}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn client_refuses_an_issuer_id_from_another_ca() {
    let env = Env::start(NodeApiOptions::default()).await;
    let other = Env::start(NodeApiOptions::default()).await;
    // `other` has the same trust domain name but its own CA.
    let client = NodeClient::new(NodeClientConfig {
        address: other.addr.to_string(),
        trust_domain: env.td(),
        bundle: Some(env.bundle()),
        insecure_bootstrap: false,
    })
    .unwrap();
    let token = other.token(600, None).await;
    let reason = connect_reason(client.attest_join_token(&token).await.unwrap_err());
    assert!(
        reason.contains("does not lead to an X.509 authority of the bundle"),
        "{reason}"
    );
    other.stop().await;
    env.stop().await;
}

#[tokio::test]
async fn insecure_bootstrap_pins_the_bundle_received_at_attestation() {
    let env = Env::start(NodeApiOptions::default()).await;
    let client = NodeClient::new(NodeClientConfig {
        address: env.addr.to_string(),
        trust_domain: env.td(),
        bundle: None,
        insecure_bootstrap: true,
    })
    .unwrap();
    let token = env.token(600, None).await;
    let a = client.attest_join_token(&token).await.unwrap();
    assert_eq!(a.bundle.x509_authorities, env.issuer.ca.trust_anchors());
    assert_eq!(client.bundle().x509_authorities, a.bundle.x509_authorities);
    // From now on the chain is verified against the pinned bundle.
    client.sync_entries(0, 0).await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn delta_sends_entries_newly_reachable_through_a_new_node_alias() {
    let env = Env::start(NodeApiOptions::default()).await;
    let token = env.token(600, None).await;
    let client = env.client();
    let a = client.attest_join_token(&token).await.unwrap();
    let alias = format!("spiffe://{TD}/group/blue");
    // Created before the alias exists: not authorized yet.
    let child = env.entry(&format!("spiffe://{TD}/blue-web"), &alias).await;
    let mut cache = EntryCache::new(&a.identity.spiffe_id, client.issuer_id());
    cache.refresh(&client, 0).await.unwrap();
    assert!(cache.is_empty());

    // The operator makes the agent part of the group with a node alias on its selector.
    let alias_entry = env
        .entry_with(NewEntry {
            spiffe_id: alias.clone(),
            parent_id: format!("spiffe://{TD}/signet/issuer"),
            selectors: vec![Selector::new("join_token", token.clone())],
            ..NewEntry::default()
        })
        .await;
    let delta = client.sync_entries(cache.revision(), 0).await.unwrap();
    assert!(!delta.full);
    let mut ids: Vec<&str> = delta.entries.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    let mut want = vec![alias_entry.id.as_str(), child.id.as_str()];
    want.sort();
    assert_eq!(
        ids, want,
        "the unchanged child is sent because its alias is new"
    );
    cache.apply(delta, SystemTime::now());
    assert_eq!(cache.len(), 2);

    // Removing the alias: the alias is reported removed and the agent drops the child too.
    env.issuer
        .store
        .delete_entry(&alias_entry.id)
        .await
        .unwrap();
    cache.refresh(&client, 0).await.unwrap();
    assert!(cache.is_empty());
    env.stop().await;
}

#[tokio::test]
async fn large_listings_are_cut_into_pages_under_the_message_limit() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let me = identity.spiffe_id.to_string();
    let hint = "h".repeat(1000);
    let n = 2500;
    for i in 0..n {
        env.entry_with(NewEntry {
            spiffe_id: format!("spiffe://{TD}/svc/{i}"),
            parent_id: me.clone(),
            selectors: vec![Selector::new("unix", format!("uid:{i}"))],
            dns_names: vec![format!("svc-{i}.example.org")],
            hint: hint.clone(),
            ..NewEntry::default()
        })
        .await;
    }
    // About 2.8 MB of entries: even with the largest page size, the listing is cut into pages
    // that each stay well below the 4 MB message limit.
    let mut token = String::new();
    let mut total = 0;
    let mut pages = 0;
    loop {
        let page = client.sync_entries_page(0, 5000, token).await.unwrap();
        use prost::Message;
        assert!(
            page.encoded_len() < 5 * 1024 * 1024 / 2,
            "{}",
            page.encoded_len()
        );
        total += page.entries.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(total, n);
    assert!(pages >= 2, "{pages} pages");
    let all = client.sync_entries(0, 0).await.unwrap();
    assert_eq!(all.entries.len(), n);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// change notification (WatchEntries)

/// The next event of a watch; the timeout only keeps a broken build from hanging the suite.
async fn next_event<S>(watch: &mut S) -> (i64, u64)
where
    S: futures::Stream<Item = Result<(i64, u64), NodeClientError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("no watch event")
        .expect("the watch ended")
        .expect("watch error")
}

#[tokio::test]
async fn watch_sends_the_current_revision_then_each_notified_change() {
    // Polling every hour: only `notify` can explain the second event.
    let env = Env::start_with(EnvOptions {
        notifier: RevisionNotifier::with_poll_interval(Duration::from_secs(3600)),
        ..EnvOptions::default()
    })
    .await;
    let (client, identity) = env.agent().await;
    let before = env
        .entry(
            &format!("spiffe://{TD}/before"),
            &identity.spiffe_id.to_string(),
        )
        .await;
    env.issuer.notifier.notify();
    let mut watch = client.watch_entries();
    let (rev, seq) = next_event(&mut watch).await;
    // The first event is the current state (the issuer's first read, or the notified one).
    assert!(rev == 0 || rev == before.revision, "{rev}");
    assert_eq!(seq, env.issuer.own_bundle_sequence());
    let rev = if rev == before.revision {
        rev
    } else {
        next_event(&mut watch).await.0
    };
    assert_eq!(rev, before.revision);

    let started = std::time::Instant::now();
    let entry = env
        .entry(
            &format!("spiffe://{TD}/web"),
            &identity.spiffe_id.to_string(),
        )
        .await;
    env.issuer.notifier.notify();
    let (rev, seq) = next_event(&mut watch).await;
    eprintln!("notified change seen after {:?}", started.elapsed());
    assert_eq!(rev, entry.revision);
    assert_eq!(seq, env.issuer.own_bundle_sequence());
    // The agent then syncs the delta and gets the entry.
    let delta = client.sync_entries(before.revision, 0).await.unwrap();
    assert_eq!(delta.revision, entry.revision);
    assert_eq!(
        delta
            .entries
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        vec![entry.id.as_str()]
    );
    // One receiver for the one watching agent.
    assert_eq!(env.issuer.notifier.watchers(), 1);
    drop(watch);
    env.stop().await;
}

#[tokio::test]
async fn watch_sees_changes_made_elsewhere_through_the_poll() {
    // Default poll (250 ms), no notify: as when another issuer shares the store.
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let mut watch = client.watch_entries();
    let (first, _) = next_event(&mut watch).await;
    let started = std::time::Instant::now();
    let entry = env
        .entry(
            &format!("spiffe://{TD}/web"),
            &identity.spiffe_id.to_string(),
        )
        .await;
    assert!(entry.revision > first);
    let mut rev = first;
    while rev < entry.revision {
        rev = next_event(&mut watch).await.0;
    }
    eprintln!("polled change seen after {:?}", started.elapsed());
    assert_eq!(rev, entry.revision);
    // A deletion is a change too.
    env.issuer.store.delete_entry(&entry.id).await.unwrap();
    let (after_delete, _) = next_event(&mut watch).await;
    assert!(after_delete > entry.revision);
    env.stop().await;
}

#[tokio::test]
async fn watch_ends_when_the_issuer_stops() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, _) = env.agent().await;
    let mut watch = client.watch_entries();
    next_event(&mut watch).await;
    // The graceful shutdown does not wait for open watches: it ends them.
    env.stop().await;
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn watch_ends_when_the_agent_svid_expires() {
    let env = Env::start_with(EnvOptions {
        agent_ttl: Duration::from_secs(4),
        ..EnvOptions::default()
    })
    .await;
    let (client, _) = env.agent().await;
    let mut watch = client.watch_entries();
    next_event(&mut watch).await;
    // Ends normally (the agent renews and watches again with its new SVID).
    assert!(watch.next().await.is_none());
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// bundles: own (X.509 + JWT authorities) and federated

/// A federated trust domain's bundle document: one X.509 authority, the given sequence.
fn partner_document(td: &str, sequence: u64) -> (String, Vec<u8>) {
    let ca = pop_ca(td);
    let mut b = Bundle::new(TrustDomain::new(td).unwrap());
    b.x509_authorities = vec![ca.der.clone()];
    b.sequence = sequence;
    (b.to_json().unwrap(), ca.der)
}

async fn set_federated(env: &Env, td: &str, document: &str) {
    env.issuer
        .store
        .set_bundle(signet_store::StoredBundle {
            trust_domain: td.into(),
            document: document.into(),
            own: false,
            updated_at: now_s(),
        })
        .await
        .unwrap();
}

/// The next event of [`NodeClient::watch`] (the timeout only keeps a broken build from hanging).
async fn next_watch_event<S>(watch: &mut S) -> WatchEvent
where
    S: futures::Stream<Item = Result<WatchEvent, NodeClientError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("no watch event")
        .expect("the watch ended")
        .expect("watch error")
}

#[tokio::test]
async fn federated_bundles_reach_only_agents_whose_entries_federate_and_wake_watchers() {
    // Polling every hour: only `notify` (as federation and the admin API call it) explains events.
    let env = Env::start_with(EnvOptions {
        notifier: RevisionNotifier::with_poll_interval(Duration::from_secs(3600)),
        ..EnvOptions::default()
    })
    .await;
    let (fed_client, fed_id) = env.agent().await;
    let (plain_client, plain_id) = env.agent().await;
    env.entry_with(NewEntry {
        spiffe_id: format!("spiffe://{TD}/fed"),
        parent_id: fed_id.spiffe_id.to_string(),
        selectors: vec![Selector::new("unix", "uid:1000")],
        federates_with: vec!["partner.test".into(), "absent.test".into()],
        ..NewEntry::default()
    })
    .await;
    env.entry(
        &format!("spiffe://{TD}/plain"),
        &plain_id.spiffe_id.to_string(),
    )
    .await;
    env.issuer.notifier.notify();

    let mut watch = fed_client.watch();
    let mut first = next_watch_event(&mut watch).await;
    let entries_rev = env.issuer.store.current_revision().await.unwrap();
    while first.revision < entries_rev {
        first = next_watch_event(&mut watch).await;
    }
    assert_eq!(first.bundles_revision, 0, "no federated bundle yet");
    let synced = fed_client.sync_entries(0, 0).await.unwrap();
    assert!(fed_client.federated_bundles().is_empty());
    assert_eq!(fed_client.bundles_revision(), Some(0));
    assert!(!fed_client.needs_sync(&first, synced.revision));

    // A federated bundle arrives (federation stores it and notifies): the watch fires.
    let partner = TrustDomain::new("partner.test").unwrap();
    let (doc, partner_ca) = partner_document("partner.test", 7);
    set_federated(&env, "partner.test", &doc).await;
    let (other_doc, _) = partner_document("other.test", 1);
    set_federated(&env, "other.test", &other_doc).await;
    env.issuer.notifier.notify();
    let mut ev = next_watch_event(&mut watch).await;
    while ev.bundles_revision == first.bundles_revision {
        ev = next_watch_event(&mut watch).await;
    }
    assert_eq!(ev.revision, first.revision, "no entry changed");
    assert!(fed_client.needs_sync(&ev, synced.revision));

    // A delta sync brings the bundles the agent's entries federate with, and only those.
    let delta = fed_client.sync_entries(synced.revision, 0).await.unwrap();
    assert!(delta.entries.is_empty());
    let bundles = fed_client.federated_bundles();
    assert_eq!(bundles.keys().collect::<Vec<_>>(), vec![&partner]);
    assert_eq!(bundles[&partner].x509_authorities, vec![partner_ca]);
    assert_eq!(bundles[&partner].sequence, 7);
    assert_eq!(fed_client.bundles_revision(), Some(ev.bundles_revision));
    assert!(!fed_client.needs_sync(&ev, delta.revision));

    // The agent without a federating entry gets none, at the same bundles revision.
    plain_client.sync_entries(0, 0).await.unwrap();
    assert!(plain_client.federated_bundles().is_empty());
    assert_eq!(plain_client.bundles_revision(), Some(ev.bundles_revision));

    // An update of the bundle fires again and is synced; so is its removal.
    let (doc2, partner_ca2) = partner_document("partner.test", 8);
    set_federated(&env, "partner.test", &doc2).await;
    env.issuer.notifier.notify();
    let updated = next_watch_event(&mut watch).await;
    assert_ne!(updated.bundles_revision, ev.bundles_revision);
    fed_client.sync_entries(delta.revision, 0).await.unwrap();
    let b = fed_client.federated_bundle(&partner).unwrap();
    assert_eq!((b.sequence, b.x509_authorities), (8, vec![partner_ca2]));

    env.issuer
        .store
        .delete_bundle("partner.test")
        .await
        .unwrap();
    env.issuer.notifier.notify();
    let removed = next_watch_event(&mut watch).await;
    assert_ne!(removed.bundles_revision, updated.bundles_revision);
    assert!(fed_client.needs_sync(&removed, delta.revision));
    fed_client.sync_entries(delta.revision, 0).await.unwrap();
    assert!(fed_client.federated_bundles().is_empty());
    drop(watch);
    env.stop().await;
}

#[tokio::test]
async fn federated_bundle_changes_made_elsewhere_are_seen_through_the_poll() {
    // Default poll (250 ms), no notify: as when another issuer stores the bundle.
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, _) = env.agent().await;
    let mut watch = client.watch();
    let first = next_watch_event(&mut watch).await;
    let (doc, _) = partner_document("partner.test", 1);
    set_federated(&env, "partner.test", &doc).await;
    let mut ev = next_watch_event(&mut watch).await;
    while ev.bundles_revision == first.bundles_revision {
        ev = next_watch_event(&mut watch).await;
    }
    assert_ne!(ev.bundles_revision, 0);
    env.stop().await;
}

#[tokio::test]
async fn own_bundle_carries_jwt_and_wit_authorities_and_their_rotation_wakes_watchers() {
    let env = Env::start_with(EnvOptions {
        notifier: RevisionNotifier::with_poll_interval(Duration::from_secs(3600)),
        ..EnvOptions::default()
    })
    .await;
    let client = env.client();
    let a = client
        .attest_join_token(&env.token(600, None).await)
        .await
        .unwrap();
    let kids = |b: &Bundle| {
        b.jwt_authorities
            .iter()
            .map(|j| j.key_id.clone())
            .collect::<Vec<_>>()
    };
    let own_kids = || {
        env.issuer
            .jwt
            .authorities()
            .into_iter()
            .map(|j| j.key_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(kids(&a.bundle), own_kids());
    assert_eq!(kids(&a.bundle).len(), 1);
    assert_eq!(a.bundle.x509_authorities, env.issuer.ca.trust_anchors());
    assert_eq!(a.bundle.sequence, env.issuer.own_bundle_sequence());
    let got = client.get_bundle().await.unwrap();
    assert_eq!(got, a.bundle);

    let mut watch = client.watch();
    let first = next_watch_event(&mut watch).await;
    assert_eq!(first.bundle_sequence, a.bundle.sequence);
    // A JWT key rotation step (CaSync persists it and notifies).
    env.issuer.jwt.prepare(SystemTime::now()).unwrap();
    env.issuer.notifier.notify();
    let ev = next_watch_event(&mut watch).await;
    assert!(ev.bundle_sequence > first.bundle_sequence);
    assert_eq!(ev.bundle_sequence, env.issuer.own_bundle_sequence());
    assert!(client.needs_sync(&ev, ev.revision));
    client.sync_entries(0, 0).await.unwrap();
    assert_eq!(kids(&client.bundle()), own_kids());
    assert_eq!(kids(&client.bundle()).len(), 2);
    assert_eq!(client.bundle().sequence, ev.bundle_sequence);

    // A WIT key rotation step alone (the CA and JWT keys do not move) grows the sequence too.
    assert_eq!(a.bundle.wit_authorities.len(), 1);
    let jwt_sequence = env.issuer.jwt.sequence();
    env.issuer.wit.prepare(SystemTime::now()).unwrap();
    env.issuer.notifier.notify();
    let wit_ev = next_watch_event(&mut watch).await;
    assert_eq!(env.issuer.jwt.sequence(), jwt_sequence);
    assert!(wit_ev.bundle_sequence > ev.bundle_sequence);
    assert!(client.needs_sync(&wit_ev, wit_ev.revision));
    client.sync_entries(0, 0).await.unwrap();
    assert_eq!(
        kids_of(&client.bundle().wit_authorities),
        kids_of(&env.issuer.wit.authorities())
    );
    assert_eq!(client.bundle().wit_authorities.len(), 2);
    assert_eq!(kids(&client.bundle()).len(), 2);
    assert_eq!(client.bundle().sequence, wit_ev.bundle_sequence);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWT-SVIDs

#[tokio::test]
async fn jwt_svid_for_an_authorized_entry_validates_against_the_received_bundle() {
    let env = Env::start_with(EnvOptions {
        jwt_issuer: Some("https://oidc.example.org".into()),
        ..EnvOptions::default()
    })
    .await;
    let (client, identity) = env.agent().await;
    let me = identity.spiffe_id.to_string();
    let default_ttl = env.entry(&format!("spiffe://{TD}/web"), &me).await;
    let short = env
        .entry_with(NewEntry {
            spiffe_id: format!("spiffe://{TD}/short"),
            parent_id: me.clone(),
            selectors: vec![Selector::new("unix", "uid:1000")],
            jwt_svid_ttl: 60,
            ..NewEntry::default()
        })
        .await;
    // The agent uses the bundle it received from the issuer.
    client.sync_entries(0, 0).await.unwrap();
    let bundle = client.bundle();
    assert!(!bundle.jwt_authorities.is_empty());

    let svid = client
        .new_jwt_svid(&default_ttl.id, &["svc-a".into(), "svc-b".into()])
        .await
        .unwrap();
    assert_eq!(svid.spiffe_id.to_string(), default_ttl.fields.spiffe_id);
    assert!(!format!("{svid:?}").contains(&svid.token));
    let validated = signet_spiffe::jwt::validate_jwt_svid(
        &svid.token,
        "svc-b",
        |td: &TrustDomain| (td == &bundle.trust_domain).then(|| bundle.clone()),
        SystemTime::now(),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(validated.spiffe_id, svid.spiffe_id);
    assert_eq!(validated.audience, vec!["svc-a", "svc-b"]);
    assert_eq!(validated.expiry, svid.expires_at);
    assert_eq!(validated.claims["iss"], "https://oidc.example.org");
    // TTL: the issuer's default (300 s) here, the entry's own below.
    assert_eq!(
        svid.expires_at.duration_since(svid.issued_at).unwrap(),
        Duration::from_secs(300)
    );
    let s = client
        .new_jwt_svid(&short.id, &["svc-a".into()])
        .await
        .unwrap();
    assert_eq!(
        s.expires_at.duration_since(s.issued_at).unwrap(),
        Duration::from_secs(60)
    );
    // Another audience is refused by the validator.
    assert!(
        signet_spiffe::jwt::validate_jwt_svid(
            &s.token,
            "svc-b",
            |_: &TrustDomain| Some(bundle.clone()),
            SystemTime::now(),
            Duration::ZERO,
        )
        .is_err()
    );
    let metrics = env.issuer.metrics.encode().unwrap();
    assert!(metrics.contains("jwt_svid"), "{metrics}");
    assert!(metrics.contains("NewJWTSVID"), "{metrics}");
    // Minting is not audited (too hot).
    assert!(
        env.issuer
            .store
            .list_audit_events(0, 0)
            .await
            .unwrap()
            .iter()
            .all(|e| !e.event.kind.starts_with("jwt"))
    );
    env.stop().await;
}

/// An agent attested with a node alias, with an entry of its own (`mine`), and the entry ids a
/// token mint must refuse with `PERMISSION_DENIED`.
struct RefusalSetup {
    env: Env,
    client: NodeClient,
    mine: RegistrationEntry,
    /// (entry id, what it is): another agent's entry, an unknown entry, the node alias.
    unauthorized: Vec<(String, &'static str)>,
}

async fn refusal_setup() -> RefusalSetup {
    let alias = format!("spiffe://{TD}/cluster/prod");
    let env = Env::start(NodeApiOptions::default()).await;
    let client = env.client();
    let a = client
        .attest_join_token(&env.token(600, Some(&alias)).await)
        .await
        .unwrap();
    let me = a.identity.spiffe_id.to_string();
    let (_, other) = env.agent().await;
    let mine = env.entry(&format!("spiffe://{TD}/mine"), &me).await;
    let theirs = env
        .entry(
            &format!("spiffe://{TD}/theirs"),
            &other.spiffe_id.to_string(),
        )
        .await;
    let sync = client.sync_entries(0, 0).await.unwrap();
    let alias_entry = sync.entries.iter().find(|e| e.node_alias).unwrap();
    let unauthorized = vec![
        (theirs.id, "another agent's entry"),
        ("no-such-entry".to_owned(), "an unknown entry"),
        (alias_entry.id.clone(), "a node alias"),
    ];
    RefusalSetup {
        env,
        client,
        mine,
        unauthorized,
    }
}

#[tokio::test]
async fn jwt_svid_refused_for_unauthorized_entries_and_bad_audiences() {
    let RefusalSetup {
        env,
        client,
        mine,
        unauthorized,
    } = refusal_setup().await;
    let aud = vec!["svc".to_string()];

    for (id, what) in &unauthorized {
        let (code, msg) = rpc(client.new_jwt_svid(id, &aud).await.unwrap_err());
        assert_eq!(code, tonic::Code::PermissionDenied, "{what}: {msg}");
    }
    let too_many: Vec<String> = (0..33).map(|i| format!("a{i}")).collect();
    let too_long = vec!["x".repeat(1025)];
    for (audience, what) in [
        (vec![], "no audience"),
        (vec![String::new()], "an empty audience"),
        (vec!["ok".to_string(), String::new()], "one empty audience"),
        (too_many, "33 audiences"),
        (too_long, "a 1025-byte audience"),
    ] {
        let (code, msg) = rpc(client.new_jwt_svid(&mine.id, &audience).await.unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument, "{what}: {msg}");
    }
    // The authorized entry works.
    client.new_jwt_svid(&mine.id, &aud).await.unwrap();
    env.stop().await;
}

#[tokio::test]
async fn token_mints_need_an_entry_id_and_mutual_tls() {
    let RefusalSetup {
        env, client, mine, ..
    } = refusal_setup().await;
    let aud = vec!["svc".to_string()];
    let key = holder_spki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (code, _) = rpc(client.new_jwt_svid("", &aud).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    let (code, _) = rpc(client.new_wit_svid("", &key).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);

    // Without mutual TLS: refused before anything else.
    let mut raw = client.raw_client(false).await.unwrap();
    let jwt = raw
        .new_jwtsvid(pb::NewJwtsvidRequest {
            entry_id: mine.id.clone(),
            audience: aud,
        })
        .await
        .unwrap_err();
    let wit = raw
        .new_witsvid(pb::NewWitsvidRequest {
            entry_id: mine.id.clone(),
            public_key: key,
        })
        .await
        .unwrap_err();
    for err in [jwt, wit] {
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// WIT-SVIDs

use rcgen::PublicKeyData;

fn holder_spki(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    KeyPair::generate_for(alg)
        .unwrap()
        .subject_public_key_info()
}

fn kids_of(authorities: &[signet_spiffe::JwtAuthority]) -> Vec<String> {
    authorities.iter().map(|a| a.key_id.clone()).collect()
}

#[tokio::test]
async fn wit_svid_for_an_authorized_entry_validates_against_the_bundle_from_get_bundle() {
    let env = Env::start(NodeApiOptions::default()).await;
    let (client, identity) = env.agent().await;
    let me = identity.spiffe_id.to_string();
    let entry = env
        .entry(&format!("spiffe://{TD}/agents/planner"), &me)
        .await;

    let holder = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let svid = client
        .new_wit_svid(&entry.id, &holder.subject_public_key_info())
        .await
        .unwrap();
    assert_eq!(svid.spiffe_id.to_string(), entry.fields.spiffe_id);
    assert!(!format!("{svid:?}").contains(&svid.token));
    assert_eq!(
        svid.expires_at.duration_since(svid.issued_at).unwrap(),
        WIT_TTL
    );

    // The bundle from GetBundle carries the WIT authorities, apart from the JWT ones.
    let bundle = client.get_bundle().await.unwrap();
    assert_eq!(
        kids_of(&bundle.wit_authorities),
        kids_of(&env.issuer.wit.authorities())
    );
    assert_eq!(bundle.wit_authorities.len(), 1);
    assert_eq!(
        kids_of(&bundle.jwt_authorities),
        kids_of(&env.issuer.jwt.authorities())
    );
    assert_ne!(
        bundle.wit_authorities[0].key_id,
        bundle.jwt_authorities[0].key_id
    );
    assert_eq!(bundle.sequence, env.issuer.own_bundle_sequence());

    let validated = signet_spiffe::wit::validate_wit_svid(
        &svid.token,
        |td: &TrustDomain| (td == &bundle.trust_domain).then(|| bundle.clone()),
        SystemTime::now(),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(validated.spiffe_id, svid.spiffe_id);
    assert_eq!(validated.expiry, svid.expires_at);
    assert_eq!(validated.key_id, bundle.wit_authorities[0].key_id);
    let raw = holder.public_key_raw();
    assert_eq!(
        validated.confirmation.jwk["x"],
        base64_url(&raw[1..33]).as_str()
    );
    assert_eq!(validated.confirmation.algorithm.as_str(), "ES256");
    assert!(validated.claims.get("aud").is_none());
    assert!(validated.claims.get("iss").is_none());
    // It is no JWT-SVID.
    assert!(
        signet_spiffe::jwt::validate_jwt_svid(
            &svid.token,
            "anything",
            |_: &TrustDomain| Some(bundle.clone()),
            SystemTime::now(),
            Duration::ZERO,
        )
        .is_err()
    );

    // P-384 and RSA holder keys.
    for (alg, jws) in [
        (&rcgen::PKCS_ECDSA_P384_SHA384, "ES384"),
        (&rcgen::PKCS_RSA_SHA256, "RS256"),
    ] {
        let s = client
            .new_wit_svid(&entry.id, &holder_spki(alg))
            .await
            .unwrap();
        let v = signet_spiffe::wit::validate_wit_svid(
            &s.token,
            |_: &TrustDomain| Some(bundle.clone()),
            SystemTime::now(),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(v.confirmation.algorithm.as_str(), jws);
    }

    let metrics = env.issuer.metrics.encode().unwrap();
    assert!(metrics.contains("kind=\"wit_svid\""), "{metrics}");
    assert!(metrics.contains("NewWITSVID"), "{metrics}");
    env.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn wit_svid_refused_for_unauthorized_entries_node_aliases_and_bad_keys() {
    let RefusalSetup {
        env,
        client,
        mine,
        unauthorized,
    } = refusal_setup().await;
    let key = holder_spki(&rcgen::PKCS_ECDSA_P256_SHA256);

    // Authorized exactly like NewJWTSVID.
    for (id, what) in &unauthorized {
        let (code, msg) = rpc(client.new_wit_svid(id, &key).await.unwrap_err());
        assert_eq!(code, tonic::Code::PermissionDenied, "{what}: {msg}");
        if *what == "a node alias" {
            assert!(msg.contains("is a node alias"), "{msg}");
        }
    }

    let mut off_curve = key.clone();
    let n = off_curve.len();
    off_curve[n - 1] ^= 1;
    for (bad, what, why) in [
        (Vec::new(), "an empty key", "public_key is required"),
        (
            b"garbage".to_vec(),
            "garbage",
            "not a DER SubjectPublicKeyInfo",
        ),
        (
            holder_spki(&rcgen::PKCS_ED25519),
            "an Ed25519 key",
            "unsupported public key: Ed25519",
        ),
        (
            holder_spki(&rcgen::PKCS_ECDSA_P521_SHA512),
            "a P-521 key",
            "unsupported public key: EC P-521",
        ),
        (off_curve, "a point off the curve", "not a point on P-256"),
        (vec![0x30; 4097], "a 4097-byte key", "at most 4096"),
    ] {
        let (code, msg) = rpc(client.new_wit_svid(&mine.id, &bad).await.unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument, "{what}: {msg}");
        assert!(msg.contains(why), "{what}: {msg}");
    }
    // The authorized entry works.
    client.new_wit_svid(&mine.id, &key).await.unwrap();
    env.stop().await;
}

async fn stored_wit_journal(env: &Env) -> Vec<u8> {
    env.issuer
        .store
        .load_journal(signet_issuer::ca_sync::WIT_JOURNAL)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn ca_sync_persists_wit_keys_and_audits_their_rotation() {
    let env = Env::start(NodeApiOptions::default()).await;
    let ca_sync =
        signet_issuer::ca_sync::CaSync::new(env.issuer.clone(), Duration::from_secs(24 * 3600));
    ca_sync.persist().await.unwrap();
    let journal = stored_wit_journal(&env).await;
    assert_eq!(journal, env.issuer.wit.journal_bytes().unwrap());
    let doc: serde_json::Value = serde_json::from_slice(&journal).unwrap();
    assert_eq!(doc["kind"], "wit-svid");
    // The stored own bundle carries the WIT authorities.
    let stored = env.issuer.store.get_bundle(TD).await.unwrap().unwrap();
    let bundle = Bundle::from_json(&env.td(), stored.document.as_bytes()).unwrap();
    assert_eq!(
        kids_of(&bundle.wit_authorities),
        kids_of(&env.issuer.wit.authorities())
    );

    // Half of the key lifetime later the next WIT key is prepared, persisted and audited.
    let later =
        SystemTime::now() + signet_ca::jwt::DEFAULT_JWT_KEY_TTL / 2 + Duration::from_secs(60);
    ca_sync.rotate_once(later).await.unwrap();
    assert_eq!(env.issuer.wit.authorities().len(), 2);
    let events = audit_events(&env, "wit.rotate").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let journal = stored_wit_journal(&env).await;
    assert_eq!(journal, env.issuer.wit.journal_bytes().unwrap());
    env.stop().await;
}

#[tokio::test]
async fn bundle_endpoint_serves_wit_authorities_but_oidc_jwks_stays_jwt_only() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let env = Env::start(NodeApiOptions::default()).await;
    let ca_sync = Arc::new(signet_issuer::ca_sync::CaSync::new(
        env.issuer.clone(),
        Duration::from_secs(24 * 3600),
    ));
    let settings = signet_issuer::config::BundleEndpointSettings {
        bind_address: "127.0.0.1:0".parse().unwrap(),
        tls: signet_issuer::config::EndpointTlsSettings::HttpsSpiffe,
        refresh_hint: None,
    };
    let endpoint = signet_issuer::bundle_endpoint::BundleEndpoint::new(
        env.issuer.clone(),
        ca_sync,
        &settings,
        Some("https://oidc.example.org".into()),
    )
    .unwrap();
    let get = |path: &'static str| {
        let router = endpoint.router();
        async move {
            let resp = router
                .oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    let jwt_kids = kids_of(&env.issuer.jwt.authorities());
    let wit_kids = kids_of(&env.issuer.wit.authorities());

    // The bundle: X.509, JWT and WIT authorities.
    let doc = get("/").await;
    let bundle = Bundle::from_json(&env.td(), doc.to_string().as_bytes()).unwrap();
    assert_eq!(kids_of(&bundle.wit_authorities), wit_kids);
    assert_eq!(kids_of(&bundle.jwt_authorities), jwt_kids);

    // OIDC: the JWKS and the discovery document know the JWT keys alone.
    let jwks = get(signet_issuer::bundle_endpoint::JWKS_PATH).await;
    let served: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(served, jwt_kids);
    assert!(!served.iter().any(|k| wit_kids.contains(k)));
    assert!(!jwks.to_string().contains("wit-svid"), "{jwks}");
    // A prepared (published) WIT key does not reach it either.
    env.issuer.wit.prepare(SystemTime::now()).unwrap();
    let jwks = get(signet_issuer::bundle_endpoint::JWKS_PATH).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), jwt_kids.len());
    let discovery = get(signet_issuer::bundle_endpoint::OIDC_DISCOVERY_PATH).await;
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    env.stop().await;
}
