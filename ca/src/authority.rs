//! The certificate authority: slots, rotation, journal and X509-SVID signing.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::cert::{
    self, CaCertParams, CaIssuer, LeafParams, LeafTemplate, cert_key_id, random_serial,
    validate_spki,
};
use crate::keys::{self, KeyType, SigningKey, generate_key, key_identifier};
use crate::rotation::{
    Rotated, RotatingSlot, Rotation, RotationError, SlotMaker, Slots, check_journal_states,
    system_time, unix_secs,
};
use crate::upstream::{self, Upstream};
use crate::{
    CaConfig, CaError, IssuedX509Svid, RotationOutcome, SlotInfo, SlotState, X509SvidRequest,
};

/// How far an X509-SVID's notBefore is backdated, in seconds.
pub const SVID_BACKDATE_SECS: i64 = 10;
/// How far a CA certificate's notBefore is backdated, in seconds.
pub const CA_BACKDATE_SECS: i64 = 60;

const JOURNAL_VERSION: u32 = 1;

/// Converts a `SystemTime` to Unix seconds.
fn unix(t: SystemTime) -> Result<i64, CaError> {
    unix_secs(t)
        .ok_or_else(|| CaError::InvalidTime("time is before 1970 or out of range".to_string()))
}

/// What the hot path needs to sign with one CA, parsed once.
struct Signer {
    slot_id: String,
    key: SigningKey,
    template: LeafTemplate,
    /// What follows the leaf in an SVID chain (never the trust anchor).
    chain_tail: Vec<Vec<u8>>,
    not_before: i64,
    not_after: i64,
}

/// One CA generation.
pub(crate) struct Slot {
    id: String,
    state: SlotState,
    key_type: KeyType,
    /// When the slot was created (the start of its rotation timeline), Unix seconds.
    created_at: i64,
    cert_der: Vec<u8>,
    /// The upstream chain the certificate was signed under (empty for a self-signed root).
    upstream_chain: Vec<Vec<u8>>,
    not_before: i64,
    not_after: i64,
    subject: String,
    fingerprint: String,
    /// Loaded for prepared and active slots; retired slots never sign again.
    signer: Option<Arc<Signer>>,
}

impl Slot {
    /// Builds a slot from its certificate; with `key`, also its signer (checking that the key
    /// belongs to the certificate).
    fn new(
        id: String,
        state: SlotState,
        key_type: KeyType,
        created_at: i64,
        cert_der: Vec<u8>,
        upstream_chain: Vec<Vec<u8>>,
        key: Option<SigningKey>,
    ) -> Result<Slot, CaError> {
        let (rest, cert) = X509Certificate::from_der(&cert_der).map_err(|e| {
            CaError::JournalCorrupt(format!("certificate of CA {id} does not parse: {e}"))
        })?;
        if !rest.is_empty() {
            return Err(CaError::JournalCorrupt(format!(
                "certificate of CA {id} has trailing data"
            )));
        }
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let subject = cert.subject().to_string();
        let fingerprint = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &cert_der,
        ));
        let signer = match key {
            None => None,
            Some(key) => {
                if key.public_key_bits() != &cert.public_key().subject_public_key.data[..] {
                    return Err(CaError::KeyMismatch { slot: id });
                }
                let template =
                    LeafTemplate::new(&key, cert.subject().as_raw(), &cert_key_id(&cert));
                // A self-signed CA is itself the trust anchor: SVID chains are just the leaf.
                // Under an upstream CA: the Signet intermediate, then the upstream chain without
                // its last certificate (the trust anchor).
                let mut chain_tail = Vec::with_capacity(upstream_chain.len());
                if let Some((_anchor, intermediates)) = upstream_chain.split_last() {
                    chain_tail.push(cert_der.clone());
                    chain_tail.extend(intermediates.iter().cloned());
                }
                Some(Arc::new(Signer {
                    slot_id: id.clone(),
                    key,
                    template,
                    chain_tail,
                    not_before,
                    not_after,
                }))
            }
        };
        Ok(Slot {
            id,
            state,
            key_type,
            created_at,
            cert_der,
            upstream_chain,
            not_before,
            not_after,
            subject,
            fingerprint,
            signer,
        })
    }
}

