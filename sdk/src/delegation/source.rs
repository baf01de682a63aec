//! [`DelegationKeySource`]: the node agent's delegation keys and revocation list, followed over
//! its Unix socket, as a shared [`Verifier`] that is always current.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use signet_proto::delegation::delegation_client::DelegationClient;
use signet_proto::delegation::{DelegationKeysResponse, FetchDelegationKeysRequest};
use tokio::sync::watch;
use tonic::transport::{Endpoint, Uri};

use super::{
    AuthorizerLimits, Decision, DelegationKeys, Request, RevocationList, Verifier, VerifierOptions,
    VerifyError,
};

/// The environment variable naming the agent's socket (the SPIFFE Workload API's).
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// The agent's socket when neither an endpoint nor [`ENDPOINT_ENV`] is given.
pub const DEFAULT_AGENT_SOCKET: &str = "/tmp/signet-agent/public/api.sock";

/// Why the source could not start, or is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The endpoint is not a Unix socket address.
    #[error(
        "invalid agent endpoint {0:?}: use unix:///absolute/path, unix:/absolute/path or an absolute path"
    )]
    Endpoint(String),
    /// The resource server's policy does not parse.
    #[error("{0}")]
    Policy(VerifyError),
    /// `start` was called outside a Tokio runtime.
    #[error("DelegationKeySource::start must be called within a Tokio runtime")]
    NoRuntime,
    /// No usable keys document arrived in time.
    #[error("no delegation keys from the agent at {endpoint} after {waited:?}{}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Timeout {
        /// The agent's endpoint.
        endpoint: String,
        /// How long it waited.
        waited: Duration,
        /// The last connection or document error, if any.
        last_error: Option<String>,
    },
}

/// The agent's socket: `unix:///path`, `unix:/path` or a bare absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint(PathBuf);

impl AgentEndpoint {
    /// Parses `unix:///path`, `unix:/path` or an absolute path.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let bad = || SourceError::Endpoint(s.to_owned());
        let path = if let Some(rest) = s.strip_prefix("unix://") {
            if rest.contains(['?', '#']) {
                return Err(bad());
            }
            rest
        } else if let Some(rest) = s.strip_prefix("unix:") {
            if rest.starts_with("//") {
                return Err(bad());
            }
            rest
        } else {
            s
        };
        if !path.starts_with('/') || path.len() < 2 {
            return Err(bad());
        }
        Ok(Self(PathBuf::from(path)))
    }

    /// [`ENDPOINT_ENV`] if set and not empty, else [`DEFAULT_AGENT_SOCKET`].
    pub fn from_env() -> Result<Self, SourceError> {
        match std::env::var(ENDPOINT_ENV) {
            Ok(v) if !v.is_empty() => Self::parse(&v),
            _ => Self::parse(DEFAULT_AGENT_SOCKET),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.0.display())
    }
}

/// Reconnection delays: doubled after each failed attempt up to `max`, with jitter, and back to
/// `initial` once a stream delivered a document.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

/// Builds a [`DelegationKeySource`].
#[derive(Debug, Clone)]
pub struct DelegationKeySourceBuilder {
    endpoint: Option<String>,
    options: VerifierOptions,
    backoff: Backoff,
}

impl DelegationKeySourceBuilder {
    /// The agent's socket (`unix:///path`, `unix:/path` or an absolute path). Default:
    /// [`ENDPOINT_ENV`], else [`DEFAULT_AGENT_SOCKET`].
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The resource server's policy, applied to every verifier (see
    /// [`Verifier::with_policy`]). Checked now.
    pub fn policy(mut self, policy: &str) -> Result<Self, SourceError> {
        self.options = self.options.policy(policy).map_err(SourceError::Policy)?;
        Ok(self)
    }

    /// Datalog run limits of every verifier.
    pub fn limits(mut self, limits: AuthorizerLimits) -> Self {
        self.options = self.options.limits(limits);
        self
    }

    /// Refuses chains of more than `max` hops, whatever the token allows.
    pub fn max_depth(mut self, max: u32) -> Self {
        self.options = self.options.max_depth(max);
        self
    }

    /// How many verified tokens each verifier keeps (default
    /// [`super::DEFAULT_SIGNATURE_CACHE`]; 0: none). The cache survives revocation updates and
    /// is emptied when the keys change.
    pub fn signature_cache(mut self, capacity: usize) -> Self {
        self.options = self.options.signature_cache(capacity);
        self
    }

