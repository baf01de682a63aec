//! [`InstrumentedStore`]: a [`Store`] decorator that records the latency of every call in
//! [`Metrics`] (`signet_store_call_duration_seconds{op}`) and otherwise passes calls through.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use signet_store::{
    AttestedAgent, AuditEvent, AuditFilter, EntryChanges, EntryFilter, FederationRelationship,
    JoinToken, JoinTokenRedemption, JoinTokenUse, NewAuditEvent, NewEntry, Page, RegistrationEntry,
    Result, Selector, Store, StoredBundle,
};

use crate::metrics::Metrics;

/// Wraps a store and times each call.
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let out = fut.await;
        self.metrics
            .record_store_call(op, start.elapsed().as_secs_f64());
        out
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn ping(&self) -> Result<()> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn create_entry(&self, entry: NewEntry) -> Result<RegistrationEntry> {
        self.timed("create_entry", self.inner.create_entry(entry))
            .await
    }
    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        self.timed("update_entry", self.inner.update_entry(entry))
            .await
    }
    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry> {
        self.timed("delete_entry", self.inner.delete_entry(id))
            .await
    }
    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>> {
        self.timed("get_entry", self.inner.get_entry(id)).await
    }
    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &Page,
    ) -> Result<(Vec<RegistrationEntry>, Option<String>)> {
        self.timed("list_entries", self.inner.list_entries(filter, page))
            .await
    }
    async fn list_entries_by_parents(
        &self,
        parent_ids: &[String],
    ) -> Result<Vec<RegistrationEntry>> {
        self.timed(
            "list_entries_by_parents",
            self.inner.list_entries_by_parents(parent_ids),
        )
        .await
    }
    async fn entry_changes_since(&self, since: i64) -> Result<EntryChanges> {
        self.timed("entry_changes_since", self.inner.entry_changes_since(since))
            .await
    }
    async fn current_revision(&self) -> Result<i64> {
        self.timed("current_revision", self.inner.current_revision())
            .await
    }
    async fn count_entries(&self) -> Result<u64> {
        self.timed("count_entries", self.inner.count_entries())
            .await
    }
    async fn create_agent(&self, agent: AttestedAgent, alias_entries: Vec<NewEntry>) -> Result<()> {
        self.timed(
            "create_agent",
            self.inner.create_agent(agent, alias_entries),
        )
        .await
    }
    async fn update_agent_svid(
        &self,
        spiffe_id: &str,
        serial: &str,
        expires_at: i64,
    ) -> Result<()> {
        self.timed(
            "update_agent_svid",
            self.inner.update_agent_svid(spiffe_id, serial, expires_at),
        )
        .await
    }
    async fn get_agent(&self, spiffe_id: &str) -> Result<Option<AttestedAgent>> {
        self.timed("get_agent", self.inner.get_agent(spiffe_id))
            .await
    }
    async fn list_agents(&self) -> Result<Vec<AttestedAgent>> {
        self.timed("list_agents", self.inner.list_agents()).await
    }
    async fn delete_agent(&self, spiffe_id: &str) -> Result<()> {
        self.timed("delete_agent", self.inner.delete_agent(spiffe_id))
            .await
    }
    async fn set_agent_banned(&self, spiffe_id: &str, banned: bool) -> Result<()> {
        self.timed(
            "set_agent_banned",
            self.inner.set_agent_banned(spiffe_id, banned),
        )
        .await
    }
    async fn count_agents(&self) -> Result<u64> {
        self.timed("count_agents", self.inner.count_agents()).await
    }
    async fn create_join_token(&self, token: JoinToken) -> Result<()> {
        self.timed("create_join_token", self.inner.create_join_token(token))
            .await
    }
    async fn consume_join_token(&self, token_hash: &str, now: i64) -> Result<JoinTokenUse> {
        self.timed(
            "consume_join_token",
            self.inner.consume_join_token(token_hash, now),
        )
        .await
    }
    async fn redeem_join_token(
        &self,
        token_hash: &str,
        now: i64,
        agent: AttestedAgent,
        issuer_id: &str,
        alias_selectors: Vec<Selector>,
    ) -> Result<JoinTokenRedemption> {
        self.timed(
            "redeem_join_token",
            self.inner
                .redeem_join_token(token_hash, now, agent, issuer_id, alias_selectors),
        )
        .await
    }
    async fn prune_join_tokens(&self, before: i64) -> Result<u64> {
        self.timed("prune_join_tokens", self.inner.prune_join_tokens(before))
            .await
    }
    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()> {
        self.timed("set_bundle", self.inner.set_bundle(bundle))
            .await
    }
    async fn get_bundle(&self, trust_domain: &str) -> Result<Option<StoredBundle>> {
        self.timed("get_bundle", self.inner.get_bundle(trust_domain))
            .await
    }
    async fn list_bundles(&self) -> Result<Vec<StoredBundle>> {
        self.timed("list_bundles", self.inner.list_bundles()).await
    }
    async fn delete_bundle(&self, trust_domain: &str) -> Result<()> {
        self.timed("delete_bundle", self.inner.delete_bundle(trust_domain))
            .await
    }
    async fn create_federation_relationship(
        &self,
        relationship: FederationRelationship,
        bundle: Option<StoredBundle>,
    ) -> Result<()> {
        self.timed(
            "create_federation_relationship",
            self.inner
                .create_federation_relationship(relationship, bundle),
        )
        .await
    }
    async fn update_federation_relationship(
        &self,
        relationship: FederationRelationship,
        bundle: Option<StoredBundle>,
    ) -> Result<()> {
        self.timed(
            "update_federation_relationship",
            self.inner
                .update_federation_relationship(relationship, bundle),
        )
        .await
    }
    async fn get_federation_relationship(
        &self,
        trust_domain: &str,
    ) -> Result<Option<FederationRelationship>> {
        self.timed(
            "get_federation_relationship",
            self.inner.get_federation_relationship(trust_domain),
        )
        .await
    }
    async fn list_federation_relationships(&self) -> Result<Vec<FederationRelationship>> {
        self.timed(
            "list_federation_relationships",
            self.inner.list_federation_relationships(),
        )
        .await
    }
    async fn delete_federation_relationship(&self, trust_domain: &str) -> Result<()> {
        self.timed(
            "delete_federation_relationship",
            self.inner.delete_federation_relationship(trust_domain),
        )
        .await
    }
    async fn load_journal(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.timed("load_journal", self.inner.load_journal(name))
            .await
    }
    async fn save_journal(&self, name: &str, data: &[u8]) -> Result<()> {
        self.timed("save_journal", self.inner.save_journal(name, data))
            .await
    }
    async fn append_audit_event(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        self.timed("append_audit_event", self.inner.append_audit_event(event))
            .await
    }
    async fn list_audit_events(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>> {
        self.timed(
            "list_audit_events",
            self.inner.list_audit_events(after, limit),
        )
        .await
    }
    async fn list_audit_events_matching(
        &self,
        after: i64,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>> {
        self.timed(
            "list_audit_events_matching",
            self.inner.list_audit_events_matching(after, limit, filter),
        )
        .await
    }
    async fn last_audit_event(&self) -> Result<Option<AuditEvent>> {
        self.timed("last_audit_event", self.inner.last_audit_event())
            .await
    }
}