impl RotatingSlot for Slot {
    type Info = SlotInfo;

    fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> SlotState {
        self.state
    }

    fn activate(&mut self) {
        self.state = SlotState::Active;
    }

    fn retire(&mut self, _now: i64) {
        self.state = SlotState::Retired;
        self.signer = None;
    }

    fn created_at(&self) -> i64 {
        self.created_at
    }

    fn not_after(&self) -> i64 {
        self.not_after
    }

    /// A retired CA goes once its certificate expired (nothing it signed outlives it).
    fn prunable(&self, now: i64) -> bool {
        now >= self.not_after
    }

    /// The certificate clients must trust for this slot: itself when self-signed, else the top
    /// of its upstream chain.
    fn published(&self) -> &[u8] {
        self.upstream_chain.last().unwrap_or(&self.cert_der)
    }

    fn info(&self) -> SlotInfo {
        SlotInfo {
            id: self.id.clone(),
            state: self.state,
            not_before: system_time(self.not_before),
            not_after: system_time(self.not_after),
            subject: self.subject.clone(),
            key_type: self.key_type,
            fingerprint_sha256: self.fingerprint.clone(),
            cert_der: self.cert_der.clone(),
        }
    }
}

impl From<RotationError> for CaError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::NoPrepared => CaError::NoPreparedCa,
            RotationError::Expired { id, not_after } => CaError::CaExpired {
                slot: id,
                not_after: system_time(not_after),
            },
        }
    }
}

impl From<Rotated<SlotInfo>> for RotationOutcome {
    fn from(r: Rotated<SlotInfo>) -> Self {
        match r {
            Rotated::Unchanged => RotationOutcome::Unchanged,
            Rotated::Prepared(info) => RotationOutcome::Prepared(info),
            Rotated::Activated(info) => RotationOutcome::Activated(info),
            Rotated::Pruned(ids) => RotationOutcome::Pruned(ids),
        }
    }
}

/// The journal: everything about the CA except key material.
#[derive(Serialize, Deserialize)]
struct Journal {
    version: u32,
    trust_domain: String,
    bundle_sequence: u64,
    slots: Vec<JournalSlot>,
}

#[derive(Serialize, Deserialize)]
struct JournalSlot {
    id: String,
    state: SlotState,
    key_type: KeyType,
    created_at: i64,
    /// Hex DER.
    cert_der: String,
    /// Hex DER of the upstream chain, upstream CA first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    upstream_chain: Vec<String>,
}

/// Signet's certificate authority.
///
/// Holds up to one prepared, one active and any number of retired CA slots. Cheap to share
/// (`Arc<CertificateAuthority>`): signing takes a read lock just long enough to clone the active
/// signer; rotation builds new CAs outside the lock.
pub struct CertificateAuthority {
    cfg: CaConfig,
    upstream: Option<Upstream>,
    /// The slots; the sequence is the bundle sequence (it counts trust anchor changes).
    rotation: Rotation<Slot>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.rotation.read();
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.cfg.trust_domain.name())
            .field("key_type", &self.cfg.key_type)
            .field("upstream", &self.upstream.is_some())
            .field(
                "slots",
                &st.slots
                    .iter()
                    .map(|s| (s.id.as_str(), s.state))
                    .collect::<Vec<_>>(),
            )
            .field("bundle_sequence", &st.sequence)
            .finish_non_exhaustive()
    }
}

fn valid_slot_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn new_slot_id() -> Result<String, CaError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CaError::Random)?;
    Ok(hex::encode(b))
}

fn validate_dns_name(name: &str) -> Result<(), CaError> {
    let bad = |why: &str| CaError::InvalidDnsName {
        name: name.to_string(),
        reason: why.to_string(),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1 to 253 characters long"));
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("every label must be 1 to 63 characters long"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "only letters, digits, '-' and a leading '*.' are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label must not start or end with '-'"));
        }
    }
    Ok(())
}

