//! The PostgreSQL backend, for several issuers sharing one datastore.
//!
//! Entry writers serialize on the row lock of the store revision counter, so revisions commit in
//! order and an agent syncing by revision never skips a change. Audit appends take an exclusive
//! table lock. Readers are never blocked by either.
//!
//! TLS to the database is not supported yet (no TLS feature of sqlx is compiled in): use local
//! connections (TCP on a trusted network or a Unix socket).

use crate::common::{ENTRY_COLUMNS, EntryRow, db_error, migrate_error};
use crate::sql::{Backend, Statement};
use crate::{Result, Selector, StoreError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// How long `open` waits for the first connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per issuer.
const MAX_CONNECTIONS: u32 = 16;

/// The PostgreSQL store. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    target: String,
}

/// Names the server, database and user of `opts` (never the password).
fn describe(opts: &PgConnectOptions) -> String {
    let db = opts.get_database().unwrap_or(opts.get_username());
    match opts.get_socket() {
        Some(socket) => format!(
            "PostgreSQL database {db:?} via socket {} as user {:?}",
            socket.display(),
            opts.get_username()
        ),
        None => format!(
            "PostgreSQL database {db:?} at {}:{} as user {:?}",
            opts.get_host(),
            opts.get_port(),
            opts.get_username()
        ),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database`), failing with
    /// [`StoreError::Unavailable`] after [`CONNECT_TIMEOUT`] if the server does not answer, and
    /// applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(format!("malformed PostgreSQL URL: {e}")))?;
        if opts.get_application_name().is_none() {
            opts = opts.application_name("signet");
        }
        let target = describe(&opts);

        let mut conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to {target}: {e}"
                    )));
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to {target}: no answer within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    )));
                }
            };
        // sqlx takes an advisory lock: issuers starting together migrate once.
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&mut conn)
            .await
            .map_err(|e| migrate_error(&target, e));
        // Best effort: the connection is dropped anyway.
        let _ = conn.close().await;
        migrated?;

        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(opts);
        tracing::info!(datastore = %target, "PostgreSQL datastore ready");
        Ok(Self { pool, target })
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Entry writers serialize on the revision counter's row, audit appenders on a table lock, and a
/// read that precedes a write locks its row.
impl Backend for PostgresStore {
    type Db = Postgres;

    const ROW_LOCK: &'static str = " FOR UPDATE";

    fn read_pool(&self) -> &PgPool {
        &self.pool
    }

    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    fn ping_context(&self) -> String {
        format!("ping {}", self.target)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|e| db_error(&format!("starting a transaction on {}", self.target), e))
    }

    async fn begin_snapshot(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| db_error("starting a read transaction", e))
    }

    async fn lock_entries(conn: &mut PgConnection) -> Result<()> {
        sqlx::query("SELECT revision FROM store_revision WHERE id = 1 FOR UPDATE")
            .execute(conn)
            .await
            .map_err(|e| db_error("locking the store revision", e))?;
        Ok(())
    }

    async fn lock_audit_log(conn: &mut PgConnection) -> Result<()> {
        // Serializes appenders; plain readers (ACCESS SHARE) are not blocked.
        sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
            .execute(conn)
            .await
            .map_err(|e| db_error("locking the audit log", e))?;
        Ok(())
    }

    async fn insert_selectors(
        conn: &mut PgConnection,
        entry_id: &str,
        selectors: &[Selector],
    ) -> Result<()> {
        if selectors.is_empty() {
            return Ok(());
        }
        let kinds: Vec<&str> = selectors.iter().map(|s| s.kind.as_str()).collect();
        let values: Vec<&str> = selectors.iter().map(|s| s.value.as_str()).collect();
        sqlx::query(
            "INSERT INTO entry_selectors (entry_id, type, value) \
             SELECT $1, t, v FROM UNNEST($2::text[], $3::text[]) AS s (t, v)",
        )
        .bind(entry_id)
        .bind(kinds)
        .bind(values)
        .execute(conn)
        .await
        .map_err(|e| db_error("storing entry selectors", e))?;
        Ok(())
    }

    fn push_selector_filter<'a>(stmt: &mut Statement<'a, Postgres>, selectors: &[&'a Selector]) {
        let kinds: Vec<&str> = selectors.iter().map(|s| s.kind.as_str()).collect();
        let values: Vec<&str> = selectors.iter().map(|s| s.value.as_str()).collect();
        stmt.push(
            " AND id IN (SELECT es.entry_id FROM entry_selectors es \
             JOIN UNNEST(",
        )
        .push_bind(kinds)
        .push("::text[], ")
        .push_bind(values)
        .push(
            "::text[]) AS f (t, v) ON es.type = f.t AND es.value = f.v \
             GROUP BY es.entry_id HAVING COUNT(*) = ",
        )
        .push_bind(i64::try_from(selectors.len()).unwrap_or(i64::MAX))
        .push(")");
    }

    async fn entries_by_parents(&self, parent_ids: &[String]) -> Result<Vec<EntryRow>> {
        sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = ANY($1) ORDER BY id"
        ))
        .bind(parent_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing entries by parent", e))
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}
