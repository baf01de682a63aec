//! The one test suite every [`Store`] implementation must pass.
//!
//! Each function takes a fresh, empty store and panics on the first violated expectation. The
//! backends' integration tests (`store/tests/sqlite.rs`, `store/tests/postgres.rs`) generate one
//! test per function with [`for_each_store_test!`](crate::for_each_store_test), so a function
//! added here runs against every backend.

// This module is test code shipped in the library so that every backend (and future ones in other
// crates) can run it; panicking on a failed expectation is its purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{
    AttestedAgent, AuditChainError, AuditFilter, DeletedEntry, EntryFilter, EntryMove,
    FederationRelationship, JoinToken, JoinTokenRedemption, JoinTokenUse, NewAuditEvent, NewEntry,
    Page, RegistrationEntry, Selector, Store, StoreError, StoredBundle, audit_hash,
    verify_audit_chain,
};
use futures::future::join_all;
use serde_json::json;
use std::collections::BTreeSet;

/// Calls `$m!(name, name, ...)` with the name of every suite function, e.g. to generate one
/// `#[tokio::test]` per function for a backend.
#[macro_export]
macro_rules! for_each_store_test {
    ($m:ident) => {
        $m!(
            ping,
            entries_crud,
            entry_not_found,
            entry_selectors_normalized,
            revision_monotonic,
            changes_since_with_tombstones,
            changes_since_record_parents_and_moves,
            list_entries_filters,
            list_entries_paging,
            list_entries_by_parents,
            entry_uniqueness_conflict,
            nothing_half_stored_on_conflict,
            update_entry_stale_revision,
            concurrent_entry_creates,
            agents_lifecycle,
            agent_banned_conflict,
            agent_alias_entries_atomic,
            join_token_single_use,
            join_token_concurrent_consume,
            join_token_prune,
            join_token_redeem_outcomes,
            join_token_redeem_alias_entry,
            join_token_redeem_banned_agent_leaves_token_unspent,
            join_token_concurrent_redeem,
            bundles,
            federation_relationships,
            journals,
            audit_append_and_verify,
            audit_tamper_detection,
            audit_concurrent_appends,
            audit_head_and_filters,
        );
    };
}

fn sel(s: &str) -> Selector {
    let (kind, value) = s.split_once(':').expect("selector type:value");
    Selector::new(kind, value)
}

fn entry(spiffe_id: &str, parent_id: &str, selectors: &[&str]) -> NewEntry {
    NewEntry {
        spiffe_id: spiffe_id.into(),
        parent_id: parent_id.into(),
        selectors: selectors.iter().map(|s| sel(s)).collect(),
        ..NewEntry::default()
    }
}

fn agent(spiffe_id: &str) -> AttestedAgent {
    AttestedAgent {
        spiffe_id: spiffe_id.into(),
        attestation_type: "x509pop".into(),
        serial: "01".into(),
        expires_at: 2_000_000_000,
        selectors: vec![sel("x509pop:subject:cn:node1")],
        banned: false,
        can_reattest: true,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    }
}

fn token(hash: &str, expires_at: i64, alias: Option<&str>) -> JoinToken {
    JoinToken {
        token_hash: hash.into(),
        expires_at,
        alias_spiffe_id: alias.map(Into::into),
        created_at: 1_700_000_000,
        used_at: None,
    }
}

fn ids(entries: &[RegistrationEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn all_entries(store: &dyn Store) -> Vec<RegistrationEntry> {
    store
        .list_entries(&EntryFilter::default(), &Page::default())
        .await
        .unwrap()
        .0
}

/// `ping` answers on a fresh store, which is empty at revision 0.
pub async fn ping(store: &dyn Store) {
    store.ping().await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.count_entries().await.unwrap(), 0);
    assert_eq!(store.count_agents().await.unwrap(), 0);
    assert!(all_entries(store).await.is_empty());
    assert!(store.list_agents().await.unwrap().is_empty());
    assert!(store.list_bundles().await.unwrap().is_empty());
    assert!(store.list_audit_events(0, 0).await.unwrap().is_empty());
}

/// Every field of an entry survives create, get, update and delete unchanged.
pub async fn entries_crud(store: &dyn Store) {
    let new = NewEntry {
        spiffe_id: "spiffe://example.org/web".into(),
        parent_id: "spiffe://example.org/signet/agent/x509pop/node1".into(),
        selectors: vec![sel("unix:gid:0"), sel("unix:uid:1000")],
        x509_svid_ttl: u32::MAX,
        jwt_svid_ttl: 300,
        dns_names: vec!["web.example.org".into(), "localhost".into()],
        hint: "web – ünïcode \"quoted\"".into(),
        admin: true,
        downstream: true,
        federates_with: vec!["partner.org".into(), "other.org".into()],
        expires_at: Some(4_000_000_000),
    };
    let created = store.create_entry(new.clone()).await.unwrap();
    assert_eq!(created.fields, new);
    assert!(uuid::Uuid::parse_str(&created.id).is_ok(), "id is a UUID");
    assert!(created.revision > 0);
    assert!(created.created_at > 1_600_000_000, "created_at is now");
    assert_eq!(
        store.get_entry(&created.id).await.unwrap().as_ref(),
        Some(&created)
    );
    assert_eq!(store.count_entries().await.unwrap(), 1);

    let mut changed = created.clone();
    changed.fields = NewEntry {
        spiffe_id: "spiffe://example.org/web2".into(),
        parent_id: "spiffe://example.org/other-parent".into(),
        selectors: vec![sel("k8s:ns:prod")],
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: vec![],
        hint: String::new(),
        admin: false,
        downstream: false,
        federates_with: vec![],
        expires_at: None,
    };
    let updated = store.update_entry(changed.clone()).await.unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.fields, changed.fields);
    assert_eq!(updated.created_at, created.created_at, "created_at kept");
    assert!(updated.revision > created.revision);
    assert_eq!(
        store.get_entry(&created.id).await.unwrap().as_ref(),
        Some(&updated)
    );
    // The old selectors are gone from the index, the new ones are there.
    let by = |s: &str| EntryFilter {
        selectors: vec![sel(s)],
        ..EntryFilter::default()
    };
    let page = Page::default();
    assert!(
        store
            .list_entries(&by("unix:uid:1000"), &page)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        ids(&store
            .list_entries(&by("k8s:ns:prod"), &page)
            .await
            .unwrap()
            .0),
        vec![created.id.clone()]
    );

    let deleted = store.delete_entry(&created.id).await.unwrap();
    assert_eq!(deleted, updated, "delete returns the entry as it was");
    assert_eq!(store.get_entry(&created.id).await.unwrap(), None);
    assert_eq!(store.count_entries().await.unwrap(), 0);
    assert!(
        store
            .list_entries(&by("k8s:ns:prod"), &page)
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

/// Missing entries: `get` is `None`, `update`/`delete` are `NotFound`, and nothing changes.
pub async fn entry_not_found(store: &dyn Store) {
    let missing = "00000000-0000-4000-8000-000000000000";
    assert_eq!(store.get_entry(missing).await.unwrap(), None);
    let err = store.delete_entry(missing).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "entry", id } if id == missing),
        "{err:?}"
    );
    let ghost = RegistrationEntry {
        id: missing.into(),
        fields: entry("spiffe://example.org/a", "spiffe://example.org/p", &["u:1"]),
        revision: 0,
        created_at: 0,
    };
    let err = store.update_entry(ghost).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "entry", id } if id == missing),
        "{err:?}"
    );
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.count_entries().await.unwrap(), 0);
}

