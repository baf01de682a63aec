//! A compact mirror of the entries authorized for this agent, kept up to date with
//! `SyncEntries` results (full listings and deltas), plus the rotation state of each entry's SVID.
//!
//! It applies the same rules as [`crate::node_client::EntryCache`] (a full listing replaces the
//! set, a delta upserts and removes; then expired entries and entries no longer connected to the
//! agent ID, the issuer's node aliases or a chain of parent entries are dropped), but keeps per
//! entry only what the agent needs between syncs: the SPIFFE ID (hashed), the parent (interned:
//! entries of one node share a handful of parents), the expiry, a fingerprint of the fields that go into
//! the certificate, and the SVID's rotation state. Selectors, hint and federation live with the
//! SVID in the [`Cache`](crate::cache::Cache); entries awaiting an SVID are kept whole by the sync
//! loop. Slots live in one vector sorted by entry ID, and SPIFFE IDs are kept as hashes (as strings
//! only for node aliases, whose SVID-less IDs are needed for persistence): about 0.15 KB per entry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use signet_proto::node as pb;

use crate::node_client::EntrySync;
use crate::runtime::certs::unix_secs;

/// Fingerprint of the entry fields that go into the certificate: SPIFFE ID, DNS names, TTL.
/// Never 0 (0 means "no SVID").
pub fn fingerprint(entry: &pb::Entry) -> u64 {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(entry.spiffe_id.as_bytes());
    ctx.update(&[0]);
    ctx.update(&entry.x509_svid_ttl.to_be_bytes());
    let mut dns: Vec<&str> = entry.dns_names.iter().map(String::as_str).collect();
    dns.sort_unstable();
    dns.dedup();
    for d in dns {
        ctx.update(&[0]);
        ctx.update(d.as_bytes());
    }
    let digest = ctx.finish();
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(digest.as_ref()) {
        *dst = *src;
    }
    u64::from_be_bytes(b).max(1)
}

/// An entry the agent signs SVIDs for (node aliases only connect entries to the agent).
pub fn servable(entry: &pb::Entry) -> bool {
    !entry.node_alias && !entry.selectors.is_empty()
}

/// Hash of a SPIFFE ID, to connect parents and children without keeping every ID as a string.
fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// What the mirror keeps of one entry.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Hash of the entry's SPIFFE ID (for parent links).
    pub spiffe_hash: u64,
    /// The entry's SPIFFE ID, kept only for entries the agent signs no SVID for (node aliases):
    /// for the others it is the cached SVID's, or in the pending entry.
    pub spiffe_id: Option<Box<str>>,
    /// The entry's parent ID (interned).
    pub parent_id: Arc<str>,
    /// Unix seconds after which the entry is dropped; 0 = never.
    pub expires_at: i64,
    /// [`fingerprint`] of the entry as last synced.
    pub fingerprint: u64,
    /// [`fingerprint`] the cached SVID was signed for; 0 = no SVID.
    pub signed: u64,
    /// When to renew the cached SVID (Unix milliseconds); meaningless without an SVID.
    pub renew_at_ms: i64,
    /// Whether SVIDs are signed for it (not a node alias, has selectors).
    pub servable: bool,
    /// A node alias (parent: the issuer).
    pub node_alias: bool,
}

/// The outcome of [`Mirror::apply`].
#[derive(Debug, Default)]
pub struct Applied {
    /// Entries that were in the mirror and are gone (deleted, expired, disconnected).
    pub gone: Vec<String>,
    /// Entries created or updated by this sync that are in the mirror now, whole.
    pub changed: Vec<pb::Entry>,
}

/// The mirror: slots sorted by entry ID (binary search; no hash table overhead).
#[derive(Debug)]
pub struct Mirror {
    agent_id: String,
    issuer_id: String,
    slots: Vec<(Box<str>, Slot)>,
    parents: HashSet<Arc<str>>,
    revision: i64,
}

