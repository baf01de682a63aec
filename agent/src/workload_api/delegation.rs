//! The delegation service on the agent socket, `signet.delegation.v1.Delegation`
//! (`docs/delegation.md`, "Agent delegation service").
//!
//! A service of its own next to `SpiffeWorkloadAPI`, on the same socket and with the same
//! admission: the `workload.spiffe.io: true` header (else `InvalidArgument`), the cache must be
//! ready (else `Unavailable`), the caller is attested from its kernel credentials into selectors,
//! and a caller entitled to no identity is refused with `PermissionDenied` `no identity issued`.
//!
//! - `Mint`: the caller's identity (`spiffe_id`, else its first) becomes the first actor of a
//!   token the issuer mints over the node API (`MintDelegation`).
//! - `Delegate`: the caller hands a token it holds to `next_actor`; the identity that holds it is
//!   `spiffe_id` if given (one of the caller's), else the caller's identity equal to the token's
//!   last actor, read from the token against the delegation keys the agent holds (with no keys
//!   yet, or a token signed by a key the agent does not know yet: the caller's first identity).
//!   The issuer verifies the token and checks the policy again in any case (`Delegate`).
//! - `FetchDelegationKeys`: the delegation keys and revocation list the agent keeps
//!   ([`DelegationStatus`], refreshed by the runtime whenever the issuer announces a new
//!   sequence): the current state at once (after waiting for the first one), then one message
//!   per change. `FailedPrecondition` when delegation is off at the issuer.
//!
//! The issuer's answers pass through with their code and message (`PermissionDenied` with the
//! policy's reason, `InvalidArgument`, `Unauthenticated` for an ID token or delegation token
//! that does not verify, `FailedPrecondition`); an issuer that cannot be reached gives
//! `Unavailable`. Tokens and ID tokens are bearer credentials: they are kept in zeroizing
//! strings and never logged.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream;
use signet_delegation::{Biscuit, DelegationKeys, RevocationList};
use signet_proto::delegation as pb;
use signet_proto::delegation::delegation_server::Delegation;
use signet_spiffe::SpiffeId;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument as _, Span};
use zeroize::Zeroizing;

use super::service::{ResultStream, admit, evaluate, log_refusal, next_wake};
use super::{NO_IDENTITY_ISSUED, WorkloadAttestation};
use crate::cache::{Cache, CachedSvid};
use crate::node_client::{DelegationHop, DelegationMint, DelegationToken};

/// Why the issuer did not mint or extend a delegation token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationFailure {
    /// The issuer answered with this status; it is passed on to the workload.
    #[error("the issuer answered {code:?}: {message}")]
    Issuer {
        /// The issuer's status code.
        code: Code,
        /// The issuer's status message (e.g. the policy's reason for a refusal).
        message: String,
    },
    /// The issuer cannot be reached: `Unavailable`, the workload may retry.
    #[error("the issuer is unavailable: {0}")]
    Unavailable(String),
}

impl DelegationFailure {
    /// The status the workload receives: the issuer's own, or `Unavailable`.
    pub fn to_status(&self) -> Status {
        match self {
            DelegationFailure::Issuer { code, message } => Status::new(*code, message.clone()),
            DelegationFailure::Unavailable(m) => {
                Status::unavailable(format!("cannot reach the issuer: {m}"))
            }
        }
    }
}

/// Mints and extends delegation tokens for entries the agent serves. The agent runtime
/// implements it over the node API; tests plug in their own.
#[async_trait]
pub trait DelegationIssuer: Send + Sync {
    /// `MintDelegation` on the node API.
    async fn mint_delegation(
        &self,
        request: DelegationMint,
    ) -> Result<DelegationToken, DelegationFailure>;

    /// `Delegate` on the node API.
    async fn delegate(&self, request: DelegationHop) -> Result<DelegationToken, DelegationFailure>;
}

/// The delegation keys and revocation list the agent holds, as the issuer published them.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegationSnapshot {
    /// The keys document (JSON), as received.
    pub keys_json: String,
    /// The revocation list document (JSON), as received.
    pub revocations_json: String,
    /// The issuer's sequence of this state.
    pub sequence: u64,
    /// The keys, parsed.
    pub keys: DelegationKeys,
    /// Number of revoked blocks.
    pub revoked: usize,
}