/// Selectors are stored sorted and de-duplicated; `type:value` splits are distinct selectors.
pub async fn entry_selectors_normalized(store: &dyn Store) {
    let e = store
        .create_entry(entry(
            "spiffe://example.org/a",
            "spiffe://example.org/p",
            &[
                "unix:uid:1000",
                "k8s:ns:a",
                "unix:uid:1000",
                "docker:label:x",
            ],
        ))
        .await
        .unwrap();
    let expected = vec![sel("docker:label:x"), sel("k8s:ns:a"), sel("unix:uid:1000")];
    assert_eq!(e.fields.selectors, expected);
    assert_eq!(
        store
            .get_entry(&e.id)
            .await
            .unwrap()
            .unwrap()
            .fields
            .selectors,
        expected
    );
    // Same text, different split: a different selector set, so not a duplicate.
    let other = store
        .create_entry(NewEntry {
            selectors: vec![
                Selector::new("docker", "label:x"),
                Selector::new("k8s:ns", "a"),
                Selector::new("unix", "uid:1000"),
            ],
            ..entry("spiffe://example.org/a", "spiffe://example.org/p", &[])
        })
        .await
        .unwrap();
    let only = EntryFilter {
        selectors: vec![Selector::new("k8s", "ns:a")],
        ..EntryFilter::default()
    };
    assert_eq!(
        ids(&store.list_entries(&only, &Page::default()).await.unwrap().0),
        vec![e.id.clone()]
    );
    assert_ne!(other.id, e.id);
}

