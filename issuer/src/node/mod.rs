//! The node API: gRPC over TLS between agents and the issuer (see `docs/node-api.md`).
//!
//! The issuer presents an X509-SVID for `spiffe://<td>/signet/issuer`, minted at start-up and
//! renewed at half-life without a restart ([`tls`]). Client certificates are optional at the TLS
//! level: `AttestAgent` has none. Every other RPC is authenticated by the agent's X509-SVID,
//! verified at the handshake against the CA's current trust anchors and then, per call, against
//! the store: the agent must exist, must not be banned, and the presented SVID must be its current
//! one (same serial), so an SVID that was renewed away is refused.
//!
//! `WatchEntries` pushes the store revision, the own bundle sequence and the federated bundles
//! revision to agents ([`notify`]): the server runs the issuer's [`notify::RevisionNotifier`]
//! refresh loop while it serves. Bundles travel as SPIFFE bundle documents: the own bundle (X.509
//! and JWT authorities) with every sync page, `RenewAgent`, `GetBundle` and attestation; the
//! federated bundles named in the `federates_with` of the agent's entries on the last sync page.
//!
//! `NewJWTSVID` mints JWT-SVIDs for authorized entries with the issuer's
//! [`JwtKeyManager`](signet_ca::jwt::JwtKeyManager) (the one the CA synchronizer rotates);
//! `NewWITSVID` mints WIT-SVIDs, binding the workload's public key, with the issuer's separate WIT
//! keys ([`Issuer::wit`]). Both authorize the entry the same way
//! ([`NodeService::authorized_workload_entry`]).
//!
//! Every RPC runs in a tracing span (`node_rpc`, with the method and the peer agent ID) and is
//! counted by `record_rpc("node", method, code)`.

mod attest;
pub mod authz;
pub mod delegation;
pub mod notify;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use signet_attestors::NodeAttestor;
use signet_attestors::x509pop::{self, X509PopAttestor};
use signet_ca::X509SvidRequest;
use signet_ca::jwt::JwtError;
use signet_proto::node as pb;
use signet_proto::node::node_server::{Node, NodeServer};
use signet_spiffe::bundle::Bundle;
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::{AttestedAgent, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::ca_sync::unix_secs;
use crate::metrics::code_name;
use crate::state::Issuer;
use tls::NodeConnectInfo;

/// The most items in one `BatchNewX509SVID` call.
pub const MAX_BATCH: usize = 500;

/// The most audience values in one `NewJWTSVID` call, and the longest one (bytes).
pub use crate::entries::{MAX_AUDIENCE_LEN, MAX_AUDIENCES};
/// The longest public key (bytes of DER) in a `NewWITSVID` call: an RSA-8192 SubjectPublicKeyInfo
/// is about 1.1 KB.
pub const MAX_PUBLIC_KEY_LEN: usize = 4096;

/// Time allowed for a whole attestation (including the agent's challenge answers).
pub(crate) const ATTESTATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest life of one `WatchEntries` stream, less a random part of up to [`WATCH_JITTER`] (so that
/// the agents' reconnections spread). Bounds how long a banned or evicted agent keeps a stream.
pub const WATCH_MAX_LIFETIME: Duration = Duration::from_secs(600);
/// See [`WATCH_MAX_LIFETIME`].
pub const WATCH_JITTER: Duration = Duration::from_secs(60);

/// Node API options that are not part of [`Issuer`].
#[derive(Debug, Clone, Default)]
pub struct NodeApiOptions {
    /// x509pop attestation; `None` disables it.
    pub x509pop: Option<x509pop::ServerConfig>,
}

/// Serves the node API on `listener` until `shutdown` completes, with join-token attestation
/// only. See [`serve_with`] to enable x509pop.
pub async fn serve(
    issuer: Arc<Issuer>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(issuer, NodeApiOptions::default(), listener, shutdown).await
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the node API on `listener` until `shutdown` completes (then finishes in-flight calls).
pub async fn serve_with(
    issuer: Arc<Issuer>,
    options: NodeApiOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service =
        NodeService::new(issuer.clone(), options).map_err(|e| anyhow::anyhow!("node API: {e}"))?;
    let _notifier = AbortOnDrop(tokio::spawn(issuer.notifier.clone().run(issuer.clone())));
    // Watch streams never end by themselves: end them when the server starts shutting down, so
    // that the graceful shutdown does not wait for them.
    let closing = service.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close_streams();
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let svid = tls::mint_issuer_svid(&issuer, &provider, SystemTime::now())?;
    let resolver = Arc::new(tls::SvidResolver::new(svid));
    let _renewal = AbortOnDrop(tokio::spawn(tls::renew_loop(
        issuer.clone(),
        resolver.clone(),
        provider.clone(),
    )));
    let config = tls::server_config(issuer.clone(), resolver, provider)?;
    let (tx, rx) = mpsc::channel(64);
    let _accept = AbortOnDrop(tokio::spawn(tls::accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(config)),
        tx,
    )));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(NodeServer::new(service))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await?;
    Ok(())
}

/// The node API handlers.
#[derive(Clone)]
pub struct NodeService {
    issuer: Arc<Issuer>,
    /// The enabled node attestors, by `attestor_type`.
    attestors: Arc<BTreeMap<&'static str, Arc<dyn NodeAttestor>>>,
    /// Set to `true` by [`NodeService::close_streams`].
    closing: Arc<watch::Sender<bool>>,
    /// The own bundle on the wire, encoded once per bundle sequence.
    own_bundle: Arc<Mutex<Option<pb::Bundle>>>,
}

/// The response stream of `WatchEntries`.
pub type WatchEntriesStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEntriesEvent, Status>> + Send>>;

/// Maps a store error to a status (details are logged, not sent).
pub(crate) fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "datastore unavailable");
            Status::unavailable("datastore unavailable")
        }
        _ => {
            tracing::error!(error = %e, "datastore error");
            Status::internal("datastore error")
        }
    }
}

