//! Entry sync, workload SVID signing and rotation: the loop that keeps the [`Cache`] equal to "one
//! valid SVID for every entry authorized for this node".
//!
//! Each pass:
//! 1. a delta `SyncEntries` from the mirror's revision (cheap when nothing changed), applied to
//!    the [`Mirror`]; the own bundle that comes with it is pushed to the cache (CA rotation) and
//!    persisted;
//! 2. entries gone (deleted, expired, no longer authorized) are removed from the cache, so open
//!    streams see them withdrawn; changed entries whose selectors, hint or federation differ from
//!    the cached SVID's are updated in place; new entries and entries whose SPIFFE ID, DNS names or
//!    TTL changed are queued for signing;
//! 3. every queued or due SVID is signed: a fresh P-256 key and CSR per entry, CSRs sent in
//!    batches of at most 500 (`BatchNewX509SVID`), results pushed to the cache one batch at a time.
//!
//! Each SVID is renewed at a random point between 50 % and 60 % of its lifetime (so SVIDs issued
//! together are renewed apart, each well before it expires); SVIDs falling due within one second
//! of each other are renewed in one batch. A failed pass is retried with exponential backoff and
//! jitter (0.5 s to 30 s); meanwhile the cache keeps serving what it has until it expires. A
//! per-entry failure (e.g. the entry was deleted meanwhile) backs off that entry alone.
//!
//! What starts a pass is a [`SyncTrigger`]: the agent uses `runtime::push::PushTrigger` (a pass on
//! every `WatchEntries` event of the issuer, polling every 500 ms while that stream is down);
//! [`PollTrigger`] polls only. The federated bundles that come with a sync are pushed to the cache
//! and persisted too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::Rng;
use signet_proto::node as pb;
use signet_spiffe::{SpiffeId, TrustDomain};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::cache::CachedSvid;
use crate::node_client::{NodeClientError, SvidRequest, generate_key_and_csr};
use crate::runtime::Shared;
use crate::runtime::backoff::{Backoff, renew_at};
use crate::runtime::certs::leaf_info;
use crate::runtime::mirror::Mirror;
use crate::runtime::persist::{LoadedEntry, PersistError, StateReader, StateRecord, SvidRef};

/// Largest batch the node API accepts.
pub const MAX_BATCH: usize = 500;
/// Default delta sync interval of [`PollTrigger`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// SVIDs due within this window of the earliest one are renewed together.
const COALESCE: Duration = Duration::from_secs(1);
/// First and largest retry delay of a failed pass.
const PASS_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// First and largest retry delay of one entry whose signing failed.
const ENTRY_BACKOFF: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(300));
/// Least time between two writes of `state.bin` (changes in between are coalesced).
const PERSIST_EVERY: Duration = Duration::from_secs(2);

/// What makes the sync loop run again. The loop also wakes by itself when an SVID falls due.
#[async_trait]
pub trait SyncTrigger: Send {
    /// Completes when the next sync should run.
    async fn wait(&mut self);
}

/// Polls: a delta sync every `interval`, ±10 % so that agents started together drift apart.
#[derive(Debug, Clone)]
pub struct PollTrigger {
    interval: Duration,
}

impl PollTrigger {
    /// A trigger firing about every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval }
    }
}

#[async_trait]
impl SyncTrigger for PollTrigger {
    async fn wait(&mut self) {
        let f = rand::rng().random_range(0.9..1.1);
        tokio::time::sleep(self.interval.mul_f64(f)).await;
    }
}

/// Retry state of an entry whose signing failed.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    failures: u32,
}