impl DelegationSnapshot {
    /// Checks and parses the issuer's documents.
    pub fn parse(
        keys_json: String,
        revocations_json: String,
        sequence: u64,
    ) -> Result<Self, String> {
        let keys = DelegationKeys::from_json(keys_json.as_bytes())?;
        let revocations = RevocationList::from_json(revocations_json.as_bytes())?;
        Ok(Self {
            keys_json,
            revocations_json,
            sequence,
            keys,
            revoked: revocations.revoked.len(),
        })
    }

    fn message(&self) -> pb::DelegationKeysResponse {
        pb::DelegationKeysResponse {
            keys_json: self.keys_json.clone(),
            revocations_json: self.revocations_json.clone(),
            sequence: self.sequence,
        }
    }
}

/// The agent's view of the issuer's delegation state, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum DelegationStatus {
    /// Not fetched yet.
    #[default]
    Unknown,
    /// Delegation is off at the issuer (or the issuer does not support it): why.
    Disabled(String),
    /// The current keys and revocations.
    Available(Arc<DelegationSnapshot>),
}

impl DelegationStatus {
    /// The sequence held: the state's, 0 when delegation is off, `None` before the first fetch.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            DelegationStatus::Unknown => None,
            DelegationStatus::Disabled(_) => Some(0),
            DelegationStatus::Available(s) => Some(s.sequence),
        }
    }
}

/// What the delegation service needs besides the cache and the attestor: the issuer, and the
/// state the runtime keeps.
#[derive(Clone)]
pub struct DelegationBackend {
    /// Mints and extends tokens.
    pub issuer: Arc<dyn DelegationIssuer>,
    /// The delegation state, kept up to date by the runtime.
    pub state: watch::Receiver<DelegationStatus>,
}

impl std::fmt::Debug for DelegationBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationBackend")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl DelegationBackend {
    /// A backend for an agent without delegation: every call is `FailedPrecondition`.
    pub fn disabled(reason: &str) -> Self {
        let (_tx, state) = watch::channel(DelegationStatus::Disabled(reason.to_owned()));
        Self {
            issuer: Arc::new(Disabled(reason.to_owned())),
            state,
        }
    }
}

struct Disabled(String);

#[async_trait]
impl DelegationIssuer for Disabled {
    async fn mint_delegation(
        &self,
        _request: DelegationMint,
    ) -> Result<DelegationToken, DelegationFailure> {
        Err(self.failure())
    }

    async fn delegate(
        &self,
        _request: DelegationHop,
    ) -> Result<DelegationToken, DelegationFailure> {
        Err(self.failure())
    }
}

impl Disabled {
    fn failure(&self) -> DelegationFailure {
        DelegationFailure::Issuer {
            code: Code::FailedPrecondition,
            message: self.0.clone(),
        }
    }
}

/// The `signet.delegation.v1.Delegation` gRPC service.
pub struct DelegationService {
    cache: Cache,
    attestor: Arc<dyn WorkloadAttestation>,
    backend: DelegationBackend,
    stop: watch::Receiver<bool>,
}

fn rpc_span(rpc: &'static str) -> Span {
    tracing::info_span!(
        "delegation",
        rpc,
        pid = tracing::field::Empty,
        uid = tracing::field::Empty
    )
}

fn parse_spiffe_id(field: &str, value: &str) -> Result<Option<SpiffeId>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    SpiffeId::parse(value)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("invalid {field}: {e}")))
        .inspect_err(log_refusal)
}

fn refuse(status: Status) -> Status {
    log_refusal(&status);
    status
}

/// Who holds a token, as far as the agent can tell.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// The token's last actor, read from a token whose signatures verify with the held keys.
    Known(String),
    /// No keys yet, or a root key the agent does not know (yet): the issuer decides.
    Unknown,
}

/// The holder of `token` according to `state` (`InvalidArgument` if the token is not a
/// delegation token or a signature fails with a key the agent holds).
fn holder_of(token: &str, state: &DelegationStatus) -> Result<Holder, Status> {
    let DelegationStatus::Available(state) = state else {
        return Ok(Holder::Unknown);
    };
    if state.keys.is_empty() {
        return Ok(Holder::Unknown);
    }
    let invalid = |e: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("invalid delegation token: {e}"))
    };
    let unverified = signet_delegation::parse_unverified(token).map_err(|e| invalid(&e))?;
    let Some(root) = state.keys.root_key(unverified.root_key_id()) else {
        tracing::debug!(
            root_key_id = ?unverified.root_key_id(),
            "the token's root key is not among the held delegation keys; the issuer decides"
        );
        return Ok(Holder::Unknown);
    };
    let token = Biscuit::from_base64(token.trim(), root).map_err(|e| invalid(&e))?;
    let chain = signet_delegation::read_chain(&token, &state.keys.public_keys())
        .map_err(|e| invalid(&e))?;
    Ok(Holder::Known(chain.holder().to_owned()))
}

