//! Connects to the admin API over its Unix socket.

use std::path::Path;

use anyhow::{Result, anyhow};
use hyper_util::rt::TokioIo;
use signet_proto::admin::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Opens a client on the admin socket at `path`.
pub async fn connect(path: &Path) -> Result<AdminClient<Channel>> {
    // Connect once ourselves first: tonic's own error ("transport error") does not say why.
    if let Err(e) = tokio::net::UnixStream::connect(path).await {
        return Err(anyhow!(
            "cannot connect to the admin socket {}: {e} (is signet-issuer running? see --socket-path)",
            path.display()
        ));
    }
    let path = path.to_owned();
    // The URI is required by the API but unused: the connector always dials the socket.
    let channel = Endpoint::try_from("http://[::1]:0")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| anyhow!("cannot open the admin API: {e}"))?;
    Ok(AdminClient::new(channel))
}
