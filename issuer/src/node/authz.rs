//! Which registration entries an agent is authorized for, and the paged delta sync built on it.
//!
//! The authorized set of an agent (as in SPIRE):
//! 1. node aliases: entries whose `parent_id` is the issuer ID and whose selectors are all among the
//!    agent's node selectors (an alias with no selector matches nobody);
//! 2. entries whose `parent_id` is the agent's ID or the SPIFFE ID of a matching node alias;
//! 3. recursively, entries whose `parent_id` is the SPIFFE ID of an entry already included, up to
//!    [`MAX_DEPTH`] levels.
//!
//! Entries whose `expires_at` has passed are left out (and do not lead further).
//!
//! Delta sync from revision `R`: an authorized entry is sent when its own revision is above `R` or
//! when an entry it was reached through (its parent entry or node alias, transitively) is, so that
//! entries that become authorized because a parent changed are sent too. Removed ids
//! ([`removed_entry_ids`]) are the entries deleted above `R`, and the entries changed above `R`
//! that are not authorized now, that the agent may hold: those whose parent at some point after `R`
//! (at deletion, before a move, or now) connects to the agent now. Entries that lose their
//! authorization only because an ancestor was deleted or changed are dropped by the agent itself,
//! which keeps only entries connected to its ID or its node aliases.

use std::collections::{BTreeMap, HashMap, HashSet};

use signet_proto::node as pb;
use signet_store::{
    EntryChanges, EntryFilter, Page, RegistrationEntry, Selector, Store, StoreError,
};

/// The deepest chain of parent entries followed from the agent.
pub const MAX_DEPTH: usize = 16;

/// One authorized entry.
#[derive(Debug, Clone)]
pub struct AuthorizedEntry {
    /// The entry.
    pub entry: RegistrationEntry,
    /// It is a node alias (parent = issuer ID): it connects entries, and is never signed.
    pub node_alias: bool,
    /// It, or an entry it was reached through, changed after the sync's base revision.
    pub changed: bool,
}

fn expired(e: &RegistrationEntry, now: i64) -> bool {
    e.fields.expires_at.is_some_and(|t| t <= now)
}

