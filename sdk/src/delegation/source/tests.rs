//! The source against an in-process stand-in for the agent's `Delegation` service on a temporary
//! Unix socket, serving keys and revocation lists made with the real `signet-delegation` keys and
//! tokens. The stand-in refuses calls without the `workload.spiffe.io: true` header, as the agent
//! does, and is stopped abruptly (its runtime dropped) to play an agent crash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use signet_delegation::{Biscuit, HopRequest, KeyPair, MintRequest, append_hop, mint, read_chain};
use signet_proto::delegation::delegation_server::{Delegation, DelegationServer};
use signet_proto::delegation::{
    DelegateRequest, DelegationKeysResponse, DelegationToken, FetchDelegationKeysRequest,
    MintRequest as PbMintRequest,
};
use signet_spiffe::SpiffeId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Response, Status};

use super::*;
use crate::delegation::{Revoked, Subject, SubjectKind};

const PLANNER: &str = "spiffe://example.org/planner";
const SEARCH: &str = "spiffe://example.org/search";
const WAIT: Duration = Duration::from_secs(20);

type Subscriber = mpsc::UnboundedSender<Result<DelegationKeysResponse, Status>>;

#[derive(Default)]
struct AgentState {
    current: Mutex<DelegationKeysResponse>,
    subscribers: Mutex<Vec<Subscriber>>,
    fetches: AtomicUsize,
    refused: AtomicUsize,
}

struct Service(Arc<AgentState>);

#[tonic::async_trait]
impl Delegation for Service {
    async fn mint(
        &self,
        _: tonic::Request<PbMintRequest>,
    ) -> Result<Response<DelegationToken>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn delegate(
        &self,
        _: tonic::Request<DelegateRequest>,
    ) -> Result<Response<DelegationToken>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type FetchDelegationKeysStream =
        UnboundedReceiverStream<Result<DelegationKeysResponse, Status>>;

