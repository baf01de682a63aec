//! The agent runtime behind `signet-agent run`: start-up from persisted state, node attestation
//! and agent SVID renewal ([`identity`]), entry sync, workload SVID signing and rotation
//! ([`sync`]), the Workload API socket and the health listener.
//!
//! Start-up, in order:
//! 1. open `data_dir` (0700); load the trust bundle (the persisted one, which follows CA rotations,
//!    else `trust_bundle_path`, else none with `insecure_bootstrap`), the agent SVID and the
//!    synced state;
//! 2. fill the cache with the persisted workload SVIDs that are still valid: the Workload API
//!    serves them at once, before (and whether or not) the issuer answers;
//! 3. bind the Workload API socket and the health listener, log `agent started`;
//! 4. run the identity task (attest if needed, renew at half-life), the sync loop and the
//!    delegation state task ([`delegation`]); log `agent ready` once the cache can serve.
//!
//! Shutdown (the future given to [`run`] completes): streams end with `Unavailable`, the synced
//! state is written one last time, the socket is removed.

pub mod backoff;
pub mod certs;
pub mod delegation;
pub mod identity;
pub mod logging;
pub mod mirror;
pub mod persist;
pub mod push;
pub mod socket;
pub mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signet_spiffe::bundle::Bundle;
use tokio::sync::{Notify, RwLock, watch};
use zeroize::Zeroizing;

use crate::cache::Cache;
use crate::config::Config;
use crate::health::Health;
use crate::node_client::{DelegationHop, DelegationMint, DelegationToken};
use crate::node_client::{NodeClient, NodeClientConfig};
use crate::runtime::identity::{IdentityManager, IdentityState};
use crate::runtime::persist::DataDir;
use crate::runtime::push::PushTrigger;
use crate::runtime::sync::Syncer;
use crate::workload_api::{
    DelegationBackend, DelegationFailure, DelegationIssuer, DelegationStatus, IssuerFailure,
    MintedToken, SvidIssuer, WorkloadAttestation,
};

