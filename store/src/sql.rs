//! The [`Store`] implementation both backends share, generic over sqlx's [`Database`].
//!
//! Everything whose SQL and logic are the same on SQLite and PostgreSQL lives here once: entry
//! writes with their revisions, tombstones and moves, agents, join-token redemption, bundles,
//! federation relationships, journals and the audit chain. A backend supplies only what really
//! differs ([`Backend`]): its pools and how it starts transactions, its locks, and the statements
//! that use dialect features (multi-row inserts or arrays, JSON functions).
//!
//! Statements use `$N` placeholders, which both sqlx drivers accept.

use std::future::Future;

use async_trait::async_trait;
use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool,
    Transaction, Type,
};

use crate::common::{
    AGENT_COLUMNS, AUDIT_COLUMNS, AgentRow, AuditRow, BUNDLE_COLUMNS, BundleRow, ENTRY_COLUMNS,
    EntryRow, EntryWrite, JOIN_TOKEN_COLUMNS, JoinTokenRow, RELATIONSHIP_COLUMNS, RelationshipRow,
    bundle_from_row, count_to_u64, db_error, encode_json, entries_from_rows, filter_selectors,
    new_entry_id, now_unix, relationship_from_row, token_from_row,
};
use crate::{
    AttestedAgent, AuditEvent, AuditFilter, DeletedEntry, EntryChanges, EntryFilter, EntryMove,
    FederationRelationship, GENESIS_HASH, JoinToken, JoinTokenRedemption, JoinTokenUse,
    NewAuditEvent, NewEntry, Page, RegistrationEntry, Result, Selector, Store, StoreError,
    StoredBundle, audit_hash, canonical_json,
};

/// A connection of backend `B`'s database (what a transaction dereferences to).
pub(crate) type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// What differs between the backends. Implementing it implements [`Store`].
pub(crate) trait Backend: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;

    /// `" FOR UPDATE"` where a read that precedes a write must lock the row; empty where the
    /// write transaction already excludes other writers.
    const ROW_LOCK: &'static str;

    /// The pool plain reads run on.
    fn read_pool(&self) -> &Pool<Self::Db>;
    /// The pool single-statement writes run on.
    fn write_pool(&self) -> &Pool<Self::Db>;
    /// What a failed ping names in its error.
    fn ping_context(&self) -> String;
    /// Starts a write transaction.
    fn begin_write(&self) -> impl Future<Output = Result<Transaction<'static, Self::Db>>> + Send;
    /// Starts a read-only transaction that sees one snapshot throughout.
    fn begin_snapshot(&self)
    -> impl Future<Output = Result<Transaction<'static, Self::Db>>> + Send;
    /// Takes the entry-writer lock for the rest of the transaction, so that revisions commit in
    /// order (called before an entry write bumps the revision).
    fn lock_entries(conn: &mut Conn<Self>) -> impl Future<Output = Result<()>> + Send;
    /// Serializes audit appenders for the rest of the transaction.
    fn lock_audit_log(conn: &mut Conn<Self>) -> impl Future<Output = Result<()>> + Send;
    /// Inserts the selector rows of an entry.
    fn insert_selectors(
        conn: &mut Conn<Self>,
        entry_id: &str,
        selectors: &[Selector],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Appends ` AND id IN (entries having every one of `selectors`)` to an entry query.
    fn push_selector_filter<'a>(stmt: &mut Statement<'a, Self::Db>, selectors: &[&'a Selector]);
    /// The entries whose parent is one of `parent_ids` (not empty), ordered by id.
    fn entries_by_parents(
        &self,
        parent_ids: &[String],
    ) -> impl Future<Output = Result<Vec<EntryRow>>> + Send;
    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
}

/// A statement assembled piece by piece, like sqlx's `QueryBuilder`. (Over a generic database,
/// `QueryBuilder::build` borrows the builder for as long as its arguments live, which outlasts
/// the builder itself.) Run it as `query_as_with(&sql, args)` after [`Statement::into_parts`].
pub(crate) struct Statement<'a, DB: Database> {
    sql: String,
    /// The arguments, or the first error binding one (reported when the statement runs).
    args: std::result::Result<DB::Arguments<'a>, BoxDynError>,
}

