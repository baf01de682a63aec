//! The embedded SQLite backend (the default).
//!
//! One file in WAL mode. Writes go through a pool of exactly one connection and start with
//! `BEGIN IMMEDIATE`, so writers queue in the pool instead of failing with `SQLITE_BUSY`; reads
//! use a separate pool of `query_only` connections and never block on the writer (WAL).

use crate::common::{ENTRY_COLUMNS, EntryRow, MAX_BINDS, db_error, encode_json, migrate_error};
use crate::sql::{Backend, Statement};
use crate::{Result, Selector, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long SQLite waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQLite store. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory, mode 0700, and the file, mode 0600)
    /// the database at `path` and applies pending migrations.
    pub async fn open(path: &str) -> Result<Self> {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl(
                "sqlite:// needs a file path, e.g. sqlite:///var/lib/signet/datastore.sqlite3"
                    .into(),
            ));
        }
        if path == ":memory:" || path.starts_with("file:") || path.contains('?') {
            return Err(StoreError::InvalidUrl(format!(
                "sqlite://{path}: give a plain file path (in-memory databases and URI options are \
                 not supported)"
            )));
        }
        let path = PathBuf::from(path);
        prepare_file(&path)?;

        let base = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let shown = path.display().to_string();

        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A local file cannot drop the connection: skip the ping on every acquire.
            .test_before_acquire(false)
            .connect_with(base.clone())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database {shown}: {e}"))
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write)
            .await
            .map_err(|e| migrate_error(&format!("SQLite database {shown}"), e))?;

        let readers = std::thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .clamp(4, 16);
        let read = SqlitePoolOptions::new()
            .max_connections(u32::try_from(readers).unwrap_or(4))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database {shown}: {e}"))
            })?;
        tracing::info!(path = %shown, readers, "SQLite datastore ready (WAL)");
        Ok(Self { read, write, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Creates the parent directory (0700) and the database file (0600) if missing.
fn prepare_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the directory {} of the SQLite database: {e}",
                    dir.display()
                ))
            })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
    Ok(())
}

/// Writes hold the database's write lock from `BEGIN IMMEDIATE` on: they exclude each other, so
/// the entry and audit locks are no-ops and reads need no row lock.
impl Backend for SqliteStore {
    type Db = Sqlite;

    const ROW_LOCK: &'static str = "";

    fn read_pool(&self) -> &SqlitePool {
        &self.read
    }

    fn write_pool(&self) -> &SqlitePool {
        &self.write
    }

    fn ping_context(&self) -> String {
        "ping".to_owned()
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a write transaction", e))
    }

    async fn begin_snapshot(&self) -> Result<Transaction<'static, Sqlite>> {
        // A read transaction on a reader: one WAL snapshot.
        self.read
            .begin()
            .await
            .map_err(|e| db_error("starting a read transaction", e))
    }

    async fn lock_entries(_conn: &mut SqliteConnection) -> Result<()> {
        Ok(())
    }

    async fn lock_audit_log(_conn: &mut SqliteConnection) -> Result<()> {
        Ok(())
    }

    async fn insert_selectors(
        conn: &mut SqliteConnection,
        entry_id: &str,
        selectors: &[Selector],
    ) -> Result<()> {
        for chunk in selectors.chunks(MAX_BINDS / 3) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("INSERT INTO entry_selectors (entry_id, type, value) ");
            qb.push_values(chunk, |mut b, s| {
                b.push_bind(entry_id)
                    .push_bind(s.kind.as_str())
                    .push_bind(s.value.as_str());
            });
            qb.build()
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("storing entry selectors", e))?;
        }
        Ok(())
    }

    fn push_selector_filter<'a>(stmt: &mut Statement<'a, Sqlite>, selectors: &[&'a Selector]) {
        stmt.push(" AND id IN (SELECT entry_id FROM entry_selectors WHERE ");
        for (i, s) in selectors.iter().enumerate() {
            if i > 0 {
                stmt.push(" OR ");
            }
            stmt.push("(type = ")
                .push_bind(s.kind.as_str())
                .push(" AND value = ")
                .push_bind(s.value.as_str())
                .push(")");
        }
        stmt.push(" GROUP BY entry_id HAVING COUNT(*) = ")
            .push_bind(i64::try_from(selectors.len()).unwrap_or(i64::MAX))
            .push(")");
    }

    async fn entries_by_parents(&self, parent_ids: &[String]) -> Result<Vec<EntryRow>> {
        sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE parent_id IN (SELECT value FROM json_each($1)) ORDER BY id"
        ))
        .bind(encode_json(parent_ids)?)
        .fetch_all(&self.read)
        .await
        .map_err(|e| db_error("listing entries by parent", e))
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}
