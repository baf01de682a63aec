//! The audit RPCs (verify, trace, list): read-only views of the audit log.

use signet_proto::admin as pb;
use signet_store::{AuditEvent, Store, canonical_json};
use tonic::Status;

use super::convert;
use crate::audit::list::{list_events, parse_kind_filter};
use crate::audit::trace::{DelegationTrace, TraceError, trace_token};
use crate::audit::verify::{
    Anchor, VERIFY_PAGE_SIZE, VerifyReport, check_hash, load_nats_cursor, verify_log,
};

/// Source name of the NATS cursor anchor.
pub const NATS_CURSOR_SOURCE: &str = "NATS publisher cursor";
/// Source name of the anchor given in the request.
pub const EXPECT_HEAD_SOURCE: &str = "--expect-head";

pub(super) async fn verify(
    store: &dyn Store,
    r: pb::VerifyAuditLogRequest,
) -> Result<pb::VerifyAuditLogResponse, Status> {
    let mut anchors = Vec::new();
    match load_nats_cursor(store).await {
        Ok(Some(c)) if c.seq > 0 => anchors.push(Anchor {
            source: NATS_CURSOR_SOURCE.to_owned(),
            seq: c.seq,
            hash: Some(c.hash),
        }),
        Ok(_) => {}
        // A cursor that cannot be read is itself a finding, not an outage.
        Err(e) => {
            return Err(Status::data_loss(format!(
                "the NATS publisher cursor cannot be read: {e}"
            )));
        }
    }
    match (r.expect_head_seq, r.expect_head_hash.as_str()) {
        (None, "") => {}
        (None, _) => {
            return Err(Status::invalid_argument(
                "expect_head_hash needs expect_head_seq",
            ));
        }
        (Some(seq), hash) => {
            if seq < 1 {
                return Err(Status::invalid_argument(format!(
                    "expect_head_seq {seq}: must be at least 1"
                )));
            }
            let hash = match hash {
                "" => None,
                h => Some(
                    check_hash(h)
                        .map_err(|e| Status::invalid_argument(format!("expect_head_hash: {e}")))?,
                ),
            };
            anchors.push(Anchor {
                source: EXPECT_HEAD_SOURCE.to_owned(),
                seq,
                hash,
            });
        }
    }
    let report = verify_log(store, &anchors, VERIFY_PAGE_SIZE)
        .await
        .map_err(convert::store_status)?;
    Ok(verify_message(&report))
}

fn verify_message(r: &VerifyReport) -> pb::VerifyAuditLogResponse {
    pb::VerifyAuditLogResponse {
        ok: r.ok(),
        events: r.events,
        head: r.head.as_ref().map(|h| pb::AuditPosition {
            seq: h.seq,
            hash: h.hash.clone(),
        }),
        chain_break: r.chain_break.as_ref().map(|b| pb::AuditChainBreak {
            seq: b.seq,
            kind: b.kind.clone(),
            message: b.message.clone(),
        }),
        anchors: r
            .anchors
            .iter()
            .map(|a| pb::AuditAnchorCheck {
                source: a.source.clone(),
                seq: a.seq,
                hash: a.hash.clone().unwrap_or_default(),
                status: a.status.name().to_owned(),
                message: a.message.clone(),
            })
            .collect(),
        summary: r.summary(),
    }
}

pub(super) async fn trace(
    store: &dyn Store,
    delegation: Option<&crate::delegation::Delegation>,
    r: pb::TraceDelegationRequest,
) -> Result<pb::DelegationTrace, Status> {
    let (token_id, warning) = match (r.token_id.is_empty(), r.token.is_empty()) {
        (false, false) => {
            return Err(Status::invalid_argument("give token_id or token, not both"));
        }
        (true, false) => crate::delegation::token_id_of(&r.token, delegation)
            .map_err(|e| Status::invalid_argument(format!("token: {e}")))?,
        // An empty id is refused by the trace itself, naming it.
        _ => (r.token_id, None),
    };
    match trace_token(store, &token_id).await {
        Ok(mut t) => {
            if let Some(w) = warning {
                t.warnings.insert(0, w);
            }
            Ok(trace_message(t))
        }
        Err(e @ TraceError::InvalidTokenId(_)) => Err(Status::invalid_argument(e.to_string())),
        Err(e @ TraceError::UnknownToken { .. }) => Err(Status::not_found(e.to_string())),
        Err(TraceError::Store(e)) => Err(convert::store_status(e)),
    }
}

fn trace_message(t: DelegationTrace) -> pb::DelegationTrace {
    pb::DelegationTrace {
        token_id: t.token_id,
        subject: t.subject,
        holder: t.holder.unwrap_or_default(),
        complete: t.complete,
        hops: t
            .hops
            .into_iter()
            .map(|h| pb::DelegationHop {
                seq: h.seq,
                hash: h.hash,
                kind: h.kind,
                time_ms: h.time_ms,
                actor: h.actor,
                authorized_by: h.authorized_by.unwrap_or_default(),
                subject: h.subject,
                token_id: h.token_id,
                parent_token_id: h.parent_token_id.unwrap_or_default(),
                chain: h.chain,
                holder: h.holder.unwrap_or_default(),
                rights: h.rights,
                revocation_ids: h.revocation_ids,
                expires_at: h.expires_at,
                root_key_id: h.root_key_id,
                related: h
                    .related
                    .into_iter()
                    .map(|r| pb::DelegationRelatedEvent {
                        seq: r.seq,
                        hash: r.hash,
                        kind: r.kind,
                        time_ms: r.time_ms,
                        actor: r.actor,
                        outcome: r.outcome,
                        reason: r.reason.unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        warnings: t.warnings,
    }
}

pub(super) async fn list(
    store: &dyn Store,
    r: pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, Status> {
    if r.after < 0 {
        return Err(Status::invalid_argument(format!(
            "after {}: must be 0 or a seq",
            r.after
        )));
    }
    let filter = parse_kind_filter(&r.kind).map_err(Status::invalid_argument)?;
    let (events, more) = list_events(store, r.after, r.limit, &filter)
        .await
        .map_err(convert::store_status)?;
    Ok(pb::ListAuditEventsResponse {
        events: events.into_iter().map(event_message).collect(),
        more,
    })
}

fn event_message(e: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: e.seq,
        time_ms: e.event.time_ms,
        details_json: canonical_json(&e.event.details),
        kind: e.event.kind,
        actor: e.event.actor,
        subject: e.event.subject,
        outcome: e.event.outcome,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}
