//! The published delegation keys and revocation list, and their JSON documents.
//!
//! Keys (`GET /delegation/keys` on the issuer's bundle endpoint, `FetchDelegationKeys` on the
//! agent):
//!
//! ```json
//! {"keys": [{"root_key_id": 2, "algorithm": "ed25519", "public_key": "ed25519/9a1f...",
//!            "state": "active", "not_after": 1796236800}],
//!  "sequence": 5}
//! ```
//!
//! Every published key is trusted both as a root key (chosen by the token's `root_key_id`) and
//! as a hop signer (third-party blocks). Revocations:
//!
//! ```json
//! {"revoked": [{"revocation_id": "<hex>", "token_id": "8b0c...", "revoked_at": 1796150000}],
//!  "sequence": 7}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use biscuit_auth::PublicKey;
use serde::{Deserialize, Serialize};

/// One published key, as the JSON document carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The id tokens carry in `root_key_id`.
    pub root_key_id: u32,
    /// `ed25519` or `secp256r1`.
    pub algorithm: String,
    /// The public key in Biscuit's text form (`ed25519/<hex>`, `secp256r1/<hex>`).
    pub public_key: String,
    /// `prepared`, `active` or `retired`.
    pub state: String,
    /// End of the key's signing life (Unix seconds).
    pub not_after: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeysDocument {
    keys: Vec<KeyInfo>,
    #[serde(default)]
    sequence: u64,
}

/// The delegation keys a verifier trusts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelegationKeys {
    keys: BTreeMap<u32, PublicKey>,
    infos: Vec<KeyInfo>,
    sequence: u64,
}

impl DelegationKeys {
    /// A key set from `(root_key_id, public key)` pairs (an id given twice: the last wins).
    pub fn from_keys(keys: impl IntoIterator<Item = (u32, PublicKey)>) -> Self {
        let keys: BTreeMap<u32, PublicKey> = keys.into_iter().collect();
        let infos = keys
            .iter()
            .map(|(id, k)| KeyInfo {
                root_key_id: *id,
                algorithm: k.algorithm_string().to_owned(),
                public_key: k.print(),
                state: "active".to_owned(),
                not_after: 0,
            })
            .collect();
        Self {
            keys,
            infos,
            sequence: 0,
        }
    }

    /// A key set from published key infos.
    pub fn from_infos(infos: Vec<KeyInfo>, sequence: u64) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (i, info) in infos.iter().enumerate() {
            let key = PublicKey::from_str(&info.public_key)
                .map_err(|e| format!("keys[{i}].public_key: {e}"))?;
            if key.algorithm_string() != info.algorithm {
                return Err(format!(
                    "keys[{i}]: algorithm {:?} does not match the key ({})",
                    info.algorithm,
                    key.algorithm_string()
                ));
            }
            if keys.insert(info.root_key_id, key).is_some() {
                return Err(format!(
                    "keys[{i}]: root_key_id {} is used twice",
                    info.root_key_id
                ));
            }
        }
        Ok(Self {
            keys,
            infos,
            sequence,
        })
    }

    /// Parses the keys document.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let doc: KeysDocument =
            serde_json::from_slice(json).map_err(|e| format!("delegation keys document: {e}"))?;
        Self::from_infos(doc.keys, doc.sequence)
    }

    /// The keys document.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&KeysDocument {
            keys: self.infos.clone(),
            sequence: self.sequence,
        })
        .unwrap_or_else(|_| "{\"keys\":[]}".to_owned())
    }

    /// The root key with this id.
    pub fn root_key(&self, id: Option<u32>) -> Option<PublicKey> {
        id.and_then(|id| self.keys.get(&id).copied())
    }

    /// Every trusted key (hop signers).
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.values().copied().collect()
    }

    /// The published infos.
    pub fn infos(&self) -> &[KeyInfo] {
        &self.infos
    }

    /// The document's sequence.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One revoked block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The block's revocation id, hex.
    pub revocation_id: String,
    /// The token whose last block it is.
    pub token_id: String,
    /// When it was revoked (Unix seconds).
    pub revoked_at: i64,
}

/// The revocation list: revoking a token revokes its last block, hence every token derived from
/// it (hops and offline attenuations contain that block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// The revoked blocks.
    pub revoked: Vec<Revoked>,
    /// Grows with every revocation.
    #[serde(default)]
    pub sequence: u64,
}

impl RevocationList {
    /// The revocation ids, as bytes.
    pub fn ids(&self) -> HashSet<Vec<u8>> {
        self.revoked
            .iter()
            .filter_map(|r| hex::decode(&r.revocation_id).ok())
            .collect()
    }

    /// Parses the document.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let list: RevocationList =
            serde_json::from_slice(json).map_err(|e| format!("revocation list: {e}"))?;
        if let Some(r) = list
            .revoked
            .iter()
            .find(|r| hex::decode(&r.revocation_id).is_err())
        {
            return Err(format!(
                "revocation list: revocation_id {:?} is not hex",
                r.revocation_id
            ));
        }
        Ok(list)
    }

    /// The document.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"revoked\":[]}".to_owned())
    }
}
