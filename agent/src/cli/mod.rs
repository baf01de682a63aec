//! The `signet-agent` command line: `run` (the agent), and the Workload API commands
//! `api fetch x509`, `api fetch jwt`, `api validate jwt`, `api watch`, `api delegation mint |
//! delegate | keys` ([`delegation`]) and `healthcheck`, which talk to a running agent like any
//! workload does (generated `SpiffeWorkloadAPI` stubs, `workload.spiffe.io: true` header, endpoint
//! from `--socket-path`, else `SPIFFE_ENDPOINT_SOCKET`, else the default socket).

pub mod client;
pub mod delegation;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use signet_proto::workload as pb;
use tonic::Code;

use crate::cache::split_der_chain;
use crate::cli::client::{
    WorkloadEndpoint, jwt_svid_request, x509_bundles_request, x509_svid_request,
};
use crate::runtime::certs::{certs_to_pem, hex, leaf_info, rfc3339};

/// `signet-agent`: the Signet node agent.
#[derive(Debug, Parser)]
#[command(
    name = "signet-agent",
    version,
    about = "Signet node agent: attests this node and serves the SPIFFE Workload API"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the agent.
    Run {
        /// The TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Join token for the first attestation (from `signet-issuer token generate`). Ignored
        /// while the agent holds a valid SVID in its data_dir.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "SIGNET_AGENT_JOIN_TOKEN",
            hide_env_values = true
        )]
        join_token: Option<String>,
    },
    /// Workload API commands (as a workload of this node sees it).
    #[command(subcommand)]
    Api(ApiCommand),
    /// Checks that the agent answers on its Workload API socket.
    Healthcheck {
        /// The Workload API endpoint (default: $SPIFFE_ENDPOINT_SOCKET, else the default socket).
        #[arg(long, value_name = "PATH")]
        socket_path: Option<String>,
        /// How long to wait for the answer (`500ms`, `5s`, `1m`).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// `api` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetches from the Workload API once.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Validates a credential through the Workload API.
    #[command(subcommand)]
    Validate(ValidateCommand),
    /// Delegation tokens through the agent's delegation service (same socket).
    #[command(subcommand)]
    Delegation(delegation::DelegationCommand),
    /// Streams X509-SVID updates and prints each one until interrupted.
    Watch {
        /// The Workload API endpoint (default: $SPIFFE_ENDPOINT_SOCKET, else the default socket).
        #[arg(long, value_name = "PATH")]
        socket_path: Option<String>,
        /// Output format (`json`: one object per line).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// `api fetch` subcommands.
#[derive(Debug, Subcommand)]
pub enum FetchCommand {
    /// Fetches the caller's X509-SVIDs and bundles.
    X509 {
        /// Writes `svid.N.pem`, `svid.N.key` (0600), `bundle.N.pem` (and
        /// `federated_bundle.N.M.pem`) into DIR (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
        /// Endpoint, timeout and output format.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Fetches JWT-SVIDs of the caller for the given audiences (`FetchJWTSVID`): one per identity,
    /// or the one named by `--spiffe-id`. Text output prints each token on its own line after
    /// its SPIFFE ID.
    Jwt {
        /// An audience of the token (repeat for several).
        #[arg(long = "audience", value_name = "AUDIENCE", required = true)]
        audience: Vec<String>,
        /// Only the token of this identity.
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<String>,
        /// Endpoint, timeout and output format.
        #[command(flatten)]
        call: CallArgs,
    },
}

/// `api validate` subcommands.
#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// Validates a JWT-SVID for an audience (`ValidateJWTSVID`); prints its SPIFFE ID and claims.
    /// Exits 1 when the agent refuses the token.
    Jwt {
        /// The audience the token must carry (the validating party's own name).
        #[arg(long, value_name = "AUDIENCE")]
        audience: String,
        /// The token, or `-` to read it from standard input.
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// Endpoint, timeout and output format.
        #[command(flatten)]
        call: CallArgs,
    },
}

/// The options every one-shot Workload API command takes.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The Workload API endpoint (default: $SPIFFE_ENDPOINT_SOCKET, else the default socket).
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<String>,
    /// How long to wait for the answer (`500ms`, `5s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// JSON.
    Json,
}

/// Parses `250ms`, `5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 5s, 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} is not a duration such as 500ms, 5s, 1m")),
    };
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