impl CertificateAuthority {
    /// Loads the slots from `journal` (bytes previously returned by
    /// [`journal_bytes`](Self::journal_bytes)) and their keys from `key_dir`; with no journal,
    /// creates and activates the first CA (persist [`journal_bytes`](Self::journal_bytes)
    /// afterwards).
    ///
    /// Errors clearly on a corrupt journal, a journal of another trust domain, missing, unreadable
    /// or mismatched key files, and bad upstream files.
    pub fn open(cfg: CaConfig, journal: Option<&[u8]>, now: SystemTime) -> Result<Self, CaError> {
        if cfg.ttl.as_secs() < 1 {
            return Err(CaError::InvalidCaTtl);
        }
        let now_s = unix(now)?;
        let upstream = match &cfg.upstream {
            Some(u) => Some(upstream::load(u, now_s)?),
            None => None,
        };
        keys::ensure_key_dir(&cfg.key_dir)?;
        let state = match journal {
            Some(bytes) => Self::load_journal(&cfg, bytes)?,
            None => Slots {
                slots: Vec::new(),
                sequence: 0,
            },
        };
        let ca = CertificateAuthority {
            cfg,
            upstream,
            rotation: Rotation::new(state),
        };
        if journal.is_none() {
            ca.rotation.push(ca.create_slot(now_s, SlotState::Active)?);
        }
        Ok(ca)
    }

    fn load_journal(cfg: &CaConfig, bytes: &[u8]) -> Result<Slots<Slot>, CaError> {
        let j: Journal = serde_json::from_slice(bytes)
            .map_err(|e| CaError::JournalCorrupt(format!("not a CA journal: {e}")))?;
        if j.version != JOURNAL_VERSION {
            return Err(CaError::JournalCorrupt(format!(
                "unsupported journal version {} (expected {JOURNAL_VERSION})",
                j.version
            )));
        }
        if j.trust_domain != cfg.trust_domain.name() {
            return Err(CaError::JournalTrustDomainMismatch {
                journal: j.trust_domain,
                config: cfg.trust_domain.name().to_string(),
            });
        }
        check_journal_states(j.slots.iter().map(|s| s.state), "CA")
            .map_err(CaError::JournalCorrupt)?;
        let mut slots: Vec<Slot> = Vec::with_capacity(j.slots.len());
        for js in j.slots {
            if !valid_slot_id(&js.id) || slots.iter().any(|s| s.id == js.id) {
                return Err(CaError::JournalCorrupt(format!(
                    "invalid or duplicate CA id {:?}",
                    js.id
                )));
            }
            let decode = |h: &str| {
                hex::decode(h).map_err(|e| {
                    CaError::JournalCorrupt(format!("certificate of CA {} is not hex: {e}", js.id))
                })
            };
            let cert_der = decode(&js.cert_der)?;
            let upstream_chain = js
                .upstream_chain
                .iter()
                .map(|h| decode(h))
                .collect::<Result<Vec<_>, _>>()?;
            let key = match js.state {
                SlotState::Retired => None,
                SlotState::Prepared | SlotState::Active => {
                    Some(keys::read_key_file(&cfg.key_dir, &js.id, js.key_type)?)
                }
            };
            slots.push(Slot::new(
                js.id,
                js.state,
                js.key_type,
                js.created_at,
                cert_der,
                upstream_chain,
                key,
            )?);
        }
        Ok(Slots {
            slots,
            sequence: j.bundle_sequence,
        })
    }
}

