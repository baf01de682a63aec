//! `signet-agent api delegation mint | delegate | keys`: the delegation service on the agent
//! socket, as a workload of this node calls it.
//!
//! Tokens and ID tokens are bearer credentials: they are read from a file or standard input
//! (`-`) rather than the command line when possible, kept in zeroizing strings, and printed only
//! as the command's own output (text: the token alone on stdout, so that
//! `T=$(signet-agent api delegation mint ...)` works).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Subcommand;
use signet_proto::delegation as pb;
use tonic::Code;
use zeroize::Zeroizing;

use super::client::{DelegationClient, WorkloadEndpoint, request};
use super::{CallArgs, Output, parse_duration};
use crate::runtime::certs::rfc3339;
use crate::workload_api::NO_IDENTITY_ISSUED;

/// `api delegation` subcommands.
#[derive(Debug, Subcommand)]
pub enum DelegationCommand {
    /// Mints a delegation token whose first actor is this workload (`Mint`), for the user of an
    /// ID token or, without one, for the workload itself. Text output: the token alone.
    Mint {
        /// An OpenID Connect ID token proving the subject (a user).
        #[arg(long, value_name = "TOKEN", conflicts_with = "id_token_file")]
        id_token: Option<String>,
        /// A file holding the ID token (`-`: standard input).
        #[arg(long, value_name = "PATH")]
        id_token_file: Option<PathBuf>,
        /// A right asked for (repeat for several; none: every right the policy grants).
        #[arg(long = "right", value_name = "RIGHT")]
        rights: Vec<String>,
        /// The lifetime asked for (`90s`, `10m`, `1h`; default: the longest the policy allows).
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u32>,
        /// Hops allowed after this workload (default: the most the policy allows).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_depth: Option<u32>,
        /// Which of this workload's identities acts (default: the first).
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<String>,
        /// Endpoint, timeout and output format.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Delegates a token this workload holds to another workload (`Delegate`), narrowing its
    /// rights and lifetime. Text output: the new token alone.
    Delegate {
        /// The held token.
        #[arg(
            long,
            value_name = "TOKEN",
            required_unless_present = "token_file",
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// A file holding the token (`-`: standard input).
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// The SPIFFE ID of the next actor.
        #[arg(long = "to", value_name = "SPIFFE_ID")]
        to: String,
        /// A right the next actor keeps (repeat for several; none: all the token's rights).
        #[arg(long = "right", value_name = "RIGHT")]
        rights: Vec<String>,
        /// The lifetime of the new token (default: the token's expiry).
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u32>,
        /// Which of this workload's identities holds the token (default: the token's holder).
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<String>,
        /// Endpoint, timeout and output format.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Prints the delegation keys and the revocation list the agent holds (`FetchDelegationKeys`,
    /// first message).
    Keys {
        /// Endpoint, timeout and output format.
        #[command(flatten)]
        call: CallArgs,
    },
}

impl DelegationCommand {
    /// The command's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            DelegationCommand::Mint { .. } => "api delegation mint",
            DelegationCommand::Delegate { .. } => "api delegation delegate",
            DelegationCommand::Keys { .. } => "api delegation keys",
        }
    }
}

/// A lifetime in whole seconds, at most `u32::MAX`.
fn parse_ttl(s: &str) -> Result<u32, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: the lifetime must be whole seconds"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{s:?} is too long"))
}

