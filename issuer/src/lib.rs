//! signet-issuer: the server at the root of a Signet trust domain.
//!
//! It attests nodes (join tokens, x509pop), holds the CA, stores registration entries (SQLite
//! embedded, PostgreSQL for HA), mints X509-SVIDs for agents and for the workloads they vouch for,
//! and serves an admin API on a private Unix socket. It never logs private keys or join tokens.
//!
//! Modules: [`state`] (the shared issuer state), [`node`] (node API for agents), [`metrics`].

pub mod metrics;
pub mod node;
pub mod state;
