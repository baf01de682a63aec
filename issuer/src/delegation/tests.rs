#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use signet_delegation::{Attenuation, Request, VerifyError};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::Store;

use super::*;
use crate::audit::trace::{KIND_HOP, KIND_MINT, trace_token};
use crate::config::DelegationSettings;
use crate::idp::IdentityProviders;

const POLICY: &str = r#"
// Workloads of example.org may have the planner act for them.
may_act_for("spiffe://example.org/planner", "example.org");
ceiling("spiffe://example.org/planner", "flights:read");
ceiling("spiffe://example.org/planner", "flights:book");
may_delegate("spiffe://example.org/planner", "spiffe://example.org/search");
ceiling("spiffe://example.org/search", "flights:read");
may_delegate("spiffe://example.org/search", "spiffe://example.org/flights");
ceiling("spiffe://example.org/flights", "flights:read");
may_delegate("spiffe://example.org/flights", "spiffe://example.org/cache");
ceiling("spiffe://example.org/cache", "flights:read");

grant($r) <- operation("mint"), actor($a), ceiling($a, $r);
grant($r) <- operation("delegate"), next_actor($a), ceiling($a, $r);
max_ttl(600);
max_depth(2);

allow if operation("mint"), actor($a), subject_issuer($i), may_act_for($a, $i);
allow if operation("delegate"), actor($a), next_actor($n), may_delegate($a, $n);
deny if true;
"#;

struct Fixture {
    dir: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
    policies: std::path::PathBuf,
    store: Arc<dyn Store>,
    d: Delegation,
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn rights(r: &[&str]) -> BTreeSet<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("travel.datalog"), POLICY).unwrap();
    let (store_dir, store) = crate::audit::testing::temp_store().await;
    let d = Delegation::open(
        &DelegationSettings::default(),
        &policies,
        dir.path().join("keys"),
        TrustDomain::new("example.org").unwrap(),
        store.clone(),
        Arc::new(IdentityProviders::empty()),
    )
    .await
    .unwrap();
    d.persist_keys().await.unwrap();
    Fixture {
        dir,
        _store_dir: store_dir,
        policies,
        store,
        d,
    }
}

impl Fixture {
    async fn mint(
        &self,
        subject: &SpiffeId,
        actor: &str,
        r: &[&str],
    ) -> Result<Issued, DelegationError> {
        self.d
            .mint(MintInput {
                subject: SubjectProof::Workload(subject),
                actor: &id(actor),
                requested_by: "spiffe://example.org/agent/node1",
                rights: rights(r),
                ttl: None,
                max_depth: None,
                audit_kind: KIND_MINT,
            })
            .await
    }

    /// The planner mints for the `users/alice-app` workload with rights `r`.
    async fn planner_mint(&self, r: &[&str]) -> Result<Issued, DelegationError> {
        let subject = id("spiffe://example.org/users/alice-app");
        self.mint(&subject, "spiffe://example.org/planner", r).await
    }

    async fn hop(
        &self,
        token: &str,
        holder: &str,
        next: &str,
        r: &[&str],
    ) -> Result<Issued, DelegationError> {
        self.d
            .delegate(DelegateInput {
                token,
                holder: &id(holder),
                requested_by: "spiffe://example.org/agent/node1",
                next_actor: &id(next),
                rights: rights(r),
                ttl: None,
                audit_kind: KIND_HOP,
            })
            .await
    }

    async fn chain(&self) -> (Issued, Issued, Issued) {
        let t0 = self.planner_mint(&["flights:read"]).await.unwrap();
        let t1 = self
            .hop(
                &t0.token,
                "spiffe://example.org/planner",
                "spiffe://example.org/search",
                &[],
            )
            .await
            .unwrap();
        let t2 = self
            .hop(
                &t1.token,
                "spiffe://example.org/search",
                "spiffe://example.org/flights",
                &[],
            )
            .await
            .unwrap();
        (t0, t1, t2)
    }
}

#[tokio::test]
async fn mint_and_two_hops_make_a_chain_the_verifier_accepts_and_the_audit_log_traces() {
    let f = fixture().await;
    let (t0, t1, t2) = f.chain().await;
    assert_eq!(t0.chain.rights, rights(&["flights:read"]));
    assert_eq!(t0.chain.max_depth, 2);
    assert_eq!(t2.remaining_depth(), 0);
    assert_eq!(
        t2.chain.actors(),
        vec![
            "spiffe://example.org/planner",
            "spiffe://example.org/search",
            "spiffe://example.org/flights"
        ]
    );
    assert!(t2.chain.expires_at <= t1.chain.expires_at);
    let now = unix(SystemTime::now());
    assert!(
        t0.chain.expires_at <= now + 600,
        "the policy's max_ttl caps the TTL"
    );

    let v = f.d.verifier().unwrap();
    let decision = v
        .verify(
            &t2.token,
            &Request {
                presenter: "spiffe://example.org/flights",
                operation: "flights:read",
                now: SystemTime::now(),
            },
        )
        .unwrap();
    assert_eq!(
        decision.chain.subject.id,
        "spiffe://example.org/users/alice-app"
    );

    let trace = trace_token(f.store.as_ref(), t2.chain.token_id())
        .await
        .unwrap();
    assert!(trace.complete, "{:?}", trace.warnings);
    assert!(trace.warnings.is_empty(), "{:?}", trace.warnings);
    let by: Vec<_> = trace
        .hops
        .iter()
        .map(|h| h.authorized_by.clone().unwrap())
        .collect();
    assert_eq!(
        by,
        vec![
            "spiffe://example.org/planner",
            "spiffe://example.org/planner",
            "spiffe://example.org/search"
        ]
    );
    assert_eq!(trace.hops[0].token_id, t0.chain.token_id());
    assert_eq!(trace.hops[2].chain.len(), 3);
}

