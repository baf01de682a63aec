//! `signet-loadtool`: benchmarks of `signet-agent` through its Workload API socket, run against a
//! live agent and issuer on this machine (Unix sockets and loopback only; every loop is bounded).
//!
//! - `fetch-x509`: first-answer latency of `FetchX509SVID` (request sent -> first message) with N
//!   concurrent clients, each on its own connection, M requests each; p50 / p99 / p99.9.
//! - `jwt --mode cached|mint|validate`: latency of `FetchJWTSVID` served from the agent's token
//!   cache, `FetchJWTSVID` with a new audience per request (each one minted by the issuer over the
//!   node API), and `ValidateJWTSVID` of one token; same clients/requests/percentiles.
//! - `delegation --mode mint|delegate`: latency of the agent's delegation service: `Mint` (the
//!   caller acts for itself; the issuer evaluates the policy and signs over the node API) and
//!   `Delegate` of one minted token to `--to` (the issuer verifies the token, checks the holder
//!   and the policy, and signs a third-party block); same clients/requests/percentiles.
//! - `entry-latency`: time from `CreateEntry` (admin API) to the new SVID arriving on an open
//!   `FetchX509SVID` stream of a matching workload (this process).
//! - `rss`: the agent's resident memory per cached SVID: VmRSS of the agent before and after
//!   registering N entries that match this process, once the agent has signed them all.

mod stats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use signet_agent::cli::client::{
    DelegationClient, WorkloadClient, WorkloadEndpoint, jwt_svid_request, request,
    x509_svid_request,
};
use signet_proto::admin as apb;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::delegation as dpb;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::stats::Summary;

