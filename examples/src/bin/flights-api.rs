//! `flights-api`: the tool API of the travel example, a resource server that accepts only
//! delegated requests.
//!
//! - Its own X509-SVID (`--spiffe-id`) and the trust bundle come from the agent's Workload API,
//!   kept current as the agent rotates them.
//! - HTTPS with **mutual TLS**: a client must present an X509-SVID of the trust domain; its
//!   SPIFFE ID (the certificate's URI SAN) is the **presenter**.
//! - The delegation token is `Authorization: Delegation <token>`; the operation comes from the
//!   request: `GET /flights` is `flights:read`, `POST /bookings` is `flights:book`.
//! - `signet_sdk::delegation` decides: its `DelegationKeySource` follows the agent's
//!   `FetchDelegationKeys` stream (keys and revocations, a new `Verifier` as each message
//!   arrives), and the verifier checks the token for the presenter and the operation, then the
//!   API's own policy (`--policy`).
//!
//! It answers 200 with the decision (subject, chain, rights, expiry) or 403 with the reason, and
//! prints each decision as one `DECISION: ...` line on stdout (never the token). Other logs go
//! to stderr.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};
use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use signet_examples::{AUTH_SCHEME, rfc3339, tls, unix_now, workload};
use signet_sdk::delegation::{
    Decision, DelegationKeySource, Request, VerifyError, presenter_from_peer_certificate,
};
use signet_spiffe::{SpiffeId, TrustDomain};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The flights tool API: verifies delegation tokens over mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "flights-api", version)]
struct Cli {
    /// The address to listen on (port 0: a free port; see --address-file).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Which of this process's identities the API serves as.
    #[arg(long, default_value = "spiffe://example.org/flights")]
    spiffe_id: String,
    /// The trust domain whose workloads may call (their X509-SVIDs are verified against its
    /// bundle).
    #[arg(long, default_value = signet_examples::TRUST_DOMAIN)]
    trust_domain: String,
    /// Refuse chains with more hops than this, whatever the token allows.
    #[arg(long)]
    max_depth: Option<u32>,
    /// The API's own Datalog policy (`allow if` / `deny if`), checked after the token's rights.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Once ready, write the bound address here (for scripts).
    #[arg(long)]
    address_file: Option<PathBuf>,
    /// The agent's Workload API socket (default: SPIFFE_ENDPOINT_SOCKET).
    #[arg(long)]
    socket_path: Option<String>,
}

/// What the API does for an operation.
fn operation(method: &Method, path: &str) -> Option<&'static str> {
    match (method, path) {
        (&Method::GET, "/flights") => Some("flights:read"),
        (&Method::POST, "/bookings") => Some("flights:book"),
        _ => None,
    }
}

/// A short, stable code for each refusal (JSON `error` and the decision line).
fn code(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::Malformed(_) => "malformed",
        VerifyError::UnknownRootKey(_) => "unknown_root_key",
        VerifyError::Signature(_) => "signature",
        VerifyError::Revoked { .. } => "revoked",
        VerifyError::Expired { .. } => "expired",
        VerifyError::NotTheHolder { .. } => "not_the_holder",
        VerifyError::TooDeep { .. } => "too_deep",
        VerifyError::Unauthorized(_) => "unauthorized",
        VerifyError::Limits(_) => "limits",
        _ => "refused",
    }
}

/// One actor of the chain, as the answer shows it.
#[derive(Serialize)]
struct HopView<'a> {
    actor: &'a str,
    /// Who delegated to it (`null` for the first actor: the issuer minted the token to it).
    delegated_by: Option<&'a str>,
    token_id: &'a str,
    rights: Vec<&'a str>,
    at: String,
    expires_at: String,
}

/// The body of an allowed request: the decision (in the order a reader wants it), then the
/// resource.
#[derive(Serialize)]
struct Allowed<'a> {
    decision: &'static str,
    operation: &'a str,
    subject: &'a str,
    subject_name: &'a str,
    presenter: &'a str,
    chain: Vec<HopView<'a>>,
    rights: Vec<&'a str>,
    token_id: &'a str,
    expires_at: String,
    expires_in_seconds: u64,
    #[serde(flatten)]
    resource: Value,
}

/// The body of a refusal.
#[derive(Serialize)]
struct Refused<'a> {
    decision: &'static str,
    operation: &'a str,
    presenter: &'a str,
    error: &'a str,
    reason: &'a str,
}

fn allowed_body<'a>(d: &'a Decision, presenter: &'a str) -> Allowed<'a> {
    let chain = &d.chain;
    let resource = match d.operation.as_str() {
        "flights:read" => json!({"flights": [
            {"flight": "SG 101", "from": "CDG", "to": "SFO", "departs": "08:05"},
            {"flight": "SG 205", "from": "CDG", "to": "SFO", "departs": "13:40"},
        ]}),
        _ => json!({"booking": {"reference": "SGX42Q", "status": "confirmed"}}),
    };
    Allowed {
        decision: "allowed",
        operation: &d.operation,
        subject: &chain.subject.id,
        subject_name: &chain.subject.name,
        presenter,
        chain: chain
            .hops
            .iter()
            .map(|h| HopView {
                actor: &h.actor,
                delegated_by: h.delegated_by.as_deref(),
                token_id: &h.token_id,
                rights: h.rights.iter().map(String::as_str).collect(),
                at: rfc3339(h.at),
                expires_at: rfc3339(h.expires_at),
            })
            .collect(),
        rights: chain.rights.iter().map(String::as_str).collect(),
        token_id: chain.token_id(),
        expires_at: rfc3339(chain.expires_at),
        expires_in_seconds: chain.expires_at.saturating_sub(unix_now()),
        resource,
    }
}

