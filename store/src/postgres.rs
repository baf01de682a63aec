//! The PostgreSQL backend, for several issuers sharing one datastore.
//!
//! Entry writers serialize on the row lock of the store revision counter, so revisions commit in
//! order and an agent syncing by revision never skips a change. Audit appends take an exclusive
//! table lock. Readers are never blocked by either.
//!
//! TLS to the database is not supported yet (no TLS feature of sqlx is compiled in): use local
//! connections (TCP on a trusted network or a Unix socket).

use crate::common::{
    AGENT_COLUMNS, AUDIT_COLUMNS, AgentRow, AuditRow, ENTRY_COLUMNS, EntryRow, EntryWrite,
    count_to_u64, db_error, encode_json, entries_from_rows, filter_selectors, migrate_error,
    new_entry_id, now_unix,
};
use crate::{
    AttestedAgent, AuditEvent, DeletedEntry, EntryChanges, EntryFilter, EntryMove, GENESIS_HASH,
    JoinToken, JoinTokenRedemption, JoinTokenUse, NewAuditEvent, NewEntry, Page, RegistrationEntry,
    Result, Selector, Store, StoreError, StoredBundle, audit_hash, canonical_json,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};
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

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|e| db_error(&format!("starting a transaction on {}", self.target), e))
    }
}

/// Takes the entry-writer lock (the revision counter's row) for the rest of the transaction.
async fn lock_entries(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT revision FROM store_revision WHERE id = 1 FOR UPDATE")
        .execute(conn)
        .await
        .map_err(|e| db_error("locking the store revision", e))?;
    Ok(())
}

