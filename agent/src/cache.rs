//! The agent's in-memory cache of workload SVIDs and trust bundles, served by the Workload API.
//!
//! The agent runtime (attestation, entry sync, CSR signing, rotation) fills a [`Cache`]; the
//! Workload API reads immutable [`Snapshot`]s from it through a `tokio::sync::watch` channel, so a
//! reader never blocks a writer for longer than a pointer swap and every open stream is woken on
//! each change.
//!
//! Memory: an SVID is kept as DER bytes (the certificate chain, leaf first, exactly as the Workload
//! API sends it) and its PKCS#8 private key, both owned by one `Arc<CachedSvid>` shared by every
//! snapshot and every response that contains it. No PEM, no parsed certificate, no copy of the
//! selector strings in the matching index (it stores hashes and positions only). Per SVID the
//! cache keeps as little as it can: boxed slices without spare capacity, the entry ID of a UUID in
//! 16 bytes ([`EntryId`]), one shared selector set for all SVIDs with the same selectors, and no
//! serial number (read from the certificate by [`CachedSvid::serial`]).
//!
//! Matching ([`Snapshot::svids_for`]): an SVID is served to a workload when every selector of its
//! entry is among the workload's selectors (an entry without selectors matches nobody), and it has
//! not expired. The result keeps the snapshot order, which is the **default-SVID rule**: SVIDs are
//! ordered by SPIFFE ID (trust domain name, then path, byte-wise), then by entry ID; the first
//! one is the workload's default SVID. Among SVIDs sharing a non-empty hint, only the first in that
//! order is returned, so hints are unique in every answer (as the Workload API requires).

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use signet_spiffe::svid::spiffe_id_from_cert;
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};
use tokio::sync::watch;
use zeroize::Zeroizing;

/// A registration entry ID as the cache keeps it: an ID in the canonical UUID form the issuer
/// generates (`8-4-4-4-12` lowercase hex digits) in 16 bytes, any other ID as text. Compares,
/// orders and prints exactly like the ID string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EntryId(EntryIdRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum EntryIdRepr {
    /// Canonical lowercase hyphenated UUID (never stored as `Text`).
    Uuid([u8; 16]),
    /// Any other ID.
    Text(Box<str>),
}

/// Length of a UUID in its canonical text form.
const UUID_TEXT_LEN: usize = 36;

impl EntryId {
    /// The ID for `id`.
    pub fn new(id: &str) -> Self {
        match parse_canonical_uuid(id) {
            Some(bytes) => Self(EntryIdRepr::Uuid(bytes)),
            None => Self(EntryIdRepr::Text(id.into())),
        }
    }

    /// The ID as text, rendered into `buf` when it is kept as a UUID.
    pub fn as_str<'a>(&'a self, buf: &'a mut [u8; UUID_TEXT_LEN]) -> &'a str {
        match &self.0 {
            EntryIdRepr::Text(t) => t,
            EntryIdRepr::Uuid(bytes) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut out = buf.iter_mut();
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10)
                        && let Some(o) = out.next()
                    {
                        *o = b'-';
                    }
                    for nibble in [b >> 4, b & 0x0f] {
                        if let (Some(o), Some(&h)) = (out.next(), HEX.get(usize::from(nibble))) {
                            *o = h;
                        }
                    }
                }
                // Always ASCII.
                std::str::from_utf8(buf).unwrap_or_default()
            }
        }
    }

    /// Whether the ID is the empty string.
    pub fn is_empty(&self) -> bool {
        matches!(&self.0, EntryIdRepr::Text(t) if t.is_empty())
    }

    /// Compares the ID with an ID string, as strings.
    pub fn cmp_str(&self, other: &str) -> Ordering {
        let mut buf = [0; UUID_TEXT_LEN];
        self.as_str(&mut buf).cmp(other)
    }
}

/// The 16 bytes of `s` if it is a UUID in canonical lowercase hyphenated form (so that rendering
/// them gives `s` back).
fn parse_canonical_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != UUID_TEXT_LEN {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = s
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 8 | 13 | 18 | 23));
    if [8, 13, 18, 23].iter().any(|&i| s.get(i) != Some(&b'-')) {
        return None;
    }
    for byte in &mut out {
        for _ in 0..2 {
            let (_, &c) = digits.next()?;
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            *byte = (*byte << 4) | v;
        }
    }
    Some(out)
}

impl Ord for EntryId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // Lowercase hex with hyphens at fixed places orders like the bytes.
            (EntryIdRepr::Uuid(a), EntryIdRepr::Uuid(b)) => a.cmp(b),
            _ => {
                let mut buf = [0; UUID_TEXT_LEN];
                other.cmp_str(self.as_str(&mut buf)).reverse()
            }
        }
    }
}

impl PartialOrd for EntryId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<str> for EntryId {
    fn eq(&self, other: &str) -> bool {
        self.cmp_str(other).is_eq()
    }
}

impl PartialEq<&str> for EntryId {
    fn eq(&self, other: &&str) -> bool {
        self.cmp_str(other).is_eq()
    }
}

impl From<&str> for EntryId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for EntryId {
    fn from(id: String) -> Self {
        match parse_canonical_uuid(&id) {
            Some(bytes) => Self(EntryIdRepr::Uuid(bytes)),
            None => Self(EntryIdRepr::Text(id.into_boxed_str())),
        }
    }
}

impl From<&String> for EntryId {
    fn from(id: &String) -> Self {
        Self::new(id)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0; UUID_TEXT_LEN];
        f.write_str(self.as_str(&mut buf))
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0; UUID_TEXT_LEN];
        fmt::Debug::fmt(self.as_str(&mut buf), f)
    }
}

