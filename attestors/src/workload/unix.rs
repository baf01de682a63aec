//! The `unix` workload attestor: the caller's user and groups, and the executable it runs.
//!
//! Selectors (type `unix`):
//!
//! | value | source |
//! | --- | --- |
//! | `uid:<n>` | effective uid from `SO_PEERCRED` (the kernel's record of the connection) |
//! | `user:<name>` | that uid's name in the user database (NSS), when it has one |
//! | `gid:<n>` | effective gid from `SO_PEERCRED` |
//! | `group:<name>` | that gid's name in the group database, when it has one |
//! | `supplementary_gid:<n>` | each gid of the `Groups:` line of `/proc/<pid>/status` |
//! | `supplementary_group:<name>` | the name of each of those, when it has one |
//! | `path:<path>` | target of `/proc/<pid>/exe`, as seen in the process's mount namespace |
//! | `sha256:<hex>` | SHA-256 of the executable, read through `/proc/<pid>/exe` |
//!
//! `path` and `sha256` are not emitted for an executable that was deleted (or replaced) since
//! the process started: the name then no longer refers to what runs. See docs/attestors/unix.md.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::Read,
    os::unix::fs::MetadataExt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use aws_lc_rs::digest;
use serde::Deserialize;

use super::{AttestError, PinnedProcess, Selector, WorkloadAttestor, process::FileId};

/// Selector type of this attestor.
pub const SELECTOR_TYPE: &str = "unix";

/// Configuration of the `unix` attestor (agent config: `[workload_attestors.unix]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnixConfig {
    /// Emit `path` (and, with `hash_executable`, `sha256`). Needs ptrace read access to the
    /// workload (same uid, or `CAP_SYS_PTRACE`); without it attestation fails. Default `true`.
    pub discover_workload_path: bool,
    /// Emit `sha256` of the executable. Default `true`.
    pub hash_executable: bool,
    /// Largest executable hashed, in bytes; a larger one fails attestation. Default 512 MiB.
    pub max_hash_size: u64,
    /// Number of executable hashes kept, keyed by (device, inode, size, mtime, ctime), so a
    /// binary is hashed once until it changes. `0` disables the cache. Default 256.
    pub hash_cache_entries: usize,
    /// Emit `user`, `group` and `supplementary_group` (name lookups through NSS). Default `true`.
    pub lookup_names: bool,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self {
            discover_workload_path: true,
            hash_executable: true,
            max_hash_size: 512 * 1024 * 1024,
            hash_cache_entries: 256,
            lookup_names: true,
        }
    }
}

/// The `unix` workload attestor. Cheap to clone; clones share the hash cache.
#[derive(Clone, Debug)]
pub struct UnixAttestor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: UnixConfig,
    cache: Mutex<HashCache>,
    hashes_computed: AtomicU64,
}