#[tokio::test]
async fn a_hop_by_a_workload_that_is_not_the_holder_is_refused_and_audited() {
    let f = fixture().await;
    let (_, t1, _) = f.chain().await;
    let e = f
        .hop(
            &t1.token,
            "spiffe://example.org/planner",
            "spiffe://example.org/flights",
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::NotTheHolder(_)), "{e}");
    let denied = f
        .store
        .list_audit_events_matching(
            0,
            100,
            &signet_store::AuditFilter {
                kind: Some(KIND_DENIED.to_owned()),
                kind_prefix: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].event.outcome, "denied");
    assert_eq!(denied[0].event.details["error"], "not_the_holder");
}

#[tokio::test]
async fn asking_for_a_right_the_token_does_not_carry_is_widening() {
    let f = fixture().await;
    let t0 = f.planner_mint(&["flights:read"]).await.unwrap();
    let e = f
        .hop(
            &t0.token,
            "spiffe://example.org/planner",
            "spiffe://example.org/search",
            &["flights:book"],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::Widening(_)), "{e}");
}

#[tokio::test]
async fn a_right_the_policy_does_not_grant_the_next_actor_is_denied() {
    let f = fixture().await;
    let t0 = f
        .planner_mint(&["flights:read", "flights:book"])
        .await
        .unwrap();
    let e = f
        .hop(
            &t0.token,
            "spiffe://example.org/planner",
            "spiffe://example.org/search",
            &["flights:book"],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::Denied(_)), "{e}");
    // Without explicit rights the hop gets what both allow.
    let t1 = f
        .hop(
            &t0.token,
            "spiffe://example.org/planner",
            "spiffe://example.org/search",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(t1.chain.rights, rights(&["flights:read"]));
}

#[tokio::test]
async fn an_offline_attenuation_binds_later_hops() {
    let f = fixture().await;
    let t0 = f
        .planner_mint(&["flights:read", "flights:book"])
        .await
        .unwrap();
    let keys = f.d.published_keys();
    let b = biscuit_auth::Biscuit::from_base64(t0.token.as_str(), |i: Option<u32>| {
        keys.root_key(i)
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    })
    .unwrap();
    let narrowed = token::attenuate(
        &b,
        &Attenuation {
            rights: Some(rights(&["flights:book"])),
            expires_at: None,
        },
    )
    .unwrap()
    .to_base64()
    .unwrap();
    // flights:read was cut offline: the hop cannot give it back.
    let e = f
        .hop(
            &narrowed,
            "spiffe://example.org/planner",
            "spiffe://example.org/search",
            &["flights:read"],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::Widening(_)), "{e}");
}

#[tokio::test]
async fn a_hop_past_the_policy_depth_is_refused() {
    let f = fixture().await;
    let (_, _, t2) = f.chain().await;
    let e = f
        .hop(
            &t2.token,
            "spiffe://example.org/flights",
            "spiffe://example.org/cache",
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::TooDeep(_)), "{e}");
}

#[tokio::test]
async fn an_actor_the_policy_does_not_name_cannot_mint() {
    let f = fixture().await;
    let subject = id("spiffe://example.org/users/alice-app");
    let e = f
        .mint(&subject, "spiffe://example.org/intruder", &["flights:read"])
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::Denied(_)), "{e}");
    // An actor outside the trust domain is refused before the policy.
    let e = f
        .mint(&subject, "spiffe://other.org/planner", &["flights:read"])
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::InvalidRequest(_)), "{e}");
    let e = f
        .mint(&subject, "spiffe://example.org/planner", &["bad right!"])
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::InvalidRequest(_)), "{e}");
}

#[tokio::test]
async fn an_id_token_without_identity_providers_is_refused() {
    let f = fixture().await;
    let e =
        f.d.mint(MintInput {
            subject: SubjectProof::IdToken("eyJhbGciOiJSUzI1NiJ9.e30.sig"),
            actor: &id("spiffe://example.org/planner"),
            requested_by: "test",
            rights: rights(&["flights:read"]),
            ttl: None,
            max_depth: None,
            audit_kind: KIND_MINT,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::InvalidIdToken(_)), "{e}");
}