/// The name of a command, for error messages (`api fetch x509: ...`).
pub fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Run { .. } => "run",
        Command::Api(ApiCommand::Fetch(FetchCommand::X509 { .. })) => "api fetch x509",
        Command::Api(ApiCommand::Fetch(FetchCommand::Jwt { .. })) => "api fetch jwt",
        Command::Api(ApiCommand::Validate(ValidateCommand::Jwt { .. })) => "api validate jwt",
        Command::Api(ApiCommand::Watch { .. }) => "api watch",
        Command::Api(ApiCommand::Delegation(d)) => d.name(),
        Command::Healthcheck { .. } => "healthcheck",
    }
}

fn status_error(endpoint: &WorkloadEndpoint, s: &tonic::Status) -> anyhow::Error {
    match s.code() {
        Code::PermissionDenied => anyhow!(
            "the agent at {endpoint} issued no identity to this process ({}): no registration entry matches it",
            s.message()
        ),
        Code::Unavailable => anyhow!("the agent at {endpoint} is unavailable: {}", s.message()),
        _ => anyhow!(
            "the agent at {endpoint} answered {:?}: {}",
            s.code(),
            s.message()
        ),
    }
}

/// Runs an `api` command or `healthcheck`; returns the exit status.
pub async fn execute(command: Command) -> Result<u8> {
    match command {
        Command::Run { .. } => bail!("`run` is handled by main"),
        Command::Api(ApiCommand::Fetch(FetchCommand::X509 { write, call })) => {
            fetch_x509(
                call.socket_path.as_deref(),
                write.as_deref(),
                call.timeout,
                call.output,
            )
            .await
        }
        Command::Api(ApiCommand::Fetch(FetchCommand::Jwt {
            audience,
            spiffe_id,
            call,
        })) => {
            let endpoint = WorkloadEndpoint::resolve(call.socket_path.as_deref())?;
            fetch_jwt(&endpoint, audience, spiffe_id, call.timeout, call.output).await
        }
        Command::Api(ApiCommand::Validate(ValidateCommand::Jwt {
            audience,
            token,
            call,
        })) => {
            let endpoint = WorkloadEndpoint::resolve(call.socket_path.as_deref())?;
            validate_jwt(&endpoint, audience, token, call.timeout, call.output).await
        }
        Command::Api(ApiCommand::Watch {
            socket_path,
            output,
        }) => watch(socket_path.as_deref(), output).await,
        Command::Api(ApiCommand::Delegation(d)) => delegation::execute(d).await,
        Command::Healthcheck {
            socket_path,
            timeout,
        } => healthcheck(socket_path.as_deref(), timeout).await,
    }
}

/// Facts about one SVID of a response, for printing.
#[derive(Debug, serde::Serialize)]
struct SvidView {
    spiffe_id: String,
    hint: String,
    serial: String,
    not_before: String,
    not_after: String,
    expires_at: i64,
    chain_length: usize,
    bundle_authorities: usize,
}

fn view(svid: &pb::X509svid) -> Result<SvidView> {
    let chain = split_der_chain(&svid.x509_svid)
        .ok_or_else(|| anyhow!("the SVID of {} is not DER certificates", svid.spiffe_id))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("the SVID of {} has no certificate", svid.spiffe_id))?;
    let info = leaf_info(leaf).map_err(|e| anyhow!("the SVID of {}: {e}", svid.spiffe_id))?;
    Ok(SvidView {
        spiffe_id: svid.spiffe_id.clone(),
        hint: svid.hint.clone(),
        serial: hex(&info.serial),
        not_before: rfc3339(info.not_before),
        not_after: rfc3339(info.not_after),
        expires_at: crate::runtime::certs::unix_secs(info.not_after),
        chain_length: chain.len(),
        bundle_authorities: split_der_chain(&svid.bundle).map_or(0, |b| b.len()),
    })
}

fn federated_view(resp: &pb::X509svidResponse) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = resp
        .federated_bundles
        .iter()
        .map(|(td, der)| (td.clone(), split_der_chain(der).map_or(0, |b| b.len())))
        .collect();
    v.sort();
    v
}

async fn first_response(
    endpoint: &WorkloadEndpoint,
    timeout: Duration,
) -> Result<(pb::X509svidResponse, Duration)> {
    let started = Instant::now();
    let fetch = async {
        let mut client = endpoint.connect().await?;
        let mut stream = client
            .fetch_x509svid(x509_svid_request())
            .await
            .map_err(|s| status_error(endpoint, &s))?
            .into_inner();
        stream
            .message()
            .await
            .map_err(|s| status_error(endpoint, &s))?
            .ok_or_else(|| anyhow!("the agent at {endpoint} closed the stream without an answer"))
    };
    let resp = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow!("no answer from {endpoint} within {timeout:?}"))??;
    Ok((resp, started.elapsed()))
}