async fn bump_revision(conn: &mut PgConnection) -> Result<i64> {
    sqlx::query_scalar::<_, i64>(
        "UPDATE store_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(conn)
    .await
    .map_err(|e| db_error("bumping the store revision", e))
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

/// Inserts an entry (the caller holds [`lock_entries`]); with `if_absent`, an existing entry of
/// the same identity is left alone and `None` is returned instead of failing.
async fn insert_entry(
    conn: &mut PgConnection,
    entry: NewEntry,
    if_absent: bool,
) -> Result<Option<RegistrationEntry>> {
    let w = EntryWrite::new(entry)?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM entries WHERE identity_hash = $1")
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
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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

/// Loads an agent's `banned` flag, locking its row for the rest of the transaction.
async fn agent_banned_for_update(conn: &mut PgConnection, spiffe_id: &str) -> Result<Option<bool>> {
    sqlx::query_scalar("SELECT banned FROM agents WHERE spiffe_id = $1 FOR UPDATE")
        .bind(spiffe_id)
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("loading the agent", e))
}

/// Records `agent` (insert, or replace a non-banned agent's record keeping `created_at` and
/// `banned`), holding the agent's row lock; [`StoreError::Conflict`] if it is banned.
async fn store_agent(conn: &mut PgConnection, agent: AttestedAgent) -> Result<()> {
    let mut selectors = agent.selectors;
    selectors.sort();
    selectors.dedup();
    let selectors_json = encode_json(&selectors)?;
    if agent_banned_for_update(conn, &agent.spiffe_id).await? == Some(true) {
        return Err(StoreError::Conflict(format!(
            "agent {:?} is banned",
            agent.spiffe_id
        )));
    }
    // A concurrent ban between the check and the upsert survives: `banned` is not updated.
    sqlx::query(&format!(
        "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
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

/// Marks the token spent at `now` if it is unspent. A single UPDATE: concurrent spenders queue on
/// the row lock and re-check `used_at` once the holder's transaction ends, so exactly one of them
/// gets the token (and, if the holder rolls back, the next one does).
async fn spend_join_token(
    conn: &mut PgConnection,
    token_hash: &str,
    now: i64,
) -> Result<JoinTokenUse> {
    let spent: Option<JoinTokenRow> = sqlx::query_as(
        "UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
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
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM join_tokens WHERE token_hash = $1")
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
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(&format!("ping {}", self.target), e))?;
        Ok(())
    }

    async fn create_entry(&self, entry: NewEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin().await?;
        lock_entries(&mut tx).await?;
        let created = insert_entry(&mut tx, entry, false).await?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the entry", e))?;
        created.ok_or_else(|| StoreError::Corrupt("entry insert returned nothing".into()))
    }

    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin().await?;
        lock_entries(&mut tx).await?;
        let current: Option<(i64, i64, String, String)> = sqlx::query_as(
            "SELECT revision, created_at, selectors, parent_id FROM entries WHERE id = $1",
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
            sqlx::query_scalar("SELECT id FROM entries WHERE identity_hash = $1 AND id <> $2")
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
            "UPDATE entries SET spiffe_id = $1, parent_id = $2, identity_hash = $3, \
             selectors = $4, x509_svid_ttl = $5, jwt_svid_ttl = $6, dns_names = $7, hint = $8, \
             admin = $9, downstream = $10, federates_with = $11, expires_at = $12, \
             revision = $13 WHERE id = $14",
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
                "INSERT INTO entry_moves (entry_id, old_parent_id, revision) VALUES ($1, $2, $3)",
            )
            .bind(&entry.id)
            .bind(&old_parent)
            .bind(revision)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("recording the entry move", e))?;
        }
        if old_selectors != w.selectors_json {
            sqlx::query("DELETE FROM entry_selectors WHERE entry_id = $1")
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
        let mut tx = self.begin().await?;
        lock_entries(&mut tx).await?;
        let row: Option<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1"
        ))
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
        sqlx::query("DELETE FROM entries WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("deleting the entry", e))?;
        sqlx::query(
            "INSERT INTO entry_tombstones (entry_id, revision, parent_id) VALUES ($1, $2, $3) \
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
        let row: Option<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("loading the entry", e))?;
        row.map(EntryRow::into_entry).transpose()
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &Page,
    ) -> Result<(Vec<RegistrationEntry>, Option<String>)> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE TRUE"
        ));
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
            let kinds: Vec<&str> = selectors.iter().map(|s| s.kind.as_str()).collect();
            let values: Vec<&str> = selectors.iter().map(|s| s.value.as_str()).collect();
            qb.push(
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
        qb.push(" ORDER BY id");
        if page.size > 0 {
            qb.push(" LIMIT ").push_bind(i64::from(page.size) + 1);
        }
        let rows: Vec<EntryRow> = qb
            .build_query_as()
            .fetch_all(&self.pool)
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
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE parent_id = ANY($1) ORDER BY id"
        ))
        .bind(parent_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing entries by parent", e))?;
        entries_from_rows(rows)
    }

    async fn entry_changes_since(&self, since: i64) -> Result<EntryChanges> {
        // One snapshot for the revision and both lists.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| db_error("starting a read transaction", e))?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM store_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("reading the store revision", e))?;
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE revision > $1 ORDER BY revision, id"
        ))
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("listing changed entries", e))?;
        let deleted: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT entry_id, parent_id, revision FROM entry_tombstones WHERE revision > $1 \
             ORDER BY revision, entry_id",
        )
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("listing deleted entries", e))?;
        let moved: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT entry_id, old_parent_id, revision FROM entry_moves WHERE revision > $1 \
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
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("reading the store revision", e))
    }

    async fn count_entries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("counting entries", e))?;
        count_to_u64(n)
    }

    async fn create_agent(&self, agent: AttestedAgent, alias_entries: Vec<NewEntry>) -> Result<()> {
        let mut tx = self.begin().await?;
        store_agent(&mut tx, agent).await?;
        if !alias_entries.is_empty() {
            lock_entries(&mut tx).await?;
            for entry in alias_entries {
                insert_entry(&mut tx, entry, true).await?;
            }
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
        let mut tx = self.begin().await?;
        match agent_banned_for_update(&mut tx, spiffe_id).await? {
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
            "UPDATE agents SET serial = $1, expires_at = $2, updated_at = $3 WHERE spiffe_id = $4",
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
            "SELECT {AGENT_COLUMNS} FROM agents WHERE spiffe_id = $1"
        ))
        .bind(spiffe_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("loading the agent", e))?;
        row.map(AgentRow::into_agent).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AttestedAgent>> {
        let rows: Vec<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY spiffe_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing agents", e))?;
        rows.into_iter().map(AgentRow::into_agent).collect()
    }

    async fn delete_agent(&self, spiffe_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM agents WHERE spiffe_id = $1")
            .bind(spiffe_id)
            .execute(&self.pool)
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
        let done = sqlx::query("UPDATE agents SET banned = $1 WHERE spiffe_id = $2")
            .bind(banned)
            .bind(spiffe_id)
            .execute(&self.pool)
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
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("counting agents", e))?;
        count_to_u64(n)
    }

    async fn create_join_token(&self, token: JoinToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (token_hash, expires_at, alias_spiffe_id, created_at, \
             used_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token_hash)
        .bind(token.expires_at)
        .bind(&token.alias_spiffe_id)
        .bind(token.created_at)
        .bind(token.used_at)
        .execute(&self.pool)
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
        let mut tx = self.begin().await?;
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
        // Locks, in this order (as everywhere, so no deadlock): the token's row (held from the
        // UPDATE to the end), the agent's row, then the entry-writer lock for the alias entry.
        let mut tx = self.begin().await?;
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
            lock_entries(&mut tx).await?;
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
        let done = sqlx::query("DELETE FROM join_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("pruning join tokens", e))?;
        Ok(done.rows_affected())
    }

    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()> {
        sqlx::query(
            "INSERT INTO bundles (trust_domain, document, own, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, \
             own = excluded.own, updated_at = excluded.updated_at",
        )
        .bind(&bundle.trust_domain)
        .bind(&bundle.document)
        .bind(bundle.own)
        .bind(bundle.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("storing the bundle", e))?;
        Ok(())
    }

    async fn get_bundle(&self, trust_domain: &str) -> Result<Option<StoredBundle>> {
        let row: Option<BundleRow> = sqlx::query_as(
            "SELECT trust_domain, document, own, updated_at FROM bundles WHERE trust_domain = $1",
        )
        .bind(trust_domain)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("loading the bundle", e))?;
        Ok(row.map(bundle_from_row))
    }

    async fn list_bundles(&self) -> Result<Vec<StoredBundle>> {
        let rows: Vec<BundleRow> = sqlx::query_as(
            "SELECT trust_domain, document, own, updated_at FROM bundles ORDER BY trust_domain",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing bundles", e))?;
        Ok(rows.into_iter().map(bundle_from_row).collect())
    }

    async fn delete_bundle(&self, trust_domain: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM bundles WHERE trust_domain = $1")
            .bind(trust_domain)
            .execute(&self.pool)
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
        sqlx::query_scalar("SELECT data FROM journals WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("loading the journal", e))
    }

    async fn save_journal(&self, name: &str, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO journals (name, data, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET data = excluded.data, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(data)
        .bind(now_unix())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("storing the journal", e))?;
        Ok(())
    }

    async fn append_audit_event(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let details = canonical_json(&event.details);
        let mut tx = self.begin().await?;
        // Serializes appenders; plain readers (ACCESS SHARE) are not blocked.
        sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("locking the audit log", e))?;
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
            "INSERT INTO audit_events ({AUDIT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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
        let limit = (limit > 0).then(|| i64::from(limit));
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing audit events", e))?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }
}
