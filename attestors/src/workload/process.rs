//! Pinning the peer process of a Workload API connection against pid reuse.
//!
//! The pid in `SO_PEERCRED` is only a number: the process can exit while the agent attests it,
//! and the kernel can hand the same pid to another process. [`PinnedProcess::pin`] is called as
//! soon as the connection is accepted and holds on to the process three ways:
//!
//! 1. a pidfd (`pidfd_open`, Linux 5.3+), which keeps referring to the original process: once it
//!    exits the pidfd polls readable, whatever later gets the same pid;
//! 2. a directory handle on `/proc/<pid>`: every later read goes through it, and the kernel fails
//!    such reads with `ESRCH` once the original process is gone, even if the pid is reused;
//! 3. the start time (field 22 of `/proc/<pid>/stat`), compared again after attestation, and the
//!    identity (device, inode) of the executable, so an `execve` in between is noticed too.
//!
//! What pinning cannot fix: the pid in `SO_PEERCRED` is the one of the process that *connected*.
//! If that process exited and its pid was reused before the agent even accepted the connection,
//! the pin describes the newcomer. The socket option `SO_PEERPIDFD` (Linux 6.5) closes that
//! window; pidfds obtained that way can be passed to [`PinnedProcess::pin_pidfd`].

use std::{
    ffi::OsString,
    fmt,
    fs::File,
    io::{self, Read},
    os::{fd::OwnedFd, unix::ffi::OsStringExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use rustix::{
    event::{PollFd, PollFlags, Timespec},
    fs::{AtFlags, Mode, OFlags},
    io::Errno,
    process::{Pid, PidfdFlags},
};

use super::AttestError;

/// Where procfs is mounted on a normal system.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// What the kernel reported for the peer of a Unix socket (`SO_PEERCRED`): the process that
/// connected and its effective uid and gid at `connect` time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// Process id, in the agent's pid namespace.
    pub pid: u32,
    /// Effective user id, in the agent's user namespace.
    pub uid: u32,
    /// Effective group id, in the agent's user namespace.
    pub gid: u32,
}

/// A process pinned at accept time; attestors read it only through this handle.
///
/// Cheap to clone (the handles are shared).
#[derive(Clone)]
pub struct PinnedProcess {
    inner: Arc<Inner>,
}

struct Inner {
    creds: PeerCredentials,
    start_time: u64,
    dir_path: PathBuf,
    dir: OwnedFd,
    pidfd: Option<OwnedFd>,
    exe: Option<FileId>,
}

/// Device and inode of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// The parts of `/proc/<pid>/stat` that pinning needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// Zombie or dead (`Z`, `X`, `x`).
    dead: bool,
    /// Field 22: clock ticks after boot.
    start_time: u64,
}

/// Result of comparing the process now with the pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Same,
    Exited,
    Replaced { now: u64 },
    Executed,
}

impl PinnedProcess {
    /// Pins the process of `creds` under `/proc`, with a pidfd where the kernel supports it.
    pub fn pin(creds: PeerCredentials) -> Result<Self, AttestError> {
        Self::pin_in(DEFAULT_PROC_ROOT, creds)
    }

    /// Pins the process of `creds` under another procfs root. A pidfd is opened only when
    /// `proc_root` is `/proc` (another root, such as a test fixture, may not describe the
    /// processes this kernel knows by those pids).
    pub fn pin_in(
        proc_root: impl Into<PathBuf>,
        creds: PeerCredentials,
    ) -> Result<Self, AttestError> {
        let proc_root = proc_root.into();
        let pid = to_pid(creds.pid)?;
        let pidfd = if proc_root == Path::new(DEFAULT_PROC_ROOT) {
            open_pidfd(pid, creds.pid)?
        } else {
            None
        };
        Self::pin_with(proc_root, creds, pidfd)
    }