async fn fetch_x509(
    socket_path: Option<&str>,
    write: Option<&Path>,
    timeout: Duration,
    output: Output,
) -> Result<u8> {
    let endpoint = WorkloadEndpoint::resolve(socket_path)?;
    let (resp, latency) = first_response(&endpoint, timeout).await?;
    let views = resp.svids.iter().map(view).collect::<Result<Vec<_>>>()?;
    let federated = federated_view(&resp);
    if let Some(dir) = write {
        write_files(dir, &resp)?;
    }
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "latency_ms": latency.as_secs_f64() * 1000.0,
                "svids": views,
                "federated_bundles": federated
                    .iter()
                    .map(|(td, n)| serde_json::json!({"trust_domain": td, "authorities": n}))
                    .collect::<Vec<_>>(),
            });
            writeln!(out, "{doc}")?;
        }
        Output::Text => {
            writeln!(
                out,
                "Received {} SVID(s) after {:.1}ms",
                views.len(),
                latency.as_secs_f64() * 1000.0
            )?;
            for v in &views {
                writeln!(out)?;
                writeln!(out, "SPIFFE ID:         {}", v.spiffe_id)?;
                if !v.hint.is_empty() {
                    writeln!(out, "Hint:              {}", v.hint)?;
                }
                writeln!(out, "Serial:            {}", v.serial)?;
                writeln!(out, "Valid after:       {}", v.not_before)?;
                writeln!(out, "Valid until:       {}", v.not_after)?;
                writeln!(out, "Chain length:      {}", v.chain_length)?;
                writeln!(out, "Bundle authorities: {}", v.bundle_authorities)?;
            }
            for (td, n) in &federated {
                writeln!(out, "Federated bundle:  {td} ({n} authorities)")?;
            }
            if let Some(dir) = write {
                writeln!(out)?;
                writeln!(out, "Written to {}", dir.display())?;
            }
        }
    }
    Ok(0)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn write_files(dir: &Path, resp: &pb::X509svidResponse) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut federated: Vec<(&String, &Vec<u8>)> = resp.federated_bundles.iter().collect();
    federated.sort();
    for (i, svid) in resp.svids.iter().enumerate() {
        let chain = split_der_chain(&svid.x509_svid)
            .ok_or_else(|| anyhow!("the SVID of {} is not DER certificates", svid.spiffe_id))?;
        write_file(
            &dir.join(format!("svid.{i}.pem")),
            certs_to_pem(chain).as_bytes(),
            0o644,
        )?;
        let key = zeroize::Zeroizing::new(pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
        write_file(&dir.join(format!("svid.{i}.key")), key.as_bytes(), 0o600)?;
        let bundle = split_der_chain(&svid.bundle)
            .ok_or_else(|| anyhow!("the bundle of {} is not DER certificates", svid.spiffe_id))?;
        write_file(
            &dir.join(format!("bundle.{i}.pem")),
            certs_to_pem(bundle).as_bytes(),
            0o644,
        )?;
        for (j, (td, der)) in federated.iter().enumerate() {
            let certs = split_der_chain(der)
                .ok_or_else(|| anyhow!("the federated bundle of {td} is not DER certificates"))?;
            write_file(
                &dir.join(format!("federated_bundle.{i}.{j}.pem")),
                certs_to_pem(certs).as_bytes(),
                0o644,
            )?;
        }
    }
    Ok(())
}

/// Runs `call` against the endpoint within `timeout`, turning a status into a clear error.
async fn unary<T, F>(
    endpoint: &WorkloadEndpoint,
    timeout: Duration,
    call: F,
) -> Result<(T, Duration)>
where
    F: AsyncFnOnce(
        &mut crate::cli::client::WorkloadClient,
    ) -> Result<tonic::Response<T>, tonic::Status>,
{
    let started = Instant::now();
    let run = async {
        let mut client = endpoint.connect().await?;
        call(&mut client)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| status_error(endpoint, &s))
    };
    let answer = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("no answer from {endpoint} within {timeout:?}"))??;
    Ok((answer, started.elapsed()))
}

