//! `audit trace`: rebuilds the delegation chain of a token from the `delegation.*` audit events.
//!
//! The delegation code records one event per token it produces (`delegation.mint`,
//! `delegation.hop`, `delegation.exchange`) with `details.token_id` (the new token) and
//! `details.parent_token_id` (the token it was derived from, `null` for a mint), and events about
//! tokens (`delegation.revoke` with `details.revoked_token_ids` and `details.revocation_ids`,
//! `delegation.denied` naming the `token_id` or `parent_token_id` that was refused). [`trace_token`]
//! finds the event that produced a token, then its parents up to the root, and attaches to each
//! token the revocations and denials recorded for it. It also checks what an auditor would: every
//! hop keeps the subject, only narrows rights and expiry, is authorized by the parent's holder and
//! extends the parent's actor chain; anything else is reported as a warning.
//!
//! It reads the events as stored: run [`super::verify`] to know they were not altered.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use signet_store::{AuditEvent, AuditFilter, Store, StoreError};

/// Kind prefix of the delegation events.
pub const DELEGATION_KIND_PREFIX: &str = "delegation.";
/// A token minted for a subject (the root of a chain).
pub const KIND_MINT: &str = "delegation.mint";
/// A token derived from another for a next actor.
pub const KIND_HOP: &str = "delegation.hop";
/// A token issued by token exchange (RFC 8693).
pub const KIND_EXCHANGE: &str = "delegation.exchange";
/// A refused mint, hop or exchange.
pub const KIND_DENIED: &str = "delegation.denied";
/// Tokens revoked.
pub const KIND_REVOKE: &str = "delegation.revoke";

/// Events read per page while collecting the delegation events.
const PAGE_SIZE: u32 = 1000;

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The token id is empty or too long.
    #[error("invalid token id: {0}")]
    InvalidTokenId(String),
    /// No event produced this token.
    #[error(
        "no delegation token {token_id:?} in the audit log: no delegation.mint, delegation.hop or delegation.exchange event produced it{}",
        if *.mentions > 0 { format!(" ({} other delegation events name it)", .mentions) } else { String::new() }
    )]
    UnknownToken {
        /// The id asked for.
        token_id: String,
        /// Revocations and denials that name it all the same.
        mentions: usize,
    },
    /// The store could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Longest token id accepted.
pub const MAX_TOKEN_ID_LEN: usize = 1024;

/// A revocation or denial recorded about a token of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedEvent {
    /// The event's seq.
    pub seq: i64,
    /// The event's hash.
    pub hash: String,
    /// `delegation.revoke`, `delegation.denied`, ...
    pub kind: String,
    /// Event time, Unix milliseconds.
    pub time_ms: i64,
    /// Who asked.
    pub actor: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// `details.reason`, if any.
    pub reason: Option<String>,
}

/// One token of the chain and the event that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHop {
    /// The producing event's seq.
    pub seq: i64,
    /// The producing event's hash.
    pub hash: String,
    /// `delegation.mint`, `delegation.hop` or `delegation.exchange`.
    pub kind: String,
    /// Event time, Unix milliseconds.
    pub time_ms: i64,
    /// Who asked for the token (a SPIFFE ID or an admin uid).
    pub actor: String,
    /// `details.authorized_by`: who authorized this hop (the first actor for a mint).
    pub authorized_by: Option<String>,
    /// The delegation subject.
    pub subject: String,
    /// The token's id.
    pub token_id: String,
    /// The token it was derived from (`None` for the root).
    pub parent_token_id: Option<String>,
    /// `details.chain`: the actors, first to current.
    pub chain: Vec<String>,
    /// The holder of the token: the last actor of `chain`.
    pub holder: Option<String>,
    /// `details.rights`.
    pub rights: Vec<String>,
    /// `details.revocation_ids` (hex).
    pub revocation_ids: Vec<String>,
    /// `details.expires_at`, Unix seconds.
    pub expires_at: Option<i64>,
    /// `details.root_key_id`.
    pub root_key_id: Option<i64>,
    /// Revocations and denials recorded for this token, in seq order.
    pub related: Vec<RelatedEvent>,
}