impl SlotMaker for CertificateAuthority {
    type Slot = Slot;
    type Error = CaError;
    fn noun(&self) -> &'static str {
        "CA"
    }

    /// Creates a new CA (key file written, certificate signed) without touching the state.
    fn create_slot(&self, now: i64, state: SlotState) -> Result<Slot, CaError> {
        let key_type = self.cfg.key_type;
        let id = new_slot_id()?;
        let generated = generate_key(key_type)?;
        let key = SigningKey::from_pkcs8(&generated.pkcs8_der, Some(key_type))
            .map_err(|_| CaError::KeyGeneration(key_type))?;
        let key_id = key_identifier(key.public_key_bits());
        let ttl = i64::try_from(self.cfg.ttl.as_secs()).unwrap_or(i64::MAX);
        let mut not_after = now.saturating_add(ttl);
        let common_name = format!("Signet CA {id}");
        let uri = self.cfg.trust_domain.id_string();
        let serial = random_serial()?;
        let (cert_der, upstream_chain) = match &self.upstream {
            None => {
                let params = CaCertParams {
                    serial: &serial,
                    not_before: now - CA_BACKDATE_SECS,
                    not_after,
                    common_name: &common_name,
                    uri: &uri,
                    spki_der: &generated.spki_der,
                    key_id: &key_id,
                };
                let issuer = CaIssuer {
                    name_der: None,
                    key_id: &key_id,
                    key: &key,
                };
                (cert::sign_ca(&params, &issuer)?, Vec::new())
            }
            Some(up) => {
                if now >= up.not_after {
                    return Err(CaError::UpstreamExpired {
                        path: self
                            .cfg
                            .upstream
                            .as_ref()
                            .map(|u| u.cert_path.clone())
                            .unwrap_or_default(),
                    });
                }
                not_after = not_after.min(up.not_after);
                let params = CaCertParams {
                    serial: &serial,
                    not_before: (now - CA_BACKDATE_SECS).max(up.not_before),
                    not_after,
                    common_name: &common_name,
                    uri: &uri,
                    spki_der: &generated.spki_der,
                    key_id: &key_id,
                };
                let issuer = CaIssuer {
                    name_der: Some(&up.subject_der),
                    key_id: &up.key_id,
                    key: &up.key,
                };
                (cert::sign_ca(&params, &issuer)?, up.chain.clone())
            }
        };
        let slot = Slot::new(
            id,
            state,
            key_type,
            now,
            cert_der,
            upstream_chain,
            Some(key),
        )?;
        // Last step: nothing is written unless everything before succeeded.
        keys::write_key_file(&self.cfg.key_dir, &slot.id, &generated.pkcs8_der)?;
        tracing::info!(ca = %slot.id, state = %slot.state, key_type = %key_type, "created CA");
        Ok(slot)
    }

    fn delete_key_file(&self, id: &str) {
        keys::delete_key_file(&self.cfg.key_dir, id, "CA");
    }
}