/// The federated bundles among `stored` whose trust domains are in `wanted`, on the wire. A stored
/// document that does not parse is left out (and logged): agents only get usable bundles.
pub(crate) fn federated_bundles_proto(
    stored: Vec<signet_store::StoredBundle>,
    wanted: &BTreeSet<&str>,
) -> Vec<pb::Bundle> {
    stored
        .into_iter()
        .filter(|b| !b.own && wanted.contains(b.trust_domain.as_str()))
        .filter_map(|b| {
            let parsed = TrustDomain::new(&b.trust_domain)
                .map_err(|e| e.to_string())
                .and_then(|td| {
                    Bundle::from_json(&td, b.document.as_bytes()).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(bundle) => Some(pb::Bundle {
                    trust_domain: b.trust_domain,
                    sequence: bundle.sequence,
                    document: b.document,
                }),
                Err(e) => {
                    tracing::warn!(trust_domain = %b.trust_domain, error = %e, "stored federated bundle is invalid; not sent to agents");
                    None
                }
            }
        })
        .collect()
}

pub(crate) fn svid_proto(id: &SpiffeId, chain: Vec<Vec<u8>>, expires_at: i64) -> pb::X509svid {
    pb::X509svid {
        spiffe_id: id.to_string(),
        cert_chain: chain,
        expires_at,
    }
}

/// The authenticated caller of an RPC.
struct Caller {
    id: SpiffeId,
    agent: AttestedAgent,
}

fn connect_info<T>(req: &Request<T>) -> Option<&NodeConnectInfo> {
    req.extensions().get::<NodeConnectInfo>()
}

fn rpc_span(method: &'static str, remote: Option<SocketAddr>) -> tracing::Span {
    tracing::info_span!(
        "node_rpc",
        method,
        peer_addr = remote.map(|a| a.to_string()).unwrap_or_default(),
        agent_id = tracing::field::Empty,
    )
}

impl NodeService {
    /// Builds the handlers (for embedding the service in another server).
    pub fn new(
        issuer: Arc<Issuer>,
        options: NodeApiOptions,
    ) -> Result<Self, signet_attestors::AttestError> {
        let mut attestors: BTreeMap<&'static str, Arc<dyn NodeAttestor>> = BTreeMap::new();
        let join_token = attest::JoinTokenAttestor;
        attestors.insert(join_token.attestor_type(), Arc::new(join_token));
        if let Some(cfg) = options.x509pop {
            let x509pop = X509PopAttestor::new(cfg)?;
            attestors.insert(x509pop.attestor_type(), Arc::new(x509pop));
        }
        Ok(Self {
            issuer,
            attestors: Arc::new(attestors),
            closing: Arc::new(watch::channel(false).0),
            own_bundle: Arc::new(Mutex::new(None)),
        })
    }

    /// The own trust bundle on the wire (X.509 and JWT authorities), re-encoded only when its
    /// sequence moved.
    pub(crate) fn own_bundle_proto(&self) -> Result<pb::Bundle, Status> {
        let sequence = self.issuer.own_bundle_sequence();
        if let Some(b) = self
            .own_bundle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|b| b.sequence == sequence)
        {
            return Ok(b.clone());
        }
        let bundle = self.issuer.own_bundle();
        let document = bundle.to_json().map_err(|e| {
            tracing::error!(error = %e, "cannot encode the own trust bundle");
            Status::internal("cannot encode the own trust bundle")
        })?;
        let wire = pb::Bundle {
            trust_domain: bundle.trust_domain.name().to_owned(),
            sequence: bundle.sequence,
            document,
        };
        *self
            .own_bundle
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(wire.clone());
        Ok(wire)
    }

    /// The federated bundles the `authorized` entries (node aliases excepted) federate with, and
    /// the federated bundles revision they were read at.
    async fn federated_bundles(
        &self,
        authorized: &BTreeMap<String, authz::AuthorizedEntry>,
    ) -> Result<(Vec<pb::Bundle>, u64), Status> {
        let stored = self
            .issuer
            .store
            .list_bundles()
            .await
            .map_err(|e| store_status(&e))?;
        let revision = notify::bundles_revision(&stored);
        let own = self.issuer.trust_domain.name();
        let wanted: BTreeSet<&str> = authorized
            .values()
            .filter(|a| !a.node_alias)
            .flat_map(|a| a.entry.fields.federates_with.iter().map(String::as_str))
            .filter(|td| *td != own)
            .collect();
        let bundles = if wanted.is_empty() {
            Vec::new()
        } else {
            federated_bundles_proto(stored, &wanted)
        };
        Ok((bundles, revision))
    }

    /// Ends every open `WatchEntries` stream (status OK) and refuses new ones with `UNAVAILABLE`:
    /// call it when the server starts shutting down ([`serve_with`] does).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Runs a unary handler in its span and records its outcome.
    async fn observe<T>(
        &self,
        method: &'static str,
        remote: Option<SocketAddr>,
        fut: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let span = rpc_span(method, remote);
        let result = fut.instrument(span.clone()).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.issuer
            .metrics
            .record_rpc("node", method, code_name(code));
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(code = code_name(code), "node RPC done"),
            Err(s) => {
                tracing::info!(code = code_name(code), message = %s.message(), "node RPC refused")
            }
        });
        result.map(Response::new)
    }

    /// Authenticates the agent of a call (see the module documentation).
    async fn authenticate(&self, info: Option<&NodeConnectInfo>) -> Result<Caller, Status> {
        let peer = info.and_then(|i| i.peer.clone()).ok_or_else(|| {
            Status::unauthenticated(
                "this call requires mutual TLS with the agent's X509-SVID (attest first)",
            )
        })?;
        tracing::Span::current().record("agent_id", tracing::field::display(&peer.spiffe_id));
        let id_str = peer.spiffe_id.to_string();
        let agent = self
            .issuer
            .store
            .get_agent(&id_str)
            .await
            .map_err(|e| store_status(&e))?
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "agent {id_str} is not attested (evicted or never attested); it must attest again"
                ))
            })?;
        if agent.banned {
            return Err(Status::permission_denied(format!(
                "agent {id_str} is banned"
            )));
        }
        if tls::normalize_serial(&agent.serial) != peer.serial {
            return Err(Status::permission_denied(format!(
                "the presented SVID (serial {}) is not the current SVID of agent {id_str}: it was \
                 renewed or re-attested",
                peer.serial
            )));
        }
        Ok(Caller {
            id: peer.spiffe_id.clone(),
            agent,
        })
    }

    async fn authorized(
        &self,
        caller: &Caller,
        since: i64,
        now: i64,
    ) -> Result<std::collections::BTreeMap<String, authz::AuthorizedEntry>, Status> {
        authz::authorized_entries(
            self.issuer.store.as_ref(),
            &self.issuer.issuer_id.to_string(),
            &caller.id.to_string(),
            &caller.agent.selectors,
            since,
            now,
        )
        .await
        .map_err(|e| store_status(&e))
    }

    async fn renew(
        &self,
        info: Option<&NodeConnectInfo>,
        csr: &[u8],
    ) -> Result<pb::RenewAgentResponse, Status> {
        let caller = self.authenticate(info).await?;
        let spki = signet_ca::public_key_from_csr(csr)
            .map_err(|e| Status::invalid_argument(format!("invalid CSR: {e}")))?;
        // Encoded before the new serial is stored: should it fail, the current SVID stays valid.
        // (A CA is published before it signs, so this bundle verifies the new SVID.)
        let bundle = self.own_bundle_proto()?;
        let issuer = &self.issuer;
        let now = SystemTime::now();
        let started = Instant::now();
        let svid = issuer
            .ca
            .sign_x509_svid(
                &X509SvidRequest {
                    spiffe_id: &caller.id,
                    public_key_spki_der: &spki,
                    ttl: issuer.defaults.agent_ttl,
                    dns_names: &[],
                },
                now,
            )
            .map_err(|e| Status::internal(format!("cannot sign the agent SVID: {e}")))?;
        issuer
            .metrics
            .record_signature("agent_svid", started.elapsed().as_secs_f64());
        let expires_at = unix_secs(svid.not_after);
        let serial = tls::normalize_serial(&svid.serial_hex);
        let id_str = caller.id.to_string();
        issuer
            .store
            .update_agent_svid(&id_str, &serial, expires_at)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => Status::permission_denied(format!(
                    "agent {id_str} is not attested (evicted); it must attest again"
                )),
                StoreError::Conflict(_) => {
                    Status::permission_denied(format!("agent {id_str} is banned"))
                }
                other => store_status(&other),
            })?;
        crate::audit::record(
            issuer.store.as_ref(),
            "agent.renew",
            &id_str,
            &id_str,
            "ok",
            serde_json::json!({ "serial": serial, "expires_at": expires_at }),
        )
        .await;
        Ok(pb::RenewAgentResponse {
            svid: Some(svid_proto(&caller.id, svid.cert_chain_der, expires_at)),
            bundle: Some(bundle),
        })
    }

    async fn sync(
        &self,
        info: Option<&NodeConnectInfo>,
        req: pb::SyncEntriesRequest,
    ) -> Result<pb::SyncEntriesResponse, Status> {
        let caller = self.authenticate(info).await?;
        if req.since_revision < 0 {
            return Err(Status::invalid_argument(
                "since_revision must not be negative",
            ));
        }
        let token = if req.page_token.is_empty() {
            // Read the revision before the entries: whatever changes meanwhile is sent again
            // next time.
            let current = self
                .issuer
                .store
                .current_revision()
                .await
                .map_err(|e| store_status(&e))?;
            let full = req.since_revision == 0 || req.since_revision > current;
            authz::PageToken {
                since: req.since_revision,
                revision: current,
                full,
                in_entries: true,
                after: String::new(),
            }
        } else {
            let t = authz::PageToken::decode(&req.page_token)
                .ok_or_else(|| Status::invalid_argument("invalid page_token"))?;
            if t.since != req.since_revision {
                return Err(Status::invalid_argument(
                    "page_token belongs to a sync with another since_revision",
                ));
            }
            t
        };
        let base = if token.full { 0 } else { token.since };
        let now = unix_secs(SystemTime::now());
        let authorized = self.authorized(&caller, base, now).await?;
        let entries: Vec<pb::Entry> = authorized
            .values()
            .filter(|a| token.full || a.changed)
            .map(authz::entry_to_proto)
            .collect();
        let mut removed = Vec::new();
        if !token.full {
            let changes = self
                .issuer
                .store
                .entry_changes_since(token.since)
                .await
                .map_err(|e| store_status(&e))?;
            removed = authz::removed_entry_ids(
                &changes,
                &authorized,
                &caller.id.to_string(),
                &self.issuer.issuer_id.to_string(),
            );
        }
        let page_size = match req.page_size {
            0 => authz::DEFAULT_PAGE_SIZE,
            n => n.min(authz::MAX_PAGE_SIZE),
        };
        let page = authz::paginate(&entries, &removed, &token, page_size);
        let (federated_bundles, bundles_revision) = if page.next.is_none() {
            self.federated_bundles(&authorized).await?
        } else {
            (Vec::new(), 0)
        };
        Ok(pb::SyncEntriesResponse {
            entries: page.entries,
            removed_entry_ids: page.removed,
            revision: token.revision,
            next_page_token: page.next.map(|t| t.encode()).unwrap_or_default(),
            bundle: Some(self.own_bundle_proto()?),
            full: token.full,
            federated_bundles,
            bundles_revision,
        })
    }

    /// Authenticates the caller and builds its watch stream (see [`notify`]).
    async fn watch(&self, info: Option<&NodeConnectInfo>) -> Result<WatchEntriesStream, Status> {
        let caller = self.authenticate(info).await?;
        let mut closing = self.closing.subscribe();
        if *closing.borrow_and_update() {
            return Err(Status::unavailable("the issuer is shutting down"));
        }
        let rx = self.issuer.notifier.subscribe();
        // Live until the presented SVID expires, and at most WATCH_MAX_LIFETIME less a jitter.
        let svid_left = caller
            .agent
            .expires_at
            .saturating_sub(unix_secs(SystemTime::now()))
            .max(0);
        let jitter = Duration::from_millis(rand::random_range(
            0..=u64::try_from(WATCH_JITTER.as_millis()).unwrap_or(u64::MAX),
        ));
        let life = Duration::from_secs(svid_left.unsigned_abs())
            .min(WATCH_MAX_LIFETIME.saturating_sub(jitter));
        let deadline = tokio::time::Instant::now() + life;
        tracing::debug!(lifetime_s = life.as_secs(), "entry watch opened");
        Ok(Box::pin(watch_stream(rx, closing, deadline)))
    }

    async fn batch_sign(
        &self,
        info: Option<&NodeConnectInfo>,
        req: pb::BatchNewX509svidRequest,
    ) -> Result<pb::BatchNewX509svidResponse, Status> {
        let caller = self.authenticate(info).await?;
        if req.params.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} items in one batch; at most {MAX_BATCH}",
                req.params.len()
            )));
        }
        if req.params.is_empty() {
            return Ok(pb::BatchNewX509svidResponse::default());
        }
        let now = SystemTime::now();
        let authorized = self.authorized(&caller, 0, unix_secs(now)).await?;
        let issuer = self.issuer.clone();
        let agent_id = caller.id.to_string();
        // Signing is CPU work: keep it off the async workers.
        let results = tokio::task::spawn_blocking(move || {
            req.params
                .into_iter()
                .map(|item| sign_item(&issuer, &agent_id, &authorized, item, now))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("signing task failed: {e}")))?;
        Ok(pb::BatchNewX509svidResponse { results })
    }

    async fn new_jwt(
        &self,
        info: Option<&NodeConnectInfo>,
        req: pb::NewJwtsvidRequest,
    ) -> Result<pb::NewJwtsvidResponse, Status> {
        let caller = self.authenticate(info).await?;
        if req.entry_id.is_empty() {
            return Err(Status::invalid_argument("entry_id is required"));
        }
        crate::entries::validate_audiences(&req.audience)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = SystemTime::now();
        let (entry, id) = self
            .authorized_workload_entry(&caller, &req.entry_id, now)
            .await?;
        let issuer = &self.issuer;
        let ttl = match entry.fields.jwt_svid_ttl {
            0 => issuer.defaults.jwt_svid_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        let started = Instant::now();
        let minted = issuer
            .jwt
            .mint_jwt_svid(&id, &req.audience, ttl, now, issuer.jwt_issuer.as_deref())
            .map_err(|e| {
                tracing::error!(entry_id = %entry.id, error = %e, "cannot mint a JWT-SVID");
                Status::internal(format!("cannot mint the JWT-SVID: {e}"))
            })?;
        issuer
            .metrics
            .record_signature("jwt_svid", started.elapsed().as_secs_f64());
        Ok(pb::NewJwtsvidResponse {
            svid: Some(pb::Jwtsvid {
                spiffe_id: id.to_string(),
                token: minted.token,
                expires_at: unix_secs(minted.expiry),
                issued_at: unix_secs(minted.issued_at),
            }),
        })
    }

    /// The entry `entry_id` with its SPIFFE ID, if it is authorized for the caller and is not a
    /// node alias (`PermissionDenied` otherwise): how `NewJWTSVID` and `NewWITSVID` authorize.
    async fn authorized_workload_entry(
        &self,
        caller: &Caller,
        entry_id: &str,
        now: SystemTime,
    ) -> Result<(signet_store::RegistrationEntry, SpiffeId), Status> {
        let mut authorized = self.authorized(caller, 0, unix_secs(now)).await?;
        let entry = match authorized.remove(entry_id) {
            Some(a) if !a.node_alias => a.entry,
            Some(_) => {
                return Err(Status::permission_denied(format!(
                    "entry {entry_id} is a node alias: node aliases are not signed for workloads"
                )));
            }
            None => {
                return Err(Status::permission_denied(format!(
                    "entry {entry_id:?} is not authorized for agent {}",
                    caller.id
                )));
            }
        };
        let id = SpiffeId::parse(&entry.fields.spiffe_id).map_err(|e| {
            tracing::error!(entry_id = %entry.id, error = %e, "stored entry has an invalid SPIFFE ID");
            Status::internal("the entry's SPIFFE ID is invalid")
        })?;
        Ok((entry, id))
    }

    async fn new_wit(
        &self,
        info: Option<&NodeConnectInfo>,
        req: pb::NewWitsvidRequest,
    ) -> Result<pb::NewWitsvidResponse, Status> {
        let caller = self.authenticate(info).await?;
        if req.entry_id.is_empty() {
            return Err(Status::invalid_argument("entry_id is required"));
        }
        if req.public_key.is_empty() {
            return Err(Status::invalid_argument(
                "public_key is required (the workload's public key, DER SubjectPublicKeyInfo)",
            ));
        }
        if req.public_key.len() > MAX_PUBLIC_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "public_key is {} bytes; at most {MAX_PUBLIC_KEY_LEN}",
                req.public_key.len()
            )));
        }
        let now = SystemTime::now();
        let (entry, id) = self
            .authorized_workload_entry(&caller, &req.entry_id, now)
            .await?;
        let issuer = &self.issuer;
        let started = Instant::now();
        let minted = issuer
            .wit
            .mint_wit_svid(&id, &req.public_key, issuer.defaults.wit_svid_ttl, now)
            .map_err(|e| match e {
                JwtError::HolderKey(e) => Status::invalid_argument(format!("public_key: {e}")),
                e => {
                    tracing::error!(entry_id = %entry.id, error = %e, "cannot mint a WIT-SVID");
                    Status::internal(format!("cannot mint the WIT-SVID: {e}"))
                }
            })?;
        issuer
            .metrics
            .record_signature("wit_svid", started.elapsed().as_secs_f64());
        Ok(pb::NewWitsvidResponse {
            svid: Some(pb::Witsvid {
                spiffe_id: id.to_string(),
                token: minted.token,
                expires_at: unix_secs(minted.expiry),
                issued_at: unix_secs(minted.issued_at),
            }),
        })
    }
}