/// Longest wait for the agent to act on a change.
const AGENT_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Parser)]
#[command(
    name = "signet-loadtool",
    version,
    about = "Benchmarks of signet-agent over its Workload API socket"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// FetchX509SVID first-answer latency with concurrent clients.
    FetchX509 {
        /// Socket, clients, requests, pacing, output.
        #[command(flatten)]
        load: LoadArgs,
    },
    /// JWT-SVID latency with concurrent clients: from the agent's cache, minted, or validated.
    Jwt {
        /// `cached` (one audience: the agent's cache answers), `mint` (a new audience per request:
        /// the issuer signs each token) or `validate` (ValidateJWTSVID of one token).
        #[arg(long, value_enum, default_value_t = JwtMode::Cached)]
        mode: JwtMode,
        /// Socket, clients, requests, pacing, output.
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Delegation latency with concurrent clients: `mint` or `delegate` (of one minted token).
    Delegation {
        /// `mint` (a new token per request) or `delegate` (a hop of one token per request).
        #[arg(long, value_enum, default_value_t = DelegationMode::Mint)]
        mode: DelegationMode,
        /// The identity that mints (and holds the token it delegates); default: the first.
        #[arg(long, default_value = "")]
        spiffe_id: String,
        /// The next actor of `delegate`.
        #[arg(long, default_value = "spiffe://example.org/bench/worker")]
        to: String,
        /// Socket, clients, requests, pacing, output.
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Time from CreateEntry to the SVID on a waiting stream.
    EntryLatency {
        /// The agent's Workload API socket.
        #[arg(long, value_name = "PATH")]
        socket: String,
        /// The issuer's admin socket.
        #[arg(long, value_name = "PATH")]
        admin_socket: PathBuf,
        /// Parent ID of the entries (the agent's SPIFFE ID or a node alias).
        #[arg(long)]
        parent_id: String,
        /// Selector of the entries (default `unix:uid:<this uid>`).
        #[arg(long)]
        selector: Option<String>,
        /// Number of samples.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Agent memory per cached SVID.
    Rss {
        /// The agent's Workload API socket.
        #[arg(long, value_name = "PATH")]
        socket: String,
        /// The issuer's admin socket.
        #[arg(long, value_name = "PATH")]
        admin_socket: PathBuf,
        /// The agent's health listener (`/ready` reports the number of cached SVIDs).
        #[arg(long)]
        health: SocketAddr,
        /// The agent's process id.
        #[arg(long)]
        agent_pid: u32,
        /// Parent ID of the entries.
        #[arg(long)]
        parent_id: String,
        /// Selector of the entries (default `unix:uid:<this uid>`).
        #[arg(long)]
        selector: Option<String>,
        /// Number of entries to register.
        #[arg(long, default_value_t = 10_000)]
        entries: usize,
        /// Concurrent CreateEntry calls.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Keep the entries afterwards (default: delete them).
        #[arg(long)]
        keep: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The options of the latency benchmarks.
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The agent's Workload API socket.
    #[arg(long, value_name = "PATH")]
    socket: String,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Pause of each client between its requests, in milliseconds (randomized ±50 %); 0 = back
    /// to back (a closed loop that measures saturation rather than latency).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What `jwt` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum JwtMode {
    /// FetchJWTSVID for one audience (cache hits).
    Cached,
    /// FetchJWTSVID for a new audience each time (issuer mints).
    Mint,
    /// ValidateJWTSVID of one token.
    Validate,
}

/// What `delegation` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DelegationMode {
    /// Mint: the caller acts for itself.
    Mint,
    /// Delegate one token to the next actor.
    Delegate,
}

/// One kind of timed request.
#[derive(Debug, Clone)]
enum Op {
    /// FetchX509SVID: time to the first message.
    FetchX509,
    /// FetchJWTSVID for the audience `bench`.
    FetchJwtCached,
    /// FetchJWTSVID for a new audience (`bench-<run>-<client>-<n>`).
    FetchJwtMint(String),
    /// ValidateJWTSVID of this token for the audience `bench`.
    ValidateJwt(String),
    /// Delegation `Mint` as this identity.
    DelegationMint(String),
    /// Delegation `Delegate` of (token, holder identity, next actor).
    DelegationDelegate(zeroize::Zeroizing<String>, String, String),
}

/// One connection: the Workload API and the delegation service on the same channel.
struct Conn {
    w: WorkloadClient,
    d: DelegationClient,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::FetchX509 => "fetch-x509",
            Op::FetchJwtCached => "jwt-cached",
            Op::FetchJwtMint(_) => "jwt-mint",
            Op::ValidateJwt(_) => "jwt-validate",
            Op::DelegationMint(_) => "delegation-mint",
            Op::DelegationDelegate(..) => "delegation-delegate",
        }
    }

    /// Sends request `n` of client `client` and returns how long the answer took.
    async fn call(
        &self,
        conn: &mut Conn,
        client: usize,
        n: usize,
    ) -> Result<Duration, tonic::Status> {
        let c = &mut conn.w;
        let started = Instant::now();
        match self {
            Op::FetchX509 => {
                let mut stream = c.fetch_x509svid(x509_svid_request()).await?.into_inner();
                if stream.message().await?.is_none() {
                    return Err(tonic::Status::unknown("stream ended without a message"));
                }
            }
            Op::FetchJwtCached => {
                c.fetch_jwtsvid(jwt_svid_request(vec!["bench".into()], String::new()))
                    .await?;
            }
            Op::FetchJwtMint(run) => {
                let audience = format!("bench-{run}-{client}-{n}");
                c.fetch_jwtsvid(jwt_svid_request(vec![audience], String::new()))
                    .await?;
            }
            Op::ValidateJwt(token) => {
                c.validate_jwtsvid(request(signet_proto::workload::ValidateJwtsvidRequest {
                    audience: "bench".into(),
                    svid: token.clone(),
                }))
                .await?;
            }
            Op::DelegationMint(id) => {
                conn.d
                    .mint(request(dpb::MintRequest {
                        spiffe_id: id.clone(),
                        ..Default::default()
                    }))
                    .await?;
            }
            Op::DelegationDelegate(token, id, to) => {
                conn.d
                    .delegate(request(dpb::DelegateRequest {
                        spiffe_id: id.clone(),
                        token: token.to_string(),
                        next_actor: to.clone(),
                        ..Default::default()
                    }))
                    .await?;
            }
        }
        Ok(started.elapsed())
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signet-loadtool: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signet-loadtool: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::FetchX509 { load } => closed_loop(Op::FetchX509, &load).await,
        Cmd::Jwt { mode, load } => {
            let op = match mode {
                JwtMode::Cached => Op::FetchJwtCached,
                JwtMode::Mint => Op::FetchJwtMint(nonce()),
                JwtMode::Validate => {
                    let mut c = workload(&load.socket).await?;
                    let resp =
                        c.w.fetch_jwtsvid(jwt_svid_request(vec!["bench".into()], String::new()))
                            .await
                            .map_err(|s| anyhow!("FetchJWTSVID: {:?} {}", s.code(), s.message()))?
                            .into_inner();
                    let token = resp
                        .svids
                        .into_iter()
                        .next()
                        .ok_or_else(|| anyhow!("FetchJWTSVID returned no token"))?
                        .svid;
                    Op::ValidateJwt(token)
                }
            };
            closed_loop(op, &load).await
        }
        Cmd::Delegation {
            mode,
            spiffe_id,
            to,
            load,
        } => {
            let op = match mode {
                DelegationMode::Mint => Op::DelegationMint(spiffe_id),
                DelegationMode::Delegate => {
                    let mut c = workload(&load.socket).await?;
                    let t =
                        c.d.mint(request(dpb::MintRequest {
                            spiffe_id: spiffe_id.clone(),
                            ..Default::default()
                        }))
                        .await
                        .map_err(|s| anyhow!("Mint: {:?} {}", s.code(), s.message()))?
                        .into_inner();
                    Op::DelegationDelegate(zeroize::Zeroizing::new(t.token), spiffe_id, to)
                }
            };
            closed_loop(op, &load).await
        }
        Cmd::EntryLatency {
            socket,
            admin_socket,
            parent_id,
            selector,
            samples,
            json,
        } => {
            let selector = selector_or_uid(selector)?;
            entry_latency(&socket, &admin_socket, &parent_id, &selector, samples, json).await
        }
        Cmd::Rss {
            socket,
            admin_socket,
            health,
            agent_pid,
            parent_id,
            selector,
            entries,
            concurrency,
            keep,
            json,
        } => {
            if !health.ip().is_loopback() {
                bail!("--health must be a loopback address");
            }
            let selector = selector_or_uid(selector)?;
            rss(RssArgs {
                socket,
                admin_socket,
                health,
                agent_pid,
                parent_id,
                selector,
                entries,
                concurrency: concurrency.max(1),
                keep,
                json,
            })
            .await
        }
    }
}

