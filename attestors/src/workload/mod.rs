//! Workload attestors: what the kernel says about the process on the other end of a Workload API
//! connection, turned into selectors.
//!
//! The agent takes the peer credentials of a connection (`SO_PEERCRED`: pid, uid, gid), pins the
//! process at once ([`PinnedProcess::pin`](crate::workload::PinnedProcess::pin)), runs every
//! configured attestor against the pinned process, and checks the pin again afterwards
//! ([`attest_process`](crate::workload::attest_process) does all of that). Every file under
//! `/proc/<pid>` is read through a directory handle opened at pin time, so a pid recycled by
//! another process makes the reads fail instead of describing the newcomer.
//!
//! - [`unix`](crate::workload::unix): `unix:uid`, `unix:user`, `unix:gid`, `unix:group`,
//!   `unix:supplementary_gid`, `unix:supplementary_group`, `unix:path`, `unix:sha256`
//!   (docs/attestors/unix.md);
//! - [`cgroup`](crate::workload::cgroup): container identity from the cgroup path, `container:id`
//!   and `k8s:pod-uid` (docs/attestors/cgroup.md);
//! - [`systemd`](crate::workload::systemd): the systemd unit from the cgroup path, `systemd:id`
//!   and `systemd:user_unit` (docs/attestors/systemd.md).
//!
//! Attestors only read `/proc` (and the user and group databases); they never talk to a container
//! runtime, the kubelet or D-Bus.

pub mod cgroup;
mod error;
pub mod process;
pub mod systemd;
pub mod unix;

use std::fmt;

pub use cgroup::{CgroupAttestor, CgroupConfig};
pub use error::AttestError;
pub use process::{DEFAULT_PROC_ROOT, PeerCredentials, PinnedProcess};
pub use systemd::SystemdAttestor;
pub use unix::{UnixAttestor, UnixConfig};

/// A workload selector: `kind` is the selector type (the attestor's namespace: `unix`,
/// `container`, `k8s`, `systemd`), `value` everything after the first `:`.
///
/// `unix:uid:1000` is `Selector { kind: "unix", value: "uid:1000" }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// The selector type, e.g. `unix`.
    pub kind: String,
    /// The selector value, e.g. `uid:1000`.
    pub value: String,
}

impl Selector {
    /// Builds a selector.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A workload attestor: derives selectors for one pinned process.
///
/// Implementations read the process only through [`PinnedProcess`] so that a recycled pid yields
/// an error, never another process's selectors. An attestor that finds nothing to say (a process
/// outside any container, say) returns an empty list, not an error.
#[async_trait::async_trait]
pub trait WorkloadAttestor: Send + Sync {
    /// The attestor's name as used in configuration (`unix`, `cgroup`, `systemd`).
    fn name(&self) -> &'static str;

    /// The selectors of `process`. Callers must check the pin again afterwards
    /// ([`PinnedProcess::ensure_same`]) before using them; [`attest_process`] does.
    async fn attest(&self, process: &PinnedProcess) -> Result<Vec<Selector>, AttestError>;
}

/// Runs every attestor against `process`, then checks that the pinned process is still the same
/// one (alive, same start time, same executable). Returns the union of the selectors, sorted and
/// without duplicates.
///
/// Any attestor error fails the whole attestation: a partial set of selectors could match an entry
/// meant for a narrower set of workloads only by accident, so none are returned.
pub async fn attest_process(
    process: &PinnedProcess,
    attestors: &[&dyn WorkloadAttestor],
) -> Result<Vec<Selector>, AttestError> {
    let mut selectors = Vec::new();
    for attestor in attestors {
        selectors.extend(attestor.attest(process).await?);
    }
    process.ensure_same()?;
    selectors.sort();
    selectors.dedup();
    Ok(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_display_joins_kind_and_value() {
        assert_eq!(
            Selector::new("unix", "uid:1000").to_string(),
            "unix:uid:1000"
        );
    }
}
