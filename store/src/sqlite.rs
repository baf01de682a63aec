//! The embedded SQLite backend (the default).
//!
//! One file in WAL mode. Writes go through a pool of exactly one connection and start with
//! `BEGIN IMMEDIATE`, so writers queue in the pool instead of failing with `SQLITE_BUSY`; reads
//! use a separate pool of `query_only` connections and never block on the writer (WAL).

use crate::common::{
    AGENT_COLUMNS, AUDIT_COLUMNS, AgentRow, AuditRow, ENTRY_COLUMNS, EntryRow, EntryWrite,
    MAX_BINDS, count_to_u64, db_error, encode_json, entries_from_rows, filter_selectors,
    migrate_error, new_entry_id, now_unix,
};
use crate::{
    AttestedAgent, AuditEvent, DeletedEntry, EntryChanges, EntryFilter, EntryMove, GENESIS_HASH,
    JoinToken, JoinTokenRedemption, JoinTokenUse, NewAuditEvent, NewEntry, Page, RegistrationEntry,
    Result, Selector, Store, StoreError, StoredBundle, audit_hash, canonical_json,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
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

type JoinTokenRow = (String, i64, Option<String>, i64, Option<i64>);
type BundleRow = (String, String, bool, i64);

fn token_from_row(row: JoinTokenRow) -> JoinToken {
    JoinToken {
        token_hash: row.0,
        expires_at: row.1,
        alias_spiffe_id: row.2,
        created_at: row.3,
        used_at: row.4,
    }
}

fn bundle_from_row(row: BundleRow) -> StoredBundle {
    StoredBundle {
        trust_domain: row.0,
        document: row.1,
        own: row.2,
        updated_at: row.3,
    }
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

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a write transaction", e))
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

async fn bump_revision(conn: &mut SqliteConnection) -> Result<i64> {
    sqlx::query_scalar::<_, i64>(
        "UPDATE store_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(conn)
    .await
    .map_err(|e| db_error("bumping the store revision", e))
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

/// Inserts an entry; with `if_absent`, an existing entry of the same identity is left alone and
/// `None` is returned instead of failing.
async fn insert_entry(
    conn: &mut SqliteConnection,
    entry: NewEntry,
    if_absent: bool,
) -> Result<Option<RegistrationEntry>> {
    let w = EntryWrite::new(entry)?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM entries WHERE identity_hash = ?")
            .bind(&w.identity_hash)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| db_error("checking entry uniqueness", e))?;
    if let Some(existing) = existing {
        return if if_absent {
            Ok(None)
        } else {
            Err(w.duplicate_error(&existing))
        };
    }
    let revision = bump_revision(conn).await?;
    let id = new_entry_id();
    let created_at = now_unix();
    let f = &w.fields;
    sqlx::query(
        "INSERT INTO entries (id, spiffe_id, parent_id, identity_hash, selectors, x509_svid_ttl, \
         jwt_svid_ttl, dns_names, hint, admin, downstream, federates_with, expires_at, revision, \
         created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&f.spiffe_id)
    .bind(&f.parent_id)
    .bind(&w.identity_hash)
    .bind(&w.selectors_json)
    .bind(i64::from(f.x509_svid_ttl))
    .bind(i64::from(f.jwt_svid_ttl))
    .bind(&w.dns_names_json)
    .bind(&f.hint)
    .bind(f.admin)
    .bind(f.downstream)
    .bind(&w.federates_with_json)
    .bind(f.expires_at)
    .bind(revision)
    .bind(created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("storing the entry", e))?;
    insert_selectors(conn, &id, &f.selectors).await?;
    Ok(Some(RegistrationEntry {
        id,
        fields: w.fields,
        revision,
        created_at,
    }))
}

/// Records `agent` (insert, or replace a non-banned agent's record keeping `created_at` and
/// `banned`); [`StoreError::Conflict`] if it is banned.
async fn store_agent(conn: &mut SqliteConnection, agent: AttestedAgent) -> Result<()> {
    let mut selectors = agent.selectors;
    selectors.sort();
    selectors.dedup();
    let selectors_json = encode_json(&selectors)?;
    let banned: Option<bool> = sqlx::query_scalar("SELECT banned FROM agents WHERE spiffe_id = ?")
        .bind(&agent.spiffe_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("loading the agent", e))?;
    if banned == Some(true) {
        return Err(StoreError::Conflict(format!(
            "agent {:?} is banned",
            agent.spiffe_id
        )));
    }
    sqlx::query(&format!(
        "INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type, \
         serial = excluded.serial, expires_at = excluded.expires_at, \
         selectors = excluded.selectors, can_reattest = excluded.can_reattest, \
         updated_at = excluded.updated_at"
    ))
    .bind(&agent.spiffe_id)
    .bind(&agent.attestation_type)
    .bind(&agent.serial)
    .bind(agent.expires_at)
    .bind(&selectors_json)
    .bind(agent.banned)
    .bind(agent.can_reattest)
    .bind(agent.created_at)
    .bind(agent.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("storing the agent", e))?;
    Ok(())
}

/// Marks the token spent at `now` if it is unspent.
async fn spend_join_token(
    conn: &mut SqliteConnection,
    token_hash: &str,
    now: i64,
) -> Result<JoinTokenUse> {
    let spent: Option<JoinTokenRow> = sqlx::query_as(
        "UPDATE join_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL \
         RETURNING token_hash, expires_at, alias_spiffe_id, created_at, used_at",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("spending the join token", e))?;
    if let Some(row) = spent {
        return Ok(JoinTokenUse::Consumed(token_from_row(row)));
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM join_tokens WHERE token_hash = ?")
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("looking up the join token", e))?;
    Ok(if exists.is_some() {
        JoinTokenUse::AlreadySpent
    } else {
        JoinTokenUse::Unknown
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(|e| db_error("ping", e))?;
        Ok(())
    }

    async fn create_entry(&self, entry: NewEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin_write().await?;
        let created = insert_entry(&mut tx, entry, false).await?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the entry", e))?;
        created.ok_or_else(|| StoreError::Corrupt("entry insert returned nothing".into()))
    }

    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin_write().await?;
        let current: Option<(i64, i64, String, String)> = sqlx::query_as(
            "SELECT revision, created_at, selectors, parent_id FROM entries WHERE id = ?",
        )
        .bind(&entry.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error("loading the entry", e))?;
        let Some((current_revision, created_at, old_selectors, old_parent)) = current else {
            return Err(StoreError::NotFound {
                kind: "entry",
                id: entry.id,
            });
        };
        if entry.revision != 0 && entry.revision != current_revision {
            return Err(StoreError::Conflict(format!(
                "entry {} was changed after revision {} (now at revision {current_revision})",
                entry.id, entry.revision
            )));
        }
        let w = EntryWrite::new(entry.fields)?;
        let duplicate: Option<String> =
            sqlx::query_scalar("SELECT id FROM entries WHERE identity_hash = ? AND id <> ?")
                .bind(&w.identity_hash)
                .bind(&entry.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error("checking entry uniqueness", e))?;
        if let Some(duplicate) = duplicate {
            return Err(w.duplicate_error(&duplicate));
        }
        let revision = bump_revision(&mut tx).await?;
        let f = &w.fields;
        sqlx::query(
            "UPDATE entries SET spiffe_id = ?, parent_id = ?, identity_hash = ?, selectors = ?, \
             x509_svid_ttl = ?, jwt_svid_ttl = ?, dns_names = ?, hint = ?, admin = ?, \
             downstream = ?, federates_with = ?, expires_at = ?, revision = ? WHERE id = ?",
        )
        .bind(&f.spiffe_id)
        .bind(&f.parent_id)
        .bind(&w.identity_hash)
        .bind(&w.selectors_json)
        .bind(i64::from(f.x509_svid_ttl))
        .bind(i64::from(f.jwt_svid_ttl))
        .bind(&w.dns_names_json)
        .bind(&f.hint)
        .bind(f.admin)
        .bind(f.downstream)
        .bind(&w.federates_with_json)
        .bind(f.expires_at)
        .bind(revision)
        .bind(&entry.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("updating the entry", e))?;
        if old_parent != f.parent_id {
            sqlx::query(
                "INSERT INTO entry_moves (entry_id, old_parent_id, revision) VALUES (?, ?, ?)",
            )
            .bind(&entry.id)
            .bind(&old_parent)
            .bind(revision)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("recording the entry move", e))?;
        }
        if old_selectors != w.selectors_json {
            sqlx::query("DELETE FROM entry_selectors WHERE entry_id = ?")
                .bind(&entry.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("replacing entry selectors", e))?;
            insert_selectors(&mut tx, &entry.id, &f.selectors).await?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the entry update", e))?;
        Ok(RegistrationEntry {
            id: entry.id,
            fields: w.fields,
            revision,
            created_at,
        })
    }

    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry> {
        let mut tx = self.begin_write().await?;
        let row: Option<EntryRow> =
            sqlx::query_as(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error("loading the entry", e))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                kind: "entry",
                id: id.to_owned(),
            });
        };
        let entry = row.into_entry()?;
        let revision = bump_revision(&mut tx).await?;
        sqlx::query("DELETE FROM entries WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("deleting the entry", e))?;
        sqlx::query(
            "INSERT INTO entry_tombstones (entry_id, revision, parent_id) VALUES (?, ?, ?) \
             ON CONFLICT (entry_id) DO UPDATE SET revision = excluded.revision, \
             parent_id = excluded.parent_id",
        )
        .bind(id)
        .bind(revision)
        .bind(&entry.fields.parent_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("recording the entry tombstone", e))?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the entry deletion", e))?;
        Ok(entry)
    }

    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>> {
        let row: Option<EntryRow> =
            sqlx::query_as(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.read)
                .await
                .map_err(|e| db_error("loading the entry", e))?;
        row.map(EntryRow::into_entry).transpose()
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &Page,
    ) -> Result<(Vec<RegistrationEntry>, Option<String>)> {
        let mut qb =
            QueryBuilder::<Sqlite>::new(format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE 1 = 1"));
        if let Some(spiffe_id) = &filter.spiffe_id {
            qb.push(" AND spiffe_id = ").push_bind(spiffe_id.as_str());
        }
        if let Some(parent_id) = &filter.parent_id {
            qb.push(" AND parent_id = ").push_bind(parent_id.as_str());
        }
        if let Some(after) = &page.after {
            qb.push(" AND id > ").push_bind(after.as_str());
        }
        let selectors = filter_selectors(&filter.selectors);
        if !selectors.is_empty() {
            qb.push(" AND id IN (SELECT entry_id FROM entry_selectors WHERE ");
            for (i, s) in selectors.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("(type = ")
                    .push_bind(s.kind.as_str())
                    .push(" AND value = ")
                    .push_bind(s.value.as_str())
                    .push(")");
            }
            qb.push(" GROUP BY entry_id HAVING COUNT(*) = ")
                .push_bind(i64::try_from(selectors.len()).unwrap_or(i64::MAX))
                .push(")");
        }
        qb.push(" ORDER BY id");
        if page.size > 0 {
            qb.push(" LIMIT ").push_bind(i64::from(page.size) + 1);
        }
        let rows: Vec<EntryRow> = qb
            .build_query_as()
            .fetch_all(&self.read)
            .await
            .map_err(|e| db_error("listing entries", e))?;
        let mut entries = entries_from_rows(rows)?;
        let size = page.size as usize;
        let next = if size > 0 && entries.len() > size {
            entries.truncate(size);
            entries.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok((entries, next))
    }

    async fn list_entries_by_parents(
        &self,
        parent_ids: &[String],
    ) -> Result<Vec<RegistrationEntry>> {
        if parent_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE parent_id IN (SELECT value FROM json_each(?)) ORDER BY id"
        ))
        .bind(encode_json(parent_ids)?)
        .fetch_all(&self.read)
        .await
        .map_err(|e| db_error("listing entries by parent", e))?;
        entries_from_rows(rows)
    }

    async fn entry_changes_since(&self, since: i64) -> Result<EntryChanges> {
        // One read transaction: one WAL snapshot for the revision and both lists.
        let mut tx = self
            .read
            .begin()
            .await
            .map_err(|e| db_error("starting a read transaction", e))?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM store_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("reading the store revision", e))?;
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE revision > ? ORDER BY revision, id"
        ))
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("listing changed entries", e))?;
        let deleted: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT entry_id, parent_id, revision FROM entry_tombstones WHERE revision > ? \
             ORDER BY revision, entry_id",
        )
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("listing deleted entries", e))?;
        let moved: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT entry_id, old_parent_id, revision FROM entry_moves WHERE revision > ? \
             ORDER BY revision, entry_id",
        )
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("listing moved entries", e))?;
        let history_since: i64 =
            sqlx::query_scalar("SELECT since_revision FROM entry_history WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_error("reading the entry history start", e))?;
        tx.rollback()
            .await
            .map_err(|e| db_error("ending a read transaction", e))?;
        Ok(EntryChanges {
            updated: entries_from_rows(rows)?,
            deleted: deleted
                .into_iter()
                .map(|(id, parent_id, revision)| DeletedEntry {
                    id,
                    parent_id,
                    revision,
                })
                .collect(),
            moved: moved
                .into_iter()
                .map(|(id, old_parent_id, revision)| EntryMove {
                    id,
                    old_parent_id,
                    revision,
                })
                .collect(),
            history_complete: since >= history_since,
            revision,
        })
    }

    async fn current_revision(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT revision FROM store_revision WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(|e| db_error("reading the store revision", e))
    }

    async fn count_entries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries")
            .fetch_one(&self.read)
            .await
            .map_err(|e| db_error("counting entries", e))?;
        count_to_u64(n)
    }

    async fn create_agent(&self, agent: AttestedAgent, alias_entries: Vec<NewEntry>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        store_agent(&mut tx, agent).await?;
        for entry in alias_entries {
            insert_entry(&mut tx, entry, true).await?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the agent", e))
    }

    async fn update_agent_svid(
        &self,
        spiffe_id: &str,
        serial: &str,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let banned: Option<bool> =
            sqlx::query_scalar("SELECT banned FROM agents WHERE spiffe_id = ?")
                .bind(spiffe_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error("loading the agent", e))?;
        match banned {
            None => {
                return Err(StoreError::NotFound {
                    kind: "agent",
                    id: spiffe_id.to_owned(),
                });
            }
            Some(true) => {
                return Err(StoreError::Conflict(format!(
                    "agent {spiffe_id:?} is banned"
                )));
            }
            Some(false) => {}
        }
        sqlx::query(
            "UPDATE agents SET serial = ?, expires_at = ?, updated_at = ? WHERE spiffe_id = ?",
        )
        .bind(serial)
        .bind(expires_at)
        .bind(now_unix())
        .bind(spiffe_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("updating the agent", e))?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the agent update", e))
    }

    async fn get_agent(&self, spiffe_id: &str) -> Result<Option<AttestedAgent>> {
        let row: Option<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE spiffe_id = ?"
        ))
        .bind(spiffe_id)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| db_error("loading the agent", e))?;
        row.map(AgentRow::into_agent).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AttestedAgent>> {
        let rows: Vec<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY spiffe_id"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(|e| db_error("listing agents", e))?;
        rows.into_iter().map(AgentRow::into_agent).collect()
    }

    async fn delete_agent(&self, spiffe_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM agents WHERE spiffe_id = ?")
            .bind(spiffe_id)
            .execute(&self.write)
            .await
            .map_err(|e| db_error("deleting the agent", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "agent",
                id: spiffe_id.to_owned(),
            });
        }
        Ok(())
    }

    async fn set_agent_banned(&self, spiffe_id: &str, banned: bool) -> Result<()> {
        let done = sqlx::query("UPDATE agents SET banned = ? WHERE spiffe_id = ?")
            .bind(banned)
            .bind(spiffe_id)
            .execute(&self.write)
            .await
            .map_err(|e| db_error("banning the agent", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "agent",
                id: spiffe_id.to_owned(),
            });
        }
        Ok(())
    }

    async fn count_agents(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
            .fetch_one(&self.read)
            .await
            .map_err(|e| db_error("counting agents", e))?;
        count_to_u64(n)
    }

    async fn create_join_token(&self, token: JoinToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (token_hash, expires_at, alias_spiffe_id, created_at, \
             used_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&token.token_hash)
        .bind(token.expires_at)
        .bind(&token.alias_spiffe_id)
        .bind(token.created_at)
        .bind(token.used_at)
        .execute(&self.write)
        .await
        .map_err(|e| match db_error("storing the join token", e) {
            StoreError::AlreadyExists(_) => {
                StoreError::AlreadyExists("a join token with the same hash already exists".into())
            }
            other => other,
        })?;
        Ok(())
    }

    async fn consume_join_token(&self, token_hash: &str, now: i64) -> Result<JoinTokenUse> {
        let mut tx = self.begin_write().await?;
        let outcome = spend_join_token(&mut tx, token_hash, now).await?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the join token use", e))?;
        Ok(outcome)
    }

    async fn redeem_join_token(
        &self,
        token_hash: &str,
        now: i64,
        agent: AttestedAgent,
        issuer_id: &str,
        alias_selectors: Vec<Selector>,
    ) -> Result<JoinTokenRedemption> {
        // BEGIN IMMEDIATE: the whole redemption holds the write lock, so concurrent redemptions of
        // one token run one after the other and only the first finds it unspent.
        let mut tx = self.begin_write().await?;
        let token = match spend_join_token(&mut tx, token_hash, now).await? {
            JoinTokenUse::Unknown => return Ok(JoinTokenRedemption::Unknown),
            JoinTokenUse::AlreadySpent => return Ok(JoinTokenRedemption::AlreadySpent),
            JoinTokenUse::Consumed(token) => token,
        };
        if now > token.expires_at {
            tx.commit()
                .await
                .map_err(|e| db_error("committing the expired join token", e))?;
            return Ok(JoinTokenRedemption::Expired);
        }
        // On error (a banned agent) the transaction is dropped: rolled back, the token unspent.
        store_agent(&mut tx, agent).await?;
        if let Some(alias) = &token.alias_spiffe_id {
            let alias_entry = NewEntry {
                spiffe_id: alias.clone(),
                parent_id: issuer_id.to_owned(),
                selectors: alias_selectors,
                ..NewEntry::default()
            };
            insert_entry(&mut tx, alias_entry, true).await?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the join token redemption", e))?;
        Ok(JoinTokenRedemption::Redeemed(token))
    }

    async fn prune_join_tokens(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM join_tokens WHERE expires_at < ?")
            .bind(before)
            .execute(&self.write)
            .await
            .map_err(|e| db_error("pruning join tokens", e))?;
        Ok(done.rows_affected())
    }

    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()> {
        sqlx::query(
            "INSERT INTO bundles (trust_domain, document, own, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, \
             own = excluded.own, updated_at = excluded.updated_at",
        )
        .bind(&bundle.trust_domain)
        .bind(&bundle.document)
        .bind(bundle.own)
        .bind(bundle.updated_at)
        .execute(&self.write)
        .await
        .map_err(|e| db_error("storing the bundle", e))?;
        Ok(())
    }

    async fn get_bundle(&self, trust_domain: &str) -> Result<Option<StoredBundle>> {
        let row: Option<BundleRow> = sqlx::query_as(
            "SELECT trust_domain, document, own, updated_at FROM bundles WHERE trust_domain = ?",
        )
        .bind(trust_domain)
        .fetch_optional(&self.read)
        .await
        .map_err(|e| db_error("loading the bundle", e))?;
        Ok(row.map(bundle_from_row))
    }

    async fn list_bundles(&self) -> Result<Vec<StoredBundle>> {
        let rows: Vec<BundleRow> = sqlx::query_as(
            "SELECT trust_domain, document, own, updated_at FROM bundles ORDER BY trust_domain",
        )
        .fetch_all(&self.read)
        .await
        .map_err(|e| db_error("listing bundles", e))?;
        Ok(rows.into_iter().map(bundle_from_row).collect())
    }

    async fn delete_bundle(&self, trust_domain: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM bundles WHERE trust_domain = ?")
            .bind(trust_domain)
            .execute(&self.write)
            .await
            .map_err(|e| db_error("deleting the bundle", e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "bundle",
                id: trust_domain.to_owned(),
            });
        }
        Ok(())
    }

    async fn load_journal(&self, name: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT data FROM journals WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(|e| db_error("loading the journal", e))
    }

    async fn save_journal(&self, name: &str, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO journals (name, data, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET data = excluded.data, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(data)
        .bind(now_unix())
        .execute(&self.write)
        .await
        .map_err(|e| db_error("storing the journal", e))?;
        Ok(())
    }

    async fn append_audit_event(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let details = canonical_json(&event.details);
        // BEGIN IMMEDIATE holds the database's write lock: appends are serialized.
        let mut tx = self.begin_write().await?;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error("reading the audit log head", e))?;
        let (seq, prev_hash) = match last {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = audit_hash(&prev_hash, &event);
        sqlx::query(&format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(seq)
        .bind(event.time_ms)
        .bind(&event.kind)
        .bind(&event.actor)
        .bind(&event.subject)
        .bind(&event.outcome)
        .bind(&details)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("appending the audit event", e))?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the audit event", e))?;
        Ok(AuditEvent {
            seq,
            event,
            prev_hash,
            hash,
        })
    }

    async fn list_audit_events(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>> {
        let limit = if limit == 0 { -1 } else { i64::from(limit) };
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(|e| db_error("listing audit events", e))?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }
}