fn token_message(t: &DelegationToken) -> pb::DelegationToken {
    pb::DelegationToken {
        token: t.token.to_string(),
        token_id: t.token_id.clone(),
        subject: t.subject.clone(),
        chain: t.chain.clone(),
        rights: t.rights.clone(),
        expires_at: t.expires_at,
        remaining_depth: t.remaining_depth,
    }
}

impl DelegationService {
    /// A service answering callers attested by `attestor` from `cache`, with `backend`. Open
    /// streams end (with `Unavailable`) once `stop` holds `true` or its sender is dropped.
    pub fn new(
        cache: Cache,
        attestor: Arc<dyn WorkloadAttestation>,
        backend: DelegationBackend,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cache,
            attestor,
            backend,
            stop,
        }
    }

    /// Admission, then the caller's identities now (`PermissionDenied` without any).
    async fn identities<T>(
        &self,
        request: &Request<T>,
        span: &Span,
    ) -> Result<(Vec<(String, String)>, Vec<Arc<CachedSvid>>), Status> {
        let selectors = admit(&self.cache, self.attestor.as_ref(), request, span).await?;
        let served = evaluate(&self.cache.current(), &selectors, SystemTime::now())
            .inspect_err(log_refusal)?;
        Ok((selectors, served.svids))
    }

    async fn mint(
        &self,
        request: Request<pb::MintRequest>,
        span: &Span,
    ) -> Result<pb::DelegationToken, Status> {
        let wanted = parse_spiffe_id("spiffe_id", &request.get_ref().spiffe_id)?;
        let (_, svids) = self.identities(&request, span).await?;
        let svid = pick(&svids, wanted.as_ref())?;
        let req = request.into_inner();
        let with_id_token = !req.id_token.is_empty();
        let mint = DelegationMint {
            entry_id: svid.entry_id.to_string(),
            id_token: Zeroizing::new(req.id_token),
            rights: req.rights,
            ttl_seconds: req.ttl_seconds,
            max_depth: req.max_depth,
        };
        let token = self
            .backend
            .issuer
            .mint_delegation(mint)
            .await
            .map_err(|e| issuer_refusal(&svid, &e))?;
        tracing::info!(
            actor = %svid.spiffe_id,
            subject = %token.subject,
            token_id = %token.token_id,
            user_subject = with_id_token,
            expires_at = token.expires_at,
            "delegation token minted"
        );
        Ok(token_message(&token))
    }

    async fn delegate(
        &self,
        request: Request<pb::DelegateRequest>,
        span: &Span,
    ) -> Result<pb::DelegationToken, Status> {
        let req = request.get_ref();
        let wanted = parse_spiffe_id("spiffe_id", &req.spiffe_id)?;
        if req.token.trim().is_empty() {
            return Err(refuse(Status::invalid_argument("token must be specified")));
        }
        if req.next_actor.is_empty() {
            return Err(refuse(Status::invalid_argument(
                "next_actor must be specified",
            )));
        }
        let (_, svids) = self.identities(&request, span).await?;
        let mut req = request.into_inner();
        let token = Zeroizing::new(std::mem::take(&mut req.token));
        let svid = match wanted {
            Some(w) => pick(&svids, Some(&w))?,
            None => {
                let state = self.backend.state.borrow().clone();
                let holder = holder_of(&token, &state).inspect_err(log_refusal)?;
                match holder {
                    Holder::Unknown => pick(&svids, None)?,
                    Holder::Known(h) => svids
                        .iter()
                        .find(|s| s.spiffe_id.to_string() == h)
                        .cloned()
                        .ok_or_else(|| {
                            refuse(Status::permission_denied(format!(
                                "the token is held by {h}, which is not an identity of this workload"
                            )))
                        })?,
                }
            }
        };
        let hop = DelegationHop {
            entry_id: svid.entry_id.to_string(),
            token,
            next_actor: req.next_actor,
            rights: req.rights,
            ttl_seconds: req.ttl_seconds,
        };
        let next_actor = hop.next_actor.clone();
        let token = self
            .backend
            .issuer
            .delegate(hop)
            .await
            .map_err(|e| issuer_refusal(&svid, &e))?;
        tracing::info!(
            holder = %svid.spiffe_id,
            next_actor = %next_actor,
            subject = %token.subject,
            token_id = %token.token_id,
            depth = token.chain.len().saturating_sub(1),
            "delegation token delegated"
        );
        Ok(token_message(&token))
    }

    /// `FetchDelegationKeys`: admission, the first state (waited for), then the updates.
    async fn keys_stream(
        &self,
        request: Request<pb::FetchDelegationKeysRequest>,
        span: Span,
    ) -> Result<ResultStream<pb::DelegationKeysResponse>, Status> {
        let (selectors, svids) = self.identities(&request, &span).await?;
        let mut w = KeysWatcher {
            state: self.backend.state.clone(),
            cache: self.cache.subscribe(),
            stop: self.stop.clone(),
            selectors,
            next_wake: next_wake(&svids, SystemTime::now()),
            last_sequence: None,
            done: false,
            span,
        };
        w.cache.borrow_and_update();
        let current = w.state.borrow_and_update().clone();
        let first = match current {
            DelegationStatus::Available(s) => s,
            DelegationStatus::Disabled(m) => {
                return Err(refuse(disabled_status(&m)));
            }
            DelegationStatus::Unknown => {
                tracing::debug!("waiting for the first delegation state");
                match w.next().await {
                    Some(Ok(s)) => s,
                    Some(Err(status)) => return Err(status),
                    None => return Err(Status::unavailable("the agent is shutting down")),
                }
            }
        };
        w.last_sequence = Some(first.sequence);
        tracing::debug!(sequence = first.sequence, "sending the delegation state");
        let first = first.message();
        let updates = stream::unfold(w, |mut w| async move {
            let span = w.span.clone();
            let next = w.next().instrument(span).await?;
            Some((next.map(|s| s.message()), w))
        });
        Ok(stream::once(async move { Ok(first) })
            .chain(updates)
            .boxed())
    }
}

