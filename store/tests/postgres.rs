//! The shared store suite and PostgreSQL-specific behaviour, against a real server.
//!
//! Needs `SIGNET_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`): each
//! test creates its own database on that server and drops it afterwards. Without the variable the
//! tests that need a server print `SKIPPED: ...` and pass. The connection-failure tests need no
//! server.

// Integration-test crate: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::FutureExt;
use signet_store::postgres::PostgresStore;
use signet_store::{
    AuditChainError, NewAuditEvent, NewEntry, Selector, Store, StoreError, testsuite,
    verify_audit_chain,
};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::panic::AssertUnwindSafe;

const ENV: &str = "SIGNET_TEST_POSTGRES_URL";

/// A throw-away database on the test server.
struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

/// Replaces the database name (the path) of a postgres URL.
fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    format!("{scheme}://{authority}/{db}{query}")
}

/// The server URL, or `None` after printing why the test is skipped. With
/// `SIGNET_REQUIRE_SERVICES=1` (CI) a missing server is a failure, not a skip.
fn server_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("SIGNET_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{ENV} must be set when SIGNET_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: {ENV} not set");
            None
        }
    }
}

impl TestDb {
    async fn create() -> Option<Self> {
        let admin_url = server_url()?;
        let name = format!("signet_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url).await.unwrap();
        // A natural-language collation (as many production databases have) where the server
        // supports ICU: the store must not depend on the database's locale.
        let icu = format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
             LOCALE 'C.UTF-8'"
        );
        if let Err(e) = sqlx::query(&icu).execute(&mut conn).await {
            eprintln!("no ICU database ({e}); using the server's default locale");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// Best effort: a failure here must not hide the test's own outcome.
    async fn drop_db(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                eprintln!("could not drop test database {}: {e}", self.name);
            }
            let _ = conn.close().await;
        }
    }

    /// Runs `test` against a fresh store on this database, then drops the database, then
    /// re-raises the test's panic, if any.
    async fn run<F, Fut>(self, test: F)
    where
        F: FnOnce(PostgresStore) -> Fut,
        Fut: Future<Output = ()>,
    {
        let outcome = AssertUnwindSafe(async {
            let store = PostgresStore::open(&self.url).await.unwrap();
            test(store.clone()).await;
            store.close().await;
        })
        .catch_unwind()
        .await;
        self.drop_db().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

macro_rules! postgres_suite {
    ($($name:ident),* $(,)?) => {
        /// One test per shared suite function.
        mod suite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = TestDb::create().await else { return };
                    db.run(|store| async move { testsuite::$name(&store).await }).await;
                }
            )*
        }
    };
}
signet_store::for_each_store_test!(postgres_suite);

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/postgres?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

#[tokio::test]
async fn refused_connection_is_unavailable_naming_the_server_not_the_password() {
    // Port 1 on loopback: nothing listens, the kernel refuses at once.
    let err = signet_store::open("postgres://signet:s3cret@127.0.0.1:1/signet")
        .await
        .err()
        .unwrap();
    match err {
        StoreError::Unavailable(msg) => {
            assert!(msg.contains("127.0.0.1:1"), "names the server: {msg}");
            assert!(msg.contains("\"signet\""), "names the database: {msg}");
            assert!(!msg.contains("s3cret"), "no password in errors: {msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_server_times_out_as_unavailable() {
    // A server that accepts TCP connections and never answers the startup message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => held.push(accepted.unwrap().0),
                _ = &mut stop_rx => return,
            }
        }
    });
    let url = format!("postgres://postgres@{addr}/postgres");
    let err = signet_store::open(&url).await.err().unwrap();
    match err {
        StoreError::Unavailable(msg) => {
            assert!(msg.contains(&addr.to_string()), "{msg}");
            assert!(msg.contains("no answer within 5s"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let _ = stop_tx.send(());
    server.await.unwrap();
}

#[tokio::test]
async fn malformed_url_is_invalid_without_echoing_it() {
    let err = signet_store::open("postgres://u:s3cret@host:notaport/db")
        .await
        .err()
        .unwrap();
    match err {
        StoreError::InvalidUrl(msg) => assert!(!msg.contains("s3cret"), "{msg}"),
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_database_is_unavailable_naming_it() {
    let Some(admin_url) = server_url() else {
        return;
    };
    let name = format!("signet_missing_{}", uuid::Uuid::new_v4().simple());
    let err = PostgresStore::open(&with_database(&admin_url, &name))
        .await
        .err()
        .unwrap();
    match err {
        StoreError::Unavailable(msg) => assert!(msg.contains(&name), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn issuers_starting_together_migrate_once_and_share_data() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    db.run(|first| async move {
        let (a, b) = tokio::join!(PostgresStore::open(&url), PostgresStore::open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        let created = a
            .create_entry(NewEntry {
                spiffe_id: "spiffe://td/a".into(),
                parent_id: "spiffe://td/p".into(),
                selectors: vec![Selector::new("unix", "uid:0")],
                ..NewEntry::default()
            })
            .await
            .unwrap();
        assert_eq!(
            b.get_entry(&created.id).await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(first.current_revision().await.unwrap(), created.revision);
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test]
async fn audit_rows_are_append_only_and_edits_are_detected() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    db.run(|store| async move {
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
        let mut conn = PgConnection::connect(&url).await.unwrap();
        for sql in [
            "UPDATE audit_events SET outcome = 'denied' WHERE seq = 2",
            "DELETE FROM audit_events WHERE seq = 2",
            "TRUNCATE audit_events",
        ] {
            let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        // Someone with table-owner rights removes the guard and edits a row: the chain shows it.
        sqlx::query("DROP TRIGGER audit_events_no_update ON audit_events")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let log = store.list_audit_events(0, 0).await.unwrap();
        assert!(matches!(
            verify_audit_chain(&log),
            Err(AuditChainError::HashMismatch { seq: 2, .. })
        ));
    })
    .await;
}