impl CertificateAuthority {
    /// Serialized journal (JSON): the slots with their certificates, states and times, the
    /// upstream chains, and the bundle sequence. It never contains key material.
    pub fn journal_bytes(&self) -> Result<Vec<u8>, CaError> {
        let st = self.rotation.read();
        let j = Journal {
            version: JOURNAL_VERSION,
            trust_domain: self.cfg.trust_domain.name().to_string(),
            bundle_sequence: st.sequence,
            slots: st
                .slots
                .iter()
                .map(|s| JournalSlot {
                    id: s.id.clone(),
                    state: s.state,
                    key_type: s.key_type,
                    created_at: s.created_at,
                    cert_der: hex::encode(&s.cert_der),
                    upstream_chain: s.upstream_chain.iter().map(hex::encode).collect(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&j).map_err(|e| CaError::Encoding(e.to_string()))
    }

    /// Automatic rotation, at most one step per call (call it every few seconds; it is
    /// idempotent):
    ///
    /// 1. the active CA expired: activate the prepared CA if it is still valid, otherwise create
    ///    and activate a new one at once (only after a long outage);
    /// 2. at 5/6 of the active CA's lifetime, activate the prepared CA;
    /// 3. at 1/2, prepare the next CA (published in [`trust_anchors`](Self::trust_anchors) at
    ///    once, long before it signs anything);
    /// 4. drop retired CAs whose certificate expired (and delete their key files).
    ///
    /// The caller persists [`journal_bytes`](Self::journal_bytes) whenever the outcome is not
    /// [`RotationOutcome::Unchanged`].
    pub fn rotate_if_due(&self, now: SystemTime) -> Result<RotationOutcome, CaError> {
        let now_s = unix(now)?;
        self.rotation.rotate_if_due(self, now_s).map(Into::into)
    }

    /// Prepares the next CA now (CLI `ca prepare`): it is published in
    /// [`trust_anchors`](Self::trust_anchors) at once and signs nothing until activated. An
    /// already prepared CA is replaced.
    pub fn prepare(&self, now: SystemTime) -> Result<SlotInfo, CaError> {
        let now_s = unix(now)?;
        self.rotation.prepare(self, now_s)
    }

    /// Activates the prepared CA now (CLI `ca activate`); the active one is retired and stays
    /// published until it expires. Errors if nothing is prepared.
    pub fn activate(&self, now: SystemTime) -> Result<SlotInfo, CaError> {
        let now_s = unix(now)?;
        self.rotation.activate(self, now_s)
    }

    /// All slots, oldest first.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.rotation.read().slots.iter().map(Slot::info).collect()
    }

    /// DER certificates to publish as X.509 authorities of the own trust bundle: in self-signed
    /// mode every slot (prepared, active, retired until pruned); in upstream mode the upstream
    /// trust anchor(s) (the last certificate of the upstream file). Deduplicated.
    pub fn trust_anchors(&self) -> Vec<Vec<u8>> {
        self.rotation.read().published()
    }

    /// Increases whenever [`trust_anchors`](Self::trust_anchors) changes (the bundle's
    /// `spiffe_sequence`).
    pub fn bundle_sequence(&self) -> u64 {
        self.rotation.read().sequence
    }

    fn active_signer(&self) -> Result<Arc<Signer>, CaError> {
        self.rotation
            .read()
            .active()
            .and_then(|s| s.signer.clone())
            .ok_or(CaError::NoActiveCa)
    }

    /// Signs an X509-SVID for `spiffe_id` over the given public key, with the active CA.
    ///
    /// The leaf has exactly one URI SAN (the SPIFFE ID) plus the DNS names, cA=false, critical
    /// key usage digitalSignature, serverAuth+clientAuth, a random positive 128-bit serial,
    /// notBefore = now - 10 s and notAfter = min(now + ttl, CA notAfter).
    pub fn sign_x509_svid(
        &self,
        req: &X509SvidRequest<'_>,
        now: SystemTime,
    ) -> Result<IssuedX509Svid, CaError> {
        if !req.spiffe_id.is_member_of(&self.cfg.trust_domain) {
            return Err(CaError::WrongTrustDomain {
                spiffe_id: req.spiffe_id.to_string(),
                trust_domain: self.cfg.trust_domain.name().to_string(),
            });
        }
        if req.spiffe_id.path().is_empty() {
            return Err(CaError::SvidIdWithoutPath(req.spiffe_id.to_string()));
        }
        let ttl = req.ttl.as_secs();
        if ttl == 0 {
            return Err(CaError::InvalidSvidTtl);
        }
        for dns in req.dns_names {
            validate_dns_name(dns)?;
        }
        let key = validate_spki(req.public_key_spki_der)?;
        let now_s = unix(now)?;
        let signer = self.active_signer()?;
        if now_s >= signer.not_after {
            return Err(CaError::CaExpired {
                slot: signer.slot_id.clone(),
                not_after: system_time(signer.not_after),
            });
        }
        let not_before = (now_s - SVID_BACKDATE_SECS).max(signer.not_before);
        let not_after = now_s
            .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
            .min(signer.not_after);
        if not_after <= not_before {
            return Err(CaError::CaNotYetValid {
                slot: signer.slot_id.clone(),
                not_before: system_time(signer.not_before),
            });
        }
        let serial = random_serial()?;
        let uri = req.spiffe_id.to_string();
        let leaf = cert::sign_leaf(
            &signer.template,
            &signer.key,
            &LeafParams {
                serial: &serial,
                not_before,
                not_after,
                key: &key,
                uri: &uri,
                dns_names: req.dns_names,
            },
        )?;
        let mut cert_chain_der = Vec::with_capacity(1 + signer.chain_tail.len());
        cert_chain_der.push(leaf);
        cert_chain_der.extend(signer.chain_tail.iter().cloned());
        Ok(IssuedX509Svid {
            cert_chain_der,
            serial_hex: hex::encode(serial),
            not_before: system_time(not_before),
            not_after: system_time(not_after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in [
            "example.org",
            "a",
            "*.example.org",
            "xn--bcher-kva.example",
            "a-b.c",
        ] {
            validate_dns_name(ok).unwrap();
        }
        for bad in [
            "",
            "-a.org",
            "a-.org",
            "a..org",
            "a.org.",
            "a_b.org",
            "*",
            "a.*.org",
            "ex ample.org",
            "é.org",
        ] {
            assert!(validate_dns_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_dns_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn slot_ids() {
        assert!(valid_slot_id(&new_slot_id().unwrap()));
        for bad in ["", "../x", "A", "a/b", "a.key"] {
            assert!(!valid_slot_id(bad));
        }
    }
}