/// Each entry mutation bumps the store revision by one; failures and reads bump nothing.
pub async fn revision_monotonic(store: &dyn Store) {
    let mut last = store.current_revision().await.unwrap();
    let mut check = |rev: i64, current: i64| {
        assert_eq!(rev, last + 1, "one bump per mutation");
        assert_eq!(current, rev, "current revision is the last mutation's");
        last = rev;
    };
    let a = store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    check(a.revision, store.current_revision().await.unwrap());
    let b = store
        .create_entry(entry("spiffe://td/b", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    check(b.revision, store.current_revision().await.unwrap());
    let a2 = store.update_entry(a.clone()).await.unwrap();
    check(a2.revision, store.current_revision().await.unwrap());
    assert_eq!(
        store.get_entry(&a.id).await.unwrap().unwrap().revision,
        a2.revision
    );

    // Failed mutations leave the revision alone.
    let before = store.current_revision().await.unwrap();
    assert!(store.create_entry(b.fields.clone()).await.is_err());
    assert!(store.delete_entry("nope").await.is_err());
    assert_eq!(store.current_revision().await.unwrap(), before);

    store.delete_entry(&b.id).await.unwrap();
    let after_delete = store.current_revision().await.unwrap();
    assert_eq!(after_delete, before + 1);
}

/// `entry_changes_since` returns entries changed and ids deleted strictly after a revision.
pub async fn changes_since_with_tombstones(store: &dyn Store) {
    let r0 = store.current_revision().await.unwrap();
    let empty = store.entry_changes_since(r0).await.unwrap();
    assert!(empty.updated.is_empty() && empty.deleted.is_empty() && empty.moved.is_empty());
    assert!(empty.history_complete);
    assert_eq!(empty.revision, r0);

    let a = store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    let b = store
        .create_entry(entry("spiffe://td/b", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    let c = store.entry_changes_since(r0).await.unwrap();
    assert_eq!(c.updated, vec![a.clone(), b.clone()], "in revision order");
    assert!(c.deleted.is_empty());
    assert_eq!(c.revision, b.revision);

    let c = store.entry_changes_since(a.revision).await.unwrap();
    assert_eq!(c.updated, vec![b.clone()], "strictly after");

    let a2 = store.update_entry(a.clone()).await.unwrap();
    let c = store.entry_changes_since(b.revision).await.unwrap();
    assert_eq!(c.updated, vec![a2.clone()]);
    assert_eq!(c.revision, a2.revision);

    store.delete_entry(&b.id).await.unwrap();
    let rev_deleted = store.current_revision().await.unwrap();
    let c = store.entry_changes_since(a2.revision).await.unwrap();
    assert!(c.updated.is_empty());
    assert_eq!(
        c.deleted,
        vec![DeletedEntry {
            id: b.id.clone(),
            parent_id: Some("spiffe://td/p".into()),
            revision: rev_deleted,
        }]
    );
    assert_eq!(c.revision, rev_deleted);

    // From the beginning: a (updated) is there, b only as a deletion.
    let c = store.entry_changes_since(r0).await.unwrap();
    assert_eq!(c.updated, vec![a2]);
    assert_eq!(c.deleted_ids().collect::<Vec<_>>(), vec![b.id.as_str()]);

    // Created then deleted after `since`: only the deletion is reported.
    let t = store
        .create_entry(entry("spiffe://td/t", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    store.delete_entry(&t.id).await.unwrap();
    let c = store.entry_changes_since(rev_deleted).await.unwrap();
    assert!(c.updated.is_empty());
    assert_eq!(c.deleted_ids().collect::<Vec<_>>(), vec![t.id.as_str()]);

    let now = store.current_revision().await.unwrap();
    let c = store.entry_changes_since(now).await.unwrap();
    assert!(c.updated.is_empty() && c.deleted.is_empty() && c.moved.is_empty());
    assert_eq!(c.revision, now);
}

/// Tombstones keep the deleted entry's parent, and every update that changes an entry's parent
/// records the previous parent at that revision; other updates record no move.
pub async fn changes_since_record_parents_and_moves(store: &dyn Store) {
    let r0 = store.current_revision().await.unwrap();
    let a = store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p1", &["u:1"]))
        .await
        .unwrap();
    // Not a move: same parent, other fields changed.
    let mut a1 = a.clone();
    a1.fields.hint = "h".into();
    let a1 = store.update_entry(a1).await.unwrap();
    let mut a2 = a1.clone();
    a2.fields.parent_id = "spiffe://td/p2".into();
    let a2 = store.update_entry(a2).await.unwrap();
    let mut a3 = a2.clone();
    a3.fields.parent_id = "spiffe://td/p3".into();
    a3.fields.selectors = vec![sel("u:2")];
    let a3 = store.update_entry(a3).await.unwrap();
    let moves = vec![
        EntryMove {
            id: a.id.clone(),
            old_parent_id: "spiffe://td/p1".into(),
            revision: a2.revision,
        },
        EntryMove {
            id: a.id.clone(),
            old_parent_id: "spiffe://td/p2".into(),
            revision: a3.revision,
        },
    ];
    let c = store.entry_changes_since(r0).await.unwrap();
    assert_eq!(c.updated, vec![a3.clone()]);
    assert_eq!(c.moved, moves);
    assert!(c.history_complete);
    let c = store.entry_changes_since(a2.revision).await.unwrap();
    assert_eq!(c.moved, moves[1..].to_vec(), "strictly after");
    let c = store.entry_changes_since(a3.revision).await.unwrap();
    assert!(c.moved.is_empty());

    // Deleted after moving: the tombstone names the last parent; the moves stay reported.
    let deleted = store.delete_entry(&a.id).await.unwrap();
    assert_eq!(deleted, a3);
    let rev = store.current_revision().await.unwrap();
    let c = store.entry_changes_since(r0).await.unwrap();
    assert!(c.updated.is_empty());
    assert_eq!(c.moved, moves);
    assert_eq!(
        c.deleted,
        vec![DeletedEntry {
            id: a.id.clone(),
            parent_id: Some("spiffe://td/p3".into()),
            revision: rev,
        }]
    );

    // A refused update (stale revision) records no move.
    let b = store
        .create_entry(entry("spiffe://td/b", "spiffe://td/p1", &["u:1"]))
        .await
        .unwrap();
    let mut stale = b.clone();
    stale.revision = b.revision - 1;
    stale.fields.parent_id = "spiffe://td/p9".into();
    store.update_entry(stale).await.unwrap_err();
    assert!(
        store
            .entry_changes_since(rev)
            .await
            .unwrap()
            .moved
            .is_empty()
    );
}

/// Filters by SPIFFE ID, parent ID and selector superset, alone and combined.
pub async fn list_entries_filters(store: &dyn Store) {
    let (a, b) = ("spiffe://td/a", "spiffe://td/b");
    let (p1, p2) = ("spiffe://td/p1", "spiffe://td/p2");
    let e1 = store
        .create_entry(entry(a, p1, &["unix:uid:1000", "unix:gid:0"]))
        .await
        .unwrap();
    let e2 = store
        .create_entry(entry(a, p2, &["unix:uid:1000"]))
        .await
        .unwrap();
    let e3 = store
        .create_entry(entry(b, p1, &["unix:uid:1000", "k8s:ns:default"]))
        .await
        .unwrap();
    let e4 = store.create_entry(entry(b, p1, &[])).await.unwrap();
    let e5 = store
        .create_entry(entry(b, p2, &["k8s:uid:1000"]))
        .await
        .unwrap();

    let list = |filter: EntryFilter| async move {
        sorted(ids(&store
            .list_entries(&filter, &Page::default())
            .await
            .unwrap()
            .0))
    };
    let with = |sels: &[&str]| EntryFilter {
        selectors: sels.iter().map(|s| sel(s)).collect(),
        ..EntryFilter::default()
    };
    let want = |es: &[&RegistrationEntry]| sorted(es.iter().map(|e| e.id.clone()).collect());

    assert_eq!(
        list(EntryFilter::default()).await,
        want(&[&e1, &e2, &e3, &e4, &e5])
    );
    assert_eq!(list(with(&["unix:uid:1000"])).await, want(&[&e1, &e2, &e3]));
    assert_eq!(
        list(with(&["unix:uid:1000", "unix:uid:1000"])).await,
        want(&[&e1, &e2, &e3]),
        "duplicate filter selectors"
    );
    assert_eq!(
        list(with(&["unix:gid:0", "unix:uid:1000"])).await,
        want(&[&e1])
    );
    assert!(
        list(with(&["unix:gid:0", "k8s:ns:default"]))
            .await
            .is_empty()
    );
    assert_eq!(list(with(&["k8s:uid:1000"])).await, want(&[&e5]));
    assert!(list(with(&["unix:uid:1001"])).await.is_empty());
    assert_eq!(
        list(EntryFilter {
            spiffe_id: Some(a.into()),
            ..EntryFilter::default()
        })
        .await,
        want(&[&e1, &e2])
    );
    assert_eq!(
        list(EntryFilter {
            parent_id: Some(p1.into()),
            ..EntryFilter::default()
        })
        .await,
        want(&[&e1, &e3, &e4])
    );
    assert_eq!(
        list(EntryFilter {
            parent_id: Some(p1.into()),
            selectors: vec![sel("unix:uid:1000")],
            ..EntryFilter::default()
        })
        .await,
        want(&[&e1, &e3])
    );
    assert_eq!(
        list(EntryFilter {
            spiffe_id: Some(b.into()),
            parent_id: Some(p2.into()),
            selectors: vec![sel("k8s:uid:1000")],
        })
        .await,
        want(&[&e5])
    );
    assert!(
        list(EntryFilter {
            spiffe_id: Some("spiffe://td/none".into()),
            ..EntryFilter::default()
        })
        .await
        .is_empty()
    );
    // Results carry full entries.
    let (got, _) = store
        .list_entries(&with(&["unix:gid:0"]), &Page::default())
        .await
        .unwrap();
    assert_eq!(got, vec![e1]);
}

/// Paging by id cursor visits every entry once, in id order, with and without filters.
pub async fn list_entries_paging(store: &dyn Store) {
    let mut all = Vec::new();
    for i in 0..25 {
        let sels: &[&str] = if i % 2 == 0 {
            &["unix:uid:0", "even:yes"]
        } else {
            &["unix:uid:0"]
        };
        all.push(
            store
                .create_entry(entry(&format!("spiffe://td/w{i}"), "spiffe://td/p", sels))
                .await
                .unwrap()
                .id,
        );
    }
    let all = sorted(all);

    for size in [1u32, 5, 10, 24, 25, 26] {
        let mut seen = Vec::new();
        let mut page = Page { size, after: None };
        let mut pages = 0;
        loop {
            let (got, next) = store
                .list_entries(&EntryFilter::default(), &page)
                .await
                .unwrap();
            pages += 1;
            assert!(got.len() <= size as usize);
            assert!(!got.is_empty(), "no empty page (size {size})");
            seen.extend(ids(&got));
            match next {
                Some(cursor) => {
                    assert_eq!(Some(&cursor), seen.last(), "cursor is the last id");
                    page.after = Some(cursor);
                }
                None => break,
            }
        }
        assert_eq!(seen, all, "size {size}: every entry once, in id order");
        assert_eq!(pages, all.len().div_ceil(size as usize), "size {size}");
    }

    let (unpaged, next) = store
        .list_entries(&EntryFilter::default(), &Page::default())
        .await
        .unwrap();
    assert_eq!(ids(&unpaged), all);
    assert_eq!(next, None);

    // A filtered listing pages too.
    let even = EntryFilter {
        selectors: vec![sel("even:yes")],
        ..EntryFilter::default()
    };
    let (first, next) = store
        .list_entries(
            &even,
            &Page {
                size: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 10);
    let (rest, none) = store
        .list_entries(
            &even,
            &Page {
                size: 10,
                after: next,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(none, None);

    // A cursor past the end gives an empty page.
    let (after_end, next) = store
        .list_entries(
            &EntryFilter::default(),
            &Page {
                size: 10,
                after: Some("zzzz".into()),
            },
        )
        .await
        .unwrap();
    assert!(after_end.is_empty());
    assert_eq!(next, None);
}

/// `list_entries_by_parents` returns exactly the entries under any of the given parents.
pub async fn list_entries_by_parents(store: &dyn Store) {
    let mut by_parent: Vec<Vec<String>> = vec![Vec::new(); 3];
    for i in 0..9 {
        let e = store
            .create_entry(entry(
                &format!("spiffe://td/w{i}"),
                &format!("spiffe://td/p{}", i % 3),
                &["unix:uid:0"],
            ))
            .await
            .unwrap();
        by_parent[i % 3].push(e.id);
    }
    let got = store
        .list_entries_by_parents(&["spiffe://td/p0".into(), "spiffe://td/p2".into()])
        .await
        .unwrap();
    let mut want = by_parent[0].clone();
    want.extend(by_parent[2].clone());
    assert_eq!(ids(&got), sorted(want), "ordered by id");
    assert!(
        got.iter()
            .all(|e| e.fields.selectors == vec![sel("unix:uid:0")])
    );

    assert!(store.list_entries_by_parents(&[]).await.unwrap().is_empty());
    assert!(
        store
            .list_entries_by_parents(&["spiffe://td/nobody".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let dup = store
        .list_entries_by_parents(&["spiffe://td/p1".into(), "spiffe://td/p1".into()])
        .await
        .unwrap();
    assert_eq!(ids(&dup), sorted(by_parent[1].clone()), "no duplicates");
}

/// Same SPIFFE ID, parent and selector set (in any order) is refused, naming the existing entry.
pub async fn entry_uniqueness_conflict(store: &dyn Store) {
    let first = store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["u:1", "g:2"]))
        .await
        .unwrap();
    let err = store
        .create_entry(entry(
            "spiffe://td/a",
            "spiffe://td/p",
            &["g:2", "u:1", "u:1"],
        ))
        .await
        .unwrap_err();
    match &err {
        StoreError::AlreadyExists(msg) => {
            assert!(msg.contains(&first.id), "message names the entry: {msg}");
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // Other TTLs or hints do not make it a different entry.
    let err = store
        .create_entry(NewEntry {
            x509_svid_ttl: 60,
            hint: "other".into(),
            ..entry("spiffe://td/a", "spiffe://td/p", &["u:1", "g:2"])
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    // A different selector set, parent or ID is a different entry.
    store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p2", &["u:1", "g:2"]))
        .await
        .unwrap();
    store
        .create_entry(entry("spiffe://td/b", "spiffe://td/p", &["u:1", "g:2"]))
        .await
        .unwrap();
    store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &[]))
        .await
        .unwrap();
    assert_eq!(store.count_entries().await.unwrap(), 5);
    // Updating an entry onto itself is not a conflict.
    store.update_entry(first).await.unwrap();
}

/// A refused create or update leaves no trace: no row, no selector, no revision bump.
pub async fn nothing_half_stored_on_conflict(store: &dyn Store) {
    let first = store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["u:1", "g:2"]))
        .await
        .unwrap();
    let second = store
        .create_entry(entry("spiffe://td/b", "spiffe://td/p", &["z:9"]))
        .await
        .unwrap();
    let revision = store.current_revision().await.unwrap();

    // Update `second` onto `first`'s identity: refused, `second` unchanged.
    let mut clash = second.clone();
    clash.fields = NewEntry {
        hint: "changed".into(),
        ..first.fields.clone()
    };
    let err = store.update_entry(clash).await.unwrap_err();
    match &err {
        StoreError::AlreadyExists(msg) => assert!(msg.contains(&first.id), "{msg}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.get_entry(&second.id).await.unwrap(),
        Some(second.clone())
    );
    let z = EntryFilter {
        selectors: vec![sel("z:9")],
        ..EntryFilter::default()
    };
    assert_eq!(
        ids(&store.list_entries(&z, &Page::default()).await.unwrap().0),
        vec![second.id.clone()],
        "selectors of the refused update were not replaced"
    );

    // A duplicate create with extra, never-seen fields stores nothing.
    assert!(
        store
            .create_entry(NewEntry {
                dns_names: vec!["x.example".into()],
                ..first.fields.clone()
            })
            .await
            .is_err()
    );
    assert_eq!(store.count_entries().await.unwrap(), 2);
    assert_eq!(store.current_revision().await.unwrap(), revision);
    assert_eq!(
        store.entry_changes_since(revision).await.unwrap().updated,
        vec![]
    );
    assert_eq!(all_entries(store).await.len(), 2);

    // A banned agent's re-attestation creates none of its alias entries.
    store
        .create_agent(agent("spiffe://td/agent"), vec![])
        .await
        .unwrap();
    store
        .set_agent_banned("spiffe://td/agent", true)
        .await
        .unwrap();
    let mut again = agent("spiffe://td/agent");
    again.serial = "ff".into();
    assert!(
        store
            .create_agent(
                again,
                vec![entry("spiffe://td/alias", "spiffe://td/issuer", &["a:b"])]
            )
            .await
            .is_err()
    );
    assert_eq!(store.count_entries().await.unwrap(), 2);
    assert_eq!(store.current_revision().await.unwrap(), revision);
    let stored = store.get_agent("spiffe://td/agent").await.unwrap().unwrap();
    assert_eq!(stored.serial, "01", "banned agent's record untouched");
}

/// `update_entry` with a non-zero revision that is no longer current is a `Conflict`.
pub async fn update_entry_stale_revision(store: &dyn Store) {
    let e = store
        .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["u:1"]))
        .await
        .unwrap();
    let mut first = e.clone();
    first.fields.hint = "first".into();
    let first = store.update_entry(first).await.unwrap();

    let mut stale = e.clone();
    stale.fields.hint = "stale".into();
    let err = store.update_entry(stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_entry(&e.id).await.unwrap(), Some(first.clone()));

    // The current revision, or 0 (unconditional), is accepted.
    let mut current = first.clone();
    current.fields.hint = "second".into();
    store.update_entry(current).await.unwrap();
    let mut blind = first;
    blind.revision = 0;
    blind.fields.hint = "third".into();
    let third = store.update_entry(blind).await.unwrap();
    assert_eq!(
        store.get_entry(&e.id).await.unwrap().unwrap().fields.hint,
        "third"
    );
    assert_eq!(third.fields.hint, "third");
}

/// Concurrent creates get distinct revisions; of identical concurrent creates exactly one wins.
pub async fn concurrent_entry_creates(store: &dyn Store) {
    let start = store.current_revision().await.unwrap();
    let results = join_all((0..20).map(|i| {
        store.create_entry(entry(
            &format!("spiffe://td/c{i}"),
            "spiffe://td/p",
            &["u:1"],
        ))
    }))
    .await;
    let revisions: BTreeSet<i64> = results.into_iter().map(|r| r.unwrap().revision).collect();
    assert_eq!(revisions.len(), 20, "distinct revisions");
    assert_eq!(revisions, (start + 1..=start + 20).collect());
    assert_eq!(store.current_revision().await.unwrap(), start + 20);

    let same = entry("spiffe://td/same", "spiffe://td/p", &["u:1"]);
    let results = join_all((0..10).map(|_| store.create_entry(same.clone()))).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::AlreadyExists(_))),
        "{results:?}"
    );
    assert_eq!(store.count_entries().await.unwrap(), 21);
}

/// Agents: create, re-attest (keeps `created_at`), renew, list, count, evict, not-found cases.
pub async fn agents_lifecycle(store: &dyn Store) {
    let mut a = agent("spiffe://td/agent/b");
    a.selectors = vec![
        sel("x509pop:subject:cn:b"),
        sel("x509pop:ca:fp"),
        sel("x509pop:ca:fp"),
    ];
    store.create_agent(a.clone(), vec![]).await.unwrap();
    store
        .create_agent(agent("spiffe://td/agent/a"), vec![])
        .await
        .unwrap();
    let got = store.get_agent(&a.spiffe_id).await.unwrap().unwrap();
    assert_eq!(
        got.selectors,
        vec![sel("x509pop:ca:fp"), sel("x509pop:subject:cn:b")],
        "selectors sorted and de-duplicated"
    );
    assert_eq!(
        AttestedAgent {
            selectors: got.selectors.clone(),
            ..a.clone()
        },
        got
    );
    let listed: Vec<String> = store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.spiffe_id)
        .collect();
    assert_eq!(listed, vec!["spiffe://td/agent/a", "spiffe://td/agent/b"]);
    assert_eq!(store.count_agents().await.unwrap(), 2);
    // Order is bytewise (as in SQLite), whatever the database's locale: "Z" < "a".
    store
        .create_agent(agent("spiffe://td/agent/Z"), vec![])
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.spiffe_id)
        .collect();
    assert_eq!(
        listed,
        vec![
            "spiffe://td/agent/Z",
            "spiffe://td/agent/a",
            "spiffe://td/agent/b"
        ]
    );
    store.delete_agent("spiffe://td/agent/Z").await.unwrap();
    assert_eq!(
        store.get_agent("spiffe://td/agent/none").await.unwrap(),
        None
    );

    // Re-attestation replaces the record but keeps the first attestation time.
    let mut re = a.clone();
    re.serial = "0a0b".into();
    re.expires_at = 2_100_000_000;
    re.created_at = 1_800_000_000;
    re.updated_at = 1_800_000_000;
    re.attestation_type = "join_token".into();
    re.can_reattest = false;
    re.selectors = vec![sel("join_token:abc")];
    store.create_agent(re.clone(), vec![]).await.unwrap();
    let got = store.get_agent(&a.spiffe_id).await.unwrap().unwrap();
    assert_eq!(
        got,
        AttestedAgent {
            created_at: a.created_at,
            ..re.clone()
        }
    );
    assert_eq!(store.count_agents().await.unwrap(), 2);

    // Renewal.
    store
        .update_agent_svid(&a.spiffe_id, "beef", 2_200_000_000)
        .await
        .unwrap();
    let renewed = store.get_agent(&a.spiffe_id).await.unwrap().unwrap();
    assert_eq!(renewed.serial, "beef");
    assert_eq!(renewed.expires_at, 2_200_000_000);
    assert!(renewed.updated_at > 1_600_000_000, "updated_at is now");
    let err = store
        .update_agent_svid("spiffe://td/agent/none", "01", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "agent", .. }),
        "{err:?}"
    );

    // Evict.
    store.delete_agent(&a.spiffe_id).await.unwrap();
    assert_eq!(store.get_agent(&a.spiffe_id).await.unwrap(), None);
    assert_eq!(store.count_agents().await.unwrap(), 1);
    let err = store.delete_agent(&a.spiffe_id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "agent", .. }),
        "{err:?}"
    );
    let err = store
        .set_agent_banned(&a.spiffe_id, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "agent", .. }),
        "{err:?}"
    );
    // An evicted agent may attest again.
    store.create_agent(a.clone(), vec![]).await.unwrap();
    assert_eq!(store.count_agents().await.unwrap(), 2);
}

