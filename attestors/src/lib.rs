//! Node attestors for Signet, behind small traits so that new ones (TPM, cloud instance identity,
//! Kubernetes) plug in without touching the node API.
//!
//! - [`node`]: the traits. Server side, [`node::NodeAttestor`] checks an agent's evidence, possibly
//!   through challenge round trips ([`node::ChallengeChannel`]), and returns the agent's SPIFFE ID and
//!   node selectors. Agent side, [`node::AgentAttestor`] produces the evidence and answers challenges.
//! - [`join_token`]: single-use join tokens. Only the pure parts live here (token generation,
//!   hashing, agent ID, selector, expiry rule); redeeming a token needs the issuer's store.
//! - [`x509pop`]: proof of possession of a key whose certificate chains to a configured CA bundle.
//!
//! This crate holds no datastore and performs no network I/O. It never logs or prints join tokens or
//! private keys (their holders redact `Debug`).

pub mod join_token;
pub mod node;
pub mod x509pop;

pub use node::{
    AgentAttestor, AttestError, ChallengeChannel, NodeAttestation, NodeAttestor, Selector,
};

/// Workload attestors (unix, cgroup, systemd) and process pinning against pid reuse.
pub mod workload;
