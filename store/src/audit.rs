//! The audit log's hash chain: canonical form of an event, its hash, and chain verification.
//!
//! Each stored event carries `prev_hash` (the `hash` of the event before it, [`GENESIS_HASH`] for
//! the first) and `hash = SHA-256(prev_hash || canonical_json(event))`, where `prev_hash` enters
//! as its 64 lowercase-hex ASCII characters and the canonical JSON is described in
//! [`canonical_event_json`]. `docs/datastore.md` documents the exact form for external auditors.

use crate::{AuditEvent, NewAuditEvent};
use serde_json::Value;

/// `prev_hash` of the first event of the log: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why an audit chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditChainError {
    /// An event is missing (deleted row) or out of order: `seq` must grow by exactly one.
    #[error(
        "audit chain broken at seq {found}: expected seq {expected} (an event was deleted or reordered)"
    )]
    SeqGap {
        /// The seq that should have come next.
        expected: i64,
        /// The seq found instead.
        found: i64,
    },
    /// An event does not link to the hash of the event before it.
    #[error(
        "audit chain broken at seq {seq}: prev_hash {found} does not match the previous event's hash {expected}"
    )]
    BrokenLink {
        /// The event whose `prev_hash` is wrong.
        seq: i64,
        /// The previous event's hash (or [`GENESIS_HASH`]).
        expected: String,
        /// The stored `prev_hash`.
        found: String,
    },
    /// An event's content does not match its stored hash (the row was edited).
    #[error("audit event seq {seq} was modified: stored hash {stored}, recomputed {computed}")]
    HashMismatch {
        /// The edited event.
        seq: i64,
        /// The hash stored with the event.
        stored: String,
        /// The hash of the event's current content.
        computed: String,
    },
}

/// The canonical JSON of an event, the input of its hash (after `prev_hash`).
///
/// It is the JSON object `{"actor","details","kind","outcome","subject","time_ms"}` with:
/// object keys (at every depth, including inside `details`) sorted by their UTF-8 bytes; no
/// whitespace; strings escaped only where JSON requires it (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
/// `\t`, other characters below U+0020 as `\u00xx` with lowercase hex), everything else literal
/// UTF-8; integers in plain decimal; other numbers in the shortest form that reads back to the same
/// `f64`. For data without fractional numbers this equals Python's
/// `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
pub fn canonical_event_json(event: &NewAuditEvent) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"actor\":");
    push_string(&mut out, &event.actor);
    out.push_str(",\"details\":");
    push_canonical(&mut out, &event.details);
    out.push_str(",\"kind\":");
    push_string(&mut out, &event.kind);
    out.push_str(",\"outcome\":");
    push_string(&mut out, &event.outcome);
    out.push_str(",\"subject\":");
    push_string(&mut out, &event.subject);
    out.push_str(",\"time_ms\":");
    out.push_str(&event.time_ms.to_string());
    out.push('}');
    out
}

/// The canonical JSON of any value (see [`canonical_event_json`] for the rules).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    push_canonical(&mut out, value);
    out
}