/// A banned agent is refused re-attestation and renewal until unbanned or evicted.
pub async fn agent_banned_conflict(store: &dyn Store) {
    let id = "spiffe://td/agent/x";
    store.create_agent(agent(id), vec![]).await.unwrap();
    store.set_agent_banned(id, true).await.unwrap();
    assert!(store.get_agent(id).await.unwrap().unwrap().banned);

    let err = store.create_agent(agent(id), vec![]).await.unwrap_err();
    match &err {
        StoreError::Conflict(msg) => {
            assert!(msg.contains(id) && msg.contains("banned"), "{msg}");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let err = store.update_agent_svid(id, "02", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.get_agent(id).await.unwrap().unwrap().serial, "01");

    // Unban: allowed again.
    store.set_agent_banned(id, false).await.unwrap();
    store.update_agent_svid(id, "03", 1).await.unwrap();
    // Re-attestation does not clear a ban; eviction does.
    store.set_agent_banned(id, true).await.unwrap();
    store.delete_agent(id).await.unwrap();
    store.create_agent(agent(id), vec![]).await.unwrap();
    assert!(!store.get_agent(id).await.unwrap().unwrap().banned);
}

/// Alias entries are created with the agent in one transaction, bump the revision, and are not
/// duplicated by a re-attestation.
pub async fn agent_alias_entries_atomic(store: &dyn Store) {
    let issuer = "spiffe://td/signet/issuer";
    let id = "spiffe://td/signet/agent/join_token/abc";
    let aliases = vec![
        entry("spiffe://td/node/blue", issuer, &["signet:agent_id:abc"]),
        entry("spiffe://td/node/all", issuer, &["signet:agent_id:abc"]),
    ];
    let before = store.current_revision().await.unwrap();
    store
        .create_agent(agent(id), aliases.clone())
        .await
        .unwrap();
    assert_eq!(store.current_revision().await.unwrap(), before + 2);
    let under_issuer = store
        .list_entries_by_parents(&[issuer.to_owned()])
        .await
        .unwrap();
    let mut got: Vec<NewEntry> = under_issuer.iter().map(|e| e.fields.clone()).collect();
    got.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
    let mut want = aliases.clone();
    want.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
    assert_eq!(got, want);
    let changes = store.entry_changes_since(before).await.unwrap();
    assert_eq!(changes.updated.len(), 2, "agents sync the alias entries");

    // Re-attestation with the same aliases: no duplicates, no revision bump.
    let revision = store.current_revision().await.unwrap();
    store.create_agent(agent(id), aliases).await.unwrap();
    assert_eq!(store.count_entries().await.unwrap(), 2);
    assert_eq!(store.current_revision().await.unwrap(), revision);
}

/// A join token is spent once: then `AlreadySpent`; an unknown hash is `Unknown`.
pub async fn join_token_single_use(store: &dyn Store) {
    let t = token("aa11", 1_700_000_600, Some("spiffe://td/node/blue"));
    store.create_join_token(t.clone()).await.unwrap();
    let err = store.create_join_token(t.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");

    let used = store
        .consume_join_token("aa11", 1_700_000_100)
        .await
        .unwrap();
    assert_eq!(
        used,
        JoinTokenUse::Consumed(JoinToken {
            used_at: Some(1_700_000_100),
            ..t.clone()
        })
    );
    assert_eq!(
        store
            .consume_join_token("aa11", 1_700_000_200)
            .await
            .unwrap(),
        JoinTokenUse::AlreadySpent
    );
    assert_eq!(
        store
            .consume_join_token("bb22", 1_700_000_200)
            .await
            .unwrap(),
        JoinTokenUse::Unknown
    );
    // Expiry is the caller's decision: an expired token is still spent once.
    store
        .create_join_token(token("cc33", 10, None))
        .await
        .unwrap();
    assert!(matches!(
        store.consume_join_token("cc33", 20).await.unwrap(),
        JoinTokenUse::Consumed(JoinToken {
            alias_spiffe_id: None,
            used_at: Some(20),
            ..
        })
    ));
    assert_eq!(
        store.consume_join_token("cc33", 21).await.unwrap(),
        JoinTokenUse::AlreadySpent
    );
}

/// Of many concurrent attempts to spend one token exactly one succeeds.
pub async fn join_token_concurrent_consume(store: &dyn Store) {
    store
        .create_join_token(token("race", 2_000_000_000, None))
        .await
        .unwrap();
    let results = join_all((0..16).map(|i| store.consume_join_token("race", 1_700_000_000 + i)))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>();
    let winners = results
        .iter()
        .filter(|r| matches!(r, JoinTokenUse::Consumed(_)))
        .count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, JoinTokenUse::Consumed(_) | JoinTokenUse::AlreadySpent)),
        "{results:?}"
    );
}