/// One workload X509-SVID as the agent caches it: the entry it was issued for, the DER chain and
/// the private key.
///
/// `Debug` never prints the private key.
pub struct CachedSvid {
    /// The registration entry this SVID was issued for (unique in a cache).
    pub entry_id: EntryId,
    /// The SPIFFE ID of the SVID (equal to the URI SAN of the leaf; checked on insertion).
    pub spiffe_id: SpiffeId,
    /// The entry's hint (empty for none).
    pub hint: Box<str>,
    /// The entry's selectors `(type, value)`, sorted and without duplicates (the cache normalizes
    /// them on insertion). Never empty. The cache shares one allocation between every SVID with
    /// the same selector set (the entries of one workload usually have the same selectors).
    pub selectors: Arc<[(String, String)]>,
    /// Trust domains whose bundles a workload holding this SVID receives, sorted, no duplicates.
    pub federates_with: Box<[TrustDomain]>,
    /// The certificate chain: concatenated DER certificates, leaf first.
    pub cert_chain_der: Box<[u8]>,
    /// The private key of the leaf, unencrypted PKCS#8 DER.
    pub private_key_pkcs8: Zeroizing<Box<[u8]>>,
    /// The leaf's `notAfter`. An expired SVID stays cached but is no longer served.
    pub expires_at: SystemTime,
}

impl fmt::Debug for CachedSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSvid")
            .field("entry_id", &self.entry_id)
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("hint", &self.hint)
            .field("selectors", &self.selectors)
            .field("federates_with", &self.federates_with)
            .field("cert_chain_der_len", &self.cert_chain_der.len())
            .field("private_key_pkcs8", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("serial", &self.serial().map(hex_string))
            .finish()
    }
}

impl CachedSvid {
    /// Whether `self` and `other` carry exactly the same content (key included).
    pub fn same_content(&self, other: &CachedSvid) -> bool {
        self.entry_id == other.entry_id
            && self.spiffe_id == other.spiffe_id
            && self.hint == other.hint
            && self.selectors == other.selectors
            && self.federates_with == other.federates_with
            && self.cert_chain_der == other.cert_chain_der
            && *self.private_key_pkcs8 == *other.private_key_pkcs8
            && self.expires_at == other.expires_at
    }

    /// The leaf's serial number (big-endian content bytes of the DER `INTEGER`), read from the
    /// certificate (not stored separately). `None` only if the chain is not a certificate.
    pub fn serial(&self) -> Option<&[u8]> {
        leaf_serial(&self.cert_chain_der)
    }

    /// Whether the SVID is still valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }

    /// Whether every selector of the entry is in `workload` (an entry without selectors matches
    /// nothing).
    fn matches(&self, workload: &HashSet<(&str, &str)>) -> bool {
        !self.selectors.is_empty()
            && self
                .selectors
                .iter()
                .all(|(t, v)| workload.contains(&(t.as_str(), v.as_str())))
    }