/// Computes the entries authorized for the agent `agent_id` with node selectors
/// `agent_selectors`, keyed by entry id; `changed` flags are relative to `since`.
pub async fn authorized_entries(
    store: &dyn Store,
    issuer_id: &str,
    agent_id: &str,
    agent_selectors: &[Selector],
    since: i64,
    now: i64,
) -> Result<BTreeMap<String, AuthorizedEntry>, StoreError> {
    let mut out: BTreeMap<String, AuthorizedEntry> = BTreeMap::new();
    // parent ID -> whether it was reached through a changed entry
    let mut frontier: HashMap<String, bool> = HashMap::new();
    frontier.insert(agent_id.to_owned(), false);

    // Node aliases: one store query per node selector finds every candidate.
    let agent_set: HashSet<&Selector> = agent_selectors.iter().collect();
    let mut seen_alias_ids = HashSet::new();
    for sel in agent_selectors {
        let filter = EntryFilter {
            parent_id: Some(issuer_id.to_owned()),
            selectors: vec![sel.clone()],
            ..EntryFilter::default()
        };
        let (candidates, _) = store.list_entries(&filter, &Page::default()).await?;
        for e in candidates {
            if !seen_alias_ids.insert(e.id.clone()) {
                continue;
            }
            let matches = !e.fields.selectors.is_empty()
                && e.fields.selectors.iter().all(|s| agent_set.contains(s));
            if !matches || expired(&e, now) {
                continue;
            }
            let changed = e.revision > since;
            let d = frontier.entry(e.fields.spiffe_id.clone()).or_insert(false);
            *d |= changed;
            out.insert(
                e.id.clone(),
                AuthorizedEntry {
                    entry: e,
                    node_alias: true,
                    changed,
                },
            );
        }
    }

    // Parent IDs already expanded, with the `changed` flag they were expanded with.
    let mut expanded: HashMap<String, bool> = HashMap::new();
    for _ in 0..MAX_DEPTH {
        let parents: HashMap<String, bool> = frontier
            .drain()
            .filter(|(p, changed)| match expanded.get(p) {
                None => true,
                Some(was) => *changed && !*was,
            })
            .collect();
        if parents.is_empty() {
            break;
        }
        for (p, changed) in &parents {
            let e = expanded.entry(p.clone()).or_insert(false);
            *e |= *changed;
        }
        let ids: Vec<String> = parents.keys().cloned().collect();
        for child in store.list_entries_by_parents(&ids).await? {
            if child.fields.parent_id == issuer_id || expired(&child, now) {
                continue;
            }
            let via_changed = parents
                .get(&child.fields.parent_id)
                .copied()
                .unwrap_or(false);
            let changed = child.revision > since || via_changed;
            match out.get_mut(&child.id) {
                Some(existing) => {
                    if changed && !existing.changed {
                        existing.changed = true;
                        let d = frontier
                            .entry(existing.entry.fields.spiffe_id.clone())
                            .or_insert(false);
                        *d = true;
                    }
                }
                None => {
                    let d = frontier
                        .entry(child.fields.spiffe_id.clone())
                        .or_insert(false);
                    *d |= changed;
                    out.insert(
                        child.id.clone(),
                        AuthorizedEntry {
                            entry: child,
                            node_alias: false,
                            changed,
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

/// The ids a delta sync reports as removed, from the store's `changes` since the sync's base
/// revision `R` and the agent's current `authorized` set (computed from `R`): entries deleted after
/// `R`, and entries changed after `R` that are not authorized now, that the agent may hold.
///
/// The agent held an entry only if its parent at `R` connected to it. Its parent at `R` is among
/// the parents the store recorded after `R` (at deletion, before each move, and the current one).
/// The entry is named when one of them connects to the agent now: the agent ID, the issuer ID (any
/// node alias: its old selectors are not known) or the SPIFFE ID of an authorized entry. An entry
/// left out can be held by the agent only below a parent that no longer connects to the agent;
/// the agent's cache drops such entries itself (they are no longer reachable from its ID or node
/// aliases). When the store's history does not cover `R` (`history_complete` false) or a tombstone
/// has no parent, the entry is named.
pub fn removed_entry_ids(
    changes: &EntryChanges,
    authorized: &BTreeMap<String, AuthorizedEntry>,
    agent_id: &str,
    issuer_id: &str,
) -> Vec<String> {
    let mut connecting: HashSet<&str> = authorized
        .values()
        .map(|a| a.entry.fields.spiffe_id.as_str())
        .collect();
    connecting.insert(agent_id);
    connecting.insert(issuer_id);
    let mut old_parents: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &changes.moved {
        old_parents
            .entry(m.id.as_str())
            .or_default()
            .push(m.old_parent_id.as_str());
    }
    let may_hold = |id: &str, parent: Option<&str>| {
        !changes.history_complete
            || parent.is_none_or(|p| connecting.contains(p))
            || old_parents
                .get(id)
                .is_some_and(|ps| ps.iter().any(|p| connecting.contains(p)))
    };
    let mut removed: Vec<String> = changes
        .deleted
        .iter()
        .filter(|d| may_hold(&d.id, d.parent_id.as_deref()))
        .map(|d| d.id.clone())
        .collect();
    removed.extend(
        changes
            .updated
            .iter()
            .filter(|e| {
                !authorized.contains_key(&e.id) && may_hold(&e.id, Some(&e.fields.parent_id))
            })
            .map(|e| e.id.clone()),
    );
    removed.sort();
    removed.dedup();
    removed
}

/// The wire form of an entry.
pub fn entry_to_proto(a: &AuthorizedEntry) -> pb::Entry {
    let f = &a.entry.fields;
    pb::Entry {
        id: a.entry.id.clone(),
        spiffe_id: f.spiffe_id.clone(),
        parent_id: f.parent_id.clone(),
        selectors: f
            .selectors
            .iter()
            .map(|s| pb::Selector {
                r#type: s.kind.clone(),
                value: s.value.clone(),
            })
            .collect(),
        x509_svid_ttl: f.x509_svid_ttl,
        jwt_svid_ttl: f.jwt_svid_ttl,
        dns_names: f.dns_names.clone(),
        hint: f.hint.clone(),
        admin: f.admin,
        downstream: f.downstream,
        federates_with: f.federates_with.clone(),
        expires_at: f.expires_at.unwrap_or(0),
        revision: a.entry.revision,
        node_alias: a.node_alias,
    }
}

/// Default number of items (entries + removed ids) per sync page.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Largest page size honoured.
pub const MAX_PAGE_SIZE: u32 = 5000;
/// Encoded size at which a page is cut, well under the 4 MB gRPC message limit.
pub const PAGE_BYTE_BUDGET: usize = 2 * 1024 * 1024;

/// Where a sync listing stands between two pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The `since_revision` of the request.
    pub since: i64,
    /// The revision announced on the first page.
    pub revision: i64,
    /// Whether the listing is full.
    pub full: bool,
    /// Still listing entries (`true`) or already removed ids (`false`).
    pub in_entries: bool,
    /// The last id sent in the current phase.
    pub after: String,
}

impl PageToken {
    /// Encodes the token (`v1:<since>:<revision>:<full>:<e|r>:<after>`).
    pub fn encode(&self) -> String {
        format!(
            "v1:{}:{}:{}:{}:{}",
            self.since,
            self.revision,
            u8::from(self.full),
            if self.in_entries { "e" } else { "r" },
            self.after
        )
    }

    /// Decodes a token; `None` if it is malformed.
    pub fn decode(s: &str) -> Option<Self> {
        let mut it = s.splitn(6, ':');
        if it.next()? != "v1" {
            return None;
        }
        let since = it.next()?.parse().ok()?;
        let revision = it.next()?.parse().ok()?;
        let full = match it.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let in_entries = match it.next()? {
            "e" => true,
            "r" => false,
            _ => return None,
        };
        let after = it.next()?.to_owned();
        Some(Self {
            since,
            revision,
            full,
            in_entries,
            after,
        })
    }
}

/// One page of a sync listing.
#[derive(Debug, Default)]
pub struct SyncPage {
    /// Entries to upsert.
    pub entries: Vec<pb::Entry>,
    /// Ids to remove.
    pub removed: Vec<String>,
    /// The token of the next page, if any.
    pub next: Option<PageToken>,
}

/// Cuts one page out of the sorted `entries` and `removed` lists, starting at `token`.
pub fn paginate(
    entries: &[pb::Entry],
    removed: &[String],
    token: &PageToken,
    page_size: u32,
) -> SyncPage {
    use prost::Message;

    let limit = usize::try_from(page_size).unwrap_or(usize::MAX).max(1);
    let mut page = SyncPage::default();
    let mut bytes = 0usize;
    let full_page = |page: &SyncPage, bytes: usize, next_len: usize| {
        let items = page.entries.len() + page.removed.len();
        items >= limit || (items > 0 && bytes + next_len > PAGE_BYTE_BUDGET)
    };
    if token.in_entries {
        let start = entries.partition_point(|e| e.id.as_str() <= token.after.as_str());
        for e in &entries[start..] {
            let len = e.encoded_len() + 8;
            if full_page(&page, bytes, len) {
                page.next = Some(PageToken {
                    in_entries: true,
                    after: page
                        .entries
                        .last()
                        .map(|l| l.id.clone())
                        .unwrap_or_default(),
                    ..token.clone()
                });
                return page;
            }
            bytes += len;
            page.entries.push(e.clone());
        }
    }
    let after = if token.in_entries {
        ""
    } else {
        token.after.as_str()
    };
    let start = removed.partition_point(|r| r.as_str() <= after);
    for r in &removed[start..] {
        let len = r.len() + 8;
        if full_page(&page, bytes, len) {
            let last = page.removed.last().cloned();
            page.next = Some(match last {
                Some(last) => PageToken {
                    in_entries: false,
                    after: last,
                    ..token.clone()
                },
                // The page is full of entries: the removed ids start on the next page.
                None => PageToken {
                    in_entries: false,
                    after: String::new(),
                    ..token.clone()
                },
            });
            return page;
        }
        bytes += len;
        page.removed.push(r.clone());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str) -> pb::Entry {
        pb::Entry {
            id: id.into(),
            ..Default::default()
        }
    }

    fn start(since: i64) -> PageToken {
        PageToken {
            since,
            revision: 9,
            full: false,
            in_entries: true,
            after: String::new(),
        }
    }

    #[test]
    fn token_round_trip() {
        let t = PageToken {
            since: 3,
            revision: 10,
            full: true,
            in_entries: false,
            after: "abc-def".into(),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        for bad in [
            "",
            "v2:1:2:0:e:",
            "v1:x:2:0:e:",
            "v1:1:2:3:e:",
            "v1:1:2:0:q:",
            "v1:1:2",
        ] {
            assert_eq!(PageToken::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_cover_entries_then_removed_ids_exactly_once() {
        let entries: Vec<pb::Entry> = (0..7).map(|i| e(&format!("e{i}"))).collect();
        let removed: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
        for size in 1..15 {
            let mut token = start(1);
            let (mut got_e, mut got_r) = (Vec::new(), Vec::new());
            let mut pages = 0;
            loop {
                let page = paginate(&entries, &removed, &token, size);
                pages += 1;
                assert!(page.entries.len() + page.removed.len() <= size as usize);
                got_e.extend(page.entries.into_iter().map(|e| e.id));
                got_r.extend(page.removed);
                match page.next {
                    Some(n) => token = n,
                    None => break,
                }
                assert!(pages < 100);
            }
            let want_e: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            assert_eq!(got_e, want_e, "size {size}");
            assert_eq!(got_r, removed, "size {size}");
        }
    }

    // ---- removed ids, against a real store and the agent's real cache ----

    use signet_agent::node_client::{EntryCache, EntrySync};
    use signet_spiffe::SpiffeId;
    use signet_store::sqlite::SqliteStore;
    use signet_store::{DeletedEntry, NewEntry};
    use std::time::SystemTime;

    const ISSUER: &str = "spiffe://td/signet/issuer";
    const A: &str = "spiffe://td/signet/agent/a";
    const B: &str = "spiffe://td/signet/agent/b";

    fn sel_a() -> Vec<Selector> {
        vec![Selector::new("x", "a")]
    }

    async fn add(store: &SqliteStore, spiffe_id: &str, parent_id: &str) -> RegistrationEntry {
        store
            .create_entry(NewEntry {
                spiffe_id: spiffe_id.into(),
                parent_id: parent_id.into(),
                selectors: if parent_id == ISSUER {
                    sel_a()
                } else {
                    vec![Selector::new("unix", "uid:1")]
                },
                ..NewEntry::default()
            })
            .await
            .unwrap()
    }

    async fn reparent(store: &SqliteStore, e: &RegistrationEntry, parent: &str, spiffe: &str) {
        let mut e = store.get_entry(&e.id).await.unwrap().unwrap();
        e.fields.parent_id = parent.into();
        e.fields.spiffe_id = spiffe.into();
        store.update_entry(e).await.unwrap();
    }

    /// What `SyncEntries` sends an agent from `since` (one page), built as the handler does.
    async fn sync(store: &SqliteStore, agent: &str, since: i64) -> EntrySync {
        let revision = store.current_revision().await.unwrap();
        let selectors = if agent == A { sel_a() } else { Vec::new() };
        let authorized = authorized_entries(store, ISSUER, agent, &selectors, since, 0)
            .await
            .unwrap();
        let full = since == 0;
        let removed_entry_ids = if full {
            Vec::new()
        } else {
            let changes = store.entry_changes_since(since).await.unwrap();
            removed_entry_ids(&changes, &authorized, agent, ISSUER)
        };
        EntrySync {
            full,
            entries: authorized
                .values()
                .filter(|a| full || a.changed)
                .map(entry_to_proto)
                .collect(),
            removed_entry_ids,
            revision,
        }
    }

    fn cache_ids(cache: &EntryCache) -> Vec<String> {
        let mut ids: Vec<String> = cache.entries().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    }

    async fn authorized_ids(store: &SqliteStore, agent: &str) -> Vec<String> {
        sync(store, agent, 0)
            .await
            .entries
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    #[tokio::test]
    async fn removed_ids_name_only_what_the_agent_may_hold_and_deltas_converge() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap())
            .await
            .unwrap();
        let alias = add(&store, "spiffe://td/node/n", ISSUER).await;
        add(&store, "spiffe://td/w1", A).await;
        let w6 = add(&store, "spiffe://td/w6", A).await;
        let w2 = add(&store, "spiffe://td/w2", "spiffe://td/w6").await;
        let w3 = add(&store, "spiffe://td/w3", "spiffe://td/node/n").await;
        let w4 = add(&store, "spiffe://td/w4", "spiffe://td/w1").await;
        let w5 = add(&store, "spiffe://td/w5", "spiffe://td/w6").await;
        let b1 = add(&store, "spiffe://td/b1", B).await;
        let b2 = add(&store, "spiffe://td/b2", "spiffe://td/b1").await;
        let b3 = add(&store, "spiffe://td/b3", B).await;

        let id = |a: &str| SpiffeId::parse(a).unwrap();
        let mut cache_a = EntryCache::new(&id(A), &id(ISSUER));
        let mut cache_b = EntryCache::new(&id(B), &id(ISSUER));
        cache_a.apply(sync(&store, A, 0).await, SystemTime::now());
        cache_b.apply(sync(&store, B, 0).await, SystemTime::now());
        assert_eq!(cache_ids(&cache_a).len(), 7);
        assert_eq!(cache_ids(&cache_b).len(), 3);
        let r = store.current_revision().await.unwrap();

        // B's changes: a deletion under B, and b3 moved from B to A.
        store.delete_entry(&b1.id).await.unwrap();
        reparent(&store, &b3, A, "spiffe://td/b3").await;
        // A's changes: w3 (under the node alias) deleted, w4 moved from w1 to B, w6 renamed (its
        // children w2 and w5 are left under the old name), then w5 deleted under the old name.
        store.delete_entry(&w3.id).await.unwrap();
        reparent(&store, &w4, B, "spiffe://td/w4").await;
        reparent(&store, &w6, A, "spiffe://td/w6x").await;
        store.delete_entry(&w5.id).await.unwrap();

        let delta_a = sync(&store, A, r).await;
        let mut want = vec![w3.id.clone(), w4.id.clone()];
        want.sort();
        assert_eq!(
            delta_a.removed_entry_ids, want,
            "not b1, nor w5 (old parent gone)"
        );
        let delta_b = sync(&store, B, r).await;
        let mut want = vec![b1.id.clone(), b3.id.clone()];
        want.sort();
        assert_eq!(delta_b.removed_entry_ids, want, "nothing of A's");

        cache_a.apply(delta_a, SystemTime::now());
        cache_b.apply(delta_b, SystemTime::now());
        assert_eq!(cache_ids(&cache_a), authorized_ids(&store, A).await);
        assert_eq!(cache_ids(&cache_b), authorized_ids(&store, B).await);
        assert!(cache_a.get(&w2.id).is_none() && cache_a.get(&b3.id).is_some());
        assert!(cache_b.get(&b2.id).is_none() && cache_b.get(&w4.id).is_some());

        // A node alias deletion is named to every agent (its old selectors are not known).
        let r = store.current_revision().await.unwrap();
        store.delete_entry(&alias.id).await.unwrap();
        for (agent, cache) in [(A, &mut cache_a), (B, &mut cache_b)] {
            let delta = sync(&store, agent, r).await;
            assert_eq!(delta.removed_entry_ids, vec![alias.id.clone()], "{agent}");
            cache.apply(delta, SystemTime::now());
            assert_eq!(cache_ids(cache), authorized_ids(&store, agent).await);
        }
        store.close().await;
    }

    #[test]
    fn incomplete_history_or_unknown_parent_names_every_change() {
        let unrelated = |id: &str, parent: Option<&str>| DeletedEntry {
            id: id.into(),
            parent_id: parent.map(Into::into),
            revision: 5,
        };
        let mut changes = EntryChanges {
            deleted: vec![
                unrelated("d1", Some("spiffe://td/elsewhere")),
                unrelated("d2", None),
            ],
            history_complete: true,
            ..EntryChanges::default()
        };
        let none = BTreeMap::new();
        assert_eq!(removed_entry_ids(&changes, &none, A, ISSUER), vec!["d2"]);
        changes.history_complete = false;
        assert_eq!(
            removed_entry_ids(&changes, &none, A, ISSUER),
            vec!["d1", "d2"]
        );
    }

    #[test]
    fn byte_budget_cuts_pages() {
        let big = "x".repeat(700 * 1024);
        let entries: Vec<pb::Entry> = (0..5)
            .map(|i| pb::Entry {
                id: format!("e{i}"),
                hint: big.clone(),
                ..Default::default()
            })
            .collect();
        let page = paginate(&entries, &[], &start(0), 1000);
        assert_eq!(page.entries.len(), 2);
        assert!(page.next.is_some());
    }
}