/// How long shutdown waits for each task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A file named by the configuration is unusable (the message names the key).
    #[error("invalid config: {0}")]
    Config(String),
    /// `data_dir` could not be opened or created.
    #[error("data_dir: {0}")]
    DataDir(#[from] persist::PersistError),
    /// The Workload API socket could not be bound.
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    /// The health listener could not be bound.
    #[error("health.bind_address {address}: cannot listen: {source}")]
    Health {
        /// The configured address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Node attestation is impossible or was refused; the message says what to do.
    #[error("{0}")]
    Attestation(String),
    /// A server failed while running.
    #[error("{0}")]
    Server(String),
}

impl RunError {
    /// The process exit status for this error: 2 for configuration problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// State shared by the runtime tasks.
pub(crate) struct Shared {
    pub(crate) client: NodeClient,
    pub(crate) cache: Cache,
    pub(crate) data: DataDir,
    pub(crate) persist_svids: bool,
    /// Node RPCs hold it shared; renewal and attestation hold it exclusively, so that no call is
    /// in flight with an SVID that the issuer is about to stop accepting.
    pub(crate) rpc_gate: RwLock<()>,
    pub(crate) identity: watch::Sender<IdentityState>,
    /// Set by a task that saw the issuer refuse the agent SVID.
    pub(crate) reattest: Notify,
    pub(crate) health: Arc<Health>,
    /// The bundle last pushed to the cache and persisted.
    last_bundle: Mutex<Option<Arc<Bundle>>>,
    /// Serializes federated bundle updates (cache and file in the same order).
    federated_lock: Mutex<()>,
    /// The issuer's delegation keys and revocations, as last fetched ([`delegation`]).
    pub(crate) delegation: watch::Sender<DelegationStatus>,
    /// The `delegation_sequence` of the last `WatchEntries` event.
    pub(crate) delegation_announced: watch::Sender<Option<u64>>,
}

impl Shared {
    /// Pushes the node client's current bundle to the cache and `data_dir` if it changed (CA
    /// rotation, first pinning after an insecure bootstrap).
    pub(crate) fn publish_bundle(&self) {
        let bundle = self.client.bundle();
        if bundle.x509_authorities.is_empty() {
            return;
        }
        let mut last = self
            .last_bundle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() == Some(&*bundle) {
            return;
        }
        match self.cache.set_bundle((*bundle).clone()) {
            Ok(true) if last.is_some() => tracing::info!(
                sequence = bundle.sequence,
                authorities = bundle.x509_authorities.len(),
                "trust bundle updated"
            ),
            Ok(_) => tracing::debug!(
                sequence = bundle.sequence,
                authorities = bundle.x509_authorities.len(),
                "trust bundle loaded"
            ),
            Err(e) => tracing::error!(error = %e, "the cache refused the trust bundle"),
        }
        if let Err(e) = self.data.save_bundle(&bundle) {
            tracing::error!(error = %e, "cannot persist the trust bundle");
        }
        *last = Some(bundle);
    }

    /// Pushes the federated bundles of the node client's last complete sync to the cache, and to
    /// `data_dir` when they changed. (Compared by content: the issuer's bundles revision does not
    /// move when only the set of trust domains this agent's entries federate with changes.)
    pub(crate) fn publish_federated(&self) {
        if self.client.bundles_revision().is_none() {
            return;
        }
        let _guard = self
            .federated_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bundles = self.client.federated_bundles();
        match self.cache.set_federated((*bundles).clone()) {
            Ok(true) => {
                tracing::info!(trust_domains = bundles.len(), "federated bundles updated");
                if let Err(e) = self.data.save_federated(&bundles) {
                    tracing::error!(error = %e, "cannot persist the federated bundles");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "the cache refused the federated bundles"),
        }
    }
}

/// The issuer as the Workload API sees it: JWT-SVIDs minted over the node API.
struct NodeApiIssuer(Arc<Shared>);

/// An issuer refusal (`PermissionDenied`, `NotFound`: the entry is not, or no longer, this
/// agent's) or an outage (anything else).
fn issuer_failure(e: &crate::node_client::NodeClientError) -> IssuerFailure {
    match e.code() {
        Some(tonic::Code::PermissionDenied | tonic::Code::NotFound) => {
            IssuerFailure::Refused(e.to_string())
        }
        _ => IssuerFailure::Unavailable(e.to_string()),
    }
}

impl NodeApiIssuer {
    /// Runs a node RPC behind the RPC gate (no call in flight while the agent SVID is replaced).
    async fn gated<T>(
        &self,
        call: impl Future<Output = Result<T, crate::node_client::NodeClientError>>,
    ) -> Result<T, IssuerFailure> {
        let _gate = self.0.rpc_gate.read().await;
        call.await.map_err(|e| issuer_failure(&e))
    }
}

#[async_trait::async_trait]
impl SvidIssuer for NodeApiIssuer {
    async fn mint_jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<MintedToken, IssuerFailure> {
        let s = self
            .gated(self.0.client.new_jwt_svid(entry_id, audience))
            .await?;
        Ok(MintedToken::new(
            s.spiffe_id,
            s.token,
            s.issued_at,
            s.expires_at,
        ))
    }

    async fn mint_wit_svid(
        &self,
        entry_id: &str,
        public_key_spki: &[u8],
    ) -> Result<MintedToken, IssuerFailure> {
        let s = self
            .gated(self.0.client.new_wit_svid(entry_id, public_key_spki))
            .await?;
        Ok(MintedToken::new(
            s.spiffe_id,
            s.token,
            s.issued_at,
            s.expires_at,
        ))
    }
}

/// Node API failures as the delegation service passes them on: the issuer's status, or an
/// outage.
fn delegation_failure(e: crate::node_client::NodeClientError) -> DelegationFailure {
    match e {
        crate::node_client::NodeClientError::Rpc { code, message } => {
            DelegationFailure::Issuer { code, message }
        }
        other => DelegationFailure::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl DelegationIssuer for NodeApiIssuer {
    async fn mint_delegation(
        &self,
        request: DelegationMint,
    ) -> Result<DelegationToken, DelegationFailure> {
        let _gate = self.0.rpc_gate.read().await;
        self.0
            .client
            .mint_delegation(&request)
            .await
            .map_err(delegation_failure)
    }

    async fn delegate(&self, request: DelegationHop) -> Result<DelegationToken, DelegationFailure> {
        let _gate = self.0.rpc_gate.read().await;
        self.0
            .client
            .delegate(&request)
            .await
            .map_err(delegation_failure)
    }
}

/// Reads `trust_bundle_path`: PEM certificates or a SPIFFE bundle document.
fn read_trust_bundle(config: &Config, path: &PathBuf) -> Result<Bundle, RunError> {
    let bad = |reason: String| {
        RunError::Config(format!("trust_bundle_path {}: {reason}", path.display()))
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let is_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    let bundle = if is_json {
        Bundle::from_json(&config.trust_domain, &bytes).map_err(|e| bad(e.to_string()))?
    } else {
        Bundle::from_pem(&config.trust_domain, &bytes).map_err(|e| bad(e.to_string()))?
    };
    if bundle.x509_authorities.is_empty() {
        return Err(bad("no X.509 authority".into()));
    }
    Ok(bundle)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the agent until `shutdown` completes or a fatal error occurs.
///
/// `join_token` is used only when the agent has no valid SVID. `attestation` turns a Workload
/// API caller's kernel credentials into selectors.
pub async fn run(
    config: Config,
    join_token: Option<Zeroizing<String>>,
    attestation: Arc<dyn WorkloadAttestation>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (data, loose) = DataDir::open(&config.data_dir)?;
    if let Some(mode) = loose {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            mode = format!("{mode:o}"),
            "data_dir is accessible by group or others; it holds private keys (chmod 700 it)"
        );
    }

    // Trust bundle: persisted (follows CA rotations) > trust_bundle_path > insecure bootstrap.
    let persisted_bundle = match data.load_bundle(&config.trust_domain) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the persisted trust bundle");
            None
        }
    };
    let bundle = match (persisted_bundle, &config.trust_bundle_path) {
        (Some(b), _) => Some(b),
        (None, Some(path)) => Some(read_trust_bundle(&config, path)?),
        (None, None) => {
            tracing::warn!(
                "insecure_bootstrap: the issuer's certificate chain is not checked until the first attestation pins its bundle"
            );
            None
        }
    };
    let client = NodeClient::new(NodeClientConfig {
        address: config.issuer_address.clone(),
        trust_domain: config.trust_domain.clone(),
        bundle: bundle.clone(),
        insecure_bootstrap: bundle.is_none() && config.insecure_bootstrap,
    })
    .map_err(|e| RunError::Config(e.to_string()))?;

    let identity = match data.load_agent_svid(&config.trust_domain) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the persisted agent SVID");
            None
        }
    };
    let persisted_agent = identity.as_ref().map(|i| i.spiffe_id.clone());
    if let Some(id) = identity {
        client.set_identity(id);
    }

    let cache = Cache::new();
    let health = Arc::new(Health::new(cache.clone()));
    let (identity_tx, _) = watch::channel(IdentityState::default());
    let shared = Arc::new(Shared {
        client,
        cache: cache.clone(),
        data,
        persist_svids: config.persist_workload_svids,
        rpc_gate: RwLock::new(()),
        identity: identity_tx,
        reattest: Notify::new(),
        health: health.clone(),
        last_bundle: Mutex::new(None),
        federated_lock: Mutex::new(()),
        delegation: watch::channel(DelegationStatus::Unknown).0,
        delegation_announced: watch::channel(None).0,
    });
    shared.publish_bundle();
    let mut syncer = Syncer::new(shared.clone());
    match shared.data.open_state() {
        Ok(Some(reader)) => {
            if persisted_agent
                .as_ref()
                .is_some_and(|a| a.to_string() != reader.header().agent_id)
            {
                tracing::info!("the persisted entries belong to another agent ID; ignoring them");
            } else {
                match syncer.restore(reader, 0, config.persist_workload_svids) {
                    Ok((entries, svids)) => {
                        tracing::info!(entries, svids, "restored the synced state from data_dir")
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring the persisted synced state"),
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring the persisted synced state"),
    }

    match shared.data.load_federated() {
        Ok(federated) if !federated.is_empty() => {
            if let Err(e) = shared.cache.set_federated(federated) {
                tracing::warn!(error = %e, "ignoring the persisted federated bundles");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring the persisted federated bundles"),
    }

    let listener = socket::bind(&config.socket_path)?;
    health.set_workload_api_bound(true);
    let health_listener = match config.health_bind_address {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| RunError::Health { address, source })?,
        ),
        None => None,
    };
    let health_addr = match &health_listener {
        Some(l) => l.local_addr().ok().map(|a| a.to_string()),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let identity_task = tokio::spawn(
        IdentityManager::new(shared.clone(), config.node_attestor.clone(), join_token)
            .run(stop_rx.clone()),
    );
    let trigger = PushTrigger::spawn(shared.clone(), stop_rx.clone());
    let sync_task = tokio::spawn(syncer.run(trigger, stop_rx.clone()));
    let delegation_task = tokio::spawn(delegation::run(shared.clone(), stop_rx.clone()));
    let issuer = Arc::new(NodeApiIssuer(shared.clone()));
    let mut api_task = tokio::spawn(crate::workload_api::serve(
        listener,
        cache.clone(),
        attestation,
        issuer.clone(),
        DelegationBackend {
            issuer,
            state: shared.delegation.subscribe(),
        },
        stopped(stop_rx.clone()),
    ));
    let health_task = health_listener.map(|l| {
        tokio::spawn(crate::health::serve(
            l,
            health.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let socket_path = config.socket_path.display().to_string();
    tracing::info!(
        trust_domain = %config.trust_domain,
        socket_path = %socket_path,
        health = health_addr.as_deref().unwrap_or(""),
        issuer_address = %config.issuer_address,
        "agent started"
    );
    let ready_task = {
        let mut rx = cache.subscribe();
        let shared = shared.clone();
        let socket_path = socket_path.clone();
        let health_addr = health_addr.clone();
        tokio::spawn(async move {
            loop {
                let ready = rx.borrow_and_update().is_ready();
                if ready {
                    let agent_id = shared
                        .identity
                        .borrow()
                        .agent_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    tracing::info!(
                        socket_path = %socket_path,
                        health = health_addr.as_deref().unwrap_or(""),
                        agent_id = %agent_id,
                        svids = rx.borrow().svids.len(),
                        "agent ready"
                    );
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    tokio::pin!(shutdown);
    let mut identity_task = identity_task;
    let outcome: Result<(), RunError> = tokio::select! {
        _ = &mut shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
        r = &mut identity_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(RunError::Server(format!("identity task failed: {e}"))),
        },
        r = &mut api_task => match r {
            Ok(Ok(())) => Err(RunError::Server("the Workload API server stopped".into())),
            Ok(Err(e)) => Err(RunError::Server(e.to_string())),
            Err(e) => Err(RunError::Server(format!("Workload API task failed: {e}"))),
        },
    };

    let _ = stop_tx.send(true);
    ready_task.abort();
    if tokio::time::timeout(SHUTDOWN_GRACE, sync_task)
        .await
        .is_err()
    {
        tracing::warn!("the sync loop did not stop in time");
    }
    if !identity_task.is_finished() {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut identity_task).await;
    }
    if !api_task.is_finished() {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut api_task).await;
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, delegation_task)
        .await
        .is_err()
    {
        tracing::warn!("the delegation state task did not stop in time");
    }
    if let Some(t) = health_task {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, t).await;
    }
    socket::remove(&config.socket_path);
    outcome
}
