//! `audit verify`: walks the whole audit log in pages, checks its hash chain and compares it with
//! anchors recorded elsewhere.
//!
//! The hash chain shows an edited, inserted, deleted or reordered event, but not the removal of the
//! newest events: what is left is still a valid chain. Anchors close that gap: an anchor is a
//! position (seq, and ideally the hash there) that the log once had, recorded outside the rows it
//! protects. The log must still reach every anchor's seq, with the anchor's hash there. Anchors
//! are the NATS publisher's cursor (the last event JetStream acknowledged, [`NATS_CURSOR_JOURNAL`])
//! and whatever head an auditor noted before (`--expect-head SEQ[:HASH]`).

use serde::{Deserialize, Serialize};
use signet_store::{AuditChainError, GENESIS_HASH, Store, StoreError, verify_audit_chain_after};

/// Events read per page while verifying.
pub const VERIFY_PAGE_SIZE: u32 = 1000;

/// Journal (see [`Store::save_journal`]) holding the NATS publisher's cursor, an
/// [`AuditPosition`] as JSON: the last event JetStream acknowledged.
pub const NATS_CURSOR_JOURNAL: &str = "audit_nats_cursor";

/// A position in the log: an event's seq and hash (seq 0 with [`GENESIS_HASH`] is the start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPosition {
    /// The event's seq.
    pub seq: i64,
    /// The event's hash.
    pub hash: String,
}

impl AuditPosition {
    /// The position before the first event.
    pub fn start() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// The NATS publisher's cursor as stored, or `None` when nothing was ever published.
pub async fn load_nats_cursor(store: &dyn Store) -> Result<Option<AuditPosition>, StoreError> {
    match store.load_journal(NATS_CURSOR_JOURNAL).await? {
        None => Ok(None),
        Some(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("journal {NATS_CURSOR_JOURNAL}: {e}"))),
    }
}

/// A position the log must still contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Where it was recorded (`NATS publisher cursor`, `--expect-head`).
    pub source: String,
    /// The seq the log must reach (at least 1).
    pub seq: i64,
    /// The hash the event at `seq` must have, when known (64 lowercase hex digits).
    pub hash: Option<String>,
}

/// How an anchor compared with the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorStatus {
    /// The log reaches the anchor's seq, with the anchor's hash if it has one.
    Matched,
    /// The log ends before the anchor's seq: its newest events were removed.
    Truncated,
    /// The event at the anchor's seq has another hash: the log was rewritten from there.
    HashMismatch,
    /// Not compared: the chain breaks before the anchor's seq.
    Unchecked,
}

impl AnchorStatus {
    /// The status's name (`matched`, `truncated`, `hash_mismatch`, `unchecked`).
    pub fn name(self) -> &'static str {
        match self {
            AnchorStatus::Matched => "matched",
            AnchorStatus::Truncated => "truncated",
            AnchorStatus::HashMismatch => "hash_mismatch",
            AnchorStatus::Unchecked => "unchecked",
        }
    }
}

/// The comparison of one anchor with the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorCheck {
    /// The anchor.
    pub source: String,
    /// Its seq.
    pub seq: i64,
    /// Its hash, if it has one.
    pub hash: Option<String>,
    /// The outcome.
    pub status: AnchorStatus,
    /// One sentence saying what was found.
    pub message: String,
}

/// Where and how the hash chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// The first event that does not verify (for a gap: the seq found where another was expected;
    /// for an unreadable row: the seq after the last event that verified).
    pub seq: i64,
    /// `seq_gap` (deleted or reordered event), `broken_link` (`prev_hash` is not the previous
    /// hash), `hash_mismatch` (edited event) or `unreadable` (a row that cannot be decoded).
    pub kind: String,
    /// The verifier's message.
    pub message: String,
}

impl ChainBreak {
    fn from_error(e: &AuditChainError) -> Self {
        let (seq, kind) = match e {
            AuditChainError::SeqGap { found, .. } => (*found, "seq_gap"),
            AuditChainError::BrokenLink { seq, .. } => (*seq, "broken_link"),
            AuditChainError::HashMismatch { seq, .. } => (*seq, "hash_mismatch"),
            // The enum is non-exhaustive: a future kind is reported by its message.
            _ => (0, "other"),
        };
        Self {
            seq,
            kind: kind.to_owned(),
            message: e.to_string(),
        }
    }
}

/// The outcome of [`verify_log`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Events that verified (all of them when the chain is whole).
    pub events: u64,
    /// The last event that verified (`None` for an empty log or a break at seq 1).
    pub head: Option<AuditPosition>,
    /// The first break of the chain, if any.
    pub chain_break: Option<ChainBreak>,
    /// Every anchor, compared.
    pub anchors: Vec<AnchorCheck>,
}

