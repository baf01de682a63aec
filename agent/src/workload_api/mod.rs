//! The SPIFFE Workload API server: the standard `SpiffeWorkloadAPI` gRPC service (no package, so
//! method paths are `/SpiffeWorkloadAPI/<Method>`) on a Unix socket, answering from the agent's
//! [`Cache`].
//!
//! Every call:
//! 1. must carry the metadata `workload.spiffe.io: true` (once), else `InvalidArgument`
//!    `security header missing from request`;
//! 2. is refused with `Unavailable` while the cache is not ready ([`Snapshot::is_ready`]);
//! 3. identifies its caller from the kernel (`SO_PEERCRED` of the connection) and attests it with
//!    a [`WorkloadAttestation`] into selectors (`Unavailable` if that fails);
//! 4. is served the SVIDs whose entry selectors are all among the caller's
//!    ([`Snapshot::svids_for`]); none: `PermissionDenied` `no identity issued`.
//!
//! `FetchX509SVID` and `FetchX509Bundles` are streams: the first message is sent at once, then a
//! new one, with the full state, each time the state served to that caller changes (rotation,
//! entry added or removed, own or federated bundle changed, an SVID expired); identical states are
//! not resent. If the caller loses every identity the stream ends with `PermissionDenied`
//! `no identity issued`; when the agent shuts down, with `Unavailable`.
//!
//! JWT-SVIDs are minted on demand by the issuer through a [`SvidIssuer`] and cached per entry and
//! audience set ([`jwt::JwtSvidCache`], renewed at half-life). `FetchJWTBundles` streams the JWT
//! authorities of the own and federated trust domains as JWK Sets; `ValidateJWTSVID` checks a
//! token against the own bundle and the bundles the caller's entries federate with. The
//! incubating WIT-SVID profile is served too ([`wit`]): `FetchWITSVID` streams WIT-SVIDs bound to
//! keys the agent generates per entry (renewed at half-life with a new key), `FetchWITBundles`
//! the WIT authorities. See `docs/workload-api.md` and `docs/wit-svid.md`.
//!
//! The Signet delegation service (`signet.delegation.v1.Delegation`, [`delegation`]) is served
//! on the same socket, with the same admission.
//!
//! Private keys are never logged: responses are not `Debug`-printed and keys kept for
//! deduplication are zeroized when dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use signet_proto::delegation::delegation_server::DelegationServer;
use signet_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use signet_spiffe::SpiffeId;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use zeroize::Zeroizing;

use crate::cache::Cache;
#[cfg(doc)]
use crate::cache::Snapshot;
use conn::PeerConn;

pub mod attest;
mod authority;
mod conn;
pub mod delegation;
mod huffman;
#[cfg(test)]
mod interop_tests;
pub mod jwt;
mod service;
pub mod tokens;
pub mod wit;

pub use attest::ProcessAttestation;
pub use conn::{ProcessPin, WorkloadConnectInfo};
pub use delegation::{
    DelegationBackend, DelegationFailure, DelegationIssuer, DelegationService, DelegationSnapshot,
    DelegationStatus,
};
pub use service::WorkloadApiService;

/// The metadata key every Workload API request must carry, with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The `PermissionDenied` message for a caller entitled to no identity (clients match this text).
pub const NO_IDENTITY_ISSUED: &str = "no identity issued";
/// The `InvalidArgument` message for a request without the security header (as SPIRE's).
pub const MISSING_HEADER: &str = "security header missing from request";

/// The kernel's credentials of the process at the other end of the socket (`SO_PEERCRED`, taken
/// when it connected), and that process pinned when the connection was accepted.
#[derive(Debug, Clone)]
pub struct PeerCred {
    /// Process ID.
    pub pid: i32,
    /// Effective user ID.
    pub uid: u32,
    /// Effective group ID.
    pub gid: u32,
    /// The process, pinned at accept time against PID reuse ([`ProcessPin::NotPinned`] when the
    /// service runs on a server other than [`serve`]).
    pub pin: ProcessPin,
}

