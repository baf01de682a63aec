//! JWT-SVIDs on the Workload API: the per-identity, per-audience-set token cache, and the
//! conversions `ValidateJWTSVID` needs.
//!
//! X509-SVIDs are pushed into the [`Cache`](crate::cache::Cache) ahead of time; JWT-SVIDs depend
//! on the audience a workload asks for, so they are minted on demand by the issuer
//! ([`SvidIssuer`]) and kept here, keyed by entry ID and the sorted, de-duplicated audience set.
//! A cached token is served while less than half of its lifetime has passed; after that the
//! next request mints a new one (renewal at half-life, like SPIRE's agent). Concurrent requests
//! for the same key wait for one mint (single flight), so a burst of workloads asking for the
//! same token costs the issuer one signature.
//!
//! The cache is bounded ([`MAX_CACHED_TOKENS`]): when full, tokens past half-life are dropped
//! first, then the oldest. (A token of a deleted entry is never served again, since lookups start
//! from the caller's current SVIDs; it goes at the next eviction.) Tokens are bearer credentials:
//! kept in zeroizing strings, never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prost_types::value::Kind;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{IssuerFailure, MintedJwtSvid, SvidIssuer};
use crate::cache::CachedSvid;

/// Most tokens kept at once (a JWT-SVID is a few hundred bytes: a few MB at most).
pub const MAX_CACHED_TOKENS: usize = 16_384;

/// Clock skew tolerated by `ValidateJWTSVID` on `exp`, `nbf` and `iat`.
pub const VALIDATION_LEEWAY: Duration = Duration::from_secs(30);

/// The longest audience value accepted (the issuer's limit).
pub const MAX_AUDIENCE_LEN: usize = 1024;

/// The most audience values in one request (the issuer's limit).
pub const MAX_AUDIENCES: usize = 32;

/// Cache key: entry ID and the normalized audience set.
type Key = (String, Box<[String]>);

/// One cache slot: locked while its token is minted, so that concurrent callers share the mint.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<MintedJwtSvid>>>>;

/// The agent's JWT-SVID cache (cheap to share behind an `Arc`).
#[derive(Default)]
pub struct JwtSvidCache {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl std::fmt::Debug for JwtSvidCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvidCache")
            .field("tokens", &self.len())
            .finish()
    }
}

/// Whether `svid` may still be served at `now`: less than half of its lifetime has passed.
fn is_fresh(svid: &MintedJwtSvid, now: SystemTime) -> bool {
    let lifetime = svid
        .expires_at
        .duration_since(svid.issued_at)
        .unwrap_or_default();
    now < svid.issued_at + lifetime / 2 && now < svid.expires_at
}

/// Sorts and de-duplicates the requested audiences, or says why the request is invalid.
pub fn normalize_audience(audience: &[String]) -> Result<Box<[String]>, String> {
    if audience.is_empty() {
        return Err("audience must be specified".into());
    }
    if audience.iter().any(String::is_empty) {
        return Err("an audience value is empty".into());
    }
    if audience.iter().any(|a| a.len() > MAX_AUDIENCE_LEN) {
        return Err(format!(
            "an audience value is longer than {MAX_AUDIENCE_LEN} bytes"
        ));
    }
    let mut v = audience.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.len() > MAX_AUDIENCES {
        return Err(format!(
            "{} audience values; at most {MAX_AUDIENCES}",
            v.len()
        ));
    }
    Ok(v.into_boxed_slice())
}

impl JwtSvidCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The JWT-SVID of `svid`'s entry for `audience` (normalized by [`normalize_audience`]): the
    /// cached one while fresh, else one minted by `issuer` now (and cached).
    pub async fn get(
        &self,
        issuer: &dyn SvidIssuer,
        svid: &CachedSvid,
        audience: &[String],
    ) -> Result<Arc<MintedJwtSvid>, IssuerFailure> {
        let entry_id = svid.entry_id.to_string();
        let key: Key = (entry_id, audience.into());
        let slot = {
            let mut slots = self.lock();
            if let Some(slot) = slots.get(&key) {
                slot.clone()
            } else {
                if slots.len() >= MAX_CACHED_TOKENS {
                    evict(&mut slots, SystemTime::now());
                }
                slots.entry(key.clone()).or_default().clone()
            }
        };
        let mut held = slot.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = held.as_ref()
            && is_fresh(cached, now)
            // An entry whose SPIFFE ID changed needs a token with the new `sub`.
            && cached.spiffe_id == svid.spiffe_id
        {
            return Ok(cached.clone());
        }
        let minted = issuer
            .mint_jwt_svid(&key.0, &key.1)
            .await
            .inspect_err(|_| {
                // Nothing usable for this key: forget the slot unless another token lives in it.
                if held.is_none() {
                    self.lock().remove(&key);
                }
            })?;
        if minted.spiffe_id != svid.spiffe_id {
            return Err(IssuerFailure::Unavailable(format!(
                "the issuer minted a JWT-SVID for {} instead of {}",
                minted.spiffe_id, svid.spiffe_id
            )));
        }
        let minted = Arc::new(minted);
        *held = Some(minted.clone());
        Ok(minted)
    }
}

