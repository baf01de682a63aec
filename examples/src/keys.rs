//! The delegation keys and revocation list, followed on the agent's `FetchDelegationKeys` stream
//! (`signet.delegation.v1.Delegation`, on the Workload API socket): the first message at once,
//! then one each time the issuer's state changes (a key rotation, a revocation). Each message
//! rebuilds the [`Verifier`], so a `signet-issuer delegation revoke` reaches this resource server
//! within seconds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use arc_swap::ArcSwapOption;
use hyper_util::rt::TokioIo;
use signet_delegation::{DelegationKeys, RevocationList, Verifier};
use signet_proto::delegation as pb;
use signet_proto::delegation::delegation_client::DelegationClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// The verifier of the latest state, and what it was built from.
#[derive(Debug)]
pub struct State {
    /// Verifies tokens with the published keys, refusing the revoked ones.
    pub verifier: Verifier,
    /// The issuer's delegation state sequence.
    pub sequence: u64,
    /// How many keys are published.
    pub keys: usize,
    /// How many token blocks are revoked.
    pub revoked: usize,
}

/// The latest state, shared between the follower and the request handlers (`None` until the
/// first message).
pub type Shared = Arc<ArcSwapOption<State>>;

/// How the verifier is configured besides keys and revocations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Refuse chains with more hops than this, whatever the token allows.
    pub max_depth: Option<u32>,
}

/// A channel to the agent's socket (`unix:///path` or an absolute path).
pub async fn channel(endpoint: &str) -> Result<Channel> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint)
        .to_owned();
    if !path.starts_with('/') {
        bail!("{endpoint:?}: the example speaks to the agent over a Unix socket (unix:///path)");
    }
    // The URI is not used for a Unix socket, but tonic needs one.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the agent at {endpoint}"))
}

/// A request with the `workload.spiffe.io: true` header every Workload API call carries.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

/// The state of one message.
pub fn state_of(msg: &pb::DelegationKeysResponse, options: Options) -> Result<State> {
    let keys = DelegationKeys::from_json(msg.keys_json.as_bytes())
        .map_err(|e| anyhow!("invalid keys document: {e}"))?;
    let revocations = RevocationList::from_json(msg.revocations_json.as_bytes())
        .map_err(|e| anyhow!("invalid revocation list: {e}"))?;
    let n_keys = keys.infos().len();
    let mut verifier = Verifier::new(keys, &revocations)?;
    if let Some(max) = options.max_depth {
        verifier = verifier.with_max_depth(max);
    }
    Ok(State {
        verifier,
        sequence: msg.sequence,
        keys: n_keys,
        revoked: revocations.ids().len(),
    })
}

/// Follows the stream forever: each message replaces `shared`; a broken stream is opened again
/// (1 s to 10 s apart). Logs each state (never a token) to stderr, prefixed with `name`.
pub async fn follow(name: &'static str, endpoint: String, shared: Shared, options: Options) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match follow_once(name, &endpoint, &shared, options).await {
            Ok(()) => eprintln!("{name}: the agent closed the delegation keys stream; reopening"),
            Err(e) => eprintln!("{name}: delegation keys stream: {e:#}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn follow_once(name: &str, endpoint: &str, shared: &Shared, options: Options) -> Result<()> {
    let mut client = DelegationClient::new(channel(endpoint).await?);
    let mut stream = client
        .fetch_delegation_keys(request(pb::FetchDelegationKeysRequest {}))
        .await
        .map_err(|s| anyhow!("FetchDelegationKeys: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| anyhow!("FetchDelegationKeys: {:?}: {}", s.code(), s.message()))?
    {
        match state_of(&msg, options) {
            Ok(state) => {
                eprintln!(
                    "{name}: delegation state sequence {}: {} key(s), {} revoked block(s)",
                    state.sequence, state.keys, state.revoked
                );
                shared.store(Some(Arc::new(state)));
            }
            // Keep the last good state.
            Err(e) => eprintln!("{name}: ignoring a delegation state message: {e:#}"),
        }
    }
    Ok(())
}
