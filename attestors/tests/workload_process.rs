//! Process pinning and the `unix` workload attestor, on live processes of this machine (the test
//! process itself and children it spawns) and on fixture procfs roots.

// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use signet_attestors::workload::{
    AttestError, CgroupAttestor, CgroupConfig, PeerCredentials, PinnedProcess, SystemdAttestor,
    UnixAttestor, UnixConfig, WorkloadAttestor, attest_process,
};

fn me() -> PeerCredentials {
    PeerCredentials {
        pid: std::process::id(),
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

fn creds_of(child: &Child) -> PeerCredentials {
    PeerCredentials {
        pid: child.id(),
        ..me()
    }
}

/// SHA-256 by the coreutils tool, independent of the code under test.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn values(selectors: &[signet_attestors::workload::Selector]) -> Vec<String> {
    selectors.iter().map(ToString::to_string).collect()
}

/// Name of `id` in a `name:x:id:...` database file, if listed there.
fn name_in(file: &str, id: u32) -> Option<String> {
    fs::read_to_string(file).ok()?.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)? == &id.to_string()).then(|| fields[0].to_owned())
    })
}

fn find_in_path(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap()
}

/// Spawns a copy of `sleep` from a temporary directory (so the test can rename or delete it).
fn spawn_copied_sleep(dir: &Path) -> (Child, PathBuf) {
    let copy = dir.join("signet-test-sleep");
    fs::copy(find_in_path("sleep"), &copy).unwrap();
    let child = Command::new(&copy)
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (child, copy)
}

/// Waits until `child` has exited without reaping it (it stays a zombie).
fn wait_exited_not_reaped(child: &Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::waitid(
        rustix::process::WaitId::Pid(pid),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
    )
    .unwrap();
}

#[tokio::test]
async fn unix_selectors_of_this_test_process() {
    let creds = me();
    let process = PinnedProcess::pin(creds).unwrap();
    assert!(process.has_pidfd(), "this kernel offers pidfd_open");
    let unix = UnixAttestor::new(UnixConfig::default()).unwrap();
    let got = values(&unix.attest(&process).await.unwrap());

    let exe = std::env::current_exe().unwrap();
    let mut want = vec![
        format!("unix:uid:{}", creds.uid),
        format!("unix:gid:{}", creds.gid),
        format!("unix:path:{}", exe.display()),
        format!("unix:sha256:{}", sha256sum(&exe)),
    ];
    if let Some(user) = name_in("/etc/passwd", creds.uid) {
        want.push(format!("unix:user:{user}"));
    }
    if let Some(group) = name_in("/etc/group", creds.gid) {
        want.push(format!("unix:group:{group}"));
    }
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let groups = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap();
    for gid in groups.split_whitespace() {
        want.push(format!("unix:supplementary_gid:{gid}"));
    }
    for selector in &want {
        assert!(got.contains(selector), "{selector} missing from {got:?}");
    }
    process.ensure_same().unwrap();
}

#[tokio::test]
async fn executable_is_hashed_once_per_version() {
    let process = PinnedProcess::pin(me()).unwrap();
    let unix = UnixAttestor::new(UnixConfig::default()).unwrap();
    let first = unix.attest(&process).await.unwrap();
    let second = unix.attest(&process).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(unix.hashes_computed(), 1);

    // A clone shares the cache; an attestor without cache hashes every time.
    assert_eq!(unix.clone().attest(&process).await.unwrap(), first);
    assert_eq!(unix.hashes_computed(), 1);
    let uncached = UnixAttestor::new(UnixConfig {
        hash_cache_entries: 0,
        ..UnixConfig::default()
    })
    .unwrap();
    uncached.attest(&process).await.unwrap();
    uncached.attest(&process).await.unwrap();
    assert_eq!(uncached.hashes_computed(), 2);
}