/// Makes room in a full cache: drops every slot whose token is stale or absent (and not being
/// minted), then, if still full, the slots holding the oldest tokens.
fn evict(slots: &mut HashMap<Key, Slot>, now: SystemTime) {
    slots.retain(|_, slot| match slot.try_lock() {
        Ok(held) => held.as_ref().is_some_and(|t| is_fresh(t, now)),
        // Being minted right now: keep.
        Err(_) => true,
    });
    if slots.len() < MAX_CACHED_TOKENS {
        return;
    }
    let mut by_age: Vec<(SystemTime, Key)> = slots
        .iter()
        .filter_map(|(k, slot)| {
            let held = slot.try_lock().ok()?;
            Some((held.as_ref()?.issued_at, k.clone()))
        })
        .collect();
    by_age.sort_unstable_by_key(|(t, _)| *t);
    let excess = slots.len() + 1 - MAX_CACHED_TOKENS;
    for (_, k) in by_age.into_iter().take(excess.max(MAX_CACHED_TOKENS / 8)) {
        slots.remove(&k);
    }
}

impl MintedJwtSvid {
    /// A minted token.
    pub fn new(
        spiffe_id: signet_spiffe::SpiffeId,
        token: String,
        issued_at: SystemTime,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            spiffe_id,
            token: Zeroizing::new(token),
            issued_at,
            expires_at,
        }
    }
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles, as the protobuf JSON
/// mapping does).
pub fn json_to_proto(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_object_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_object_to_struct(map: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_proto(v)))
            .collect(),
    }
}

/// A `google.protobuf.Value` as JSON (the inverse of [`json_to_proto`]; a number that is a whole
/// number of at most 2^53 becomes an integer again).
pub fn proto_to_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if n.fract() == 0.0 && n.abs() <= EXACT {
                // Exact: a whole f64 within 2^53 converts without loss.
                #[allow(clippy::cast_possible_truncation)]
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(proto_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json_object(s)),
    }
}

/// A `google.protobuf.Struct` as a JSON object.
pub fn struct_to_json_object(s: &prost_types::Struct) -> serde_json::Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), proto_to_json(v)))
        .collect()
}

/// Test helpers.
#[cfg(test)]
pub(crate) mod testing {
    use async_trait::async_trait;

    use super::super::{IssuerFailure, MintedJwtSvid, SvidIssuer};

    /// An issuer that is never reachable.
    pub(crate) struct NoIssuer;

