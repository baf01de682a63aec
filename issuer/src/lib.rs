//! signet-issuer: the server at the root of a Signet trust domain.
//!
//! It attests nodes (join tokens, x509pop), holds the CA, stores registration entries (SQLite
//! embedded, PostgreSQL for HA), mints X509-SVIDs for agents and for the workloads they vouch for,
//! and serves an admin API on a private Unix socket. It never logs private keys or join tokens.
//!
//! Modules: [`state`] (the shared issuer state), [`node`] (node API for agents), [`metrics`],
//! [`config`] (TOML configuration), [`admin`] (admin API server), [`entries`] (entry validation),
//! [`federation`] (federation relationships and bundle pollers), [`bundle_endpoint`] (the SPIFFE
//! bundle endpoint and OIDC discovery), [`idp`] (the OpenID Connect identity providers whose ID
//! tokens prove the subject of a delegation),
//! [`health`] (`/live`, `/ready`, `/metrics`), [`ca_sync`] (CA journal and own bundle in the
//! store), [`instrumented`] (store call metrics), [`audit`], [`logging`]; `tls_accept` (crate-private)
//! runs the TLS handshakes of the node API and the bundle endpoint. The binary adds the start-up
//! (`run`) and the admin CLI.

pub mod admin;
pub mod audit;
pub mod bundle_endpoint;
pub mod ca_sync;
pub mod config;
pub mod delegation;
pub mod entries;
pub mod federation;
pub mod health;
pub mod idp;
pub mod instrumented;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod state;
mod tls_accept;