fn disabled_status(reason: &str) -> Status {
    Status::failed_precondition(format!(
        "delegation is not available at the issuer: {reason}"
    ))
}

/// The caller's identity to act with: `wanted` (one of `svids`), else the first.
fn pick(svids: &[Arc<CachedSvid>], wanted: Option<&SpiffeId>) -> Result<Arc<CachedSvid>, Status> {
    svids
        .iter()
        .find(|s| wanted.is_none_or(|w| *w == s.spiffe_id))
        .cloned()
        .ok_or_else(|| refuse(Status::permission_denied(NO_IDENTITY_ISSUED)))
}

fn issuer_refusal(svid: &CachedSvid, e: &DelegationFailure) -> Status {
    let status = e.to_status();
    match e {
        DelegationFailure::Issuer { .. } => tracing::info!(
            entry_id = %svid.entry_id,
            code = ?status.code(),
            message = status.message(),
            "the issuer refused"
        ),
        DelegationFailure::Unavailable(_) => {
            tracing::warn!(entry_id = %svid.entry_id, error = %e, "cannot reach the issuer")
        }
    }
    status
}

/// One open `FetchDelegationKeys` stream.
struct KeysWatcher {
    state: watch::Receiver<DelegationStatus>,
    cache: watch::Receiver<Arc<crate::cache::Snapshot>>,
    stop: watch::Receiver<bool>,
    selectors: Vec<(String, String)>,
    next_wake: Instant,
    last_sequence: Option<u64>,
    done: bool,
    span: Span,
}

