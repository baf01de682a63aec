//! The layout of a Signet delegation token (schema version [`SCHEMA_VERSION`]).
//!
//! **Authority block** (signed by the root key `root_key_id`):
//!
//! ```text
//! signet_delegation(1);
//! token_id("8b0c...");                       // this token's id (a UUID)
//! subject("https://idp.example.com#alice");  // who the work is for
//! subject_type("user");                      // "user" (an ID token) or "workload" (a SPIFFE ID)
//! subject_issuer("https://idp.example.com"); // the identity provider, or the trust domain
//! subject_name("alice@example.com");         // for people reading logs (optional)
//! actor(0, "spiffe://example.org/planner");  // the first actor
//! right("flights:read");                     // each granted right
//! max_depth(2);                              // hops allowed after the first actor
//! issued_at(2026-12-01T10:00:00Z);
//! expires_at(2026-12-01T10:10:00Z);
//! check if time($t), $t <= 2026-12-01T10:10:00Z;
//! ```
//!
//! **Hop block** `n` (a third-party block signed by an issuer delegation key):
//!
//! ```text
//! hop(1, "<new token id>", "<parent token id>");
//! actor(1, "spiffe://example.org/search");
//! delegated_by(1, "spiffe://example.org/planner");
//! hop_rights(1, ["flights:read"]);
//! hop_time(1, 2026-12-01T10:01:00Z);
//! hop_expires(1, 2026-12-01T10:06:00Z);
//! check if operation($op), ["flights:read"].contains($op);
//! check if time($t), $t <= 2026-12-01T10:06:00Z;
//! ```
//!
//! **Attenuation block** (first-party, appended by any holder offline): only checks, e.g.
//! `check if operation($op), ["flights:read"].contains($op);` and
//! `check if time($t), $t <= ...;`. Facts it might carry are ignored: verifiers read the chain
//! only from the authority block and blocks signed by a published issuer key.
//!
//! A verifier provides `time(now)`, `operation(op)` and, from the checked chain, `presenter(id)`,
//! `holder(id)`, `depth(n)`; rights come only from the authority block (`right($op)` in an
//! authorizer policy trusts the authority block alone).

use std::fmt;

/// The schema version in `signet_delegation(..)`.
pub const SCHEMA_VERSION: i64 = 1;

/// Longest right name, in bytes.
pub const MAX_RIGHT_LEN: usize = 128;

/// Most rights in one token.
pub const MAX_RIGHTS: usize = 64;

/// Longest subject id or name, in bytes.
pub const MAX_SUBJECT_LEN: usize = 2048;

/// What kind of party the subject is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// A person, proven by an OIDC ID token from a trusted identity provider.
    User,
    /// A workload, identified by its SPIFFE ID.
    Workload,
}

impl SubjectKind {
    /// `user` or `workload`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::Workload => "workload",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(SubjectKind::User),
            "workload" => Some(SubjectKind::Workload),
            _ => None,
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a delegation is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    /// Stable id: `<identity provider issuer>#<subject claim>` for users, the SPIFFE ID for
    /// workloads.
    pub id: String,
    /// User or workload.
    pub kind: SubjectKind,
    /// The identity provider's issuer URL, or the workload's trust domain.
    pub issuer: String,
    /// A human-readable name (e.g. the email), for logs only; may be empty.
    pub name: String,
}

/// Checks a right name: 1 to [`MAX_RIGHT_LEN`] bytes of `[A-Za-z0-9._:/*-]`.
pub fn check_right(right: &str) -> Result<(), String> {
    if right.is_empty() {
        return Err("a right is empty".into());
    }
    if right.len() > MAX_RIGHT_LEN {
        let start: String = right.chars().take(32).collect();
        return Err(format!(
            "right {start:?}... is longer than {MAX_RIGHT_LEN} bytes"
        ));
    }
    if let Some(c) = right
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '*' | '-')))
    {
        return Err(format!(
            "right {right:?} contains {c:?}: only letters, digits and . _ : / * - are allowed"
        ));
    }
    Ok(())
}

/// A new random token id.
pub fn new_token_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
