//! WIT-SVIDs on the Workload API (the incubating SPIFFE profile of the WIMSE Workload Identity
//! Token; SPIRE's agent answers `Unimplemented` here).
//!
//! A WIT-SVID binds a key pair to an identity: the agent generates a fresh P-256 key for an entry
//! (`signet_sdk::WitKey`), has the issuer mint a WIT-SVID whose `cnf.jwk` is its public key
//! (`NewWITSVID`), and hands the workload both: the token and the private key as a JWK
//! (`wit_svid_key`). The workload proves possession with a Workload Proof Token per request
//! (`signet_sdk::mint_wpt`); a server checks both (`signet_sdk::WptVerifier`).
//!
//! WIT-SVIDs are minted when a workload first asks for them and kept per entry in a
//! [`TokenCache`] (every workload of that entry gets the same one, as with X509-SVIDs); an open
//! `FetchWITSVID` stream renews them at half-life (each renewal with a new key) and sends the new
//! state. Keys are zeroized when dropped and never logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_sdk::WitKey;
use signet_spiffe::SpiffeId;
use signet_spiffe::jwt::Algorithm;
use zeroize::Zeroizing;

use super::tokens::{Token, TokenCache};
use super::{IssuerFailure, MintedToken, SvidIssuer};
use crate::cache::CachedSvid;

/// Most WIT-SVIDs kept at once (one per entry served to a workload that asked).
pub const MAX_CACHED_WITS: usize = 16_384;

/// How long a stream waits before retrying a WIT-SVID it could not renew.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A WIT-SVID as the agent serves it: the token and the private key it binds.
///
/// `Debug` prints neither.
pub struct ServedWit {
    /// The token.
    pub token: MintedToken,
    /// The private key bound in the token's `cnf.jwk`, as a private JWK (RFC 7517, with `alg`):
    /// the `wit_svid_key` of the Workload API.
    pub private_jwk: Zeroizing<String>,
}

impl std::fmt::Debug for ServedWit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedWit")
            .field("token", &self.token)
            .field("private_jwk", &"<redacted>")
            .finish()
    }
}

impl Token for ServedWit {
    fn spiffe_id(&self) -> &SpiffeId {
        &self.token.spiffe_id
    }
    fn issued_at(&self) -> SystemTime {
        self.token.issued_at
    }
    fn expires_at(&self) -> SystemTime {
        self.token.expires_at
    }
}

/// The WIT-SVID cache: entry ID -> WIT-SVID and key.
pub type WitSvidCache = TokenCache<String, ServedWit>;

/// An empty WIT-SVID cache of [`MAX_CACHED_WITS`].
pub fn new_cache() -> WitSvidCache {
    TokenCache::new("WIT-SVID", MAX_CACHED_WITS)
}

/// The WIT-SVID of `svid`'s entry: the cached one while fresh, else one minted now over a new key.
pub async fn wit_svid_for(
    cache: &WitSvidCache,
    issuer: &dyn SvidIssuer,
    svid: &CachedSvid,
) -> Result<Arc<ServedWit>, IssuerFailure> {
    let entry_id = svid.entry_id.to_string();
    cache
        .get(entry_id.clone(), &svid.spiffe_id, || async {
            let key_failure =
                |e: signet_sdk::KeyError| IssuerFailure::Unavailable(format!("WIT key: {e}"));
            let key = WitKey::generate(Algorithm::Es256).map_err(key_failure)?;
            let spki = key.public_spki_der().map_err(key_failure)?;
            let private_jwk = key.to_private_jwk().map_err(key_failure)?;
            let token = issuer.mint_wit_svid(&entry_id, &spki).await?;
            Ok(ServedWit { token, private_jwk })
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::cache::testing::{ca, svid};

    /// Records the keys it is asked to bind; answers with a token naming the entry.
    #[derive(Default)]
    struct Recording {
        keys: Mutex<Vec<Vec<u8>>>,
    }

    #[async_trait]
    impl SvidIssuer for Recording {
        async fn mint_jwt_svid(
            &self,
            _entry_id: &str,
            _audience: &[String],
        ) -> Result<MintedToken, IssuerFailure> {
            Err(IssuerFailure::Unavailable("not in this test".into()))
        }

        async fn mint_wit_svid(
            &self,
            entry_id: &str,
            public_key_spki: &[u8],
        ) -> Result<MintedToken, IssuerFailure> {
            self.keys.lock().unwrap().push(public_key_spki.to_vec());
            let now = SystemTime::now();
            Ok(MintedToken::new(
                signet_spiffe::TrustDomain::new("example.org")
                    .unwrap()
                    .spiffe_id(&format!("/{entry_id}"))
                    .unwrap(),
                format!("wit-for-{entry_id}"),
                now,
                now + Duration::from_secs(3600),
            ))
        }
    }

    #[tokio::test]
    async fn the_served_key_is_the_one_the_issuer_was_asked_to_bind() {
        let ca = ca("example.org");
        let s = svid(&ca, "e1", "/e1", &["k:v"], "");
        let cache = new_cache();
        let issuer = Recording::default();
        let wit = wit_svid_for(&cache, &issuer, &s).await.unwrap();
        assert_eq!(*wit.token.token, "wit-for-e1");
        let key = WitKey::from_private_jwk(&wit.private_jwk).unwrap();
        let bound = issuer.keys.lock().unwrap()[0].clone();
        assert_eq!(key.public_spki_der().unwrap(), bound);
        assert_eq!(key.algorithm(), Algorithm::Es256);
        // Cached: the same token and key for the next workload of this entry.
        let again = wit_svid_for(&cache, &issuer, &s).await.unwrap();
        assert!(Arc::ptr_eq(&wit, &again));
        assert_eq!(issuer.keys.lock().unwrap().len(), 1);
        assert!(!format!("{wit:?}").contains(wit.private_jwk.as_str()));
    }
}
