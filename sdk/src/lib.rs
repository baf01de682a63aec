//! What resource servers and workloads embed to verify Signet credentials.
//!
//! A server checks who calls it; a workload proves who it is. Both sides of that are here, with no
//! network or file I/O and no Signet process to talk to: the caller hands over the tokens of a
//! request and the trust bundles it already holds (from the Workload API, a bundle endpoint or a
//! file), and gets back a verified SPIFFE ID or a precise error. This crate must not grow a
//! transport, hold trust state of its own or accept a credential without its proof of possession.
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
//! Delegation tokens (an agent acting on behalf of a user or another workload) will be verified
//! here too, in a `delegation` module next to [`wpt`], with the same shape: the caller passes the
//! tokens and the bundles, the crate returns the verified chain of identities.
//!
//! Cryptography is aws-lc-rs only. Private keys never appear in `Debug` output, and the copies
//! this crate makes of them are zeroized.

pub mod key;
pub mod wpt;

pub use key::{KeyError, WitKey};
pub use wpt::{BoundTokens, VerifiedCaller, WptError, WptRequest, WptVerifier, mint_wpt};
