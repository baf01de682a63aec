//! The agent's cache of credentials minted on demand by the issuer (JWT-SVIDs per entry and
//! audience set, WIT-SVIDs per entry), shared by every workload entitled to them.
//!
//! A cached token is served while less than half of its lifetime has passed; after that the next
//! request mints a new one (renewal at half-life, like SPIRE's agent). Concurrent requests for the
//! same key wait for one mint (single flight), so a burst of workloads asking for the same token
//! costs the issuer one signature. When a renewal fails (the issuer is unreachable) a token that
//! has not expired yet is still served, and the failure is logged; only when nothing valid is held
//! does the request fail.
//!
//! The cache is bounded: when full, tokens past half-life are dropped first, then the oldest. (A
//! token of a deleted entry is never served again, since lookups start from the caller's current
//! SVIDs; it goes at the next eviction.) Tokens are bearer credentials: their types keep them in
//! zeroizing strings, and nothing here logs them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use signet_spiffe::SpiffeId;

use super::IssuerFailure;

/// What the cache needs to know of a token.
pub trait Token: Send + Sync {
    /// Its subject.
    fn spiffe_id(&self) -> &SpiffeId;
    /// Its `iat`.
    fn issued_at(&self) -> SystemTime;
    /// Its `exp`.
    fn expires_at(&self) -> SystemTime;

    /// When it should be replaced: half of its lifetime after issuance.
    fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .expires_at()
            .duration_since(self.issued_at())
            .unwrap_or_default();
        self.issued_at() + lifetime / 2
    }

    /// Whether it may be served at `now` without renewing it.
    fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.renew_at() && now < self.expires_at()
    }
}

/// One slot: locked while its token is minted, so that concurrent callers share the mint.
type Slot<T> = Arc<tokio::sync::Mutex<Option<Arc<T>>>>;

/// A bounded, single-flight cache of minted tokens (cheap to share behind an `Arc`).
pub struct TokenCache<K, T> {
    slots: Mutex<HashMap<K, Slot<T>>>,
    capacity: usize,
    /// What the tokens are, for messages (`JWT-SVID`, `WIT-SVID`).
    kind: &'static str,
}

impl<K, T> std::fmt::Debug for TokenCache<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("kind", &self.kind)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, T: Token> TokenCache<K, T> {
    /// An empty cache of at most `capacity` tokens of `kind`.
    pub fn new(kind: &'static str, capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            kind,
        }
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<T>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token of `key` for `spiffe_id`: the cached one while fresh, else one made by `mint`
    /// now (and cached); if minting fails, the cached one while it has not expired.
    pub async fn get<F, Fut>(
        &self,
        key: K,
        spiffe_id: &SpiffeId,
        mint: F,
    ) -> Result<Arc<T>, IssuerFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, IssuerFailure>>,
    {
        let slot = {
            let mut slots = self.lock();
            if let Some(slot) = slots.get(&key) {
                slot.clone()
            } else {
                if slots.len() >= self.capacity {
                    self.evict(&mut slots, SystemTime::now());
                }
                slots.entry(key.clone()).or_default().clone()
            }
        };
        let mut held = slot.lock().await;
        // An entry whose SPIFFE ID changed needs a token with the new `sub`.
        let usable = held
            .as_ref()
            .filter(|t| t.spiffe_id() == spiffe_id)
            .cloned();
        if let Some(cached) = &usable
            && cached.is_fresh(SystemTime::now())
        {
            return Ok(cached.clone());
        }
        let minted = mint().await.and_then(|t| {
            if t.spiffe_id() == spiffe_id {
                Ok(t)
            } else {
                Err(IssuerFailure::Unavailable(format!(
                    "the issuer minted a {} for {} instead of {spiffe_id}",
                    self.kind,
                    t.spiffe_id()
                )))
            }
        });
        match minted {
            Ok(t) => {
                let t = Arc::new(t);
                *held = Some(t.clone());
                Ok(t)
            }
            Err(e) => match usable.filter(|t| SystemTime::now() < t.expires_at()) {
                Some(still_valid) => {
                    tracing::warn!(spiffe_id = %spiffe_id, error = %e, "cannot renew a {}; serving the current one until it expires", self.kind);
                    Ok(still_valid)
                }
                None => {
                    if held.is_none() {
                        // Nothing usable for this key: forget the slot.
                        drop(held);
                        self.lock().remove(&key);
                    }
                    Err(e)
                }
            },
        }
    }