/// One decision line (stdout): what was decided, for whom, through which chain. Never the token.
fn log_allowed(d: &Decision, presenter: &str) {
    let chain = &d.chain;
    let name = if chain.subject.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", chain.subject.name)
    };
    println!(
        "DECISION: allowed {op} for {subject}{name} via {actors}, presented by {presenter}, rights {rights}, token {token}, expires {exp} (in {left} s)",
        op = d.operation,
        subject = chain.subject.id,
        actors = chain.actors().join(" -> "),
        rights = chain.rights.iter().cloned().collect::<Vec<_>>().join(","),
        token = chain.token_id(),
        exp = rfc3339(chain.expires_at),
        left = chain.expires_at.saturating_sub(unix_now()),
    );
}

fn log_refused(code: &str, op: &str, presenter: &str, reason: &str) {
    println!("DECISION: refused ({code}) {op} presented by {presenter}: {reason}");
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(text + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

fn refused(
    status: StatusCode,
    code: &str,
    op: &str,
    presenter: &str,
    reason: &str,
) -> Response<Full<Bytes>> {
    log_refused(code, op, presenter, reason);
    let body = Refused {
        decision: "refused",
        operation: op,
        presenter,
        error: code,
        reason,
    };
    json_response(status, &body)
}

/// Decides one request of `presenter` (the mTLS peer).
fn handle(
    req: &hyper::Request<Incoming>,
    presenter: &SpiffeId,
    keys: &DelegationKeySource,
) -> Response<Full<Bytes>> {
    let presenter = presenter.to_string();
    let Some(op) = operation(req.method(), req.uri().path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "reason": "try GET /flights or POST /bookings"}),
        );
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(AUTH_SCHEME))
        .map(|(_, t)| t.trim());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            "no_token",
            op,
            &presenter,
            "no `Authorization: Delegation <token>` header",
        );
    };
    if !keys.is_ready() {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_keys",
            op,
            &presenter,
            "the delegation keys have not arrived yet",
        );
    }
    let request = Request {
        presenter: &presenter,
        operation: op,
        now: SystemTime::now(),
    };
    match keys.verify(token, &request) {
        Ok(decision) => {
            log_allowed(&decision, &presenter);
            json_response(StatusCode::OK, &allowed_body(&decision, &presenter))
        }
        Err(e) => refused(
            StatusCode::FORBIDDEN,
            code(&e),
            op,
            &presenter,
            &e.to_string(),
        ),
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    keys: Arc<DelegationKeySource>,
) -> Result<()> {
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake")?;
    // The handshake verified the client's X509-SVID; its leaf names the presenter.
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow!("the client presented no certificate"))?;
    let presenter = presenter_from_peer_certificate(leaf.as_ref())
        .map_err(|e| anyhow!("the client certificate names no workload: {e}"))?;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let response = handle(&req, &presenter, &keys);
        async move { Ok::<_, Infallible>(response) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
        .with_context(|| format!("connection from {peer}"))
}

/// Logs each new delegation state the source applies (a key rotation, a revocation).
async fn log_states(keys: Arc<DelegationKeySource>) {
    let mut next = 0;
    loop {
        match keys
            .wait_for_sequence(next, Duration::from_secs(3600))
            .await
        {
            Ok(()) => {
                if let Some(seq) = keys.sequence() {
                    eprintln!(
                        "flights-api: delegation keys and revocations of sequence {seq} in force"
                    );
                    next = seq + 1;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let endpoint = workload::endpoint(cli.socket_path.as_deref())?;
    let trust_domain =
        TrustDomain::new(&cli.trust_domain).map_err(|e| anyhow!("--trust-domain: {e}"))?;
    let source = workload::source(&endpoint, Some(&cli.spiffe_id)).await?;

    let mut builder = DelegationKeySource::builder().endpoint(endpoint.clone());
    if let Some(max) = cli.max_depth {
        builder = builder.max_depth(max);
    }
    if let Some(path) = &cli.policy {
        let policy = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        builder = builder
            .policy(&policy)
            .with_context(|| format!("{}", path.display()))?;
    }
    let keys = Arc::new(builder.start()?);
    keys.wait_ready(workload::TIMEOUT)
        .await
        .context("is [delegation] on at the issuer?")?;
    tokio::spawn(log_states(keys.clone()));

    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(source, trust_domain.clone())?));
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr()?;
    if let Some(path) = &cli.address_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{addr}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "flights-api: ready on https://{addr} as {}, accepting X509-SVIDs of {trust_domain}",
        cli.spiffe_id
    );
    loop {
        let (tcp, peer) = listener.accept().await.context("accept")?;
        let (acceptor, keys) = (acceptor.clone(), keys.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, peer, acceptor, keys).await {
                eprintln!("flights-api: {e:#}");
            }
        });
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tokio::select! {
        r = run(cli) => match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flights-api: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => std::process::ExitCode::SUCCESS,
    }
}
