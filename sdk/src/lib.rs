//! What resource servers and workloads embed to verify Signet credentials.
//!
//! A server checks who calls it; a workload proves who it is. Both sides of that are here: the
//! caller hands over the tokens of a request and the trust material it holds (trust bundles from
//! the Workload API, a bundle endpoint or a file; the delegation keys), and gets back a verified
//! SPIFFE ID, a verified delegation chain, or a precise error. The verifiers themselves do no
//! network or file I/O and never accept a credential without its proof of possession. The one
//! transport, [`delegation::DelegationKeySource`] (following the node agent's published
//! delegation keys over its Unix socket), is behind the default `agent` feature; build with
//! `default-features = false` for a crate without tokio or tonic.
//!
//! Today it holds the WIT-SVID profile (the incubating SPIFFE profile of the WIMSE Workload
//! Identity Token) and its proof of possession, the WIMSE Workload Proof Token
//! (draft-ietf-wimse-wpt-02):
//!
//! - [`WitKey`] ([`key`]): a workload's WIT key, generated here or read from the private JWK a
//!   Workload API `FetchWITSVID` answer carries (`wit_svid_key`); its public key is what the
//!   issuer binds into the WIT-SVID's `cnf.jwk`.
//! - [`mint_wpt`] ([`wpt`]): what a client sends with its WIT-SVID: a short-lived WPT signed with
//!   the WIT key, for one target (`aud`), bound to the WIT (`wth`) and to other tokens of the
//!   request (`tth`, `oth`).
//! - [`WptVerifier`] ([`wpt`]): what a server runs on a request's WIT-SVID and WPT: the WIT-SVID
//!   against the WIT authorities of the caller's trust domain
//!   ([`signet_spiffe::wit::validate_wit_svid`]), then the WPT against the WIT's `cnf.jwk`, its
//!   audience, lifetime and token hashes, and a replay cache of WPT `jti`s.
//!
//! Delegation tokens ([`delegation`]): an AI agent acting on behalf of a user or another
//! workload presents a Biscuit token that names the subject, every actor of the chain and the
//! rights left. [`delegation::Verifier`] checks it for a request (keys, signatures, revocation,
//! expiry, that the presenter is the last actor, depth, rights, the server's own policy) and
//! returns the whole chain for the logs; [`delegation::DelegationKeySource`] keeps a verifier
//! current with the agent's keys and revocations; [`delegation::presenter_from_peer_certificate`]
//! names the presenter of a mutual TLS connection. See `docs/delegation.md`, "Verifying in a
//! resource server".
//!
//! Cryptography is aws-lc-rs only, except for delegation tokens, whose signatures `biscuit-auth`
//! checks with its own Ed25519 and P-256 code (an accepted exception). Private keys never appear
//! in `Debug` output, and the copies this crate makes of them are zeroized.

pub mod delegation;
pub mod key;
pub mod wpt;

pub use key::{KeyError, WitKey};
pub use wpt::{BoundTokens, VerifiedCaller, WptError, WptRequest, WptVerifier, mint_wpt};