fn selectors_of(entry: &pb::Entry) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = entry
        .selectors
        .iter()
        .map(|s| (s.r#type.clone(), s.value.clone()))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn federates_of(entry: &pb::Entry) -> Vec<TrustDomain> {
    let mut v: Vec<TrustDomain> = entry
        .federates_with
        .iter()
        .filter_map(|td| match TrustDomain::new(td) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(entry_id = %entry.id, trust_domain = %td, error = %e, "ignoring an invalid federates_with trust domain");
                None
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Whether the cached SVID carries the entry's current selectors, hint and federation (compared
/// without allocating: this runs for every changed entry).
fn same_metadata(svid: &CachedSvid, entry: &pb::Entry) -> bool {
    if *svid.hint != *entry.hint {
        return false;
    }
    let sel_ok = entry.selectors.iter().all(|s| {
        svid.selectors
            .binary_search_by(|(t, v)| (t.as_str(), v.as_str()).cmp(&(&s.r#type, &s.value)))
            .is_ok()
    }) && svid.selectors.iter().all(|(t, v)| {
        entry
            .selectors
            .iter()
            .any(|s| s.r#type == *t && s.value == *v)
    });
    if !sel_ok {
        return false;
    }
    entry
        .federates_with
        .iter()
        .all(|td| svid.federates_with.iter().any(|t| t.name() == td.as_str()))
        && svid.federates_with.iter().all(|t| {
            entry
                .federates_with
                .iter()
                .any(|td| t.name() == td.as_str())
        })
}

/// An entry rebuilt for `state.bin`: what the mirror keeps, plus the SPIFFE ID and metadata kept
/// by the cached SVID. `None` when neither knows the SPIFFE ID (a servable entry with neither an
/// SVID nor a queued copy, which the sync loop never leaves behind).
fn stored_entry(
    id: &str,
    slot: &crate::runtime::mirror::Slot,
    svid: Option<&CachedSvid>,
) -> Option<pb::Entry> {
    let spiffe_id = match (&slot.spiffe_id, svid) {
        (Some(s), _) => s.to_string(),
        (None, Some(svid)) => svid.spiffe_id.to_string(),
        (None, None) => return None,
    };
    let mut e = pb::Entry {
        id: id.to_owned(),
        spiffe_id,
        parent_id: slot.parent_id.to_string(),
        expires_at: slot.expires_at,
        node_alias: slot.node_alias,
        ..Default::default()
    };
    if let Some(s) = svid.filter(|_| slot.servable) {
        e.hint = s.hint.to_string();
        e.selectors = s
            .selectors
            .iter()
            .map(|(t, v)| pb::Selector {
                r#type: t.clone(),
                value: v.clone(),
            })
            .collect();
        e.federates_with = s
            .federates_with
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
    }
    Some(e)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A pass failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A node API call failed.
    #[error(transparent)]
    Node(#[from] NodeClientError),
    /// Key generation could not run.
    #[error("key generation task failed: {0}")]
    Task(String),
}

/// What one signing request needs besides the key.
struct ToSign {
    entry_id: String,
    hint: Box<str>,
    /// Shared with the cached SVID on a renewal (the cache interns selector sets).
    selectors: Arc<[(String, String)]>,
    federates_with: Box<[TrustDomain]>,
}

/// The sync loop's state.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    mirror: Mirror,
    /// Entries awaiting an SVID (new or changed), whole.
    pending: HashMap<String, pb::Entry>,
    retries: HashMap<String, Retry>,
    agent_id: Option<SpiffeId>,
    epoch: u64,
    dirty: bool,
    last_persist: Option<Instant>,
    passed_once: bool,
}

impl Syncer {
    /// A syncer with an empty mirror.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let issuer = shared.client.issuer_id().to_string();
        Self {
            mirror: Mirror::new(&issuer, &issuer),
            shared,
            pending: HashMap::new(),
            retries: HashMap::new(),
            agent_id: None,
            epoch: 0,
            dirty: false,
            last_persist: None,
            passed_once: false,
        }
    }

    /// Restores the mirror and the SVIDs saved by a previous run (streaming `state.bin` record by
    /// record), and fills the cache with the SVIDs that are still valid (unless `keep_svids` is
    /// false). Returns how many entries and SVIDs were restored. On error nothing is restored.
    pub(crate) fn restore(
        &mut self,
        mut reader: StateReader,
        epoch: u64,
        keep_svids: bool,
    ) -> Result<(usize, usize), PersistError> {
        let header = reader.header().clone();
        let Ok(agent_id) = SpiffeId::parse(&header.agent_id) else {
            tracing::warn!(agent_id = %header.agent_id, "ignoring persisted state of an invalid agent ID");
            return Ok((0, 0));
        };
        let issuer = self.shared.client.issuer_id().to_string();
        let mut mirror = Mirror::new(&header.agent_id, &issuer);
        let mut pending = HashMap::new();
        let mut svids = Vec::new();
        let now = SystemTime::now();
        while let Some(loaded) = reader.next_entry()? {
            let LoadedEntry {
                entry,
                fingerprint: fp,
                svid,
            } = loaded;
            let is_servable = !entry.node_alias && (svid.is_some() || !entry.selectors.is_empty());
            mirror.restore(&entry, fp, is_servable);
            if !is_servable {
                continue;
            }
            let restored = svid.filter(|_| keep_svids).and_then(|p| {
                let chain = crate::cache::split_der_chain(&p.cert_chain_der)?;
                let info = leaf_info(chain.first()?).ok()?;
                (info.not_after > now && p.fingerprint == fp).then_some((p, info))
            });
            let Some((p, info)) = restored else {
                pending.insert(entry.id.clone(), entry);
                continue;
            };
            if let Some(slot) = mirror.get_mut(&entry.id) {
                slot.signed = p.fingerprint;
                slot.renew_at_ms = unix_ms(renew_at(info.not_before, info.not_after));
            }
            let federates_with = federates_of(&entry);
            let pb::Entry {
                id,
                hint,
                selectors,
                ..
            } = entry;
            let mut selectors: Vec<(String, String)> =
                selectors.into_iter().map(|s| (s.r#type, s.value)).collect();
            selectors.sort();
            selectors.dedup();
            svids.push(CachedSvid {
                entry_id: id.into(),
                spiffe_id: info.spiffe_id,
                hint: hint.into(),
                selectors: selectors.into(),
                federates_with: federates_with.into(),
                cert_chain_der: p.cert_chain_der.into(),
                private_key_pkcs8: Zeroizing::new(p.private_key_pkcs8.as_slice().into()),
                expires_at: info.not_after,
            });
        }
        mirror.set_revision(header.revision);
        let gone = mirror.prune(now);
        if !gone.is_empty() {
            let gone: std::collections::HashSet<&str> = gone.iter().map(String::as_str).collect();
            svids.retain(|s| !gone.contains(&*s.entry_id.to_string()));
            pending.retain(|id, _| !gone.contains(id.as_str()));
        }
        let entries = mirror.len();
        let n = svids.len();
        // Serving from disk makes the cache ready at once, unless entries still await SVIDs and
        // none were restored: then callers get `Unavailable` (retry) rather than "no identity
        // issued" until the first pass has signed them.
        if !svids.is_empty() || pending.is_empty() {
            let bundle = self.shared.cache.current().bundle.as_deref().cloned();
            if let Err(e) = self.shared.cache.replace(svids, bundle, Default::default()) {
                tracing::warn!(error = %e, "persisted SVIDs refused by the cache; syncing from scratch");
                return Ok((0, 0));
            }
        }
        self.mirror = mirror;
        self.pending = pending;
        self.agent_id = Some(agent_id);
        self.epoch = epoch;
        // Rewrite the file soon (it may hold keys that `persist_workload_svids = false` drops).
        self.dirty = true;
        Ok((entries, n))
    }

    /// Runs passes until `shutdown` is set, then writes the state one last time.
    pub(crate) async fn run(
        mut self,
        mut trigger: impl SyncTrigger,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut identity = self.shared.identity.subscribe();
        let mut backoff = Backoff::new(PASS_BACKOFF.0, PASS_BACKOFF.1);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let state = identity.borrow_and_update().clone();
            let Some(agent_id) = state.agent_id.clone() else {
                // Not attested yet: wait for the identity task.
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = identity.changed() => {}
                }
                continue;
            };
            if state.epoch != self.epoch || self.agent_id.as_ref() != Some(&agent_id) {
                self.reset_for(&agent_id, state.epoch);
            }
            let wait = match self.pass().await {
                Ok(()) => {
                    if backoff.failures() > 0 {
                        tracing::info!("issuer reachable again; entry sync resumed");
                    }
                    backoff.reset();
                    self.shared.health.set_sync_ok(true);
                    if !self.passed_once {
                        self.passed_once = true;
                        self.shared.cache.mark_ready();
                        tracing::info!(
                            entries = self.mirror.len(),
                            svids = self.shared.cache.current().svids.len(),
                            "first entry sync done"
                        );
                    }
                    None
                }
                Err(e) => {
                    self.shared.health.set_sync_ok(false);
                    let delay = backoff.next_delay();
                    if let SyncError::Node(n) = &e
                        && super::identity::needs_reattestation(n)
                    {
                        self.shared.reattest.notify_one();
                    }
                    tracing::warn!(
                        error = %e,
                        failures = backoff.failures(),
                        retry_in_ms = delay.as_millis() as u64,
                        "entry sync failed; cached SVIDs are still served"
                    );
                    Some(delay)
                }
            };
            self.maybe_persist(false);
            let due = self.next_due();
            let persist_at = self.dirty.then(|| {
                self.last_persist
                    .map_or(Instant::now(), |t| t + PERSIST_EVERY)
            });
            let sleep_persist = async {
                match persist_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            match wait {
                Some(delay) => {
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = identity.changed() => {}
                        _ = tokio::time::sleep(delay) => {}
                        _ = sleep_persist => {}
                    }
                }
                None => {
                    let sleep_due = async {
                        match due {
                            Some(t) => tokio::time::sleep_until(t.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = identity.changed() => {}
                        _ = trigger.wait() => {}
                        _ = sleep_due => {}
                        _ = sleep_persist => {}
                    }
                }
            }
        }
        self.maybe_persist(true);
    }

    /// Starts over for a (new) agent identity: full sync; the cached SVIDs stay until the full
    /// listing says which entries remain.
    fn reset_for(&mut self, agent_id: &SpiffeId, epoch: u64) {
        tracing::info!(agent_id = %agent_id, "syncing entries from scratch for this agent identity");
        let id = agent_id.to_string();
        if self.mirror.agent_id() != id {
            self.mirror.rebind(&id);
        }
        self.mirror.reset_revision();
        self.agent_id = Some(agent_id.clone());
        self.epoch = epoch;
    }

    /// The earliest time an SVID renewal or an entry retry falls due.
    fn next_due(&self) -> Option<Instant> {
        let now_ms = unix_ms(SystemTime::now());
        let now = Instant::now();
        let renew = self
            .mirror
            .iter()
            .filter(|(_, s)| s.signed != 0)
            .map(|(_, s)| s.renew_at_ms)
            .min()
            .map(|t| now + Duration::from_millis(u64::try_from(t - now_ms).unwrap_or(0)));
        let retry = self.retries.values().map(|r| r.at).min();
        match (renew, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One sync and signing pass.
    async fn pass(&mut self) -> Result<(), SyncError> {
        let sync = {
            let _gate = self.shared.rpc_gate.read().await;
            self.shared
                .client
                .sync_entries(self.mirror.revision(), 0)
                .await?
        };
        self.shared.publish_bundle();
        self.shared.publish_federated();
        let revision_before = self.mirror.revision();
        let applied = self.mirror.apply(sync, SystemTime::now());
        if self.mirror.revision() != revision_before
            || !applied.gone.is_empty()
            || !applied.changed.is_empty()
        {
            self.dirty = true;
        }
        self.reconcile(applied);
        self.sign_due().await
    }

    /// Brings the cache in line with a mirror change (see the module documentation).
    fn reconcile(&mut self, applied: crate::runtime::mirror::Applied) {
        if !applied.gone.is_empty() {
            for id in &applied.gone {
                self.pending.remove(id);
                self.retries.remove(id);
            }
            if self.shared.cache.remove_entries(&applied.gone) {
                tracing::info!(
                    count = applied.gone.len(),
                    "withdrew the SVIDs of removed entries"
                );
            }
        }
        if applied.changed.is_empty() {
            return;
        }
        let snapshot = self.shared.cache.current();
        let mut updated = Vec::new();
        let mut withdrawn = Vec::new();
        for entry in applied.changed {
            let Some(slot) = self.mirror.get_mut(&entry.id) else {
                continue;
            };
            if !slot.servable {
                // E.g. an entry turned into a node alias.
                if slot.signed != 0 {
                    slot.signed = 0;
                    withdrawn.push(entry.id.clone());
                }
                self.pending.remove(&entry.id);
                continue;
            }
            let cached = snapshot.svid(&entry.id);
            if slot.signed == slot.fingerprint
                && let Some(svid) = cached
            {
                self.pending.remove(&entry.id);
                if !same_metadata(svid, &entry) {
                    updated.push(CachedSvid {
                        entry_id: entry.id.as_str().into(),
                        spiffe_id: svid.spiffe_id.clone(),
                        hint: entry.hint.as_str().into(),
                        selectors: selectors_of(&entry).into(),
                        federates_with: federates_of(&entry).into(),
                        cert_chain_der: svid.cert_chain_der.clone(),
                        private_key_pkcs8: svid.private_key_pkcs8.clone(),
                        expires_at: svid.expires_at,
                    });
                }
            } else {
                self.pending.insert(entry.id.clone(), entry);
            }
        }
        if !withdrawn.is_empty() {
            self.shared.cache.remove_entries(&withdrawn);
        }
        if !updated.is_empty() {
            self.dirty = true;
            if let Err(e) = self.shared.cache.upsert_svids(updated) {
                tracing::error!(error = %e, "the cache refused updated SVID metadata");
            }
        }
    }

    /// Pushes SVIDs to the cache and records their rotation state. If the cache refuses the batch
    /// (it checks every SVID; the sync loop checks the same things first, so this is not
    /// expected), every entry of the batch is retried later: new entries are still queued and
    /// renewed ones still have their previous SVID.
    fn upsert(&mut self, svids: Vec<CachedSvid>, rotation: Vec<(String, i64)>) {
        match self.shared.cache.upsert_svids(svids) {
            Ok(_) => {
                for (id, renew_at_ms) in rotation {
                    if let Some(slot) = self.mirror.get_mut(&id) {
                        slot.signed = slot.fingerprint;
                        slot.renew_at_ms = renew_at_ms;
                    }
                    self.pending.remove(&id);
                    self.retries.remove(&id);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count = rotation.len(), "the cache refused a batch of SVIDs; they will be signed again");
                for (id, _) in rotation {
                    self.retry_later(&id);
                }
            }
        }
    }

    fn retry_later(&mut self, entry_id: &str) {
        let failures = self.retries.get(entry_id).map_or(0, |r| r.failures);
        let mut b = Backoff::new(ENTRY_BACKOFF.0, ENTRY_BACKOFF.1);
        let mut delay = b.next_delay();
        for _ in 0..failures.min(16) {
            delay = b.next_delay();
        }
        self.retries.insert(
            entry_id.to_owned(),
            Retry {
                at: Instant::now() + delay,
                failures: failures.saturating_add(1),
            },
        );
    }

    /// The entries to sign now: queued ones first, then renewals (and SVIDs lost by a refused
    /// cache update) by due time.
    fn due_entries(&self) -> Vec<String> {
        let now = Instant::now();
        let horizon = unix_ms(SystemTime::now() + COALESCE);
        let blocked = |id: &str| self.retries.get(id).is_some_and(|r| r.at > now);
        let mut out: Vec<String> = self
            .pending
            .keys()
            .filter(|id| !blocked(id))
            .cloned()
            .collect();
        out.sort();
        let mut renewals: Vec<(&str, i64)> = self
            .mirror
            .iter()
            .filter(|(id, s)| {
                s.servable
                    && s.signed != 0
                    && s.renew_at_ms <= horizon
                    && !self.pending.contains_key(*id)
                    && !blocked(id)
            })
            .map(|(id, s)| (id, s.renew_at_ms))
            .collect();
        renewals.sort_by_key(|(_, t)| *t);
        out.extend(renewals.into_iter().map(|(id, _)| id.to_owned()));
        out
    }

    /// Signs every due SVID, in batches.
    async fn sign_due(&mut self) -> Result<(), SyncError> {
        let due = self.due_entries();
        if due.is_empty() {
            return Ok(());
        }
        for chunk in due.chunks(MAX_BATCH) {
            let snapshot = self.shared.cache.current();
            let items: Vec<ToSign> = chunk
                .iter()
                .filter_map(|id| {
                    if let Some(e) = self.pending.get(id) {
                        return Some(ToSign {
                            entry_id: id.clone(),
                            hint: e.hint.as_str().into(),
                            selectors: selectors_of(e).into(),
                            federates_with: federates_of(e).into(),
                        });
                    }
                    snapshot.svid(id).map(|s| ToSign {
                        entry_id: id.clone(),
                        hint: s.hint.clone(),
                        selectors: s.selectors.clone(),
                        federates_with: s.federates_with.clone(),
                    })
                })
                .collect();
            drop(snapshot);
            if items.is_empty() {
                continue;
            }
            let n = items.len();
            let keys = tokio::task::spawn_blocking(move || {
                (0..n)
                    .map(|_| generate_key_and_csr())
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??;
            let (keys, csrs): (Vec<Zeroizing<Vec<u8>>>, Vec<Vec<u8>>) = keys.into_iter().unzip();
            let requests = items
                .iter()
                .zip(csrs)
                .map(|(t, csr)| SvidRequest {
                    entry_id: t.entry_id.clone(),
                    csr,
                })
                .collect();
            let started = Instant::now();
            let results = {
                let _gate = self.shared.rpc_gate.read().await;
                self.shared.client.batch_new_x509_svid(requests).await?
            };
            let elapsed = started.elapsed();
            let mut svids = Vec::with_capacity(n);
            let mut rotation = Vec::with_capacity(n);
            let mut failed = 0usize;
            for ((item, key), result) in items.into_iter().zip(keys).zip(results) {
                let id = item.entry_id;
                let svid = match result {
                    Ok(svid) => svid,
                    Err(err) => {
                        failed += 1;
                        let first = !self.retries.contains_key(&id);
                        self.retry_later(&id);
                        if first {
                            tracing::warn!(entry_id = %id, error = %err, "the issuer refused to sign this entry's SVID; will retry");
                        } else {
                            tracing::debug!(entry_id = %id, error = %err, "signing refused again");
                        }
                        continue;
                    }
                };
                let info = match svid.cert_chain.first().map(|l| leaf_info(l)) {
                    Some(Ok(i)) => i,
                    other => {
                        let reason = match other {
                            Some(Err(e)) => e,
                            _ => "empty chain".to_owned(),
                        };
                        tracing::warn!(entry_id = %id, error = %reason, "issuer returned an unusable SVID");
                        failed += 1;
                        self.retry_later(&id);
                        continue;
                    }
                };
                if info.spiffe_id != svid.spiffe_id || item.selectors.is_empty() {
                    tracing::warn!(entry_id = %id, leaf = %info.spiffe_id, claimed = %svid.spiffe_id, "issuer returned an SVID for another SPIFFE ID");
                    failed += 1;
                    self.retry_later(&id);
                    continue;
                }
                if self.mirror.get(&id).is_none() {
                    continue;
                }
                rotation.push((
                    id.clone(),
                    unix_ms(renew_at(info.not_before, info.not_after)),
                ));
                let cert_chain_der = if svid.cert_chain.len() == 1 {
                    svid.cert_chain.into_iter().next().unwrap_or_default()
                } else {
                    svid.cert_chain.concat()
                };
                svids.push(CachedSvid {
                    entry_id: id.into(),
                    spiffe_id: svid.spiffe_id,
                    hint: item.hint,
                    selectors: item.selectors,
                    federates_with: item.federates_with,
                    cert_chain_der: cert_chain_der.into(),
                    // Copied on this thread: the long-lived key then sits with the rest of the
                    // SVID instead of pinning the key-generation thread's heap (the original is
                    // wiped when dropped).
                    private_key_pkcs8: Zeroizing::new(key.as_slice().into()),
                    expires_at: info.not_after,
                });
            }
            let signed = svids.len();
            if !svids.is_empty() {
                self.upsert(svids, rotation);
                self.dirty = true;
            }
            tracing::debug!(
                signed,
                failed,
                rpc_ms = elapsed.as_secs_f64() * 1000.0,
                "signed a batch of workload SVIDs"
            );
        }
        // After a burst (first sync of many entries), give the queue's memory back.
        if self.pending.capacity() > 64 && self.pending.capacity() > 4 * self.pending.len() {
            self.pending.shrink_to_fit();
        }
        if self.retries.capacity() > 64 && self.retries.capacity() > 4 * self.retries.len() {
            self.retries.shrink_to_fit();
        }
        Ok(())
    }

    /// Writes `state.bin` when something changed and the last write is old enough (or `force`).
    fn maybe_persist(&mut self, force: bool) {
        if !self.dirty {
            return;
        }
        if !force
            && self
                .last_persist
                .is_some_and(|t| t.elapsed() < PERSIST_EVERY)
        {
            return;
        }
        let Some(agent_id) = self.agent_id.clone() else {
            return;
        };
        let snapshot = self.shared.cache.current();
        let persist_svids = self.shared.persist_svids;
        let mirror = &self.mirror;
        let pending = &self.pending;
        // Entries whose SPIFFE ID nobody knows (never expected) are left out, and the revision is
        // then written as 0 so that the next start syncs everything again.
        let known = |id: &str, slot: &crate::runtime::mirror::Slot| {
            pending.contains_key(id) || slot.spiffe_id.is_some() || snapshot.svid(id).is_some()
        };
        let missing = mirror.iter().filter(|(id, slot)| !known(id, slot)).count();
        let revision = if missing == 0 { mirror.revision() } else { 0 };
        let records = ExactRecords {
            len: mirror.len() - missing,
            inner: mirror.iter().filter_map(|(id, slot)| {
                let cached = snapshot.svid(id).map(|s| &**s);
                let svid = cached
                    .filter(|_| persist_svids && slot.signed != 0)
                    .map(|s| SvidRef {
                        cert_chain_der: &s.cert_chain_der,
                        private_key_pkcs8: &s.private_key_pkcs8,
                        fingerprint: slot.signed,
                    });
                let entry = match pending.get(id) {
                    Some(e) => e.clone(),
                    None => stored_entry(id, slot, cached)?,
                };
                Some(StateRecord {
                    entry,
                    fingerprint: slot.fingerprint,
                    svid,
                })
            }),
        };
        let started = Instant::now();
        let data = &self.shared.data;
        let result = tokio::task::block_in_place(|| data.save_state(&agent_id, revision, records));
        match result {
            Ok(()) => {
                self.dirty = false;
                tracing::debug!(
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    "state persisted"
                );
            }
            Err(e) => tracing::error!(error = %e, "cannot persist the synced state"),
        }
        self.last_persist = Some(Instant::now());
    }
}

/// An iterator with a known length (the mirror's).
struct ExactRecords<I> {
    len: usize,
    inner: I,
}

impl<I: Iterator> Iterator for ExactRecords<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.len = self.len.saturating_sub(1);
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len, Some(self.len))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactRecords<I> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_comparison_ignores_order_and_sees_changes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://example.org/a".try_into().unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        let svid = CachedSvid {
            entry_id: "e".into(),
            spiffe_id: SpiffeId::parse("spiffe://example.org/a").unwrap(),
            hint: "h".into(),
            selectors: Arc::new([
                ("unix".into(), "gid:1".into()),
                ("unix".into(), "uid:1".into()),
            ]),
            federates_with: Box::new([TrustDomain::new("partner.org").unwrap()]),
            cert_chain_der: cert.der().to_vec().into(),
            private_key_pkcs8: Zeroizing::new(key.serialize_der().into()),
            expires_at: SystemTime::now(),
        };
        let sel = |t: &str, v: &str| pb::Selector {
            r#type: t.into(),
            value: v.into(),
        };
        let entry = pb::Entry {
            id: "e".into(),
            hint: "h".into(),
            selectors: vec![sel("unix", "uid:1"), sel("unix", "gid:1")],
            federates_with: vec!["partner.org".into()],
            ..Default::default()
        };
        assert!(same_metadata(&svid, &entry));
        let mut e = entry.clone();
        e.hint = "other".into();
        assert!(!same_metadata(&svid, &e));
        let mut e = entry.clone();
        e.selectors.pop();
        assert!(!same_metadata(&svid, &e));
        let mut e = entry.clone();
        e.selectors.push(sel("unix", "path:/x"));
        assert!(!same_metadata(&svid, &e));
        let mut e = entry.clone();
        e.federates_with.clear();
        assert!(!same_metadata(&svid, &e));
        assert_eq!(selectors_of(&entry), *svid.selectors);
        assert_eq!(federates_of(&entry), *svid.federates_with);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1500)), 1500);
    }
}