/// The chain of a token, from the subject's root token to the token asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationTrace {
    /// The token asked for.
    pub token_id: String,
    /// The delegation subject (of the token asked for).
    pub subject: String,
    /// Its current holder.
    pub holder: Option<String>,
    /// Whether the chain reaches a root (a token without parent).
    pub complete: bool,
    /// The tokens, root first, the token asked for last.
    pub hops: Vec<TraceHop>,
    /// Inconsistencies found: a missing parent, a widened right, a hop not authorized by the
    /// parent's holder, a token produced twice, ...
    pub warnings: Vec<String>,
}

fn str_field(details: &Value, key: &str) -> Option<String> {
    details
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn str_list(details: &Value, key: &str) -> Vec<String> {
    details
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn is_producer(e: &AuditEvent) -> bool {
    e.event.outcome == "ok" && [KIND_MINT, KIND_HOP, KIND_EXCHANGE].contains(&e.event.kind.as_str())
}

/// The delegation events, indexed.
struct Index {
    events: Vec<AuditEvent>,
    /// token id -> events that produced it.
    producers: HashMap<String, Vec<usize>>,
    /// token id or revocation id -> revocations and denials naming it.
    related: HashMap<String, Vec<usize>>,
}

impl Index {
    async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let filter = AuditFilter {
            kind: None,
            kind_prefix: Some(DELEGATION_KIND_PREFIX.to_owned()),
        };
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .list_audit_events_matching(after, PAGE_SIZE, &filter)
                .await?;
            let full = page.len() == PAGE_SIZE as usize;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            events.extend(page);
            if !full {
                break;
            }
        }
        let mut producers: HashMap<String, Vec<usize>> = HashMap::new();
        let mut related: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            let d = &e.event.details;
            if is_producer(e) {
                if let Some(id) = str_field(d, "token_id") {
                    producers.entry(id).or_default().push(i);
                }
                continue;
            }
            // Every other delegation event is about tokens: revoked, or refused.
            let mut keys: HashSet<String> = HashSet::new();
            keys.extend(str_field(d, "token_id"));
            keys.extend(str_field(d, "parent_token_id"));
            keys.extend(str_list(d, "revoked_token_ids"));
            if e.event.kind == KIND_REVOKE {
                keys.extend(str_list(d, "revocation_ids").into_iter().map(rev_key));
            }
            for k in keys {
                related.entry(k).or_default().push(i);
            }
        }
        Ok(Self {
            events,
            producers,
            related,
        })
    }

    fn hop(&self, i: usize, token_id: &str) -> TraceHop {
        let e = &self.events[i];
        let d = &e.event.details;
        let chain = str_list(d, "chain");
        let revocation_ids = str_list(d, "revocation_ids");
        let mut related_idx: Vec<usize> = self.related.get(token_id).cloned().unwrap_or_default();
        for r in &revocation_ids {
            related_idx.extend(self.related.get(&rev_key(r.clone())).into_iter().flatten());
        }
        related_idx.sort_unstable();
        related_idx.dedup();
        let related = related_idx
            .into_iter()
            .map(|j| {
                let r = &self.events[j];
                RelatedEvent {
                    seq: r.seq,
                    hash: r.hash.clone(),
                    kind: r.event.kind.clone(),
                    time_ms: r.event.time_ms,
                    actor: r.event.actor.clone(),
                    outcome: r.event.outcome.clone(),
                    reason: str_field(&r.event.details, "reason"),
                }
            })
            .collect();
        TraceHop {
            seq: e.seq,
            hash: e.hash.clone(),
            kind: e.event.kind.clone(),
            time_ms: e.event.time_ms,
            actor: e.event.actor.clone(),
            authorized_by: str_field(d, "authorized_by"),
            subject: e.event.subject.clone(),
            token_id: token_id.to_owned(),
            parent_token_id: str_field(d, "parent_token_id"),
            holder: chain.last().cloned(),
            chain,
            rights: str_list(d, "rights"),
            revocation_ids,
            expires_at: d.get("expires_at").and_then(Value::as_i64),
            root_key_id: d.get("root_key_id").and_then(Value::as_i64),
            related,
        }
    }
}

/// Revocation ids and token ids share the `related` map: revocation ids get a prefix.
fn rev_key(revocation_id: String) -> String {
    format!("revocation-id:{}", revocation_id.to_ascii_lowercase())
}