impl<'a, DB: Database> Statement<'a, DB> {
    /// A statement starting with `sql`.
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Ok(DB::Arguments::default()),
        }
    }

    /// Appends SQL.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder and binds `value` to it.
    pub(crate) fn push_bind<T: 'a + Encode<'a, DB> + Type<DB>>(&mut self, value: T) -> &mut Self {
        if let Ok(args) = &mut self.args {
            match args.add(value) {
                // Writing to a String cannot fail.
                Ok(()) => drop(args.format_placeholder(&mut self.sql)),
                Err(e) => self.args = Err(e),
            }
        }
        self
    }

    /// The SQL and its arguments; binding failed if an argument could not be encoded.
    fn into_parts(self, what: &str) -> Result<(String, DB::Arguments<'a>)> {
        match self.args {
            Ok(args) => Ok((self.sql, args)),
            Err(e) => Err(db_error(what, sqlx::Error::Encode(e))),
        }
    }
}

/// The statements several [`Store`] methods share, on a caller's transaction or a pool.
struct Tx<B>(std::marker::PhantomData<B>);

impl<B, DB> Tx<B>
where
    B: Backend<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Type<DB>,
{
    /// `sql` with `id` bound as `$1`, the entry's columns from `spiffe_id` to `expires_at` as
    /// `$2` to `$13`, and `revision` as `$14`.
    fn entry_query<'q>(
        sql: &'q str,
        id: &'q str,
        w: &'q EntryWrite,
        revision: i64,
    ) -> Query<'q, DB, DB::Arguments<'q>> {
        let f = &w.fields;
        sqlx::query(sql)
            .bind(id)
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
    }

    async fn bump_revision(conn: &mut DB::Connection) -> Result<i64> {
        sqlx::query_scalar::<_, i64>(
            "UPDATE store_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(conn)
        .await
        .map_err(|e| db_error("bumping the store revision", e))
    }

    /// Inserts an entry (the caller holds [`Backend::lock_entries`]); with `if_absent`, an
    /// existing entry of the same identity is left alone and `None` is returned instead of
    /// failing.
    async fn insert_entry(
        conn: &mut DB::Connection,
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
        let revision = Self::bump_revision(conn).await?;
        let id = new_entry_id();
        let created_at = now_unix();
        let sql = "INSERT INTO entries (id, spiffe_id, parent_id, identity_hash, selectors, \
                   x509_svid_ttl, jwt_svid_ttl, dns_names, hint, admin, downstream, \
                   federates_with, expires_at, revision, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
        Self::entry_query(sql, &id, &w, revision)
            .bind(created_at)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("storing the entry", e))?;
        B::insert_selectors(conn, &id, &w.fields.selectors).await?;
        Ok(Some(RegistrationEntry {
            id,
            fields: w.fields,
            revision,
            created_at,
        }))
    }

    /// Loads an agent's `banned` flag (locking its row where rows lock).
    async fn agent_banned(conn: &mut DB::Connection, spiffe_id: &str) -> Result<Option<bool>> {
        sqlx::query_scalar(&format!(
            "SELECT banned FROM agents WHERE spiffe_id = $1{}",
            B::ROW_LOCK
        ))
        .bind(spiffe_id)
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("loading the agent", e))
    }

    /// Records `agent` (insert, or replace a non-banned agent's record keeping `created_at` and
    /// `banned`); [`StoreError::Conflict`] if it is banned.
    async fn store_agent(conn: &mut DB::Connection, agent: AttestedAgent) -> Result<()> {
        let mut selectors = agent.selectors;
        selectors.sort();
        selectors.dedup();
        let selectors_json = encode_json(&selectors)?;
        if Self::agent_banned(conn, &agent.spiffe_id).await? == Some(true) {
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
        .execute(conn)
        .await
        .map_err(|e| db_error("storing the agent", e))?;
        Ok(())
    }

    /// Marks the token spent at `now` if it is unspent. A single UPDATE: concurrent spenders
    /// queue on the row (or database) lock and re-check `used_at` once the holder's transaction
    /// ends, so exactly one of them gets the token (and, if the holder rolls back, the next one
    /// does).
    async fn spend_join_token(
        conn: &mut DB::Connection,
        token_hash: &str,
        now: i64,
    ) -> Result<JoinTokenUse> {
        let spent: Option<JoinTokenRow> = sqlx::query_as(&format!(
            "UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
             RETURNING {JOIN_TOKEN_COLUMNS}"
        ))
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("spending the join token", e))?;
        if let Some(row) = spent {
            return Ok(JoinTokenUse::Consumed(token_from_row(row)));
        }
        let exists: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM join_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_one(conn)
                .await
                .map_err(|e| db_error("looking up the join token", e))?;
        Ok(if exists > 0 {
            JoinTokenUse::AlreadySpent
        } else {
            JoinTokenUse::Unknown
        })
    }

    /// Inserts or replaces a bundle.
    async fn upsert_bundle<'c, E>(conn: E, bundle: &StoredBundle) -> Result<()>
    where
        E: Executor<'c, Database = DB>,
    {
        sqlx::query(&format!(
            "INSERT INTO bundles ({BUNDLE_COLUMNS}) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, \
             own = excluded.own, updated_at = excluded.updated_at"
        ))
        .bind(&bundle.trust_domain)
        .bind(&bundle.document)
        .bind(bundle.own)
        .bind(bundle.updated_at)
        .execute(conn)
        .await
        .map_err(|e| db_error("storing the bundle", e))?;
        Ok(())
    }

    /// The row keyed `$1` that `sql` selects, if any.
    async fn fetch_keyed<R>(pool: &Pool<DB>, sql: &str, key: &str, what: &str) -> Result<Option<R>>
    where
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        sqlx::query_as(sql)
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(|e| db_error(what, e))
    }

    /// Every row `sql` selects.
    async fn fetch_all<R>(pool: &Pool<DB>, sql: &str, what: &str) -> Result<Vec<R>>
    where
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        sqlx::query_as(sql)
            .fetch_all(pool)
            .await
            .map_err(|e| db_error(what, e))
    }

    /// [`StoreError::NotFound`] (a `kind` keyed `key`) when a statement changed no row.
    fn found(done: &DB::QueryResult, kind: &'static str, key: &str) -> Result<()> {
        if B::rows_affected(done) == 0 {
            return Err(StoreError::NotFound {
                kind,
                id: key.to_owned(),
            });
        }
        Ok(())
    }

    /// Runs `sql`, a `DELETE` of the row keyed `$1`; [`StoreError::NotFound`] if there was none.
    async fn delete_one(
        pool: &Pool<DB>,
        sql: &str,
        key: &str,
        what: &str,
        kind: &'static str,
    ) -> Result<()> {
        let done = sqlx::query(sql)
            .bind(key)
            .execute(pool)
            .await
            .map_err(|e| db_error(what, e))?;
        Self::found(&done, kind, key)
    }

    /// `sql` with the key and profile of `r` bound as `$1` to `$5`.
    fn relationship_query<'q>(
        sql: &'q str,
        r: &'q FederationRelationship,
    ) -> Query<'q, DB, DB::Arguments<'q>> {
        sqlx::query(sql)
            .bind(&r.trust_domain)
            .bind(&r.bundle_endpoint_url)
            .bind(&r.profile)
            .bind(&r.endpoint_spiffe_id)
            .bind(&r.ca_bundle_pem)
    }

    /// Runs a federation relationship statement, then stores `bundle` when given, and commits;
    /// when the statement changed no row, fails with `absent` and stores nothing.
    async fn write_relationship<'q>(
        mut tx: Transaction<'static, DB>,
        query: Query<'q, DB, DB::Arguments<'q>>,
        bundle: Option<&StoredBundle>,
        what: &str,
        absent: StoreError,
    ) -> Result<()> {
        let done = query
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(what, e))?;
        if B::rows_affected(&done) == 0 {
            return Err(absent);
        }
        if let Some(b) = bundle {
            Self::upsert_bundle(&mut *tx, b).await?;
        }
        tx.commit().await.map_err(|e| db_error(what, e))
    }
}

