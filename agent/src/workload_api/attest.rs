//! The agent's real [`WorkloadAttestation`]: the `unix`, `cgroup` and `systemd` workload
//! attestors of `signet-attestors`, run against the caller's process as pinned when its
//! connection was accepted, with the pin checked again afterwards.
//!
//! Any attestor error fails the whole attestation (a partial selector set could match an entry
//! by accident); a process that exited, was replaced (PID reuse), executed another program or
//! changed credentials meanwhile gives [`AttestationFailure::ProcessChanged`]. The Workload API
//! answers both with `Unavailable`.

use async_trait::async_trait;
use signet_attestors::workload::{
    AttestError, CgroupAttestor, CgroupConfig, PeerCredentials, PinnedProcess, SystemdAttestor,
    UnixAttestor, UnixConfig, WorkloadAttestor,
};

use super::{AttestationFailure, PeerCred, ProcessPin, WorkloadAttestation};

/// Attests callers with a fixed list of workload attestors.
pub struct ProcessAttestation {
    attestors: Vec<Box<dyn WorkloadAttestor>>,
}

impl std::fmt::Debug for ProcessAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.attestors.iter().map(|a| a.name()))
            .finish()
    }
}

impl ProcessAttestation {
    /// The standard set: `unix` (with `unix_config`), `cgroup` (with `cgroup_config`) and
    /// `systemd`. Fails on an invalid configuration.
    pub fn new(unix_config: UnixConfig, cgroup_config: CgroupConfig) -> Result<Self, AttestError> {
        Ok(Self::with_attestors(vec![
            Box::new(UnixAttestor::new(unix_config)?),
            Box::new(CgroupAttestor::new(cgroup_config)?),
            Box::new(SystemdAttestor::new()),
        ]))
    }

    /// Any list of attestors, run in order.
    pub fn with_attestors(attestors: Vec<Box<dyn WorkloadAttestor>>) -> Self {
        Self { attestors }
    }

    /// The pinned process of `peer`: the pin taken at accept time, or one taken now when the
    /// connection was not pinned (service mounted on another server).
    fn process(peer: &PeerCred) -> Result<PinnedProcess, AttestationFailure> {
        match &peer.pin {
            ProcessPin::Pinned(process) => Ok(process.clone()),
            ProcessPin::Failed(e) => Err(failure(peer.pid, "pin", e)),
            ProcessPin::NotPinned => {
                let pid = u32::try_from(peer.pid).map_err(|_| AttestationFailure::Attestor {
                    attestor: "pin".into(),
                    reason: format!("invalid peer pid {}", peer.pid),
                })?;
                PinnedProcess::pin(PeerCredentials {
                    pid,
                    uid: peer.uid,
                    gid: peer.gid,
                })
                .map_err(|e| failure(peer.pid, "pin", &e))
            }
        }
    }
}

#[async_trait]
impl WorkloadAttestation for ProcessAttestation {
    async fn attest(&self, peer: PeerCred) -> Result<Vec<(String, String)>, AttestationFailure> {
        let process = Self::process(&peer)?;
        let mut selectors = Vec::new();
        for attestor in &self.attestors {
            let found = attestor
                .attest(&process)
                .await
                .map_err(|e| failure(peer.pid, attestor.name(), &e))?;
            selectors.extend(found);
        }
        // The selectors describe the pinned process only if it is still the one that connected.
        process
            .ensure_same()
            .map_err(|e| failure(peer.pid, "pin", &e))?;
        selectors.sort();
        selectors.dedup();
        Ok(selectors.into_iter().map(|s| (s.kind, s.value)).collect())
    }
}

fn failure(pid: i32, attestor: &str, error: &AttestError) -> AttestationFailure {
    if error.is_process_gone() {
        AttestationFailure::ProcessChanged { pid }
    } else {
        AttestationFailure::Attestor {
            attestor: attestor.to_string(),
            reason: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn me() -> PeerCred {
        let meta = std::fs::metadata("/proc/self").unwrap();
        PeerCred {
            pid: i32::try_from(std::process::id()).unwrap(),
            uid: meta.uid(),
            gid: meta.gid(),
            pin: ProcessPin::NotPinned,
        }
    }

    fn quick_unix() -> UnixConfig {
        UnixConfig {
            hash_executable: false,
            lookup_names: false,
            ..UnixConfig::default()
        }
    }

    #[tokio::test]
    async fn attests_this_process_by_uid_and_path() {
        let attestation = ProcessAttestation::new(quick_unix(), CgroupConfig::default()).unwrap();
        let peer = me();
        let uid = peer.uid;
        let selectors = attestation.attest(peer).await.unwrap();
        assert!(selectors.contains(&("unix".into(), format!("uid:{uid}"))));
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(
            selectors.contains(&("unix".into(), format!("path:{}", exe.display()))),
            "{selectors:?}"
        );
        let mut sorted = selectors.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, selectors);
    }

    #[tokio::test]
    async fn a_failed_pin_fails_the_attestation() {
        let attestation = ProcessAttestation::new(quick_unix(), CgroupConfig::default()).unwrap();
        let mut peer = me();
        peer.pin = ProcessPin::Failed(std::sync::Arc::new(AttestError::ProcessExited {
            pid: std::process::id(),
        }));
        let pid = peer.pid;
        assert_eq!(
            attestation.attest(peer).await,
            Err(AttestationFailure::ProcessChanged { pid })
        );
        let mut peer = me();
        peer.pin = ProcessPin::Failed(std::sync::Arc::new(AttestError::Config("x".into())));
        assert!(matches!(
            attestation.attest(peer).await,
            Err(AttestationFailure::Attestor { attestor, .. }) if attestor == "pin"
        ));
    }

    #[tokio::test]
    async fn a_pid_that_is_no_process_cannot_be_attested() {
        let attestation = ProcessAttestation::new(quick_unix(), CgroupConfig::default()).unwrap();
        let mut peer = me();
        // Above the kernel's pid_max (at most 2^22).
        peer.pid = i32::MAX;
        assert!(attestation.attest(peer).await.is_err());
    }
}