/// The claims of a JWT, decoded without verification (for display only).
fn unverified_claims(token: &str) -> serde_json::Map<String, serde_json::Value> {
    use base64::Engine as _;
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

async fn fetch_jwt(
    endpoint: &WorkloadEndpoint,
    audience: Vec<String>,
    spiffe_id: Option<String>,
    timeout: Duration,
    output: Output,
) -> Result<u8> {
    let request = jwt_svid_request(audience, spiffe_id.unwrap_or_default());
    let (resp, latency) =
        unary(endpoint, timeout, async |c| c.fetch_jwtsvid(request).await).await?;
    let mut out = std::io::stdout().lock();
    let views: Vec<serde_json::Value> = resp
        .svids
        .iter()
        .map(|s| {
            let claims = unverified_claims(&s.svid);
            serde_json::json!({
                "spiffe_id": s.spiffe_id,
                "hint": s.hint,
                "token": s.svid,
                "audience": claims.get("aud"),
                "expires_at": claims.get("exp"),
                "issued_at": claims.get("iat"),
            })
        })
        .collect();
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "latency_ms": latency.as_secs_f64() * 1000.0,
                "svids": views,
            });
            writeln!(out, "{doc}")?;
        }
        Output::Text => {
            for (svid, v) in resp.svids.iter().zip(&views) {
                let expires = v["expires_at"]
                    .as_u64()
                    .map(|t| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(t)))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "token({}){}{}:",
                    svid.spiffe_id,
                    if svid.hint.is_empty() {
                        String::new()
                    } else {
                        format!(" hint {}", svid.hint)
                    },
                    if expires.is_empty() {
                        String::new()
                    } else {
                        format!(" valid until {expires}")
                    }
                )?;
                writeln!(out, "{}", svid.svid)?;
            }
        }
    }
    Ok(0)
}

async fn validate_jwt(
    endpoint: &WorkloadEndpoint,
    audience: String,
    token: String,
    timeout: Duration,
    output: Output,
) -> Result<u8> {
    let token = if token == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .context("cannot read the token from standard input")?;
        t.trim().to_owned()
    } else {
        token
    };
    let request = client::request(pb::ValidateJwtsvidRequest {
        audience,
        svid: token,
    });
    let (resp, _) = unary(endpoint, timeout, async |c| {
        c.validate_jwtsvid(request).await
    })
    .await?;
    let claims = resp
        .claims
        .as_ref()
        .map(crate::workload_api::jwt::struct_to_json_object)
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc = serde_json::json!({"spiffe_id": resp.spiffe_id, "claims": claims});
            writeln!(out, "{doc}")?;
        }
        Output::Text => {
            writeln!(out, "SPIFFE ID: {}", resp.spiffe_id)?;
            writeln!(
                out,
                "Claims:    {}",
                serde_json::to_string_pretty(&claims)?.replace('\n', "\n           ")
            )?;
        }
    }
    Ok(0)
}

async fn watch(socket_path: Option<&str>, output: Output) -> Result<u8> {
    let endpoint = WorkloadEndpoint::resolve(socket_path)?;
    let mut client = endpoint.connect().await?;
    let mut stream = client
        .fetch_x509svid(x509_svid_request())
        .await
        .map_err(|s| status_error(&endpoint, &s))?
        .into_inner();
    let mut n = 0u64;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| status_error(&endpoint, &s))?;
        let Some(resp) = msg else {
            bail!("the agent at {endpoint} closed the stream");
        };
        n += 1;
        let views = resp.svids.iter().map(view).collect::<Result<Vec<_>>>()?;
        let mut out = std::io::stdout().lock();
        match output {
            Output::Json => {
                let doc = serde_json::json!({
                    "update": n,
                    "received_at": rfc3339(SystemTime::now()),
                    "svids": views,
                    "federated_bundles": federated_view(&resp)
                        .iter()
                        .map(|(td, _)| td.clone())
                        .collect::<Vec<_>>(),
                });
                writeln!(out, "{doc}")?;
            }
            Output::Text => {
                writeln!(
                    out,
                    "[{}] update {n}: {} SVID(s)",
                    rfc3339(SystemTime::now()),
                    views.len()
                )?;
                for v in &views {
                    writeln!(
                        out,
                        "  {}  serial {}  valid until {}{}",
                        v.spiffe_id,
                        v.serial,
                        v.not_after,
                        if v.hint.is_empty() {
                            String::new()
                        } else {
                            format!("  hint {}", v.hint)
                        }
                    )?;
                }
            }
        }
        out.flush()?;
    }
}