/// A credential given inline or in a file (`-`: standard input), trimmed.
fn credential(
    inline: Option<String>,
    file: Option<&Path>,
    what: &str,
) -> Result<Zeroizing<String>> {
    let raw = match (inline, file) {
        (Some(t), _) if t == "-" => read_stdin(what)?,
        (Some(t), _) => Zeroizing::new(t),
        (None, Some(p)) if p == Path::new("-") => read_stdin(what)?,
        (None, Some(p)) => {
            let mut s = Zeroizing::new(String::new());
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_string(&mut s))
                .with_context(|| format!("cannot read the {what} from {}", p.display()))?;
            s
        }
        (None, None) => Zeroizing::new(String::new()),
    };
    let trimmed = raw.trim();
    if trimmed.len() == raw.len() {
        return Ok(raw);
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

fn read_stdin(what: &str) -> Result<Zeroizing<String>> {
    let mut s = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    Ok(s)
}

/// A clear error for a status of the delegation service.
fn status_error(endpoint: &WorkloadEndpoint, s: &tonic::Status) -> anyhow::Error {
    match s.code() {
        Code::PermissionDenied if s.message() == NO_IDENTITY_ISSUED => anyhow!(
            "the agent at {endpoint} issued no identity to this process ({NO_IDENTITY_ISSUED}): no registration entry matches it"
        ),
        Code::PermissionDenied => anyhow!("refused (PermissionDenied): {}", s.message()),
        Code::FailedPrecondition => {
            anyhow!(
                "delegation is not available (FailedPrecondition): {}",
                s.message()
            )
        }
        Code::Unauthenticated => anyhow!("refused (Unauthenticated): {}", s.message()),
        Code::InvalidArgument => anyhow!("invalid request (InvalidArgument): {}", s.message()),
        Code::Unavailable => anyhow!(
            "the agent at {endpoint} is unavailable (Unavailable): {}",
            s.message()
        ),
        code => anyhow!("the agent at {endpoint} answered {code:?}: {}", s.message()),
    }
}

/// Runs `call` on a delegation client of `endpoint` within `timeout`.
async fn call<T, F>(endpoint: &WorkloadEndpoint, timeout: Duration, call: F) -> Result<T>
where
    F: AsyncFnOnce(&mut DelegationClient) -> Result<T, tonic::Status>,
{
    let run = async {
        let mut client = endpoint.connect_delegation().await?;
        call(&mut client)
            .await
            .map_err(|s| status_error(endpoint, &s))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| anyhow!("no answer from {endpoint} within {timeout:?}"))?
}

/// Runs an `api delegation` command; returns the exit status.
pub async fn execute(command: DelegationCommand) -> Result<u8> {
    match command {
        DelegationCommand::Mint {
            id_token,
            id_token_file,
            rights,
            ttl,
            max_depth,
            spiffe_id,
            call: args,
        } => {
            let endpoint = WorkloadEndpoint::resolve(args.socket_path.as_deref())?;
            let id_token = credential(id_token, id_token_file.as_deref(), "ID token")?;
            let message = pb::MintRequest {
                spiffe_id: spiffe_id.unwrap_or_default(),
                id_token: id_token.to_string(),
                rights,
                ttl_seconds: ttl.unwrap_or(0),
                max_depth: max_depth.unwrap_or(0),
            };
            let token = call(&endpoint, args.timeout, async |c| {
                c.mint(request(message))
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
            print_token(token, args.output)
        }
        DelegationCommand::Delegate {
            token,
            token_file,
            to,
            rights,
            ttl,
            spiffe_id,
            call: args,
        } => {
            let endpoint = WorkloadEndpoint::resolve(args.socket_path.as_deref())?;
            let token = credential(token, token_file.as_deref(), "token")?;
            if token.is_empty() {
                bail!("the token is empty");
            }
            let message = pb::DelegateRequest {
                spiffe_id: spiffe_id.unwrap_or_default(),
                token: token.to_string(),
                next_actor: to,
                rights,
                ttl_seconds: ttl.unwrap_or(0),
            };
            let token = call(&endpoint, args.timeout, async |c| {
                c.delegate(request(message))
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
            print_token(token, args.output)
        }
        DelegationCommand::Keys { call: args } => {
            let endpoint = WorkloadEndpoint::resolve(args.socket_path.as_deref())?;
            let first = call(&endpoint, args.timeout, async |c| {
                let mut stream = c
                    .fetch_delegation_keys(request(pb::FetchDelegationKeysRequest {}))
                    .await?
                    .into_inner();
                stream.message().await?.ok_or_else(|| {
                    tonic::Status::unavailable("the agent closed the stream without an answer")
                })
            })
            .await?;
            print_keys(&first, args.output)
        }
    }
}

/// The JSON output of `mint` and `delegate`.
#[derive(serde::Serialize)]
struct TokenView<'a> {
    token: &'a str,
    token_id: &'a str,
    subject: &'a str,
    chain: &'a [String],
    rights: &'a [String],
    expires_at: i64,
    remaining_depth: u32,
}

fn print_token(mut t: pb::DelegationToken, output: Output) -> Result<u8> {
    let token = Zeroizing::new(std::mem::take(&mut t.token));
    let mut out = std::io::stdout().lock();
    match output {
        Output::Text => writeln!(out, "{}", token.as_str())?,
        Output::Json => {
            let view = TokenView {
                token: token.as_str(),
                token_id: &t.token_id,
                subject: &t.subject,
                chain: &t.chain,
                rights: &t.rights,
                expires_at: t.expires_at,
                remaining_depth: t.remaining_depth,
            };
            let doc = Zeroizing::new(serde_json::to_string(&view)?);
            writeln!(out, "{}", doc.as_str())?;
        }
    }
    Ok(0)
}

fn print_keys(state: &pb::DelegationKeysResponse, output: Output) -> Result<u8> {
    let keys: serde_json::Value = serde_json::from_str(&state.keys_json)
        .context("the agent sent an invalid keys document")?;
    let revocations: serde_json::Value = serde_json::from_str(&state.revocations_json)
        .context("the agent sent an invalid revocation list")?;
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "sequence": state.sequence,
                "keys": keys,
                "revocations": revocations,
            });
            writeln!(out, "{doc}")?;
        }
        Output::Text => {
            let when = |v: &serde_json::Value| {
                v.as_u64()
                    .map(|t| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(t)))
                    .unwrap_or_default()
            };
            writeln!(out, "Delegation state sequence {}", state.sequence)?;
            let keys = keys["keys"].as_array().cloned().unwrap_or_default();
            writeln!(out, "Keys ({}):", keys.len())?;
            for k in &keys {
                writeln!(
                    out,
                    "  root_key_id {}  {}  {}  until {}  {}",
                    k["root_key_id"],
                    k["algorithm"].as_str().unwrap_or(""),
                    k["state"].as_str().unwrap_or(""),
                    when(&k["not_after"]),
                    k["public_key"].as_str().unwrap_or("")
                )?;
            }
            let revoked = revocations["revoked"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            writeln!(out, "Revoked ({}):", revoked.len())?;
            for r in &revoked {
                writeln!(
                    out,
                    "  token {}  at {}  revocation id {}",
                    r["token_id"].as_str().unwrap_or(""),
                    when(&r["revoked_at"]),
                    r["revocation_id"].as_str().unwrap_or("")
                )?;
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_whole_seconds() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("10m"), Ok(600));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert!(parse_ttl("1500ms").is_err());
        assert!(parse_ttl("0s").is_err());
    }

    #[test]
    fn credentials_come_inline_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "abc.def\n").unwrap();
        assert_eq!(
            credential(None, Some(&path), "token").unwrap().as_str(),
            "abc.def"
        );
        assert_eq!(
            credential(Some(" x ".into()), None, "token")
                .unwrap()
                .as_str(),
            "x"
        );
        assert_eq!(credential(None, None, "token").unwrap().as_str(), "");
        let missing = dir.path().join("missing");
        let err = credential(None, Some(&missing), "ID token").unwrap_err();
        assert!(format!("{err:#}").contains("cannot read the ID token"));
    }
}