    async fn fetch_delegation_keys(
        &self,
        request: tonic::Request<FetchDelegationKeysRequest>,
    ) -> Result<Response<Self::FetchDelegationKeysStream>, Status> {
        if request
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        let current = self.0.current.lock().unwrap().clone();
        tx.send(Ok(current)).unwrap();
        self.0.subscribers.lock().unwrap().push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// The stand-in agent: a tonic server in its own thread and runtime.
struct FakeAgent {
    state: Arc<AgentState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAgent {
    fn start(path: &Path, doc: DelegationKeysResponse) -> Self {
        let state = Arc::new(AgentState::default());
        *state.current.lock().unwrap() = doc;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = path.to_owned();
        let service = Service(Arc::clone(&state));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).unwrap();
                ready_tx.send(()).unwrap();
                let server = tonic::transport::Server::builder()
                    .add_service(DelegationServer::new(service))
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
                tokio::select! {
                    r = server => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Connections are tasks of this runtime: dropping it cuts them, as a crash would.
            rt.shutdown_background();
        });
        ready_rx.recv_timeout(WAIT).unwrap();
        Self {
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Makes `doc` the current state and pushes it to every open stream.
    fn publish(&self, doc: DelegationKeysResponse) {
        *self.state.current.lock().unwrap() = doc.clone();
        self.state
            .subscribers
            .lock()
            .unwrap()
            .retain(|s| s.send(Ok(doc.clone())).is_ok());
    }

    fn kill(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.halt();
    }
}

fn rights(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// A real issuer's delegation key, as published, and its tokens.
struct Issuer {
    root: KeyPair,
    root_id: u32,
}

impl Issuer {
    fn new(root_id: u32) -> Self {
        Self {
            root: KeyPair::new(),
            root_id,
        }
    }

    fn keys(&self) -> DelegationKeys {
        DelegationKeys::from_keys([(self.root_id, self.root.public())])
    }

    /// alice -> planner (read, book), 600 s, 2 hops.
    fn mint(&self, actor: &str) -> Biscuit {
        let now = SystemTime::now();
        mint(
            &self.root,
            self.root_id,
            &MintRequest {
                token_id: "t0".into(),
                subject: Subject {
                    id: "https://idp.example.com#alice".into(),
                    kind: SubjectKind::User,
                    issuer: "https://idp.example.com".into(),
                    name: "alice@example.com".into(),
                },
                actor: id(actor),
                rights: rights(&["flights:read", "flights:book"]),
                issued_at: now,
                expires_at: now + Duration::from_secs(600),
                max_depth: 2,
            },
        )
        .unwrap()
    }

    /// The planner hands `token` to search with flights:read.
    fn hop(&self, token: &Biscuit) -> Biscuit {
        let now = SystemTime::now();
        let chain = read_chain(token, &[self.root.public()]).unwrap();
        append_hop(
            token,
            &chain,
            &self.root,
            &HopRequest {
                token_id: "t1".into(),
                next_actor: id(SEARCH),
                rights: rights(&["flights:read"]),
                at: now,
                expires_at: now + Duration::from_secs(300),
            },
        )
        .unwrap()
    }
}

fn doc(
    keys: &DelegationKeys,
    revocations: &RevocationList,
    sequence: u64,
) -> DelegationKeysResponse {
    DelegationKeysResponse {
        keys_json: keys.to_json(),
        revocations_json: revocations.to_json(),
        sequence,
    }
}

fn request<'a>(presenter: &'a str, operation: &'a str) -> Request<'a> {
    Request {
        presenter,
        operation,
        now: SystemTime::now(),
    }
}

fn socket(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("api.sock")
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_token_verifies_through_the_source_until_its_revocation_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let iss = Issuer::new(1);
    let t0 = iss.mint(PLANNER);
    let t1 = iss.hop(&t0);
    let (t0_text, t1_text) = (t0.to_base64().unwrap(), t1.to_base64().unwrap());
    let agent = FakeAgent::start(
        &socket(&dir),
        doc(&iss.keys(), &RevocationList::default(), 1),
    );

    let source = DelegationKeySource::builder()
        .endpoint(format!("unix://{}", socket(&dir).display()))
        .policy(&format!(r#"allow if chain_actor(0, "{PLANNER}");"#))
        .unwrap()
        .max_depth(2)
        .start()
        .unwrap();
    source.wait_ready(WAIT).await.unwrap();
    assert!(source.is_ready() && source.is_connected());
    assert_eq!(source.sequence(), Some(1));
    assert_eq!(
        agent.state.refused.load(Ordering::SeqCst),
        0,
        "the header is sent"
    );

    let d = source
        .verifier()
        .verify(&t1_text, &request(SEARCH, "flights:read"))
        .unwrap();
    assert_eq!(d.chain.subject.id, "https://idp.example.com#alice");
    assert_eq!(d.chain.actors(), [PLANNER, SEARCH]);
    assert_eq!(d.chain.rights, rights(&["flights:read"]));
    // Bound to its holder; the hop dropped flights:book.
    assert!(matches!(
        source.verify(&t1_text, &request(PLANNER, "flights:read")),
        Err(VerifyError::NotTheHolder { .. })
    ));
    assert!(matches!(
        source.verify(&t1_text, &request(SEARCH, "flights:book")),
        Err(VerifyError::Unauthorized(_))
    ));
    // The resource server's policy applies: a chain that does not start at the planner.
    let other = iss.mint(SEARCH).to_base64().unwrap();
    assert!(matches!(
        source.verify(&other, &request(SEARCH, "flights:read")),
        Err(VerifyError::Unauthorized(m)) if m.contains("no policy")
    ));

    // An unusable document is skipped; the last good verifier stays.
    agent.publish(DelegationKeysResponse {
        keys_json: "{not json".into(),
        revocations_json: String::new(),
        sequence: 2,
    });
    // The revocation of t1 (its last block).
    let c1 = read_chain(&t1, &[iss.root.public()]).unwrap();
    let revoked = RevocationList {
        revoked: vec![Revoked {
            revocation_id: c1.revocation_ids.last().unwrap().clone(),
            token_id: "t1".into(),
            revoked_at: 0,
        }],
        sequence: 1,
    };
    agent.publish(doc(&iss.keys(), &revoked, 3));
    source.wait_for_sequence(3, WAIT).await.unwrap();
    let err = source
        .verify(&t1_text, &request(SEARCH, "flights:read"))
        .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Revoked { token_id, .. } if token_id == "t1"),
        "{err}"
    );
    // Its parent is not revoked.
    assert!(
        source
            .verify(&t0_text, &request(PLANNER, "flights:read"))
            .is_ok()
    );
    assert_eq!(agent.state.fetches.load(Ordering::SeqCst), 1, "one stream");
}

#[tokio::test]
async fn the_source_reconnects_after_an_agent_crash_and_follows_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let old = Issuer::new(1);
    let new = Issuer::new(2);
    let old_token = old.mint(PLANNER).to_base64().unwrap();
    let new_token = new.mint(PLANNER).to_base64().unwrap();
    let agent = FakeAgent::start(
        &socket(&dir),
        doc(&old.keys(), &RevocationList::default(), 4),
    );
    let source = DelegationKeySource::builder()
        .endpoint(socket(&dir).display().to_string())
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .start()
        .unwrap();
    source.wait_ready(WAIT).await.unwrap();
    assert!(
        source
            .verify(&old_token, &request(PLANNER, "flights:read"))
            .is_ok()
    );

    agent.kill();
    eventually("the source to notice the crash", || !source.is_connected()).await;
    // Meanwhile the last good keys keep working.
    assert!(
        source
            .verify(&old_token, &request(PLANNER, "flights:read"))
            .is_ok()
    );
    // Reconnection attempts fail while nobody listens; then the agent is back, with a new key
    // (the old one retired).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let agent = FakeAgent::start(
        &socket(&dir),
        doc(&new.keys(), &RevocationList::default(), 5),
    );
    source.wait_for_sequence(5, WAIT).await.unwrap();
    assert!(source.is_connected());
    assert!(
        source
            .verify(&new_token, &request(PLANNER, "flights:read"))
            .is_ok()
    );
    assert_eq!(
        source
            .verify(&old_token, &request(PLANNER, "flights:read"))
            .unwrap_err(),
        VerifyError::UnknownRootKey(Some(1))
    );
    assert_eq!(agent.state.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_an_agent_the_source_is_not_ready_and_refuses_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let iss = Issuer::new(1);
    let token = iss.mint(PLANNER).to_base64().unwrap();
    let source = DelegationKeySource::builder()
        .endpoint(format!("unix:{}", socket(&dir).display()))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .start()
        .unwrap();
    let err = source
        .wait_ready(Duration::from_millis(300))
        .await
        .unwrap_err();
    match &err {
        SourceError::Timeout { last_error, .. } => {
            let e = last_error.as_deref().unwrap_or_default();
            assert!(e.contains("cannot connect"), "{e}");
        }
        other => panic!("{other}"),
    }
    assert!(!source.is_ready());
    assert_eq!(
        source
            .verify(&token, &request(PLANNER, "flights:read"))
            .unwrap_err(),
        VerifyError::UnknownRootKey(Some(1))
    );
    // It starts following as soon as the agent appears.
    let _agent = FakeAgent::start(
        &socket(&dir),
        doc(&iss.keys(), &RevocationList::default(), 1),
    );
    source.wait_ready(WAIT).await.unwrap();
    assert!(
        source
            .verify(&token, &request(PLANNER, "flights:read"))
            .is_ok()
    );
}

#[test]
fn endpoints_policies_and_runtimes_are_checked_at_start() {
    for ok in [
        "unix:///run/signet/api.sock",
        "unix:/run/signet/api.sock",
        "/run/signet/api.sock",
    ] {
        assert_eq!(
            AgentEndpoint::parse(ok).unwrap().path(),
            Path::new("/run/signet/api.sock"),
            "{ok}"
        );
    }
    for bad in [
        "",
        "unix://relative",
        "unix://run/x",
        "unix:relative",
        "tcp://127.0.0.1:8081",
        "relative/api.sock",
        "unix:///x?y",
    ] {
        assert!(AgentEndpoint::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        AgentEndpoint::parse("/a/b").unwrap().to_string(),
        "unix:///a/b"
    );
    assert!(matches!(
        DelegationKeySource::builder().policy("allow if ("),
        Err(SourceError::Policy(_))
    ));
    // Outside a runtime.
    assert_eq!(
        DelegationKeySource::builder()
            .endpoint("/tmp/none.sock")
            .start()
            .unwrap_err(),
        SourceError::NoRuntime
    );
}
