//! The command line of `signet-issuer`: `run` and the admin commands, which talk to a running
//! issuer over its admin socket.

mod client;
mod commands;
mod output;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use signet_issuer::audit::verify::Anchor;
use signet_issuer::config::DEFAULT_ADMIN_SOCKET_PATH;

pub use commands::execute;

/// signet-issuer: the root of a Signet (SPIFFE) trust domain.
#[derive(Debug, Parser)]
#[command(name = "signet-issuer", version, about, propagate_version = true)]
pub struct Cli {
    /// Path of the admin API socket of the issuer to talk to.
    #[arg(
        long,
        global = true,
        env = "SIGNET_ADMIN_SOCKET",
        default_value = DEFAULT_ADMIN_SOCKET_PATH,
        value_name = "PATH"
    )]
    pub socket_path: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON (one document on stdout).
    Json,
}

/// Format of trust bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BundleFormatArg {
    /// PEM certificates (X.509 authorities).
    Pem,
    /// SPIFFE bundle (JWK Set) JSON.
    Spiffe,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the issuer.
    Run {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Registration entries.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Join tokens for node attestation.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Attested agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Trust bundles: the own one and federated ones.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Federation relationships: other trust domains whose bundles the issuer polls.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// X509-SVIDs for the operator.
    #[command(subcommand)]
    X509(X509Command),
    /// JWT-SVIDs for the operator.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// The certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Check that the issuer is healthy (exit status 0) or not (1).
    Healthcheck,
    /// The audit log: verify its hash chain, trace delegation chains, list events.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Delegation tokens: revoke, show keys and policy.
    #[command(subcommand)]
    Delegation(DelegationCommand),
}

