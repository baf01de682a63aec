//! The Workload API socket: directory 0755, socket world-connectable (callers are identified by
//! the kernel, `SO_PEERCRED`, not by file modes), stale sockets replaced, live ones respected.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("socket_path {path}: {reason}")]
pub struct SocketError {
    /// The socket path.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Binds the Workload API socket at `path` (see the module documentation).
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let err = |reason: String| SocketError {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| err("has no parent directory".into()))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err(format!("cannot create directory {}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err(format!("cannot chmod directory {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(
                    "another process is listening on it (is another signet-agent running?)".into(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => return Err(err("exists and is not a socket".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("cannot listen: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| err(format!("cannot chmod the socket: {e}")))?;
    Ok(listener)
}

/// Removes the socket file (at shutdown); errors are ignored.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[tokio::test]
    async fn binds_world_connectable_and_replaces_only_stale_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("public/api.sock");
        let l = bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(tmp.path().join("public")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o777);
        // A live socket is not taken over.
        let e = bind(&path).unwrap_err().to_string();
        assert!(e.contains("another process is listening"), "{e}");
        // A stale one is.
        drop(l);
        let _l = bind(&path).unwrap();
        // A regular file is not removed.
        let file = tmp.path().join("public/file");
        std::fs::write(&file, b"x").unwrap();
        let e = bind(&file).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        remove(&path);
        assert!(!path.exists());
    }
}
