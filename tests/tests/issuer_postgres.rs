//! The real `signet-issuer` on PostgreSQL. Needs `SIGNET_TEST_POSTGRES_URL` (a server URL whose
//! user may create databases); each test creates a fresh database and drops it afterwards. Without
//! the variable the test prints `SKIPPED: ...` and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use signet_tests::IssuerBuilder;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

const ENV: &str = "SIGNET_TEST_POSTGRES_URL";

/// Replaces the database (path) of a postgres URL.
fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    format!("{scheme}://{authority}/{db}{query}")
}

async fn sql(url: &str, statement: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query(statement).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn issuer_runs_on_postgres() {
    let Ok(admin_url) = std::env::var(ENV) else {
        assert!(
            std::env::var("SIGNET_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{ENV} is not set and SIGNET_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED: {ENV} not set");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("signet_e2e_{}_{nanos}", std::process::id());
    sql(&admin_url, &format!("CREATE DATABASE {name}")).await;
    let url = with_database(&admin_url, &name);

    let outcome = tokio::task::spawn_blocking(move || {
        let mut issuer = IssuerBuilder::new()
            .set_str("datastore.url", &url)
            .start()
            .unwrap();
        let created = issuer
            .cli_json(&[
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://example.org/pg",
                "--parent-id",
                "spiffe://example.org/node/a",
                "--selector",
                "unix:uid:1000",
                "--output",
                "json",
            ])
            .unwrap();
        let listed = issuer
            .cli_json(&["entry", "show", "--output", "json"])
            .unwrap();
        assert_eq!(listed, serde_json::json!([created]));
        let (status, _) = issuer.http_get("/ready").unwrap();
        assert_eq!(status, 200);
        // The CA journal and the bundle live in PostgreSQL: a restart keeps them.
        let bundle = issuer.bundle_pem().unwrap();
        issuer.restart().unwrap();
        assert_eq!(issuer.bundle_pem().unwrap(), bundle);
    })
    .await;

    sql(
        &admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