/// `delegation` commands.
#[derive(Debug, Subcommand)]
pub enum DelegationCommand {
    /// Revoke a token and every token derived from it; verifiers learn it through the agents
    /// within seconds.
    Revoke {
        /// The token's id (from `audit list --kind 'delegation.*'` or the minting reply).
        #[arg(long, value_name = "ID")]
        token_id: String,
        /// Why (kept in the audit log).
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// The published delegation keys, the revocation list and the policy files in use.
    Status {
        #[command(flatten)]
        output: OutputArg,
    },
}

/// `audit` commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the whole hash chain and compare its head with the anchors (the NATS publisher's
    /// cursor, --expect-head); exits 1 on a break or a truncation.
    Verify {
        /// A head recorded earlier (e.g. from a previous run or from the JetStream stream): the log
        /// must still reach SEQ, with HASH there if given.
        #[arg(long, value_name = "SEQ[:HASH]", value_parser = parse_expect_head)]
        expect_head: Option<Anchor>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Rebuild the delegation chain of a token, from the subject to the current holder.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["token_id", "token"])))]
    Trace {
        /// The token's id (`token_id` of its delegation event).
        #[arg(long, value_name = "ID")]
        token_id: Option<String>,
        /// The token itself (base64url; `-` reads it from stdin): its id is read from it.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List events in seq order.
    List {
        /// Only this kind (`delegation.hop`), or a prefix ending in `*` (`delegation.*`).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Only events after this seq.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        /// At most this many events (0 = all).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u64,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// Parses `--expect-head SEQ[:HASH]`.
fn parse_expect_head(s: &str) -> Result<Anchor, String> {
    signet_issuer::audit::verify::parse_anchor("--expect-head", s)
}

/// `entry` commands.
#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Create a registration entry.
    Create(EntryCreateArgs),
    /// Show entries, all of them or those matching the filters.
    Show(EntryShowArgs),
    /// Update fields of an entry; the fields not given are kept.
    Update(EntryUpdateArgs),
    /// Delete an entry.
    Delete {
        /// Entry ID.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// Arguments of `entry create`.
#[derive(Debug, Args)]
pub struct EntryCreateArgs {
    /// SPIFFE ID issued to matching workloads.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: String,
    /// ID of the agent (or node alias) the workloads run under.
    #[arg(long, value_name = "ID")]
    pub parent_id: String,
    /// Selector TYPE:VALUE the workload must have (repeat for several).
    #[arg(long = "selector", value_name = "TYPE:VALUE")]
    pub selectors: Vec<String>,
    /// X509-SVID TTL (e.g. 1h); default: the issuer's.
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub x509_svid_ttl: Option<u32>,
    /// JWT-SVID TTL (e.g. 5m); default: the issuer's.
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub jwt_svid_ttl: Option<u32>,
    /// DNS name added to the X509-SVID (repeat for several).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// Hint returned to workloads with the SVID.
    #[arg(long)]
    pub hint: Option<String>,
    /// Holders of this identity may use the admin API.
    #[arg(long)]
    pub admin: bool,
    /// The identity is a downstream issuer.
    #[arg(long)]
    pub downstream: bool,
    /// Trust domain whose bundle the workloads receive (repeat for several).
    #[arg(long = "federates-with", value_name = "TD")]
    pub federates_with: Vec<String>,
    /// When the entry stops being served: RFC 3339 time or Unix seconds.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub expires_at: Option<i64>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `entry show`.
#[derive(Debug, Args)]
pub struct EntryShowArgs {
    /// Entry ID.
    #[arg(long)]
    pub id: Option<String>,
    /// SPIFFE ID.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: Option<String>,
    /// Parent ID.
    #[arg(long, value_name = "ID")]
    pub parent_id: Option<String>,
    /// Selector the entries must include (repeat: all must match).
    #[arg(long = "selector", value_name = "TYPE:VALUE")]
    pub selectors: Vec<String>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `entry update`.
#[derive(Debug, Args)]
pub struct EntryUpdateArgs {
    /// Entry ID.
    #[arg(long)]
    pub id: String,
    /// New SPIFFE ID.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: Option<String>,
    /// New parent ID.
    #[arg(long, value_name = "ID")]
    pub parent_id: Option<String>,
    /// Replace the selectors (repeat for several).
    #[arg(long = "selector", value_name = "TYPE:VALUE")]
    pub selectors: Vec<String>,
    /// New X509-SVID TTL (0s = the issuer's default).
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub x509_svid_ttl: Option<u32>,
    /// New JWT-SVID TTL (0s = the issuer's default).
    #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
    pub jwt_svid_ttl: Option<u32>,
    /// Replace the DNS names (repeat for several).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// Remove every DNS name.
    #[arg(long, conflicts_with = "dns_names")]
    pub clear_dns_names: bool,
    /// New hint ("" removes it).
    #[arg(long)]
    pub hint: Option<String>,
    /// Admin flag.
    #[arg(long, value_name = "BOOL")]
    pub admin: Option<bool>,
    /// Downstream flag.
    #[arg(long, value_name = "BOOL")]
    pub downstream: Option<bool>,
    /// Replace the federated trust domains (repeat for several).
    #[arg(long = "federates-with", value_name = "TD")]
    pub federates_with: Vec<String>,
    /// Remove every federated trust domain.
    #[arg(long, conflicts_with = "federates_with")]
    pub clear_federates_with: bool,
    /// New expiry: RFC 3339 time or Unix seconds; 0 removes it.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub expires_at: Option<i64>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `token` commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Generate a single-use join token (printed once).
    Generate {
        /// Make this ID an alias of the agent that redeems the token (usable as --parent-id).
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<String>,
        /// Lifetime of the token (default 10m, at most 7d).
        #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
        ttl: Option<u32>,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// `agent` commands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List attested agents.
    List(OutputArg),
    /// Show one agent.
    Show {
        /// Agent SPIFFE ID.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Evict an agent: it must attest again.
    Evict {
        /// Agent SPIFFE ID.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
    },
    /// Ban an agent: it is refused until unbanned or evicted.
    Ban {
        /// Agent SPIFFE ID.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
    },
    /// Lift a ban.
    Unban {
        /// Agent SPIFFE ID.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
    },
}

/// `bundle` commands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Print a trust bundle (the own one by default).
    Show {
        /// Output format.
        #[arg(long, value_enum, default_value_t = BundleFormatArg::Pem)]
        format: BundleFormatArg,
        /// Trust domain of a federated bundle to print instead of the own one.
        #[arg(long, value_name = "TD")]
        trust_domain: Option<String>,
    },
    /// Set (create or replace) the bundle of a federated trust domain.
    Set {
        /// The federated trust domain (e.g. partner.org or spiffe://partner.org).
        #[arg(long, visible_alias = "id", value_name = "TD")]
        trust_domain: String,
        /// Bundle file; standard input when absent.
        #[arg(long, value_name = "FILE")]
        path: Option<PathBuf>,
        /// Format of the file.
        #[arg(long, value_enum, default_value_t = BundleFormatArg::Spiffe)]
        format: BundleFormatArg,
    },
    /// List the bundles (own and federated).
    List(OutputArg),
    /// Delete the bundle of a federated trust domain.
    Delete {
        /// The federated trust domain.
        #[arg(long, visible_alias = "id", value_name = "TD")]
        trust_domain: String,
    },
}

/// Bundle endpoint profile of a federated trust domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Ordinary web PKI (system roots, or --ca-bundle).
    #[value(name = "https_web")]
    HttpsWeb,
    /// The endpoint presents an X509-SVID (--endpoint-spiffe-id), checked with the trust
    /// domain's bundle.
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
}

impl ProfileArg {
    /// The profile's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            ProfileArg::HttpsWeb => "https_web",
            ProfileArg::HttpsSpiffe => "https_spiffe",
        }
    }
}

/// `federation` commands.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Create a relationship (and store its bootstrap bundle).
    Create(FederationCreateArgs),
    /// List the relationships with the state of their pollers.
    List(OutputArg),
    /// Show one relationship: endpoint, profile, last success, last error, next poll.
    Show {
        /// The federated trust domain.
        #[arg(long, value_name = "TD")]
        trust_domain: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Change a relationship; the options not given are kept.
    Update(FederationUpdateArgs),
    /// Delete a relationship (its bundle is kept: `bundle delete` removes it).
    Delete {
        /// The federated trust domain.
        #[arg(long, value_name = "TD")]
        trust_domain: String,
    },
    /// Poll the bundle endpoint now; exits 1 if the poll fails (the last good bundle is kept).
    Refresh {
        /// The federated trust domain.
        #[arg(long, value_name = "TD")]
        trust_domain: String,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// Arguments of `federation create`.
#[derive(Debug, Args)]
pub struct FederationCreateArgs {
    /// The federated trust domain (e.g. partner.org or spiffe://partner.org).
    #[arg(long, value_name = "TD")]
    pub trust_domain: String,
    /// URL of its bundle endpoint (https://...).
    #[arg(long, value_name = "URL")]
    pub bundle_endpoint_url: String,
    /// How the endpoint authenticates itself.
    #[arg(long, value_enum)]
    pub profile: ProfileArg,
    /// https_spiffe: the SPIFFE ID the endpoint presents (e.g. spiffe://partner.org/signet/issuer).
    #[arg(long, value_name = "ID")]
    pub endpoint_spiffe_id: Option<String>,
    /// Bootstrap bundle of the trust domain (required for https_spiffe unless one is stored).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Format of --bundle.
    #[arg(long, value_enum, default_value_t = BundleFormatArg::Spiffe)]
    pub bundle_format: BundleFormatArg,
    /// https_web: PEM roots to trust for the endpoint instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `federation update`.
#[derive(Debug, Args)]
pub struct FederationUpdateArgs {
    /// The federated trust domain.
    #[arg(long, value_name = "TD")]
    pub trust_domain: String,
    /// New bundle endpoint URL.
    #[arg(long, value_name = "URL")]
    pub bundle_endpoint_url: Option<String>,
    /// New profile.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// New endpoint SPIFFE ID (https_spiffe).
    #[arg(long, value_name = "ID")]
    pub endpoint_spiffe_id: Option<String>,
    /// Replace the stored bundle of the trust domain with this file.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Format of --bundle.
    #[arg(long, value_enum, default_value_t = BundleFormatArg::Spiffe)]
    pub bundle_format: BundleFormatArg,
    /// https_web: new PEM roots for the endpoint.
    #[arg(long, value_name = "FILE", conflicts_with = "system_roots")]
    pub ca_bundle: Option<PathBuf>,
    /// https_web: trust the system roots again (drop the CA bundle).
    #[arg(long)]
    pub system_roots: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `x509` commands.
#[derive(Debug, Subcommand)]
pub enum X509Command {
    /// Mint an X509-SVID with a fresh key (PEM on stdout, or files with --write).
    Mint {
        /// SPIFFE ID of the SVID.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
        /// Lifetime (default: the issuer's X509-SVID TTL).
        #[arg(long, value_name = "DUR", value_parser = parse_ttl)]
        ttl: Option<u32>,
        /// DNS name added to the SVID (repeat for several).
        #[arg(long = "dns-name", value_name = "NAME")]
        dns_names: Vec<String>,
        /// Write svid.pem, svid.key (0600) and bundle.pem into this directory.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

/// `jwt` commands.
#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Mint a JWT-SVID for an ID of the trust domain (no entry needed), signed by the active JWT
    /// key; text output is the token alone.
    Mint(JwtMintArgs),
}

/// Arguments of `jwt mint`.
#[derive(Debug, Args)]
pub struct JwtMintArgs {
    /// SPIFFE ID of the JWT-SVID (its `sub`).
    #[arg(long, value_name = "ID")]
    pub spiffe_id: String,
    /// Audience of the token (its `aud`; repeat for several).
    #[arg(long = "audience", value_name = "AUD", required = true)]
    pub audience: Vec<String>,
    /// Lifetime (default: the issuer's JWT-SVID TTL; at most 24h).
    #[arg(long, value_name = "DUR", value_parser = parse_nonzero_ttl)]
    pub ttl: Option<u32>,
    #[command(flatten)]
    pub output: OutputArg,
}

/// `ca` commands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Show the CA slots (prepared, active, retired).
    Show(OutputArg),
    /// Prepare the next CA now (published in the bundle, not yet signing).
    Prepare(OutputArg),
    /// Activate the prepared CA now.
    Activate(OutputArg),
}

/// Parses a TTL like `90s`, `5m`, `1h` into whole seconds.
fn parse_ttl(s: &str) -> Result<u32, String> {
    let d: Duration = signet_issuer::config::parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: use whole seconds"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{s:?} is too long"))
}

/// Parses a TTL like [`parse_ttl`] that must not be zero (where leaving it out means the default).
fn parse_nonzero_ttl(s: &str) -> Result<u32, String> {
    match parse_ttl(s)? {
        0 => Err(format!(
            "{s:?}: a TTL must be at least 1s (leave --ttl out for the issuer's default)"
        )),
        n => Ok(n),
    }
}

/// Parses an RFC 3339 time (`2030-01-01T00:00:00Z`) or Unix seconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither an RFC 3339 time nor Unix seconds: {e}"))?;
    Ok(signet_issuer::ca_sync::unix_secs(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ttl_and_time_parsing() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert!(parse_ttl("1").is_err());
        assert!(parse_ttl("1500ms").unwrap_err().contains("whole seconds"));
        assert_eq!(parse_time("1900000000"), Ok(1_900_000_000));
        assert_eq!(parse_time("2030-01-01T00:00:00Z"), Ok(1_893_456_000));
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn nonzero_ttl_parsing() {
        assert_eq!(parse_nonzero_ttl("1s"), Ok(1));
        assert_eq!(parse_nonzero_ttl("5m"), Ok(300));
        for zero in ["0s", "0m", "0h"] {
            assert!(
                parse_nonzero_ttl(zero)
                    .unwrap_err()
                    .contains("a TTL must be at least 1s"),
                "{zero}"
            );
        }
        assert!(
            parse_nonzero_ttl("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_nonzero_ttl("")
                .unwrap_err()
                .contains("empty duration")
        );
        assert!(
            parse_nonzero_ttl("1500ms")
                .unwrap_err()
                .contains("whole seconds")
        );
    }

    fn jwt_mint(args: &[&str]) -> Result<JwtMintArgs, clap::Error> {
        let cli = Cli::try_parse_from(["signet-issuer", "jwt", "mint"].iter().chain(args))?;
        match cli.command {
            Command::Jwt(JwtCommand::Mint(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn jwt_mint_arguments() {
        let a = jwt_mint(&["--spiffe-id", "spiffe://example.org/w", "--audience", "svc"]).unwrap();
        assert_eq!(a.spiffe_id, "spiffe://example.org/w");
        assert_eq!(a.audience, vec!["svc"]);
        assert_eq!(a.ttl, None);
        assert_eq!(a.output.output, Output::Text);

        let a = jwt_mint(&[
            "--audience",
            "a",
            "--spiffe-id",
            "spiffe://example.org/w",
            "--audience",
            "b",
            "--ttl",
            "90s",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(a.audience, vec!["a", "b"]);
        assert_eq!(a.ttl, Some(90));
        assert_eq!(a.output.output, Output::Json);
        // An empty audience parses: the issuer refuses it with its position.
        assert_eq!(
            jwt_mint(&["--spiffe-id", "x", "--audience", ""])
                .unwrap()
                .audience,
            vec![""]
        );

        let err = |args: &[&str]| {
            let e = jwt_mint(args).unwrap_err();
            (e.kind(), e.to_string())
        };
        let (kind, msg) = err(&["--spiffe-id", "spiffe://example.org/w"]);
        assert_eq!(kind, clap::error::ErrorKind::MissingRequiredArgument);
        assert!(msg.contains("--audience <AUD>"), "{msg}");
        let (kind, msg) = err(&["--audience", "svc"]);
        assert_eq!(kind, clap::error::ErrorKind::MissingRequiredArgument);
        assert!(msg.contains("--spiffe-id <ID>"), "{msg}");
        for (ttl, reason) in [
            ("0s", "a TTL must be at least 1s"),
            ("soon", "is not a duration"),
            ("1500ms", "use whole seconds"),
            ("200000d", "is too long"),
        ] {
            let (kind, msg) = err(&["--spiffe-id", "x", "--audience", "a", "--ttl", ttl]);
            assert_eq!(kind, clap::error::ErrorKind::ValueValidation, "{ttl}");
            assert!(
                msg.contains("--ttl <DUR>") && msg.contains(reason),
                "{ttl}: {msg}"
            );
        }
        let (kind, _) = err(&["--spiffe-id", "x", "--audience", "a", "--output", "yaml"]);
        assert_eq!(kind, clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn audit_arguments() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["signet-issuer", "audit"].iter().chain(args)).map(|c| c.command)
        };
        match parse(&["verify"]).unwrap() {
            Command::Audit(AuditCommand::Verify { expect_head, .. }) => {
                assert_eq!(expect_head, None)
            }
            other => panic!("{other:?}"),
        }
        let h = "ab".repeat(32);
        match parse(&[
            "verify",
            "--expect-head",
            &format!("5:{h}"),
            "--output",
            "json",
        ])
        .unwrap()
        {
            Command::Audit(AuditCommand::Verify {
                expect_head: Some(a),
                output,
            }) => {
                assert_eq!((a.seq, a.hash.as_deref()), (5, Some(h.as_str())));
                assert_eq!(output.output, Output::Json);
            }
            other => panic!("{other:?}"),
        }
        for bad in ["0", "x", "5:abc", "-3"] {
            let e = parse(&["verify", &format!("--expect-head={bad}")]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains("--expect-head <SEQ[:HASH]>"), "{e}");
        }
        let e = parse(&["trace"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        match parse(&["trace", "--token-id", "t1", "--output", "json"]).unwrap() {
            Command::Audit(AuditCommand::Trace {
                token_id, output, ..
            }) => {
                assert_eq!(
                    (token_id.as_deref(), output.output),
                    (Some("t1"), Output::Json)
                )
            }
            other => panic!("{other:?}"),
        }
        match parse(&["list"]).unwrap() {
            Command::Audit(AuditCommand::List {
                kind, after, limit, ..
            }) => assert_eq!((kind, after, limit), (None, 0, 100)),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "list",
            "--kind",
            "delegation.*",
            "--after",
            "7",
            "--limit",
            "0",
        ])
        .unwrap()
        {
            Command::Audit(AuditCommand::List {
                kind, after, limit, ..
            }) => assert_eq!(
                (kind.as_deref(), after, limit),
                (Some("delegation.*"), 7, 0)
            ),
            other => panic!("{other:?}"),
        }
        for bad in [["--after", "-1"], ["--limit", "x"], ["--after", "1.5"]] {
            assert!(parse(&["list", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn global_socket_path_goes_anywhere() {
        let cli = Cli::try_parse_from([
            "signet-issuer",
            "entry",
            "show",
            "--socket-path",
            "/tmp/x.sock",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.socket_path, PathBuf::from("/tmp/x.sock"));
    }
}
