//! Protocol buffer definitions and generated gRPC code for Signet.
//!
//! - [`node`]: the node API between `signet-agent` and `signet-issuer` (gRPC over TLS).
//! - [`admin`]: the admin API of `signet-issuer` (gRPC on a private Unix socket).
//! - [`delegation`]: the agent's delegation service (gRPC on the Workload API socket).
//!
//! The `.proto` sources live in `proto/proto/`; code is generated at build time by protox (no system
//! `protoc` needed). This crate contains no logic.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Node API: attestation, agent SVID renewal, entry sync, batch X509-SVID signing.
pub mod node {
    tonic::include_proto!("signet.node.v1");
}

/// Admin API: entries, join tokens, agents, bundles, CA, minting, health.
pub mod admin {
    tonic::include_proto!("signet.admin.v1");
}

/// The delegation service of the agent's Workload API socket (`signet.delegation.v1.Delegation`).
pub mod delegation {
    tonic::include_proto!("signet.delegation.v1");
}

/// The SPIFFE Workload API (`SpiffeWorkloadAPI`, the standard's `workloadapi.proto`, which has no
/// `package` line, so prost names its output `_.rs` and method paths are `/SpiffeWorkloadAPI/...`).
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}