    /// Pins the process of `creds` with a pidfd the caller already holds, e.g. from the socket
    /// option `SO_PEERPIDFD`, which names the connecting process without any pid-reuse window.
    /// The pidfd must refer to `creds.pid`; the pin fails with [`AttestError::ProcessReplaced`]
    /// otherwise.
    pub fn pin_pidfd(pidfd: OwnedFd, creds: PeerCredentials) -> Result<Self, AttestError> {
        to_pid(creds.pid)?;
        let path = PathBuf::from(format!("/proc/self/fdinfo/{}", raw_fd(&pidfd)));
        let fdinfo =
            std::fs::read_to_string(&path).map_err(|source| AttestError::ProcUnreadable {
                path: path.clone(),
                source,
            })?;
        let holder = fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("Pid:"))
            .map(str::trim)
            .ok_or_else(|| AttestError::ProcMalformed {
                path: path.clone(),
                reason: "no Pid: line (not a pidfd?)".into(),
            })?;
        // "-1" once the process has exited and been reaped.
        match holder.parse::<i64>() {
            Ok(-1) => return Err(AttestError::ProcessExited { pid: creds.pid }),
            Ok(p) if p == i64::from(creds.pid) => {}
            Ok(holder) => {
                return Err(AttestError::PidfdMismatch {
                    pid: creds.pid,
                    holder,
                });
            }
            Err(_) => {
                return Err(AttestError::ProcMalformed {
                    path,
                    reason: format!("Pid: {holder:?} is not a number"),
                });
            }
        }
        Self::pin_with(PathBuf::from(DEFAULT_PROC_ROOT), creds, Some(pidfd))
    }

    fn pin_with(
        proc_root: PathBuf,
        creds: PeerCredentials,
        pidfd: Option<OwnedFd>,
    ) -> Result<Self, AttestError> {
        let pid = creds.pid;
        let dir_path = proc_root.join(pid.to_string());
        let dir = rustix::fs::open(
            &dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::SRCH => AttestError::ProcessExited { pid },
            e => AttestError::ProcUnreadable {
                path: dir_path.clone(),
                source: e.into(),
            },
        })?;
        let stat = read_stat(&dir, &dir_path, pid)?;
        if stat.dead {
            return Err(AttestError::ProcessExited { pid });
        }
        if let Some(fd) = &pidfd
            && pidfd_exited(fd, pid)?
        {
            return Err(AttestError::ProcessExited { pid });
        }
        // The executable may be unreadable (kernel thread, another user's process for an
        // unprivileged agent); then the exec check is skipped and the start time must do.
        let exe = exe_id(&dir).ok();
        Ok(Self {
            inner: Arc::new(Inner {
                creds,
                start_time: stat.start_time,
                dir_path,
                dir,
                pidfd,
                exe,
            }),
        })
    }

    /// The pinned pid.
    pub fn pid(&self) -> u32 {
        self.inner.creds.pid
    }

    /// The effective uid the kernel recorded on the socket.
    pub fn uid(&self) -> u32 {
        self.inner.creds.uid
    }

    /// The effective gid the kernel recorded on the socket.
    pub fn gid(&self) -> u32 {
        self.inner.creds.gid
    }

    /// The peer credentials the process was pinned with.
    pub fn credentials(&self) -> PeerCredentials {
        self.inner.creds
    }

    /// Start time of the process (clock ticks after boot), as recorded at pin time.
    pub fn start_time(&self) -> u64 {
        self.inner.start_time
    }

    /// Whether the pin holds a pidfd.
    pub fn has_pidfd(&self) -> bool {
        self.inner.pidfd.is_some()
    }

    /// The `/proc/<pid>` directory of the process.
    pub fn proc_dir(&self) -> &Path {
        &self.inner.dir_path
    }

    /// Whether the process is still the pinned one: alive (not a zombie), same start time, and
    /// running the same executable when that could be read at pin time. `Ok(false)` when it
    /// exited or was replaced; `Err` when `/proc` cannot be read for another reason.
    pub fn still_same(&self) -> Result<bool, AttestError> {
        Ok(self.liveness()? == Liveness::Same)
    }

    /// Like [`still_same`](Self::still_same), but says why not: [`AttestError::ProcessExited`],
    /// [`AttestError::ProcessReplaced`] or [`AttestError::ProcessExecuted`].
    pub fn ensure_same(&self) -> Result<(), AttestError> {
        let pid = self.pid();
        match self.liveness()? {
            Liveness::Same => Ok(()),
            Liveness::Exited => Err(AttestError::ProcessExited { pid }),
            Liveness::Replaced { now } => Err(AttestError::ProcessReplaced {
                pid,
                pinned: self.inner.start_time,
                now,
            }),
            Liveness::Executed => Err(AttestError::ProcessExecuted { pid }),
        }
    }

    fn liveness(&self) -> Result<Liveness, AttestError> {
        let inner = &*self.inner;
        let pid = inner.creds.pid;
        if let Some(fd) = &inner.pidfd
            && pidfd_exited(fd, pid)?
        {
            return Ok(Liveness::Exited);
        }
        let stat = match read_stat(&inner.dir, &inner.dir_path, pid) {
            Ok(stat) => stat,
            Err(AttestError::ProcessExited { .. }) => return Ok(Liveness::Exited),
            Err(e) => return Err(e),
        };
        if stat.dead {
            return Ok(Liveness::Exited);
        }
        if stat.start_time != inner.start_time {
            return Ok(Liveness::Replaced {
                now: stat.start_time,
            });
        }
        if let Some(pinned) = inner.exe {
            match exe_id(&inner.dir) {
                Ok(now) if now == pinned => {}
                Ok(_) => return Ok(Liveness::Executed),
                Err(Errno::SRCH | Errno::NOENT) => return Ok(Liveness::Exited),
                Err(e) => {
                    return Err(AttestError::ProcUnreadable {
                        path: inner.dir_path.join("exe"),
                        source: e.into(),
                    });
                }
            }
        }
        Ok(Liveness::Same)
    }

    /// Device and inode of the executable as seen at pin time, if it could be read.
    pub(crate) fn pinned_exe(&self) -> Option<FileId> {
        self.inner.exe
    }

    /// Turns a failed access to `name` into the right error: if the process is no longer the
    /// pinned one, say so (that is the cause); otherwise report the access error.
    fn access_error(&self, name: &str, errno: Errno) -> AttestError {
        let pid = self.pid();
        if errno == Errno::SRCH {
            return AttestError::ProcessExited { pid };
        }
        match self.ensure_same() {
            Err(gone) if gone.is_process_gone() => gone,
            _ => AttestError::ProcUnreadable {
                path: self.inner.dir_path.join(name),
                source: errno.into(),
            },
        }
    }

    /// Opens `/proc/<pid>/<name>` through the pinned directory (for `exe`, this opens the
    /// executable itself).
    pub(crate) fn open(&self, name: &str) -> Result<File, AttestError> {
        rustix::fs::openat(
            &self.inner.dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| self.access_error(name, e))
    }

    /// Reads `/proc/<pid>/<name>` through the pinned directory. Invalid UTF-8 (a process name can
    /// hold any byte) is replaced, which never matters for the lines attestors parse.
    pub(crate) fn read_to_string(&self, name: &str) -> Result<String, AttestError> {
        let mut file = self.open(name)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| self.access_error(name, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Reads the symbolic link `/proc/<pid>/<name>` through the pinned directory.
    pub(crate) fn read_link(&self, name: &str) -> Result<OsString, AttestError> {
        rustix::fs::readlinkat(&self.inner.dir, name, Vec::new())
            .map(|target| OsString::from_vec(target.into_bytes()))
            .map_err(|e| self.access_error(name, e))
    }

    /// The path of `/proc/<pid>/<name>`, for error messages.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.inner.dir_path.join(name)
    }
}

