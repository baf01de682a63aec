//! SPIFFE primitives shared by every Signet crate.
//!
//! - [`id`]: SPIFFE IDs and trust domains, with every rule of the SPIFFE-ID standard.
//! - [`bundle`]: the SPIFFE trust bundle (a JWK Set with `spiffe_sequence` and `spiffe_refresh_hint`).
//! - [`svid`]: the X509-SVID rules, for leaves and signing certificates, and chain verification.
//! - [`jwt`] and [`wit`]: JWT-SVID and WIT-SVID validation against the JWT and WIT authorities
//!   of a bundle.
//! - [`jwks`]: a plain JWK Set of signing keys (an OpenID Connect identity provider's keys).
//! - [`tls`]: peer authentication by SPIFFE ID against a trust bundle, and the rustls verifier
//!   adapter that applies it to TLS handshakes.
//!
//! This crate holds no keys and performs no I/O.

pub mod bundle;
pub mod id;
pub mod jwks;
pub mod svid;
pub mod tls;

pub use bundle::{Bundle, BundleError, JwtAuthority};
pub use id::{IdError, SpiffeId, TrustDomain};
pub use svid::SvidError;
/// JWT-SVID verification (JWS with an algorithm allowlist, bundle key lookup, claim rules).
pub mod jwt;
/// WIT-SVID verification (the incubating profile: `typ: wit+jwt`, WIT authorities, `cnf.jwk`).
pub mod wit;