#[tokio::test]
async fn revoking_a_token_revokes_every_token_derived_from_it() {
    let f = fixture().await;
    let (t0, t1, t2) = f.chain().await;
    let before = f.d.sequence();
    let out =
        f.d.revoke(t1.chain.token_id(), "compromised", "admin:uid=0")
            .await
            .unwrap();
    assert!(out.newly_revoked);
    assert!(f.d.sequence() > before);
    let mut derived = out.revoked_token_ids.clone();
    derived.sort();
    let mut expected = vec![
        t1.chain.token_id().to_owned(),
        t2.chain.token_id().to_owned(),
    ];
    expected.sort();
    assert_eq!(derived, expected);

    let v = f.d.verifier().unwrap();
    let now = SystemTime::now();
    let e = v
        .verify(
            &t2.token,
            &Request {
                presenter: "spiffe://example.org/flights",
                operation: "flights:read",
                now,
            },
        )
        .unwrap_err();
    assert!(matches!(e, VerifyError::Revoked { .. }), "{e}");
    // The parent is untouched.
    v.verify(
        &t0.token,
        &Request {
            presenter: "spiffe://example.org/planner",
            operation: "flights:read",
            now,
        },
    )
    .unwrap();
    // A revoked token cannot be delegated further.
    let e = f
        .hop(
            &t1.token,
            "spiffe://example.org/search",
            "spiffe://example.org/flights",
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::InvalidToken(_)), "{e}");
    // Twice is harmless; an unknown id is NotFound.
    assert!(
        !f.d.revoke(t1.chain.token_id(), "", "x")
            .await
            .unwrap()
            .newly_revoked
    );
    assert!(matches!(
        f.d.revoke("no-such-token", "", "x").await,
        Err(RevokeError::NotFound(_))
    ));
    // Another issuer sharing the store (and the key directory) reads the list.
    let reopened = Delegation::open(
        &DelegationSettings::default(),
        &f.policies,
        f.dir.path().join("keys"),
        TrustDomain::new("example.org").unwrap(),
        f.store.clone(),
        Arc::new(IdentityProviders::empty()),
    )
    .await
    .unwrap();
    assert_eq!(reopened.revocations().revoked.len(), 1);
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let f = fixture().await;
    let t0 = f.planner_mint(&["flights:read"]).await.unwrap();
    let mut bytes = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE,
        t0.token.as_str(),
    )
    .unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let tampered = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, &bytes);
    let e = f
        .hop(
            &tampered,
            "spiffe://example.org/planner",
            "spiffe://example.org/search",
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::InvalidToken(_)), "{e}");
}

#[tokio::test]
async fn the_policy_is_hot_reloaded_and_a_broken_file_keeps_the_last_good_one() {
    let f = fixture().await;
    let subject = id("spiffe://example.org/users/alice-app");
    let file = f.policies.join("travel.datalog");
    // Broken: the last good policy stays in force.
    std::fs::write(&file, format!("{POLICY}\nallow if operation(\"mint\"\n")).unwrap();
    assert!(!f.d.reload_policy_if_changed());
    f.mint(&subject, "spiffe://example.org/planner", &["flights:read"])
        .await
        .unwrap();
    // A policy without the planner: minting is denied at once.
    let without = POLICY.replace(
        "may_act_for(\"spiffe://example.org/planner\", \"example.org\");",
        "may_act_for(\"spiffe://example.org/other\", \"example.org\");",
    );
    assert_ne!(without, POLICY);
    std::fs::write(&file, without).unwrap();
    // A file's mtime may not move within the same second on some file systems: the length does.
    assert!(f.d.reload_policy_if_changed());
    let e = f
        .mint(&subject, "spiffe://example.org/planner", &["flights:read"])
        .await
        .unwrap_err();
    assert!(matches!(e, DelegationError::Denied(_)), "{e}");
}

#[tokio::test]
async fn an_invalid_policy_stops_opening_and_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.datalog"),
        "allow if true;\nnot datalog at all;\n",
    )
    .unwrap();
    let (_s, store) = crate::audit::testing::temp_store().await;
    let e = Delegation::open(
        &DelegationSettings::default(),
        dir.path(),
        dir.path().join("keys"),
        TrustDomain::new("example.org").unwrap(),
        store,
        Arc::new(IdentityProviders::empty()),
    )
    .await
    .unwrap_err();
    assert!(e.contains("a.datalog:2"), "{e}");
}

#[tokio::test]
async fn trace_accepts_the_token_itself() {
    let f = fixture().await;
    let (_, _, t2) = f.chain().await;
    let (id, warning) = token_id_of(&t2.token, Some(&f.d)).unwrap();
    assert_eq!(id, t2.chain.token_id());
    assert!(warning.is_none());
    // Without the keys, the id is read unverified, with a warning.
    let (id, warning) = token_id_of(&t2.token, None).unwrap();
    assert_eq!(id, t2.chain.token_id());
    assert!(warning.unwrap().contains("not verified"));
}
