//! Runnable examples of Signet, with real processes: `examples/travel/run.sh` plays the travel
//! scenario of `docs/delegation.md` (alice → planner → search → the flights API) against a real
//! `signet-issuer` and `signet-agent`, and prints every decision. See `examples/README.md`.
//!
//! The binaries:
//!
//! - `travel-idp`: a **stand-in** for a company's OpenID Connect identity provider (a P-256 key,
//!   its JWK Set, ID tokens signed ES256). Not an IdP: no login, no discovery, no HTTP.
//! - `flights-api`: the tool API, a resource server. It gets its X509-SVID and trust bundle from
//!   the agent's Workload API, serves HTTPS with mutual TLS, takes the presenter's SPIFFE ID from
//!   the client certificate and verifies the `Authorization: Delegation <token>` header with
//!   `signet_sdk::delegation`, whose `DelegationKeySource` follows the keys and revocations of
//!   the agent's `FetchDelegationKeys` stream.
//! - `travel-client`: a workload's call to the flights API over mTLS with a delegation token.
//! - `travel-forge`: what an attacker does to a stolen token (rewrite its rights, append an
//!   untrusted block), to show the refusals.
//!
//! This library holds what they share: the Workload API ([`workload`]) and the rustls
//! configurations ([`tls`]).

pub mod tls;
pub mod workload;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The trust domain of the scenario.
pub const TRUST_DOMAIN: &str = "example.org";

/// The HTTP authorization scheme of delegation tokens: `Authorization: Delegation <token>`.
pub const AUTH_SCHEME: &str = "Delegation";

/// `t` (Unix seconds) as RFC 3339 UTC, to the second.
pub fn rfc3339(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_seconds)).to_string()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