/// The events of one watch: the current value at once (once the store was read), then every change,
/// until `deadline` or shutdown.
fn watch_stream(
    rx: watch::Receiver<Option<notify::Revision>>,
    closing: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
) -> impl futures::Stream<Item = Result<pb::WatchEntriesEvent, Status>> + Send + 'static {
    struct State {
        rx: watch::Receiver<Option<notify::Revision>>,
        closing: watch::Receiver<bool>,
        deadline: tokio::time::Instant,
        first: bool,
    }
    let state = State {
        rx,
        closing,
        deadline,
        first: true,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if !st.first {
                tokio::select! {
                    biased;
                    _ = st.closing.wait_for(|c| *c) => return None,
                    () = tokio::time::sleep_until(st.deadline) => return None,
                    changed = st.rx.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
            st.first = false;
            let value = *st.rx.borrow_and_update();
            if let Some(v) = value {
                let event = pb::WatchEntriesEvent {
                    revision: v.revision,
                    bundle_sequence: v.bundle_sequence,
                    bundles_revision: v.bundles_revision,
                    delegation_sequence: v.delegation_sequence,
                };
                return Some((Ok(event), st));
            }
        }
    })
}

fn item_error(entry_id: String, code: tonic::Code, message: String) -> pb::X509svidResult {
    pb::X509svidResult {
        entry_id,
        svid: None,
        error: Some(pb::ItemError {
            code: code as i32,
            message,
        }),
    }
}