fn selector_or_uid(selector: Option<String>) -> Result<String> {
    match selector {
        Some(s) => Ok(s),
        None => {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self")?.uid();
            Ok(format!("unix:uid:{uid}"))
        }
    }
}

/// A short unique tag for the entries of one run.
fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// A cheap pseudo-random number (clock nanoseconds), for spacing samples.
fn pseudo_random() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0)
}

async fn workload(socket: &str) -> Result<Conn> {
    let channel = WorkloadEndpoint::parse(socket)?.channel().await?;
    Ok(Conn {
        w: WorkloadClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024),
        d: DelegationClient::new(channel),
    })
}

/// N clients, M requests each (back to back, or paced), of one kind; prints the latency
/// percentiles and the rate.
async fn closed_loop(op: Op, load: &LoadArgs) -> Result<()> {
    let LoadArgs {
        ref socket,
        clients,
        requests,
        pause_ms,
        json,
    } = *load;
    if clients == 0 || requests == 0 {
        bail!("--clients and --requests must be at least 1");
    }
    let name = op.name();
    // Warm-up (the agent hashes this executable once, then caches the digest; a cached JWT-SVID
    // is minted).
    let mut warm = workload(socket).await?;
    for n in 0..10 {
        op.call(&mut warm, usize::MAX, n)
            .await
            .map_err(|s| anyhow!("warm-up {name} failed: {:?} {}", s.code(), s.message()))?;
    }
    drop(warm);
    let op = Arc::new(op);

    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(workload(socket).await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (i, mut client) in conns.into_iter().enumerate() {
        let barrier = barrier.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut samples = Vec::with_capacity(requests);
            let mut errors = Vec::new();
            for n in 0..requests {
                if pause_ms > 0 {
                    let jitter = u64::from(pseudo_random()) % pause_ms.max(1);
                    tokio::time::sleep(Duration::from_millis(pause_ms / 2 + jitter)).await;
                }
                match op.call(&mut client, i, n).await {
                    Ok(d) => samples.push(d),
                    Err(s) => errors.push(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::with_capacity(clients * requests);
    let mut errors = Vec::new();
    for t in tasks {
        let (s, e) = t.await?;
        samples.extend(s);
        errors.extend(e);
    }
    let wall = started.elapsed();
    let summary = Summary::of(&mut samples);
    let rate = summary.count as f64 / wall.as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": name,
                "clients": clients,
                "requests_per_client": requests,
                "pause_ms": pause_ms,
                "ok": summary.count,
                "errors": errors.len(),
                "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
                "p50_us": summary.p50.as_micros() as u64,
                "p99_us": summary.p99.as_micros() as u64,
                "p999_us": summary.p999.as_micros() as u64,
                "max_us": summary.max.as_micros() as u64,
                "requests_per_second": rate,
            })
        );
    } else {
        println!(
            "{name}: {clients} client(s) x {requests} request(s), pause {pause_ms} ms: {} ok, {} errors, {rate:.0} req/s",
            summary.count,
            errors.len()
        );
        println!(
            "  latency: p50 {}  p99 {}  p99.9 {}  max {}",
            stats::fmt(summary.p50),
            stats::fmt(summary.p99),
            stats::fmt(summary.p999),
            stats::fmt(summary.max)
        );
        for e in errors.iter().take(3) {
            println!("  error: {e}");
        }
    }
    Ok(())
}

async fn admin(socket: &Path) -> Result<AdminClient<Channel>> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the admin socket {}", socket.display()))?;
    Ok(AdminClient::new(channel))
}