/// `prune_join_tokens` deletes exactly the tokens that expired before the given time.
pub async fn join_token_prune(store: &dyn Store) {
    for (hash, exp) in [("t100", 100), ("t200", 200), ("t300", 300)] {
        store
            .create_join_token(token(hash, exp, None))
            .await
            .unwrap();
    }
    store.consume_join_token("t300", 50).await.unwrap();
    assert_eq!(store.prune_join_tokens(200).await.unwrap(), 1);
    assert_eq!(
        store.consume_join_token("t100", 60).await.unwrap(),
        JoinTokenUse::Unknown
    );
    assert!(matches!(
        store.consume_join_token("t200", 60).await.unwrap(),
        JoinTokenUse::Consumed(_)
    ));
    assert_eq!(store.prune_join_tokens(200).await.unwrap(), 0);
    assert_eq!(
        store.prune_join_tokens(1000).await.unwrap(),
        2,
        "spent tokens go too"
    );
    assert_eq!(
        store.consume_join_token("t300", 60).await.unwrap(),
        JoinTokenUse::Unknown
    );
}

const ISSUER: &str = "spiffe://td/signet/issuer";

fn join_agent(token: &str) -> AttestedAgent {
    AttestedAgent {
        spiffe_id: format!("spiffe://td/signet/agent/join_token/{token}"),
        attestation_type: "join_token".into(),
        can_reattest: false,
        selectors: vec![sel(&format!("join_token:{token}"))],
        ..agent("unused")
    }
}