/// Signs one item of a batch, or explains why not.
fn sign_item(
    issuer: &Issuer,
    agent_id: &str,
    authorized: &std::collections::BTreeMap<String, authz::AuthorizedEntry>,
    item: pb::NewX509svidParams,
    now: SystemTime,
) -> pb::X509svidResult {
    let entry = match authorized.get(&item.entry_id) {
        Some(a) if !a.node_alias => &a.entry,
        Some(_) => {
            let msg = format!(
                "entry {} is a node alias: node aliases are not signed for workloads",
                item.entry_id
            );
            return item_error(item.entry_id, tonic::Code::PermissionDenied, msg);
        }
        None => {
            let msg = format!(
                "entry {:?} is not authorized for agent {agent_id}",
                item.entry_id
            );
            return item_error(item.entry_id, tonic::Code::PermissionDenied, msg);
        }
    };
    let spki = match signet_ca::public_key_from_csr(&item.csr) {
        Ok(k) => k,
        Err(e) => {
            return item_error(
                item.entry_id,
                tonic::Code::InvalidArgument,
                format!("invalid CSR: {e}"),
            );
        }
    };
    let id = match SpiffeId::parse(&entry.fields.spiffe_id) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(entry_id = %entry.id, error = %e, "stored entry has an invalid SPIFFE ID");
            return item_error(
                item.entry_id,
                tonic::Code::Internal,
                "the entry's SPIFFE ID is invalid".into(),
            );
        }
    };
    let ttl = match entry.fields.x509_svid_ttl {
        0 => issuer.defaults.x509_svid_ttl,
        s => Duration::from_secs(u64::from(s)),
    };
    let started = Instant::now();
    match issuer.ca.sign_x509_svid(
        &X509SvidRequest {
            spiffe_id: &id,
            public_key_spki_der: &spki,
            ttl,
            dns_names: &entry.fields.dns_names,
        },
        now,
    ) {
        Ok(svid) => {
            issuer
                .metrics
                .record_signature("x509_svid", started.elapsed().as_secs_f64());
            pb::X509svidResult {
                entry_id: item.entry_id,
                svid: Some(svid_proto(
                    &id,
                    svid.cert_chain_der,
                    unix_secs(svid.not_after),
                )),
                error: None,
            }
        }
        Err(e) => {
            tracing::error!(entry_id = %entry.id, error = %e, "cannot sign an X509-SVID");
            item_error(
                item.entry_id,
                tonic::Code::Internal,
                format!("cannot sign: {e}"),
            )
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    type AttestAgentStream = ReceiverStream<Result<pb::AttestAgentResponse, Status>>;

    async fn attest_agent(
        &self,
        request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        let remote = connect_info(&request).map(|i| i.remote_addr);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let svc = self.clone();
        let span = rpc_span("AttestAgent", remote);
        tokio::spawn(
            async move {
                let result = svc.run_attestation(&mut inbound, &tx, remote).await;
                let code = match &result {
                    Ok(r) => {
                        tracing::Span::current()
                            .record("agent_id", tracing::field::display(&r.spiffe_id));
                        tonic::Code::Ok
                    }
                    Err(s) => s.code(),
                };
                svc.issuer
                    .metrics
                    .record_rpc("node", "AttestAgent", code_name(code));
                let msg = result.map(|r| pb::AttestAgentResponse {
                    step: Some(pb::attest_agent_response::Step::Result(r)),
                });
                let _ = tx.send(msg).await;
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe("RenewAgent", remote, self.renew(info.as_ref(), &req.csr))
            .await
    }

    async fn sync_entries(
        &self,
        request: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe("SyncEntries", remote, self.sync(info.as_ref(), req))
            .await
    }

    async fn batch_new_x509svid(
        &self,
        request: Request<pb::BatchNewX509svidRequest>,
    ) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe(
            "BatchNewX509SVID",
            remote,
            self.batch_sign(info.as_ref(), req),
        )
        .await
    }

    async fn new_jwtsvid(
        &self,
        request: Request<pb::NewJwtsvidRequest>,
    ) -> Result<Response<pb::NewJwtsvidResponse>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe("NewJWTSVID", remote, self.new_jwt(info.as_ref(), req))
            .await
    }

    async fn new_witsvid(
        &self,
        request: Request<pb::NewWitsvidRequest>,
    ) -> Result<Response<pb::NewWitsvidResponse>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe("NewWITSVID", remote, self.new_wit(info.as_ref(), req))
            .await
    }

    type WatchEntriesStream = WatchEntriesStream;

    async fn watch_entries(
        &self,
        request: Request<pb::WatchEntriesRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        self.observe("WatchEntries", remote, self.watch(info.as_ref()))
            .await
    }

    async fn mint_delegation(
        &self,
        request: Request<pb::MintDelegationRequest>,
    ) -> Result<Response<pb::DelegationToken>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe(
            "MintDelegation",
            remote,
            NodeService::mint_delegation(self, info.as_ref(), req),
        )
        .await
    }

    async fn delegate(
        &self,
        request: Request<pb::DelegateRequest>,
    ) -> Result<Response<pb::DelegationToken>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        let req = request.into_inner();
        self.observe("Delegate", remote, self.delegate_hop(info.as_ref(), req))
            .await
    }

    async fn get_delegation_state(
        &self,
        request: Request<pb::GetDelegationStateRequest>,
    ) -> Result<Response<pb::DelegationState>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        self.observe(
            "GetDelegationState",
            remote,
            self.delegation_state(info.as_ref()),
        )
        .await
    }

    async fn get_bundle(
        &self,
        request: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::GetBundleResponse>, Status> {
        let info = connect_info(&request).cloned();
        let remote = info.as_ref().map(|i| i.remote_addr);
        self.observe("GetBundle", remote, async {
            self.authenticate(info.as_ref()).await?;
            Ok(pb::GetBundleResponse {
                bundle: Some(self.own_bundle_proto()?),
            })
        })
        .await
    }
}