impl KeysWatcher {
    /// The next state to send, or the status that ends the stream (`None` after it).
    async fn next(&mut self) -> Option<Result<Arc<DelegationSnapshot>, Status>> {
        loop {
            if self.done {
                return None;
            }
            let end = tokio::select! {
                biased;
                () = async { drop(self.stop.wait_for(|stop| *stop).await) } => {
                    tracing::debug!("stream closed: the agent is shutting down");
                    Some(Status::unavailable("the agent is shutting down"))
                }
                changed = self.state.changed() => match changed {
                    Ok(()) => match self.state.borrow_and_update().clone() {
                        DelegationStatus::Available(s) if Some(s.sequence) != self.last_sequence => {
                            self.last_sequence = Some(s.sequence);
                            tracing::debug!(sequence = s.sequence, "sending a delegation state update");
                            return Some(Ok(s));
                        }
                        DelegationStatus::Available(_) | DelegationStatus::Unknown => None,
                        DelegationStatus::Disabled(m) => Some(disabled_status(&m)),
                    },
                    Err(_) => Some(Status::unavailable("the agent's delegation state is gone")),
                },
                changed = self.cache.changed() => match changed {
                    Ok(()) => self.identity_lost(),
                    Err(_) => Some(Status::unavailable("the agent's cache is gone")),
                },
                () = tokio::time::sleep_until(self.next_wake) => self.identity_lost(),
            };
            if let Some(status) = end {
                log_refusal(&status);
                self.done = true;
                return Some(Err(status));
            }
        }
    }

    /// Re-evaluates the caller's identities: the status that ends the stream if it has none.
    fn identity_lost(&mut self) -> Option<Status> {
        let snapshot = self.cache.borrow_and_update().clone();
        let now = SystemTime::now();
        match evaluate(&snapshot, &self.selectors, now) {
            Ok(served) => {
                self.next_wake = next_wake(&served.svids, now);
                None
            }
            Err(status) => Some(status),
        }
    }
}

#[tonic::async_trait]
impl Delegation for DelegationService {
    type FetchDelegationKeysStream = ResultStream<pb::DelegationKeysResponse>;

    async fn mint(
        &self,
        request: Request<pb::MintRequest>,
    ) -> Result<Response<pb::DelegationToken>, Status> {
        let span = rpc_span("Mint");
        DelegationService::mint(self, request, &span)
            .instrument(span.clone())
            .await
            .map(Response::new)
    }

    async fn delegate(
        &self,
        request: Request<pb::DelegateRequest>,
    ) -> Result<Response<pb::DelegationToken>, Status> {
        let span = rpc_span("Delegate");
        DelegationService::delegate(self, request, &span)
            .instrument(span.clone())
            .await
            .map(Response::new)
    }

    async fn fetch_delegation_keys(
        &self,
        request: Request<pb::FetchDelegationKeysRequest>,
    ) -> Result<Response<Self::FetchDelegationKeysStream>, Status> {
        let span = rpc_span("FetchDelegationKeys");
        self.keys_stream(request, span.clone())
            .instrument(span)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;
    use std::time::Duration;

    use signet_delegation::{KeyPair, MintRequest, Subject, SubjectKind};
    use signet_proto::delegation::delegation_client::DelegationClient;
    use tokio::net::UnixListener;
    use tonic::transport::Channel;

    use super::super::jwt::testing::NoIssuer;
    use super::super::{AttestationFailure, MISSING_HEADER, PeerCred, serve};
    use super::*;
    use crate::cache::testing::{bundle, ca, svid};
    use crate::cli::client::{WorkloadEndpoint, request};

    const TD: &str = "example.org";
    /// A guard against a hung test, not a timed assertion.
    const GUARD: Duration = Duration::from_secs(30);

    /// `unix:uid:<uid>` of any caller.
    struct ByUid;

    #[async_trait]
    impl WorkloadAttestation for ByUid {
        async fn attest(
            &self,
            peer: PeerCred,
        ) -> Result<Vec<(String, String)>, AttestationFailure> {
            Ok(vec![("unix".into(), format!("uid:{}", peer.uid))])
        }
    }

    #[derive(Debug, Clone)]
    enum Call {
        Mint(DelegationMint),
        Delegate(DelegationHop),
    }

    /// Records the calls; answers with `failure` if set, else a token for the entry.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<Call>>,
        failure: Mutex<Option<DelegationFailure>>,
    }

    impl Recorder {
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        fn answer(&self, entry_id: &str) -> Result<DelegationToken, DelegationFailure> {
            if let Some(f) = self.failure.lock().unwrap().clone() {
                return Err(f);
            }
            Ok(DelegationToken {
                token: Zeroizing::new(format!("token-for-{entry_id}")),
                token_id: "t1".into(),
                subject: "s".into(),
                chain: vec![entry_id.into()],
                rights: vec!["r".into()],
                expires_at: 10,
                remaining_depth: 1,
            })
        }
    }