impl fmt::Debug for PinnedProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedProcess")
            .field("pid", &self.inner.creds.pid)
            .field("uid", &self.inner.creds.uid)
            .field("gid", &self.inner.creds.gid)
            .field("start_time", &self.inner.start_time)
            .field("pidfd", &self.inner.pidfd.is_some())
            .field("proc_dir", &self.inner.dir_path)
            .finish()
    }
}

fn to_pid(pid: u32) -> Result<Pid, AttestError> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(AttestError::InvalidPid { pid })
}

fn raw_fd(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// `pidfd_open`, or `None` where the kernel (or a seccomp filter) does not offer it.
fn open_pidfd(pid: Pid, raw: u32) -> Result<Option<OwnedFd>, AttestError> {
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::SRCH) => Err(AttestError::ProcessExited { pid: raw }),
        // ENOSYS: kernel before 5.3; EPERM/EACCES: seccomp; EINVAL: not a thread-group leader.
        // The /proc directory handle and the start time still pin the process.
        Err(_) => Ok(None),
    }
}

/// A pidfd polls readable once its process has exited (zombie or reaped).
fn pidfd_exited(fd: &OwnedFd, pid: u32) -> Result<bool, AttestError> {
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(!fds[0].revents().is_empty()),
            Err(Errno::INTR) => {}
            Err(e) => {
                return Err(AttestError::ProcUnreadable {
                    path: PathBuf::from(format!("pidfd of process {pid}")),
                    source: io::Error::from(e),
                });
            }
        }
    }
}