impl UnixAttestor {
    /// Builds the attestor; rejects `max_hash_size = 0` with hashing on.
    pub fn new(config: UnixConfig) -> Result<Self, AttestError> {
        if config.discover_workload_path && config.hash_executable && config.max_hash_size == 0 {
            return Err(AttestError::Config(
                "unix.max_hash_size must be above 0 (set hash_executable = false to disable \
                 hashing)"
                    .into(),
            ));
        }
        let cache = HashCache::new(config.hash_cache_entries);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                cache: Mutex::new(cache),
                hashes_computed: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &UnixConfig {
        &self.shared.config
    }

    /// How many times an executable was actually read and hashed (cache misses), for metrics.
    pub fn hashes_computed(&self) -> u64 {
        self.shared.hashes_computed.load(Ordering::Relaxed)
    }

    /// Attests synchronously: reads `/proc`, looks up names, may hash a large file. The async
    /// [`WorkloadAttestor::attest`] runs this on Tokio's blocking pool.
    pub fn attest_blocking(&self, process: &PinnedProcess) -> Result<Vec<Selector>, AttestError> {
        let config = &self.shared.config;
        let pid = process.pid();
        let (uid, gid) = (process.uid(), process.gid());

        let status_text = process.read_to_string("status")?;
        let status = parse_status(&status_text).map_err(|reason| AttestError::ProcMalformed {
            path: process.path_of("status"),
            reason,
        })?;
        if status.euid != uid || status.egid != gid {
            return Err(AttestError::CredentialsChanged {
                pid,
                peer_uid: uid,
                peer_gid: gid,
                uid: status.euid,
                gid: status.egid,
            });
        }

        let mut out = vec![selector("uid", uid)];
        if config.lookup_names
            && let Some(name) = user_name(uid)
        {
            out.push(selector("user", name));
        }
        out.push(selector("gid", gid));
        if config.lookup_names
            && let Some(name) = group_name(gid)
        {
            out.push(selector("group", name));
        }
        for sgid in &status.groups {
            out.push(selector("supplementary_gid", sgid));
            if config.lookup_names
                && let Some(name) = group_name(*sgid)
            {
                out.push(selector("supplementary_group", name));
            }
        }

        if config.discover_workload_path {
            self.executable_selectors(process, &mut out)?;
        }
        Ok(out)
    }

    fn executable_selectors(
        &self,
        process: &PinnedProcess,
        out: &mut Vec<Selector>,
    ) -> Result<(), AttestError> {
        let config = &self.shared.config;
        let pid = process.pid();
        let exe = process.open("exe")?;
        let meta = exe
            .metadata()
            .map_err(|source| AttestError::ProcUnreadable {
                path: process.path_of("exe"),
                source,
            })?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if process.pinned_exe().is_some_and(|pinned| pinned != id) {
            return Err(AttestError::ProcessExecuted { pid });
        }
        if meta.nlink() == 0 {
            // Deleted (or replaced by a new file under the same name, as package upgrades do):
            // the path names another file now, and a hash of the old content would be checked
            // against a name that no longer exists. Emit neither.
            return Ok(());
        }
        let target = process.read_link("exe")?;
        // A path that is not UTF-8 cannot be a selector value without being altered.
        if let Ok(path) = target.into_string() {
            out.push(selector("path", path));
        }
        if config.hash_executable {
            let digest = self.sha256(pid, exe, &meta)?;
            out.push(selector("sha256", digest));
        }
        Ok(())
    }

    fn sha256(
        &self,
        pid: u32,
        mut exe: File,
        meta: &std::fs::Metadata,
    ) -> Result<String, AttestError> {
        let limit = self.shared.config.max_hash_size;
        if meta.len() > limit {
            return Err(AttestError::ExecutableTooLarge {
                pid,
                size: meta.len(),
                limit,
            });
        }
        let key = HashKey::of(meta);
        if let Some(hex) = self.cache().get(&key) {
            return Ok(hex);
        }
        let read_error = |source| AttestError::ProcUnreadable {
            path: format!("executable of process {pid}").into(),
            source,
        };
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = exe.read(&mut buf).map_err(read_error)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > limit {
                return Err(AttestError::ExecutableTooLarge {
                    pid,
                    size: total,
                    limit,
                });
            }
            ctx.update(&buf[..n]);
        }
        let after = exe.metadata().map_err(read_error)?;
        if HashKey::of(&after) != key || total != meta.len() {
            return Err(AttestError::ExecutableModified { pid });
        }
        self.shared.hashes_computed.fetch_add(1, Ordering::Relaxed);
        let hex = hex::encode(ctx.finish().as_ref());
        self.cache().insert(key, hex.clone());
        Ok(hex)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashCache> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        SELECTOR_TYPE
    }

    /// Runs [`UnixAttestor::attest_blocking`] on Tokio's blocking pool (a first hash of a large
    /// binary takes a while). Must be called within a Tokio runtime.
    async fn attest(&self, process: &PinnedProcess) -> Result<Vec<Selector>, AttestError> {
        let this = self.clone();
        let process = process.clone();
        tokio::task::spawn_blocking(move || this.attest_blocking(&process))
            .await
            .map_err(|e| AttestError::Task(e.to_string()))?
    }
}

fn selector(name: &str, value: impl std::fmt::Display) -> Selector {
    Selector::new(SELECTOR_TYPE, format!("{name}:{value}"))
}

fn user_name(uid: u32) -> Option<String> {
    uzers::get_user_by_uid(uid).and_then(|u| u.name().to_str().map(str::to_owned))
}

fn group_name(gid: u32) -> Option<String> {
    uzers::get_group_by_gid(gid).and_then(|g| g.name().to_str().map(str::to_owned))
}

/// The lines of `/proc/<pid>/status` the attestor uses.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Status {
    euid: u32,
    egid: u32,
    groups: Vec<u32>,
}

