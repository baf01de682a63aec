//! The `SpiffeWorkloadAPI` service implementation: admission (header, readiness, attestation),
//! rendering of the standard's messages from a [`Snapshot`], and the update streams.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use futures::stream::{self, BoxStream};
use signet_proto::workload as pb;
use signet_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use signet_spiffe::Bundle;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, Span};
use zeroize::Zeroize as _;

use super::jwt::{self, JwtSvidCache, VALIDATION_LEEWAY};
use super::wit::{self, WitSvidCache};
use super::{
    IssuerFailure, MISSING_HEADER, NO_IDENTITY_ISSUED, PeerCred, ProcessPin, SECURITY_HEADER,
    SvidIssuer, WorkloadAttestation, WorkloadConnectInfo,
};
use crate::cache::{Cache, CachedSvid, Snapshot};

/// How long a stream sleeps when nothing it serves can expire (it re-checks, finds nothing new
/// and sleeps again; changes wake it immediately anyway).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Message of `Unavailable` while the cache is not ready.
const NOT_READY: &str = "the agent is not ready to serve identities yet";

pub(super) type ResultStream<M> = BoxStream<'static, Result<M, Status>>;

/// The `SpiffeWorkloadAPI` gRPC service, for mounting on a tonic server next to other services
/// ([`super::serve`] does it for the common case).
pub struct WorkloadApiService {
    cache: Cache,
    attestor: Arc<dyn WorkloadAttestation>,
    issuer: Arc<dyn SvidIssuer>,
    jwt: Arc<JwtSvidCache>,
    wit: Arc<WitSvidCache>,
    stop: watch::Receiver<bool>,
}