#[allow(clippy::useless_conversion)] // st_dev and st_ino are c_ulong on some targets
fn exe_id(dir: &OwnedFd) -> Result<FileId, Errno> {
    let st = rustix::fs::statat(dir, "exe", AtFlags::empty())?;
    Ok(FileId {
        dev: u64::from(st.st_dev),
        ino: u64::from(st.st_ino),
    })
}

fn read_stat(dir: &OwnedFd, dir_path: &Path, pid: u32) -> Result<Stat, AttestError> {
    let path = dir_path.join("stat");
    let gone_or = |e: Errno| match e {
        Errno::SRCH => AttestError::ProcessExited { pid },
        e => AttestError::ProcUnreadable {
            path: path.clone(),
            source: e.into(),
        },
    };
    let fd = rustix::fs::openat(dir, "stat", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(gone_or)?;
    let mut bytes = Vec::new();
    File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(|e| gone_or(Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
    parse_stat(&String::from_utf8_lossy(&bytes)).map_err(|reason| AttestError::ProcMalformed {
        path: path.clone(),
        reason,
    })
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Result<Stat, String> {
    let close = text
        .rfind(')')
        .ok_or_else(|| "no ')' closing the command name".to_string())?;
    let mut fields = text[close + 1..].split_ascii_whitespace();
    // Field 3 is the state; field 22 the start time, 19 fields further.
    let state = fields.next().ok_or_else(|| "no state field".to_string())?;
    let start = fields
        .nth(18)
        .ok_or_else(|| "fewer than 22 fields".to_string())?;
    let start_time = start
        .parse::<u64>()
        .map_err(|_| format!("start time {start:?} is not a number"))?;
    Ok(Stat {
        dead: matches!(state, "Z" | "X" | "x"),
        start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                        987654 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";

    #[test]
    fn stat_start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.start_time, 987654);
        assert!(!stat.dead);
    }

    #[test]
    fn zombie_state_is_dead() {
        let stat = parse_stat(&STAT.replace(") S ", ") Z ")).unwrap();
        assert!(stat.dead);
    }

    #[test]
    fn truncated_stat_is_malformed() {
        assert!(
            parse_stat("12 (x) S 1 2 3")
                .unwrap_err()
                .contains("fewer than 22")
        );
        assert!(parse_stat("12 x S").unwrap_err().contains("')'"));
        assert!(
            parse_stat(&STAT.replace("987654", "soon"))
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn pid_zero_and_huge_pids_are_rejected() {
        for pid in [0, u32::MAX] {
            let err = PinnedProcess::pin(PeerCredentials {
                pid,
                uid: 0,
                gid: 0,
            })
            .unwrap_err();
            assert!(matches!(err, AttestError::InvalidPid { .. }), "{err}");
        }
    }
}