fn push_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => push_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map may preserve insertion order if another crate in
            // the build enables its `preserve_order` feature.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(out, key);
                out.push(':');
                push_canonical(out, item);
            }
            out.push('}');
        }
    }
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `SHA-256(prev_hash || canonical_event_json(event))` in lowercase hex, where `prev_hash` is
/// taken as the ASCII bytes of its lowercase-hex form.
pub fn audit_hash(prev_hash: &str, event: &NewAuditEvent) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(canonical_event_json(event).as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// Verifies a complete log (its first event must be seq 1 with [`GENESIS_HASH`] as `prev_hash`):
/// consecutive seqs, each `prev_hash` equal to the previous `hash`, each `hash` recomputed.
/// An empty slice verifies. Truncation of the newest events cannot be detected from the log alone:
/// compare the last hash with one recorded elsewhere.
pub fn verify_audit_chain(events: &[AuditEvent]) -> Result<(), AuditChainError> {
    verify_audit_chain_after(0, GENESIS_HASH, events)
}

/// Verifies a segment of the log that continues after the event (`after_seq`, `after_hash`)
/// already verified (use `0` and [`GENESIS_HASH`] for the start of the log).
pub fn verify_audit_chain_after(
    after_seq: i64,
    after_hash: &str,
    events: &[AuditEvent],
) -> Result<(), AuditChainError> {
    let mut expected_seq = after_seq.saturating_add(1);
    let mut prev_hash = after_hash;
    for event in events {
        if event.seq != expected_seq {
            return Err(AuditChainError::SeqGap {
                expected: expected_seq,
                found: event.seq,
            });
        }
        if event.prev_hash != prev_hash {
            return Err(AuditChainError::BrokenLink {
                seq: event.seq,
                expected: prev_hash.to_owned(),
                found: event.prev_hash.clone(),
            });
        }
        let computed = audit_hash(&event.prev_hash, &event.event);
        if computed != event.hash {
            return Err(AuditChainError::HashMismatch {
                seq: event.seq,
                stored: event.hash.clone(),
                computed,
            });
        }
        prev_hash = &event.hash;
        expected_seq = expected_seq.saturating_add(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vector_event() -> NewAuditEvent {
        NewAuditEvent {
            time_ms: 1_700_000_000_123,
            kind: "entry.create".into(),
            actor: "admin-socket:uid=0".into(),
            subject: "spiffe://example.org/web".into(),
            outcome: "ok".into(),
            details: json!({
                "selectors": ["unix:uid:1000"],
                "b": {"z": 1, "a": [true, null, -7]},
                "a\"q": "tab\there é/\u{1}",
            }),
        }
    }

    #[test]
    fn canonical_form_matches_documented_vector() {
        assert_eq!(
            canonical_event_json(&vector_event()),
            r#"{"actor":"admin-socket:uid=0","details":{"a\"q":"tab\there é/\u0001","b":{"a":[true,null,-7],"z":1},"selectors":["unix:uid:1000"]},"kind":"entry.create","outcome":"ok","subject":"spiffe://example.org/web","time_ms":1700000000123}"#
        );
    }

    #[test]
    fn hash_matches_documented_vector() {
        // Recomputed independently with Python:
        //   s = json.dumps(ev, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        //   hashlib.sha256(("0" * 64 + s).encode()).hexdigest()
        assert_eq!(
            audit_hash(GENESIS_HASH, &vector_event()),
            "3f8d321f00bd76ecddbd09c2618dd0c120ddbd7a1cb5ca43611e7f15e11ceb44"
        );
    }

    #[test]
    fn canonical_json_sorts_nested_keys_bytewise() {
        let v = json!({"b": 1, "B": 2, "é": 3, "a": {"y": [], "x": {}}});
        assert_eq!(
            canonical_json(&v),
            r#"{"B":2,"a":{"x":{},"y":[]},"b":1,"é":3}"#
        );
    }

    #[test]
    fn canonical_json_round_trips_through_text() {
        let v = json!({"f": 0.1, "big": 1e300, "neg": -0.5, "i": u64::MAX, "s": "\u{7f}"});
        let text = canonical_json(&v);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical_json(&back), text);
    }

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for i in 0..n {
            let event = NewAuditEvent {
                time_ms: i as i64,
                kind: "k".into(),
                actor: "a".into(),
                subject: format!("s{i}"),
                outcome: "ok".into(),
                details: json!({"i": i}),
            };
            let hash = audit_hash(&prev, &event);
            out.push(AuditEvent {
                seq: i as i64 + 1,
                event,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        out
    }

    #[test]
    fn verifies_good_chain_and_segments() {
        let c = chain(5);
        assert_eq!(verify_audit_chain(&c), Ok(()));
        assert_eq!(verify_audit_chain(&[]), Ok(()));
        assert_eq!(verify_audit_chain_after(2, &c[1].hash, &c[2..]), Ok(()));
    }

    #[test]
    fn detects_edit_deletion_and_broken_link() {
        let mut edited = chain(4);
        edited[2].event.outcome = "denied".into();
        assert!(matches!(
            verify_audit_chain(&edited),
            Err(AuditChainError::HashMismatch { seq: 3, .. })
        ));

        let mut deleted = chain(4);
        deleted.remove(1);
        assert_eq!(
            verify_audit_chain(&deleted),
            Err(AuditChainError::SeqGap {
                expected: 2,
                found: 3
            })
        );

        let mut deleted_first = chain(3);
        deleted_first.remove(0);
        assert!(matches!(
            verify_audit_chain(&deleted_first),
            Err(AuditChainError::SeqGap { expected: 1, .. })
        ));

        // Re-hashing an edited row is caught by the next row's link.
        let mut rehashed = chain(4);
        rehashed[1].event.subject = "other".into();
        rehashed[1].hash = audit_hash(&rehashed[1].prev_hash, &rehashed[1].event);
        assert!(matches!(
            verify_audit_chain(&rehashed),
            Err(AuditChainError::BrokenLink { seq: 3, .. })
        ));

        let mut wrong_genesis = chain(2);
        wrong_genesis[0].prev_hash = "1".repeat(64);
        assert!(matches!(
            verify_audit_chain(&wrong_genesis),
            Err(AuditChainError::BrokenLink { seq: 1, .. })
        ));
    }
}
