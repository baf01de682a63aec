//! A small Workload API client over the generated `SpiffeWorkloadAPI` stubs: the endpoint rules
//! of the standard (`unix:///path`, `tcp://IP:port`, env `SPIFFE_ENDPOINT_SOCKET`), and the
//! `workload.spiffe.io: true` header on every request. Used by the CLI and the load tool. The
//! delegation service on the same socket is reached with [`WorkloadEndpoint::connect_delegation`].

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use signet_proto::workload as pb;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::DEFAULT_SOCKET_PATH;

/// The environment variable naming the Workload API endpoint.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// The generated client on a channel to the agent.
pub type WorkloadClient = SpiffeWorkloadApiClient<Channel>;

/// The generated client of the delegation service (`signet.delegation.v1.Delegation`, on the
/// same socket).
pub type DelegationClient = signet_proto::delegation::delegation_client::DelegationClient<Channel>;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint address is not usable.
    #[error(
        "invalid Workload API endpoint {0:?}: use unix:///absolute/path, tcp://IP:port or an absolute path"
    )]
    Endpoint(String),
    /// The connection failed.
    #[error("cannot connect to the Workload API at {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// Where the Workload API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadEndpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address (IP literal).
    Tcp(SocketAddr),
}

impl std::fmt::Display for WorkloadEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkloadEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            WorkloadEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl WorkloadEndpoint {
    /// Parses `unix:///path`, `unix:/path`, `tcp://IP:port`, or a bare absolute path.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Endpoint(s.to_owned());
        if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') || rest.contains(['?', '#']) {
                return Err(bad());
            }
            return Ok(WorkloadEndpoint::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            if !rest.starts_with('/') || rest.starts_with("//") {
                return Err(bad());
            }
            return Ok(WorkloadEndpoint::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            return rest
                .parse::<SocketAddr>()
                .map(WorkloadEndpoint::Tcp)
                .map_err(|_| bad());
        }
        if s.starts_with('/') {
            return Ok(WorkloadEndpoint::Unix(PathBuf::from(s)));
        }
        Err(bad())
    }

    /// `explicit` if given, else `SPIFFE_ENDPOINT_SOCKET`, else the agent's default socket.
    pub fn resolve(explicit: Option<&str>) -> Result<Self, ClientError> {
        match explicit {
            Some(s) => Self::parse(s),
            None => match std::env::var(ENDPOINT_ENV) {
                Ok(v) if !v.is_empty() => Self::parse(&v),
                _ => Ok(WorkloadEndpoint::Unix(PathBuf::from(DEFAULT_SOCKET_PATH))),
            },
        }
    }

    /// Opens a channel (HTTP/2) to the endpoint.
    pub async fn connect(&self) -> Result<WorkloadClient, ClientError> {
        Ok(SpiffeWorkloadApiClient::new(self.channel().await?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// A client of the delegation service on the endpoint.
    pub async fn connect_delegation(&self) -> Result<DelegationClient, ClientError> {
        Ok(
            signet_proto::delegation::delegation_client::DelegationClient::new(
                self.channel().await?,
            )
            .max_decoding_message_size(64 * 1024 * 1024),
        )
    }

    /// Opens an HTTP/2 channel to the endpoint.
    pub async fn channel(&self) -> Result<Channel, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            endpoint: self.to_string(),
            reason,
        };
        let channel = match self {
            WorkloadEndpoint::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| fail(e.to_string()))?
                .connect()
                .await
                .map_err(|e| fail(error_chain(&e)))?,
            WorkloadEndpoint::Unix(path) => {
                let path = path.clone();
                // The URI is not used for Unix sockets, but tonic needs one.
                Endpoint::from_static("http://localhost")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
                    .map_err(|e| fail(error_chain(&e)))?
            }
        };
        Ok(channel)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// A request carrying the `workload.spiffe.io: true` header.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// The `FetchX509SVID` request.
pub fn x509_svid_request() -> tonic::Request<pb::X509svidRequest> {
    request(pb::X509svidRequest {})
}

/// The `FetchJWTSVID` request (an empty `spiffe_id` asks for every identity).
pub fn jwt_svid_request(
    audience: Vec<String>,
    spiffe_id: String,
) -> tonic::Request<pb::JwtsvidRequest> {
    request(pb::JwtsvidRequest {
        audience,
        spiffe_id,
    })
}

/// The `FetchX509Bundles` request.
pub fn x509_bundles_request() -> tonic::Request<pb::X509BundlesRequest> {
    request(pb::X509BundlesRequest {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_spiffe_rules() {
        assert_eq!(
            WorkloadEndpoint::parse("unix:///tmp/a.sock").unwrap(),
            WorkloadEndpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            WorkloadEndpoint::parse("unix:/tmp/a.sock").unwrap(),
            WorkloadEndpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            WorkloadEndpoint::parse("/tmp/a.sock").unwrap(),
            WorkloadEndpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            WorkloadEndpoint::parse("tcp://127.0.0.1:8000").unwrap(),
            WorkloadEndpoint::Tcp("127.0.0.1:8000".parse().unwrap())
        );
        for bad in [
            "unix://relative",
            "unix:relative",
            "tcp://localhost:80",
            "tcp://127.0.0.1",
            "relative.sock",
            "http://x",
            "unix:///a?b",
        ] {
            assert!(WorkloadEndpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(WorkloadEndpoint::Unix("/a".into()).to_string(), "unix:///a");
    }

    #[test]
    fn requests_carry_the_security_header() {
        let r = x509_svid_request();
        assert_eq!(r.metadata().get("workload.spiffe.io").unwrap(), "true");
    }
}
