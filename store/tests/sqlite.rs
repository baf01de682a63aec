//! The shared store suite and SQLite-specific behaviour, against real database files.

// Integration-test crate: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use signet_store::sqlite::SqliteStore;
use signet_store::{
    AuditChainError, DeletedEntry, EntryFilter, NewAuditEvent, NewEntry, Page, Selector, Store,
    StoreError, testsuite, verify_audit_chain,
};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

async fn open_in(dir: &Path) -> SqliteStore {
    let path = dir.join("data").join("signet.sqlite3");
    SqliteStore::open(path.to_str().unwrap()).await.unwrap()
}

macro_rules! sqlite_suite {
    ($($name:ident),* $(,)?) => {
        /// One test per shared suite function.
        mod suite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = open_in(dir.path()).await;
                    testsuite::$name(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}
signet_store::for_each_store_test!(sqlite_suite);

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn creates_private_directory_and_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let data = dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    let mut conn = raw(store.path()).await;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    store.close().await;
}

#[tokio::test]
async fn data_survives_reopen_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let url = format!("sqlite://{}", path.display());
    let store = signet_store::open(&url).await.unwrap();
    let created = store
        .create_entry(NewEntry {
            spiffe_id: "spiffe://td/a".into(),
            parent_id: "spiffe://td/p".into(),
            selectors: vec![Selector::new("unix", "uid:0")],
            ..NewEntry::default()
        })
        .await
        .unwrap();
    store.save_journal("ca", b"slots").await.unwrap();
    drop(store);

    let store = signet_store::open(&url).await.unwrap();
    assert_eq!(
        store.get_entry(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.current_revision().await.unwrap(), created.revision);
    assert_eq!(
        store.load_journal("ca").await.unwrap(),
        Some(b"slots".to_vec())
    );
    let (found, _) = store
        .list_entries(
            &EntryFilter {
                selectors: vec![Selector::new("unix", "uid:0")],
                ..EntryFilter::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(found, vec![created]);
}

#[tokio::test]
async fn parent_that_is_a_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("sub").join("db.sqlite3");
    let err = SqliteStore::open(path.to_str().unwrap()).await.unwrap_err();
    match err {
        StoreError::Unavailable(msg) => {
            assert!(msg.contains("plain-file"), "names the path: {msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unwritable_root_fails_clearly() {
    // Nobody, not even root, can create a directory under /proc.
    let err = signet_store::open("sqlite:///proc/signet-no-such-dir/db.sqlite3")
        .await
        .err()
        .unwrap();
    match err {
        StoreError::Unavailable(msg) => {
            assert!(
                msg.contains("/proc/signet-no-such-dir"),
                "names the path: {msg}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn directory_as_database_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path().to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn not_a_database_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(path.to_str().unwrap()).await.unwrap_err();
    match err {
        StoreError::Unavailable(msg) => assert!(msg.contains("garbage.db"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_are_rejected() {
    for url in [
        "sqlite://",
        "sqlite://:memory:",
        "sqlite://file:x?mode=memory",
    ] {
        let err = signet_store::open(url).await.err().unwrap();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{url}: {err:?}");
    }
    let err = signet_store::open("mysql://root:hunter2@db/signet")
        .await
        .err()
        .unwrap();
    match err {
        StoreError::InvalidUrl(msg) => {
            assert!(!msg.contains("hunter2"), "no password in errors: {msg}");
            assert!(msg.contains("mysql"), "{msg}");
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
}

#[tokio::test]
async fn audit_rows_are_append_only_and_edits_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    for i in 0..3 {
        store
            .append_audit_event(NewAuditEvent {
                time_ms: i,
                kind: "x509.mint".into(),
                outcome: "ok".into(),
                ..NewAuditEvent::default()
            })
            .await
            .unwrap();
    }
    let mut conn = raw(store.path()).await;
    let err = sqlx::query("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query("DELETE FROM audit_events WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    // Someone with file access removes the guard and edits a row: the chain shows it.
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let log = store.list_audit_events(0, 0).await.unwrap();
    assert!(matches!(
        verify_audit_chain(&log),
        Err(AuditChainError::HashMismatch { seq: 2, .. })
    ));
    store.close().await;
}

/// Cross-language check of the documented canonical form: `tests/verify_audit.py` (standard
/// library Python, written from docs/datastore.md) verifies a log written by the store and catches
/// an edit.
#[tokio::test]
async fn independent_python_verifier_agrees() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("SIGNET_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "python3 is required"
        );
        eprintln!("SKIPPED: python3 not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).await;
    let details = [
        serde_json::json!({"selectors": ["unix:uid:1000"], "b": {"z": 1, "a": [true, null, -7]}}),
        serde_json::json!({"quote\"": "tab\t nl\n ctl\u{1} del\u{7f} é 漢 🦀 /slash\\", "ttl": 2.5}),
        serde_json::Value::Null,
        serde_json::json!([{"Z": 0, "a": 1, "é": 2, "B": 3}, u64::MAX, i64::MIN, ""]),
    ];
    for (i, d) in details.iter().enumerate() {
        store
            .append_audit_event(NewAuditEvent {
                time_ms: 1_700_000_000_000 + i as i64,
                kind: "entry.update".into(),
                actor: "spiffe://example.org/admin ü".into(),
                subject: format!("entry-{i}"),
                outcome: "ok".into(),
                details: d.clone(),
            })
            .await
            .unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_audit.py");
    let run = || {
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg("sqlite")
            .arg(store.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run();
    assert!(ok, "python verifier: {stdout} {stderr}");
    assert_eq!(stdout, "ok 4");

    let mut conn = raw(store.path()).await;
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET subject = 'other' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let (ok, stdout, _) = run();
    assert!(!ok);
    assert_eq!(stdout, "seq 2 was modified");
    store.close().await;
}

/// A database written at schema v1 (tombstones without parents, no move history) is upgraded in
/// place: changes since a revision before the upgrade are flagged incomplete and old tombstones
/// have no parent; changes after it are complete.
#[tokio::test]
async fn upgrade_from_v1_flags_older_entry_history_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("migrations-v1");
    std::fs::create_dir(&v1).unwrap();
    let first = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/sqlite/0001_initial.sql"
    );
    std::fs::copy(first, v1.join("0001_initial.sql")).unwrap();
    let path = dir.path().join("old.db");
    std::fs::File::create(&path).unwrap();
    let mut conn = raw(&path).await;
    sqlx::migrate::Migrator::new(v1.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE store_revision SET revision = 1 WHERE id = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO entry_tombstones (entry_id, revision) VALUES ('gone', 1)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let c = store.entry_changes_since(0).await.unwrap();
    assert!(!c.history_complete);
    assert_eq!(
        c.deleted,
        vec![DeletedEntry {
            id: "gone".into(),
            parent_id: None,
            revision: 1,
        }]
    );
    let c = store.entry_changes_since(1).await.unwrap();
    assert!(c.history_complete);
    assert!(c.deleted.is_empty());
    let e = store
        .create_entry(NewEntry {
            spiffe_id: "spiffe://td/a".into(),
            parent_id: "spiffe://td/p".into(),
            ..NewEntry::default()
        })
        .await
        .unwrap();
    store.delete_entry(&e.id).await.unwrap();
    let c = store.entry_changes_since(1).await.unwrap();
    assert!(c.history_complete);
    assert_eq!(c.deleted[0].parent_id.as_deref(), Some("spiffe://td/p"));
    store.close().await;
}
