//! The TLS accept loop shared by the issuer's TLS listeners: TCP connections are accepted, their
//! handshakes run concurrently (bounded, each with a deadline), and the established connections
//! are handed to the server through a channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long the loop backs off after a failed `accept` (e.g. out of file descriptors) instead of
/// spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How a listener runs its TLS handshakes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handshakes {
    /// The listener's name in logs (`node API`, `bundle endpoint`).
    pub(crate) listener: &'static str,
    /// Concurrent handshakes at most.
    pub(crate) max_concurrent: usize,
    /// Time allowed for one handshake.
    pub(crate) timeout: Duration,
}

/// Accepts TCP connections on `listener`, runs their TLS handshakes with `acceptor` and sends
/// each established connection, as `wrap` makes it, to `tx`. Handshake failures are logged at
/// debug level and dropped. Ends when the receiver of `tx` is gone.
pub(crate) async fn accept_loop<C, W>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: Handshakes,
    tx: mpsc::Sender<C>,
    wrap: W,
) where
    C: Send + 'static,
    W: Fn(TlsStream<TcpStream>, SocketAddr) -> C + Clone + Send + 'static,
{
    let name = handshakes.listener;
    let permits = Arc::new(Semaphore::new(handshakes.max_concurrent));
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{name} accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let wrap = wrap.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(handshakes.timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(wrap(tls, addr)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "{name} TLS handshake failed");
                }
                Err(_) => tracing::debug!(peer = %addr, "{name} TLS handshake timed out"),
            }
        });
    }
}
