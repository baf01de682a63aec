//! `travel-client`: a workload's call to the flights API, over mutual TLS with its X509-SVID
//! (from the agent's Workload API; `--spiffe-id` picks which identity of this process presents),
//! carrying a delegation token in `Authorization: Delegation <token>`. Prints the HTTP status and
//! the body; exits 0 whenever the API answered (whatever the status), 1 otherwise.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use signet_examples::{AUTH_SCHEME, tls, workload};
use signet_spiffe::SpiffeId;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// Calls the flights API with a delegation token, over mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "travel-client", version)]
struct Cli {
    /// The URL, e.g. https://127.0.0.1:8443/flights.
    #[arg(long)]
    url: String,
    /// GET (`/flights`: flights:read) or POST (`/bookings`: flights:book).
    #[arg(long, default_value = "GET")]
    method: Method,
    /// A file holding the delegation token (`-`: standard input).
    #[arg(long)]
    token_file: PathBuf,
    /// Which of this process's identities presents the token (default: its first).
    #[arg(long)]
    spiffe_id: Option<String>,
    /// The SPIFFE ID the server must have.
    #[arg(long, default_value = "spiffe://example.org/flights")]
    server_id: String,
    /// The agent's Workload API socket (default: SPIFFE_ENDPOINT_SOCKET).
    #[arg(long)]
    socket_path: Option<String>,
}

fn read_token(path: &PathBuf) -> Result<Zeroizing<String>> {
    let raw = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read the token from standard input")?;
        Zeroizing::new(s)
    } else {
        Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token from {}", path.display()))?,
        )
    };
    let token = Zeroizing::new(raw.trim().to_owned());
    if token.is_empty() {
        bail!("the token is empty");
    }
    Ok(token)
}

async fn run(cli: Cli) -> Result<()> {
    let uri: Uri = cli
        .url
        .parse()
        .with_context(|| format!("--url {:?}", cli.url))?;
    if uri.scheme_str() != Some("https") {
        bail!("--url must be https://");
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("--url has no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let token = read_token(&cli.token_file)?;
    let server_id = SpiffeId::parse(&cli.server_id).map_err(|e| anyhow!("--server-id: {e}"))?;

    let endpoint = workload::endpoint(cli.socket_path.as_deref())?;
    let identity = workload::fetch_identity(&endpoint, cli.spiffe_id.as_deref()).await?;
    let config = tls::client_config(&identity, server_id)?;
    // The name is only sent as SNI: the server is authenticated by its SPIFFE ID.
    let name = ServerName::try_from(host.clone()).map_err(|e| anyhow!("--url host: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let tls = TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("mutual TLS with {authority} as {}", identity.spiffe_id))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(conn);
    let auth = Zeroizing::new(format!("{AUTH_SCHEME} {}", token.as_str()));
    let mut auth_value =
        hyper::header::HeaderValue::from_str(&auth).context("the token is not a header value")?;
    auth_value.set_sensitive(true);
    let request = hyper::Request::builder()
        .method(cli.method)
        .uri(path)
        .header(HOST, authority.as_str())
        .header(AUTHORIZATION, auth_value)
        .body(Empty::<Bytes>::new())
        .context("the request")?;
    let response = sender.send_request(request).await.context("the request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("the response body")?
        .to_bytes();
    println!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    print!("{}", String::from_utf8_lossy(&body));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match tokio::time::timeout(Duration::from_secs(60), run(cli)).await {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("travel-client: {e:#}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("travel-client: no answer within 60 s");
            std::process::ExitCode::FAILURE
        }
    }
}