/// Rebuilds the chain of `token_id`: the event that produced it, then its parents up to the root,
/// with the revocations and denials of each token. The seam for tracing a token itself: read its id
/// out of the token, then call this.
pub async fn trace_token(store: &dyn Store, token_id: &str) -> Result<DelegationTrace, TraceError> {
    if token_id.is_empty() {
        return Err(TraceError::InvalidTokenId("must not be empty".to_owned()));
    }
    if token_id.len() > MAX_TOKEN_ID_LEN {
        return Err(TraceError::InvalidTokenId(format!(
            "longer than {MAX_TOKEN_ID_LEN} bytes"
        )));
    }
    let index = Index::load(store).await?;
    if !index.producers.contains_key(token_id) {
        return Err(TraceError::UnknownToken {
            token_id: token_id.to_owned(),
            mentions: index.related.get(token_id).map_or(0, Vec::len),
        });
    }
    let mut warnings = Vec::new();
    let mut hops = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut current = token_id.to_owned();
    let complete = loop {
        seen.insert(current.clone());
        let Some(producers) = index.producers.get(&current) else {
            warnings.push(format!(
                "no event produced token {current:?}: the chain is incomplete (the log may have been cut; run `audit verify`)"
            ));
            break false;
        };
        if producers.len() > 1 {
            let seqs: Vec<String> = producers
                .iter()
                .map(|&i| index.events[i].seq.to_string())
                .collect();
            warnings.push(format!(
                "token {current:?} was produced by several events (seq {}); the first is shown",
                seqs.join(", ")
            ));
        }
        let hop = index.hop(producers[0], &current);
        let parent = hop.parent_token_id.clone();
        let kind = hop.kind.clone();
        let seq = hop.seq;
        hops.push(hop);
        match parent {
            None => {
                if kind == KIND_HOP {
                    warnings.push(format!(
                        "delegation.hop seq {seq} has no parent_token_id: a hop must name the token it derives from"
                    ));
                }
                break true;
            }
            Some(p) if seen.contains(&p) => {
                warnings.push(format!(
                    "token {current:?} names {p:?} as parent, which is already in the chain (a cycle)"
                ));
                break false;
            }
            Some(p) => current = p,
        }
    };
    hops.reverse();
    for pair in hops.windows(2) {
        check_hop(&pair[0], &pair[1], &mut warnings);
    }
    let last = hops.last();
    Ok(DelegationTrace {
        token_id: token_id.to_owned(),
        subject: last.map(|h| h.subject.clone()).unwrap_or_default(),
        holder: last.and_then(|h| h.holder.clone()),
        complete,
        hops,
        warnings,
    })
}