    #[async_trait]
    impl SvidIssuer for NoIssuer {
        async fn mint_jwt_svid(
            &self,
            _entry_id: &str,
            _audience: &[String],
        ) -> Result<MintedJwtSvid, IssuerFailure> {
            Err(IssuerFailure::Unavailable("no issuer in this test".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::cache::testing::{ca, svid};

    /// Counts mints; tokens live `ttl` from now.
    struct Counting {
        mints: AtomicUsize,
        ttl: Duration,
        issued_ago: Duration,
    }

    #[async_trait]
    impl SvidIssuer for Counting {
        async fn mint_jwt_svid(
            &self,
            entry_id: &str,
            audience: &[String],
        ) -> Result<MintedJwtSvid, IssuerFailure> {
            let n = self.mints.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if entry_id.starts_with("fail-") {
                return Err(IssuerFailure::Refused("entry not authorized".into()));
            }
            let now = SystemTime::now() - self.issued_ago;
            let td = signet_spiffe::TrustDomain::new("example.org").unwrap();
            Ok(MintedJwtSvid::new(
                td.spiffe_id(&format!("/{entry_id}")).unwrap(),
                format!("token-{n}-{}", audience.join(",")),
                now,
                now + self.ttl,
            ))
        }
    }

    fn issuer(ttl: u64, issued_ago: u64) -> Counting {
        Counting {
            mints: AtomicUsize::new(0),
            ttl: Duration::from_secs(ttl),
            issued_ago: Duration::from_secs(issued_ago),
        }
    }

    fn aud(a: &[&str]) -> Box<[String]> {
        normalize_audience(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn audiences_are_sorted_deduplicated_and_checked() {
        assert_eq!(&*aud(&["b", "a", "b"]), ["a", "b"]);
        let norm =
            |a: &[&str]| normalize_audience(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(norm(&[]).unwrap_err(), "audience must be specified");
        assert!(norm(&["a", ""]).unwrap_err().contains("empty"));
        assert!(norm(&[&"x".repeat(1025)]).unwrap_err().contains("1024"));
        let many: Vec<String> = (0..33).map(|i| i.to_string()).collect();
        assert!(
            normalize_audience(&many)
                .unwrap_err()
                .contains("at most 32")
        );
    }

    #[tokio::test]
    async fn a_token_is_reused_until_half_life_then_renewed() {
        let ca = ca("example.org");
        let s = svid(&ca, "e1", "/e1", &["k:v"], "");
        let cache = JwtSvidCache::new();
        // Issued 10 s ago, lives 60 s: fresh.
        let fresh = issuer(60, 10);
        let a = cache.get(&fresh, &s, &aud(&["x"])).await.unwrap();
        let b = cache.get(&fresh, &s, &aud(&["x"])).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(fresh.mints.load(Ordering::SeqCst), 1);
        // Another audience set is another token.
        let c = cache.get(&fresh, &s, &aud(&["x", "y"])).await.unwrap();
        assert_ne!(*c.token, *a.token);
        assert_eq!(cache.len(), 2);

        // Issued 40 s ago, lives 60 s: past half-life, so every request mints again.
        let stale = issuer(60, 40);
        let cache = JwtSvidCache::new();
        cache.get(&stale, &s, &aud(&["x"])).await.unwrap();
        cache.get(&stale, &s, &aud(&["x"])).await.unwrap();
        assert_eq!(stale.mints.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_mint() {
        let ca = ca("example.org");
        let s = svid(&ca, "e1", "/e1", &["k:v"], "");
        let cache = JwtSvidCache::new();
        let issuer = issuer(300, 0);
        let audience = aud(&["x"]);
        let all =
            futures::future::join_all((0..16).map(|_| cache.get(&issuer, &s, &audience))).await;
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(issuer.mints.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_a_changed_spiffe_id_mints_again() {
        let ca = ca("example.org");
        let cache = JwtSvidCache::new();
        let issuer = issuer(300, 0);
        let refused = svid(&ca, "fail-1", "/fail-1", &["k:v"], "");
        let err = cache
            .get(&issuer, &refused, &aud(&["x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, IssuerFailure::Refused(_)));
        assert!(cache.is_empty());

        // The issuer answers for /e1 while the cached SVID now says /moved: refused, not served.
        let moved = svid(&ca, "e1", "/moved", &["k:v"], "");
        let err = cache.get(&issuer, &moved, &aud(&["x"])).await.unwrap_err();
        assert!(matches!(err, IssuerFailure::Unavailable(m) if m.contains("instead of")));

        let s = svid(&ca, "e1", "/e1", &["k:v"], "");
        cache.get(&issuer, &s, &aud(&["x"])).await.unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_drops_stale_tokens_first_then_the_oldest() {
        let td = signet_spiffe::TrustDomain::new("example.org").unwrap();
        let now = SystemTime::now();
        let token = |issued_ago: u64| {
            let issued = now - Duration::from_secs(issued_ago);
            let t = MintedJwtSvid::new(
                td.spiffe_id("/a").unwrap(),
                "t".into(),
                issued,
                issued + Duration::from_secs(100),
            );
            Arc::new(tokio::sync::Mutex::new(Some(Arc::new(t))))
        };
        let mut slots: HashMap<Key, Slot> = HashMap::new();
        for i in 0..MAX_CACHED_TOKENS {
            // Every tenth is stale (issued 60 s ago of 100 s).
            let ago = if i % 10 == 0 { 60 } else { (i % 40) as u64 };
            slots.insert((i.to_string(), Box::default()), token(ago));
        }
        evict(&mut slots, now);
        assert!(slots.len() < MAX_CACHED_TOKENS);
        assert!(slots.values().all(|s| {
            let held = s.try_lock().unwrap();
            is_fresh(held.as_ref().unwrap(), now)
        }));
        // All fresh: the oldest go.
        let mut slots: HashMap<Key, Slot> = (0..MAX_CACHED_TOKENS)
            .map(|i| ((i.to_string(), Box::default()), token((i % 40) as u64)))
            .collect();
        evict(&mut slots, now);
        assert!(slots.len() < MAX_CACHED_TOKENS);
        let oldest_left = slots
            .values()
            .map(|s| s.try_lock().unwrap().as_ref().unwrap().issued_at)
            .min()
            .unwrap();
        assert!(oldest_left > now - Duration::from_secs(39));
    }

    #[test]
    fn claims_convert_to_a_protobuf_struct() {
        let claims = serde_json::json!({
            "sub": "spiffe://example.org/a",
            "aud": ["x", "y"],
            "exp": 1_900_000_000,
            "nested": {"ok": true, "none": null},
        });
        let s = json_object_to_struct(claims.as_object().unwrap());
        let get = |k: &str| s.fields[k].kind.clone().unwrap();
        assert_eq!(
            get("sub"),
            Kind::StringValue("spiffe://example.org/a".into())
        );
        assert_eq!(get("exp"), Kind::NumberValue(1_900_000_000.0));
        let Kind::ListValue(l) = get("aud") else {
            panic!("aud is not a list")
        };
        assert_eq!(l.values.len(), 2);
        let Kind::StructValue(n) = get("nested") else {
            panic!("nested is not a struct")
        };
        assert_eq!(n.fields["ok"].kind, Some(Kind::BoolValue(true)));
        assert_eq!(n.fields["none"].kind, Some(Kind::NullValue(0)));
        // And back, integers included.
        assert_eq!(Value::Object(struct_to_json_object(&s)), claims);
        let half = json_to_proto(&serde_json::json!(1.5));
        assert_eq!(proto_to_json(&half), serde_json::json!(1.5));
    }
}
