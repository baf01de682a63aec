//! Errors of the workload attestors.

use std::{io, path::PathBuf};

/// Why a workload could not be attested.
///
/// [`AttestError::is_process_gone`] tells the errors that mean "the caller went away or is no
/// longer the process that connected" from the agent's own trouble (permissions, `/proc` not
/// mounted, configuration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The peer credentials cannot describe a process (pid 0, or a pid beyond `i32`).
    #[error("invalid peer credentials: pid {pid} is not a process id")]
    InvalidPid {
        /// The pid the caller passed.
        pid: u32,
    },
    /// The process has exited (it may be a zombie not yet reaped).
    #[error("process {pid} has exited")]
    ProcessExited {
        /// The pinned pid.
        pid: u32,
    },
    /// The pid now belongs to another process: its start time differs from the pinned one.
    #[error(
        "process {pid} was replaced: start time {now} differs from {pinned} recorded when the \
         connection was accepted (pid reused)"
    )]
    ProcessReplaced {
        /// The pinned pid.
        pid: u32,
        /// Start time (clock ticks after boot) recorded at pin time.
        pinned: u64,
        /// Start time read now.
        now: u64,
    },
    /// The pidfd handed to [`PinnedProcess::pin_pidfd`](super::PinnedProcess::pin_pidfd) refers
    /// to another process than the pid of the peer credentials.
    #[error("the pidfd refers to process {holder}, not to the peer's pid {pid}")]
    PidfdMismatch {
        /// The pid of the peer credentials.
        pid: u32,
        /// The pid the pidfd refers to.
        holder: i64,
    },
    /// The process executed another program since it was pinned, so selectors read before and
    /// after may describe different programs.
    #[error("process {pid} executed another program during attestation")]
    ProcessExecuted {
        /// The pinned pid.
        pid: u32,
    },
    /// A file under `/proc` could not be read (not mounted, permission denied, ...).
    #[error("cannot read {}: {source}", path.display())]
    ProcUnreadable {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file under `/proc` does not have the format the kernel documents.
    #[error("malformed {}: {reason}", path.display())]
    ProcMalformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The process's effective uid or gid is no longer the one the kernel recorded on the socket
    /// when it connected (it called `setuid`/`setgid` since, or the socket was handed over).
    #[error(
        "process {pid} changed credentials since it connected: socket uid {peer_uid} gid \
         {peer_gid}, now effective uid {uid} gid {gid}"
    )]
    CredentialsChanged {
        /// The pinned pid.
        pid: u32,
        /// Uid from `SO_PEERCRED`.
        peer_uid: u32,
        /// Gid from `SO_PEERCRED`.
        peer_gid: u32,
        /// Effective uid from `/proc/<pid>/status`.
        uid: u32,
        /// Effective gid from `/proc/<pid>/status`.
        gid: u32,
    },
    /// The executable is larger than the configured hashing limit.
    #[error(
        "executable of process {pid} is {size} bytes, over the {limit}-byte limit for \
         unix:sha256 (raise max_hash_size or disable hash_executable)"
    )]
    ExecutableTooLarge {
        /// The pinned pid.
        pid: u32,
        /// Size of the executable in bytes.
        size: u64,
        /// Configured limit in bytes.
        limit: u64,
    },
    /// The executable changed (size, times or inode) while it was being hashed.
    #[error("executable of process {pid} was modified while it was hashed")]
    ExecutableModified {
        /// The pinned pid.
        pid: u32,
    },
    /// The cgroup hierarchies of the process name different containers or pods.
    #[error(
        "conflicting container identities in the cgroups of process {pid}: {first} and {second}"
    )]
    ConflictingCgroups {
        /// The pinned pid.
        pid: u32,
        /// One identity, as `container <id> [pod <uid>]`.
        first: String,
        /// Another identity.
        second: String,
    },
    /// The attestor configuration is invalid.
    #[error("workload attestor configuration: {0}")]
    Config(String),
    /// A blocking task of the attestor failed (panicked or was cancelled).
    #[error("workload attestor task failed: {0}")]
    Task(String),
}

impl AttestError {
    /// Whether the error means the caller is gone or is not the process that connected (exited,
    /// replaced, executed another program, changed credentials). The other errors are the
    /// agent's trouble: permissions, `/proc`, configuration.
    pub fn is_process_gone(&self) -> bool {
        matches!(
            self,
            Self::ProcessExited { .. }
                | Self::ProcessReplaced { .. }
                | Self::ProcessExecuted { .. }
                | Self::CredentialsChanged { .. }
        )
    }
}