impl Mirror {
    /// An empty mirror for `agent_id` of the trust domain whose issuer is `issuer_id`.
    pub fn new(agent_id: &str, issuer_id: &str) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            issuer_id: issuer_id.to_owned(),
            slots: Vec::new(),
            parents: HashSet::new(),
            revision: 0,
        }
    }

    /// The revision to sync from next time (0: a full sync).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Forces the next sync to be a full one (the slots are kept until it replaces them).
    pub fn reset_revision(&mut self) {
        self.revision = 0;
    }

    /// The agent ID the mirror belongs to.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Moves the mirror to another agent ID (after a re-attestation under a new ID): the slots and
    /// their rotation state stay until the next (full) sync says which entries remain.
    pub fn rebind(&mut self, agent_id: &str) {
        agent_id.clone_into(&mut self.agent_id);
        self.revision = 0;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the mirror is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.slots.binary_search_by(|(k, _)| (**k).cmp(id))
    }

    /// One entry.
    pub fn get(&self, id: &str) -> Option<&Slot> {
        self.position(id)
            .ok()
            .and_then(|i| self.slots.get(i))
            .map(|(_, s)| s)
    }

    /// One entry, mutable (rotation state).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Slot> {
        let i = self.position(id).ok()?;
        self.slots.get_mut(i).map(|(_, s)| s)
    }

    /// Every entry, by entry ID.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Slot)> {
        self.slots.iter().map(|(k, v)| (&**k, v))
    }

    fn intern(&mut self, parent: &str) -> Arc<str> {
        if let Some(p) = self.parents.get(parent) {
            return p.clone();
        }
        let p: Arc<str> = Arc::from(parent);
        self.parents.insert(p.clone());
        p
    }

    fn slot_for(&mut self, e: &pb::Entry, previous: Option<&Slot>) -> Slot {
        let (signed, renew_at_ms) = previous.map_or((0, 0), |p| (p.signed, p.renew_at_ms));
        let is_servable = servable(e);
        Slot {
            spiffe_hash: id_hash(&e.spiffe_id),
            spiffe_id: (!is_servable).then(|| e.spiffe_id.as_str().into()),
            parent_id: self.intern(&e.parent_id),
            expires_at: e.expires_at,
            fingerprint: fingerprint(e),
            signed,
            renew_at_ms,
            servable: is_servable,
            node_alias: e.node_alias,
        }
    }

    /// Inserts (or replaces) entries, keeping the slots sorted; each gets its previous rotation
    /// state when it was already there.
    fn upsert(&mut self, entries: &[pb::Entry], restored: Option<(u64, bool)>) {
        let mut added: Vec<(Box<str>, Slot)> = Vec::new();
        for e in entries {
            match self.position(&e.id) {
                Ok(i) => {
                    let previous = self.slots.get(i).map(|(_, s)| s.clone());
                    let slot = self.slot_for(e, previous.as_ref());
                    if let Some((_, s)) = self.slots.get_mut(i) {
                        *s = slot;
                    }
                }
                Err(_) => {
                    let slot = self.slot_for(e, None);
                    added.push((e.id.as_str().into(), slot));
                }
            }
        }
        if let Some((fp, is_servable)) = restored {
            for (_, s) in &mut added {
                s.fingerprint = fp;
                s.servable = is_servable;
            }
        }
        if !added.is_empty() {
            // The same ID twice in one sync: the last one wins.
            added.reverse();
            added.sort_by(|a, b| a.0.cmp(&b.0));
            added.dedup_by(|a, b| a.0 == b.0);
            self.slots.extend(added);
            self.slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
    }

    /// Inserts an entry as restored from disk, with its known fingerprint and SVID state.
    pub fn restore(&mut self, e: &pb::Entry, fingerprint: u64, servable: bool) {
        self.upsert(std::slice::from_ref(e), Some((fingerprint, servable)));
        if let Some(s) = self.get_mut(&e.id) {
            s.fingerprint = fingerprint;
            s.servable = servable;
            if !servable && s.spiffe_id.is_none() {
                s.spiffe_id = Some(e.spiffe_id.as_str().into());
            } else if servable {
                s.spiffe_id = None;
            }
        }
    }

    /// Sets the revision (after a restore).
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    /// Applies a sync result at time `now`.
    pub fn apply(&mut self, sync: EntrySync, now: SystemTime) -> Applied {
        let mut out = Applied::default();
        let mut touched = false;
        if sync.full {
            let incoming: HashSet<&str> = sync.entries.iter().map(|e| e.id.as_str()).collect();
            let before = self.slots.len();
            let gone = &mut out.gone;
            // Keep the rotation state of entries that are still there.
            self.slots.retain(|(id, _)| {
                let keep = incoming.contains(&**id);
                if !keep {
                    gone.push(id.to_string());
                }
                keep
            });
            touched = before != 0 || !sync.entries.is_empty();
        }
        if !sync.removed_entry_ids.is_empty() {
            let removed: HashSet<&str> =
                sync.removed_entry_ids.iter().map(String::as_str).collect();
            let gone = &mut out.gone;
            self.slots.retain(|(id, _)| {
                let keep = !removed.contains(&**id);
                if !keep {
                    gone.push(id.to_string());
                }
                keep
            });
            touched = true;
        }
        if !sync.entries.is_empty() {
            self.upsert(&sync.entries, None);
            touched = true;
        }
        out.changed = sync.entries;
        self.revision = sync.revision;
        let expired = self.drop_expired(now, &mut out.gone);
        if touched || expired {
            self.drop_unreachable(&mut out.gone);
        }
        if !out.gone.is_empty() {
            let gone: HashSet<&str> = out.gone.iter().map(String::as_str).collect();
            out.changed.retain(|e| !gone.contains(e.id.as_str()));
        }
        if self.slots.capacity() > self.slots.len() + self.slots.len() / 4 + 16 {
            self.slots.shrink_to_fit();
        }
        out
    }

    /// Drops expired entries and entries no longer connected to the agent (after a restore);
    /// returns their ids.
    pub fn prune(&mut self, now: SystemTime) -> Vec<String> {
        let mut gone = Vec::new();
        self.drop_expired(now, &mut gone);
        self.drop_unreachable(&mut gone);
        gone
    }

    fn drop_expired(&mut self, now: SystemTime, gone: &mut Vec<String>) -> bool {
        let now = unix_secs(now);
        let before = gone.len();
        self.slots.retain(|(id, s)| {
            let keep = s.expires_at == 0 || s.expires_at > now;
            if !keep {
                gone.push(id.to_string());
            }
            keep
        });
        gone.len() != before
    }

    fn drop_unreachable(&mut self, gone: &mut Vec<String>) {
        // Children of each parent (by SPIFFE ID hash), as positions.
        let mut by_parent: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, (_, s)) in self.slots.iter().enumerate() {
            by_parent.entry(id_hash(&s.parent_id)).or_default().push(i);
        }
        let mut reachable = vec![false; self.slots.len()];
        let mut seen: HashSet<u64> = HashSet::new();
        let mut queue: VecDeque<u64> = VecDeque::new();
        queue.push_back(id_hash(&self.agent_id));
        queue.push_back(id_hash(&self.issuer_id));
        while let Some(parent) = queue.pop_front() {
            if !seen.insert(parent) {
                continue;
            }
            for &i in by_parent.get(&parent).into_iter().flatten() {
                if let (Some(r), Some((_, s))) = (reachable.get_mut(i), self.slots.get(i)) {
                    *r = true;
                    queue.push_back(s.spiffe_hash);
                }
            }
        }
        drop(by_parent);
        if reachable.iter().all(|r| *r) {
            self.parents.retain(|p| Arc::strong_count(p) > 1);
            return;
        }
        let mut i = 0usize;
        self.slots.retain(|(id, _)| {
            let keep = reachable.get(i).copied().unwrap_or(false);
            i += 1;
            if !keep {
                gone.push(id.to_string());
            }
            keep
        });
        self.parents.retain(|p| Arc::strong_count(p) > 1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const AGENT: &str = "spiffe://td/signet/agent/join_token/t";
    const ISSUER: &str = "spiffe://td/signet/issuer";

    fn entry(id: &str, spiffe_id: &str, parent: &str) -> pb::Entry {
        pb::Entry {
            id: id.into(),
            spiffe_id: spiffe_id.into(),
            parent_id: parent.into(),
            selectors: vec![pb::Selector {
                r#type: "unix".into(),
                value: "uid:1".into(),
            }],
            ..Default::default()
        }
    }

    fn ids(m: &Mirror) -> Vec<String> {
        let mut v: Vec<String> = m.iter().map(|(id, _)| id.to_owned()).collect();
        v.sort();
        v
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    fn sync(full: bool, entries: Vec<pb::Entry>, removed: &[&str], revision: i64) -> EntrySync {
        EntrySync {
            full,
            entries,
            removed_entry_ids: removed.iter().map(|s| (*s).to_owned()).collect(),
            revision,
        }
    }

    #[test]
    fn full_then_delta_then_full() {
        let mut m = Mirror::new(AGENT, ISSUER);
        let a = m.apply(
            sync(
                true,
                vec![
                    entry("a", "spiffe://td/a", AGENT),
                    entry("b", "spiffe://td/b", AGENT),
                ],
                &[],
                2,
            ),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["a", "b"]);
        assert_eq!(a.changed.len(), 2);
        assert!(a.gone.is_empty());
        assert_eq!(m.revision(), 2);
        // Rotation state survives updates and full listings of the same entry.
        m.get_mut("b").unwrap().signed = 7;
        let a = m.apply(
            sync(
                false,
                vec![entry("c", "spiffe://td/c", AGENT)],
                &["a", "unknown"],
                4,
            ),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["b", "c"]);
        assert_eq!(a.gone, ["a"]);
        assert_eq!(a.changed.len(), 1);
        let a = m.apply(
            sync(true, vec![entry("b", "spiffe://td/b", AGENT)], &[], 5),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["b"]);
        assert_eq!(a.gone, ["c"]);
        assert_eq!(m.get("b").unwrap().signed, 7);
        // A no-op delta changes nothing.
        let a = m.apply(sync(false, vec![], &[], 5), SystemTime::now());
        assert!(a.gone.is_empty() && a.changed.is_empty());
    }

    #[test]
    fn descendants_of_removed_or_reparented_entries_are_pruned() {
        let mut m = Mirror::new(AGENT, ISSUER);
        let mut alias = entry("alias", "spiffe://td/alias", ISSUER);
        alias.node_alias = true;
        m.apply(
            sync(
                true,
                vec![
                    alias,
                    entry("under-alias", "spiffe://td/w1", "spiffe://td/alias"),
                    entry("mid", "spiffe://td/mid", AGENT),
                    entry("nested", "spiffe://td/n", "spiffe://td/mid"),
                    entry("orphan", "spiffe://td/o", "spiffe://td/nobody"),
                ],
                &[],
                5,
            ),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["alias", "mid", "nested", "under-alias"]);
        assert!(!m.get("alias").unwrap().servable);
        let a = m.apply(
            sync(
                false,
                vec![entry("mid", "spiffe://td/mid2", AGENT)],
                &["alias"],
                6,
            ),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["mid"]);
        assert_eq!(sorted(a.gone), ["alias", "nested", "under-alias"]);
        assert_eq!(a.changed.len(), 1);
        // Only the parents still in use stay interned.
        assert_eq!(m.parents.len(), 1);
    }

    #[test]
    fn ids_stay_sorted_duplicates_collapse_and_only_aliases_keep_their_id_string() {
        let mut m = Mirror::new(AGENT, ISSUER);
        let mut alias = entry("z-alias", "spiffe://td/alias", ISSUER);
        alias.node_alias = true;
        let mut first = entry("m", "spiffe://td/m1", AGENT);
        first.hint = "old".into();
        m.apply(
            sync(
                false,
                vec![
                    entry("q", "spiffe://td/q", AGENT),
                    alias,
                    first,
                    entry("m", "spiffe://td/m2", AGENT),
                    entry("a", "spiffe://td/a", "spiffe://td/alias"),
                ],
                &[],
                3,
            ),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["a", "m", "q", "z-alias"]);
        let listed: Vec<&str> = m.iter().map(|(id, _)| id).collect();
        assert_eq!(listed, ["a", "m", "q", "z-alias"], "iteration is sorted");
        // The later copy of "m" won.
        assert_eq!(m.get("m").unwrap().spiffe_hash, id_hash("spiffe://td/m2"));
        assert!(m.get("m").unwrap().spiffe_id.is_none());
        assert_eq!(
            m.get("z-alias").unwrap().spiffe_id.as_deref(),
            Some("spiffe://td/alias")
        );
        // Rebinding to another agent ID keeps the slots until the full sync.
        m.get_mut("q").unwrap().signed = 9;
        m.rebind("spiffe://td/signet/agent/join_token/u");
        assert_eq!(m.revision(), 0);
        assert_eq!(m.len(), 4);
        let a = m.apply(
            sync(
                true,
                vec![entry(
                    "q",
                    "spiffe://td/q",
                    "spiffe://td/signet/agent/join_token/u",
                )],
                &[],
                4,
            ),
            SystemTime::now(),
        );
        assert_eq!(ids(&m), ["q"]);
        assert_eq!(m.get("q").unwrap().signed, 9);
        assert_eq!(sorted(a.gone), ["a", "m", "z-alias"]);
        // Restored entries keep the fingerprint they were saved with.
        let mut r = Mirror::new(AGENT, ISSUER);
        r.restore(&entry("x", "spiffe://td/x", AGENT), 42, true);
        assert_eq!(r.get("x").unwrap().fingerprint, 42);
        assert!(r.prune(SystemTime::now()).is_empty());
    }

    #[test]
    fn expired_entries_and_their_children_are_dropped() {
        let mut m = Mirror::new(AGENT, ISSUER);
        let mut e = entry("a", "spiffe://td/a", AGENT);
        e.expires_at = 100;
        m.apply(
            sync(
                true,
                vec![e, entry("b", "spiffe://td/b", "spiffe://td/a")],
                &[],
                1,
            ),
            UNIX_EPOCH + Duration::from_secs(50),
        );
        assert_eq!(m.len(), 2);
        let a = m.apply(
            sync(false, vec![], &[], 1),
            UNIX_EPOCH + Duration::from_secs(100),
        );
        assert!(m.is_empty());
        assert_eq!(sorted(a.gone), ["a", "b"]);
    }

    #[test]
    fn fingerprints_cover_id_ttl_and_dns_names_only() {
        let e = pb::Entry {
            spiffe_id: "spiffe://td/a".into(),
            dns_names: vec!["b.example".into(), "a.example".into()],
            x509_svid_ttl: 60,
            hint: "h".into(),
            ..Default::default()
        };
        let fp = fingerprint(&e);
        assert_ne!(fp, 0);
        let mut same = e.clone();
        same.dns_names.reverse();
        same.hint = "other".into();
        same.selectors.push(pb::Selector {
            r#type: "unix".into(),
            value: "uid:1".into(),
        });
        assert_eq!(fingerprint(&same), fp);
        for change in [
            |e: &mut pb::Entry| e.spiffe_id = "spiffe://td/b".into(),
            |e: &mut pb::Entry| e.x509_svid_ttl = 61,
            |e: &mut pb::Entry| e.dns_names.push("c.example".into()),
        ] {
            let mut other = e.clone();
            change(&mut other);
            assert_ne!(fingerprint(&other), fp);
        }
    }

    #[test]
    fn node_aliases_and_selectorless_entries_are_not_served() {
        let mut e = entry("a", "spiffe://td/a", AGENT);
        assert!(servable(&e));
        e.node_alias = true;
        assert!(!servable(&e));
        e.node_alias = false;
        e.selectors.clear();
        assert!(!servable(&e));
    }
}
