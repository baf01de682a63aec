//! signet-agent: attests its node to the issuer and (next) serves the SPIFFE Workload API.
//!
//! For now the crate is a library: [`node_client`] is the agent side of the node API (attestation,
//! agent SVID renewal, entry sync, batch X509-SVID signing, bundle). It authenticates the issuer by
//! its X509-SVID (`spiffe://<td>/signet/issuer`) and itself by its agent SVID (mutual TLS).
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