/// The rules a hop keeps with respect to its parent.
fn check_hop(parent: &TraceHop, child: &TraceHop, warnings: &mut Vec<String>) {
    let at = format!(
        "{} seq {} (token {:?})",
        child.kind, child.seq, child.token_id
    );
    if child.subject != parent.subject {
        warnings.push(format!(
            "{at} changes the subject from {:?} to {:?}",
            parent.subject, child.subject
        ));
    }
    let widened: Vec<&str> = child
        .rights
        .iter()
        .filter(|r| !parent.rights.contains(r))
        .map(String::as_str)
        .collect();
    if !widened.is_empty() {
        warnings.push(format!(
            "{at} widens the rights of its parent: {} not granted to {:?}",
            widened.join(", "),
            parent.token_id
        ));
    }
    if let (Some(c), Some(p)) = (child.expires_at, parent.expires_at)
        && c > p
    {
        warnings.push(format!(
            "{at} expires at {c}, after its parent {:?} ({p})",
            parent.token_id
        ));
    }
    if child.kind == KIND_HOP
        && let (Some(by), Some(holder)) = (&child.authorized_by, &parent.holder)
        && by != holder
    {
        warnings.push(format!(
            "{at} was authorized by {by}, who does not hold its parent {:?} (held by {holder})",
            parent.token_id
        ));
    }
    if !child.chain.starts_with(&parent.chain) {
        warnings.push(format!(
            "{at} does not extend the actor chain of its parent ({} -> {})",
            parent.chain.join(" > "),
            child.chain.join(" > ")
        ));
    }
    if child.time_ms < parent.time_ms {
        warnings.push(format!(
            "{at} is recorded before its parent {:?} was produced",
            parent.token_id
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use signet_store::NewAuditEvent;

    use crate::audit::testing::temp_store as store;

    const ALICE: &str = "https://idp.example.com#alice";
    const PLANNER: &str = "spiffe://td/planner";
    const SEARCH: &str = "spiffe://td/search";
    const FETCH: &str = "spiffe://td/fetch";

    async fn append(
        store: &dyn Store,
        time_ms: i64,
        kind: &str,
        actor: &str,
        outcome: &str,
        details: Value,
    ) -> AuditEvent {
        store
            .append_audit_event(NewAuditEvent {
                time_ms,
                kind: kind.into(),
                actor: actor.into(),
                subject: ALICE.into(),
                outcome: outcome.into(),
                details,
            })
            .await
            .unwrap()
    }

    fn producer(
        token: &str,
        parent: Option<&str>,
        chain: &[&str],
        by: &str,
        rights: &[&str],
        exp: i64,
    ) -> Value {
        json!({
            "token_id": token,
            "parent_token_id": parent,
            "chain": chain,
            "authorized_by": by,
            "rights": rights,
            "revocation_ids": [format!("{token}-rev")],
            "expires_at": exp,
            "root_key_id": 1,
        })
    }

    /// alice -> planner (mint t1) -> search (hop t2) -> fetch (hop t3), plus noise.
    async fn three_hops(store: &dyn Store) {
        append(
            store,
            1,
            "entry.create",
            "admin:uid=0",
            "ok",
            json!({"token_id": "t1"}),
        )
        .await;
        append(
            store,
            10,
            KIND_MINT,
            PLANNER,
            "ok",
            producer(
                "t1",
                None,
                &[PLANNER],
                PLANNER,
                &["flights:read", "flights:book"],
                2000,
            ),
        )
        .await;
        append(
            store,
            20,
            KIND_HOP,
            PLANNER,
            "ok",
            producer(
                "t2",
                Some("t1"),
                &[PLANNER, SEARCH],
                PLANNER,
                &["flights:read"],
                1500,
            ),
        )
        .await;
        append(
            store,
            25,
            KIND_DENIED,
            SEARCH,
            "denied",
            json!({"token_id": null, "parent_token_id": "t2", "chain": [PLANNER, SEARCH, "spiffe://td/evil"], "authorized_by": SEARCH, "rights": ["flights:book"], "reason": "right flights:book not held"}),
        )
        .await;
        append(
            store,
            30,
            KIND_HOP,
            SEARCH,
            "ok",
            producer(
                "t3",
                Some("t2"),
                &[PLANNER, SEARCH, FETCH],
                SEARCH,
                &["flights:read"],
                1200,
            ),
        )
        .await;
        // An unrelated chain.
        append(
            store,
            31,
            KIND_MINT,
            PLANNER,
            "ok",
            producer("other", None, &[PLANNER], PLANNER, &["x"], 9),
        )
        .await;
    }

    #[tokio::test]
    async fn rebuilds_a_chain_from_subject_to_holder() {
        let (_d, store) = store().await;
        three_hops(store.as_ref()).await;
        let t = trace_token(store.as_ref(), "t3").await.unwrap();
        assert!(t.complete);
        assert_eq!(t.warnings, Vec::<String>::new());
        assert_eq!(t.subject, ALICE);
        assert_eq!(t.holder.as_deref(), Some(FETCH));
        let tokens: Vec<&str> = t.hops.iter().map(|h| h.token_id.as_str()).collect();
        assert_eq!(tokens, vec!["t1", "t2", "t3"]);
        let kinds: Vec<&str> = t.hops.iter().map(|h| h.kind.as_str()).collect();
        assert_eq!(kinds, vec![KIND_MINT, KIND_HOP, KIND_HOP]);
        let by: Vec<&str> = t
            .hops
            .iter()
            .map(|h| h.authorized_by.as_deref().unwrap())
            .collect();
        assert_eq!(by, vec![PLANNER, PLANNER, SEARCH]);
        assert_eq!(t.hops[0].rights, vec!["flights:read", "flights:book"]);
        assert_eq!(t.hops[0].parent_token_id, None);
        assert_eq!(t.hops[2].parent_token_id.as_deref(), Some("t2"));
        assert_eq!(t.hops[2].expires_at, Some(1200));
        assert_eq!(t.hops[2].root_key_id, Some(1));
        assert_eq!(t.hops[1].holder.as_deref(), Some(SEARCH));
        // The refused hop from t2 is attached to t2.
        assert_eq!(t.hops[1].related.len(), 1);
        let denied = &t.hops[1].related[0];
        assert_eq!(denied.kind, KIND_DENIED);
        assert_eq!(denied.outcome, "denied");
        assert_eq!(
            denied.reason.as_deref(),
            Some("right flights:book not held")
        );
        assert!(t.hops[0].related.is_empty() && t.hops[2].related.is_empty());

        // A token in the middle traces up to the mint only.
        let t = trace_token(store.as_ref(), "t2").await.unwrap();
        assert_eq!(t.hops.len(), 2);
        assert_eq!(t.holder.as_deref(), Some(SEARCH));
        let t = trace_token(store.as_ref(), "t1").await.unwrap();
        assert_eq!(t.hops.len(), 1);
        assert!(t.complete);
    }

    #[tokio::test]
    async fn revocations_by_token_id_and_by_revocation_id() {
        let (_d, store) = store().await;
        three_hops(store.as_ref()).await;
        append(
            store.as_ref(),
            40,
            KIND_REVOKE,
            "admin:uid=0",
            "ok",
            json!({"token_id": "t2", "revoked_token_ids": ["t2", "t3"], "revocation_ids": [], "reason": "agent compromised"}),
        )
        .await;
        append(
            store.as_ref(),
            41,
            KIND_REVOKE,
            "admin:uid=0",
            "ok",
            json!({"revoked_token_ids": [], "revocation_ids": ["T1-REV"], "reason": "by revocation id"}),
        )
        .await;
        let t = trace_token(store.as_ref(), "t3").await.unwrap();
        let related = |i: usize| -> Vec<(i64, Option<&str>)> {
            t.hops[i]
                .related
                .iter()
                .map(|r| (r.seq, r.reason.as_deref()))
                .collect()
        };
        assert_eq!(related(0), vec![(8, Some("by revocation id"))]);
        assert_eq!(
            related(1),
            vec![
                (4, Some("right flights:book not held")),
                (7, Some("agent compromised"))
            ]
        );
        assert_eq!(related(2), vec![(7, Some("agent compromised"))]);
    }

    #[tokio::test]
    async fn unknown_and_invalid_ids() {
        let (_d, store) = store().await;
        three_hops(store.as_ref()).await;
        let e = trace_token(store.as_ref(), "nope").await.unwrap_err();
        assert!(matches!(e, TraceError::UnknownToken { mentions: 0, .. }));
        assert_eq!(
            e.to_string(),
            "no delegation token \"nope\" in the audit log: no delegation.mint, delegation.hop or delegation.exchange event produced it"
        );
        // A token that was only ever refused is unknown, but the message says it is named.
        append(
            store.as_ref(),
            50,
            KIND_DENIED,
            PLANNER,
            "denied",
            json!({"token_id": "refused", "reason": "policy"}),
        )
        .await;
        let e = trace_token(store.as_ref(), "refused").await.unwrap_err();
        assert!(
            e.to_string()
                .ends_with("(1 other delegation events name it)"),
            "{e}"
        );
        // The token id of a non-delegation event is not a delegation token.
        assert!(matches!(
            trace_token(store.as_ref(), "t1x").await,
            Err(TraceError::UnknownToken { .. })
        ));
        // A denied mint does not produce its token.
        append(
            store.as_ref(),
            51,
            KIND_MINT,
            PLANNER,
            "denied",
            producer("t-denied", None, &[PLANNER], PLANNER, &[], 1),
        )
        .await;
        assert!(matches!(
            trace_token(store.as_ref(), "t-denied").await,
            Err(TraceError::UnknownToken { .. })
        ));
        assert!(matches!(
            trace_token(store.as_ref(), "").await,
            Err(TraceError::InvalidTokenId(_))
        ));
        assert!(matches!(
            trace_token(store.as_ref(), &"x".repeat(MAX_TOKEN_ID_LEN + 1)).await,
            Err(TraceError::InvalidTokenId(_))
        ));
    }

    #[tokio::test]
    async fn inconsistencies_are_reported() {
        let (_d, store) = store().await;
        let s = store.as_ref();
        append(
            s,
            10,
            KIND_MINT,
            PLANNER,
            "ok",
            producer("r", None, &[PLANNER], PLANNER, &["a"], 100),
        )
        .await;
        // Widens rights, extends expiry, is authorized by someone else, rewrites the chain.
        append(
            s,
            5,
            KIND_HOP,
            FETCH,
            "ok",
            producer("w", Some("r"), &[FETCH, SEARCH], FETCH, &["a", "b"], 200),
        )
        .await;
        let t = trace_token(s, "w").await.unwrap();
        assert!(t.complete);
        let all = t.warnings.join("\n");
        for needle in [
            "widens the rights of its parent: b not granted to \"r\"",
            "expires at 200, after its parent \"r\" (100)",
            "was authorized by spiffe://td/fetch, who does not hold its parent \"r\" (held by spiffe://td/planner)",
            "does not extend the actor chain of its parent",
            "is recorded before its parent",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }

        // A missing parent: the chain is incomplete.
        append(
            s,
            20,
            KIND_HOP,
            PLANNER,
            "ok",
            producer("orphan", Some("gone"), &[PLANNER, SEARCH], PLANNER, &[], 1),
        )
        .await;
        let t = trace_token(s, "orphan").await.unwrap();
        assert!(!t.complete);
        assert_eq!(t.hops.len(), 1);
        assert!(
            t.warnings[0].contains("no event produced token \"gone\""),
            "{:?}",
            t.warnings
        );

        // A cycle.
        append(
            s,
            30,
            KIND_HOP,
            PLANNER,
            "ok",
            producer("c1", Some("c2"), &[PLANNER], PLANNER, &[], 1),
        )
        .await;
        append(
            s,
            31,
            KIND_HOP,
            PLANNER,
            "ok",
            producer("c2", Some("c1"), &[PLANNER], PLANNER, &[], 1),
        )
        .await;
        let t = trace_token(s, "c1").await.unwrap();
        assert!(!t.complete);
        assert_eq!(t.hops.len(), 2);
        assert!(
            t.warnings.iter().any(|w| w.contains("a cycle")),
            "{:?}",
            t.warnings
        );

        // Produced twice; a hop without parent.
        append(
            s,
            40,
            KIND_HOP,
            PLANNER,
            "ok",
            producer("dup", None, &[PLANNER], PLANNER, &[], 1),
        )
        .await;
        append(
            s,
            41,
            KIND_EXCHANGE,
            PLANNER,
            "ok",
            producer("dup", None, &[PLANNER], PLANNER, &[], 1),
        )
        .await;
        let t = trace_token(s, "dup").await.unwrap();
        assert_eq!(t.hops[0].kind, KIND_HOP);
        let all = t.warnings.join("\n");
        assert!(
            all.contains("was produced by several events (seq 6, 7)"),
            "{all}"
        );
        assert!(all.contains("has no parent_token_id"), "{all}");
    }

    #[tokio::test]
    async fn malformed_details_are_tolerated() {
        let (_d, store) = store().await;
        let s = store.as_ref();
        append(
            s,
            1,
            KIND_MINT,
            PLANNER,
            "ok",
            json!({"token_id": "m", "chain": "not a list", "rights": [1, "r", null], "expires_at": "soon", "parent_token_id": ""}),
        )
        .await;
        append(
            s,
            2,
            KIND_MINT,
            PLANNER,
            "ok",
            json!(["not", "an", "object"]),
        )
        .await;
        let t = trace_token(s, "m").await.unwrap();
        assert!(t.complete);
        let h = &t.hops[0];
        assert_eq!(h.chain, Vec::<String>::new());
        assert_eq!(h.holder, None);
        assert_eq!(h.rights, vec!["r"]);
        assert_eq!(h.expires_at, None);
        assert_eq!(h.parent_token_id, None);
        assert_eq!(h.authorized_by, None);
    }

    #[tokio::test]
    async fn long_logs_are_read_in_pages() {
        let (_d, store) = store().await;
        let s = store.as_ref();
        append(
            s,
            0,
            KIND_MINT,
            PLANNER,
            "ok",
            producer("p0", None, &[PLANNER], PLANNER, &["r"], 10),
        )
        .await;
        let n = PAGE_SIZE as usize + 5;
        for i in 1..n {
            append(
                s,
                i as i64,
                KIND_HOP,
                PLANNER,
                "ok",
                producer(
                    &format!("p{i}"),
                    Some(&format!("p{}", i - 1)),
                    &[PLANNER],
                    PLANNER,
                    &["r"],
                    10,
                ),
            )
            .await;
        }
        let t = trace_token(s, &format!("p{}", n - 1)).await.unwrap();
        assert!(t.complete, "{:?}", t.warnings);
        assert_eq!(t.hops.len(), n);
        assert_eq!(t.hops[0].token_id, "p0");
    }
}