    /// Replaces the verifier options at once.
    pub fn options(mut self, options: VerifierOptions) -> Self {
        self.options = options;
        self
    }

    /// The first and the longest delay between reconnection attempts (default 100 ms and 5 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        self.backoff = Backoff {
            initial,
            max: max.max(initial),
        };
        self
    }

    /// Starts following the agent, in a task of the current Tokio runtime. Returns at once; until
    /// the first document arrives the verifier trusts no key, so it refuses every token (see
    /// [`DelegationKeySource::wait_ready`]).
    pub fn start(self) -> Result<DelegationKeySource, SourceError> {
        let endpoint = match &self.endpoint {
            Some(e) => AgentEndpoint::parse(e)?,
            None => AgentEndpoint::from_env()?,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SourceError::NoRuntime)?;
        let empty = self
            .options
            .verifier(DelegationKeys::default(), &RevocationList::default())
            .map_err(SourceError::Policy)?;
        let (state, _) = watch::channel(State::default());
        let shared = Arc::new(Shared {
            verifier: ArcSwap::from_pointee(empty),
            state,
        });
        let task = runtime.spawn(follow(
            Arc::clone(&shared),
            endpoint.clone(),
            self.options,
            self.backoff,
        ));
        Ok(DelegationKeySource {
            shared,
            endpoint,
            task,
        })
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The sequence of the last document applied (`None` before the first).
    sequence: Option<u64>,
    /// Whether a stream is open now.
    connected: bool,
    /// The last connection or document error (cleared by the next good document).
    last_error: Option<String>,
}

struct Shared {
    verifier: ArcSwap<Verifier>,
    state: watch::Sender<State>,
}

/// The node agent's delegation keys and revocation list, followed over its Unix socket, kept as
/// a shared [`Verifier`] that carries the resource server's policy and limits.
///
/// It opens the agent's `signet.delegation.v1.Delegation` service (with the
/// `workload.spiffe.io: true` header the agent requires), follows the `FetchDelegationKeys`
/// stream, and builds a new verifier from each document; when the stream ends or the agent
/// restarts it reconnects with backoff, keeping the last good verifier meanwhile (a revoked token
/// stays refused). A document that does not parse is skipped with a warning.
///
/// Dropping the source stops it.
pub struct DelegationKeySource {
    shared: Arc<Shared>,
    endpoint: AgentEndpoint,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for DelegationKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.state.borrow();
        f.debug_struct("DelegationKeySource")
            .field("endpoint", &self.endpoint.to_string())
            .field("sequence", &s.sequence)
            .field("connected", &s.connected)
            .finish_non_exhaustive()
    }
}

impl Drop for DelegationKeySource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelegationKeySource {
    /// A builder: no policy of its own, default limits, the endpoint of [`ENDPOINT_ENV`].
    pub fn builder() -> DelegationKeySourceBuilder {
        DelegationKeySourceBuilder {
            endpoint: None,
            options: VerifierOptions::new(),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
        }
    }

    /// The current verifier. Cheap (no lock); keep it for one request, ask again for the next.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.shared.verifier.load_full()
    }

    /// Verifies `token` for `request` with the current verifier.
    pub fn verify(&self, token: &str, request: &Request<'_>) -> Result<Decision, VerifyError> {
        self.shared.verifier.load().verify(token, request)
    }

    /// Whether a keys document has been applied.
    pub fn is_ready(&self) -> bool {
        self.shared.state.borrow().sequence.is_some()
    }

    /// Whether a stream to the agent is open now.
    pub fn is_connected(&self) -> bool {
        self.shared.state.borrow().connected
    }

    /// The sequence of the last document applied.
    pub fn sequence(&self) -> Option<u64> {
        self.shared.state.borrow().sequence
    }

    /// The agent's endpoint.
    pub fn endpoint(&self) -> &AgentEndpoint {
        &self.endpoint
    }

    /// Waits until the first keys document is applied.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), SourceError> {
        self.wait_until(timeout, |s| s.sequence.is_some()).await
    }

    /// Waits until a document of sequence `sequence` or later is applied.
    pub async fn wait_for_sequence(
        &self,
        sequence: u64,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        self.wait_until(timeout, |s| s.sequence.is_some_and(|q| q >= sequence))
            .await
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&State) -> bool,
    ) -> Result<(), SourceError> {
        let mut rx = self.shared.state.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(done)).await {
            Ok(Ok(_)) => Ok(()),
            // Timed out (or the task is gone, which only dropping the source does).
            _ => Err(SourceError::Timeout {
                endpoint: self.endpoint.to_string(),
                waited: timeout,
                last_error: self.shared.state.borrow().last_error.clone(),
            }),
        }
    }
}

