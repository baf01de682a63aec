//! The verifier's bounded cache of verified tokens (see `Verifier::with_signature_cache`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use biscuit_auth::Biscuit;

use crate::token::Chain;

/// The SHA-256 of a token's text.
pub(crate) type Key = [u8; 32];

/// What is known of a token once its signatures verified and its chain was read: nothing that
/// depends on a request, the time, the revocation list or the policy.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The parsed token (signatures verified).
    pub(crate) biscuit: Biscuit,
    /// Its trusted chain.
    pub(crate) chain: Chain,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Arc<Verified>>,
    /// Insertion order, oldest first.
    order: VecDeque<Key>,
}

/// A bounded map from token hashes to verified tokens; the oldest entry goes first.
pub(crate) struct SignatureCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl fmt::Debug for SignatureCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureCache")
            .field("capacity", &self.capacity)
            .field("len", &self.lock().map.len())
            .finish()
    }
}

impl SignatureCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The cache key of a token's text.
    pub(crate) fn key(&self, token: &str) -> Key {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map inconsistent with `order` in a way
        // that matters (at worst an entry is evicted early): keep going.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Verified>> {
        self.lock().map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: Key, verified: Verified) {
        let mut e = self.lock();
        if e.map.contains_key(&key) {
            return;
        }
        while e.map.len() >= self.capacity {
            match e.order.pop_front() {
                Some(old) => {
                    e.map.remove(&old);
                }
                None => break,
            }
        }
        e.map.insert(key, Arc::new(verified));
        e.order.push_back(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::{KeyPair, MintRequest, Subject, SubjectKind, mint, read_chain};
    use std::time::{Duration, SystemTime};

    fn verified(root: &KeyPair) -> Verified {
        let now = SystemTime::now();
        let biscuit = mint(
            root,
            1,
            &MintRequest {
                token_id: "t".into(),
                subject: Subject {
                    id: "spiffe://example.org/a".into(),
                    kind: SubjectKind::Workload,
                    issuer: "example.org".into(),
                    name: String::new(),
                },
                actor: signet_spiffe::SpiffeId::parse("spiffe://example.org/a").unwrap(),
                rights: ["r".to_owned()].into(),
                issued_at: now,
                expires_at: now + Duration::from_secs(60),
                max_depth: 0,
            },
        )
        .unwrap();
        let chain = read_chain(&biscuit, &[root.public()]).unwrap();
        Verified { biscuit, chain }
    }

    #[test]
    fn it_is_bounded_and_drops_the_oldest_first() {
        let root = KeyPair::new();
        let c = SignatureCache::new(2);
        let (a, b, d) = (c.key("a"), c.key("b"), c.key("d"));
        assert_ne!(a, b);
        c.insert(a, verified(&root));
        c.insert(b, verified(&root));
        c.insert(a, verified(&root)); // already there: no change of order
        assert_eq!(c.len(), 2);
        c.insert(d, verified(&root));
        assert_eq!(c.len(), 2);
        assert!(c.get(&a).is_none(), "the oldest went first");
        assert!(c.get(&b).is_some() && c.get(&d).is_some());
    }
}