/// Why a caller could not be attested. The Workload API answers `Unavailable` (the client
/// retries) and logs the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationFailure {
    /// The process exited, or its PID now names another process, before attestation finished.
    #[error("process {pid} exited or its PID was reused during attestation")]
    ProcessChanged {
        /// The PID given by the kernel.
        pid: i32,
    },
    /// A workload attestor failed.
    #[error("workload attestor `{attestor}` failed: {reason}")]
    Attestor {
        /// The attestor's name (`unix`, `cgroup`, `systemd`, ...).
        attestor: String,
        /// What went wrong.
        reason: String,
    },
}

/// Turns a caller's kernel credentials into selectors `(type, value)`, e.g. `("unix", "uid:1000")`.
///
/// The agent uses [`ProcessAttestation`] (the unix, cgroup and systemd attestors over the process
/// pinned at accept time); tests plug in their own.
#[async_trait]
pub trait WorkloadAttestation: Send + Sync {
    /// The selectors of the process `peer` (any order; duplicates are harmless).
    async fn attest(&self, peer: PeerCred) -> Result<Vec<(String, String)>, AttestationFailure>;
}

/// A token (JWT-SVID or WIT-SVID) the issuer minted for an entry.
///
/// `Debug` never prints the token (a credential).
pub struct MintedToken {
    /// Its `sub`: the entry's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The token (JWS compact serialization), wiped when dropped.
    pub token: Zeroizing<String>,
    /// Its `iat`.
    pub issued_at: std::time::SystemTime,
    /// Its `exp`.
    pub expires_at: std::time::SystemTime,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl MintedToken {
    /// A minted token.
    pub fn new(
        spiffe_id: SpiffeId,
        token: String,
        issued_at: std::time::SystemTime,
        expires_at: std::time::SystemTime,
    ) -> Self {
        Self {
            spiffe_id,
            token: Zeroizing::new(token),
            issued_at,
            expires_at,
        }
    }
}

impl tokens::Token for MintedToken {
    fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }
    fn issued_at(&self) -> std::time::SystemTime {
        self.issued_at
    }
    fn expires_at(&self) -> std::time::SystemTime {
        self.expires_at
    }
}

/// Why the issuer did not mint a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerFailure {
    /// The issuer cannot be reached or failed: the workload may retry (`Unavailable`).
    #[error("the issuer is unavailable: {0}")]
    Unavailable(String),
    /// The issuer refused (e.g. the entry is no longer authorized for this agent):
    /// `PermissionDenied`.
    #[error("the issuer refused: {0}")]
    Refused(String),
}

/// Mints the credentials that are made on demand rather than pushed ahead of time, for entries
/// the agent already serves: JWT-SVIDs (whose audience the workload chooses) and WIT-SVIDs (bound
/// to a key the agent generates for the workload). The agent runtime implements it over the node
/// API; tests plug in their own.
#[async_trait]
pub trait SvidIssuer: Send + Sync {
    /// A JWT-SVID for `entry_id` with the audiences `audience` (sorted, unique, non-empty).
    async fn mint_jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<MintedToken, IssuerFailure>;

    /// A WIT-SVID for `entry_id` binding the public key `public_key_spki` (SubjectPublicKeyInfo
    /// DER) in its `cnf.jwk`.
    async fn mint_wit_svid(
        &self,
        entry_id: &str,
        public_key_spki: &[u8],
    ) -> Result<MintedToken, IssuerFailure>;
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("workload API server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Pause after a failed `accept` (e.g. out of file descriptors), so that the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the Workload API and the delegation service on `listener` until `shutdown`
/// completes, then ends every open stream (with `Unavailable`) and returns once the connections
/// are closed.
///
/// Each accepted connection's process is pinned at once ([`ProcessPin`]), before any request is
/// read. The caller creates the listener (socket path, directory and mode are its business).
pub async fn serve(
    listener: UnixListener,
    cache: Cache,
    attestor: Arc<dyn WorkloadAttestation>,
    issuer: Arc<dyn SvidIssuer>,
    delegation: DelegationBackend,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let delegation =
        DelegationService::new(cache.clone(), attestor.clone(), delegation, stop_rx.clone());
    let service = WorkloadApiService::new(cache, attestor, issuer, stop_rx);
    let incoming = UnixListenerStream::new(listener).then(|conn| async move {
        match conn {
            Ok(stream) => Ok(PeerConn::accept(stream)),
            Err(e) => {
                tracing::warn!(error = %e, "workload API: cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                Err(e)
            }
        }
    });
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(service))
        .add_service(DelegationServer::new(delegation))
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    Ok(())
}