impl WorkloadApiService {
    /// A service answering from `cache`, attesting callers with `attestor` and having `issuer`
    /// mint JWT-SVIDs. Open streams end (with `Unavailable`) once `stop` holds `true` or its
    /// sender is dropped.
    pub fn new(
        cache: Cache,
        attestor: Arc<dyn WorkloadAttestation>,
        issuer: Arc<dyn SvidIssuer>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cache,
            attestor,
            issuer,
            jwt: Arc::new(jwt::new_cache()),
            wit: Arc::new(wit::new_cache()),
            stop,
        }
    }

    /// `FetchJWTSVID`: one token per identity of the caller (or the one asked for), for the
    /// requested audiences.
    async fn jwt_svids(
        &self,
        request: Request<pb::JwtsvidRequest>,
        span: &Span,
    ) -> Result<pb::JwtsvidResponse, Status> {
        check_header(request.metadata())?;
        let audience = jwt::normalize_audience(&request.get_ref().audience)
            .map_err(Status::invalid_argument)
            .inspect_err(log_refusal)?;
        let wanted = match request.get_ref().spiffe_id.as_str() {
            "" => None,
            id => Some(
                signet_spiffe::SpiffeId::parse(id)
                    .map_err(|e| Status::invalid_argument(format!("invalid spiffe_id: {e}")))
                    .inspect_err(log_refusal)?,
            ),
        };
        let selectors = self.admit(&request, span).await?;
        let snapshot = self.cache.current();
        let served = evaluate(&snapshot, &selectors, SystemTime::now()).inspect_err(log_refusal)?;
        let svids: Vec<&Arc<CachedSvid>> = served
            .svids
            .iter()
            .filter(|s| wanted.as_ref().is_none_or(|w| *w == s.spiffe_id))
            .collect();
        if svids.is_empty() {
            let status = Status::permission_denied(NO_IDENTITY_ISSUED);
            log_refusal(&status);
            return Err(status);
        }
        let minted = futures::future::join_all(
            svids
                .iter()
                .map(|s| jwt::jwt_svid_for(&self.jwt, self.issuer.as_ref(), s, &audience)),
        )
        .await;
        let mut out = Vec::with_capacity(svids.len());
        for (svid, token) in svids.into_iter().zip(minted) {
            let token = token.map_err(|e| {
                tracing::warn!(entry_id = %svid.entry_id, error = %e, "cannot mint a JWT-SVID");
                match e {
                    IssuerFailure::Refused(m) => Status::permission_denied(m),
                    IssuerFailure::Unavailable(m) => {
                        Status::unavailable(format!("cannot mint the JWT-SVID: {m}"))
                    }
                }
            })?;
            out.push(pb::Jwtsvid {
                spiffe_id: svid.spiffe_id.to_string(),
                svid: token.token.to_string(),
                hint: svid.hint.to_string(),
            });
        }
        tracing::debug!(svids = out.len(), "JWT-SVIDs served");
        Ok(pb::JwtsvidResponse { svids: out })
    }

    /// `ValidateJWTSVID`: the token checked against the own bundle and the bundles the caller's
    /// entries federate with.
    async fn validate_jwt(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
        span: &Span,
    ) -> Result<pb::ValidateJwtsvidResponse, Status> {
        check_header(request.metadata())?;
        let req = request.get_ref();
        let missing = if req.audience.is_empty() {
            Some("audience must be specified")
        } else if req.svid.is_empty() {
            Some("svid must be specified")
        } else {
            None
        };
        if let Some(m) = missing {
            let status = Status::invalid_argument(m);
            log_refusal(&status);
            return Err(status);
        }
        let selectors = self.admit(&request, span).await?;
        let snapshot = self.cache.current();
        let Some(own) = snapshot.bundle.as_ref().filter(|_| snapshot.is_ready()) else {
            return Err(Status::unavailable(NOT_READY));
        };
        let now = SystemTime::now();
        let svids = snapshot.svids_for_at(&selectors, now);
        let federated = snapshot.federated_for(&svids);
        let req = request.into_inner();
        let validated = signet_spiffe::jwt::validate_jwt_svid(
            &req.svid,
            &req.audience,
            |td| {
                if *td == own.trust_domain {
                    Some(own.clone())
                } else {
                    federated.get(td).map(|b| Arc::clone(b))
                }
            },
            now,
            VALIDATION_LEEWAY,
        )
        .map_err(|e| {
            tracing::info!(error = %e, audience = %req.audience, "JWT-SVID refused");
            Status::invalid_argument(format!("invalid JWT-SVID: {e}"))
        })?;
        tracing::debug!(spiffe_id = %validated.spiffe_id, "JWT-SVID validated");
        Ok(pb::ValidateJwtsvidResponse {
            spiffe_id: validated.spiffe_id.to_string(),
            claims: Some(jwt::json_object_to_struct(&validated.claims)),
        })
    }

    /// Checks the header, the readiness and attests the caller; returns its selectors.
    async fn admit<T>(
        &self,
        request: &Request<T>,
        span: &Span,
    ) -> Result<Vec<(String, String)>, Status> {
        admit(&self.cache, self.attestor.as_ref(), request, span).await
    }

    /// `FetchWITSVID`: admission, the first message (WIT-SVIDs minted if need be), then one
    /// message per change of what the caller is served, WIT-SVIDs renewed at half-life.
    async fn wit_stream(
        &self,
        request: Request<()>,
        span: Span,
    ) -> Result<ResultStream<pb::WitsvidResponse>, Status> {
        let selectors = self.admit(&request, &span).await?;
        let mut w = WitWatcher {
            rx: self.cache.subscribe(),
            stop: self.stop.clone(),
            selectors,
            issuer: self.issuer.clone(),
            wits: self.wit.clone(),
            last_sent: None,
            next_wake: Instant::now(),
            done: false,
            span,
        };
        let first = w.answer().await.inspect_err(log_refusal)?;
        tracing::debug!(svids = first.svids.len(), "sending the first message");
        w.last_sent = Some(Sent(first.clone()));
        let updates = stream::unfold(w, |w| {
            let span = w.span.clone();
            next_wit_update(w).instrument(span)
        });
        Ok(stream::once(async move { Ok(first) })
            .chain(updates)
            .boxed())
    }

    /// A streaming RPC rendered from the cache ([`Message`]), in its span.
    async fn stream_rpc<M: Message, R>(
        &self,
        rpc: &'static str,
        request: Request<R>,
    ) -> Result<Response<ResultStream<M>>, Status> {
        let span = rpc_span(rpc);
        self.open_stream(request.map(|_| ()), span.clone())
            .instrument(span)
            .await
    }

    /// Admission, first message and update stream of one streaming RPC.
    async fn open_stream<M: Message>(
        &self,
        request: Request<()>,
        span: Span,
    ) -> Result<Response<ResultStream<M>>, Status> {
        let selectors = self.admit(&request, &span).await?;
        let stream = self.stream_for(selectors, span)?;
        Ok(Response::new(stream))
    }

    /// The stream served to a workload with `selectors`: its first message at once, then one per
    /// change of what it is served; or the status refusing it.
    fn stream_for<M: Message>(
        &self,
        selectors: Vec<(String, String)>,
        span: Span,
    ) -> Result<ResultStream<M>, Status> {
        let mut rx = self.cache.subscribe();
        let snapshot = rx.borrow_and_update().clone();
        let now = SystemTime::now();
        let served = evaluate(&snapshot, &selectors, now).inspect_err(log_refusal)?;
        let first = M::render(&snapshot, &served.svids);
        tracing::debug!(
            svids = served.svids.len(),
            generation = snapshot.generation,
            "sending the first message"
        );
        let watcher = Watcher {
            rx,
            stop: self.stop.clone(),
            selectors,
            next_wake: next_wake(&served.svids, now),
            last_served: served,
            last_sent: Sent(first.clone()),
            done: false,
            span,
        };
        let updates = stream::unfold(watcher, |w| {
            let span = w.span.clone();
            next_update(w).instrument(span)
        });
        Ok(stream::once(async move { Ok(first) })
            .chain(updates)
            .boxed())
    }
}