    /// Makes room in a full cache: drops every slot whose token is stale or absent (and not
    /// being minted), then, if still full, the slots holding the oldest tokens (an eighth of the
    /// capacity at least, so that eviction is rare).
    fn evict(&self, slots: &mut HashMap<K, Slot<T>>, now: SystemTime) {
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(held) => held.as_ref().is_some_and(|t| t.is_fresh(now)),
            // Being minted right now: keep.
            Err(_) => true,
        });
        if slots.len() < self.capacity {
            return;
        }
        let mut by_age: Vec<(SystemTime, K)> = slots
            .iter()
            .filter_map(|(k, slot)| {
                let held = slot.try_lock().ok()?;
                Some((held.as_ref()?.issued_at(), k.clone()))
            })
            .collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        let excess = slots.len() + 1 - self.capacity;
        for (_, k) in by_age.into_iter().take(excess.max(self.capacity / 8)) {
            slots.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct T {
        id: SpiffeId,
        issued: SystemTime,
        expires: SystemTime,
        n: usize,
    }

    impl Token for T {
        fn spiffe_id(&self) -> &SpiffeId {
            &self.id
        }
        fn issued_at(&self) -> SystemTime {
            self.issued
        }
        fn expires_at(&self) -> SystemTime {
            self.expires
        }
    }

    fn id(path: &str) -> SpiffeId {
        signet_spiffe::TrustDomain::new("example.org")
            .unwrap()
            .spiffe_id(path)
            .unwrap()
    }

    /// Mints tokens for `path` issued `ago` seconds ago, living `ttl` seconds; counts mints.
    struct Minter {
        mints: AtomicUsize,
        ago: u64,
        ttl: u64,
        path: &'static str,
    }

    impl Minter {
        fn new(ago: u64, ttl: u64) -> Self {
            Self {
                mints: AtomicUsize::new(0),
                ago,
                ttl,
                path: "/a",
            }
        }

        async fn mint(&self) -> Result<T, IssuerFailure> {
            let n = self.mints.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let issued = SystemTime::now() - Duration::from_secs(self.ago);
            Ok(T {
                id: id(self.path),
                issued,
                expires: issued + Duration::from_secs(self.ttl),
                n,
            })
        }
    }

    async fn down() -> Result<T, IssuerFailure> {
        Err(IssuerFailure::Unavailable("connection refused".into()))
    }

    #[tokio::test]
    async fn a_token_is_reused_until_half_life_then_renewed() {
        let cache = TokenCache::<&str, T>::new("token", 16);
        let fresh = Minter::new(10, 60);
        let a = cache.get("k", &id("/a"), || fresh.mint()).await.unwrap();
        let b = cache.get("k", &id("/a"), || fresh.mint()).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(fresh.mints.load(Ordering::SeqCst), 1);
        // Past half-life: every request mints again.
        let stale = Minter::new(40, 60);
        let cache = TokenCache::<&str, T>::new("token", 16);
        cache.get("k", &id("/a"), || stale.mint()).await.unwrap();
        let second = cache.get("k", &id("/a"), || stale.mint()).await.unwrap();
        assert_eq!(second.n, 1);
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_mint() {
        let cache = TokenCache::<&str, T>::new("token", 16);
        let m = Minter::new(0, 300);
        let a = id("/a");
        let all = futures::future::join_all((0..16).map(|_| cache.get("k", &a, || m.mint()))).await;
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(m.mints.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_renewal_serves_the_unexpired_token_and_nothing_else() {
        let cache = TokenCache::<&str, T>::new("token", 16);
        // Nothing held: the failure is the answer, and no slot stays behind.
        let err = cache.get("k", &id("/a"), down).await.unwrap_err();
        assert!(matches!(err, IssuerFailure::Unavailable(_)));
        assert!(cache.is_empty());
        // A stale but unexpired token is served while the issuer is down.
        let stale = Minter::new(40, 60);
        let held = cache.get("k", &id("/a"), || stale.mint()).await.unwrap();
        let served = cache.get("k", &id("/a"), down).await.unwrap();
        assert!(Arc::ptr_eq(&held, &served));
        // An expired one is not.
        let expired = Minter::new(70, 60);
        let cache = TokenCache::<&str, T>::new("token", 16);
        cache.get("k", &id("/a"), || expired.mint()).await.unwrap();
        assert!(cache.get("k", &id("/a"), down).await.is_err());
    }

    #[tokio::test]
    async fn a_changed_spiffe_id_mints_again_and_a_wrong_subject_is_refused() {
        let cache = TokenCache::<&str, T>::new("token", 16);
        let m = Minter::new(0, 300);
        cache.get("k", &id("/a"), || m.mint()).await.unwrap();
        // The entry now has another SPIFFE ID, and the issuer still answers for /a.
        let err = cache
            .get("k", &id("/moved"), || m.mint())
            .await
            .unwrap_err();
        assert!(matches!(err, IssuerFailure::Unavailable(msg) if msg.contains("instead of")));
        assert_eq!(m.mints.load(Ordering::SeqCst), 2);
        // The token of the old ID is not served for the new one, even with the issuer down.
        assert!(cache.get("k", &id("/moved"), down).await.is_err());
    }

    #[tokio::test]
    async fn a_full_cache_drops_stale_tokens_first_then_the_oldest() {
        let capacity = 64;
        let cache = TokenCache::<usize, T>::new("token", capacity);
        for i in 0..capacity {
            // Every fourth one is stale (issued 40 s ago of 60 s).
            let m = Minter::new(if i % 4 == 0 { 40 } else { (i % 20) as u64 }, 60);
            cache.get(i, &id("/a"), || m.mint()).await.unwrap();
        }
        assert_eq!(cache.len(), capacity);
        let m = Minter::new(0, 60);
        cache.get(capacity, &id("/a"), || m.mint()).await.unwrap();
        let now = SystemTime::now();
        let left: Vec<SystemTime> = cache
            .lock()
            .values()
            .map(|s| s.try_lock().unwrap().as_ref().unwrap().issued)
            .collect();
        assert_eq!(
            left.len(),
            capacity - capacity / 4 + 1,
            "the stale ones went"
        );
        assert!(left.iter().all(|t| *t > now - Duration::from_secs(30)));

        // All fresh: the oldest eighth goes.
        let cache = TokenCache::<usize, T>::new("token", capacity);
        for i in 0..capacity {
            let m = Minter::new((i % 20) as u64, 60);
            cache.get(i, &id("/a"), || m.mint()).await.unwrap();
        }
        cache.get(capacity, &id("/a"), || m.mint()).await.unwrap();
        assert_eq!(cache.len(), capacity - capacity / 8 + 1);
        let oldest = cache
            .lock()
            .values()
            .map(|s| s.try_lock().unwrap().as_ref().unwrap().issued)
            .min()
            .unwrap();
        assert!(oldest > SystemTime::now() - Duration::from_secs(19));
    }
}