/// The bounds are what the statements bind and decode, over `DB` (the same list as on `Tx`:
/// Rust has no stable alias for bounds on other types than `Self`).
#[async_trait]
impl<B, DB> Store for B
where
    B: Backend<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Type<DB>,
{
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(self.read_pool())
            .await
            .map_err(|e| db_error(&self.ping_context(), e))?;
        Ok(())
    }

    async fn create_entry(&self, entry: NewEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin_write().await?;
        B::lock_entries(&mut tx).await?;
        let created = Tx::<B>::insert_entry(&mut tx, entry, false).await?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing the entry", e))?;
        created.ok_or_else(|| StoreError::Corrupt("entry insert returned nothing".into()))
    }

    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin_write().await?;
        B::lock_entries(&mut tx).await?;
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
        let revision = Tx::<B>::bump_revision(&mut tx).await?;
        let sql = "UPDATE entries SET spiffe_id = $2, parent_id = $3, identity_hash = $4, \
                   selectors = $5, x509_svid_ttl = $6, jwt_svid_ttl = $7, dns_names = $8, \
                   hint = $9, admin = $10, downstream = $11, federates_with = $12, \
                   expires_at = $13, revision = $14 WHERE id = $1";
        Tx::<B>::entry_query(sql, &entry.id, &w, revision)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("updating the entry", e))?;
        let f = &w.fields;
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
            B::insert_selectors(&mut tx, &entry.id, &f.selectors).await?;
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
        B::lock_entries(&mut tx).await?;
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
        let revision = Tx::<B>::bump_revision(&mut tx).await?;
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
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1");
        let row: Option<EntryRow> =
            Tx::<B>::fetch_keyed(self.read_pool(), &sql, id, "loading the entry").await?;
        row.map(EntryRow::into_entry).transpose()
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &Page,
    ) -> Result<(Vec<RegistrationEntry>, Option<String>)> {
        let mut stmt =
            Statement::<DB>::new(format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE 1 = 1"));
        if let Some(spiffe_id) = &filter.spiffe_id {
            stmt.push(" AND spiffe_id = ").push_bind(spiffe_id.as_str());
        }
        if let Some(parent_id) = &filter.parent_id {
            stmt.push(" AND parent_id = ").push_bind(parent_id.as_str());
        }
        if let Some(after) = &page.after {
            stmt.push(" AND id > ").push_bind(after.as_str());
        }
        let selectors = filter_selectors(&filter.selectors);
        if !selectors.is_empty() {
            B::push_selector_filter(&mut stmt, &selectors);
        }
        stmt.push(" ORDER BY id");
        if page.size > 0 {
            stmt.push(" LIMIT ").push_bind(i64::from(page.size) + 1);
        }
        let (sql, args) = stmt.into_parts("listing entries")?;
        let rows: Vec<EntryRow> = sqlx::query_as_with(&sql, args)
            .fetch_all(self.read_pool())
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
        entries_from_rows(self.entries_by_parents(parent_ids).await?)
    }

    async fn entry_changes_since(&self, since: i64) -> Result<EntryChanges> {
        // One snapshot for the revision and every list.
        let mut tx = self.begin_snapshot().await?;
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
            .fetch_one(self.read_pool())
            .await
            .map_err(|e| db_error("reading the store revision", e))
    }

    async fn count_entries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries")
            .fetch_one(self.read_pool())
            .await
            .map_err(|e| db_error("counting entries", e))?;
        count_to_u64(n)
    }

    async fn create_agent(&self, agent: AttestedAgent, alias_entries: Vec<NewEntry>) -> Result<()> {
        // Locks in this order everywhere (no deadlock): the agent's row, then the entry writers.
        let mut tx = self.begin_write().await?;
        Tx::<B>::store_agent(&mut tx, agent).await?;
        if !alias_entries.is_empty() {
            B::lock_entries(&mut tx).await?;
            for entry in alias_entries {
                Tx::<B>::insert_entry(&mut tx, entry, true).await?;
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
        let mut tx = self.begin_write().await?;
        match Tx::<B>::agent_banned(&mut tx, spiffe_id).await? {
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
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE spiffe_id = $1");
        let row: Option<AgentRow> =
            Tx::<B>::fetch_keyed(self.read_pool(), &sql, spiffe_id, "loading the agent").await?;
        row.map(AgentRow::into_agent).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AttestedAgent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY spiffe_id");
        let rows: Vec<AgentRow> =
            Tx::<B>::fetch_all(self.read_pool(), &sql, "listing agents").await?;
        rows.into_iter().map(AgentRow::into_agent).collect()
    }

    async fn delete_agent(&self, spiffe_id: &str) -> Result<()> {
        Tx::<B>::delete_one(
            self.write_pool(),
            "DELETE FROM agents WHERE spiffe_id = $1",
            spiffe_id,
            "deleting the agent",
            "agent",
        )
        .await
    }

    async fn set_agent_banned(&self, spiffe_id: &str, banned: bool) -> Result<()> {
        let done = sqlx::query("UPDATE agents SET banned = $1 WHERE spiffe_id = $2")
            .bind(banned)
            .bind(spiffe_id)
            .execute(self.write_pool())
            .await
            .map_err(|e| db_error("banning the agent", e))?;
        Tx::<B>::found(&done, "agent", spiffe_id)
    }

    async fn count_agents(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
            .fetch_one(self.read_pool())
            .await
            .map_err(|e| db_error("counting agents", e))?;
        count_to_u64(n)
    }

    async fn create_join_token(&self, token: JoinToken) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO join_tokens ({JOIN_TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(&token.token_hash)
        .bind(token.expires_at)
        .bind(&token.alias_spiffe_id)
        .bind(token.created_at)
        .bind(token.used_at)
        .execute(self.write_pool())
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
        let outcome = Tx::<B>::spend_join_token(&mut tx, token_hash, now).await?;
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
        // SQLite's write transaction holds the database lock throughout instead: concurrent
        // redemptions of one token run one after the other and only the first finds it unspent.
        let mut tx = self.begin_write().await?;
        let token = match Tx::<B>::spend_join_token(&mut tx, token_hash, now).await? {
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
        Tx::<B>::store_agent(&mut tx, agent).await?;
        if let Some(alias) = &token.alias_spiffe_id {
            B::lock_entries(&mut tx).await?;
            let alias_entry = NewEntry {
                spiffe_id: alias.clone(),
                parent_id: issuer_id.to_owned(),
                selectors: alias_selectors,
                ..NewEntry::default()
            };
            Tx::<B>::insert_entry(&mut tx, alias_entry, true).await?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the join token redemption", e))?;
        Ok(JoinTokenRedemption::Redeemed(token))
    }

    async fn prune_join_tokens(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM join_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(self.write_pool())
            .await
            .map_err(|e| db_error("pruning join tokens", e))?;
        Ok(B::rows_affected(&done))
    }

    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()> {
        Tx::<B>::upsert_bundle(self.write_pool(), &bundle).await
    }

    async fn get_bundle(&self, trust_domain: &str) -> Result<Option<StoredBundle>> {
        let sql = format!("SELECT {BUNDLE_COLUMNS} FROM bundles WHERE trust_domain = $1");
        let row: Option<BundleRow> =
            Tx::<B>::fetch_keyed(self.read_pool(), &sql, trust_domain, "loading the bundle")
                .await?;
        Ok(row.map(bundle_from_row))
    }

    async fn list_bundles(&self) -> Result<Vec<StoredBundle>> {
        let sql = format!("SELECT {BUNDLE_COLUMNS} FROM bundles ORDER BY trust_domain");
        let rows: Vec<BundleRow> =
            Tx::<B>::fetch_all(self.read_pool(), &sql, "listing bundles").await?;
        Ok(rows.into_iter().map(bundle_from_row).collect())
    }

    async fn delete_bundle(&self, trust_domain: &str) -> Result<()> {
        Tx::<B>::delete_one(
            self.write_pool(),
            "DELETE FROM bundles WHERE trust_domain = $1",
            trust_domain,
            "deleting the bundle",
            "bundle",
        )
        .await
    }

    async fn create_federation_relationship(
        &self,
        relationship: FederationRelationship,
        bundle: Option<StoredBundle>,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO federation_relationships ({RELATIONSHIP_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (trust_domain) DO NOTHING"
        );
        let query = Tx::<B>::relationship_query(&sql, &relationship)
            .bind(relationship.created_at)
            .bind(relationship.updated_at);
        let absent = StoreError::AlreadyExists(format!(
            "a federation relationship with trust domain {:?} already exists",
            relationship.trust_domain
        ));
        let tx = self.begin_write().await?;
        let what = "storing the federation relationship";
        Tx::<B>::write_relationship(tx, query, bundle.as_ref(), what, absent).await
    }

    async fn update_federation_relationship(
        &self,
        relationship: FederationRelationship,
        bundle: Option<StoredBundle>,
    ) -> Result<()> {
        let sql = "UPDATE federation_relationships SET bundle_endpoint_url = $2, profile = $3, \
                   endpoint_spiffe_id = $4, ca_bundle_pem = $5, updated_at = $6 \
                   WHERE trust_domain = $1";
        let query = Tx::<B>::relationship_query(sql, &relationship).bind(relationship.updated_at);
        let absent = StoreError::NotFound {
            kind: "federation relationship",
            id: relationship.trust_domain.clone(),
        };
        let tx = self.begin_write().await?;
        let what = "updating the federation relationship";
        Tx::<B>::write_relationship(tx, query, bundle.as_ref(), what, absent).await
    }

    async fn get_federation_relationship(
        &self,
        trust_domain: &str,
    ) -> Result<Option<FederationRelationship>> {
        let sql = format!(
            "SELECT {RELATIONSHIP_COLUMNS} FROM federation_relationships WHERE trust_domain = $1"
        );
        let what = "loading the federation relationship";
        let row: Option<RelationshipRow> =
            Tx::<B>::fetch_keyed(self.read_pool(), &sql, trust_domain, what).await?;
        Ok(row.map(relationship_from_row))
    }

    async fn list_federation_relationships(&self) -> Result<Vec<FederationRelationship>> {
        let sql = format!(
            "SELECT {RELATIONSHIP_COLUMNS} FROM federation_relationships ORDER BY trust_domain"
        );
        let what = "listing federation relationships";
        let rows: Vec<RelationshipRow> = Tx::<B>::fetch_all(self.read_pool(), &sql, what).await?;
        Ok(rows.into_iter().map(relationship_from_row).collect())
    }

    async fn delete_federation_relationship(&self, trust_domain: &str) -> Result<()> {
        Tx::<B>::delete_one(
            self.write_pool(),
            "DELETE FROM federation_relationships WHERE trust_domain = $1",
            trust_domain,
            "deleting the federation relationship",
            "federation relationship",
        )
        .await
    }

    async fn load_journal(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let sql = "SELECT data FROM journals WHERE name = $1";
        let row: Option<(Vec<u8>,)> =
            Tx::<B>::fetch_keyed(self.read_pool(), sql, name, "loading the journal").await?;
        Ok(row.map(|(data,)| data))
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
        .execute(self.write_pool())
        .await
        .map_err(|e| db_error("storing the journal", e))?;
        Ok(())
    }

    async fn append_audit_event(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        let details = canonical_json(&event.details);
        let mut tx = self.begin_write().await?;
        B::lock_audit_log(&mut tx).await?;
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
        self.list_audit_events_matching(after, limit, &AuditFilter::default())
            .await
    }

    async fn list_audit_events_matching(
        &self,
        after: i64,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>> {
        let mut stmt = Statement::<DB>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > "
        ));
        stmt.push_bind(after);
        if let Some(kind) = &filter.kind {
            stmt.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(prefix) = &filter.kind_prefix {
            // substr/length rather than LIKE: no wildcard in the prefix to escape. Both count
            // characters, so the comparison is exact for any UTF-8 prefix.
            stmt.push(" AND substr(kind, 1, length(")
                .push_bind(prefix.as_str())
                .push(")) = ")
                .push_bind(prefix.as_str());
        }
        stmt.push(" ORDER BY seq");
        if limit > 0 {
            stmt.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let (sql, args) = stmt.into_parts("listing audit events")?;
        let rows: Vec<AuditRow> = sqlx::query_as_with(&sql, args)
            .fetch_all(self.read_pool())
            .await
            .map_err(|e| db_error("listing audit events", e))?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn last_audit_event(&self) -> Result<Option<AuditEvent>> {
        let row: Option<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(self.read_pool())
        .await
        .map_err(|e| db_error("reading the audit log head", e))?;
        row.map(AuditRow::into_event).transpose()
    }
}