impl VerifyReport {
    /// Whether the chain is whole and every anchor matched.
    pub fn ok(&self) -> bool {
        self.chain_break.is_none()
            && self
                .anchors
                .iter()
                .all(|a| a.status == AnchorStatus::Matched)
    }

    /// One line: `ok: N events, head seq S hash H`, or `FAILED: ` and the first problem.
    pub fn summary(&self) -> String {
        if let Some(b) = &self.chain_break {
            return format!("FAILED: {}", b.message);
        }
        if let Some(a) = self
            .anchors
            .iter()
            .find(|a| a.status != AnchorStatus::Matched)
        {
            return format!("FAILED: {}", a.message);
        }
        match &self.head {
            None => "ok: 0 events (the audit log is empty)".to_owned(),
            Some(h) => format!(
                "ok: {} events, head seq {} hash {}",
                self.events, h.seq, h.hash
            ),
        }
    }
}

/// Parses `SEQ` or `SEQ:HASH` (the `--expect-head` form) into an anchor named `source`.
pub fn parse_anchor(source: &str, value: &str) -> Result<Anchor, String> {
    let (seq_text, hash) = match value.split_once(':') {
        Some((s, h)) => (s, Some(h)),
        None => (value, None),
    };
    let seq: i64 = seq_text
        .trim()
        .parse()
        .map_err(|_| format!("{value:?}: expected SEQ or SEQ:HASH, with SEQ a number"))?;
    if seq < 1 {
        return Err(format!("{value:?}: SEQ must be at least 1"));
    }
    let hash = match hash {
        None => None,
        Some(h) => Some(check_hash(h).map_err(|e| format!("{value:?}: {e}"))?),
    };
    Ok(Anchor {
        source: source.to_owned(),
        seq,
        hash,
    })
}

/// Checks an event hash (64 hex digits) and returns it in lowercase.
pub fn check_hash(h: &str) -> Result<String, String> {
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "HASH must be 64 hexadecimal digits (an event's hash), got {} characters",
            h.chars().count()
        ));
    }
    Ok(h.to_ascii_lowercase())
}