/// Connects, follows, reconnects: forever (until the source is dropped).
async fn follow(
    shared: Arc<Shared>,
    endpoint: AgentEndpoint,
    options: VerifierOptions,
    backoff: Backoff,
) {
    let mut delay = backoff.initial;
    let mut keys_json: Option<String> = None;
    let mut attempt: u64 = 0;
    loop {
        let (applied, result) = stream_once(&shared, &endpoint, &options, &mut keys_json).await;
        let reason = match result {
            Ok(()) => "the agent ended the stream".to_owned(),
            Err(e) => e,
        };
        shared.state.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(reason.clone());
        });
        if applied > 0 {
            delay = backoff.initial;
        }
        tracing::warn!(
            endpoint = %endpoint,
            error = %reason,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "delegation keys stream from the agent interrupted; reconnecting"
        );
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(jitter(delay, attempt)).await;
        delay = (delay * 2).min(backoff.max);
    }
}

/// Between half and all of `delay`, varying with `attempt` (so that many servers restarted with
/// one agent do not reconnect in lockstep).
fn jitter(delay: Duration, attempt: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(attempt);
    let frac = h.finish() % 1000;
    delay / 2 + delay / 2 * u32::try_from(frac).unwrap_or(0) / 1000
}

/// One connection: returns how many documents it applied, and why it ended.
async fn stream_once(
    shared: &Shared,
    endpoint: &AgentEndpoint,
    options: &VerifierOptions,
    keys_json: &mut Option<String>,
) -> (usize, Result<(), String>) {
    let path = endpoint.path().to_owned();
    // The URI is not used for a Unix socket, but tonic needs one.
    let channel = Endpoint::from_static("http://localhost")
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await;
    let channel = match channel {
        Ok(c) => c,
        Err(e) => return (0, Err(format!("cannot connect: {}", error_chain(&e)))),
    };
    let mut client = DelegationClient::new(channel);
    let mut request = tonic::Request::new(FetchDelegationKeysRequest {});
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = match client.fetch_delegation_keys(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (0, Err(describe(&status))),
    };
    shared.state.send_modify(|s| s.connected = true);
    tracing::debug!(endpoint = %endpoint, "following the agent's delegation keys");
    let mut applied = 0;
    loop {
        match stream.message().await {
            Ok(Some(doc)) => match apply(shared, options, doc, keys_json) {
                Ok(sequence) => {
                    applied += 1;
                    tracing::debug!(sequence, "delegation keys and revocations updated");
                }
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint, error = %e,
                        "ignoring an unusable delegation keys document from the agent; keeping the last good one");
                    shared.state.send_modify(|s| s.last_error = Some(e));
                }
            },
            Ok(None) => return (applied, Ok(())),
            Err(status) => return (applied, Err(describe(&status))),
        }
    }
}

/// Builds the verifier of one document and makes it current; returns its sequence.
fn apply(
    shared: &Shared,
    options: &VerifierOptions,
    doc: DelegationKeysResponse,
    keys_json: &mut Option<String>,
) -> Result<u64, String> {
    let revocations = if doc.revocations_json.trim().is_empty() {
        RevocationList::default()
    } else {
        RevocationList::from_json(doc.revocations_json.as_bytes())?
    };
    let verifier = if keys_json.as_deref() == Some(doc.keys_json.as_str()) {
        // Same keys: keep the parsed keys (and what the verifier caches for them).
        let mut v = Verifier::clone(&shared.verifier.load());
        v.set_revocations(&revocations);
        v
    } else {
        let keys = DelegationKeys::from_json(doc.keys_json.as_bytes())?;
        options
            .verifier(keys, &revocations)
            .map_err(|e| e.to_string())?
    };
    shared.verifier.store(Arc::new(verifier));
    *keys_json = Some(doc.keys_json);
    let sequence = doc.sequence;
    shared.state.send_modify(|s| {
        s.sequence = Some(sequence);
        s.connected = true;
        s.last_error = None;
    });
    Ok(sequence)
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
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

#[cfg(test)]
mod tests;