/// Parses `Uid:` and `Gid:` (real, effective, saved, filesystem) and `Groups:` (possibly empty).
fn parse_status(text: &str) -> Result<Status, String> {
    let mut euid = None;
    let mut egid = None;
    let mut groups = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Uid" => euid = Some(effective_id(key, rest)?),
            "Gid" => egid = Some(effective_id(key, rest)?),
            "Groups" => {
                groups = Some(
                    rest.split_ascii_whitespace()
                        .map(|g| {
                            g.parse::<u32>()
                                .map_err(|_| format!("Groups: entry {g:?} is not a number"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            _ => {}
        }
    }
    Ok(Status {
        euid: euid.ok_or("no Uid: line")?,
        egid: egid.ok_or("no Gid: line")?,
        groups: groups.ok_or("no Groups: line")?,
    })
}

fn effective_id(key: &str, rest: &str) -> Result<u32, String> {
    let ids = rest
        .split_ascii_whitespace()
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| format!("{key}: value {v:?} is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() != 4 {
        return Err(format!("{key}: has {} values, expected 4", ids.len()));
    }
    Ok(ids[1])
}

/// What identifies one version of a file well enough to reuse its hash. `ctime` is in the key
/// because, unlike `mtime`, no user can set it back after changing the content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct HashKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl HashKey {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A bounded map from file version to hex digest; the oldest entry leaves first.
#[derive(Debug)]
struct HashCache {
    capacity: usize,
    entries: HashMap<HashKey, String>,
    order: VecDeque<HashKey>,
}

impl HashCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &HashKey) -> Option<String> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: HashKey, hex: String) {
        if self.capacity == 0 || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        self.entries.insert(key, hex);
        self.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t17\nPid:\t17\n\
                          Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t64\n\
                          Groups:\t4 24 27 \nNStgid:\t17\n";

    #[test]
    fn status_gives_effective_ids_and_groups() {
        let status = parse_status(STATUS).unwrap();
        assert_eq!(
            status,
            Status {
                euid: 1001,
                egid: 101,
                groups: vec![4, 24, 27]
            }
        );
    }

    #[test]
    fn empty_groups_line_is_no_groups() {
        let status = parse_status(&STATUS.replace("Groups:\t4 24 27 ", "Groups:\t")).unwrap();
        assert!(status.groups.is_empty());
    }

    #[test]
    fn malformed_status_is_rejected() {
        assert!(
            parse_status(&STATUS.replace("Uid:", "Xid:"))
                .unwrap_err()
                .contains("no Uid")
        );
        assert!(
            parse_status(&STATUS.replace("\t1003", ""))
                .unwrap_err()
                .contains("3 values")
        );
        assert!(
            parse_status(&STATUS.replace("Groups:\t4", "Groups:\tfour"))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_status(&STATUS.replace("Groups:", "Grps:"))
                .unwrap_err()
                .contains("Groups")
        );
    }

    fn key(ino: u64) -> HashKey {
        HashKey {
            dev: 1,
            ino,
            size: 10,
            mtime: (0, 0),
            ctime: (0, 0),
        }
    }

    #[test]
    fn cache_evicts_oldest_and_zero_capacity_keeps_nothing() {
        let mut cache = HashCache::new(2);
        cache.insert(key(1), "a".into());
        cache.insert(key(2), "b".into());
        cache.insert(key(3), "c".into());
        assert_eq!(cache.get(&key(1)), None);
        assert_eq!(cache.get(&key(2)).as_deref(), Some("b"));
        assert_eq!(cache.get(&key(3)).as_deref(), Some("c"));

        let mut none = HashCache::new(0);
        none.insert(key(1), "a".into());
        assert_eq!(none.get(&key(1)), None);
    }

    #[test]
    fn zero_hash_limit_is_a_config_error() {
        let err = UnixAttestor::new(UnixConfig {
            max_hash_size: 0,
            ..UnixConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, AttestError::Config(_)), "{err}");
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = serde_json::from_str::<UnixConfig>(r#"{"hash_executables": false}"#).unwrap_err();
        assert!(err.to_string().contains("hash_executables"), "{err}");
        let config: UnixConfig = serde_json::from_str(r#"{"hash_executable": false}"#).unwrap();
        assert!(!config.hash_executable);
        assert!(config.discover_workload_path);
    }
}