    #[async_trait]
    impl DelegationIssuer for Recorder {
        async fn mint_delegation(
            &self,
            request: DelegationMint,
        ) -> Result<DelegationToken, DelegationFailure> {
            let entry = request.entry_id.clone();
            self.calls.lock().unwrap().push(Call::Mint(request));
            self.answer(&entry)
        }

        async fn delegate(
            &self,
            request: DelegationHop,
        ) -> Result<DelegationToken, DelegationFailure> {
            let entry = request.entry_id.clone();
            self.calls.lock().unwrap().push(Call::Delegate(request));
            self.answer(&entry)
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        endpoint: WorkloadEndpoint,
        recorder: Arc<Recorder>,
        state: watch::Sender<DelegationStatus>,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    impl Fixture {
        /// An agent socket whose cache has `/a` (entry `ea`) and `/b` (`eb`) for `uid` (this
        /// process's, or another one).
        fn start(mine: bool) -> Self {
            use std::os::unix::fs::MetadataExt as _;
            let uid = std::fs::metadata("/proc/self").unwrap().uid();
            let uid = if mine { uid } else { uid.wrapping_add(1) };
            let sel = format!("unix:uid:{uid}");
            let own = ca(TD);
            let cache = Cache::new();
            cache
                .replace(
                    vec![
                        svid(&own, "ea", "/a", &[&sel], ""),
                        svid(&own, "eb", "/b", &[&sel], ""),
                    ],
                    Some(bundle(&own)),
                    BTreeMap::new(),
                )
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("api.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let recorder = Arc::new(Recorder::default());
            let (state, rx) = watch::channel(DelegationStatus::Unknown);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(serve(
                listener,
                cache,
                Arc::new(ByUid),
                Arc::new(NoIssuer),
                DelegationBackend {
                    issuer: recorder.clone(),
                    state: rx,
                },
                async move {
                    let _ = stopped.await;
                },
            ));
            Self {
                _dir: dir,
                endpoint: WorkloadEndpoint::Unix(socket),
                recorder,
                state,
                _stop: stop,
            }
        }

        async fn client(&self) -> DelegationClient<Channel> {
            self.endpoint.connect_delegation().await.unwrap()
        }

        async fn mint(&self, spiffe_id: &str) -> Result<pb::DelegationToken, Status> {
            let req = pb::MintRequest {
                spiffe_id: spiffe_id.into(),
                id_token: "id.token.here".into(),
                rights: vec!["x:read".into()],
                ttl_seconds: 60,
                max_depth: 2,
            };
            timeout(self.client().await.mint(request(req)))
                .await
                .map(Response::into_inner)
        }

        async fn delegate(
            &self,
            spiffe_id: &str,
            token: &str,
        ) -> Result<pb::DelegationToken, Status> {
            let req = pb::DelegateRequest {
                spiffe_id: spiffe_id.into(),
                token: token.into(),
                next_actor: "spiffe://example.org/next".into(),
                rights: vec!["x:read".into()],
                ttl_seconds: 30,
            };
            timeout(self.client().await.delegate(request(req)))
                .await
                .map(Response::into_inner)
        }

        async fn keys(&self) -> Result<tonic::Streaming<pb::DelegationKeysResponse>, Status> {
            let req = request(pb::FetchDelegationKeysRequest {});
            timeout(self.client().await.fetch_delegation_keys(req))
                .await
                .map(Response::into_inner)
        }
    }

    async fn timeout<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(GUARD, f)
            .await
            .unwrap_or_else(|_| panic!("the call hung"))
    }

    fn keys_state(keys: &[(u32, &KeyPair)], sequence: u64) -> DelegationStatus {
        let keys = DelegationKeys::from_keys(keys.iter().map(|(id, k)| (*id, k.public())));
        DelegationStatus::Available(Arc::new(
            DelegationSnapshot::parse(
                keys.to_json(),
                format!("{{\"revoked\":[],\"sequence\":{sequence}}}"),
                sequence,
            )
            .unwrap(),
        ))
    }

    /// A token minted by `root` (id `root_id`) whose holder is `actor`.
    fn token(root: &KeyPair, root_id: u32, actor: &str) -> String {
        let now = SystemTime::now();
        signet_delegation::mint(
            root,
            root_id,
            &MintRequest {
                token_id: "t0".into(),
                subject: Subject {
                    id: "https://idp#alice".into(),
                    kind: SubjectKind::User,
                    issuer: "https://idp".into(),
                    name: String::new(),
                },
                actor: SpiffeId::parse(actor).unwrap(),
                rights: BTreeSet::from(["x:read".to_owned()]),
                issued_at: now,
                expires_at: now + Duration::from_secs(300),
                max_depth: 2,
            },
        )
        .unwrap()
        .to_base64()
        .unwrap()
    }

    fn delegated_entry(call: &Call) -> &str {
        match call {
            Call::Delegate(h) => &h.entry_id,
            Call::Mint(m) => panic!("a mint: {m:?}"),
        }
    }

    #[tokio::test]
    async fn calls_without_the_security_header_are_invalid_argument() {
        let f = Fixture::start(true);
        let mut c = f.client().await;
        let mint = c.mint(pb::MintRequest::default()).await.unwrap_err();
        let delegate = c
            .delegate(pb::DelegateRequest {
                token: "t".into(),
                next_actor: "spiffe://example.org/x".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let keys = c
            .fetch_delegation_keys(pb::FetchDelegationKeysRequest {})
            .await
            .unwrap_err();
        for status in [mint, delegate, keys] {
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(status.message(), MISSING_HEADER);
        }
        // A wrong value is no better.
        let mut r = tonic::Request::new(pb::MintRequest::default());
        r.metadata_mut()
            .insert(super::super::SECURITY_HEADER, "yes".parse().unwrap());
        assert_eq!(c.mint(r).await.unwrap_err().code(), Code::InvalidArgument);
        assert!(f.recorder.calls().is_empty());
    }

    #[tokio::test]
    async fn a_caller_without_an_identity_is_permission_denied() {
        let f = Fixture::start(false);
        f.state
            .send_replace(DelegationStatus::Disabled("off".into()));
        let mint = f.mint("").await.unwrap_err();
        let delegate = f.delegate("", "t").await.unwrap_err();
        let keys = f.keys().await.unwrap_err();
        for status in [mint, delegate, keys] {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert_eq!(status.message(), NO_IDENTITY_ISSUED);
        }
        assert!(f.recorder.calls().is_empty());
    }

    #[tokio::test]
    async fn mint_acts_as_the_first_identity_or_the_one_asked_for() {
        let f = Fixture::start(true);
        let first = f.mint("").await.unwrap();
        assert_eq!(first.token, "token-for-ea");
        assert_eq!(first.chain, ["ea"]);
        let b = f.mint("spiffe://example.org/b").await.unwrap();
        assert_eq!(b.token, "token-for-eb");
        let calls = f.recorder.calls();
        let Call::Mint(m) = &calls[0] else {
            panic!("{calls:?}")
        };
        // The request is passed on as given.
        assert_eq!(m.entry_id, "ea");
        assert_eq!(m.id_token.as_str(), "id.token.here");
        assert_eq!(
            (m.rights.as_slice(), m.ttl_seconds, m.max_depth),
            (&["x:read".to_owned()][..], 60, 2)
        );
        // An identity the caller does not have, and an invalid one.
        let other = f.mint("spiffe://example.org/c").await.unwrap_err();
        assert_eq!(other.code(), Code::PermissionDenied);
        assert_eq!(other.message(), NO_IDENTITY_ISSUED);
        assert_eq!(
            f.mint("not an id").await.unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(f.recorder.calls().len(), 2);
    }

    #[tokio::test]
    async fn delegate_acts_as_the_tokens_holder() {
        let f = Fixture::start(true);
        let root = KeyPair::new();
        let held_by_b = token(&root, 1, "spiffe://example.org/b");
        // No keys yet: the first identity (the issuer checks the holder).
        f.delegate("", &held_by_b).await.unwrap();
        // With the keys: the holder.
        f.state.send_replace(keys_state(&[(1, &root)], 3));
        let r = f.delegate("", &held_by_b).await.unwrap();
        assert_eq!(r.token, "token-for-eb");
        // Asked for explicitly.
        f.delegate("spiffe://example.org/a", &held_by_b)
            .await
            .unwrap();
        let calls = f.recorder.calls();
        let entries: Vec<&str> = calls.iter().map(delegated_entry).collect();
        assert_eq!(entries, ["ea", "eb", "ea"]);
        let Call::Delegate(hop) = &calls[1] else {
            unreachable!()
        };
        assert_eq!(hop.token.as_str(), held_by_b);
        assert_eq!(hop.next_actor, "spiffe://example.org/next");
        assert_eq!(
            (hop.rights.as_slice(), hop.ttl_seconds),
            (&["x:read".to_owned()][..], 30)
        );

        // Held by a workload that is not the caller: refused here.
        let held_by_c = token(&root, 1, "spiffe://example.org/c");
        let status = f.delegate("", &held_by_c).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("spiffe://example.org/c"),
            "{status:?}"
        );
        // Signed by a key the agent does not know (yet): the first identity, the issuer decides.
        let newer = KeyPair::new();
        f.delegate("", &token(&newer, 2, "spiffe://example.org/b"))
            .await
            .unwrap();
        // A forged token (known key id, wrong key) and garbage are invalid.
        let forged = token(&newer, 1, "spiffe://example.org/b");
        for bad in [forged.as_str(), "garbage"] {
            let status = f.delegate("", bad).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
        assert_eq!(
            f.delegate("", " ").await.unwrap_err().code(),
            Code::InvalidArgument
        );
        let entries: Vec<String> = f
            .recorder
            .calls()
            .iter()
            .map(|c| delegated_entry(c).to_owned())
            .collect();
        assert_eq!(entries, ["ea", "eb", "ea", "ea"]);
    }

    #[tokio::test]
    async fn the_issuers_status_is_passed_on() {
        let f = Fixture::start(true);
        for (failure, code, message) in [
            (
                DelegationFailure::Issuer {
                    code: Code::PermissionDenied,
                    message: "policy planner.datalog: no rule allows".into(),
                },
                Code::PermissionDenied,
                "policy planner.datalog: no rule allows",
            ),
            (
                DelegationFailure::Issuer {
                    code: Code::FailedPrecondition,
                    message: "delegation is not configured".into(),
                },
                Code::FailedPrecondition,
                "delegation is not configured",
            ),
            (
                DelegationFailure::Issuer {
                    code: Code::InvalidArgument,
                    message: "bad ID token".into(),
                },
                Code::InvalidArgument,
                "bad ID token",
            ),
            (
                DelegationFailure::Unavailable("connection refused".into()),
                Code::Unavailable,
                "cannot reach the issuer: connection refused",
            ),
        ] {
            *f.recorder.failure.lock().unwrap() = Some(failure);
            for status in [
                f.mint("").await.unwrap_err(),
                f.delegate("", "t").await.unwrap_err(),
            ] {
                assert_eq!(status.code(), code);
                assert_eq!(status.message(), message);
            }
        }
    }

    #[tokio::test]
    async fn the_keys_stream_waits_for_the_state_then_follows_it() {
        let f = Fixture::start(true);
        let root = KeyPair::new();
        let opening = {
            let endpoint = f.endpoint.clone();
            tokio::spawn(async move {
                let mut c = endpoint.connect_delegation().await.unwrap();
                c.fetch_delegation_keys(request(pb::FetchDelegationKeysRequest {}))
                    .await
                    .map(Response::into_inner)
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!opening.is_finished(), "answered without a state");
        f.state.send_replace(keys_state(&[(1, &root)], 1));
        let mut stream = timeout(opening).await.unwrap().unwrap();
        let first = timeout(stream.message()).await.unwrap().unwrap();
        assert_eq!(first.sequence, 1);
        assert!(DelegationKeys::from_json(first.keys_json.as_bytes()).is_ok());
        // The same sequence again is not resent; a new one is.
        f.state.send_replace(keys_state(&[(1, &root)], 1));
        f.state.send_replace(keys_state(&[(1, &root)], 2));
        let second = timeout(stream.message()).await.unwrap().unwrap();
        assert_eq!(second.sequence, 2);
        // Delegation turned off: the stream ends.
        f.state.send_replace(DelegationStatus::Disabled(
            "delegation is not configured".into(),
        ));
        let end = timeout(stream.message()).await.unwrap_err();
        assert_eq!(end.code(), Code::FailedPrecondition);
        assert!(end.message().contains("delegation is not configured"));
        // And a new stream is refused at once.
        assert_eq!(f.keys().await.unwrap_err().code(), Code::FailedPrecondition);
    }
}
