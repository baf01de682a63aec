//! The agent's persisted state in `data_dir` (created 0700).
//!
//! | file | content | mode |
//! | --- | --- | --- |
//! | `agent_svid.pem` | the agent's private key (PKCS#8 `PRIVATE KEY` block) then its SVID chain (`CERTIFICATE` blocks, leaf first) | 0600 |
//! | `bundle.json` | the trust bundle of the own trust domain (SPIFFE bundle JSON, with `spiffe_sequence`) | 0600 |
//! | `federated_bundles.json` | the bundles of the trust domains the entries federate with: a JSON object, trust domain name -> SPIFFE bundle document | 0600 |
//! | `state.bin` | the last synced entries and their revision, and (with `persist_workload_svids`) the workload SVIDs and their private keys | 0600 |
//!
//! Every file is written atomically: a temporary file in the same directory (mode 0600, created
//! exclusively), `fsync`, `rename` over the old file, `fsync` of the directory. A crash leaves the
//! old or the new file, never a mix. Key and chain share one file so that they cannot disagree.
//!
//! `state.bin` is a sequence of length-delimited protobuf records (a header, then one record per
//! entry and per SVID), written through a buffer and read back record by record, so that neither
//! side builds the whole file as one message.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use prost::Message;
use signet_proto::node as pb;
use signet_spiffe::bundle::Bundle;
use signet_spiffe::{SpiffeId, TrustDomain};
use zeroize::{Zeroize, Zeroizing};

use crate::node_client::AgentIdentity;
use crate::runtime::certs::leaf_info;

/// File name of the agent SVID and key.
pub const AGENT_SVID_FILE: &str = "agent_svid.pem";
/// File name of the trust bundle.
pub const BUNDLE_FILE: &str = "bundle.json";
/// File name of the synced state.
pub const STATE_FILE: &str = "state.bin";
/// File name of the federated bundles.
pub const FEDERATED_FILE: &str = "federated_bundles.json";
/// Version of the `state.bin` format.
const STATE_VERSION: u32 = 2;

/// Errors of the persisted state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file exists but its content is unusable.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> PersistError {
    PersistError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// One persisted workload SVID (of the entry whose record holds it).
pub struct PersistedSvid {
    /// DER certificates, concatenated, leaf first.
    pub cert_chain_der: Vec<u8>,
    /// PKCS#8 private key.
    pub private_key_pkcs8: Zeroizing<Vec<u8>>,
    /// Fingerprint of the entry fields the SVID was signed for (see `runtime::mirror`).
    pub fingerprint: u64,
}

impl std::fmt::Debug for PersistedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistedSvid")
            .field("cert_chain_der_len", &self.cert_chain_der.len())
            .field("private_key_pkcs8", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// A workload SVID to persist, borrowed from the cache.
#[derive(Clone, Copy)]
pub struct SvidRef<'a> {
    /// DER certificates, concatenated, leaf first.
    pub cert_chain_der: &'a [u8],
    /// PKCS#8 private key.
    pub private_key_pkcs8: &'a [u8],
    /// Fingerprint of the entry fields the SVID was signed for.
    pub fingerprint: u64,
}

/// One entry to persist, with its SVID (if any and if SVIDs are persisted).
pub struct StateRecord<'a> {
    /// The entry (what the agent knows of it).
    pub entry: pb::Entry,
    /// Fingerprint of its certificate fields.
    pub fingerprint: u64,
    /// Its SVID.
    pub svid: Option<SvidRef<'a>>,
}

/// The header of `state.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHeader {
    /// The agent ID the entries were synced for.
    pub agent_id: String,
    /// The entries' revision (the next delta sync starts there).
    pub revision: i64,
    /// Number of entry records that follow.
    pub entry_count: u64,
}

/// One entry read back from `state.bin`.
#[derive(Debug)]
pub struct LoadedEntry {
    /// The entry.
    pub entry: pb::Entry,
    /// Fingerprint of its certificate fields.
    pub fingerprint: u64,
    /// Its SVID, if persisted.
    pub svid: Option<PersistedSvid>,
}

