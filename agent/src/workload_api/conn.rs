//! Accepted Workload API connections: the kernel's credentials of the peer, and its process pinned
//! at accept time (before any request), so that a PID recycled while the agent attests the
//! caller cannot lend it another process's selectors. The byte stream goes through
//! [`Http2Rewrite`], which repairs the HTTP/2 `:authority` of clients other than grpc-go (see
//! [`super::authority`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use signet_attestors::workload::{AttestError, PeerCredentials, PinnedProcess};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::authority::Http2Rewrite;

/// The caller's process as pinned when its connection was accepted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProcessPin {
    /// Pinned at accept time; attestors read the process only through this handle.
    Pinned(PinnedProcess),
    /// Pinning at accept time failed: the process was already gone, or `/proc` is unreadable.
    Failed(Arc<AttestError>),
    /// Not pinned at accept time: the service runs on a server other than
    /// [`serve`](super::serve), or the kernel gave no credentials.
    NotPinned,
}

/// What the server knows about a connection (tonic puts it in every request's extensions).
#[derive(Debug, Clone)]
pub struct WorkloadConnectInfo {
    /// Peer address and credentials (`SO_PEERCRED`).
    pub uds: UdsConnectInfo,
    /// The peer's process, pinned at accept time.
    pub pin: ProcessPin,
}

/// An accepted Unix stream with its [`WorkloadConnectInfo`], read through [`Http2Rewrite`].
pub(crate) struct PeerConn {
    io: Http2Rewrite<UnixStream>,
    info: WorkloadConnectInfo,
}

impl PeerConn {
    /// Takes the peer's credentials and pins its process. Pinning reads a few files of `/proc`
    /// and opens a pidfd: microseconds, done in the accept loop so that it precedes any request.
    pub(crate) fn accept(io: UnixStream) -> Self {
        let uds = io.connect_info();
        let pin = match uds
            .peer_cred
            .and_then(|c| Some((c.pid()?, c.uid(), c.gid())))
        {
            Some((pid, uid, gid)) => match u32::try_from(pid) {
                Ok(pid) => match PinnedProcess::pin(PeerCredentials { pid, uid, gid }) {
                    Ok(pinned) => ProcessPin::Pinned(pinned),
                    Err(e) => ProcessPin::Failed(Arc::new(e)),
                },
                Err(_) => ProcessPin::Failed(Arc::new(AttestError::InvalidPid {
                    pid: pid.cast_unsigned(),
                })),
            },
            None => ProcessPin::NotPinned,
        };
        Self {
            io: Http2Rewrite::new(io),
            info: WorkloadConnectInfo { uds, pin },
        }
    }
}

impl Connected for PeerConn {
    type ConnectInfo = WorkloadConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