fn trust_domain_of(parent_id: &str) -> Result<String> {
    let rest = parent_id
        .strip_prefix("spiffe://")
        .ok_or_else(|| anyhow!("--parent-id {parent_id:?} is not a SPIFFE ID"))?;
    Ok(rest.split('/').next().unwrap_or_default().to_owned())
}

async fn create(
    admin: &mut AdminClient<Channel>,
    spiffe_id: &str,
    parent_id: &str,
    selector: &str,
) -> Result<String> {
    let e = admin
        .create_entry(apb::CreateEntryRequest {
            spiffe_id: spiffe_id.to_owned(),
            parent_id: parent_id.to_owned(),
            selectors: vec![selector.to_owned()],
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("CreateEntry {spiffe_id}: {:?} {}", s.code(), s.message()))?
        .into_inner();
    Ok(e.id)
}

async fn delete(admin: &mut AdminClient<Channel>, id: &str) -> Result<()> {
    admin
        .delete_entry(apb::DeleteEntryRequest { id: id.to_owned() })
        .await
        .map_err(|s| anyhow!("DeleteEntry {id}: {:?} {}", s.code(), s.message()))?;
    Ok(())
}

/// Reads `stream` until `pred` holds for a message (bounded by [`AGENT_WAIT`]).
async fn wait_stream(
    stream: &mut tonic::Streaming<signet_proto::workload::X509svidResponse>,
    mut pred: impl FnMut(&signet_proto::workload::X509svidResponse) -> bool,
) -> Result<()> {
    tokio::time::timeout(AGENT_WAIT, async {
        loop {
            let msg = stream
                .message()
                .await
                .map_err(|s| anyhow!("stream failed: {:?} {}", s.code(), s.message()))?
                .ok_or_else(|| anyhow!("stream ended"))?;
            if pred(&msg) {
                return Ok(());
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the agent did not act within {}s", AGENT_WAIT.as_secs()))?
}

fn has(msg: &signet_proto::workload::X509svidResponse, id: &str) -> bool {
    msg.svids.iter().any(|s| s.spiffe_id == id)
}

async fn entry_latency(
    socket: &str,
    admin_socket: &Path,
    parent_id: &str,
    selector: &str,
    samples: usize,
    json: bool,
) -> Result<()> {
    let td = trust_domain_of(parent_id)?;
    let tag = nonce();
    let mut admin = admin(admin_socket).await?;
    // A base entry keeps the waiting stream open (a workload without identity is refused).
    let base = format!("spiffe://{td}/loadtool/base-{tag}");
    let base_id = create(&mut admin, &base, parent_id, selector).await?;
    let result = async {
        let mut client = workload(socket).await?;
        let mut stream = tokio::time::timeout(AGENT_WAIT, async {
            loop {
                match client.w.fetch_x509svid(x509_svid_request()).await {
                    Ok(s) => return Ok::<_, anyhow::Error>(s.into_inner()),
                    Err(s) if s.code() == tonic::Code::PermissionDenied => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => bail!("FetchX509SVID: {:?} {}", s.code(), s.message()),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("the base entry was never served"))??;
        wait_stream(&mut stream, |m| has(m, &base)).await?;
        let mut from_request = Vec::with_capacity(samples);
        let mut from_response = Vec::with_capacity(samples);
        for i in 0..samples {
            // A pause of 0-600 ms, so that creations do not fall in step with the agent's sync
            // interval.
            tokio::time::sleep(Duration::from_millis(u64::from(pseudo_random() % 600))).await;
            let id = format!("spiffe://{td}/loadtool/latency-{tag}-{i}");
            let t0 = Instant::now();
            let entry_id = create(&mut admin, &id, parent_id, selector).await?;
            let t1 = Instant::now();
            wait_stream(&mut stream, |m| has(m, &id)).await?;
            let t2 = Instant::now();
            from_request.push(t2 - t0);
            from_response.push(t2 - t1);
            delete(&mut admin, &entry_id).await?;
            wait_stream(&mut stream, |m| !has(m, &id)).await?;
        }
        Ok::<_, anyhow::Error>((from_request, from_response))
    }
    .await;
    delete(&mut admin, &base_id).await?;
    let (mut from_request, mut from_response) = result?;
    let a = Summary::of(&mut from_request);
    let b = Summary::of(&mut from_response);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "entry-latency",
                "samples": a.count,
                "from_create_request_ms": {"p50": ms(a.p50), "max": ms(a.max)},
                "from_create_response_ms": {"p50": ms(b.p50), "max": ms(b.max)},
            })
        );
    } else {
        println!(
            "entry-latency: {} samples (CreateEntry -> SVID on an open stream)",
            a.count
        );
        println!(
            "  from the request:  p50 {}  max {}",
            stats::fmt(a.p50),
            stats::fmt(a.max)
        );
        println!(
            "  from the response: p50 {}  max {}",
            stats::fmt(b.p50),
            stats::fmt(b.max)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// VmRSS of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// `svids` from the agent's `/ready` (plain HTTP/1.1 GET on loopback).
fn cached_svids(health: SocketAddr) -> Result<u64> {
    let mut s = TcpStream::connect_timeout(&health, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /ready HTTP/1.1\r\nHost: {health}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let start = body
        .find('{')
        .ok_or_else(|| anyhow!("no JSON in {body:?}"))?;
    let end = body
        .rfind('}')
        .ok_or_else(|| anyhow!("no JSON in {body:?}"))?;
    let v: serde_json::Value = serde_json::from_str(body.get(start..=end).unwrap_or("{}"))?;
    v.get("svids")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| anyhow!("no svids in {v}"))
}

/// Polls `/ready` until the cached SVID count satisfies `pred`, then until it is stable.
async fn wait_svids(health: SocketAddr, pred: impl Fn(u64) -> bool) -> Result<u64> {
    let deadline = Instant::now() + AGENT_WAIT;
    loop {
        let n = cached_svids(health)?;
        if pred(n) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!("the agent holds {n} SVIDs after {}s", AGENT_WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cached SVID count once it has not changed for 2 s (earlier changes are done).
async fn settled_svids(health: SocketAddr) -> Result<u64> {
    let mut last = cached_svids(health)?;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + AGENT_WAIT;
    while stable_since.elapsed() < Duration::from_secs(2) {
        if Instant::now() > deadline {
            bail!("the number of cached SVIDs never settled");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = cached_svids(health)?;
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
    }
    Ok(last)
}

struct RssArgs {
    socket: String,
    admin_socket: PathBuf,
    health: SocketAddr,
    agent_pid: u32,
    parent_id: String,
    selector: String,
    entries: usize,
    concurrency: usize,
    keep: bool,
    json: bool,
}

async fn create_many(a: &RssArgs, ids: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ids.len().div_ceil(a.concurrency).max(1)) {
        let chunk = chunk.to_vec();
        let admin_socket = a.admin_socket.clone();
        let parent = a.parent_id.clone();
        let selector = a.selector.clone();
        out.push(tokio::spawn(async move {
            let mut admin = admin(&admin_socket).await?;
            let mut created = Vec::with_capacity(chunk.len());
            for id in chunk {
                created.push(create(&mut admin, &id, &parent, &selector).await?);
            }
            Ok::<_, anyhow::Error>(created)
        }));
    }
    let mut all = Vec::with_capacity(ids.len());
    for t in out {
        all.extend(t.await??);
    }
    Ok(all)
}

async fn delete_many(a: &RssArgs, ids: Vec<String>) -> Result<()> {
    let per = ids.len().div_ceil(a.concurrency).max(1);
    let mut tasks = Vec::new();
    for chunk in ids.chunks(per) {
        let chunk = chunk.to_vec();
        let admin_socket = a.admin_socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut admin = admin(&admin_socket).await?;
            for id in chunk {
                delete(&mut admin, &id).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn rss(a: RssArgs) -> Result<()> {
    let td = trust_domain_of(&a.parent_id)?;
    let tag = nonce();
    let before_svids = settled_svids(a.health).await?;
    let rss_before = vm_rss_kib(a.agent_pid)?;
    let ids: Vec<String> = (0..a.entries)
        .map(|i| format!("spiffe://{td}/loadtool/rss-{tag}-{i}"))
        .collect();
    let started = Instant::now();
    let entry_ids = create_many(&a, &ids).await?;
    let created_in = started.elapsed();
    let target = before_svids + a.entries as u64;
    wait_svids(a.health, |n| n >= target).await?;
    let signed_in = started.elapsed();
    // Let the agent settle (state persisted, transient buffers freed).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = vm_rss_kib(a.agent_pid)?;
    // One workload fetch of all of them.
    let mut client = workload(&a.socket).await?;
    let t = Instant::now();
    let mut stream = client
        .w
        .fetch_x509svid(x509_svid_request())
        .await
        .map_err(|s| anyhow!("FetchX509SVID: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| anyhow!("FetchX509SVID: {:?} {}", s.code(), s.message()))?
        .ok_or_else(|| anyhow!("stream ended"))?;
    let fetch_all = t.elapsed();
    let served = first.svids.len();
    drop(stream);
    drop(client);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_fetch = vm_rss_kib(a.agent_pid)?;
    let delta = rss_after.saturating_sub(rss_before);
    let per_svid_bytes = delta as f64 * 1024.0 / a.entries as f64;
    if !a.keep {
        delete_many(&a, entry_ids).await?;
        wait_svids(a.health, |n| n <= before_svids).await?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "rss",
                "entries": a.entries,
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_after,
                "rss_after_fetch_kib": rss_after_fetch,
                "per_svid_bytes": per_svid_bytes,
                "create_seconds": created_in.as_secs_f64(),
                "all_signed_seconds": signed_in.as_secs_f64(),
                "fetch_all_ms": ms(fetch_all),
                "served": served,
            })
        );
    } else {
        println!(
            "rss: {} entries registered in {:.1}s, all SVIDs cached after {:.1}s",
            a.entries,
            created_in.as_secs_f64(),
            signed_in.as_secs_f64()
        );
        println!(
            "  agent VmRSS: {rss_before} KiB -> {rss_after} KiB = {per_svid_bytes:.0} bytes per cached SVID"
        );
        println!(
            "  one FetchX509SVID of all {served} SVIDs: {}; VmRSS afterwards {rss_after_fetch} KiB",
            stats::fmt(fetch_all)
        );
    }
    Ok(())
}