/// Walks the whole log in pages of `page_size` (0 = [`VERIFY_PAGE_SIZE`]) with
/// [`verify_audit_chain_after`] and compares it with `anchors`. A broken chain or a failed anchor
/// is reported in the result; only a store that cannot be read is an error.
pub async fn verify_log(
    store: &dyn Store,
    anchors: &[Anchor],
    page_size: u32,
) -> Result<VerifyReport, StoreError> {
    let page_size = if page_size == 0 {
        VERIFY_PAGE_SIZE
    } else {
        page_size
    };
    let mut pos = AuditPosition::start();
    let mut events = 0u64;
    let mut chain_break = None;
    // The hash the log has at each anchor's seq, once reached.
    let mut found: Vec<Option<String>> = vec![None; anchors.len()];
    loop {
        let page = match store.list_audit_events(pos.seq, page_size).await {
            Ok(p) => p,
            Err(StoreError::Corrupt(message)) => {
                chain_break = Some(ChainBreak {
                    seq: pos.seq.saturating_add(1),
                    kind: "unreadable".to_owned(),
                    message: format!(
                        "audit log unreadable after seq {}: corrupt stored data: {message}",
                        pos.seq
                    ),
                });
                break;
            }
            Err(e) => return Err(e),
        };
        let Some(last) = page.last() else { break };
        let last = AuditPosition {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        // Verify the page; on a break, keep the events before it.
        let verified = match verify_audit_chain_after(pos.seq, &pos.hash, &page) {
            Ok(()) => page.len(),
            Err(e) => {
                // The events before the failing one have the seqs pos.seq + 1, pos.seq + 2, ...
                let failing_seq = match &e {
                    AuditChainError::SeqGap { expected, .. } => *expected,
                    AuditChainError::BrokenLink { seq, .. }
                    | AuditChainError::HashMismatch { seq, .. } => *seq,
                    _ => pos.seq.saturating_add(1),
                };
                let good = usize::try_from(failing_seq.saturating_sub(pos.seq).saturating_sub(1))
                    .unwrap_or(0)
                    .min(page.len());
                chain_break = Some(ChainBreak::from_error(&e));
                good
            }
        };
        for ev in &page[..verified] {
            for (i, a) in anchors.iter().enumerate() {
                if a.seq == ev.seq {
                    found[i] = Some(ev.hash.clone());
                }
            }
        }
        events = events.saturating_add(verified as u64);
        if let Some(ev) = verified.checked_sub(1).and_then(|i| page.get(i)) {
            pos = AuditPosition {
                seq: ev.seq,
                hash: ev.hash.clone(),
            };
        }
        if chain_break.is_some() || page.len() < page_size as usize {
            break;
        }
        pos = last;
    }
    let head = (pos.seq > 0).then_some(pos.clone());
    let anchors = anchors
        .iter()
        .zip(found)
        .map(|(a, found)| check_anchor(a, found, &pos, chain_break.is_some()))
        .collect();
    Ok(VerifyReport {
        events,
        head,
        chain_break,
        anchors,
    })
}

fn check_anchor(
    a: &Anchor,
    found: Option<String>,
    head: &AuditPosition,
    broken: bool,
) -> AnchorCheck {
    let hash_text = a
        .hash
        .as_ref()
        .map_or_else(String::new, |h| format!(" (hash {h})"));
    let (status, message) = match found {
        Some(f) => match &a.hash {
            Some(h) if *h != f => (
                AnchorStatus::HashMismatch,
                format!(
                    "event seq {} has hash {f}, but the {} recorded hash {h}: the log was rewritten from seq {} on",
                    a.seq, a.source, a.seq
                ),
            ),
            _ => (
                AnchorStatus::Matched,
                format!("the log contains seq {}{hash_text} ({})", a.seq, a.source),
            ),
        },
        None if broken => (
            AnchorStatus::Unchecked,
            format!(
                "{} at seq {} not compared: the chain breaks before it",
                a.source, a.seq
            ),
        ),
        None => (
            AnchorStatus::Truncated,
            if head.seq == 0 {
                format!(
                    "the audit log is empty, but the {} recorded seq {}{hash_text}: events 1..{} are missing (truncated)",
                    a.source, a.seq, a.seq
                )
            } else {
                format!(
                    "the audit log ends at seq {}, but the {} recorded seq {}{hash_text}: events {}..{} are missing (truncated)",
                    head.seq,
                    a.source,
                    a.seq,
                    head.seq.saturating_add(1),
                    a.seq
                )
            },
        ),
    };
    AnchorCheck {
        source: a.source.clone(),
        seq: a.seq,
        hash: a.hash.clone(),
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_store::NewAuditEvent;

    async fn store_with(n: usize) -> (tempfile::TempDir, std::sync::Arc<dyn Store>) {
        let (dir, store) = crate::audit::testing::temp_store().await;
        for i in 0..n {
            store
                .append_audit_event(NewAuditEvent {
                    time_ms: i as i64,
                    kind: "entry.create".into(),
                    actor: "admin:uid=0".into(),
                    subject: format!("s{i}"),
                    outcome: "ok".into(),
                    details: serde_json::json!({"i": i}),
                })
                .await
                .unwrap();
        }
        (dir, store)
    }

    #[tokio::test]
    async fn whole_log_verifies_across_pages() {
        let (_d, store) = store_with(7).await;
        let head = store.last_audit_event().await.unwrap().unwrap();
        for page in [1, 2, 3, 7, 8, 0] {
            let r = verify_log(store.as_ref(), &[], page).await.unwrap();
            assert!(r.ok(), "page {page}: {r:?}");
            assert_eq!(r.events, 7);
            assert_eq!(
                r.head,
                Some(AuditPosition {
                    seq: 7,
                    hash: head.hash.clone()
                })
            );
            assert_eq!(
                r.summary(),
                format!("ok: 7 events, head seq 7 hash {}", head.hash)
            );
        }
    }

    #[tokio::test]
    async fn empty_log_verifies_unless_an_anchor_says_otherwise() {
        let (_d, store) = store_with(0).await;
        let r = verify_log(store.as_ref(), &[], 0).await.unwrap();
        assert!(r.ok());
        assert_eq!(r.summary(), "ok: 0 events (the audit log is empty)");
        let anchor = parse_anchor("--expect-head", "3").unwrap();
        let r = verify_log(store.as_ref(), &[anchor], 0).await.unwrap();
        assert!(!r.ok());
        assert_eq!(r.anchors[0].status, AnchorStatus::Truncated);
        assert!(
            r.summary()
                .contains("the audit log is empty, but the --expect-head recorded seq 3"),
            "{}",
            r.summary()
        );
    }

    #[tokio::test]
    async fn anchors_detect_truncation_and_rewrites() {
        let (_d, store) = store_with(5).await;
        let log = store.list_audit_events(0, 0).await.unwrap();
        let at = |seq: i64, hash: Option<&str>| Anchor {
            source: "NATS publisher cursor".into(),
            seq,
            hash: hash.map(str::to_owned),
        };
        // Matches: seq alone, seq with its hash, an older position.
        for a in [
            at(5, None),
            at(5, Some(&log[4].hash)),
            at(2, Some(&log[1].hash)),
        ] {
            let r = verify_log(store.as_ref(), std::slice::from_ref(&a), 2)
                .await
                .unwrap();
            assert!(r.ok(), "{a:?}: {r:?}");
            assert_eq!(r.anchors[0].status, AnchorStatus::Matched);
        }
        // The log was cut after seq 5 but the cursor saw seq 8.
        let r = verify_log(store.as_ref(), &[at(8, Some(&"a".repeat(64)))], 2)
            .await
            .unwrap();
        assert!(!r.ok());
        assert_eq!(r.chain_break, None);
        assert_eq!(r.anchors[0].status, AnchorStatus::Truncated);
        assert_eq!(
            r.summary(),
            format!(
                "FAILED: the audit log ends at seq 5, but the NATS publisher cursor recorded seq 8 (hash {}): events 6..8 are missing (truncated)",
                "a".repeat(64)
            )
        );
        // Same seq, other hash: rewritten (e.g. truncated, then new events appended).
        let r = verify_log(store.as_ref(), &[at(4, Some(&log[0].hash))], 3)
            .await
            .unwrap();
        assert_eq!(r.anchors[0].status, AnchorStatus::HashMismatch);
        assert!(r.summary().contains("the log was rewritten from seq 4 on"));
        // Several anchors: each is reported.
        let r = verify_log(
            store.as_ref(),
            &[
                at(1, Some(&log[0].hash)),
                Anchor {
                    source: "--expect-head".into(),
                    seq: 6,
                    hash: None,
                },
            ],
            0,
        )
        .await
        .unwrap();
        let statuses: Vec<_> = r.anchors.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            vec![AnchorStatus::Matched, AnchorStatus::Truncated]
        );
        assert!(r.summary().contains("--expect-head recorded seq 6"));
    }

    #[test]
    fn anchor_parsing() {
        let h = "AB".repeat(32);
        assert_eq!(
            parse_anchor("x", &format!("12:{h}")).unwrap(),
            Anchor {
                source: "x".into(),
                seq: 12,
                hash: Some(h.to_ascii_lowercase())
            }
        );
        assert_eq!(parse_anchor("x", "7").unwrap().hash, None);
        for (bad, why) in [
            ("", "expected SEQ or SEQ:HASH"),
            ("abc", "expected SEQ or SEQ:HASH"),
            ("-1", "at least 1"),
            ("0", "at least 1"),
            ("1:", "64 hexadecimal digits"),
            ("1:abc", "64 hexadecimal digits"),
            (&format!("1:{}", "g".repeat(64)), "64 hexadecimal digits"),
            (&format!("1:{h}0"), "64 hexadecimal digits"),
            (":00", "expected SEQ or SEQ:HASH"),
        ] {
            let e = parse_anchor("x", bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn chain_breaks_name_the_seq_and_kind() {
        let b = ChainBreak::from_error(&AuditChainError::SeqGap {
            expected: 3,
            found: 4,
        });
        assert_eq!((b.seq, b.kind.as_str()), (4, "seq_gap"));
        let b = ChainBreak::from_error(&AuditChainError::HashMismatch {
            seq: 9,
            stored: "a".into(),
            computed: "b".into(),
        });
        assert_eq!((b.seq, b.kind.as_str()), (9, "hash_mismatch"));
        assert!(b.message.contains("seq 9 was modified"));
    }

    #[tokio::test]
    async fn cursor_journal_round_trip_and_corruption() {
        let (_d, store) = store_with(0).await;
        assert_eq!(load_nats_cursor(store.as_ref()).await.unwrap(), None);
        let pos = AuditPosition {
            seq: 3,
            hash: "c".repeat(64),
        };
        store
            .save_journal(NATS_CURSOR_JOURNAL, &serde_json::to_vec(&pos).unwrap())
            .await
            .unwrap();
        assert_eq!(load_nats_cursor(store.as_ref()).await.unwrap(), Some(pos));
        store
            .save_journal(NATS_CURSOR_JOURNAL, b"not json")
            .await
            .unwrap();
        let e = load_nats_cursor(store.as_ref()).await.unwrap_err();
        assert!(e.to_string().contains("audit_nats_cursor"), "{e}");
    }
}