    /// Sorts and deduplicates selectors and federated trust domains, then checks the SVID.
    fn normalize(mut self) -> Result<Self, CacheError> {
        if !self.selectors.is_sorted_by(|a, b| a < b) {
            let mut v = self.selectors.to_vec();
            v.sort();
            v.dedup();
            self.selectors = v.into();
        }
        if !self.federates_with.is_sorted_by(|a, b| a < b) {
            let mut v = std::mem::take(&mut self.federates_with).into_vec();
            v.sort();
            v.dedup();
            self.federates_with = v.into_boxed_slice();
        }
        let invalid = |reason: String| CacheError::InvalidSvid {
            entry_id: self.entry_id.to_string(),
            reason,
        };
        if self.entry_id.is_empty() {
            return Err(invalid("the entry ID is empty".into()));
        }
        if self.selectors.is_empty() {
            return Err(invalid("the entry has no selectors".into()));
        }
        if let Some((t, v)) = self
            .selectors
            .iter()
            .find(|(t, v)| t.is_empty() || v.is_empty())
        {
            return Err(invalid(format!(
                "selector `{t}:{v}` has an empty type or value"
            )));
        }
        if self.private_key_pkcs8.is_empty() {
            return Err(invalid("the private key is empty".into()));
        }
        let certs = split_der_chain(&self.cert_chain_der).ok_or_else(|| {
            invalid("the certificate chain is not a sequence of DER certificates".into())
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| invalid("the certificate chain is empty".into()))?;
        let leaf_id = spiffe_id_from_cert(leaf)
            .map_err(|e| invalid(format!("the leaf certificate has no usable SPIFFE ID: {e}")))?;
        if leaf_id != self.spiffe_id {
            return Err(invalid(format!(
                "the leaf certificate is for {leaf_id}, not {}",
                self.spiffe_id
            )));
        }
        Ok(self)
    }
}

/// Why a cache mutation was refused. Nothing is changed when a mutation fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// An SVID cannot be served as given.
    #[error("SVID for entry `{entry_id}` refused: {reason}")]
    InvalidSvid {
        /// The entry ID of the refused SVID.
        entry_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same entry ID appears twice in one mutation.
    #[error("entry `{0}` appears more than once in one update")]
    DuplicateEntry(String),
    /// A federated bundle is keyed by a trust domain other than its own.
    #[error("federated bundle of {actual} given for trust domain {key}")]
    BundleKeyMismatch {
        /// The map key.
        key: TrustDomain,
        /// The bundle's trust domain.
        actual: TrustDomain,
    },
    /// A federated bundle is given for the agent's own trust domain.
    #[error("{0} is the agent's own trust domain: it cannot be federated")]
    FederatedOwnTrustDomain(TrustDomain),
}

/// A shared, sorted selector set (see [`CachedSvid::selectors`]).
type SelectorSet = Arc<[(String, String)]>;

/// Hash of one selector, the key of the matching index.
fn selector_hash(kind: &str, value: &str) -> u64 {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// Positions in [`Snapshot::svids`], indexed for matching and lookup.
#[derive(Debug, Default)]
struct Index {
    /// Hash of an SVID's first (smallest) selector -> positions of the SVIDs with that first
    /// selector. A workload can only match an SVID whose first selector it has.
    by_first_selector: HashMap<u64, Vec<u32>>,
    /// Positions sorted by entry ID, for binary search.
    by_entry_id: Vec<u32>,
}

impl Index {
    fn build(svids: &[Arc<CachedSvid>]) -> Self {
        let mut by_first_selector: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut by_entry_id = Vec::with_capacity(svids.len());
        // A cache never holds more than u32::MAX SVIDs (that would take terabytes).
        for (pos, svid) in (0..=u32::MAX).zip(svids) {
            if let Some((t, v)) = svid.selectors.first() {
                by_first_selector
                    .entry(selector_hash(t, v))
                    .or_default()
                    .push(pos);
            }
            by_entry_id.push(pos);
        }
        by_entry_id.sort_by(|&a, &b| {
            let ea = svids.get(a as usize).map(|s| &s.entry_id);
            let eb = svids.get(b as usize).map(|s| &s.entry_id);
            ea.cmp(&eb)
        });
        for positions in by_first_selector.values_mut() {
            positions.shrink_to_fit();
        }
        by_first_selector.shrink_to_fit();
        Self {
            by_first_selector,
            by_entry_id,
        }
    }
}

/// An immutable view of the cache at one generation.
///
/// Obtained from [`Cache::current`] or [`Cache::subscribe`]; never built outside the cache.
pub struct Snapshot {
    /// Every cached SVID, in the default-SVID order (SPIFFE ID, then entry ID), expired ones
    /// included.
    pub svids: Vec<Arc<CachedSvid>>,
    /// The bundle of the agent's own trust domain (`None` before the agent has one).
    pub bundle: Option<Arc<Bundle>>,
    /// Bundles of federated trust domains, keyed by trust domain (never the own one).
    pub federated: BTreeMap<TrustDomain, Arc<Bundle>>,
    /// Bumped by every mutation that changed something.
    pub generation: u64,
    /// Whether the runtime declared the cache complete (see [`Cache::mark_ready`]).
    pub ready: bool,
    index: Arc<Index>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("ready", &self.ready)
            .field("svids", &self.svids)
            .field(
                "bundle",
                &self.bundle.as_ref().map(|b| b.trust_domain.to_string()),
            )
            .field(
                "federated",
                &self
                    .federated
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Snapshot {
    fn empty() -> Self {
        Self {
            svids: Vec::new(),
            bundle: None,
            federated: BTreeMap::new(),
            generation: 0,
            ready: false,
            index: Arc::new(Index::default()),
        }
    }

    /// Whether the Workload API can serve from this snapshot: the runtime marked it ready and the
    /// own trust domain's bundle is present with at least one X.509 authority.
    pub fn is_ready(&self) -> bool {
        self.ready
            && self
                .bundle
                .as_ref()
                .is_some_and(|b| !b.x509_authorities.is_empty())
    }

    /// The SVIDs a workload with `workload_selectors` is entitled to now (see the module
    /// documentation for the rule and the order; the first one is the default SVID).
    pub fn svids_for(&self, workload_selectors: &[(String, String)]) -> Vec<Arc<CachedSvid>> {
        self.svids_for_at(workload_selectors, SystemTime::now())
    }

    /// [`Snapshot::svids_for`] at a given time.
    pub fn svids_for_at(
        &self,
        workload_selectors: &[(String, String)],
        now: SystemTime,
    ) -> Vec<Arc<CachedSvid>> {
        let workload: HashSet<(&str, &str)> = workload_selectors
            .iter()
            .map(|(t, v)| (t.as_str(), v.as_str()))
            .collect();
        let mut looked_up = HashSet::new();
        let mut hits: Vec<u32> = Vec::new();
        for (t, v) in workload_selectors {
            let h = selector_hash(t, v);
            if !looked_up.insert(h) {
                continue;
            }
            let Some(candidates) = self.index.by_first_selector.get(&h) else {
                continue;
            };
            for &pos in candidates {
                if let Some(svid) = self.svids.get(pos as usize)
                    && svid.is_valid_at(now)
                    && svid.matches(&workload)
                {
                    hits.push(pos);
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        let mut hints = HashSet::new();
        hits.into_iter()
            .filter_map(|pos| self.svids.get(pos as usize))
            .filter(|svid| svid.hint.is_empty() || hints.insert(&*svid.hint))
            .cloned()
            .collect()
    }

    /// The cached SVID of an entry, if any (expired or not).
    pub fn svid(&self, entry_id: &str) -> Option<&Arc<CachedSvid>> {
        self.position(entry_id).and_then(|pos| self.svids.get(pos))
    }

    fn position(&self, entry_id: &str) -> Option<usize> {
        self.index
            .by_entry_id
            .binary_search_by(|&pos| {
                self.svids
                    .get(pos as usize)
                    .map_or(Ordering::Less, |s| s.entry_id.cmp_str(entry_id))
            })
            .ok()
            .and_then(|i| self.index.by_entry_id.get(i))
            .map(|&pos| pos as usize)
    }

    /// The bundle of `td`: the own bundle or a federated one.
    pub fn bundle_for(&self, td: &TrustDomain) -> Option<&Arc<Bundle>> {
        match &self.bundle {
            Some(own) if own.trust_domain == *td => Some(own),
            _ => self.federated.get(td),
        }
    }

    /// The federated bundles a workload holding `svids` receives: those of every trust domain one
    /// of the SVIDs federates with, present in the cache, other than the own trust domain.
    pub fn federated_for<'a>(
        &'a self,
        svids: &'a [Arc<CachedSvid>],
    ) -> BTreeMap<&'a TrustDomain, &'a Arc<Bundle>> {
        let own = self.bundle.as_ref().map(|b| &b.trust_domain);
        svids
            .iter()
            .flat_map(|s| s.federates_with.iter())
            .filter(|td| Some(*td) != own)
            .filter_map(|td| self.federated.get_key_value(td))
            .collect()
    }

    /// The earliest expiry among the cached SVIDs still valid at `now` (when the served state
    /// changes by itself).
    pub fn next_expiry_after(&self, now: SystemTime) -> Option<SystemTime> {
        self.svids
            .iter()
            .map(|s| s.expires_at)
            .filter(|&t| t > now)
            .min()
    }
}

/// The agent's SVID and bundle cache: cheap to clone (all clones share one state), safe to use
/// from any task.
///
/// Every mutator returns whether it changed something; a change bumps
/// [`Snapshot::generation`] and wakes the subscribers, a no-op does neither.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    tx: watch::Sender<Arc<Snapshot>>,
    /// Serializes writers, so that each computes its snapshot from the latest one without
    /// holding the watch channel's lock (readers are never blocked by a rebuild).
    write: Mutex<()>,
    /// The distinct selector sets of the cached SVIDs (see [`CachedSvid::selectors`]), guarded
    /// by itself but only touched by writers holding `write`.
    selector_sets: Mutex<HashSet<SelectorSet>>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("snapshot", &self.current())
            .finish()
    }
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of a snapshot a mutation produces.
struct Draft {
    svids: Option<Vec<Arc<CachedSvid>>>,
    bundle: Option<Arc<Bundle>>,
    federated: BTreeMap<TrustDomain, Arc<Bundle>>,
    ready: bool,
}

impl Cache {
    /// An empty cache, not ready.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(Arc::new(Snapshot::empty()));
        Self {
            inner: Arc::new(Inner {
                tx,
                write: Mutex::new(()),
                selector_sets: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.tx.subscribe()
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.tx.borrow().clone()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic in another writer leaves nothing inconsistent.
        self.inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every SVID of `svids` use the shared copy of its selector set, and forgets the
    /// sets no SVID uses any more. Called by writers, under the write lock.
    fn intern_selectors(&self, svids: &mut [Arc<CachedSvid>]) {
        let mut sets = self
            .inner
            .selector_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for slot in svids.iter_mut() {
            if Arc::strong_count(slot) > 1 {
                // Carried over from the previous snapshot: interned when first published.
                continue;
            }
            match sets.get(&slot.selectors[..]) {
                Some(shared) if Arc::ptr_eq(shared, &slot.selectors) => {}
                Some(shared) => {
                    // A fresh SVID (its Arc is not shared yet): swap in the shared set.
                    if let Some(svid) = Arc::get_mut(slot) {
                        svid.selectors = shared.clone();
                    }
                }
                None => {
                    sets.insert(slot.selectors.clone());
                }
            }
        }
        // A set held only by the interner belongs to no SVID of this snapshot nor of the previous
        // one (a set dropped by this change is forgotten at the next one).
        sets.retain(|set| Arc::strong_count(set) > 1);
        if sets.capacity() > 2 * sets.len() + 16 {
            sets.shrink_to_fit();
        }
    }

    /// Publishes the draft as the next generation.
    fn publish(&self, old: &Snapshot, draft: Draft) {
        let (svids, index) = match draft.svids {
            Some(mut svids) => {
                svids.shrink_to_fit();
                self.intern_selectors(&mut svids);
                svids.sort_by(|a, b| (&a.spiffe_id, &a.entry_id).cmp(&(&b.spiffe_id, &b.entry_id)));
                let index = Arc::new(Index::build(&svids));
                (svids, index)
            }
            None => (old.svids.clone(), old.index.clone()),
        };
        let next = Snapshot {
            svids,
            bundle: draft.bundle,
            federated: draft.federated,
            generation: old.generation.wrapping_add(1),
            ready: draft.ready,
            index,
        };
        self.inner.tx.send_replace(Arc::new(next));
    }

    /// Replaces the whole content (SVIDs, own bundle, federated bundles) and marks the cache
    /// ready. Used at start-up from persisted state and after a full resynchronisation.
    pub fn replace(
        &self,
        svids: Vec<CachedSvid>,
        bundle: Option<Bundle>,
        federated: BTreeMap<TrustDomain, Bundle>,
    ) -> Result<bool, CacheError> {
        let svids = normalize_all(svids)?;
        let federated = check_federated(bundle.as_ref(), federated)?;
        let _guard = self.lock();
        let old = self.current();
        let same_svids = old.svids.len() == svids.len()
            && svids.iter().all(|s| {
                let mut buf = [0; UUID_TEXT_LEN];
                old.svid(s.entry_id.as_str(&mut buf))
                    .is_some_and(|o| o.same_content(s))
            });
        let same_bundle = old.bundle.as_deref() == bundle.as_ref();
        let same_federated = same_bundles(&old.federated, &federated);
        if same_svids && same_bundle && same_federated && old.ready {
            return Ok(false);
        }
        let draft = Draft {
            svids: (!same_svids).then(|| svids.into_iter().map(Arc::new).collect()),
            bundle: if same_bundle {
                old.bundle.clone()
            } else {
                bundle.map(Arc::new)
            },
            federated: if same_federated {
                old.federated.clone()
            } else {
                federated
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(v)))
                    .collect()
            },
            ready: true,
        };
        self.publish(&old, draft);
        Ok(true)
    }

    /// Inserts SVIDs, replacing the cached SVID of the same entry (a rotation or an entry
    /// update). SVIDs identical to the cached ones are ignored.
    pub fn upsert_svids(
        &self,
        svids: impl IntoIterator<Item = CachedSvid>,
    ) -> Result<bool, CacheError> {
        let svids = normalize_all(svids.into_iter().collect())?;
        let _guard = self.lock();
        let old = self.current();
        let mut next = Vec::with_capacity(old.svids.len().saturating_add(svids.len()));
        next.extend(old.svids.iter().cloned());
        let mut appended = Vec::new();
        let mut changed = false;
        for svid in svids {
            let mut buf = [0; UUID_TEXT_LEN];
            match old.position(svid.entry_id.as_str(&mut buf)) {
                Some(pos) => {
                    if let Some(slot) = next.get_mut(pos)
                        && !slot.same_content(&svid)
                    {
                        *slot = Arc::new(svid);
                        changed = true;
                    }
                }
                None => {
                    appended.push(Arc::new(svid));
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(false);
        }
        next.extend(appended);
        let draft = Draft {
            svids: Some(next),
            bundle: old.bundle.clone(),
            federated: old.federated.clone(),
            ready: old.ready,
        };
        self.publish(&old, draft);
        Ok(true)
    }

    /// Removes the SVIDs of these entries (deleted entries, or entries no longer authorized for
    /// this node). Unknown IDs are ignored.
    pub fn remove_entries<S: AsRef<str>>(&self, entry_ids: &[S]) -> bool {
        let _guard = self.lock();
        let old = self.current();
        let gone: HashSet<usize> = entry_ids
            .iter()
            .filter_map(|id| old.position(id.as_ref()))
            .collect();
        if gone.is_empty() {
            return false;
        }
        let next = old
            .svids
            .iter()
            .enumerate()
            .filter(|(pos, _)| !gone.contains(pos))
            .map(|(_, s)| s.clone())
            .collect();
        let draft = Draft {
            svids: Some(next),
            bundle: old.bundle.clone(),
            federated: old.federated.clone(),
            ready: old.ready,
        };
        self.publish(&old, draft);
        true
    }

    /// Sets the bundle of the agent's own trust domain (e.g. after a CA rotation). Refused if a
    /// federated bundle is cached for that trust domain.
    pub fn set_bundle(&self, bundle: Bundle) -> Result<bool, CacheError> {
        let _guard = self.lock();
        let old = self.current();
        if old.federated.contains_key(&bundle.trust_domain) {
            return Err(CacheError::FederatedOwnTrustDomain(bundle.trust_domain));
        }
        if old.bundle.as_deref() == Some(&bundle) {
            return Ok(false);
        }
        let draft = Draft {
            svids: None,
            bundle: Some(Arc::new(bundle)),
            federated: old.federated.clone(),
            ready: old.ready,
        };
        self.publish(&old, draft);
        Ok(true)
    }

    /// Replaces the set of federated bundles (a trust domain absent from `federated` is dropped).
    /// Bundles whose content did not change keep their identity, so only streams that receive a
    /// changed bundle are updated.
    pub fn set_federated(
        &self,
        federated: BTreeMap<TrustDomain, Bundle>,
    ) -> Result<bool, CacheError> {
        let _guard = self.lock();
        let old = self.current();
        let federated = check_federated(old.bundle.as_deref(), federated)?;
        if same_bundles(&old.federated, &federated) {
            return Ok(false);
        }
        let next = federated
            .into_iter()
            .map(|(td, bundle)| match old.federated.get(&td) {
                Some(prev) if **prev == bundle => (td, prev.clone()),
                _ => (td, Arc::new(bundle)),
            })
            .collect();
        let draft = Draft {
            svids: None,
            bundle: old.bundle.clone(),
            federated: next,
            ready: old.ready,
        };
        self.publish(&old, draft);
        Ok(true)
    }

    /// Declares the cache complete (first entry sync and SVID signing done, or state restored):
    /// before this the Workload API answers `Unavailable` instead of `PermissionDenied`, so that
    /// a workload is not told "no identity" by an agent that is still starting.
    pub fn mark_ready(&self) -> bool {
        let _guard = self.lock();
        let old = self.current();
        if old.ready {
            return false;
        }
        let draft = Draft {
            svids: None,
            bundle: old.bundle.clone(),
            federated: old.federated.clone(),
            ready: true,
        };
        self.publish(&old, draft);
        true
    }
}

fn normalize_all(svids: Vec<CachedSvid>) -> Result<Vec<CachedSvid>, CacheError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(svids.len());
    for svid in svids {
        let svid = svid.normalize()?;
        if !seen.insert(svid.entry_id.clone()) {
            return Err(CacheError::DuplicateEntry(svid.entry_id.to_string()));
        }
        out.push(svid);
    }
    Ok(out)
}

fn check_federated(
    own: Option<&Bundle>,
    federated: BTreeMap<TrustDomain, Bundle>,
) -> Result<BTreeMap<TrustDomain, Bundle>, CacheError> {
    for (key, bundle) in &federated {
        if *key != bundle.trust_domain {
            return Err(CacheError::BundleKeyMismatch {
                key: key.clone(),
                actual: bundle.trust_domain.clone(),
            });
        }
        if own.is_some_and(|own| own.trust_domain == *key) {
            return Err(CacheError::FederatedOwnTrustDomain(key.clone()));
        }
    }
    Ok(federated)
}

fn same_bundles(
    old: &BTreeMap<TrustDomain, Arc<Bundle>>,
    new: &BTreeMap<TrustDomain, Bundle>,
) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && **va == *vb)
}

/// Splits concatenated DER certificates; `None` if the bytes are not a sequence of complete DER
/// `SEQUENCE`s.
pub fn split_der_chain(mut der: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let len = der_element_len(der)?;
        let (cert, rest) = der.split_at_checked(len)?;
        out.push(cert);
        der = rest;
    }
    Some(out)
}

/// Total length (header included) of the DER `SEQUENCE` at the start of `der`.
fn der_element_len(der: &[u8]) -> Option<usize> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let bytes = rest.get(..n)?;
    let len = bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    2usize.checked_add(n)?.checked_add(len)
}

/// Splits the DER element at the start of `der` (definite lengths only): `(tag, content, rest)`.
fn der_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// The serial number (content bytes of the `INTEGER`) of the first certificate of `chain`.
fn leaf_serial(chain: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = der_tlv(chain)? else {
        return None;
    };
    let (0x30, tbs, _) = der_tlv(cert)? else {
        return None;
    };
    let (mut tag, mut content, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        // The explicit `[0] version`.
        (tag, content, _) = der_tlv(rest)?;
    }
    (tag == 0x02).then_some(content)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Test helpers shared by the crate's unit tests: a CA and SVIDs minted with rcgen.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };

    use super::*;

    pub(crate) struct Ca {
        pub(crate) cert: rcgen::Certificate,
        pub(crate) issuer: rcgen::Issuer<'static, KeyPair>,
        pub(crate) td: TrustDomain,
    }

    pub(crate) fn ca(td: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
            td: TrustDomain::new(td).unwrap(),
        }
    }

    pub(crate) fn bundle(ca: &Ca) -> Bundle {
        let mut b = Bundle::new(ca.td.clone());
        b.x509_authorities.push(ca.cert.der().to_vec());
        b
    }

    pub(crate) fn svid(
        ca: &Ca,
        entry: &str,
        path: &str,
        selectors: &[&str],
        hint: &str,
    ) -> CachedSvid {
        svid_expiring(
            ca,
            entry,
            path,
            selectors,
            hint,
            SystemTime::now() + Duration::from_secs(3600),
        )
    }

    pub(crate) fn svid_expiring(
        ca: &Ca,
        entry: &str,
        path: &str,
        selectors: &[&str],
        hint: &str,
        expires_at: SystemTime,
    ) -> CachedSvid {
        let id = ca.td.spiffe_id(path).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        CachedSvid {
            entry_id: entry.into(),
            spiffe_id: id,
            hint: hint.into(),
            selectors: selectors
                .iter()
                .map(|s| {
                    let (t, v) = s.split_once(':').unwrap();
                    (t.to_string(), v.to_string())
                })
                .collect(),
            federates_with: Box::default(),
            cert_chain_der: cert.der().to_vec().into(),
            private_key_pkcs8: Zeroizing::new(key.serialize_der().into()),
            expires_at,
        }
    }

    pub(crate) fn sels(list: &[&str]) -> Vec<(String, String)> {
        list.iter()
            .map(|s| {
                let (t, v) = s.split_once(':').unwrap();
                (t.to_string(), v.to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::*;
    use super::*;

    fn ids(svids: &[Arc<CachedSvid>]) -> Vec<String> {
        svids.iter().map(|s| s.entry_id.to_string()).collect()
    }

    #[test]
    fn an_entry_matches_when_its_selectors_are_a_subset_of_the_workloads() {
        let ca = ca("example.org");
        let cache = Cache::new();
        cache
            .replace(
                vec![
                    svid(&ca, "e1", "/one", &["unix:uid:1000"], ""),
                    svid(&ca, "e2", "/two", &["unix:uid:1000", "unix:gid:50"], ""),
                    svid(&ca, "e3", "/three", &["unix:uid:1000", "unix:gid:60"], ""),
                    svid(&ca, "e4", "/four", &["unix:uid:2000"], ""),
                ],
                Some(bundle(&ca)),
                BTreeMap::new(),
            )
            .unwrap();
        let snap = cache.current();
        let got = snap.svids_for(&sels(&["unix:gid:50", "unix:uid:1000", "unix:path:/bin/x"]));
        assert_eq!(ids(&got), ["e1", "e2"]);
        // Selector values are compared whole: a prefix is not a match.
        assert!(snap.svids_for(&sels(&["unix:uid:100"])).is_empty());
        assert!(snap.svids_for(&sels(&["unix:gid:50"])).is_empty());
        assert!(snap.svids_for(&[]).is_empty());
    }

    #[test]
    fn expired_svids_are_not_served() {
        let ca = ca("example.org");
        let cache = Cache::new();
        let now = SystemTime::now();
        cache
            .replace(
                vec![
                    svid_expiring(&ca, "old", "/a", &["k:v"], "", now - Duration::from_secs(1)),
                    svid_expiring(
                        &ca,
                        "new",
                        "/b",
                        &["k:v"],
                        "",
                        now + Duration::from_secs(60),
                    ),
                ],
                Some(bundle(&ca)),
                BTreeMap::new(),
            )
            .unwrap();
        let snap = cache.current();
        assert_eq!(ids(&snap.svids_for_at(&sels(&["k:v"]), now)), ["new"]);
        assert!(
            snap.svids_for_at(&sels(&["k:v"]), now + Duration::from_secs(60))
                .is_empty()
        );
        assert_eq!(
            snap.next_expiry_after(now),
            Some(now + Duration::from_secs(60))
        );
    }

    #[test]
    fn default_order_is_spiffe_id_then_entry_id_whatever_the_insertion_order() {
        let ca = ca("example.org");
        let cache = Cache::new();
        cache
            .upsert_svids(vec![svid(&ca, "z", "/b", &["k:v"], "")])
            .unwrap();
        cache
            .upsert_svids(vec![svid(&ca, "y", "/a", &["k:v"], "")])
            .unwrap();
        cache
            .upsert_svids(vec![svid(&ca, "x", "/b", &["k:v"], "")])
            .unwrap();
        assert_eq!(
            ids(&cache.current().svids_for(&sels(&["k:v"]))),
            ["y", "x", "z"]
        );
    }

    #[test]
    fn hints_are_unique_the_first_in_order_wins() {
        let ca = ca("example.org");
        let cache = Cache::new();
        cache
            .upsert_svids(vec![
                svid(&ca, "e1", "/b", &["k:v"], "internal"),
                svid(&ca, "e2", "/a", &["k:v"], "internal"),
                svid(&ca, "e3", "/c", &["k:v"], "external"),
                svid(&ca, "e4", "/d", &["k:v"], ""),
                svid(&ca, "e5", "/e", &["k:v"], ""),
            ])
            .unwrap();
        assert_eq!(
            ids(&cache.current().svids_for(&sels(&["k:v"]))),
            ["e2", "e3", "e4", "e5"]
        );
    }

    #[test]
    fn mutations_bump_the_generation_only_on_change() {
        let ca = ca("example.org");
        let cache = Cache::new();
        let mut rx = cache.subscribe();
        assert_eq!(cache.current().generation, 0);
        let a = svid(&ca, "e1", "/a", &["k:v"], "");
        let a_again = CachedSvid {
            private_key_pkcs8: a.private_key_pkcs8.clone(),
            cert_chain_der: a.cert_chain_der.clone(),
            selectors: a.selectors.clone(),
            federates_with: Box::default(),
            hint: "".into(),
            spiffe_id: a.spiffe_id.clone(),
            entry_id: a.entry_id.clone(),
            expires_at: a.expires_at,
        };
        assert!(cache.upsert_svids(vec![a]).unwrap());
        assert_eq!(cache.current().generation, 1);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(!cache.upsert_svids(vec![a_again]).unwrap());
        assert!(!rx.has_changed().unwrap());
        assert!(cache.set_bundle(bundle(&ca)).unwrap());
        assert!(!cache.set_bundle(bundle(&ca)).unwrap());
        assert!(!cache.remove_entries(&["nope"]));
        assert!(cache.remove_entries(&["e1"]));
        assert!(cache.current().svid("e1").is_none());
        assert!(cache.mark_ready());
        assert!(!cache.mark_ready());
        assert_eq!(cache.current().generation, 4);
        assert!(cache.current().is_ready());
    }

    #[test]
    fn bad_svids_are_refused_and_nothing_is_stored() {
        let ca = ca("example.org");
        let cache = Cache::new();
        let good = svid(&ca, "e1", "/a", &["k:v"], "");
        let mut wrong_id = svid(&ca, "e2", "/b", &["k:v"], "");
        wrong_id.spiffe_id = ca.td.spiffe_id("/not-b").unwrap();
        let err = cache.upsert_svids(vec![good, wrong_id]).unwrap_err();
        assert!(
            matches!(&err, CacheError::InvalidSvid { entry_id, reason } if entry_id == "e2" && reason.contains("/not-b")),
            "{err}"
        );
        assert_eq!(cache.current().generation, 0);

        let mut no_selectors = svid(&ca, "e3", "/c", &["k:v"], "");
        no_selectors.selectors = Arc::new([]);
        assert!(matches!(
            cache.upsert_svids(vec![no_selectors]),
            Err(CacheError::InvalidSvid { .. })
        ));
        let mut garbage = svid(&ca, "e4", "/d", &["k:v"], "");
        garbage.cert_chain_der = garbage.cert_chain_der[..10].into();
        assert!(matches!(
            cache.upsert_svids(vec![garbage]),
            Err(CacheError::InvalidSvid { .. })
        ));
        let mut no_key = svid(&ca, "e5", "/e", &["k:v"], "");
        no_key.private_key_pkcs8 = Zeroizing::new(Box::default());
        assert!(cache.upsert_svids(vec![no_key]).is_err());
        let dup = cache.upsert_svids(vec![
            svid(&ca, "e6", "/f", &["k:v"], ""),
            svid(&ca, "e6", "/f", &["k:v"], ""),
        ]);
        assert_eq!(dup, Err(CacheError::DuplicateEntry("e6".into())));
        assert_eq!(cache.current().generation, 0);
    }

    #[test]
    fn federated_bundles_follow_the_entries_federation() {
        let own = ca("example.org");
        let fed = ca("partner.example");
        let other = ca("other.example");
        let cache = Cache::new();
        let mut s = svid(&own, "e1", "/a", &["k:v"], "");
        s.federates_with = vec![fed.td.clone(), fed.td.clone()].into();
        let federated = BTreeMap::from([
            (fed.td.clone(), bundle(&fed)),
            (other.td.clone(), bundle(&other)),
        ]);
        cache
            .replace(vec![s], Some(bundle(&own)), federated)
            .unwrap();
        let snap = cache.current();
        let svids = snap.svids_for(&sels(&["k:v"]));
        assert_eq!(svids[0].federates_with.len(), 1, "normalized");
        let feds = snap.federated_for(&svids);
        assert_eq!(
            feds.keys().map(|td| td.name()).collect::<Vec<_>>(),
            ["partner.example"]
        );

        // Own trust domain can't be federated; keys must match.
        let err = cache
            .set_federated(BTreeMap::from([(own.td.clone(), bundle(&own))]))
            .unwrap_err();
        assert_eq!(err, CacheError::FederatedOwnTrustDomain(own.td.clone()));
        let err = cache
            .set_federated(BTreeMap::from([(fed.td.clone(), bundle(&other))]))
            .unwrap_err();
        assert!(matches!(err, CacheError::BundleKeyMismatch { .. }));
        // An unchanged bundle keeps its Arc; a changed one gets a new one.
        let before = cache.current();
        let mut changed = bundle(&other);
        changed.sequence = 7;
        cache
            .set_federated(BTreeMap::from([
                (fed.td.clone(), bundle(&fed)),
                (other.td.clone(), changed),
            ]))
            .unwrap();
        let after = cache.current();
        assert!(Arc::ptr_eq(
            &before.federated[&fed.td],
            &after.federated[&fed.td]
        ));
        assert!(!Arc::ptr_eq(
            &before.federated[&other.td],
            &after.federated[&other.td]
        ));
    }

    #[test]
    fn svids_with_the_same_selectors_share_one_selector_set() {
        let ca = ca("example.org");
        let cache = Cache::new();
        cache
            .upsert_svids(vec![
                svid(&ca, "e1", "/a", &["unix:uid:1", "unix:gid:2"], ""),
                svid(
                    &ca,
                    "e2",
                    "/b",
                    &["unix:gid:2", "unix:uid:1", "unix:uid:1"],
                    "",
                ),
            ])
            .unwrap();
        cache
            .upsert_svids(vec![
                svid(&ca, "e3", "/c", &["unix:uid:1", "unix:gid:2"], ""),
                svid(&ca, "e4", "/d", &["unix:uid:9"], ""),
            ])
            .unwrap();
        let snap = cache.current();
        let sel = |id: &str| snap.svid(id).unwrap().selectors.clone();
        assert_eq!(
            *sel("e1"),
            *sels(&["unix:gid:2", "unix:uid:1"]),
            "normalized"
        );
        assert!(Arc::ptr_eq(&sel("e1"), &sel("e2")));
        assert!(Arc::ptr_eq(&sel("e1"), &sel("e3")));
        assert!(!Arc::ptr_eq(&sel("e1"), &sel("e4")));
        // A set no SVID uses any more is forgotten (at the next change of the SVIDs, once the
        // snapshot that dropped it is the previous one).
        assert!(cache.remove_entries(&["e4"]));
        drop(snap);
        cache
            .upsert_svids(vec![svid(
                &ca,
                "e5",
                "/e",
                &["unix:uid:1", "unix:gid:2"],
                "",
            )])
            .unwrap();
        let sets = cache.inner.selector_sets.lock().unwrap().len();
        assert_eq!(sets, 1);
    }

    #[test]
    fn the_serial_is_read_from_the_leaf_certificate() {
        let ca = ca("example.org");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://example.org/a".try_into().unwrap(),
        )];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0x0b, 0x0c]));
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let mut s = svid(&ca, "e1", "/a", &["k:v"], "");
        s.cert_chain_der = [cert.der().as_ref(), ca.cert.der().as_ref()]
            .concat()
            .into();
        assert_eq!(s.serial(), Some(&[0x0a, 0x0b, 0x0c][..]));
        assert!(format!("{s:?}").contains("0a0b0c"));
        s.cert_chain_der = Box::new([0x30, 0x03, 0x02, 0x01]);
        assert_eq!(s.serial(), None);
    }

    #[test]
    fn entry_ids_keep_uuids_in_16_bytes_and_behave_like_their_strings() {
        let cases = [
            "",
            "0",
            "00000000-0000-0000-0000-000000000000",
            "0f8e2c1a-9b7d-4e3f-a1b2-c3d4e5f60718",
            "0f8e2c1a-9b7d-4e3f-a1b2-c3d4e5f60718x",
            "0F8E2C1A-9B7D-4E3F-A1B2-C3D4E5F60718",
            "0f8e2c1a-9b7d-4e3f-a1b2-c3d4e5f6071g",
            "0f8e2c1a_9b7d-4e3f-a1b2-c3d4e5f60718",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "g",
            "zzz",
        ];
        for a in cases {
            let ea = EntryId::new(a);
            assert_eq!(ea.to_string(), a);
            assert_eq!(ea, EntryId::from(a.to_string()));
            assert_eq!(ea, a);
            assert_eq!(ea.is_empty(), a.is_empty());
            for b in cases {
                assert_eq!(ea.cmp(&EntryId::new(b)), a.cmp(b), "{a} vs {b}");
                assert_eq!(ea.cmp_str(b), a.cmp(b), "{a} vs {b}");
            }
        }
        assert!(matches!(
            EntryId::new("0f8e2c1a-9b7d-4e3f-a1b2-c3d4e5f60718").0,
            EntryIdRepr::Uuid(_)
        ));
        assert!(matches!(
            EntryId::new("0F8E2C1A-9B7D-4E3F-A1B2-C3D4E5F60718").0,
            EntryIdRepr::Text(_)
        ));
        // Lookups by UUID entry IDs, mixed with other IDs.
        let ca = ca("example.org");
        let cache = Cache::new();
        let u1 = "0f8e2c1a-9b7d-4e3f-a1b2-c3d4e5f60718";
        let u2 = "ff8e2c1a-9b7d-4e3f-a1b2-c3d4e5f60718";
        cache
            .upsert_svids(vec![
                svid(&ca, u2, "/a", &["k:v"], ""),
                svid(&ca, "1-not-a-uuid", "/a", &["k:v"], ""),
                svid(&ca, u1, "/a", &["k:v"], ""),
            ])
            .unwrap();
        let snap = cache.current();
        assert_eq!(
            ids(&snap.svids),
            ["0f8e2c1a-9b7d-4e3f-a1b2-c3d4e5f60718", "1-not-a-uuid", u2]
        );
        for id in [u1, u2, "1-not-a-uuid"] {
            assert_eq!(snap.svid(id).unwrap().entry_id, id);
        }
        assert!(snap.svid("0F8E2C1A-9B7D-4E3F-A1B2-C3D4E5F60718").is_none());
        assert!(cache.remove_entries(&[u1]));
        assert!(cache.current().svid(u1).is_none());
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_cached_svid_stays_small() {
        // With the `Arc` counters it fits a 192-byte allocation; the entry ID is inline.
        assert!(
            std::mem::size_of::<CachedSvid>() <= 184,
            "{}",
            std::mem::size_of::<CachedSvid>()
        );
        assert_eq!(std::mem::size_of::<EntryId>(), 24);
    }

    #[test]
    fn debug_output_never_contains_the_private_key() {
        let ca = ca("example.org");
        let s = svid(&ca, "e1", "/a", &["k:v"], "");
        let key_hex = hex_string(&s.private_key_pkcs8);
        let out = format!("{s:?}");
        assert!(out.contains("<redacted>"));
        assert!(!out.contains(&key_hex));
        assert!(!out.contains(&format!("{:?}", &s.private_key_pkcs8[..8])));
    }

    #[test]
    fn der_chains_are_split_on_certificate_boundaries() {
        let ca = ca("example.org");
        let a = ca.cert.der().to_vec();
        let mut two = a.clone();
        two.extend_from_slice(&a);
        assert_eq!(split_der_chain(&two).unwrap().len(), 2);
        assert_eq!(split_der_chain(&[]).unwrap().len(), 0);
        assert!(split_der_chain(&two[..two.len() - 1]).is_none());
        assert!(split_der_chain(&[0x02, 0x01, 0x00]).is_none());
    }
}