#[tokio::test]
async fn touched_executable_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, copy) = spawn_copied_sleep(dir.path());
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    let unix = UnixAttestor::new(UnixConfig::default()).unwrap();
    let first = unix.attest(&process).await.unwrap();
    unix.attest(&process).await.unwrap();
    assert_eq!(unix.hashes_computed(), 1);
    // New mtime and ctime, same content: the cache key changes, so the file is read again.
    let touched = Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(&copy)
        .status()
        .unwrap();
    assert!(touched.success());
    assert_eq!(unix.attest(&process).await.unwrap(), first);
    assert_eq!(unix.hashes_computed(), 2);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn hashing_and_path_can_be_turned_off_and_limited() {
    let process = PinnedProcess::pin(me()).unwrap();
    let no_hash = UnixAttestor::new(UnixConfig {
        hash_executable: false,
        ..UnixConfig::default()
    })
    .unwrap();
    let got = values(&no_hash.attest(&process).await.unwrap());
    assert!(got.iter().any(|s| s.starts_with("unix:path:")), "{got:?}");
    assert!(
        !got.iter().any(|s| s.starts_with("unix:sha256:")),
        "{got:?}"
    );

    let no_path = UnixAttestor::new(UnixConfig {
        discover_workload_path: false,
        lookup_names: false,
        ..UnixConfig::default()
    })
    .unwrap();
    let got = values(&no_path.attest(&process).await.unwrap());
    assert!(
        got.iter().all(|s| s.starts_with("unix:uid:")
            || s.starts_with("unix:gid:")
            || s.starts_with("unix:supplementary_gid:")),
        "{got:?}"
    );

    let tiny = UnixAttestor::new(UnixConfig {
        max_hash_size: 1024,
        ..UnixConfig::default()
    })
    .unwrap();
    let err = tiny.attest(&process).await.unwrap_err();
    assert!(
        matches!(err, AttestError::ExecutableTooLarge { limit: 1024, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn child_process_path_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, copy) = spawn_copied_sleep(dir.path());
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    let got = values(
        &UnixAttestor::new(UnixConfig::default())
            .unwrap()
            .attest(&process)
            .await
            .unwrap(),
    );
    assert!(
        got.contains(&format!("unix:path:{}", copy.display())),
        "{got:?}"
    );
    assert!(
        got.contains(&format!("unix:sha256:{}", sha256sum(&copy))),
        "{got:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn deleted_executable_gets_no_path_or_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, copy) = spawn_copied_sleep(dir.path());
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    fs::remove_file(&copy).unwrap();
    let got = values(
        &UnixAttestor::new(UnixConfig::default())
            .unwrap()
            .attest(&process)
            .await
            .unwrap(),
    );
    assert!(got.contains(&format!("unix:uid:{}", me().uid)), "{got:?}");
    assert!(
        !got.iter()
            .any(|s| s.starts_with("unix:path:") || s.starts_with("unix:sha256:")),
        "{got:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn exited_and_reaped_process_is_detected() {
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    assert!(process.still_same().unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!process.still_same().unwrap());
    let err = process.ensure_same().unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");
    assert!(err.is_process_gone());

    // Pinning it now fails (unless the pid was already reused, which is then another process).
    match PinnedProcess::pin(creds_of(&child)) {
        Err(AttestError::ProcessExited { .. }) => {}
        Ok(other) => assert_ne!(other.start_time(), process.start_time()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn zombie_is_detected() {
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    child.kill().unwrap();
    wait_exited_not_reaped(&child);
    // /proc/<pid> still exists, with state Z and the same start time.
    assert!(!process.still_same().unwrap());
    let err = PinnedProcess::pin(creds_of(&child)).unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");
    child.wait().unwrap();
}

#[tokio::test]
async fn reads_after_exit_fail_instead_of_describing_another_process() {
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let unix = UnixAttestor::new(UnixConfig::default()).unwrap();
    let err = unix.attest(&process).await.unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");
    let cgroup = CgroupAttestor::new(CgroupConfig::default()).unwrap();
    let err = attest_process(&process, &[&cgroup]).await.unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");
}

#[test]
fn exec_after_pin_is_detected() {
    // The shell reads one line, then becomes `cat`; cat echoing a line proves the exec is done.
    let mut child = Command::new("sh")
        .args(["-c", "read line; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let process = PinnedProcess::pin(creds_of(&child)).unwrap();
    assert!(process.still_same().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\nping\n").unwrap();
    let mut echoed = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut echoed)
        .unwrap();
    assert_eq!(echoed, "ping\n");
    let err = process.ensure_same().unwrap_err();
    assert!(matches!(err, AttestError::ProcessExecuted { .. }), "{err}");
    drop(stdin);
    child.wait().unwrap();
}

#[tokio::test]
async fn all_attestors_on_this_process() {
    let process = PinnedProcess::pin(me()).unwrap();
    let unix = UnixAttestor::new(UnixConfig::default()).unwrap();
    let cgroup = CgroupAttestor::new(CgroupConfig::default()).unwrap();
    let systemd = SystemdAttestor::new();
    let got = attest_process(&process, &[&unix, &cgroup, &systemd])
        .await
        .unwrap();
    let got = values(&got);
    assert!(got.contains(&format!("unix:uid:{}", me().uid)), "{got:?}");
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(got, sorted, "sorted and without duplicates");
}

#[test]
fn pin_with_a_pidfd_from_the_caller() {
    let pid = rustix::process::Pid::from_raw(i32::try_from(std::process::id()).unwrap()).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let process = PinnedProcess::pin_pidfd(pidfd, me()).unwrap();
    assert!(process.has_pidfd());
    process.ensure_same().unwrap();

    // A pidfd of another process than the credentials name.
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let err = PinnedProcess::pin_pidfd(pidfd, creds_of(&child)).unwrap_err();
    assert!(matches!(err, AttestError::PidfdMismatch { .. }), "{err}");

    // A pidfd of a process that has exited and been reaped.
    let child_pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let pidfd =
        rustix::process::pidfd_open(child_pid, rustix::process::PidfdFlags::empty()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let err = PinnedProcess::pin_pidfd(pidfd, creds_of(&child)).unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");

    // Not a pidfd at all.
    let file: std::os::fd::OwnedFd = fs::File::open("/proc/self/stat").unwrap().into();
    let err = PinnedProcess::pin_pidfd(file, me()).unwrap_err();
    assert!(matches!(err, AttestError::ProcMalformed { .. }), "{err}");
}

// ---- fixture procfs roots ----

const PID: u32 = 4242;

fn stat_line(start_time: u64) -> String {
    format!(
        "{PID} (my app) S 1 {PID} {PID} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start_time} 1000 \
         100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
    )
}

fn fixture_root(start_time: u64, status: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(PID.to_string());
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("stat"), stat_line(start_time)).unwrap();
    fs::write(dir.join("status"), status).unwrap();
    root
}

const STATUS_1000: &str = "Name:\tmy app\nUid:\t1000\t1000\t1000\t1000\n\
                           Gid:\t1000\t1000\t1000\t1000\nGroups:\t27 998 1000\n";

fn creds_1000() -> PeerCredentials {
    PeerCredentials {
        pid: PID,
        uid: 1000,
        gid: 1000,
    }
}

#[test]
fn changed_start_time_means_replaced() {
    let root = fixture_root(123_456, STATUS_1000);
    let process = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap();
    assert!(!process.has_pidfd());
    assert_eq!(process.start_time(), 123_456);
    assert!(process.still_same().unwrap());

    // Same pid, another process: the kernel reused the pid.
    let stat = root.path().join(PID.to_string()).join("stat");
    fs::write(&stat, stat_line(999_999)).unwrap();
    assert!(!process.still_same().unwrap());
    let err = process.ensure_same().unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::ProcessReplaced {
                pinned: 123_456,
                now: 999_999,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_process_gone());

    // A zombie with the pinned start time is exited, not the same.
    fs::write(&stat, stat_line(123_456).replace(") S ", ") Z ")).unwrap();
    assert!(matches!(
        process.ensure_same().unwrap_err(),
        AttestError::ProcessExited { .. }
    ));
}

#[test]
fn pinning_a_missing_or_dead_process_fails() {
    let root = tempfile::tempdir().unwrap();
    let err = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");

    let root = fixture_root(1, STATUS_1000);
    let stat = root.path().join(PID.to_string()).join("stat");
    fs::write(&stat, stat_line(1).replace(") S ", ") Z ")).unwrap();
    let err = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap_err();
    assert!(matches!(err, AttestError::ProcessExited { .. }), "{err}");

    fs::write(&stat, "4242 (truncated").unwrap();
    let err = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap_err();
    assert!(matches!(err, AttestError::ProcMalformed { .. }), "{err}");
}

#[tokio::test]
async fn unix_selectors_from_fixture_status() {
    let root = fixture_root(1, STATUS_1000);
    let process = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap();
    let unix = UnixAttestor::new(UnixConfig {
        discover_workload_path: false,
        lookup_names: false,
        ..UnixConfig::default()
    })
    .unwrap();
    let mut got = values(&unix.attest(&process).await.unwrap());
    got.sort();
    assert_eq!(
        got,
        [
            "unix:gid:1000",
            "unix:supplementary_gid:1000",
            "unix:supplementary_gid:27",
            "unix:supplementary_gid:998",
            "unix:uid:1000",
        ]
    );
}

#[tokio::test]
async fn credentials_changed_since_connect_are_refused() {
    // The socket says uid 1000, but the process now runs as uid 0 (or the other way round).
    let status = STATUS_1000.replace("Uid:\t1000\t1000", "Uid:\t1000\t0");
    let root = fixture_root(1, &status);
    let process = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap();
    let unix = UnixAttestor::new(UnixConfig {
        discover_workload_path: false,
        ..UnixConfig::default()
    })
    .unwrap();
    let err = unix.attest(&process).await.unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::CredentialsChanged {
                peer_uid: 1000,
                uid: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_status_is_an_error() {
    let root = fixture_root(1, "Name:\tx\nUid:\tnobody\n");
    let process = PinnedProcess::pin_in(root.path(), creds_1000()).unwrap();
    let err = UnixAttestor::new(UnixConfig::default())
        .unwrap()
        .attest(&process)
        .await
        .unwrap_err();
    assert!(matches!(err, AttestError::ProcMalformed { .. }), "{err}");
    assert!(err.to_string().contains("status"), "{err}");
}