async fn healthcheck(socket_path: Option<&str>, timeout: Duration) -> Result<u8> {
    let endpoint = WorkloadEndpoint::resolve(socket_path)?;
    let check = async {
        let mut client = endpoint.connect().await?;
        let answer = match client.fetch_x509_bundles(x509_bundles_request()).await {
            Ok(r) => r.into_inner().message().await.map(|_| ()),
            Err(s) => Err(s),
        };
        Ok::<_, anyhow::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| anyhow!("no answer from {endpoint} within {timeout:?}"))??;
    match answer {
        // A caller without an identity is refused, but the agent did answer.
        Ok(()) => {}
        Err(s) if s.code() == Code::PermissionDenied => {}
        Err(s) => return Err(status_error(&endpoint, &s)),
    }
    println!("Agent is healthy (Workload API at {endpoint} answers)");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_claims_are_read_for_display() {
        // {"sub":"spiffe://x/y","exp":5}
        let token = "e30.eyJzdWIiOiJzcGlmZmU6Ly94L3kiLCJleHAiOjV9.c2ln";
        let claims = unverified_claims(token);
        assert_eq!(claims["sub"], "spiffe://x/y");
        assert_eq!(claims["exp"], 5);
        assert!(unverified_claims("garbage").is_empty());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "5 s", "5d", "0s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "signet-agent",
            "api",
            "fetch",
            "x509",
            "--socket-path",
            "/tmp/x.sock",
            "--write",
            "/tmp/out",
        ])
        .unwrap();
        assert_eq!(command_name(&c.command), "api fetch x509");
        assert!(Cli::try_parse_from(["signet-agent", "run"]).is_err());

        let c = Cli::try_parse_from([
            "signet-agent",
            "api",
            "fetch",
            "jwt",
            "--audience",
            "a",
            "--audience",
            "b",
        ])
        .unwrap();
        assert_eq!(command_name(&c.command), "api fetch jwt");
        let Command::Api(ApiCommand::Fetch(FetchCommand::Jwt { audience, .. })) = c.command else {
            unreachable!("parsed as another command")
        };
        assert_eq!(audience, ["a", "b"]);
        // An audience is required.
        assert!(Cli::try_parse_from(["signet-agent", "api", "fetch", "jwt"]).is_err());
        let c = Cli::try_parse_from([
            "signet-agent",
            "api",
            "validate",
            "jwt",
            "--audience",
            "a",
            "--token",
            "-",
        ])
        .unwrap();
        assert_eq!(command_name(&c.command), "api validate jwt");
        assert!(
            Cli::try_parse_from(["signet-agent", "api", "validate", "jwt", "--token", "t"])
                .is_err()
        );
    }

    #[test]
    fn the_delegation_commands_parse() {
        use delegation::DelegationCommand as D;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["signet-agent", "api", "delegation"].iter().chain(args))
        };
        let c = parse(&[
            "mint",
            "--right",
            "a:read",
            "--right",
            "b",
            "--ttl",
            "5m",
            "--max-depth",
            "2",
        ])
        .unwrap();
        assert_eq!(command_name(&c.command), "api delegation mint");
        let Command::Api(ApiCommand::Delegation(D::Mint {
            rights,
            ttl,
            max_depth,
            id_token,
            ..
        })) = c.command
        else {
            unreachable!("parsed as another command")
        };
        assert_eq!(rights, ["a:read", "b"]);
        assert_eq!((ttl, max_depth, id_token), (Some(300), Some(2), None));
        assert!(parse(&["mint", "--id-token", "t", "--id-token-file", "-"]).is_err());
        assert!(parse(&["mint", "--max-depth", "0"]).is_err());
        assert!(parse(&["mint", "--ttl", "1500ms"]).is_err());

        let c = parse(&["delegate", "--token-file", "-", "--to", "spiffe://td/b"]).unwrap();
        assert_eq!(command_name(&c.command), "api delegation delegate");
        // A token and a next actor are required.
        assert!(parse(&["delegate", "--to", "spiffe://td/b"]).is_err());
        assert!(parse(&["delegate", "--token", "t"]).is_err());
        assert!(parse(&["delegate", "--token", "t", "--token-file", "f", "--to", "x"]).is_err());
        let c = parse(&["keys", "--output", "json"]).unwrap();
        assert_eq!(command_name(&c.command), "api delegation keys");
    }
}
