//! The admin API: gRPC (`signet.admin.v1.Admin`) on a private Unix socket.
//!
//! The socket lives in a directory of mode 0700 and is itself 0600; on top of that every call is
//! checked against the caller's kernel credentials (SO_PEERCRED): only root and the issuer's own
//! user are served. Every call runs in a tracing span `rpc{api=admin method=.. actor=..}` and is
//! counted in `signet_rpcs_total`; every mutation appends an audit event with actor
//! `admin:uid=<uid>`. The audit RPCs (verify, trace, list) only read the log: no RPC writes an
//! arbitrary event.

mod audit;
mod convert;
mod delegation;
mod federation;
mod service;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub use service::{AdminOptions, AdminService};

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The socket directory could not be created or inspected.
    #[error("admin socket directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The socket directory is reachable by other users.
    #[error(
        "admin socket directory {path} has mode {mode:04o}: it must not be accessible by group or others (chmod 700 {path})"
    )]
    DirectoryTooOpen {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The socket directory belongs to another user.
    #[error("admin socket directory {path} belongs to uid {owner}, not to the issuer's uid {uid}")]
    DirectoryOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The issuer's uid.
        uid: u32,
    },
    /// Something else than a stale socket is at the socket path, or another issuer listens on it.
    #[error("admin socket {path}: {reason}")]
    InUse {
        /// The socket path.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// Binding the socket failed.
    #[error("cannot listen on admin socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The uid the issuer process runs as (owner of `/proc/self`).
pub fn own_uid() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// Creates the socket directory (0700) if needed, checks it, removes a stale socket and binds.
/// Returns the listener and the uid that owns the socket (the issuer's).
pub fn bind_socket(path: &Path) -> Result<(UnixListener, u32), SocketError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_err = |source| SocketError::Directory {
        path: dir.to_owned(),
        source,
    };
    let uid = own_uid().map_err(dir_err)?;
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
        }
        Err(e) => return Err(dir_err(e)),
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(dir_err(std::io::Error::other(
                    "exists and is not a directory",
                )));
            }
            if meta.mode() & 0o077 != 0 {
                return Err(SocketError::DirectoryTooOpen {
                    path: dir.to_owned(),
                    mode: meta.mode() & 0o7777,
                });
            }
            if meta.uid() != uid {
                return Err(SocketError::DirectoryOwner {
                    path: dir.to_owned(),
                    owner: meta.uid(),
                    uid,
                });
            }
        }
    }

    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                    reason: "exists and is not a socket".to_owned(),
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                    reason: "another process is listening on it (is an issuer already running?)"
                        .to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(|source| SocketError::Bind {
                path: path.to_owned(),
                source,
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Bind {
                path: path.to_owned(),
                source,
            });
        }
    }

    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok((listener, uid))
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    service: AdminService,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(signet_proto::admin::admin_server::AdminServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_directory_is_created_private_and_socket_is_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("private/nested/admin.sock");
        let (_l, uid) = bind_socket(&path).unwrap();
        assert_eq!(uid, own_uid().unwrap());
        let dir = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700);
        let sock = std::fs::metadata(&path).unwrap();
        assert_eq!(sock.mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn open_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = bind_socket(&dir.join("admin.sock"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has mode 0755: it must not be accessible by group or others"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn live_socket_is_not_stolen_but_stale_one_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let path = dir.join("admin.sock");
        let (listener, _) = bind_socket(&path).unwrap();
        let err = bind_socket(&path).unwrap_err().to_string();
        assert!(err.contains("another process is listening"), "{err}");
        drop(listener);
        // The socket file is left behind: a new issuer replaces it.
        assert!(path.exists());
        bind_socket(&path).unwrap();
    }

    #[tokio::test]
    async fn regular_file_at_socket_path_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::fs::write(dir.join("admin.sock"), b"x").unwrap();
        let err = bind_socket(&dir.join("admin.sock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists and is not a socket"), "{err}");
    }
}