/// Largest record accepted when reading `state.bin`.
const MAX_RECORD: usize = 16 * 1024 * 1024;

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(string, tag = "2")]
    agent_id: String,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    entry_count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SvidRecord {
    #[prost(bytes = "vec", tag = "1")]
    cert_chain_der: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    private_key_pkcs8: Vec<u8>,
    #[prost(fixed64, tag = "3")]
    fingerprint: u64,
}

impl Drop for SvidRecord {
    fn drop(&mut self) {
        self.private_key_pkcs8.zeroize();
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryRecord {
    #[prost(message, optional, tag = "1")]
    entry: Option<pb::Entry>,
    #[prost(fixed64, tag = "2")]
    fingerprint: u64,
    #[prost(message, optional, tag = "3")]
    svid: Option<SvidRecord>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum RecordKind {
    #[prost(message, tag = "1")]
    Header(HeaderRecord),
    #[prost(message, tag = "2")]
    Entry(Box<EntryRecord>),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(oneof = "RecordKind", tags = "1, 2")]
    kind: Option<RecordKind>,
}

/// Reads `state.bin` one record at a time (see [`DataDir::open_state`]).
pub struct StateReader {
    path: PathBuf,
    reader: std::io::BufReader<File>,
    buf: Zeroizing<Vec<u8>>,
    header: StateHeader,
    read: u64,
}

impl std::fmt::Debug for StateReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl StateReader {
    /// The header.
    pub fn header(&self) -> &StateHeader {
        &self.header
    }

    /// Reads one length-delimited record; `None` at a clean end of file.
    fn record(&mut self) -> Result<Option<Record>, PersistError> {
        use std::io::Read;
        let mut len: u64 = 0;
        let mut shift = 0u32;
        let mut first = true;
        loop {
            let mut byte = [0u8; 1];
            let n = self.reader.read(&mut byte).map_err(io_err(&self.path))?;
            if n == 0 {
                if first {
                    return Ok(None);
                }
                return Err(corrupt(&self.path, "truncated record length"));
            }
            first = false;
            len |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(corrupt(&self.path, "bad record length"));
            }
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| corrupt(&self.path, "record too large"))?;
        if self.buf.capacity() < len {
            // Grow into a fresh buffer so that the old one is wiped, not just freed.
            self.buf = Zeroizing::new(Vec::with_capacity(len.max(4096)));
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        self.reader
            .read_exact(&mut self.buf)
            .map_err(|e| corrupt(&self.path, format!("truncated record: {e}")))?;
        Record::decode(self.buf.as_slice())
            .map(Some)
            .map_err(|e| corrupt(&self.path, format!("corrupt record: {e}")))
    }

    /// The next entry; `None` after the last one (the count announced by the header is checked).
    pub fn next_entry(&mut self) -> Result<Option<LoadedEntry>, PersistError> {
        match self.record()? {
            None => {
                if self.read != self.header.entry_count {
                    return Err(corrupt(
                        &self.path,
                        format!(
                            "truncated: {} entries announced, {} found",
                            self.header.entry_count, self.read
                        ),
                    ));
                }
                Ok(None)
            }
            Some(Record {
                kind: Some(RecordKind::Entry(mut e)),
            }) => {
                self.read += 1;
                let entry = e
                    .entry
                    .take()
                    .ok_or_else(|| corrupt(&self.path, "an entry record without entry"))?;
                let svid = e.svid.as_mut().map(|s| PersistedSvid {
                    cert_chain_der: std::mem::take(&mut s.cert_chain_der),
                    private_key_pkcs8: Zeroizing::new(std::mem::take(&mut s.private_key_pkcs8)),
                    fingerprint: s.fingerprint,
                });
                Ok(Some(LoadedEntry {
                    entry,
                    fingerprint: e.fingerprint,
                    svid,
                }))
            }
            Some(_) => Err(corrupt(&self.path, "records out of order")),
        }
    }
}

/// The agent's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Creates the directory (mode 0700, parents as needed) or opens an existing one. Returns the
    /// directory and, when an existing directory is accessible by group or others, its mode (for
    /// a warning).
    pub fn open(path: &Path) -> Result<(Self, Option<u32>), PersistError> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let mode = m.mode() & 0o777;
                let loose = (mode & 0o077 != 0).then_some(mode);
                Ok((
                    Self {
                        path: path.to_path_buf(),
                    },
                    loose,
                ))
            }
            Ok(_) => Err(corrupt(path, "exists and is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(io_err(path))?;
                // The umask may have removed bits we want; never more than 0700.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err(path))?;
                Ok((
                    Self {
                        path: path.to_path_buf(),
                    },
                    None,
                ))
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `name` atomically with mode 0600; `write` fills the file.
    fn write_atomic(
        &self,
        name: &str,
        write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
    ) -> Result<(), PersistError> {
        let target = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp)(e)),
        }
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            let mut w = BufWriter::with_capacity(64 * 1024, &file);
            write(&mut w).map_err(io_err(&tmp))?;
            w.flush().map_err(io_err(&tmp))?;
            drop(w);
            file.sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
            File::open(&self.path)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.path))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn read_optional(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, PersistError> {
        let path = self.file(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(Zeroizing::new(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Saves the agent SVID and key.
    pub fn save_agent_svid(&self, identity: &AgentIdentity) -> Result<(), PersistError> {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        let key_block = pem::Pem::new("PRIVATE KEY", identity.private_key_pkcs8.to_vec());
        let mut text = Zeroizing::new(pem::encode_config(&key_block, config));
        // `pem::Pem` holds a copy of the key: wipe it.
        let mut key_copy = key_block.into_contents();
        key_copy.zeroize();
        for der in &identity.cert_chain {
            text.push_str(&pem::encode_config(
                &pem::Pem::new("CERTIFICATE", der.clone()),
                config,
            ));
        }
        self.write_atomic(AGENT_SVID_FILE, |w| w.write_all(text.as_bytes()))
    }

    /// Loads the agent SVID and key, if the file exists. The SVID may have expired.
    pub fn load_agent_svid(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<AgentIdentity>, PersistError> {
        let path = self.file(AGENT_SVID_FILE);
        let Some(bytes) = self.read_optional(AGENT_SVID_FILE)? else {
            return Ok(None);
        };
        let blocks =
            pem::parse_many(bytes.as_slice()).map_err(|e| corrupt(&path, e.to_string()))?;
        let mut key: Option<Zeroizing<Vec<u8>>> = None;
        let mut chain = Vec::new();
        for block in blocks {
            let tag = block.tag().to_owned();
            match tag.as_str() {
                "PRIVATE KEY" if key.is_none() => key = Some(Zeroizing::new(block.into_contents())),
                "CERTIFICATE" => chain.push(block.into_contents()),
                other => {
                    let mut contents = block.into_contents();
                    contents.zeroize();
                    return Err(corrupt(&path, format!("unexpected PEM block {other:?}")));
                }
            }
        }
        let key = key.ok_or_else(|| corrupt(&path, "no PRIVATE KEY block"))?;
        let leaf = chain
            .first()
            .ok_or_else(|| corrupt(&path, "no CERTIFICATE block"))?;
        let info = leaf_info(leaf).map_err(|e| corrupt(&path, format!("agent SVID: {e}")))?;
        if !info.spiffe_id.is_member_of(trust_domain) {
            return Err(corrupt(
                &path,
                format!(
                    "the agent SVID is for {}, outside trust domain {trust_domain}",
                    info.spiffe_id
                ),
            ));
        }
        // The key must be the leaf's.
        let pair = rcgen::KeyPair::try_from(key.as_slice())
            .map_err(|e| corrupt(&path, format!("private key: {e}")))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| corrupt(&path, e.to_string()))?;
        use rcgen::PublicKeyData;
        if cert.public_key().raw != pair.subject_public_key_info().as_slice() {
            return Err(corrupt(
                &path,
                "the private key does not match the certificate",
            ));
        }
        Ok(Some(AgentIdentity {
            spiffe_id: info.spiffe_id,
            cert_chain: chain,
            private_key_pkcs8: key,
            expires_at: info.not_after,
        }))
    }

    /// Saves the own trust bundle.
    pub fn save_bundle(&self, bundle: &Bundle) -> Result<(), PersistError> {
        let json = bundle
            .to_json()
            .map_err(|e| corrupt(&self.file(BUNDLE_FILE), format!("cannot encode: {e}")))?;
        self.write_atomic(BUNDLE_FILE, |w| w.write_all(json.as_bytes()))
    }

    /// Loads the own trust bundle, if saved.
    pub fn load_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Bundle>, PersistError> {
        let Some(bytes) = self.read_optional(BUNDLE_FILE)? else {
            return Ok(None);
        };
        let path = self.file(BUNDLE_FILE);
        let bundle =
            Bundle::from_json(trust_domain, &bytes).map_err(|e| corrupt(&path, e.to_string()))?;
        if bundle.x509_authorities.is_empty() {
            return Err(corrupt(&path, "the bundle has no X.509 authority"));
        }
        Ok(Some(bundle))
    }

    /// Saves the federated bundles (replacing the previous set).
    pub fn save_federated(
        &self,
        bundles: &std::collections::BTreeMap<TrustDomain, Bundle>,
    ) -> Result<(), PersistError> {
        let path = self.file(FEDERATED_FILE);
        let mut doc = serde_json::Map::new();
        for (td, b) in bundles {
            let json = b
                .to_json()
                .map_err(|e| corrupt(&path, format!("cannot encode the bundle of {td}: {e}")))?;
            let value: serde_json::Value = serde_json::from_str(&json)
                .map_err(|e| corrupt(&path, format!("cannot encode the bundle of {td}: {e}")))?;
            doc.insert(td.name().to_owned(), value);
        }
        let text = serde_json::Value::Object(doc).to_string();
        self.write_atomic(FEDERATED_FILE, |w| w.write_all(text.as_bytes()))
    }

    /// Loads the federated bundles, if saved.
    pub fn load_federated(
        &self,
    ) -> Result<std::collections::BTreeMap<TrustDomain, Bundle>, PersistError> {
        let path = self.file(FEDERATED_FILE);
        let mut out = std::collections::BTreeMap::new();
        let Some(bytes) = self.read_optional(FEDERATED_FILE)? else {
            return Ok(out);
        };
        let doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e.to_string()))?;
        for (name, value) in doc {
            let td =
                TrustDomain::new(&name).map_err(|e| corrupt(&path, format!("{name:?}: {e}")))?;
            let b = Bundle::from_json(&td, value.to_string().as_bytes())
                .map_err(|e| corrupt(&path, format!("the bundle of {td}: {e}")))?;
            out.insert(td, b);
        }
        Ok(out)
    }

    /// Saves the synced state, one record per entry (with its SVID, if given), each built by the
    /// iterator, encoded and dropped; SVID keys are copied into the write buffer only.
    pub fn save_state<'a>(
        &self,
        agent_id: &SpiffeId,
        revision: i64,
        records: impl ExactSizeIterator<Item = StateRecord<'a>>,
    ) -> Result<(), PersistError> {
        self.write_atomic(STATE_FILE, |w| {
            let header = Record {
                kind: Some(RecordKind::Header(HeaderRecord {
                    version: STATE_VERSION,
                    agent_id: agent_id.to_string(),
                    revision,
                    entry_count: records.len() as u64,
                })),
            };
            let mut buf = Zeroizing::new(Vec::with_capacity(4096));
            header.encode_length_delimited(&mut *buf)?;
            w.write_all(&buf)?;
            for r in records {
                buf.clear();
                let rec = Record {
                    kind: Some(RecordKind::Entry(Box::new(EntryRecord {
                        entry: Some(r.entry),
                        fingerprint: r.fingerprint,
                        svid: r.svid.map(|s| SvidRecord {
                            cert_chain_der: s.cert_chain_der.to_vec(),
                            private_key_pkcs8: s.private_key_pkcs8.to_vec(),
                            fingerprint: s.fingerprint,
                        }),
                    }))),
                };
                if buf.capacity() < rec.encoded_len() + 10 {
                    buf = Zeroizing::new(Vec::with_capacity(rec.encoded_len() + 10));
                }
                rec.encode_length_delimited(&mut *buf)?;
                w.write_all(&buf)?;
            }
            Ok(())
        })
    }

    /// Opens the synced state for reading, if saved. A file of another format version is ignored
    /// (`None`).
    pub fn open_state(&self) -> Result<Option<StateReader>, PersistError> {
        let path = self.file(STATE_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut reader = StateReader {
            path: path.clone(),
            reader: std::io::BufReader::with_capacity(64 * 1024, file),
            buf: Zeroizing::new(Vec::new()),
            header: StateHeader {
                agent_id: String::new(),
                revision: 0,
                entry_count: 0,
            },
            read: 0,
        };
        match reader.record()? {
            Some(Record {
                kind: Some(RecordKind::Header(h)),
            }) => {
                if h.version != STATE_VERSION {
                    return Ok(None);
                }
                reader.header = StateHeader {
                    agent_id: h.agent_id,
                    revision: h.revision,
                    entry_count: h.entry_count,
                };
                Ok(Some(reader))
            }
            _ => Err(corrupt(&path, "no header")),
        }
    }

    /// Removes the synced state (e.g. after the agent re-attested under another ID).
    pub fn remove_state(&self) -> Result<(), PersistError> {
        let path = self.file(STATE_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn self_signed(id: &str, not_after: i64) -> (Vec<u8>, Zeroizing<Vec<u8>>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), Zeroizing::new(key.serialize_der()))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn data_dir_is_created_0700_and_loose_modes_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b");
        let (dir, loose) = DataDir::open(&path).unwrap();
        assert_eq!(loose, None);
        assert_eq!(mode(dir.path()), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_, loose) = DataDir::open(&path).unwrap();
        assert_eq!(loose, Some(0o755));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            DataDir::open(&file),
            Err(PersistError::Corrupt { .. })
        ));
    }

    #[test]
    fn agent_svid_round_trips_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        assert!(dir.load_agent_svid(&td()).unwrap().is_none());
        let (cert, key) = self_signed("spiffe://example.org/signet/agent/x", 4_000_000_000);
        let id = AgentIdentity {
            spiffe_id: SpiffeId::parse("spiffe://example.org/signet/agent/x").unwrap(),
            cert_chain: vec![cert.clone()],
            private_key_pkcs8: key.clone(),
            expires_at: UNIX_EPOCH + Duration::from_secs(4_000_000_000),
        };
        dir.save_agent_svid(&id).unwrap();
        let file = tmp.path().join(AGENT_SVID_FILE);
        assert_eq!(mode(&file), 0o600);
        let back = dir.load_agent_svid(&td()).unwrap().unwrap();
        assert_eq!(back.spiffe_id, id.spiffe_id);
        assert_eq!(back.cert_chain, vec![cert]);
        assert_eq!(*back.private_key_pkcs8, *key);
        assert_eq!(back.expires_at, id.expires_at);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [AGENT_SVID_FILE]);
        // Another trust domain is refused.
        let other = TrustDomain::new("other.org").unwrap();
        assert!(dir.load_agent_svid(&other).is_err());
    }

    #[test]
    fn mismatched_or_garbled_agent_svid_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        let (cert, _) = self_signed("spiffe://example.org/signet/agent/x", 4_000_000_000);
        let (_, other_key) = self_signed("spiffe://example.org/signet/agent/y", 4_000_000_000);
        let id = AgentIdentity {
            spiffe_id: SpiffeId::parse("spiffe://example.org/signet/agent/x").unwrap(),
            cert_chain: vec![cert],
            private_key_pkcs8: other_key,
            expires_at: UNIX_EPOCH,
        };
        dir.save_agent_svid(&id).unwrap();
        let e = dir.load_agent_svid(&td()).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        std::fs::write(tmp.path().join(AGENT_SVID_FILE), "garbage").unwrap();
        assert!(dir.load_agent_svid(&td()).is_err());
    }

    fn read_all(dir: &DataDir) -> Result<Option<(StateHeader, Vec<LoadedEntry>)>, PersistError> {
        let Some(mut r) = dir.open_state()? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok(Some((r.header().clone(), out)))
    }

    #[test]
    fn state_round_trips_and_truncation_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        assert!(dir.open_state().unwrap().is_none());
        let entries = [
            pb::Entry {
                id: "e1".into(),
                spiffe_id: "spiffe://example.org/a".into(),
                selectors: vec![pb::Selector {
                    r#type: "unix".into(),
                    value: "uid:1".into(),
                }],
                ..Default::default()
            },
            pb::Entry {
                id: "e2".into(),
                ..Default::default()
            },
        ];
        let svid = SvidRef {
            cert_chain_der: b"chain",
            private_key_pkcs8: b"key",
            fingerprint: 9,
        };
        let agent = SpiffeId::parse("spiffe://example.org/signet/agent/x").unwrap();
        let records = vec![
            StateRecord {
                entry: entries[0].clone(),
                fingerprint: 5,
                svid: Some(svid),
            },
            StateRecord {
                entry: entries[1].clone(),
                fingerprint: 6,
                svid: None,
            },
        ];
        dir.save_state(&agent, 42, records.into_iter()).unwrap();
        assert_eq!(mode(&tmp.path().join(STATE_FILE)), 0o600);
        let (header, back) = read_all(&dir).unwrap().unwrap();
        assert_eq!(header.agent_id, agent.to_string());
        assert_eq!(header.revision, 42);
        assert_eq!(header.entry_count, 2);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].entry, entries[0]);
        assert_eq!(back[0].fingerprint, 5);
        let s = back[0].svid.as_ref().unwrap();
        assert_eq!(s.cert_chain_der, b"chain");
        assert_eq!(*s.private_key_pkcs8, b"key");
        assert_eq!(s.fingerprint, 9);
        assert_eq!(back[1].entry, entries[1]);
        assert!(back[1].svid.is_none());

        // A truncated file (last record cut, or a whole record missing) is refused.
        let bytes = std::fs::read(tmp.path().join(STATE_FILE)).unwrap();
        std::fs::write(tmp.path().join(STATE_FILE), &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(read_all(&dir), Err(PersistError::Corrupt { .. })));
        let (dir2, _) = DataDir::open(&tmp.path().join("two")).unwrap();
        let one = vec![StateRecord {
            entry: entries[1].clone(),
            fingerprint: 1,
            svid: None,
        }];
        dir2.save_state(&agent, 1, one.into_iter()).unwrap();
        let short = std::fs::read(tmp.path().join("two").join(STATE_FILE)).unwrap();
        // Header of a 2-entry file followed by one record.
        let header_len = usize::from(bytes[0]) + 1;
        let mut forged = bytes[..header_len].to_vec();
        let short_header_len = usize::from(short[0]) + 1;
        forged.extend_from_slice(&short[short_header_len..]);
        std::fs::write(tmp.path().join(STATE_FILE), &forged).unwrap();
        let e = read_all(&dir).unwrap_err().to_string();
        assert!(e.contains("2 entries announced, 1 found"), "{e}");
        std::fs::write(tmp.path().join(STATE_FILE), b"garbage").unwrap();
        assert!(read_all(&dir).is_err());
        dir.remove_state().unwrap();
        assert!(dir.open_state().unwrap().is_none());
        dir.remove_state().unwrap();
    }

    #[test]
    fn federated_bundles_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        assert!(dir.load_federated().unwrap().is_empty());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let td = TrustDomain::new("partner.org").unwrap();
        let mut b = Bundle::new(td.clone());
        b.x509_authorities.push(ca.der().to_vec());
        b.sequence = 3;
        let set = std::collections::BTreeMap::from([(td.clone(), b)]);
        dir.save_federated(&set).unwrap();
        assert_eq!(mode(&tmp.path().join(FEDERATED_FILE)), 0o600);
        let back = dir.load_federated().unwrap();
        assert_eq!(back[&td].x509_authorities, set[&td].x509_authorities);
        assert_eq!(back[&td].sequence, 3);
        std::fs::write(tmp.path().join(FEDERATED_FILE), b"[]").unwrap();
        assert!(dir.load_federated().is_err());
    }

    #[test]
    fn bundle_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        assert!(dir.load_bundle(&td()).unwrap().is_none());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let mut b = Bundle::new(td());
        b.x509_authorities.push(ca.der().to_vec());
        b.sequence = 7;
        dir.save_bundle(&b).unwrap();
        let back = dir.load_bundle(&td()).unwrap().unwrap();
        assert_eq!(back.x509_authorities, b.x509_authorities);
        assert_eq!(back.sequence, 7);
    }
}
