//! signet-agent: the node agent. It attests its node to the issuer, keeps the SVIDs of the
//! workloads registered under it fresh, and serves the SPIFFE Workload API on a Unix socket.
//!
//! - [`node_client`]: the agent side of the node API (attestation, agent SVID renewal, pushed entry
//!   sync, batch X509-SVID signing, bundles). It authenticates the issuer by its X509-SVID
//!   (`spiffe://<td>/signet/issuer`) and itself by its agent SVID (mutual TLS).
//! - [`runtime`]: identity, persistence, sync, rotation with jitter, outage handling.
//! - [`cache`] and [`workload_api`]: what workloads are served (X509-SVIDs pushed ahead of time;
//!   JWT-SVIDs and WIT-SVIDs minted on demand and cached), attested from the kernel's view of the
//!   caller.
//! - [`cli`]: `signet-agent api fetch x509 | fetch jwt | validate jwt | watch`, `healthcheck`.
//!
//! It never logs or prints private keys or join tokens.

/// The agent's in-memory cache of workload SVIDs and bundles, served by the Workload API.
pub mod cache;
pub mod cli;
pub mod config;
pub mod health;
pub mod node_client;
pub mod runtime;
/// The SPIFFE Workload API server (`SpiffeWorkloadAPI` on a Unix socket).
pub mod workload_api;