/// Admission of a call on the agent socket (the Workload API and the delegation service):
/// checks the security header and the readiness, then attests the caller from its kernel
/// credentials; returns its selectors. Records the caller's PID and UID in `span`.
pub(super) async fn admit<T>(
    cache: &Cache,
    attestor: &dyn WorkloadAttestation,
    request: &Request<T>,
    span: &Span,
) -> Result<Vec<(String, String)>, Status> {
    check_header(request.metadata())?;
    let peer = peer_cred(request)?;
    span.record("pid", peer.pid);
    span.record("uid", peer.uid);
    let pid = peer.pid;
    if !cache.current().is_ready() {
        tracing::info!("refused: {NOT_READY}");
        return Err(Status::unavailable(NOT_READY));
    }
    let selectors = attestor.attest(peer).await.map_err(|e| {
        tracing::warn!(pid, error = %e, "workload attestation failed");
        Status::unavailable(format!("workload attestation failed: {e}"))
    })?;
    tracing::debug!(?selectors, "workload attested");
    Ok(selectors)
}

fn rpc_span(rpc: &'static str) -> Span {
    tracing::info_span!(
        "workload_api",
        rpc,
        pid = tracing::field::Empty,
        uid = tracing::field::Empty
    )
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApiService {
    type FetchX509SVIDStream = ResultStream<pb::X509svidResponse>;
    type FetchX509BundlesStream = ResultStream<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = ResultStream<pb::JwtBundlesResponse>;
    type FetchWITSVIDStream = ResultStream<pb::WitsvidResponse>;
    type FetchWITBundlesStream = ResultStream<pb::WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.stream_rpc("FetchX509SVID", request).await
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.stream_rpc("FetchX509Bundles", request).await
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let span = rpc_span("FetchJWTSVID");
        self.jwt_svids(request, &span)
            .instrument(span.clone())
            .await
            .map(Response::new)
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.stream_rpc("FetchJWTBundles", request).await
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        let span = rpc_span("ValidateJWTSVID");
        self.validate_jwt(request, &span)
            .instrument(span.clone())
            .await
            .map(Response::new)
    }

    async fn fetch_witsvid(
        &self,
        request: Request<pb::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        let span = rpc_span("FetchWITSVID");
        let request = request.map(|_| ());
        self.wit_stream(request, span.clone())
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn fetch_wit_bundles(
        &self,
        request: Request<pb::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        self.stream_rpc("FetchWITBundles", request).await
    }
}

/// The security header must be present exactly once, with the value `true`.
pub(super) fn check_header(metadata: &MetadataMap) -> Result<(), Status> {
    let mut values = metadata.get_all(SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if v.as_bytes() == b"true" => Ok(()),
        _ => {
            tracing::info!("refused: {MISSING_HEADER}");
            Err(Status::invalid_argument(MISSING_HEADER))
        }
    }
}

/// The caller's credentials, as the kernel gave them when it connected, and its pinned process.
fn peer_cred<T>(request: &Request<T>) -> Result<PeerCred, Status> {
    let (uds, pin) = match request.extensions().get::<WorkloadConnectInfo>() {
        Some(info) => (Some(&info.uds), info.pin.clone()),
        None => (
            request.extensions().get::<UdsConnectInfo>(),
            ProcessPin::NotPinned,
        ),
    };
    let cred = uds
        .and_then(|info| info.peer_cred)
        .ok_or_else(|| Status::unavailable("cannot identify the caller: no peer credentials"))?;
    let pid = cred
        .pid()
        .ok_or_else(|| Status::unavailable("cannot identify the caller: no peer PID"))?;
    Ok(PeerCred {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        pin,
    })
}

pub(super) fn log_refusal(status: &Status) {
    tracing::info!(code = ?status.code(), message = status.message(), "refused");
}

/// What one caller is served at one generation: kept alive (by `Arc`) so that comparing by
/// pointer is sound.
pub(super) struct Served {
    pub(super) svids: Vec<Arc<CachedSvid>>,
    bundles: Vec<Arc<Bundle>>,
}

impl Served {
    /// Same SVIDs and bundles (by identity: content changes always come with new `Arc`s).
    fn same_as(&self, other: &Served) -> bool {
        self.svids.len() == other.svids.len()
            && self.bundles.len() == other.bundles.len()
            && self
                .svids
                .iter()
                .zip(&other.svids)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self
                .bundles
                .iter()
                .zip(&other.bundles)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// What `selectors` are entitled to in `snapshot` at `now`, or the status that ends the call.
pub(super) fn evaluate(
    snapshot: &Snapshot,
    selectors: &[(String, String)],
    now: SystemTime,
) -> Result<Served, Status> {
    let Some(own) = snapshot.bundle.as_ref().filter(|_| snapshot.is_ready()) else {
        return Err(Status::unavailable(NOT_READY));
    };
    let mut svids = snapshot.svids_for_at(selectors, now);
    // An SVID is only servable with the bundle of its own trust domain.
    svids.retain(|s| snapshot.bundle_for(s.spiffe_id.trust_domain()).is_some());
    if svids.is_empty() {
        return Err(Status::permission_denied(NO_IDENTITY_ISSUED));
    }
    let mut bundles = vec![own.clone()];
    for svid in &svids {
        if let Some(b) = snapshot.bundle_for(svid.spiffe_id.trust_domain())
            && !bundles.iter().any(|x| Arc::ptr_eq(x, b))
        {
            bundles.push(b.clone());
        }
    }
    bundles.extend(snapshot.federated_for(&svids).into_values().cloned());
    Ok(Served { svids, bundles })
}

/// When the served state changes by itself: the first expiry among the served SVIDs.
pub(super) fn next_wake(svids: &[Arc<CachedSvid>], now: SystemTime) -> Instant {
    let wait = svids
        .iter()
        .filter_map(|s| s.expires_at.duration_since(now).ok())
        .min()
        .unwrap_or(IDLE_WAKE);
    // 1 ms past the expiry, so that the SVID is expired when re-evaluated.
    Instant::now() + wait.min(IDLE_WAKE) + Duration::from_millis(1)
}

/// A Workload API stream message rendered from a snapshot.
trait Message: Clone + PartialEq + Send + Sync + 'static {
    /// The message for a caller served `svids` (non-empty, in default order).
    fn render(snapshot: &Snapshot, svids: &[Arc<CachedSvid>]) -> Self;
    /// Wipes secrets held by a copy kept for comparison.
    fn scrub(&mut self) {}
}

/// The authorities of a bundle as the Workload API wants them: concatenated DER.
fn bundle_der(bundle: &Bundle) -> Vec<u8> {
    bundle.x509_authorities.concat()
}

impl Message for pb::X509svidResponse {
    fn render(snapshot: &Snapshot, svids: &[Arc<CachedSvid>]) -> Self {
        pb::X509svidResponse {
            svids: svids
                .iter()
                .filter_map(|s| {
                    let bundle = snapshot.bundle_for(s.spiffe_id.trust_domain())?;
                    Some(pb::X509svid {
                        spiffe_id: s.spiffe_id.to_string(),
                        x509_svid: s.cert_chain_der.to_vec(),
                        x509_svid_key: s.private_key_pkcs8.to_vec(),
                        bundle: bundle_der(bundle),
                        hint: s.hint.to_string(),
                    })
                })
                .collect(),
            crl: Vec::new(),
            federated_bundles: snapshot
                .federated_for(svids)
                .into_iter()
                .map(|(td, b)| (td.id_string(), bundle_der(b)))
                .collect(),
        }
    }

    fn scrub(&mut self) {
        for svid in &mut self.svids {
            svid.x509_svid_key.zeroize();
        }
    }
}

/// The bundles a caller with `svids` receives: the own trust domain's and the federated ones its
/// entries federate with, keyed by trust-domain ID, each encoded by `encode` (one it cannot
/// encode is logged and left out).
fn bundle_map<T>(
    snapshot: &Snapshot,
    svids: &[Arc<CachedSvid>],
    what: &str,
    encode: impl Fn(&Bundle) -> Result<T, signet_spiffe::BundleError>,
) -> std::collections::HashMap<String, T> {
    let own = snapshot.bundle.iter();
    let federated = snapshot.federated_for(svids).into_values();
    own.chain(federated)
        .filter_map(|b| match encode(b) {
            Ok(v) => Some((b.trust_domain.id_string(), v)),
            Err(e) => {
                tracing::error!(trust_domain = %b.trust_domain, error = %e, "cannot encode the {what} of a bundle; not sent");
                None
            }
        })
        .collect()
}

impl Message for pb::X509BundlesResponse {
    fn render(snapshot: &Snapshot, svids: &[Arc<CachedSvid>]) -> Self {
        pb::X509BundlesResponse {
            crl: Vec::new(),
            bundles: bundle_map(snapshot, svids, "X.509 authorities", |b| Ok(bundle_der(b))),
        }
    }
}

impl Message for pb::JwtBundlesResponse {
    fn render(snapshot: &Snapshot, svids: &[Arc<CachedSvid>]) -> Self {
        pb::JwtBundlesResponse {
            bundles: bundle_map(snapshot, svids, "JWT authorities", |b| {
                b.jwt_jwks_json().map(String::into_bytes)
            }),
        }
    }
}

impl Message for pb::WitBundlesResponse {
    fn render(snapshot: &Snapshot, svids: &[Arc<CachedSvid>]) -> Self {
        pb::WitBundlesResponse {
            bundles: bundle_map(snapshot, svids, "WIT authorities", Bundle::wit_jwks_json),
            more: false,
        }
    }
}

impl Message for pb::WitsvidResponse {
    /// Not rendered from a snapshot alone (the tokens are minted): see [`WitWatcher::answer`].
    fn render(_snapshot: &Snapshot, _svids: &[Arc<CachedSvid>]) -> Self {
        pb::WitsvidResponse { svids: Vec::new() }
    }

    fn scrub(&mut self) {
        for svid in &mut self.svids {
            svid.wit_svid_key.zeroize();
        }
    }
}

/// The state of one open `FetchWITSVID` stream.
struct WitWatcher {
    rx: watch::Receiver<Arc<Snapshot>>,
    stop: watch::Receiver<bool>,
    selectors: Vec<(String, String)>,
    issuer: Arc<dyn SvidIssuer>,
    wits: Arc<WitSvidCache>,
    last_sent: Option<Sent<pb::WitsvidResponse>>,
    next_wake: Instant,
    done: bool,
    span: Span,
}

impl WitWatcher {
    /// The full answer now: a WIT-SVID for each identity of the caller (cached while fresh,
    /// else minted), and when to look again (the first renewal or SVID expiry; soon after a
    /// failure). An identity whose WIT-SVID cannot be minted and has none valid is left out; with
    /// none at all the stream ends `Unavailable`.
    async fn answer(&mut self) -> Result<pb::WitsvidResponse, Status> {
        let snapshot = self.rx.borrow_and_update().clone();
        let now = SystemTime::now();
        let served = evaluate(&snapshot, &self.selectors, now)?;
        let minted = futures::future::join_all(
            served
                .svids
                .iter()
                .map(|s| wit::wit_svid_for(&self.wits, self.issuer.as_ref(), s)),
        )
        .await;
        let mut wake = next_wake(&served.svids, now);
        let retry = Instant::now() + wit::RETRY_AFTER;
        let mut svids = Vec::with_capacity(minted.len());
        let mut failure = None;
        for (svid, result) in served.svids.iter().zip(minted) {
            match result {
                Ok(w) => {
                    use super::tokens::Token as _;
                    let renew = match w.renew_at().duration_since(SystemTime::now()) {
                        Ok(d) => Instant::now() + d,
                        // Served past half-life: the renewal failed; try again soon.
                        Err(_) => retry,
                    };
                    wake = wake.min(renew);
                    svids.push(pb::Witsvid {
                        spiffe_id: svid.spiffe_id.to_string(),
                        wit_svid: w.token.token.to_string(),
                        wit_svid_key: w.private_jwk.to_string(),
                        hint: svid.hint.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(entry_id = %svid.entry_id, error = %e, "cannot mint a WIT-SVID");
                    wake = wake.min(retry);
                    failure.get_or_insert(e);
                }
            }
        }
        self.next_wake = wake;
        match failure {
            Some(e) if svids.is_empty() => Err(match e {
                IssuerFailure::Refused(m) => Status::permission_denied(m),
                IssuerFailure::Unavailable(m) => {
                    Status::unavailable(format!("cannot mint a WIT-SVID: {m}"))
                }
            }),
            _ => Ok(pb::WitsvidResponse { svids }),
        }
    }
}

/// Waits for the next message of a `FetchWITSVID` stream (or the status that ends it).
async fn next_wit_update(
    mut w: WitWatcher,
) -> Option<(Result<pb::WitsvidResponse, Status>, WitWatcher)> {
    loop {
        if w.done {
            return None;
        }
        if let Err(status) = wait_for_change(&mut w.rx, &mut w.stop, w.next_wake).await {
            w.done = true;
            return Some((Err(status), w));
        }
        let message = match w.answer().await {
            Ok(m) => m,
            Err(status) => {
                log_refusal(&status);
                w.done = true;
                return Some((Err(status), w));
            }
        };
        if w.last_sent.as_ref().is_some_and(|s| s.0 == message) {
            continue;
        }
        tracing::debug!(svids = message.svids.len(), "sending an update");
        w.last_sent = Some(Sent(message.clone()));
        return Some((Ok(message), w));
    }
}

/// The last message sent on a stream, wiped when replaced or dropped.
struct Sent<M: Message>(M);

impl<M: Message> Drop for Sent<M> {
    fn drop(&mut self) {
        self.0.scrub();
    }
}

/// The state of one open stream.
struct Watcher<M: Message> {
    rx: watch::Receiver<Arc<Snapshot>>,
    stop: watch::Receiver<bool>,
    selectors: Vec<(String, String)>,
    next_wake: Instant,
    last_served: Served,
    last_sent: Sent<M>,
    done: bool,
    span: Span,
}

/// Waits until the cache changes or `next_wake` passes (re-evaluate: `Ok`), or the stream must
/// end: the server is shutting down or the cache was dropped (the status to end it with).
async fn wait_for_change(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    stop: &mut watch::Receiver<bool>,
    next_wake: Instant,
) -> Result<(), Status> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stop| *stop) => {
            tracing::debug!("stream closed: the agent is shutting down");
            Err(Status::unavailable("the agent is shutting down"))
        }
        changed = rx.changed() => {
            changed.map_err(|_| Status::unavailable("the agent's cache is gone"))
        }
        () = tokio::time::sleep_until(next_wake) => Ok(()),
    }
}

/// Waits for the next message to send on a stream (or the status that ends it).
async fn next_update<M: Message>(mut w: Watcher<M>) -> Option<(Result<M, Status>, Watcher<M>)> {
    loop {
        if w.done {
            return None;
        }
        if let Err(status) = wait_for_change(&mut w.rx, &mut w.stop, w.next_wake).await {
            w.done = true;
            return Some((Err(status), w));
        }
        let snapshot = w.rx.borrow_and_update().clone();
        let now = SystemTime::now();
        let served = match evaluate(&snapshot, &w.selectors, now) {
            Ok(served) => served,
            Err(status) => {
                log_refusal(&status);
                w.done = true;
                return Some((Err(status), w));
            }
        };
        w.next_wake = next_wake(&served.svids, now);
        if served.same_as(&w.last_served) {
            continue;
        }
        let message = M::render(&snapshot, &served.svids);
        w.last_served = served;
        if message == w.last_sent.0 {
            continue;
        }
        tracing::debug!(
            generation = snapshot.generation,
            svids = w.last_served.svids.len(),
            "sending an update"
        );
        w.last_sent = Sent(message.clone());
        return Some((Ok(message), w));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use futures::FutureExt as _;
    use signet_spiffe::JwtAuthority;

    use super::super::AttestationFailure;
    use super::super::jwt::testing::NoIssuer;
    use super::*;
    use crate::cache::testing::{bundle, ca, sels, svid};

    struct NoAttestor;

    #[async_trait::async_trait]
    impl WorkloadAttestation for NoAttestor {
        async fn attest(
            &self,
            peer: PeerCred,
        ) -> Result<Vec<(String, String)>, AttestationFailure> {
            Err(AttestationFailure::ProcessChanged { pid: peer.pid })
        }
    }

    /// Polls the stream once: `None` if it has nothing to send now. Everything a stream does on
    /// a cache change happens within one poll, so this involves no timing.
    fn poll_once<M>(stream: &mut ResultStream<M>) -> Option<Result<M, Status>> {
        stream.next().now_or_never().flatten()
    }

    #[tokio::test]
    async fn changes_that_do_not_alter_a_workloads_answer_send_nothing() {
        let own = ca("example.org");
        let partner = ca("partner.example");
        let unrelated = ca("unrelated.example");
        let cache = Cache::new();
        let mut mine = svid(&own, "e1", "/mine", &["unix:uid:1"], "");
        mine.federates_with = Box::new([partner.td.clone()]);
        cache
            .replace(
                vec![mine, svid(&own, "e2", "/theirs", &["unix:uid:2"], "")],
                Some(bundle(&own)),
                BTreeMap::from([(partner.td.clone(), bundle(&partner))]),
            )
            .unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let service = WorkloadApiService::new(
            cache.clone(),
            Arc::new(NoAttestor),
            Arc::new(NoIssuer),
            stop,
        );
        let mut svids = service
            .stream_for::<pb::X509svidResponse>(sels(&["unix:uid:1"]), Span::none())
            .unwrap();
        let mut bundles = service
            .stream_for::<pb::X509BundlesResponse>(sels(&["unix:uid:1"]), Span::none())
            .unwrap();
        let first = poll_once(&mut svids).unwrap().unwrap();
        assert_eq!(first.svids.len(), 1);
        poll_once(&mut bundles).unwrap().unwrap();
        assert!(poll_once(&mut svids).is_none());

        // Another workload's SVID rotates.
        assert!(
            cache
                .upsert_svids([svid(&own, "e2", "/theirs", &["unix:uid:2"], "")])
                .unwrap()
        );
        assert!(poll_once(&mut svids).is_none());
        assert!(poll_once(&mut bundles).is_none());
        // A bundle nobody here federates with appears.
        assert!(
            cache
                .set_federated(BTreeMap::from([
                    (partner.td.clone(), bundle(&partner)),
                    (unrelated.td.clone(), bundle(&unrelated)),
                ]))
                .unwrap()
        );
        assert!(poll_once(&mut svids).is_none());
        assert!(poll_once(&mut bundles).is_none());
        // The own bundle gains a JWT authority: the X.509 answers are unchanged.
        let mut with_jwt = bundle(&own);
        with_jwt.jwt_authorities.push(JwtAuthority {
            key_id: "k1".into(),
            jwk: serde_json_value(),
        });
        assert!(cache.set_bundle(with_jwt).unwrap());
        assert!(poll_once(&mut svids).is_none());
        assert!(poll_once(&mut bundles).is_none());

        // This workload's SVID rotates: one message on the SVID stream only.
        let mut rotated = svid(&own, "e1", "/mine", &["unix:uid:1"], "");
        rotated.federates_with = Box::new([partner.td.clone()]);
        assert!(cache.upsert_svids([rotated]).unwrap());
        let second = poll_once(&mut svids).unwrap().unwrap();
        assert_ne!(second.svids[0].x509_svid, first.svids[0].x509_svid);
        assert_eq!(second.federated_bundles, first.federated_bundles);
        assert!(poll_once(&mut svids).is_none());
        assert!(poll_once(&mut bundles).is_none());

        // The partner's bundle changes: both streams.
        let mut changed = bundle(&partner);
        changed
            .x509_authorities
            .push(bundle(&unrelated).x509_authorities[0].clone());
        cache
            .set_federated(BTreeMap::from([(partner.td.clone(), changed)]))
            .unwrap();
        let third = poll_once(&mut svids).unwrap().unwrap();
        assert_eq!(
            third.federated_bundles["spiffe://partner.example"].len(),
            own_len(&partner) + own_len(&unrelated)
        );
        let b = poll_once(&mut bundles).unwrap().unwrap();
        assert_eq!(b.bundles.len(), 2);
    }

    #[tokio::test]
    async fn streams_end_with_unavailable_on_stop() {
        let own = ca("example.org");
        let cache = Cache::new();
        cache
            .replace(
                vec![svid(&own, "e1", "/mine", &["unix:uid:1"], "")],
                Some(bundle(&own)),
                BTreeMap::new(),
            )
            .unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let service =
            WorkloadApiService::new(cache, Arc::new(NoAttestor), Arc::new(NoIssuer), stop);
        let mut svids = service
            .stream_for::<pb::X509svidResponse>(sels(&["unix:uid:1"]), Span::none())
            .unwrap();
        poll_once(&mut svids).unwrap().unwrap();
        stop_tx.send(true).unwrap();
        let status = poll_once(&mut svids).unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(svids.next().await.is_none());
    }

    #[test]
    fn kept_copies_of_keys_are_wiped() {
        let own = ca("example.org");
        let s = Arc::new(svid(&own, "e1", "/mine", &["k:v"], ""));
        let cache = Cache::new();
        cache
            .replace(Vec::new(), Some(bundle(&own)), BTreeMap::new())
            .unwrap();
        let mut message = pb::X509svidResponse::render(&cache.current(), &[s]);
        assert!(message.svids[0].x509_svid_key.iter().any(|&b| b != 0));
        message.scrub();
        // `Vec::zeroize` overwrites the bytes, then truncates.
        assert!(message.svids[0].x509_svid_key.is_empty());
    }

    fn own_len(ca: &crate::cache::testing::Ca) -> usize {
        bundle(ca).x509_authorities[0].len()
    }

    fn serde_json_value() -> serde_json::Value {
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k1", "x": "AA", "y": "AA"})
    }
}
