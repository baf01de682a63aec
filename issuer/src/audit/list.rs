//! `audit list`: events in seq order, filtered by kind.

use signet_store::{AuditEvent, AuditFilter, Store, StoreError};

/// Most events one listing call returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Parses a kind filter: `delegation.hop` (exactly that kind), `delegation.*` (every kind that
/// starts with `delegation.`), or empty (every kind).
pub fn parse_kind_filter(kind: &str) -> Result<AuditFilter, String> {
    if kind.is_empty() {
        return Ok(AuditFilter::default());
    }
    if kind.len() > 256 {
        return Err("kind: longer than 256 bytes".to_owned());
    }
    if kind.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "kind {kind:?}: must not contain spaces or control characters"
        ));
    }
    match kind.strip_suffix('*') {
        Some(prefix) if prefix.contains('*') => Err(format!(
            "kind {kind:?}: `*` is only allowed at the end (e.g. delegation.*)"
        )),
        Some(prefix) => Ok(AuditFilter {
            kind: None,
            kind_prefix: Some(prefix.to_owned()),
        }),
        None if kind.contains('*') => Err(format!(
            "kind {kind:?}: `*` is only allowed at the end (e.g. delegation.*)"
        )),
        None => Ok(AuditFilter {
            kind: Some(kind.to_owned()),
            kind_prefix: None,
        }),
    }
}

/// Up to `limit` events (0 or above [`MAX_LIST_LIMIT`]: [`MAX_LIST_LIMIT`]) with `seq > after`
/// matching `filter`, and whether more may follow.
pub async fn list_events(
    store: &dyn Store,
    after: i64,
    limit: u32,
    filter: &AuditFilter,
) -> Result<(Vec<AuditEvent>, bool), StoreError> {
    let limit = if limit == 0 || limit > MAX_LIST_LIMIT {
        MAX_LIST_LIMIT
    } else {
        limit
    };
    let events = store
        .list_audit_events_matching(after.max(0), limit, filter)
        .await?;
    let more = events.len() == limit as usize;
    Ok((events, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_filters() {
        assert_eq!(parse_kind_filter(""), Ok(AuditFilter::default()));
        assert_eq!(
            parse_kind_filter("delegation.hop").unwrap().kind.as_deref(),
            Some("delegation.hop")
        );
        let f = parse_kind_filter("delegation.*").unwrap();
        assert_eq!(
            (f.kind, f.kind_prefix.as_deref()),
            (None, Some("delegation."))
        );
        assert_eq!(
            parse_kind_filter("*").unwrap().kind_prefix.as_deref(),
            Some("")
        );
        for (bad, why) in [
            ("a*b", "only allowed at the end"),
            ("*a*", "only allowed at the end"),
            ("a b", "spaces"),
            ("a\nb", "spaces or control"),
            (&"k".repeat(257), "longer than 256"),
        ] {
            let e = parse_kind_filter(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn listing_pages_and_filters() {
        let (_dir, store) = crate::audit::testing::temp_store().await;
        for kind in ["a.x", "b.y", "a.z", "a.x"] {
            store
                .append_audit_event(signet_store::NewAuditEvent {
                    kind: kind.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let seqs = |e: &[AuditEvent]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
        let all = AuditFilter::default();
        let (e, more) = list_events(store.as_ref(), 0, 0, &all).await.unwrap();
        assert_eq!((seqs(&e), more), (vec![1, 2, 3, 4], false));
        let (e, more) = list_events(store.as_ref(), 1, 2, &all).await.unwrap();
        assert_eq!((seqs(&e), more), (vec![2, 3], true));
        let (e, _) = list_events(store.as_ref(), -5, 0, &parse_kind_filter("a.*").unwrap())
            .await
            .unwrap();
        assert_eq!(seqs(&e), vec![1, 3, 4]);
        let (e, _) = list_events(store.as_ref(), 1, 0, &parse_kind_filter("a.x").unwrap())
            .await
            .unwrap();
        assert_eq!(seqs(&e), vec![4]);
    }
}
