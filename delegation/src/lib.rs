//! Signet delegation tokens: Biscuit tokens that carry an attested on-behalf-of chain
//! (user -> agent -> sub-agent -> tool), and the policy files that decide who may act for whom.
//!
//! The issuer mints a token ([`mint`]) whose authority block, signed with a delegation root key
//! (chosen by `root_key_id`), names the **subject** the work is for, the **first actor** (an
//! attested workload's SPIFFE ID), the granted **rights**, the expiry, the maximum delegation
//! depth and a token id. Each further hop ([`append_hop`]) is a **third-party block signed by the
//! issuer's delegation key**, so verifiers can trust what it says: the next actor, who delegated,
//! when, the narrowed rights and expiry, and the new token id with its parent. Any holder may
//! attenuate offline ([`attenuate`]): a first-party block that can only add checks, so it narrows
//! rights and expiry and can never add an actor (verifiers ignore facts of untrusted blocks).
//!
//! A verifier ([`Verifier`]) checks the root key by id, every signature, revocation, expiry, that
//! the presenter (the mTLS peer or proof-token SPIFFE ID) is the **last actor**, the depth, and
//! then the resource server's own Datalog policy, under explicit run limits; the [`Decision`]
//! carries the subject, the whole chain and the rights for logging.
//!
//! [`policy`] loads the issuer's policy files (Biscuit Datalog) with errors that name the file and
//! line, and evaluates mint and hop requests against them.
//!
//! The token layout (facts and checks of each block) is documented in `docs/delegation.md` and in
//! [`schema`]; it is what Python's `biscuit-python` or any other Biscuit implementation reads
//! with only the published public key. This crate performs no I/O besides reading policy files.

mod cache;
pub mod keys;
pub mod policy;
pub mod schema;
mod token;
mod verify;

pub use biscuit_auth::{AuthorizerLimits, Biscuit, KeyPair, PrivateKey, PublicKey};
pub use keys::{DelegationKeys, KeyInfo, RevocationList};
pub use schema::{Subject, SubjectKind};
pub use token::{
    Attenuation, Chain, Hop, HopRequest, MintRequest, TokenError, append_hop, attenuate, mint,
    parse_unverified, read_chain,
};
pub use verify::{DEFAULT_LIMITS, Decision, Request, Verifier, VerifyError};