async fn redeem(store: &dyn Store, hash: &str, now: i64) -> JoinTokenRedemption {
    store
        .redeem_join_token(
            hash,
            now,
            join_agent(hash),
            ISSUER,
            vec![sel(&format!("join_token:{hash}"))],
        )
        .await
        .unwrap()
}

/// `redeem_join_token`: unknown and spent tokens change nothing; an expired token is spent and
/// nothing else recorded (expiry is inclusive); a valid one is spent and its agent recorded.
pub async fn join_token_redeem_outcomes(store: &dyn Store) {
    assert_eq!(
        redeem(store, "none", 100).await,
        JoinTokenRedemption::Unknown
    );
    assert!(store.list_agents().await.unwrap().is_empty());

    store
        .create_join_token(token("ok", 100, None))
        .await
        .unwrap();
    // `now == expires_at` is still valid.
    let got = redeem(store, "ok", 100).await;
    assert_eq!(
        got,
        JoinTokenRedemption::Redeemed(JoinToken {
            used_at: Some(100),
            ..token("ok", 100, None)
        })
    );
    let a = join_agent("ok");
    assert_eq!(
        store.get_agent(&a.spiffe_id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.count_entries().await.unwrap(),
        0,
        "no alias: no entry"
    );
    assert_eq!(
        redeem(store, "ok", 100).await,
        JoinTokenRedemption::AlreadySpent
    );
    assert_eq!(store.count_agents().await.unwrap(), 1);

    store
        .create_join_token(token("old", 100, Some("spiffe://td/node/old")))
        .await
        .unwrap();
    let revision = store.current_revision().await.unwrap();
    assert_eq!(
        redeem(store, "old", 101).await,
        JoinTokenRedemption::Expired
    );
    assert!(
        store
            .get_agent(&join_agent("old").spiffe_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.count_entries().await.unwrap(), 0, "no alias entry");
    assert_eq!(store.current_revision().await.unwrap(), revision);
    // Spent all the same.
    assert_eq!(
        redeem(store, "old", 50).await,
        JoinTokenRedemption::AlreadySpent
    );
    assert_eq!(
        store.consume_join_token("old", 50).await.unwrap(),
        JoinTokenUse::AlreadySpent
    );
}

/// The token's alias entry is created with the agent, under the issuer ID with the given
/// selectors, bumping the revision; an existing identical alias entry is left alone.
pub async fn join_token_redeem_alias_entry(store: &dyn Store) {
    let alias = "spiffe://td/node/blue";
    store
        .create_join_token(token("t1", 1000, Some(alias)))
        .await
        .unwrap();
    let before = store.current_revision().await.unwrap();
    let got = redeem(store, "t1", 10).await;
    assert!(matches!(got, JoinTokenRedemption::Redeemed(_)), "{got:?}");
    assert_eq!(store.current_revision().await.unwrap(), before + 1);
    let changes = store.entry_changes_since(before).await.unwrap();
    assert_eq!(changes.updated.len(), 1, "agents sync the alias entry");
    let e = &changes.updated[0];
    assert_eq!(
        e.fields,
        NewEntry {
            spiffe_id: alias.into(),
            parent_id: ISSUER.into(),
            selectors: vec![sel("join_token:t1")],
            ..NewEntry::default()
        }
    );
    assert!(
        store
            .get_agent(&join_agent("t1").spiffe_id)
            .await
            .unwrap()
            .is_some()
    );

    // The same alias entry already exists: no duplicate, no revision bump, still redeemed.
    let revision = store.current_revision().await.unwrap();
    store
        .create_join_token(token("t2", 1000, Some(alias)))
        .await
        .unwrap();
    store
        .redeem_join_token(
            "t2",
            10,
            join_agent("t2"),
            ISSUER,
            vec![sel("join_token:t1")],
        )
        .await
        .unwrap();
    assert_eq!(store.count_entries().await.unwrap(), 1);
    assert_eq!(store.current_revision().await.unwrap(), revision);
    assert_eq!(store.count_agents().await.unwrap(), 2);
}

/// A banned agent: `Conflict`, and nothing changes: the token stays unspent, no alias entry is
/// created, the agent's record is untouched.
pub async fn join_token_redeem_banned_agent_leaves_token_unspent(store: &dyn Store) {
    let banned = join_agent("b1");
    store.create_agent(banned.clone(), vec![]).await.unwrap();
    store
        .set_agent_banned(&banned.spiffe_id, true)
        .await
        .unwrap();
    store
        .create_join_token(token("b1", 1000, Some("spiffe://td/node/b")))
        .await
        .unwrap();
    let revision = store.current_revision().await.unwrap();
    let err = store
        .redeem_join_token(
            "b1",
            10,
            AttestedAgent {
                serial: "99".into(),
                ..banned.clone()
            },
            ISSUER,
            vec![sel("join_token:b1")],
        )
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict(msg) => assert!(msg.contains("banned"), "{msg}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.count_entries().await.unwrap(), 0);
    assert_eq!(store.current_revision().await.unwrap(), revision);
    let stored = store.get_agent(&banned.spiffe_id).await.unwrap().unwrap();
    assert_eq!(stored.serial, banned.serial);
    assert!(stored.banned);
    // Unspent: once the ban is lifted (eviction), the same token redeems.
    store.delete_agent(&banned.spiffe_id).await.unwrap();
    assert!(matches!(
        redeem(store, "b1", 11).await,
        JoinTokenRedemption::Redeemed(JoinToken {
            used_at: Some(11),
            ..
        })
    ));
    assert_eq!(store.count_entries().await.unwrap(), 1);
}

/// Of many concurrent redemptions of one token exactly one wins; the others see `AlreadySpent`,
/// and one agent and one alias entry exist.
pub async fn join_token_concurrent_redeem(store: &dyn Store) {
    store
        .create_join_token(token("race", 2_000_000_000, Some("spiffe://td/node/race")))
        .await
        .unwrap();
    let results = join_all((0..16).map(|i| {
        store.redeem_join_token(
            "race",
            1_700_000_000 + i,
            AttestedAgent {
                serial: format!("{i:02x}"),
                ..join_agent("race")
            },
            ISSUER,
            vec![sel("join_token:race")],
        )
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect::<Vec<_>>();
    let winners: Vec<&JoinToken> = results
        .iter()
        .filter_map(|r| match r {
            JoinTokenRedemption::Redeemed(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results.iter().all(|r| matches!(
            r,
            JoinTokenRedemption::Redeemed(_) | JoinTokenRedemption::AlreadySpent
        )),
        "{results:?}"
    );
    // The recorded agent is the winner's.
    let i = winners[0].used_at.unwrap() - 1_700_000_000;
    let agents = store.list_agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].serial, format!("{i:02x}"));
    assert_eq!(store.count_entries().await.unwrap(), 1);
}

/// Bundles: set (insert and replace), get, list in order, delete.
pub async fn bundles(store: &dyn Store) {
    let b = |td: &str, doc: &str, own: bool, at: i64| StoredBundle {
        trust_domain: td.into(),
        document: doc.into(),
        own,
        updated_at: at,
    };
    assert_eq!(store.get_bundle("example.org").await.unwrap(), None);
    store
        .set_bundle(b("example.org", r#"{"keys":[]}"#, true, 1))
        .await
        .unwrap();
    store
        .set_bundle(b("partner.org", r#"{"keys":[1]}"#, false, 2))
        .await
        .unwrap();
    store
        .set_bundle(b("another.org", r#"{"keys":[2]}"#, false, 3))
        .await
        .unwrap();
    let replaced = b(
        "partner.org",
        r#"{"keys":[1,2],"spiffe_sequence":2}"#,
        false,
        4,
    );
    store.set_bundle(replaced.clone()).await.unwrap();
    assert_eq!(
        store.get_bundle("partner.org").await.unwrap(),
        Some(replaced)
    );
    let tds: Vec<String> = store
        .list_bundles()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.trust_domain)
        .collect();
    assert_eq!(tds, vec!["another.org", "example.org", "partner.org"]);
    assert!(store.get_bundle("example.org").await.unwrap().unwrap().own);

    store.delete_bundle("another.org").await.unwrap();
    assert_eq!(store.get_bundle("another.org").await.unwrap(), None);
    let err = store.delete_bundle("another.org").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "bundle", id } if id == "another.org"),
        "{err:?}"
    );
    assert_eq!(store.list_bundles().await.unwrap().len(), 2);
}

/// Federation relationships: create (with and without a bootstrap bundle, atomically), duplicate,
/// update (keeps `created_at`), get, list in order, delete (keeps the bundle), not found.
pub async fn federation_relationships(store: &dyn Store) {
    let rel = |td: &str, url: &str, profile: &str, at: i64| FederationRelationship {
        trust_domain: td.into(),
        bundle_endpoint_url: url.into(),
        profile: profile.into(),
        endpoint_spiffe_id: (profile == "https_spiffe")
            .then(|| format!("spiffe://{td}/signet/issuer")),
        ca_bundle_pem: None,
        created_at: at,
        updated_at: at,
    };
    let bundle = |td: &str, doc: &str, at: i64| StoredBundle {
        trust_domain: td.into(),
        document: doc.into(),
        own: false,
        updated_at: at,
    };
    assert_eq!(
        store
            .get_federation_relationship("partner.org")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .list_federation_relationships()
            .await
            .unwrap()
            .is_empty()
    );

    let partner = rel(
        "partner.org",
        "https://partner.org:8443/",
        "https_spiffe",
        10,
    );
    let boot = bundle("partner.org", r#"{"keys":[],"spiffe_sequence":3}"#, 10);
    store
        .create_federation_relationship(partner.clone(), Some(boot.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_federation_relationship("partner.org")
            .await
            .unwrap(),
        Some(partner.clone())
    );
    assert_eq!(
        store.get_bundle("partner.org").await.unwrap(),
        Some(boot.clone())
    );

    let mut web = rel("a-web.org", "https://bundles.a-web.org/", "https_web", 11);
    web.ca_bundle_pem = Some("-----BEGIN CERTIFICATE-----\n...".into());
    store
        .create_federation_relationship(web.clone(), None)
        .await
        .unwrap();
    assert_eq!(store.get_bundle("a-web.org").await.unwrap(), None);

    // A duplicate is refused and its bundle is not stored either.
    let other_boot = bundle("partner.org", r#"{"keys":[],"spiffe_sequence":9}"#, 12);
    let err = store
        .create_federation_relationship(
            rel("partner.org", "https://elsewhere/", "https_web", 12),
            Some(other_boot),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    assert_eq!(
        store.get_bundle("partner.org").await.unwrap(),
        Some(boot.clone())
    );
    assert_eq!(
        store
            .get_federation_relationship("partner.org")
            .await
            .unwrap(),
        Some(partner.clone())
    );

    // Update replaces every field but created_at, and stores the given bundle.
    let mut changed = rel("partner.org", "https://partner.org:9443/b", "https_web", 99);
    changed.updated_at = 20;
    let newer = bundle("partner.org", r#"{"keys":[],"spiffe_sequence":4}"#, 20);
    store
        .update_federation_relationship(changed.clone(), Some(newer.clone()))
        .await
        .unwrap();
    let got = store
        .get_federation_relationship("partner.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.created_at, 10);
    assert_eq!(got.updated_at, 20);
    assert_eq!(got.bundle_endpoint_url, "https://partner.org:9443/b");
    assert_eq!(got.profile, "https_web");
    assert_eq!(got.endpoint_spiffe_id, None);
    assert_eq!(
        store.get_bundle("partner.org").await.unwrap(),
        Some(newer.clone())
    );
    store
        .update_federation_relationship(got.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        store.get_bundle("partner.org").await.unwrap(),
        Some(newer.clone())
    );

    // Updating an unknown relationship stores nothing.
    let err = store
        .update_federation_relationship(
            rel("nobody.org", "https://nobody/", "https_web", 30),
            Some(bundle("nobody.org", r#"{"keys":[]}"#, 30)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "federation relationship", id } if id == "nobody.org"),
        "{err:?}"
    );
    assert_eq!(store.get_bundle("nobody.org").await.unwrap(), None);

    let tds: Vec<String> = store
        .list_federation_relationships()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.trust_domain)
        .collect();
    assert_eq!(tds, vec!["a-web.org", "partner.org"]);
    assert_eq!(
        store
            .get_federation_relationship("a-web.org")
            .await
            .unwrap(),
        Some(web)
    );

    // Delete keeps the bundle.
    store
        .delete_federation_relationship("partner.org")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_federation_relationship("partner.org")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_bundle("partner.org").await.unwrap(), Some(newer));
    let err = store
        .delete_federation_relationship("partner.org")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "federation relationship", id } if id == "partner.org"),
        "{err:?}"
    );
    assert_eq!(
        store.list_federation_relationships().await.unwrap().len(),
        1
    );
}

/// Journals: missing is `None`; save replaces; binary data round-trips exactly.
pub async fn journals(store: &dyn Store) {
    assert_eq!(store.load_journal("ca").await.unwrap(), None);
    store.save_journal("ca", b"first").await.unwrap();
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    store.save_journal("ca", &binary).await.unwrap();
    store.save_journal("other", b"").await.unwrap();
    assert_eq!(store.load_journal("ca").await.unwrap(), Some(binary));
    assert_eq!(store.load_journal("other").await.unwrap(), Some(Vec::new()));
    assert_eq!(store.load_journal("nope").await.unwrap(), None);
}

fn audit_event(i: usize) -> NewAuditEvent {
    NewAuditEvent {
        time_ms: 1_700_000_000_000 + i as i64,
        kind: "entry.create".into(),
        actor: "admin-socket:uid=0".into(),
        subject: format!("spiffe://td/w{i}"),
        outcome: "ok".into(),
        details: json!({ "i": i, "nested": { "z": [1, 2.5, null], "a": "é\n\"" } }),
    }
}

/// Appends get consecutive seqs from 1 and chain their hashes; the listed log verifies.
pub async fn audit_append_and_verify(store: &dyn Store) {
    let mut appended = Vec::new();
    let mut events: Vec<NewAuditEvent> = (0..4).map(audit_event).collect();
    events.push(NewAuditEvent::default()); // empty strings, null details
    events.push(NewAuditEvent {
        details: json!([{"b": 1, "a": 2}, "x", -1, 1e300, true]),
        ..audit_event(9)
    });
    for event in &events {
        appended.push(store.append_audit_event(event.clone()).await.unwrap());
    }
    for (i, e) in appended.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        assert_eq!(&e.event, &events[i]);
        let prev = if i == 0 {
            crate::GENESIS_HASH.to_owned()
        } else {
            appended[i - 1].hash.clone()
        };
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.hash, audit_hash(&prev, &e.event));
        assert_eq!(e.hash.len(), 64);
    }
    let listed = store.list_audit_events(0, 0).await.unwrap();
    assert_eq!(listed, appended, "stored events read back identically");
    verify_audit_chain(&listed).unwrap();

    let page = store.list_audit_events(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    crate::verify_audit_chain_after(2, &appended[1].hash, &page).unwrap();
    assert!(store.list_audit_events(6, 0).await.unwrap().is_empty());
    assert_eq!(store.list_audit_events(4, 0).await.unwrap().len(), 2);
}

/// The verifier catches an edited event, a deleted event and a broken link in a stored log.
pub async fn audit_tamper_detection(store: &dyn Store) {
    for i in 0..5 {
        store.append_audit_event(audit_event(i)).await.unwrap();
    }
    let log = store.list_audit_events(0, 0).await.unwrap();
    verify_audit_chain(&log).unwrap();

    let mut edited = log.clone();
    edited[1].event.details = json!({"i": 1000});
    assert!(
        matches!(
            verify_audit_chain(&edited),
            Err(AuditChainError::HashMismatch { seq: 2, .. })
        ),
        "edited details"
    );
    let mut edited = log.clone();
    edited[3].event.actor = "someone-else".into();
    assert!(matches!(
        verify_audit_chain(&edited),
        Err(AuditChainError::HashMismatch { seq: 4, .. })
    ));

    let mut deleted = log.clone();
    deleted.remove(2);
    assert_eq!(
        verify_audit_chain(&deleted),
        Err(AuditChainError::SeqGap {
            expected: 3,
            found: 4
        })
    );

    // Delete a row and renumber the rest: the link to the deleted row's hash breaks.
    let mut renumbered = log.clone();
    renumbered.remove(2);
    for (i, e) in renumbered.iter_mut().enumerate() {
        e.seq = i as i64 + 1;
    }
    assert!(matches!(
        verify_audit_chain(&renumbered),
        Err(AuditChainError::BrokenLink { seq: 3, .. })
    ));

    let mut relinked = log.clone();
    relinked[4].prev_hash = relinked[2].hash.clone();
    assert!(matches!(
        verify_audit_chain(&relinked),
        Err(AuditChainError::BrokenLink { seq: 5, .. })
    ));
}

/// Concurrent appends still form one unbroken chain without duplicate seqs.
pub async fn audit_concurrent_appends(store: &dyn Store) {
    let results = join_all((0..32).map(|i| store.append_audit_event(audit_event(i)))).await;
    let mut seqs: Vec<i64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=32).collect::<Vec<_>>());
    let log = store.list_audit_events(0, 0).await.unwrap();
    assert_eq!(log.len(), 32);
    verify_audit_chain(&log).unwrap();
    let prevs: BTreeSet<&str> = log.iter().map(|e| e.prev_hash.as_str()).collect();
    assert_eq!(prevs.len(), 32, "no two events share a prev_hash");
}

/// The head of the log, and listings filtered by exact kind and by kind prefix.
pub async fn audit_head_and_filters(store: &dyn Store) {
    assert_eq!(store.last_audit_event().await.unwrap(), None);
    let kinds = [
        "delegation.mint",
        "entry.create",
        "delegation.hop",
        "delegationX",
        "délégation.mint",
        "delegation.hop",
        "delegation",
    ];
    let mut appended = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let event = NewAuditEvent {
            kind: (*kind).to_owned(),
            ..audit_event(i)
        };
        appended.push(store.append_audit_event(event).await.unwrap());
    }
    assert_eq!(
        store.last_audit_event().await.unwrap().as_ref(),
        appended.last()
    );
    let seqs = |events: Vec<crate::AuditEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let filter = |kind: Option<&str>, prefix: Option<&str>| AuditFilter {
        kind: kind.map(str::to_owned),
        kind_prefix: prefix.map(str::to_owned),
    };
    let all = store
        .list_audit_events_matching(0, 0, &AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(all, appended);
    let hops = filter(Some("delegation.hop"), None);
    assert_eq!(
        seqs(store.list_audit_events_matching(0, 0, &hops).await.unwrap()),
        vec![3, 6]
    );
    assert_eq!(
        seqs(store.list_audit_events_matching(3, 0, &hops).await.unwrap()),
        vec![6]
    );
    let delegation = filter(None, Some("delegation."));
    assert_eq!(
        seqs(
            store
                .list_audit_events_matching(0, 0, &delegation)
                .await
                .unwrap()
        ),
        vec![1, 3, 6]
    );
    assert_eq!(
        seqs(
            store
                .list_audit_events_matching(1, 1, &delegation)
                .await
                .unwrap()
        ),
        vec![3]
    );
    // A prefix with non-ASCII characters and LIKE wildcards is compared literally.
    assert_eq!(
        seqs(
            store
                .list_audit_events_matching(0, 0, &filter(None, Some("délé")))
                .await
                .unwrap()
        ),
        vec![5]
    );
    assert!(
        store
            .list_audit_events_matching(0, 0, &filter(None, Some("delegation%")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_audit_events_matching(0, 0, &filter(None, Some("delegation._")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        seqs(
            store
                .list_audit_events_matching(0, 0, &filter(Some("delegation.hop"), Some("x")))
                .await
                .unwrap()
        ),
        Vec::<i64>::new()
    );
    assert!(
        store
            .list_audit_events_matching(0, 0, &filter(Some("nope"), None))
            .await
            .unwrap()
            .is_empty()
    );
}
